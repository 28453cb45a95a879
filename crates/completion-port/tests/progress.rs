//! Progress when nobody waits on the port (`core/progress.rs`): operations
//! reach the kernel, finish and are collected even while no thread waits in
//! `get` — a running worker that issues an operation and then blocks
//! somewhere the port cannot see (issue 15: hung forever on io_uring with
//! detection off), a port nobody dequeues from (issue 14: the completion
//! state must be written when the I/O ends), and a queue that never empties
//! (issue 17: operations waiting for readiness or in the CQ were starved).
//! Each failed on 6c045ae and passes since; the same on both backends,
//! with detection on or off.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use completion_port::{Backend, Buf, Delivery, Packet, PacketKind, Port};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are new and ours.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

/// Whether `fd` becomes readable within `limit`.
fn readable_within(fd: &OwnedFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, limit.as_millis() as i32) };
    r == 1
}

/// A worker running for the port issues a write, then waits on a channel
/// (not the port) for the main thread, which reads what it wrote with a
/// plain blocking read. The write must reach the kernel although the
/// worker never comes back to the port and nobody else waits on it.
fn issue_then_wait_elsewhere(backend: Backend, detection: bool) {
    let port: Port<()> = Port::builder()
        .backend(backend)
        .concurrency(1)
        .blocking_detection(detection)
        .build()
        .unwrap();
    let (r, w) = pipe();
    let w = port.associate(w, 1).unwrap();
    port.post(0, 0, ()).unwrap();
    let (issued_tx, issued_rx) = mpsc::channel();
    let (read_tx, read_rx) = mpsc::channel::<()>();
    let worker = {
        let port = port.clone();
        thread::spawn(move || {
            // Running for the port from here on.
            let p = port.get(Some(WAIT)).unwrap();
            assert_eq!(p.kind(), PacketKind::Posted);
            w.write(Buf::copy_from(b"hello"), ()).unwrap();
            issued_tx.send(()).unwrap();
            // Blocked somewhere the port cannot see.
            let _ = read_rx.recv_timeout(WAIT);
        })
    };
    issued_rx.recv_timeout(WAIT).unwrap();
    assert!(
        readable_within(&r, WAIT),
        "the write issued by a worker that then waits elsewhere never reached the kernel"
    );
    let mut got = [0u8; 5];
    std::fs::File::from(r).read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    read_tx.send(()).unwrap();
    worker.join().unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.kind(), p.bytes()), (PacketKind::Write, 5));
}

fn issue_then_wait_elsewhere_detection_off(backend: Backend) {
    issue_then_wait_elsewhere(backend, false);
}

fn issue_then_wait_elsewhere_detection_on(backend: Backend) {
    issue_then_wait_elsewhere(backend, true);
}

/// Nobody calls `get`: a receive whose data arrived is still collected
/// (its packet queued, `in_flight` back to 0) — what lets the C ABI write
/// an operation's completion state when the I/O ends.
fn completion_collected_without_a_waiter(backend: Backend) {
    let port: Port<()> = port(backend, 2);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    a.recv(Buf::with_capacity(16), ()).unwrap();
    b.write_all(b"ping").unwrap();
    wait_until("the receive's packet is queued with nobody in get", || {
        let s = port.stats();
        s.queued == 1 && s.in_flight == 0
    });
    let mut p = port.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(&p.take_buf().unwrap()[..], b"ping");
}

/// A worker whose every packet leads it to post another, so the queue never
/// empties: a receive whose data arrived must still come through.
fn queue_that_never_empties(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    a.recv(Buf::with_capacity(16), 1).unwrap();
    port.post(0, 0, 0).unwrap();
    b.write_all(b"data").unwrap();
    let end = Instant::now() + WAIT;
    let mut chained = 0u64;
    loop {
        let p = port.get(Some(WAIT)).unwrap();
        if p.context == 1 {
            assert_eq!(p.bytes(), 4);
            break;
        }
        assert!(
            Instant::now() < end,
            "the receive starved behind {chained} chained packets"
        );
        chained += 1;
        port.post(0, 0, 0).unwrap();
    }
}

/// The completion hook runs once per operation when it ends — finished,
/// cancelled by a handle close, or issued without a packet — with nobody
/// in `get`, before the packet is dequeued; never for posts.
fn hook_runs_when_operations_end(backend: Backend) {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    struct Op {
        id: usize,
        seen: Arc<[AtomicUsize; 4]>,
    }
    let seen: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let port: Port<Op> = Port::builder()
        .backend(backend)
        .on_completion(|p: &mut Packet<Op>| {
            // Ended: 1 + bytes, or 100 for a cancel.
            let v = match &p.result {
                Ok(n) => 1 + n,
                Err(e) if completion_port::is_aborted(e) => 100,
                Err(_) => 200,
            };
            let op = &p.context;
            assert_eq!(op.seen[op.id].swap(v, SeqCst), 0, "hook ran twice");
            Delivery::Deliver
        })
        .build()
        .unwrap();
    let op = |id| Op {
        id,
        seen: seen.clone(),
    };
    let (a, mut b) = UnixStream::pair().unwrap();
    let (c, _d) = UnixStream::pair().unwrap();
    let (e, mut f) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    let c = port.associate(c, 2).unwrap();
    let e = port.associate(e, 3).unwrap();
    a.recv(Buf::with_capacity(16), op(0)).unwrap();
    c.recv(Buf::with_capacity(16), op(1)).unwrap();
    let t = e
        .without_packets()
        .recv(Buf::with_capacity(16), op(2))
        .unwrap();
    port.post(9, 0, op(3)).unwrap();
    b.write_all(b"abc").unwrap();
    c.close();
    wait_until("the hook saw the receive and the cancel", || {
        seen[0].load(SeqCst) == 4 && seen[1].load(SeqCst) == 100
    });
    f.write_all(b"de").unwrap();
    wait_until("the hook saw the packet-less receive", || {
        seen[2].load(SeqCst) == 3
    });
    // All of it before any packet was dequeued; then exactly the packets.
    assert_eq!(port.stats().dequeued, 0);
    let mut ids: Vec<usize> = take(&port, 3).iter().map(|p| p.context.id).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 3]);
    assert_eq!(seen[3].load(SeqCst), 0, "the hook never runs for posts");
    assert_eq!(port.wait_result(t, Some(WAIT)).unwrap().bytes(), 2);
}

/// A hook that discards a packet: none comes, and the operation is over
/// (nothing in flight); the next operation's packet comes as usual.
fn hook_discards(backend: Backend) {
    let port: Port<u32> = Port::builder()
        .backend(backend)
        .on_completion(|p: &mut Packet<u32>| {
            if p.context == 0 {
                Delivery::Discard
            } else {
                Delivery::Deliver
            }
        })
        .build()
        .unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    a.recv(Buf::with_capacity(16), 0).unwrap();
    b.write_all(b"x").unwrap();
    wait_until("the discarded operation is over", || {
        port.stats().in_flight == 0
    });
    a.recv(Buf::with_capacity(16), 1).unwrap();
    b.write_all(b"y").unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 1);
    assert!(
        port.get(Some(Duration::ZERO)).is_err(),
        "a discarded packet came"
    );
}

per_backend!(
    hook_discards,
    hook_runs_when_operations_end,
    issue_then_wait_elsewhere_detection_off,
    issue_then_wait_elsewhere_detection_on,
    completion_collected_without_a_waiter,
    queue_that_never_empties,
);
