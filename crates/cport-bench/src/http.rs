//! `http`: static files over HTTP/1.1 and keep-alive, `wrk -t1 -c100`
//! against
//! - **ours**: the crate's example `examples/http_server` (one port, one
//!   worker per server CPU; cached file handles, files up to 16 KiB read
//!   into the head's buffer, larger ones with `send_file`), and two of its
//!   settings: a `Port::open` per request (`ours-open`), `send_file` at
//!   every size (`ours-sendfile`);
//! - **tokio**: the same server for tokio, by default `tokio-sendfile`
//!   (`--http-tokio` picks another; `http_serve.rs`);
//! - **nginx**: configured here in a temporary directory — one worker per
//!   server CPU, `sendfile on`, `tcp_nopush on`, keep-alive (10 s, no
//!   request limit), `access_log off` — as is, and with
//!   `open_file_cache max=256 valid=1s` (what our cache does).
//!
//! Files: 4 KiB and 1 MiB of random bytes. Every server runs in a process
//! of its own pinned to the server CPU (slot 0), wrk on another (slot 1).
//! Trials are interleaved: in each round every server is driven once, in
//! a fixed order, for the same time; a row's per-pair ratio compares the
//! two trials of one round. A trial's CPU is the server process's user +
//! system time from `/proc/PID/stat` (nginx: its master and workers), per
//! request. Each server's answers are checked byte for byte before the
//! trials, and a trial with any wrk socket error or non-2xx answer fails.
//!
//! wrk and nginx are looked up on PATH (nginx also in /usr/sbin), or taken
//! from `CPORT_BENCH_WRK` / `CPORT_BENCH_NGINX`; without wrk the rows say
//! so and how to install it (`crates/cport-bench/setup.sh`), without nginx
//! its rows do.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use completion_port::Backend;

use super::{RatioKind, Row, Sample, Settings, Side};

#[path = "http_serve.rs"]
mod serve;
pub(crate) use serve::{serve, KINDS};

/// wrk's connections.
const CONNECTIONS: usize = 100;
/// Pin slots: servers on one CPU, wrk on another.
const SERVER_SLOT: usize = 0;
const CLIENT_SLOT: usize = 1;
/// How to install the tools.
const SETUP: &str =
    "install them with `sudo crates/cport-bench/setup.sh` (apt-get install -y wrk nginx-light fio)";

/// The files, by URL path and size.
const FILES: [(&str, usize); 2] = [("/4k.bin", 4096), ("/1m.bin", 1 << 20)];

/// A server of the workload, by key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// An `--http-serve` kind (ours, ours-open, ours-sendfile, tokio-…).
    Serve(&'static str),
    /// nginx, with `open_file_cache` or without.
    Nginx { cache: bool },
}

impl Key {
    fn name(self, backend: Backend) -> String {
        match self {
            Key::Serve("ours") => format!("completion-port ({backend}, 1 worker)"),
            Key::Serve("ours-open") => {
                format!("completion-port ({backend}), Port::open per request")
            }
            Key::Serve("ours-sendfile") => {
                format!("completion-port ({backend}), send_file at every size")
            }
            Key::Serve(tokio) => {
                format!("tokio (1 worker, {})", tokio.trim_start_matches("tokio-"))
            }
            Key::Nginx { cache: false } => "nginx (1 worker, sendfile)".into(),
            Key::Nginx { cache: true } => "nginx (1 worker, sendfile, open_file_cache)".into(),
        }
    }
}

/// A row: id, what it compares, file size, ours, peer, target.
struct Spec {
    id: &'static str,
    label: &'static str,
    size: usize,
    ours: Key,
    peer: Key,
    target: Option<f64>,
}

fn specs(tokio: &'static str) -> Vec<Spec> {
    let (ours, nginx, nginx_cached) = (
        Key::Serve("ours"),
        Key::Nginx { cache: false },
        Key::Nginx { cache: true },
    );
    let tokio = Key::Serve(tokio);
    let spec = |id, label, size, ours, peer, target| Spec {
        id,
        label,
        size,
        ours,
        peer,
        target,
    };
    vec![
        spec(
            "http_4k_vs_tokio",
            "http 4 KiB (vs tokio)",
            4096,
            ours,
            tokio,
            Some(1.0),
        ),
        spec(
            "http_4k_vs_nginx",
            "http 4 KiB (vs nginx)",
            4096,
            ours,
            nginx,
            Some(0.9),
        ),
        spec(
            "http_4k_vs_nginx_cached",
            "http 4 KiB (vs nginx + open_file_cache)",
            4096,
            ours,
            nginx_cached,
            Some(0.9),
        ),
        spec(
            "http_4k_open_vs_nginx",
            "http 4 KiB, no cache either side",
            4096,
            Key::Serve("ours-open"),
            nginx,
            Some(0.9),
        ),
        spec(
            "http_4k_open_vs_cached",
            "http 4 KiB: Port::open per request vs cached handles",
            4096,
            Key::Serve("ours-open"),
            ours,
            None,
        ),
        spec(
            "http_4k_send_file_vs_inline",
            "http 4 KiB: send_file vs a read + one send_all",
            4096,
            Key::Serve("ours-sendfile"),
            ours,
            None,
        ),
        spec(
            "http_1m_vs_tokio",
            "http 1 MiB (vs tokio)",
            1 << 20,
            ours,
            tokio,
            Some(1.0),
        ),
        spec(
            "http_1m_vs_nginx",
            "http 1 MiB (vs nginx)",
            1 << 20,
            ours,
            nginx,
            Some(1.0),
        ),
    ]
}

