//! Registered (fixed) files (`driver/uring/files.rs`): with a table smaller
//! than the number of fds (so some fds fall back to their number), a slot
//! for every fd, none, or the default, handles churn through rounds that reuse fd numbers and
//! slots, with operations in flight, deferred, cancelled and closed. Every
//! operation yields exactly one packet with the right bytes, and a closed
//! handle's peer sees end of file (the table must not keep the file open).
//! The epoll backend has no table and ignores the setting: the same test
//! checks that it behaves the same.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use common::*;
use completion_port::{is_aborted, Backend, Buf, GetError, Handle, Packet, Port};

/// More fds than the small table has slots.
const FDS: usize = 20;
const SMALL_TABLE: u32 = 8;
const ROUNDS: usize = 4;

/// What a packet's operation was: (fd index, step).
type Ctx = (usize, Step);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// A receive issued before any packet, then the peer's first message.
    FirstRecv,
    /// The handle's first send to its peer.
    FirstSend,
    /// The receive issued (deferred) by the handler of `FirstRecv`.
    SecondRecv,
    /// The echo issued (deferred) by the handler of `FirstRecv`.
    Echo,
}

fn msg(round: usize, i: usize, what: &str) -> Vec<u8> {
    format!("{what}:{round}:{i}:{}", "x".repeat(i)).into_bytes()
}

fn build(backend: Backend, table: Option<u32>) -> Port<Ctx> {
    let b = Port::builder().backend(backend).concurrency(2);
    let b = match table {
        Some(n) => b.fixed_files(n),
        None => b,
    };
    b.build().expect("port")
}

/// Reads exactly `want` from `peer` (bounded by the socket's time-out).
fn read_exact(peer: &mut UnixStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    peer.read_exact(&mut got).expect("peer read");
    assert_eq!(got, want);
}

fn take_one(port: &Port<Ctx>) -> Packet<Ctx> {
    port.get(Some(WAIT)).expect("a packet")
}

fn churn(backend: Backend, table: Option<u32>) {
    let port = build(backend, table);
    for round in 0..ROUNDS {
        let mut peers = Vec::new();
        let mut handles: Vec<Option<Handle<Ctx>>> = Vec::new();
        for i in 0..FDS {
            let (a, b) = UnixStream::pair().unwrap();
            b.set_read_timeout(Some(WAIT)).unwrap();
            peers.push(b);
            handles.push(Some(port.associate(a, i).unwrap()));
        }
        let mut seen: HashMap<Ctx, usize> = HashMap::new();
        let count = |ctx: Ctx, seen: &mut HashMap<Ctx, usize>| {
            *seen.entry(ctx).or_default() += 1;
        };

        // A receive in flight on every fd, and a send from every fd.
        for (i, h) in handles.iter().enumerate() {
            let h = h.as_ref().unwrap();
            h.recv(Buf::with_capacity(128), (i, Step::FirstRecv))
                .unwrap();
            h.send(Buf::from(msg(round, i, "hello")), (i, Step::FirstSend))
                .unwrap();
        }
        // The sends may still be deferred (this thread runs for the port
        // after its first `get`): a blocking scope submits them.
        port.blocking(|| {
            for (i, p) in peers.iter_mut().enumerate() {
                read_exact(p, &msg(round, i, "hello"));
            }
        });
        for _ in 0..FDS {
            let p = take_one(&port);
            count(p.context, &mut seen);
            assert_eq!(p.context.1, Step::FirstSend);
            let i = p.context.0;
            assert_eq!(*p.result.as_ref().unwrap(), msg(round, i, "hello").len());
        }

        // The peers answer; each handler issues (deferred) the next receive
        // and an echo. Every third handle is closed right away, with its
        // new receive still deferred in the submission queue.
        for (i, p) in peers.iter_mut().enumerate() {
            p.write_all(&msg(round, i, "ping")).unwrap();
        }
        let mut echoes = 0;
        for _ in 0..FDS {
            let mut p = take_one(&port);
            count(p.context, &mut seen);
            let (i, step) = p.context;
            assert_eq!(step, Step::FirstRecv);
            let b = p.take_buf().unwrap();
            assert_eq!(&b[..], &msg(round, i, "ping")[..]);
            let h = handles[i].as_ref().unwrap();
            h.recv(Buf::with_capacity(128), (i, Step::SecondRecv))
                .unwrap();
            if i % 3 == 0 {
                h.close();
            } else {
                h.send(Buf::from(msg(round, i, "echo")), (i, Step::Echo))
                    .unwrap();
                echoes += 1;
            }
        }
        port.blocking(|| {
            for (i, p) in peers.iter_mut().enumerate() {
                if i % 3 != 0 {
                    read_exact(p, &msg(round, i, "echo"));
                }
            }
        });

        // Every third + 1 handle cancels its receive; the others get data.
        for (i, h) in handles.iter().enumerate() {
            match i % 3 {
                // The receive, and the echo if its packet is not built yet
                // (it finished: it keeps its result).
                1 => {
                    let n = h.as_ref().unwrap().cancel_all().unwrap();
                    assert!((1..=2).contains(&n), "fd {i}: {n} cancelled");
                }
                2 => peers[i].write_all(&msg(round, i, "last")).unwrap(),
                _ => {}
            }
        }
        let mut packets = Vec::new();
        for _ in 0..FDS + echoes {
            let mut p = take_one(&port);
            count(p.context, &mut seen);
            let (i, step) = p.context;
            match step {
                Step::Echo => {
                    assert_eq!(*p.result.as_ref().unwrap(), msg(round, i, "echo").len())
                }
                Step::SecondRecv if i % 3 == 2 => {
                    let b = p.take_buf().unwrap();
                    assert_eq!(&b[..], &msg(round, i, "last")[..]);
                }
                Step::SecondRecv => {
                    let e = p.result.as_ref().unwrap_err();
                    assert!(is_aborted(e), "fd {i}: {e:?}");
                }
                s => panic!("unexpected packet {s:?} of fd {i}"),
            }
            packets.push(p);
        }
        assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
        for i in 0..FDS {
            let echo = usize::from(i % 3 != 0);
            for (step, n) in [
                (Step::FirstRecv, 1),
                (Step::FirstSend, 1),
                (Step::SecondRecv, 1),
                (Step::Echo, echo),
            ] {
                assert_eq!(
                    seen.get(&(i, step)).copied().unwrap_or(0),
                    n,
                    "round {round}, fd {i}, {step:?}"
                );
            }
        }

        // Closing every handle closes every fd: each peer sees end of file,
        // so no table slot keeps a file open, and the next round reuses the
        // numbers (and the slots).
        drop(packets);
        handles.clear();
        for (i, p) in peers.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            assert_eq!(p.read(&mut b).unwrap(), 0, "round {round}: fd {i} open");
        }
        assert_eq!(port.stats().in_flight, 0);
    }
}

