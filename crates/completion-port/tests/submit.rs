//! When an issued operation reaches the kernel (README, "Deferred
//! submissions"): an op issued by a thread that runs for the port is
//! submitted at that thread's next `get`/`get_many`, blocking scope or exit;
//! an op issued by any other thread is submitted at once. Each test shows
//! the op completing at the point the rules promise, with no reliance on
//! timing (every wait is bounded by `WAIT` only to fail instead of hang).
//!
//! Ports here have blocking detection off (`common::explicit_port`): the
//! rules above are the explicit ones; with detection on, a running thread
//! seen blocked also has its deferred operations submitted (`blocking.rs`).

mod common;

use std::fs::File;
use std::thread;
use std::time::Duration;

use common::{explicit_port as port, wait_until, WAIT};
use completion_port::{Backend, GetError, Handle, PacketKind, Port};
use crossbeam_channel::{bounded, Receiver};

fn devnull(port: &Port<u32>) -> Handle<u32> {
    port.associate(File::open("/dev/null").unwrap(), 7).unwrap()
}

/// Makes the calling thread count as running for `port`.
fn start_running(port: &Port<u32>) {
    port.post(0, 0, 0).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().context, 0);
    assert!(port.is_running_here());
}

/// A running thread issues an op, then asks for its next packet: that
/// `get` submits the op and returns its completion — alone, while another
/// thread already waits in the kernel, and through `get_many`.
fn op_issued_while_running_completes_after_get(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let h = devnull(&port);

    // Alone: this thread's own `get` is the only one that could submit it.
    start_running(&port);
    h.nop(1).unwrap();
    let p = port
        .get(Some(WAIT))
        .expect("the op completes once its issuer asks again");
    assert_eq!((p.kind(), p.context, p.key), (PacketKind::Nop, 1, 7));

    // A batch, taken back with `get_many`.
    for i in 10..42 {
        h.nop(i).unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 32 {
        port.get_many(&mut got, 32, Some(WAIT))
            .expect("the batch completes once its issuer asks again");
    }
    let mut ctx: Vec<u32> = got.iter().map(|p| p.context).collect();
    ctx.sort_unstable();
    assert_eq!(ctx, (10..42).collect::<Vec<_>>());

    // Another thread leads in the kernel; this thread's `get` submits the op
    // before it parks, so the leader is woken by its completion.
    let (tx, rx) = bounded(1);
    let leader = {
        let port = port.clone();
        thread::spawn(move || tx.send(port.get(Some(WAIT)).map(|p| p.context)).unwrap())
    };
    wait_until("the other thread leads", || port.stats().leader);
    assert!(port.is_running_here());
    h.nop(2).unwrap();
    // Exactly one of the two threads gets the op.
    let mine = port.get(Some(Duration::from_millis(100)));
    let theirs = match mine {
        Ok(p) => {
            assert_eq!(p.context, 2);
            port.post(0, 0, 3).unwrap();
            rx.recv_timeout(WAIT).unwrap().unwrap();
            assert!(port.get(Some(Duration::ZERO)).is_err());
            return leader.join().unwrap();
        }
        Err(GetError::Timeout) => rx.recv_timeout(WAIT).unwrap(),
        Err(e) => panic!("unexpected {e:?}"),
    };
    assert_eq!(theirs.expect("the leader gets the op"), 2);
    leader.join().unwrap();
}

/// A thread that does not run for the port issues an op and never calls
/// `get`: the op is submitted at once and a waiting thread receives it.
fn op_issued_by_non_running_thread_completes_without_its_get(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let h = devnull(&port);
    let (tx, rx) = bounded(1);
    let waiter = {
        let port = port.clone();
        thread::spawn(move || tx.send(port.get(Some(WAIT)).map(|p| p.context)).unwrap())
    };
    wait_until("the waiter leads", || port.stats().leader);

    // This thread never dequeued from the port.
    assert!(!port.is_running_here());
    h.nop(1).unwrap();
    assert_eq!(
        rx.recv_timeout(WAIT)
            .unwrap()
            .expect("the waiter gets the op"),
        1
    );
    waiter.join().unwrap();

    // A thread that runs for *another* port does not run for this one: its
    // op is submitted at once too, while it waits somewhere else.
    let other = common::explicit_port::<u32>(backend, 2);
    let (tx, rx) = bounded(1);
    let waiter = {
        let port = port.clone();
        thread::spawn(move || tx.send(port.get(Some(WAIT)).map(|p| p.context)).unwrap())
    };
    wait_until("the waiter leads", || port.stats().leader);
    let (done_tx, done_rx) = bounded::<()>(1);
    let issuer = {
        let (other, h) = (other.clone(), h.clone());
        thread::spawn(move || {
            start_running(&other);
            h.nop(2).unwrap();
            // Blocks outside both ports until the op was received.
            done_rx.recv_timeout(WAIT).unwrap();
        })
    };
    assert_eq!(
        rx.recv_timeout(WAIT)
            .unwrap()
            .expect("the waiter gets the op"),
        2
    );
    done_tx.send(()).unwrap();
    issuer.join().unwrap();
    waiter.join().unwrap();
}

/// Spawns a thread that waits for one packet and sends its context, and
/// returns once that thread leads (waits in the kernel).
fn spawn_leader(port: &Port<u32>) -> (thread::JoinHandle<()>, Receiver<u32>) {
    let (tx, rx) = bounded(1);
    let t = {
        let port = port.clone();
        thread::spawn(move || tx.send(port.get(Some(WAIT)).unwrap().context).unwrap())
    };
    wait_until("the waiter leads", || port.stats().leader);
    (t, rx)
}

/// A running thread issues an op while another thread already waits in the
/// kernel, then opens a blocking scope, or exits: the op is submitted then,
/// and the waiting thread receives it while the issuer is blocked (or gone).
fn op_issued_while_running_is_submitted_by_blocking_scope_or_exit(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let h = devnull(&port);

    for exit in [false, true] {
        let (running_tx, running_rx) = bounded::<()>(1);
        let (ready_tx, ready_rx) = bounded::<()>(1);
        let (got_tx, got_rx) = bounded::<()>(1);
        let issuer = {
            let (port, h) = (port.clone(), h.clone());
            thread::spawn(move || {
                start_running(&port);
                running_tx.send(()).unwrap();
                ready_rx.recv_timeout(WAIT).unwrap();
                h.nop(1).unwrap();
                if !exit {
                    // Blocks, inside the scope, until the op was received.
                    port.blocking(|| got_rx.recv_timeout(WAIT).unwrap());
                }
            })
        };
        running_rx.recv_timeout(WAIT).unwrap();
        // It entered the kernel before the op was issued.
        let (leader, got) = spawn_leader(&port);
        ready_tx.send(()).unwrap();
        let what = if exit { "at exit" } else { "by the scope" };
        let ctx = got
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("the op was not submitted {what}"));
        assert_eq!(ctx, 1);
        let _ = got_tx.send(());
        issuer.join().unwrap();
        leader.join().unwrap();
    }
}

per_backend!(
    op_issued_while_running_completes_after_get,
    op_issued_by_non_running_thread_completes_without_its_get,
    op_issued_while_running_is_submitted_by_blocking_scope_or_exit,
);