/// A program found on PATH (or in `extra` directories), or named by `env`.
fn find_tool(env: &str, name: &str, extra: &[&str], probe: &str) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os(env) {
        Some(p) => vec![PathBuf::from(p)],
        None => std::iter::once(PathBuf::from(name))
            .chain(extra.iter().map(|d| Path::new(d).join(name)))
            .collect(),
    };
    for prog in &candidates {
        // wrk exits non-zero on --version; being able to run it is enough.
        match Command::new(prog).arg(probe).output() {
            Ok(_) => return Ok(prog.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{name} not usable ({}: {e})", prog.display())),
        }
    }
    Err(format!("{name} not found"))
}

/// Makes `cmd`'s process run on `cpu` only (inherited by its threads and
/// children).
fn pin_command(cmd: &mut Command, cpu: Option<usize>) {
    let Some(cpu) = cpu.filter(|&c| c < libc::CPU_SETSIZE as usize) else {
        return;
    };
    // SAFETY: the closure runs in the child between fork and exec and
    // only makes async-signal-safe system calls on stack data.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// A server process.
struct Proc {
    key: Key,
    child: Child,
    addr: SocketAddr,
}

/// User + system CPU time of `pid` (all its threads), with its children's
/// when `children` (nginx's workers).
fn proc_cpu(pid: u32, children: bool) -> io::Result<Duration> {
    // SAFETY: sysconf has no memory effects.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let one = |pid: &str| -> io::Result<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): state is
        // field 3; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(n(11) + n(12))
    };
    let mut ticks = one(&pid.to_string())?;
    if children {
        let list = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
        for c in list.split_whitespace() {
            ticks += one(c).unwrap_or(0);
        }
    }
    Ok(Duration::from_secs_f64(ticks as f64 / tick))
}

impl Proc {
    fn cpu(&self) -> io::Result<Duration> {
        proc_cpu(self.child.id(), matches!(self.key, Key::Nginx { .. }))
    }

