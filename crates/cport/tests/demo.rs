//! Runs the built `cport demo` binary end to end.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The demo bounds its own waits; this is only a last line of defence so a
/// bug cannot hang the test suite.
const WATCHDOG: Duration = Duration::from_secs(120);

fn run_cport(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cport"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cport");
    // Drain the pipes on their own threads so a chatty child cannot block.
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, args);
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn wait_bounded(child: &mut Child, args: &[&str]) -> std::process::ExitStatus {
    let deadline = Instant::now() + WATCHDOG;
    loop {
        if let Some(status) = child.try_wait().expect("wait for cport") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cport {args:?} still running after {WATCHDOG:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `verified: N echoes, M mismatches` → (N, M).
fn verified_line(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("verified: "))?;
    let mut words = line.split_whitespace();
    let echoes = words.nth(1)?.parse().ok()?;
    let mismatches = words.nth(1)?.parse().ok()?;
    Some((echoes, mismatches))
}

#[test]
fn demo_echoes_and_verifies_every_byte() {
    let args = ["demo", "--seconds", "0.5", "--connections", "8"];
    let out = run_cport(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cport {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let (echoes, mismatches) = verified_line(&stdout)
        .unwrap_or_else(|| panic!("no `verified:` line in the output:\n{stdout}"));
    assert!(echoes > 0, "no echoes:\n{stdout}");
    assert_eq!(mismatches, 0, "mismatches:\n{stdout}\n{stderr}");
    for field in [
        "backend:",
        "threads:",
        "concurrency:",
        "connections:",
        "requests/s:",
    ] {
        assert!(stdout.contains(field), "missing {field:?}:\n{stdout}");
    }
}

#[test]
fn demo_refuses_bad_input_without_panicking() {
    for args in [
        &["demo", "--threads", "0"][..],
        &["demo", "--seconds", "abc"],
        &["demo", "--seconds=-1"],
        &["demo", "--backend", "kqueue"],
        &["demo", "--message-size", "0"],
    ] {
        let out = run_cport(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "cport {args:?} succeeded");
        assert!(
            !stderr.contains("panicked"),
            "cport {args:?} panicked:\n{stderr}"
        );
        assert!(
            stderr.contains("invalid value"),
            "cport {args:?} gave no clear error:\n{stderr}"
        );
    }
}
