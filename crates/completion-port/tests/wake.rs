//! Regression: a thread that reaps completions while another waits in the
//! kernel must not swallow that thread's wake-up (found by the queue
//! benchmark: a waiter stayed asleep with a packet queued).
//!
//! A waits as the leader; the main thread posts (which sends A a wake-up),
//! then polls the port, reaping whatever the kernel holds — possibly that
//! wake-up. A must still get the next packet promptly: it waits with a
//! deadline three times longer than the bound the main thread allows, so a
//! lost wake-up fails the test instead of passing late.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use completion_port::{Backend, GetError};

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

per_backend!(wake_survives_a_concurrent_reap);
