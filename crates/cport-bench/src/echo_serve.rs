//! The hidden `cport-bench --serve SERVER,ADDR,CPU|-`: one of the echo
//! servers on its own, listening on ADDR (port 0: any free port), its
//! threads pinned to CPU, until stdin ends (EOF); then it prints what its
//! threads used. It lets a load generator that is not ours, or ours
//! (`--loadgen-child`), drive the bench's servers from outside, side by
//! side with servers written elsewhere (a liburing loop in C, say).
//!
//! Prints `listening ADDR` once it serves, and at the end
//! `cpu_ns SYS_NS csw N` (CPU time, kernel part, context switches of the
//! server's threads).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use completion_port::Backend;

use super::raw_uring::Setup;
use super::{start, Server, RAW_URING, SIZE, TOKIO};

/// Buffers of the pool of the `ours-pooled-*` servers.
const POOLED_SERVE: usize = 4096;

/// The servers by name.
const NAMES: [(&str, Server); 10] = [
    ("ours-io_uring", Server::Ours(Backend::IoUring)),
    ("ours-epoll", Server::Ours(Backend::Epoll)),
    (
        "ours-pooled-io_uring",
        Server::OursPooled(Backend::IoUring, POOLED_SERVE),
    ),
    (
        "ours-pooled-epoll",
        Server::OursPooled(Backend::Epoll, POOLED_SERVE),
    ),
    ("raw-epoll", Server::RawEpoll),
    ("raw-uring", RAW_URING),
    ("raw-uring-coop", Server::RawUring(Setup::Coop)),
    ("raw-uring-plain", Server::RawUring(Setup::Plain)),
    ("tokio", TOKIO),
    ("compio", Server::Compio(1)),
];

fn parse(spec: &str) -> io::Result<(Server, SocketAddr, Option<usize>)> {
    let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "bad --serve {spec:?}: {why} (expected SERVER,ADDR,CPU|-, SERVER one of {})",
                names.join(", ")
            ),
        )
    };
    let f: Vec<&str> = spec.split(',').collect();
    let [name, addr, cpu] = f[..] else {
        return Err(bad("three fields"));
    };
    let server = NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| bad("unknown server"))?;
    let addr = addr.parse().map_err(|_| bad("bad address"))?;
    let cpu = match cpu {
        "-" => None,
        c => Some(c.parse().map_err(|_| bad("bad CPU"))?),
    };
    Ok((server, addr, cpu))
}

/// Runs `--serve SPEC` (see the module documentation).
pub(crate) fn serve(spec: &str) -> io::Result<()> {
    let (server, addr, cpu) = parse(spec)?;
    let listener = TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("--serve: cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let running = start(server, listener, SIZE, &stop, cpu, false, &accepted)?;
    println!("listening {local}");
    io::stdout().flush()?;
    // Serve until stdin ends.
    let mut sink = Vec::new();
    let r = io::stdin().lock().read_to_end(&mut sink);
    stop.store(true, Ordering::Release);
    let used = running.stop()?;
    r?;
    println!(
        "cpu_ns {} sys_ns {} csw {}",
        used.cpu.as_nanos(),
        used.sys.as_nanos(),
        used.csw
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_why_not() {
        let (s, a, c) = parse("raw-uring,127.0.0.1:0,1").unwrap();
        assert_eq!(s, RAW_URING);
        assert_eq!(a, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c, Some(1));
        assert_eq!(parse("ours-epoll,127.0.0.1:7,-").unwrap().2, None);
        for (spec, why) in [
            ("raw-uring,127.0.0.1:0", "three fields"),
            ("kqueue,127.0.0.1:0,0", "unknown server"),
            ("tokio,localhost,0", "bad address"),
            ("tokio,127.0.0.1:0,x", "bad CPU"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("raw-epoll"), "{spec}: {e}");
        }
    }
}
