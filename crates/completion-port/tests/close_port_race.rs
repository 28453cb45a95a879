//! `Port::close` while threads dequeue: the operations in flight are
//! cancelled and "their buffers and contexts dropped" by the close — no
//! thread's `get` may receive one of those cancelled packets.
//!
//! Found by the model test (`tests/model`, a packet "aborted, but nothing
//! cancelled it" dequeued while the port was closing), reproduced here: on
//! io_uring a few of every ~60 000 close-cancelled receives reach a `get`
//! that runs during the close (1 and 3 in two 5-second runs with the
//! monitor as of 680ebad; 2 in 49 200 with the monitor's exit wake-up,
//! 6814332, which makes the model hit it more often). The likely window:
//! `close` sets `hot.closed`, cancels, and only then sets `st.closed` under
//! the lock; a completion collected meanwhile without the lock (the leader,
//! the monitor's progress poll) is pushed on the queue, and a `get` in its
//! locked slow path — which checks `st.closed`, not `hot.closed` — or in its
//! fast path (`hot.closed` checked, then a pop) takes it before the close
//! drains the queue. Fixed in 7d99999: once `hot.closed` is set, a packet
//! popped goes to the caller's graveyard (dropped after the lock), never to
//! the caller (34 of 160 000 on io_uring before, 0 after).

mod common;

use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use completion_port::{is_aborted, Backend, Buf, GetError, Port};

/// Rounds of: 8 idle receives in flight, 3 threads dequeuing with short
/// time-outs, then `close`. Returns how many cancelled receives reached a
/// `get`.
fn delivered_during_close(backend: Backend, rounds: usize) -> usize {
    let delivered = Arc::new(AtomicUsize::new(0));
    for _ in 0..rounds {
        let port: Port<u32> = common::port(backend, 2);
        let mut keep = Vec::new();
        for i in 0..8 {
            let (a, b) = UnixStream::pair().unwrap();
            let h = port.associate(a, i).unwrap();
            h.recv(Buf::with_capacity(8), i as u32).unwrap();
            keep.push((h, b));
        }
        let getters: Vec<_> = (0..3)
            .map(|_| {
                let (port, delivered) = (port.clone(), delivered.clone());
                thread::spawn(move || loop {
                    match port.get(Some(Duration::from_micros(50))) {
                        Ok(p) if p.result.as_ref().is_err_and(is_aborted) => {
                            delivered.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(p) => panic!("an idle receive ended with {:?}", p.result),
                        Err(GetError::Closed) => return,
                        Err(GetError::Timeout) => {}
                        Err(e) => panic!("get: {e:?}"),
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_micros(200));
        port.close();
        for g in getters {
            g.join().unwrap();
        }
    }
    delivered.load(Ordering::SeqCst)
}

fn no_close_cancelled_packet_reaches_a_get(backend: Backend) {
    let n = delivered_during_close(backend, 20_000);
    assert_eq!(
        n, 0,
        "{backend}: {n} receives cancelled by Port::close were dequeued by a get running during \
         the close (of 160 000)"
    );
}

#[test]
fn no_close_cancelled_packet_reaches_a_get_on_io_uring() {
    no_close_cancelled_packet_reaches_a_get(Backend::IoUring)
}

#[test]
fn no_close_cancelled_packet_reaches_a_get_on_epoll() {
    no_close_cancelled_packet_reaches_a_get(Backend::Epoll)
}
