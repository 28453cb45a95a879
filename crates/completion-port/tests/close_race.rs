//! Closing or cancelling a handle while other threads issue operations on
//! it (issue 17, item 1): every operation the port accepted yields exactly
//! one packet, and nothing stays in flight. Before the fix an operation
//! registered before the close but handed to the backend after the
//! close's cancel request stayed pending forever (a receive on an idle
//! socket): its packet never came and `in_flight` stayed above 0.
//!
//! The loom model `core::loom::issue_vs_close_handle` checks the same
//! interleaving exhaustively on the real core; this test runs it on the
//! real backends.

mod common;

use std::os::unix::net::UnixStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use completion_port::{is_aborted, Backend, Buf, Handle, Port};

const ISSUERS: usize = 4;
const ROUNDS: usize = 200;
/// Most receives one issuer issues per round.
const CAP: usize = 256;

/// Issues receives on `h` until the port refuses one (the handle closed)
/// or `CAP` were accepted; returns how many were accepted.
fn issue(h: &Handle<()>, start: &Barrier) -> usize {
    start.wait();
    let mut accepted = 0;
    while accepted < CAP {
        match h.recv(Buf::with_capacity(16), ()) {
            Ok(_) => accepted += 1,
            Err(r) => {
                assert_eq!(r.error.raw_os_error(), Some(libc::EBADF), "{}", r.error);
                break;
            }
        }
    }
    accepted
}

/// Every packet is a cancelled receive.
fn all_cancelled(packets: &[completion_port::Packet<()>], round: usize) {
    assert!(
        packets
            .iter()
            .all(|p| is_aborted(p.result.as_ref().unwrap_err())),
        "round {round}: a receive on the idle socket ended otherwise"
    );
}

/// `close`: closes the handle while `ISSUERS` threads issue receives on
/// it; every accepted receive yields its packet. Otherwise `cancel_all`
/// races the issuers: the `n` receives it reports cancelled yield their
/// packets at once (before the handle is closed).
fn race(backend: Backend, close: bool) {
    let port: Port<()> = port(backend, 2);
    for round in 0..ROUNDS {
        let (a, _b) = UnixStream::pair().unwrap();
        let h = port.associate(a, round).unwrap();
        let start = Arc::new(Barrier::new(ISSUERS + 1));
        let issuers: Vec<_> = (0..ISSUERS)
            .map(|_| {
                let (h, start) = (h.clone(), start.clone());
                thread::spawn(move || issue(&h, &start))
            })
            .collect();
        start.wait();
        // Let the issuers get going for a varying while.
        for _ in 0..(round % 7) * 50 {
            std::hint::spin_loop();
        }
        let early = if close {
            h.close();
            0
        } else {
            let n = h.cancel_all().unwrap_or(0);
            all_cancelled(&take(&port, n), round);
            n
        };
        let accepted: usize = issuers.into_iter().map(|t| t.join().unwrap()).sum();
        h.close();
        all_cancelled(&take(&port, accepted - early), round);
        wait_until("nothing is in flight", || port.stats().in_flight == 0);
        assert!(
            port.get(Some(Duration::ZERO)).is_err(),
            "round {round}: a packet beyond the {accepted} accepted receives"
        );
    }
}

fn close_while_issuing(backend: Backend) {
    race(backend, true);
}

fn cancel_all_while_issuing(backend: Backend) {
    race(backend, false);
}

per_backend!(close_while_issuing, cancel_all_while_issuing);
