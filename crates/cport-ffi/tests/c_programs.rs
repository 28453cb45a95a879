//! Builds the examples `examples/c/file_copy.c`,
//! `examples/c/echo_server.cpp` and `examples/c/echo_server_win32.cpp`
//! against the library (shared, static, and through pkg-config) and runs
//! them on both backends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A file whose size is not a multiple of the block size.
fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn file_copy_example_copies_every_byte_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("file_copy");
    compile(
        &repo().join("examples/c/file_copy.c"),
        &shared,
        &direct_flags(),
    );
    // The same program linked statically against libcport.a.
    let statik = dir.path().join("file_copy_static");
    compile(
        &repo().join("examples/c/file_copy.c"),
        &statik,
        &[
            format!("-I{}", repo().join("include").display()),
            lib_dir().join("libcport.a").display().to_string(),
            "-ldl".into(),
            "-lm".into(),
        ],
    );
    let src = dir.path().join("src.bin");
    let data = random_file(&src, 6 * 1024 * 1024 + 12_345);
    for backend in BACKENDS {
        for (bin, block, depth) in [(&shared, "65536", "8"), (&statik, "4096", "32")] {
            let dst = dir.path().join(format!("dst-{backend}-{block}"));
            let o = run(
                bin,
                &[src.to_str().unwrap(), dst.to_str().unwrap(), block, depth],
                backend,
            );
            assert!(
                o.status.success(),
                "file_copy on {backend}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                std::fs::read(&dst).unwrap() == data,
                "copy differs on {backend}"
            );
        }
    }
}

/// Starts the echo server on port 0; returns it and its port.
fn start_echo_server(bin: &Path, backend: &str) -> (Child, u16) {
    let mut child = Command::new(bin)
        // cargo's LD_LIBRARY_PATH for tests lists target/<profile> first,
        // whose libcport.so may be older than this build's.
        .env("LD_LIBRARY_PATH", lib_dir())
        .args(["0", "4"])
        .env("CPORT_BACKEND", backend)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("echo_server's first line: {line:?}"));
    (child, port)
}

/// `clients` concurrent clients, each sending `rounds` messages of varying
/// sizes and checking every echoed byte. Returns the bytes echoed.
fn drive(port: u16, clients: usize, rounds: usize) -> usize {
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let errors = errors.clone();
            std::thread::spawn(move || {
                let r = (|| -> std::io::Result<usize> {
                    let mut s = TcpStream::connect(("127.0.0.1", port))?;
                    s.set_read_timeout(Some(Duration::from_secs(20)))?;
                    let mut total = 0;
                    for j in 0..rounds {
                        let len = 1 + (i * 7919 + j * 104_729) % 9000;
                        let msg: Vec<u8> = (0..len).map(|k| (k * 31 + i + j) as u8).collect();
                        s.write_all(&msg)?;
                        let mut got = vec![0u8; len];
                        s.read_exact(&mut got)?;
                        if got != msg {
                            return Err(std::io::Error::other(format!(
                                "client {i} round {j}: wrong bytes"
                            )));
                        }
                        total += len;
                    }
                    Ok(total)
                })();
                match r {
                    Ok(n) => n,
                    Err(e) => {
                        errors.lock().unwrap().push(e.to_string());
                        0
                    }
                }
            })
        })
        .collect();
    let total = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let errors = errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "echo clients failed: {:?}",
        &errors[..errors.len().min(5)]
    );
    total
}

#[test]
fn echo_server_example_echoes_and_stops_cleanly_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("echo_server");
    compile(
        &repo().join("examples/c/echo_server.cpp"),
        &bin,
        &pkg_config_flags(),
    );
    for backend in BACKENDS {
        // Stopped by the end of its standard input.
        let (mut child, port) = start_echo_server(&bin, backend);
        let echoed = drive(port, 32, 40);
        drop(child.stdin.take());
        let o = wait_bounded(child, "echo_server");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "echo_server on {backend} exited with {:?}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains(&format!("accepted 32 connections, echoed {echoed} bytes")),
            "echo_server on {backend} reported: {out}"
        );
        // Stopped by SIGTERM with clients still connected.
        let (child, port) = start_echo_server(&bin, backend);
        let idle: Vec<TcpStream> = (0..5)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        drive(port, 4, 5);
        // SAFETY: signalling our own child process by pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
        let o = wait_bounded(child, "echo_server (SIGTERM)");
        assert!(
            o.status.success(),
            "echo_server on {backend} after SIGTERM: {:?}",
            o.status
        );
        // Its shutdown spun on HasOverlappedIoCompleted, with no thread in
        // GetQueuedCompletionStatus, for the receives of the idle clients
        // (and the outstanding AcceptEx calls): they all ended.
        let out = String::from_utf8_lossy(&o.stdout);
        let pending: usize = out
            .lines()
            .find_map(|l| {
                l.strip_prefix("closed ")?
                    .split_once(" with I/O pending")?
                    .0
                    .rsplit(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("echo_server on {backend} reported: {out}"));
        assert!(
            pending >= idle.len(),
            "echo_server on {backend}: only {pending} operations pending at shutdown: {out}"
        );
        drop(idle);
    }
}

/// The same server written as for Windows (`CreateThread`,
/// `WaitForMultipleObjects`, `CRITICAL_SECTION`, `SetConsoleCtrlHandler`:
/// only the `#include` line changed), stopped by Ctrl-C (a real SIGINT)
/// with clients still connected, exit code 0.
#[test]
fn win32_echo_server_example_echoes_and_stops_on_sigint_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("echo_server_win32");
    compile(
        &repo().join("examples/c/echo_server_win32.cpp"),
        &bin,
        &pkg_config_flags(),
    );
    for backend in BACKENDS {
        let (child, port) = start_echo_server(&bin, backend);
        let echoed = drive(port, 32, 40);
        // Connections left open, each served once (so surely accepted).
        let idle: Vec<TcpStream> = (0..5)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"x").unwrap();
                s.read_exact(&mut [0u8]).unwrap();
                s
            })
            .collect();
        // SAFETY: signalling our own child process by pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let o = wait_bounded(child, "echo_server_win32 (SIGINT)");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "echo_server_win32 on {backend} exited with {:?}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        // The 32 closed clients' bytes are all counted (each connection's
        // last send completed before its end-of-file was read). An idle
        // client's byte is counted when its send's packet is dequeued, and
        // the client may read the byte first: with the machine loaded that
        // packet can come after the quit packets the shutdown posts, and
        // the workers exit without it — as on Windows.
        let reported = out
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("accepted 37 connections, echoed ")?;
                rest.strip_suffix(" bytes")?.parse::<usize>().ok()
            })
            .unwrap_or_else(|| panic!("echo_server_win32 on {backend} reported: {out}"));
        assert!(
            (echoed..=echoed + 5).contains(&reported),
            "echo_server_win32 on {backend}: echoed {reported} bytes, expected {echoed} + up to 5: {out}"
        );
        drop(idle);
    }
}
