//! `cport-bench` end to end: the built binary runs every workload on a
//! tiny amount of work and writes its JSON. No test here asserts a speed.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cport-bench"))
}

fn tmp_json(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cport-bench-{}-{name}.json", std::process::id()))
}

/// Runs `cport-bench ARGS --json FILE` at a tiny scale with `env` changes
/// (`Some`: set, `None`: removed); asserts it succeeded and returns its
/// output and the JSON document it wrote.
fn run_json(args: &[&str], env: &[(&str, Option<&str>)]) -> (Output, Value) {
    let path = tmp_json(args[0]);
    let mut cmd = bench();
    cmd.args(args)
        .arg("--json")
        .arg(&path)
        .env("CPORT_BENCH_SCALE", "0.01");
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run cport-bench");
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read JSON"))
        .expect("the JSON parses");
    let _ = std::fs::remove_file(&path);
    (out, doc)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn number(v: &Value, what: &str) -> f64 {
    v.get("value")
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{what}: no numeric value in {v}"))
}

#[test]
fn bench_all_quick_writes_every_row() {
    // Deterministic whatever is installed: the file row without fio, the
    // http rows without wrk (`bench_http_with_wrk_when_installed` measures
    // them).
    let (out, doc) = run_json(
        &["all", "--quick"],
        &[
            ("CPORT_BENCH_FIO", Some("/nonexistent/fio")),
            ("CPORT_BENCH_WRK", Some("/nonexistent/wrk")),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "crossbeam-channel",
        "raw io-uring",
        "ratio (ours/peer)",
        "targets:",
    ] {
        assert!(
            stdout.contains(needle),
            "table lacks {needle:?}:\n{}",
            text(&out)
        );
    }

    let machine = &doc["machine"];
    assert!(machine["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(machine["cpu_model"].as_str().is_some());
    assert!(machine["nproc"].as_u64().is_some_and(|n| n >= 1));
    assert_eq!(doc["settings"]["pairs"].as_u64(), Some(3));

    let rows = doc["rows"].as_array().expect("rows");
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(
        ids,
        [
            "queue",
            "nop_batch_1",
            "nop_batch_32",
            "echo_raw_peers",
            "echo_io_uring",
            "echo_epoll",
            "echo_vs_raw_uring",
            "echo_vs_tokio",
            "echo_vs_compio",
            "mixed_vs_tokio",
            "mixed_vs_compio",
            "handlers_vs_tokio",
            "handlers_vs_tokio_spawn_blocking",
            "handlers_p99_vs_tokio_spawn_blocking",
            "handlers_vs_compio",
            "handlers_p99_vs_compio",
            "handlers_scope_vs_tokio_spawn_blocking",
            "scale",
            "scale_raw_epoll",
            "scale_vs_raw_epoll",
            "echo_pooled",
            "scale_pooled",
            "file",
            "wake",
            "timers",
            "sends_256k_zc",
            "sends_1m_zc",
            "http_4k_vs_tokio",
            "http_4k_vs_nginx",
            "http_4k_vs_nginx_cached",
            "http_4k_open_vs_nginx",
            "http_4k_open_vs_cached",
            "http_4k_send_file_vs_inline",
            "http_1m_vs_tokio",
            "http_1m_vs_nginx",
        ]
    );
    for r in rows {
        let id = r["id"].as_str().unwrap();
        if id == "file" {
            check_file_row(r, false);
            continue;
        }
        if id.starts_with("http") {
            // Without wrk: the rows say so and how to install it, and
            // carry no number.
            let note = r["note"].as_str().expect("a note");
            assert!(
                note.starts_with("wrk not found") && note.contains("setup.sh"),
                "{note}"
            );
            assert!(r["ratio"]["value"].is_null(), "{r}");
            assert!(r["target"]["met"].is_null());
            continue;
        }
        let ratio = number(&r["ratio"], id);
        assert!(ratio > 0.0 && ratio.is_finite(), "{id}: ratio {ratio}");
        assert_eq!(r["ratio"]["per_pair"].as_array().map(Vec::len), Some(3));
        for side in ["ours", "peer"] {
            let s = &r[side];
            assert!(s["name"].as_str().is_some(), "{id} {side}: name");
            assert_eq!(s["rate"]["unit"], "ops/s");
            assert!(number(&s["rate"], id) > 0.0, "{id} {side}: rate");
            assert_eq!(s["cpu_per_op"]["unit"], "ns");
            assert!(number(&s["cpu_per_op"], id) >= 0.0, "{id} {side}: CPU/op");
            let trials = s["trials"].as_array().expect("trials");
            assert_eq!(trials.len(), 3, "{id} {side}: trials");
            for t in trials {
                if ["echo", "mixed", "handlers", "scale"]
                    .iter()
                    .any(|p| id.starts_with(p))
                {
                    // Timed trials: every one served (and verified) requests.
                    assert!(number(&t["ops"], id) > 0.0, "{id} {side}: requests");
                } else {
                    // Every trial did exactly the work of the row.
                    assert_eq!(
                        t["ops"]["value"], r["ops_per_trial"]["value"],
                        "{id} {side}"
                    );
                }
            }
        }
    }
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no row {id}"))
    };
    assert_eq!(row("queue")["peer"]["name"], "crossbeam-channel");
    assert_eq!(row("nop_batch_1")["peer"]["name"], "raw io-uring");
    assert!(row("queue")["target"]["met"].is_boolean());
    assert!(row("nop_batch_32")["target"]["met"].is_boolean());
    // The peer check: the raw io_uring loop against the raw epoll loop.
    let check = row("echo_raw_peers");
    assert_eq!(check["ours"]["name"], "raw io_uring (1 thread)");
    assert_eq!(check["peer"]["name"], "raw epoll (1 thread)");
    assert!(check["target"]["met"].is_boolean());
    // Its warning is there exactly when one loop is > 5 % below the other.
    let ratio = number(&check["ratio"], "peer check");
    let weak = !(0.95..=1.0 / 0.95).contains(&ratio);
    assert_eq!(check["warning"].is_string(), weak, "{check}");
    assert_eq!(
        stdout.contains("a weak peer is a bug"),
        weak,
        "{}",
        text(&out)
    );
    assert_eq!(row("echo_io_uring")["peer"]["name"], "raw epoll (1 thread)");
    assert!(row("echo_epoll")["target"]["met"].is_boolean());
    assert_eq!(
        row("echo_vs_raw_uring")["peer"]["name"],
        "raw io_uring (1 thread)"
    );
    assert_eq!(row("echo_vs_tokio")["peer"]["name"], "tokio (2 workers)");
    assert!(row("echo_vs_raw_uring")["target"]["met"].is_boolean());
    assert!(row("echo_vs_tokio")["target"]["met"].is_boolean());
    assert_eq!(row("echo_vs_compio")["peer"]["name"], "compio (1 runtime)");
    assert_eq!(row("echo_vs_compio")["target"]["min_ratio"]["value"], 1.1);
    // Latency rows: percentiles with units, ratio of latencies (lower is
    // better, so the target is a maximum).
    for (id, peer, kind) in [
        ("mixed_vs_tokio", "tokio (2 workers)", "ops/s"),
        ("mixed_vs_compio", "compio (2 runtimes)", "p99"),
        (
            "handlers_vs_tokio",
            "tokio (2 workers), blocking inline",
            "ops/s",
        ),
        (
            "handlers_vs_tokio_spawn_blocking",
            "tokio (2 workers) + spawn_blocking",
            "ops/s",
        ),
        (
            "handlers_p99_vs_tokio_spawn_blocking",
            "tokio (2 workers) + spawn_blocking",
            "p99",
        ),
        (
            "handlers_p99_vs_compio",
            "compio (2 runtimes), blocking inline",
            "p99",
        ),
        (
            "handlers_scope_vs_tokio_spawn_blocking",
            "tokio (2 workers) + spawn_blocking",
            "ops/s",
        ),
    ] {
        let r = row(id);
        assert_eq!(r["peer"]["name"], peer);
        assert!(r["ratio"]["of"].as_str().unwrap().starts_with(kind), "{r}");
        for side in ["ours", "peer"] {
            assert_eq!(r[side]["latency_p99"]["unit"], "ns");
            let p50 = number(&r[side]["latency_p50"], "p50");
            let p99 = number(&r[side]["latency_p99"], "p99");
            assert!(p50 > 0.0 && p99 >= p50, "{side}: p50 {p50} p99 {p99}");
            for t in r[side]["trials"].as_array().unwrap() {
                assert!(number(&t["latency"]["count"], "count") > 0.0);
            }
        }
    }
    assert!(row("mixed_vs_compio")["target"]["max_ratio"]["value"].is_number());
    // handlers: ours with more workers than CPUs, concurrency = CPUs; the
    // p99 rows are the same trials as their throughput rows.
    let cpus = machine["nproc"].as_u64().unwrap();
    assert_eq!(
        row("handlers_vs_compio")["ours"]["name"],
        format!(
            "completion-port ({}, {} workers, concurrency {cpus})",
            doc["settings"]["backend"].as_str().unwrap(),
            16 * cpus
        )
    );
    assert_eq!(
        row("handlers_vs_compio")["target"]["min_ratio"]["value"],
        1.5
    );
    assert_eq!(
        row("handlers_vs_compio")["ours"]["trials"],
        row("handlers_p99_vs_compio")["ours"]["trials"]
    );
    assert!(
        row("handlers_scope_vs_tokio_spawn_blocking")["ours"]["name"]
            .as_str()
            .unwrap()
            .ends_with(", port.blocking)")
    );
    // scale: 100 connections at this scale, memory per connection in bytes.
    let extra = row("scale")["extra"].as_object().expect("scale extra");
    assert!(
        extra
            .values()
            .any(|v| v["unit"] == "bytes" && v["value"].is_number()),
        "{extra:?}"
    );
    assert!(row("scale")["peer"]["name"]
        .as_str()
        .unwrap()
        .contains("50 connections"));
    // wake: p50 ratio, lower is better.
    let wake = row("wake");
    assert_eq!(wake["peer"]["name"], "Mutex+Condvar");
    assert!(wake["ratio"]["of"].as_str().unwrap().starts_with("p50"));
    assert!(wake["target"]["max_ratio"]["value"].is_number());
    assert!(stdout.contains("fio not found"), "{}", text(&out));
}

/// The file row: ours measured; the peer measured too when `with_fio`,
/// else absent with the "fio not found" note and no ratio (never a number
/// made up for it). A filesystem that refuses O_DIRECT gives a row with
/// that note and no numbers at all.
fn check_file_row(r: &Value, with_fio: bool) {
    if let Some(note) = r["note"].as_str() {
        if note.contains("O_DIRECT refused") {
            assert!(r["ratio"]["value"].is_null());
            return;
        }
    }
    assert!(number(&r["ours"]["rate"], "file ours") > 0.0);
    assert_eq!(r["ours"]["trials"].as_array().map(Vec::len), Some(3));
    if with_fio {
        let ratio = number(&r["ratio"], "file");
        assert!(ratio > 0.0 && ratio.is_finite(), "file: ratio {ratio}");
        assert!(number(&r["peer"]["rate"], "fio") > 0.0);
        assert!(r["note"].is_null());
    } else {
        assert_eq!(r["note"], "fio not found");
        assert!(r["ratio"]["value"].is_null(), "{r}");
        assert!(r["peer"]["rate"]["value"].is_null());
        assert_eq!(r["peer"]["trials"].as_array().map(Vec::len), Some(0));
        assert!(r["target"]["met"].is_null());
    }
}

/// With fio installed, `bench file` compares against it (skipped, saying
/// so, where fio is absent: the test above covers that row).
#[test]
fn bench_file_against_fio_when_installed() {
    if Command::new("fio").arg("--version").output().is_err() {
        eprintln!("fio is not installed: skipping the comparison with it");
        return;
    }
    let (_, doc) = run_json(&["file", "--quick"], &[("CPORT_BENCH_FIO", None)]);
    let rows = doc["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1);
    check_file_row(&rows[0], true);
}

/// With wrk installed, `bench http` drives every server and fills every
/// row (the nginx rows say so where nginx is missing); skipped, saying so,
/// where wrk is absent (the test above covers those rows).
#[test]
fn bench_http_with_wrk_when_installed() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is not installed: skipping `bench http`");
        return;
    }
    let (_, doc) = run_json(
        &["http", "--quick", "--pairs", "1"],
        &[("CPORT_BENCH_WRK", None)],
    );
    let rows = doc["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 8);
    for r in rows {
        let id = r["id"].as_str().unwrap();
        let nginx_peer = r["peer"]["name"].as_str().unwrap().starts_with("nginx");
        if nginx_peer
            && r["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("nginx not found"))
        {
            assert!(r["ratio"]["value"].is_null(), "{r}");
            continue;
        }
        assert!(r["note"].is_null(), "{r}");
        let ratio = number(&r["ratio"], id);
        assert!(ratio > 0.0 && ratio.is_finite(), "{id}: ratio {ratio}");
        for side in ["ours", "peer"] {
            let trials = r[side]["trials"].as_array().expect("trials");
            assert_eq!(trials.len(), 1, "{id} {side}");
            assert!(number(&trials[0]["ops"], id) > 0.0, "{id} {side}: requests");
            assert!(number(&r[side]["cpu_per_op"], id) > 0.0, "{id} {side}: CPU");
        }
    }
    assert_eq!(
        rows[0]["peer"]["name"], "tokio (1 worker, sendfile)",
        "{}",
        rows[0]
    );
}

#[test]
fn help_teaches_by_example() {
    let out = bench().arg("--help").output().expect("run cport-bench");
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    let examples = help.split("Examples:").nth(1).unwrap_or("");
    let n = examples
        .lines()
        .filter(|l| l.trim_start().starts_with("cport-bench "))
        .count();
    assert!((2..=4).contains(&n), "{n} examples in:\n{help}");
}

#[test]
fn bench_rejects_bad_input_without_panicking() {
    let cases: [(&[&str], Option<&str>, &str); 6] = [
        (&["sideways"], None, "invalid value"),
        (&["queue", "--backend", "kqueue"], None, "unknown backend"),
        (&["queue", "--pairs", "0"], None, "--pairs"),
        (&["queue", "--quick"], Some("abc"), "CPORT_BENCH_SCALE"),
        (&["queue", "--scale=0"], None, "out of range"),
        (
            &["file", "--dir", "/nonexistent-dir/x", "--scale=0.01"],
            None,
            "/nonexistent-dir/x",
        ),
    ];
    for (args, scale, needle) in cases {
        let mut cmd = bench();
        cmd.args(args);
        if let Some(s) = scale {
            cmd.env("CPORT_BENCH_SCALE", s);
        }
        let out = cmd.output().expect("run cport-bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded:\n{}", text(&out));
        assert!(
            !stderr.contains("panicked"),
            "{args:?} panicked:\n{}",
            text(&out)
        );
        assert!(
            stderr.contains(needle),
            "{args:?}: no {needle:?} in:\n{}",
            text(&out)
        );
    }
}

#[test]
fn bench_reports_an_unwritable_json_file_before_running() {
    let out = bench()
        .args(["nop", "--json", "/nonexistent-dir/x.json"])
        .output()
        .expect("run cport-bench");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent-dir/x.json"), "{}", text(&out));
    assert!(
        !stderr.contains("pair 1/"),
        "ran trials first:\n{}",
        text(&out)
    );
}

/// `--serve` runs one of the bench's echo servers on its own: each one
/// echoes what a client sends, stops when stdin ends, and reports its
/// threads' CPU use.
#[test]
fn serve_echoes_until_stdin_ends() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    for server in ["raw-uring", "raw-uring-plain", "raw-epoll", "ours-io_uring"] {
        let mut child = bench()
            .args(["--serve", &format!("{server},127.0.0.1:0,-")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run cport-bench --serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let addr = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{server}: {line:?}"))
            .trim()
            .to_string();
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for round in 0..3u8 {
            let msg = [round; 512];
            conn.write_all(&msg).unwrap();
            let mut echo = [0u8; 512];
            conn.read_exact(&mut echo).unwrap();
            assert_eq!(echo, msg, "{server}: round {round}");
        }
        drop(child.stdin.take()); // EOF: stop
        let limit = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > limit {
                let _ = child.kill();
                panic!("{server}: still serving 30 s after stdin closed");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(status.success(), "{server}: {status:?}, {rest}");
        assert!(rest.starts_with("cpu_ns "), "{server}: {rest:?}");
    }
}
