//! The `scale` workload's memory probe: the load generator runs in a child
//! process (this program again, with the hidden `--loadgen-child`), so the
//! server's process holds only the server's ends of the connections and
//! its VmRSS is read before and after they are established. Here are both
//! ends of that conversation ([`child_load`] in the server's process,
//! [`loadgen_child`] in the child), the VmRSS reading and the open-file
//! limit each process raises for its connections.

use std::io::{self, BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::super::loadgen::{self, Load};
use super::super::{pin, Meter, ThreadUse};
use super::Opts;

/// VmRSS of this process, in bytes.
fn vm_rss() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS line in /proc/self/status"))
}

/// Hands freed heap memory back to the kernel, so RSS growth that
/// follows is new memory, not reuse of a previous trial's.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drives the server from a child process (see [`Opts::measure_rss`]);
/// returns the load, the server process's VmRSS growth per connection and
/// this process's CPU use during the timed part.
pub(super) fn child_load(
    addr: std::net::SocketAddr,
    o: Opts,
    accepted: &AtomicUsize,
) -> io::Result<(Load, f64, ThreadUse)> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe()?;
    let spec = format!(
        "{addr},{},{},{},{}",
        o.connections,
        o.size,
        o.duration.as_millis(),
        o.client_cpu.map_or("-".to_string(), |c| c.to_string())
    );
    trim_heap();
    let before = vm_rss()?;
    let mut child = Command::new(exe)
        .args(["--loadgen-child", &spec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start the load-generator process: {e}"),
            )
        })?;
    let r = (|| -> io::Result<(Load, f64, ThreadUse)> {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let mut out = io::BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("no stdout"))?,
        );
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "connected" {
            return Err(io::Error::other(format!(
                "load-generator process: expected \"connected\", got {:?}",
                line.trim()
            )));
        }
        // Wait until the server has accepted and armed every connection.
        let limit = Instant::now() + Duration::from_secs(60);
        while accepted.load(Ordering::Acquire) < o.connections {
            if Instant::now() > limit {
                return Err(io::Error::other(format!(
                    "echo: the server armed {} of {} connections within 60 s",
                    accepted.load(Ordering::Acquire),
                    o.connections
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
        let after = vm_rss()?;
        let meter = Meter::start();
        writeln!(stdin, "go")?;
        stdin.flush()?;
        line.clear();
        out.read_line(&mut line)?;
        let used = meter.stop(0);
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(requests)), Some(Ok(ns))) = (it.next(), it.next()) else {
            return Err(io::Error::other(format!(
                "load-generator process: bad result line {:?}",
                line.trim()
            )));
        };
        let per_conn = after.saturating_sub(before) as f64 / o.connections.max(1) as f64;
        Ok((
            Load {
                requests,
                elapsed: Duration::from_nanos(ns),
                latency: None,
            },
            per_conn,
            ThreadUse {
                cpu: used.cpu,
                sys: used.sys,
                csw: used.csw,
            },
        ))
    })();
    if r.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let r = r?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "the load-generator process failed ({status})"
        )));
    }
    Ok(r)
}

/// The hidden `cport-bench --loadgen-child SPEC`: connects, says
/// "connected", waits for "go" on stdin, drives the server, prints
/// "REQUESTS NANOSECONDS".
pub(crate) fn loadgen_child(spec: &str) -> io::Result<()> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad --loadgen-child {spec:?}"),
        )
    };
    let f: Vec<&str> = spec.split(',').collect();
    if f.len() != 5 {
        return Err(bad());
    }
    let addr: std::net::SocketAddr = f[0].parse().map_err(|_| bad())?;
    let connections: usize = f[1].parse().map_err(|_| bad())?;
    let size: usize = f[2].parse().map_err(|_| bad())?;
    let ms: u64 = f[3].parse().map_err(|_| bad())?;
    let cpu: Option<usize> = match f[4] {
        "-" => None,
        c => Some(c.parse().map_err(|_| bad())?),
    };
    pin(cpu);
    // Room for the client ends (one descriptor each) and a few more.
    raise_nofile(connections as u64 + 256)?;
    let mut after = || -> io::Result<()> {
        let mut o = io::stdout().lock();
        writeln!(o, "connected")?;
        o.flush()?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        if line.trim() == "go" {
            Ok(())
        } else {
            Err(io::Error::other("load-generator process: no \"go\""))
        }
    };
    let opts = loadgen::Opts {
        zero_linger: true,
        ramp: true,
        after_connect: Some(&mut after),
        ..Default::default()
    };
    let load = loadgen::run_with(addr, connections, size, Duration::from_millis(ms), opts)?;
    let mut o = io::stdout().lock();
    writeln!(o, "{} {}", load.requests, load.elapsed.as_nanos())?;
    o.flush()
}

/// Raises RLIMIT_NOFILE to at least `need`, or says why it cannot.
pub(crate) fn raise_nofile(need: u64) -> io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: need,
        rlim_max: lim.rlim_max.max(need),
    };
    // SAFETY: `new` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(io::Error::new(
        e.kind(),
        format!(
            "needs {need} open files, but RLIMIT_NOFILE is {} (hard {}) and could not be raised: {e}; \
             raise it (e.g. `ulimit -n {need}`, as root for the hard limit) and run again",
            lim.rlim_cur, lim.rlim_max
        ),
    ))
}
