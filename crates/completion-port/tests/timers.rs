//! Timers and time-outs (issue 15): timer packets (`post_after`,
//! `cancel_timer`) and per-operation time-outs (`Handle::with_timeout`), on
//! both backends: deadline order, cancellation, 100 000 pending timers,
//! a receive timed out on a silent peer (buffer back, connection still
//! usable), a whole send timed out, a timed operation that finishes in
//! time, and timers that outlive the thread that armed them.

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use completion_port::{is_aborted, Backend, Buf, PacketKind, Port};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timers_fire_in_deadline_order(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    for (key, delay) in [(3, 90), (1, 10), (2, 50)] {
        port.post_after(ms(delay), key, key as u32).unwrap();
    }
    let keys: Vec<usize> = take(&port, 3)
        .iter()
        .map(|p| {
            assert_eq!((p.kind(), p.bytes()), (PacketKind::Timer, 0));
            assert_eq!(p.key as u32, p.context);
            p.key
        })
        .collect();
    assert_eq!(keys, [1, 2, 3]);
}

fn cancel_a_timer(backend: Backend) {
    let port: Port<&str> = port(backend, 1);
    let t = port
        .post_after(Duration::from_secs(3600), 1, "late")
        .unwrap();
    port.cancel_timer(t).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.kind(), p.context), (PacketKind::Timer, "late"));
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    let e = port.cancel_timer(t).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // One that fired cannot be cancelled either.
    let t = port.post_after(ms(1), 2, "soon").unwrap();
    assert!(port.get(Some(WAIT)).unwrap().result.is_ok());
    assert_eq!(
        port.cancel_timer(t).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// A timer never fires before its delay (the backends round ticks up to
/// their grid, never down).
fn never_early(backend: Backend) {
    let port: Port<Instant> = port(backend, 1);
    for d in [1, 7, 13, 31] {
        port.post_after(ms(d), d as usize, Instant::now() + ms(d))
            .unwrap();
    }
    for p in take(&port, 4) {
        assert!(Instant::now() >= p.context, "timer {} fired early", p.key);
    }
}

/// Cancelling the earliest timer leaves the next one on time: the port
/// watches the earliest deadline only (io_uring: one kernel time-out for
/// it), so after a cancel it must still wake for the rest.
fn cancelling_the_earliest_keeps_the_rest(backend: Backend) {
    let port: Port<&str> = port(backend, 1);
    let first = port.post_after(ms(20), 1, "first").unwrap();
    port.post_after(ms(60), 2, "second").unwrap();
    port.cancel_timer(first).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, "first");
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.context, p.bytes()), ("second", 0), "{:?}", p.result);
    // And a new earliest after the others still comes first.
    port.post_after(ms(80), 3, "third").unwrap();
    port.post_after(ms(10), 4, "fourth").unwrap();
    let order: Vec<&str> = take(&port, 2).iter().map(|p| p.context).collect();
    assert_eq!(order, ["fourth", "third"]);
}

/// 100 000 timers pending at once (delays spread over 300 ms), every other
/// one cancelled: every packet comes exactly once, fired or cancelled.
fn a_hundred_thousand_timers(backend: Backend) {
    const N: usize = 100_000;
    let port: Port<usize> = port(backend, 2);
    let tokens: Vec<_> = (0..N)
        .map(|i| port.post_after(ms((i * 7919 % 300) as u64), i, i).unwrap())
        .collect();
    for t in tokens.iter().step_by(2) {
        // A cancel may come after the timer fired: then NotFound.
        let _ = port.cancel_timer(*t);
    }
    let mut seen = HashSet::with_capacity(N);
    let mut fired = 0;
    for _ in 0..N {
        let p = port.get(Some(WAIT)).unwrap();
        assert_eq!(p.kind(), PacketKind::Timer);
        assert!(seen.insert(p.context), "timer {} twice", p.context);
        match &p.result {
            Ok(0) => fired += 1,
            Err(e) => assert!(is_aborted(e) && p.context % 2 == 0, "{e}"),
            Ok(n) => panic!("a timer with {n} bytes"),
        }
    }
    assert!(fired >= N / 2, "only {fired} fired");
    assert_eq!(port.stats().in_flight, 0);
}

/// A receive on a silent peer times out with `ETIMEDOUT` and its buffer;
/// the connection still works afterwards.
fn receive_times_out(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let conn = port.associate(a, 1).unwrap();
    conn.with_timeout(ms(30))
        .recv(Buf::with_capacity(64), 1)
        .unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    let e = p.result.as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
    assert_eq!(p.take_buf().unwrap().capacity(), 64);
    // Still usable; a time-out long enough does not fire.
    peer.write_all(b"late").unwrap();
    conn.with_timeout(WAIT)
        .recv(Buf::with_capacity(64), 2)
        .unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(&p.take_buf().unwrap()[..], b"late");
    assert!(
        port.get(Some(QUIET)).is_err(),
        "a time-out fired after the op ended"
    );
    assert_eq!(port.stats().in_flight, 0);
}

/// A whole send nobody reads times out.
fn whole_send_times_out(backend: Backend) {
    let port: Port<()> = port(backend, 1);
    let (a, _peer) = UnixStream::pair().unwrap();
    let conn = port.associate(a, 1).unwrap();
    conn.with_timeout(ms(50))
        .send_all(Buf::from(vec![0u8; 16 << 20]), ())
        .unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.result.unwrap_err().kind(), ErrorKind::TimedOut);
}

/// Timers armed by a thread that then exits still fire (io_uring cancels
/// an exiting thread's requests: the port resubmits them), and a timed
/// receive issued by such a thread still gets its data.
fn timers_outlive_their_thread(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let conn = port.associate(a, 1).unwrap();
    {
        let (port, conn) = (port.clone(), conn.clone());
        thread::spawn(move || {
            port.post_after(ms(40), 7, 7).unwrap();
            conn.with_timeout(WAIT)
                .recv(Buf::with_capacity(8), 8)
                .unwrap();
        })
        .join()
        .unwrap();
    }
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.context, p.bytes()), (7, 0), "{:?}", p.result);
    peer.write_all(b"ok").unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.context, p.bytes()), (8, 2), "{:?}", p.result);
}

/// Closing the port drops every pending timer's context, once.
fn close_drops_pending_timers(backend: Backend) {
    struct Ctx(Arc<AtomicUsize>);
    impl Drop for Ctx {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let port: Port<Ctx> = port(backend, 1);
    for i in 0..100 {
        port.post_after(Duration::from_secs(3600), i, Ctx(dropped.clone()))
            .unwrap();
    }
    port.close();
    assert_eq!(dropped.load(SeqCst), 100);
    assert_eq!(port.stats().in_flight, 0);
}

per_backend!(
    timers_fire_in_deadline_order,
    cancel_a_timer,
    never_early,
    cancelling_the_earliest_keeps_the_rest,
    a_hundred_thousand_timers,
    receive_times_out,
    whole_send_times_out,
    timers_outlive_their_thread,
    close_drops_pending_timers,
);
