//! Waking the thread that waits in the kernel for the port (the leader)
//! when a packet is posted. io_uring posts a wake-up CQE into the ring
//! (`driver/uring/wake.rs`: `MSG_RING` without a source ring on Linux
//! 6.13+, else a futex wait or a NOP; each is tested at the ring level
//! there); epoll writes the port's eventfd. Every test here runs on both.
//! Each waiter's deadline is three times the bound the posting side
//! allows, so a lost wake-up fails the test instead of passing late.
//!
//! - Regression: a thread that reaps completions while another waits in
//!   the kernel must not swallow that thread's wake-up (found by the queue
//!   benchmark: a waiter stayed asleep with a packet queued). A waits as
//!   the leader; the main thread posts (which sends A a wake-up), then
//!   polls the port, reaping whatever the kernel holds — possibly that
//!   wake-up. A must still get the next packet promptly.
//! - Many posters wake one parked getter, each post waited for (bounded):
//!   every packet is dequeued exactly once.
//! - Posts race with the leader's return from the kernel (its waits end at
//!   short deadlines): every packet is still dequeued exactly once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use completion_port::{Backend, GetError, Port};

fn wake_survives_a_concurrent_reap(backend: Backend) {
    let port = port::<u32>(backend, 2);
    for round in 0..200u32 {
        let (tx, rx) = mpsc::channel();
        let a = {
            let port = port.clone();
            thread::spawn(move || {
                let p = port.get(Some(WAIT * 3)).expect("A gets a packet");
                tx.send(p.context).unwrap();
            })
        };
        wait_until("A waits in the kernel", || port.stats().leader);
        port.post(0, 0, 2 * round).unwrap();
        // Take it ourselves if A has not yet, then poll: the poll reaps.
        let mut taken = 0;
        if let Ok(p) = port.get(Some(Duration::ZERO)) {
            assert_eq!(p.context, 2 * round);
            taken += 1;
        }
        match port.get(Some(Duration::ZERO)) {
            Err(GetError::Timeout) => {}
            other => panic!("unexpected {:?}", other.map(|p| p.context)),
        }
        if taken == 1 {
            port.post(0, 0, 2 * round + 1).unwrap();
        }
        let got = rx
            .recv_timeout(WAIT)
            .expect("A was not woken for a queued packet");
        assert!(got == 2 * round || got == 2 * round + 1);
        a.join().unwrap();
        // This thread counted as running after its get; ask again to reset.
        assert!(matches!(
            port.get(Some(Duration::ZERO)),
            Err(GetError::Timeout)
        ));
    }
}

const POSTERS: u64 = 4;

/// Collects `n` packets on one thread with `get(timeout)`, tolerating time-outs
/// until `WAIT * 3` has passed; returns their contexts.
fn getter(
    port: &Port<u64>,
    n: u64,
    timeout: impl Fn(u64) -> Duration + Send + 'static,
) -> thread::JoinHandle<Vec<u64>> {
    let port = port.clone();
    thread::spawn(move || {
        let end = Instant::now() + WAIT * 3;
        let mut seen = Vec::new();
        let mut i = 0;
        while (seen.len() as u64) < n {
            assert!(
                Instant::now() < end,
                "only {} of {n} packets dequeued",
                seen.len()
            );
            i += 1;
            match port.get(Some(timeout(i))) {
                Ok(p) => seen.push(p.context),
                Err(GetError::Timeout) => {}
                Err(e) => panic!("get failed: {e:?}"),
            }
        }
        seen
    })
}

/// Every context in `0..n`, once.
fn exactly_once(seen: Vec<u64>, n: u64) {
    assert_eq!(seen.len() as u64, n);
    let set: HashSet<u64> = seen.into_iter().collect();
    assert_eq!(
        set,
        (0..n).collect::<HashSet<u64>>(),
        "a packet was lost or duplicated"
    );
}

fn many_posters_wake_a_parked_getter(backend: Backend) {
    const EACH: u64 = 300;
    let port = port::<u64>(backend, 1);
    let dequeued = Arc::new(AtomicU64::new(0));
    let getter = {
        let port = port.clone();
        let dequeued = dequeued.clone();
        thread::spawn(move || {
            let mut seen = Vec::new();
            while (seen.len() as u64) < POSTERS * EACH {
                let p = port.get(Some(WAIT * 3)).expect("the getter was not woken");
                seen.push(p.context);
                dequeued.fetch_add(1, Ordering::SeqCst);
            }
            seen
        })
    };
    let posted = Arc::new(AtomicU64::new(0));
    let posters: Vec<_> = (0..POSTERS)
        .map(|t| {
            let (port, posted, dequeued) = (port.clone(), posted.clone(), dequeued.clone());
            thread::spawn(move || {
                for i in 0..EACH {
                    port.post(0, 0, t * EACH + i).unwrap();
                    // Wait until this post was dequeued, so the getter is
                    // parked again (or about to be) at the next one.
                    let k = posted.fetch_add(1, Ordering::SeqCst) + 1;
                    let end = Instant::now() + WAIT;
                    while dequeued.load(Ordering::SeqCst) < k {
                        assert!(Instant::now() < end, "post {k} was not dequeued");
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    exactly_once(getter.join().unwrap(), POSTERS * EACH);
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
}

fn posts_race_the_leaders_return(backend: Backend) {
    const EACH: u64 = 500;
    let port = port::<u64>(backend, 1);
    // Deadlines of 0 to 127 µs: the leader keeps leaving the kernel.
    let getter = getter(&port, POSTERS * EACH, |i| {
        Duration::from_micros((i * 37) % 128)
    });
    let posters: Vec<_> = (0..POSTERS)
        .map(|t| {
            let port = port.clone();
            thread::spawn(move || {
                for i in 0..EACH {
                    port.post(0, 0, t * EACH + i).unwrap();
                    if i % 8 == t {
                        thread::sleep(Duration::from_micros(50));
                    }
                }
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    exactly_once(getter.join().unwrap(), POSTERS * EACH);
    // And a post still wakes a getter parked without a deadline soon.
    let last = getter_once(&port);
    thread::sleep(Duration::from_millis(5));
    port.post(0, 0, 7).unwrap();
    assert_eq!(
        last.recv_timeout(WAIT).expect("the getter was not woken"),
        7
    );
}

/// A thread that waits (up to `WAIT * 3`) for one packet and sends its
/// context.
fn getter_once(port: &Port<u64>) -> mpsc::Receiver<u64> {
    let (tx, rx) = mpsc::channel();
    let port = port.clone();
    thread::spawn(move || {
        if let Ok(p) = port.get(Some(WAIT * 3)) {
            let _ = tx.send(p.context);
        }
    });
    rx
}

per_backend!(
    wake_survives_a_concurrent_reap,
    many_posters_wake_a_parked_getter,
    posts_race_the_leaders_return,
);
