//! A completion must reach the queue even while the queue is never empty
//! (issue 17.2): a worker that re-issues, for every packet it dequeues,
//! something that queues a packet at once — a post, or a no-op (which the
//! epoll backend completes during its issue call, as it does an accept
//! that fails with `EMFILE`) — always finds a packet waiting, so it never
//! waits in the kernel. The receive whose data has arrived must still
//! come out, among the first few thousand packets.
//!
//! On epoll it never does (the backend only learns of readiness inside
//! `epoll_wait`, which nobody calls while packets are queued), and on
//! io_uring neither when posts keep the queue busy (nobody reaps the
//! completion queue; no-ops go through it, so they reap it too): those
//! variants are ignored until the fix, their names end in `_17_2`.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use common::{port, WAIT};
use completion_port::{Backend, Buf, Handle, Port};

/// Packets of the busy chain dequeued before the receive must have come.
/// A few thousand times what a fair queue needs (one pass of the backend).
const CHAIN: usize = 20_000;

#[derive(Clone, Copy, PartialEq)]
enum Chain {
    Post,
    Nop,
}

fn recv_completes_while_queue_stays_busy(backend: Backend, chain: Chain) {
    let port: Port<u32> = port(backend, 1);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    let null = port
        .associate(std::fs::File::open("/dev/null").unwrap(), 2)
        .unwrap();
    a.recv(Buf::with_capacity(16), 7).unwrap();
    // Let the backend see the receive pending, then the data arrive.
    assert!(
        port.get(Some(common::QUIET)).is_err(),
        "nothing is queued yet"
    );
    b.write_all(b"ping").unwrap();
    let again = |null: &Handle<u32>| match chain {
        Chain::Post => port.post(2, 0, 0).map_err(|r| r.error),
        Chain::Nop => null.nop(0).map(|_| ()).map_err(|r| r.error),
    };
    again(&null).unwrap();
    for n in 0..CHAIN {
        let mut p = port
            .get(Some(WAIT))
            .unwrap_or_else(|e| panic!("packet {n} of the chain: {e:?}"));
        if p.key == 1 {
            assert_eq!(&p.take_buf().unwrap()[..], b"ping");
            assert_eq!((p.context, p.result.unwrap()), (7, 4));
            return;
        }
        again(&null).unwrap();
    }
    panic!(
        "{backend}: the receive's data arrived, but its packet did not come in {CHAIN} packets \
         of a queue kept busy by {} (issue 17.2); stats {:?}",
        if chain == Chain::Post {
            "posts"
        } else {
            "no-ops"
        },
        port.stats()
    );
}

#[test]
#[ignore = "issue 17.2: the completion queue is never reaped while posts keep the queue busy; run after the fix"]
fn recv_completes_while_posts_keep_the_queue_busy_on_io_uring_17_2() {
    recv_completes_while_queue_stays_busy(Backend::IoUring, Chain::Post)
}

#[test]
fn recv_completes_while_nops_keep_the_queue_busy_on_io_uring() {
    recv_completes_while_queue_stays_busy(Backend::IoUring, Chain::Nop)
}

#[test]
#[ignore = "issue 17.2: readiness is never polled while the queue is never empty; run after the fix"]
fn recv_completes_while_posts_keep_the_queue_busy_on_epoll_17_2() {
    recv_completes_while_queue_stays_busy(Backend::Epoll, Chain::Post)
}

#[test]
#[ignore = "issue 17.2: readiness is never polled while the queue is never empty; run after the fix"]
fn recv_completes_while_nops_keep_the_queue_busy_on_epoll_17_2() {
    recv_completes_while_queue_stays_busy(Backend::Epoll, Chain::Nop)
}