fn churn_small_table(backend: Backend) {
    churn(backend, Some(SMALL_TABLE));
}

fn churn_no_table(backend: Backend) {
    churn(backend, Some(0));
}

/// The default (no table, unless `CPORT_FIXED_FILES` says otherwise).
fn churn_default_table(backend: Backend) {
    churn(backend, None);
}

/// A slot for every fd.
fn churn_large_table(backend: Backend) {
    churn(backend, Some(4096));
}

/// Accept and connect name their socket's slot too; the accepted sockets
/// are associated in turn, then the listener is closed with an accept
/// pending (cancel by fd), with a table smaller than the sockets.
fn accept_connect_and_close(backend: Backend) {
    let port = build(backend, Some(2));
    let dir = std::env::temp_dir().join(format!("cport-fixed-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    let path = dir.join(format!("{backend}.sock"));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let hl = port.associate(listener, 100).unwrap();
    let mut served = Vec::new();
    for i in 0..6 {
        hl.accept((i, Step::FirstRecv)).unwrap();
        let mut c = port
            .blocking(|| UnixStream::connect(&path))
            .expect("connect");
        let mut p = take_one(&port);
        assert_eq!(p.context, (i, Step::FirstRecv));
        let a = p.take_accepted().expect("accepted socket").socket;
        let h = port.associate(a, i).unwrap();
        h.send(Buf::from(msg(0, i, "hi")), (i, Step::FirstSend))
            .unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        port.blocking(|| read_exact(&mut c, &msg(0, i, "hi")));
        let p = take_one(&port);
        assert_eq!(p.context, (i, Step::FirstSend));
        assert_eq!(*p.result.as_ref().unwrap(), msg(0, i, "hi").len());
        served.push((h, c));
    }
    // An accept in flight, then the listener closed: it ends aborted.
    hl.accept((99, Step::FirstRecv)).unwrap();
    hl.close();
    let p = take_one(&port);
    assert_eq!(p.context, (99, Step::FirstRecv));
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    drop(p);
    drop(hl);
    for (h, mut c) in served {
        drop(h);
        let mut b = [0u8; 4];
        assert_eq!(c.read(&mut b).unwrap(), 0);
    }
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
}

per_backend!(
    churn_small_table,
    churn_no_table,
    churn_default_table,
    churn_large_table,
    accept_connect_and_close
);
