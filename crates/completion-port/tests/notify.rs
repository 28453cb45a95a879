//! Notification modes (windows-semantics §3.13–14) on both backends: operations issued
//! without packets (windows-semantics §3.14) and skip-on-success
//! handles, with results taken by token (`GetOverlappedResult`).

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use completion_port::{is_aborted, Backend, Buf, GetError, PacketKind};

/// An op without a packet: nothing reaches `get`; its result is waited for
/// by token, by a thread that is the only one using the port (it must
/// drive the backend itself).
fn no_packet_result_by_token(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 3).unwrap();
    let quiet = h.without_packets();
    let t = quiet.recv(Buf::with_capacity(16), 7).unwrap();
    assert!(port.take_result(t).is_none(), "not complete yet");
    assert!(matches!(
        port.wait_result(t, Some(QUIET)),
        Err(GetError::Timeout)
    ));
    peer.write_all(b"hello").unwrap();
    let mut p = port.wait_result(t, Some(WAIT)).unwrap();
    assert_eq!(
        (p.key, p.context, p.kind(), p.token()),
        (3, 7, PacketKind::Recv, Some(t))
    );
    assert_eq!(*p.result.as_ref().unwrap(), 5);
    assert_eq!(&p.take_buf().unwrap()[..], b"hello");
    // Taken once; and no packet was ever queued for it.
    assert!(port.take_result(t).is_none());
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
    // The handle itself still yields packets.
    let t2 = h.nop(8).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().token(), Some(t2));
    assert!(port.take_result(t2).is_none());
}

/// With a worker dequeuing packets (and so leading in the kernel), a result
/// waiter is served by the worker's reaping; the worker never sees the op.
fn no_packet_with_a_busy_pool(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap();
    let stop = AtomicBool::new(false);
    let seen = AtomicUsize::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(p) = port.get(Some(Duration::from_millis(20))) {
                    assert_eq!(p.context, 100, "the worker got a no-packet op");
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        wait_until("the worker leads", || port.stats().leader);
        for round in 0..50u32 {
            let t = h
                .without_packets()
                .recv(Buf::with_capacity(4), round)
                .unwrap();
            peer.write_all(&round.to_le_bytes()).unwrap();
            // The waiter's own deadline is three times the bound allowed
            // here: a missed wake-up fails the test instead of passing late.
            let port = &port;
            let waiter = s.spawn(move || port.wait_result(t, Some(WAIT * 3)));
            let until = std::time::Instant::now() + WAIT;
            while !waiter.is_finished() {
                assert!(
                    std::time::Instant::now() < until,
                    "round {round}: the result waiter was not woken"
                );
                thread::sleep(Duration::from_millis(1));
            }
            let mut p = waiter.join().unwrap().unwrap();
            assert_eq!((p.context, *p.result.as_ref().unwrap()), (round, 4));
            assert_eq!(&p.take_buf().unwrap()[..], &round.to_le_bytes());
            port.post(0, 0, 100).unwrap();
        }
        wait_until("the worker got every post", || {
            seen.load(Ordering::SeqCst) == 50
        });
        stop.store(true, Ordering::SeqCst);
    });
}

/// A no-packet op can be cancelled; its result says so. Closing the port
/// releases a result waiter.
fn no_packet_cancel_and_close(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, _peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap().without_packets();
    let t = h.recv(Buf::with_capacity(4), 1).unwrap();
    h.cancel(t).unwrap();
    let p = port.wait_result(t, Some(WAIT)).unwrap();
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    let t = h.recv(Buf::with_capacity(4), 2).unwrap();
    let waiter = {
        let port = port.clone();
        thread::spawn(move || port.wait_result(t, Some(WAIT)).map(|p| p.context))
    };
    wait_until("the waiter leads", || port.stats().leader);
    port.close();
    assert!(matches!(waiter.join().unwrap(), Err(GetError::Closed)));
}

/// Skip-on-success: an op that succeeds during its issue call yields no
/// packet and its result is there at once; one that has to wait yields its
/// packet as usual. On epoll a no-op and a receive with data buffered
/// complete during the call; on io_uring nothing does (documented), so
/// every op yields its packet.
fn skip_packet_on_success(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 4).unwrap();
    h.set_skip_packet_on_success(true);
    peer.write_all(b"ready").unwrap();
    let tn = h.nop(1).unwrap();
    let tr = h.recv(Buf::with_capacity(16), 2).unwrap();
    match backend {
        Backend::Epoll => {
            let p = port
                .take_result(tn)
                .expect("a no-op completes during the call");
            assert_eq!((p.context, *p.result.as_ref().unwrap()), (1, 0));
            let mut p = port
                .take_result(tr)
                .expect("buffered data is received during the call");
            assert_eq!(&p.take_buf().unwrap()[..], b"ready");
            assert!(
                matches!(port.get(Some(QUIET)), Err(GetError::Timeout)),
                "no packet"
            );
        }
        _ => {
            let mut got: Vec<u32> = take(&port, 2).into_iter().map(|p| p.context).collect();
            got.sort();
            assert_eq!(got, [1, 2]);
            assert!(port.take_result(tn).is_none() && port.take_result(tr).is_none());
        }
    }
    // Pending at the call: a packet, on both backends.
    let t = h.recv(Buf::with_capacity(16), 3).unwrap();
    assert!(port.take_result(t).is_none());
    peer.write_all(b"later").unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.token(), p.context), (Some(t), 3));
    // Switched off: packets again.
    h.set_skip_packet_on_success(false);
    let t = h.nop(4).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().token(), Some(t));
}

per_backend!(
    no_packet_result_by_token,
    no_packet_with_a_busy_pool,
    no_packet_cancel_and_close,
    skip_packet_on_success,
);