    /// SIGTERM, then a bounded wait; ours must exit cleanly.
    fn stop(mut self) -> io::Result<()> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if matches!(self.key, Key::Serve(k) if k.starts_with("ours")) && !status.success() {
                    return Err(io::Error::other(format!(
                        "http: {:?} did not shut down cleanly on SIGTERM ({status})",
                        self.key
                    )));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(io::Error::other(format!(
                    "http: {:?} did not stop within 10 s of SIGTERM",
                    self.key
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Starts one of our `--http-serve` servers; waits (bounded) for its
/// address.
fn start_serve(
    kind: &'static str,
    dir: &Path,
    cpu: Option<usize>,
    backend: Backend,
) -> io::Result<Proc> {
    let cpu_arg = cpu.map_or("-".to_string(), |c| c.to_string());
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--backend")
        .arg(backend.to_string())
        .arg("--http-serve")
        .arg(format!("{kind},{},{cpu_arg}", dir.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let addr = line
        .strip_prefix("listening on http://")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok());
    match addr {
        Some(addr) => Ok(Proc {
            key: Key::Serve(kind),
            child,
            addr,
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::other(format!(
                "http: server {kind} did not start (said {line:?})"
            )))
        }
    }
}

/// Starts nginx on a free port with a configuration in `tmp`.
fn start_nginx(
    nginx: &Path,
    tmp: &Path,
    root: &Path,
    cpu: Option<usize>,
    cache: bool,
) -> io::Result<Proc> {
    let prefix = tmp.join(if cache { "nginx-cache" } else { "nginx" });
    fs::create_dir_all(prefix.join("logs"))?;
    fs::create_dir_all(prefix.join("tmp"))?;
    // A free port: bound and released here, then taken by nginx.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let open_file_cache = if cache {
        "open_file_cache max=256 inactive=10s;\n    open_file_cache_valid 1s;"
    } else {
        ""
    };
    let t = prefix.join("tmp");
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\npid {pid};\n\
         error_log {err} warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n    \
         access_log off;\n    sendfile on;\n    tcp_nopush on;\n    \
         keepalive_timeout {idle}s;\n    keepalive_requests 1000000000;\n    {open_file_cache}\n    \
         client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t};\n    \
         uwsgi_temp_path {t}; scgi_temp_path {t};\n    \
         types {{ application/octet-stream bin; }}\n    \
         server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
        workers = if cpu.is_some() { 1 } else { super::threads::allowed_cpus().len().max(1) },
        pid = prefix.join("nginx.pid").display(),
        err = prefix.join("logs/error.log").display(),
        idle = serve::IDLE.as_secs(),
        t = t.display(),
        root = root.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    fs::write(&conf_path, conf)?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf_path);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    pin_command(&mut cmd, cpu);
    let mut child = cmd.spawn()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(io::Error::other(format!(
                "nginx exited ({status}): {}",
                err.trim()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("nginx did not listen within 30 s"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Proc {
        key: Key::Nginx { cache },
        child,
        addr,
    })
}

/// GETs `path` on a fresh connection and compares the body with `want`.
fn check_answer(addr: SocketAddr, path: &str, want: &[u8]) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut all = Vec::new();
    s.read_to_end(&mut all)?;
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("{addr}{path}: no response head")))?;
    let head = String::from_utf8_lossy(&all[..end]);
    if !head.starts_with("HTTP/1.1 200") || all[end + 4..] != *want {
        return Err(io::Error::other(format!(
            "{addr}{path}: wrong answer ({}; {} body bytes, expected {})",
            head.lines().next().unwrap_or(""),
            all.len() - end - 4,
            want.len()
        )));
    }
    Ok(())
}

/// One wrk run against `p` for `secs` seconds: a sample of `p`'s CPU.
fn wrk_trial(
    wrk: &Path,
    p: &Proc,
    path: &str,
    secs: u64,
    cpu: Option<usize>,
) -> io::Result<Sample> {
    let mut cmd = Command::new(wrk);
    cmd.args([
        "-t1",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{secs}s"),
        "--timeout",
        "10s",
    ])
    .arg(format!("http://{}{path}", p.addr));
    pin_command(&mut cmd, cpu);
    let before = p.cpu()?;
    let out = cmd.output()?;
    let used = p.cpu()?.saturating_sub(before);
    let text = String::from_utf8_lossy(&out.stdout);
    let fail = |why: &str| {
        io::Error::other(format!(
            "http: wrk against {:?} {path}: {why}\n{text}{}",
            p.key,
            String::from_utf8_lossy(&out.stderr)
        ))
    };
    if !out.status.success() {
        return Err(fail("wrk failed"));
    }
    let requests: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| fail("no request count"))?;
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| fail("no Requests/sec"))?;
    if text.contains("Socket errors") || text.contains("Non-2xx") {
        return Err(fail("errors"));
    }
    if requests == 0 || rate <= 0.0 {
        return Err(fail("no request served"));
    }
    Ok(Sample {
        ops: requests,
        wall: Duration::from_secs_f64(requests as f64 / rate),
        cpu: used,
        ..Sample::default()
    })
}

/// The `http` rows.
pub(super) fn run(s: &Settings, backend: Backend, tokio: &'static str) -> io::Result<Vec<Row>> {
    let secs = s.work(2, 1, 1, 1);
    let specs = specs(tokio);
    let describe = |spec: &Spec| {
        format!(
            "GET of a {} file, HTTP/1.1 keep-alive, wrk -t1 -c{CONNECTIONS} -d{secs}s on its own CPU; \
             servers pinned to one CPU, each in its own process, driven in turn; CPU/op = the server \
             process's user+system CPU (/proc/PID/stat) per request",
            if spec.size == 4096 { "4 KiB" } else { "1 MiB" }
        )
    };
    let empty = |key: Key| Side {
        name: key.name(backend),
        samples: Vec::new(),
        warmup: None,
    };
    let rows_without = |why: &str, nginx_only: bool| -> Vec<Row> {
        specs
            .iter()
            .filter(|sp| !nginx_only || matches!(sp.peer, Key::Nginx { .. }))
            .map(|sp| Row {
                id: sp.id,
                label: sp.label.to_string(),
                describe: describe(sp),
                ops_per_trial: 0,
                ours: empty(sp.ours),
                peer: empty(sp.peer),
                target: sp.target,
                kind: RatioKind::Rate,
                note: Some(why.to_string()),
                extra: Vec::new(),
            })
            .collect()
    };
    let wrk = match find_tool("CPORT_BENCH_WRK", "wrk", &[], "--version") {
        Ok(w) => w,
        Err(why) => {
            let why = format!("{why}: {SETUP}");
            eprintln!("  http: {why}; not measured");
            return Ok(rows_without(&why, false));
        }
    };
    let nginx = find_tool(
        "CPORT_BENCH_NGINX",
        "nginx",
        &["/usr/sbin", "/usr/local/sbin"],
        "-v",
    );
    if let Err(why) = &nginx {
        eprintln!("  http: {why}: {SETUP}; measuring without it");
    }

    // The files.
    let dir = tempdir()?;
    let root = dir.0.join("root");
    fs::create_dir_all(&root)?;
    let mut bodies = HashMap::new();
    for (i, (path, size)) in FILES.iter().enumerate() {
        let body = random_bytes(*size, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        fs::write(root.join(&path[1..]), &body)?;
        bodies.insert(*size, body);
    }

    // The servers, each checked once.
    let (server_cpu, client_cpu) = (s.cpu_for(SERVER_SLOT), s.cpu_for(CLIENT_SLOT));
    let mut keys: Vec<Key> = Vec::new();
    for sp in &specs {
        for k in [sp.ours, sp.peer] {
            let usable = !matches!(k, Key::Nginx { .. }) || nginx.is_ok();
            if usable && !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let mut procs: Vec<Proc> = Vec::new();
    let started = (|| -> io::Result<()> {
        for &k in &keys {
            let p = match k {
                Key::Serve(kind) => start_serve(kind, &root, server_cpu, backend)?,
                Key::Nginx { cache } => {
                    let nginx = nginx.as_ref().expect("only with nginx");
                    start_nginx(nginx, &dir.0, &root, server_cpu, cache)?
                }
            };
            procs.push(p);
        }
        for p in &procs {
            for (path, size) in FILES {
                check_answer(p.addr, path, &bodies[&size])?;
            }
        }
        Ok(())
    })();
    let measured = started.and_then(|()| measure(s, &wrk, &procs, &specs, secs, client_cpu));
    let mut stopped = Ok(());
    for p in procs {
        stopped = stopped.and(p.stop());
    }
    let samples = measured?;
    stopped?;

    let mut rows = Vec::new();
    for sp in &specs {
        let take = |k: Key| Side {
            name: k.name(backend),
            samples: samples.get(&(k, sp.size)).cloned().unwrap_or_default(),
            warmup: None,
        };
        let (ours, peer) = (take(sp.ours), take(sp.peer));
        let note = match (&nginx, sp.peer) {
            (Err(why), Key::Nginx { .. }) => Some(format!("{why}: {SETUP}")),
            _ => None,
        };
        rows.push(Row {
            id: sp.id,
            label: sp.label.to_string(),
            describe: describe(sp),
            ops_per_trial: 0,
            ours,
            peer,
            target: sp.target,
            kind: RatioKind::Rate,
            note,
            extra: Vec::new(),
        });
    }
    Ok(rows)
}

/// The trials: per file size, a warm-up of each server (not with
/// `--quick`), then `pairs` rounds driving each server once.
fn measure(
    s: &Settings,
    wrk: &Path,
    procs: &[Proc],
    specs: &[Spec],
    secs: u64,
    cpu: Option<usize>,
) -> io::Result<HashMap<(Key, usize), Vec<Sample>>> {
    let mut samples: HashMap<(Key, usize), Vec<Sample>> = HashMap::new();
    for (path, size) in FILES {
        // The servers of this size's rows, in a fixed order.
        let mut order: Vec<&Proc> = Vec::new();
        for sp in specs.iter().filter(|sp| sp.size == size) {
            for k in [sp.ours, sp.peer] {
                if let Some(p) = procs.iter().find(|p| p.key == k) {
                    if !order.iter().any(|o| o.key == k) {
                        order.push(p);
                    }
                }
            }
        }
        if !s.quick {
            for p in &order {
                wrk_trial(wrk, p, path, 1, cpu)?;
            }
        }
        for round in 0..s.pairs {
            let mut line = format!("  http {path}: round {}/{}:", round + 1, s.pairs);
            for p in &order {
                let t = wrk_trial(wrk, p, path, secs, cpu)?;
                line.push_str(&format!(
                    " {:?} {} ({:.1} µs CPU/req);",
                    p.key,
                    super::report::fmt_rate(t.ops_per_sec()),
                    t.cpu_ns_per_op() / 1000.0
                ));
                samples.entry((p.key, size)).or_default().push(t);
            }
            eprintln!("{line}");
        }
    }
    Ok(samples)
}

/// `n` pseudo-random bytes.
fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A temporary directory, removed with its contents when dropped.
struct TempDir(PathBuf);

fn tempdir() -> io::Result<TempDir> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("cport-bench-http-{}-{nanos:x}", std::process::id()));
    fs::create_dir(&dir)?;
    Ok(TempDir(dir))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
