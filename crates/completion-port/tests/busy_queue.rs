//! A completion must reach the queue even while the queue is never empty
//! (issue 17.2): a worker that re-issues, for every packet it dequeues,
//! something that queues a packet at once — a post, or a no-op (which the
//! epoll backend completes during its issue call, as it does an accept
//! that fails with `EMFILE`) — always finds a packet waiting, so it never
//! waits in the kernel. The receive whose data has arrived must still
//! come out, among the first few thousand packets.
//!
//! Fixed (a0ed3ce): the port's monitor polls the backend when nothing else
//! did since its previous tick. Then found by the C fuzzer on epoll: a
//! worker that dequeues with `get_many` (the C ABI's
//! `GetQueuedCompletionStatusEx` with room for more than one entry) — its
//! `take_more` reaps the backend whenever the queue runs dry, which on
//! epoll collects the thread pool's results but never looks at readiness,
//! yet counts as "reaped" for the monitor, which then never polls: the
//! receive waits until the worker happens to be descheduled for a whole
//! tick. Fixed in 0752c68: the monitor counts only complete collections
//! (`Reaped::complete`) as progress.

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

/// How the worker dequeues.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Take {
    /// `get`: one packet.
    One,
    /// `get_many` with room for two: what is queued, then a look for more.
    Many,
}

fn recv_completes_while_queue_stays_busy(backend: Backend, chain: Chain) {
    recv_completes_while_busy(backend, chain, Take::One)
}

fn recv_completes_while_busy(backend: Backend, chain: Chain, take: Take) {
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
    let mut out = Vec::new();
    let mut n = 0;
    while n < CHAIN {
        match take {
            Take::One => out.push(port.get(Some(WAIT))),
            Take::Many => {
                let mut got = Vec::new();
                match port.get_many(&mut got, 2, Some(WAIT)) {
                    Ok(_) => out.extend(got.into_iter().map(Ok)),
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        for p in out.drain(..) {
            let mut p = p.unwrap_or_else(|e| panic!("packet {n} of the chain: {e:?}"));
            n += 1;
            if p.key == 1 {
                assert_eq!(&p.take_buf().unwrap()[..], b"ping");
                assert_eq!((p.context, p.result.unwrap()), (7, 4));
                return;
            }
            again(&null).unwrap();
        }
    }
    panic!(
        "{backend}: the receive's data arrived, but its packet did not come in {CHAIN} packets \
         of a queue kept busy by {} taken with {take:?} (issue 17.2); stats {:?}",
        if chain == Chain::Post {
            "posts"
        } else {
            "no-ops"
        },
        port.stats()
    );
}

#[test]
fn recv_completes_while_posts_keep_the_queue_busy_on_io_uring() {
    recv_completes_while_queue_stays_busy(Backend::IoUring, Chain::Post)
}

#[test]
fn recv_completes_while_nops_keep_the_queue_busy_on_io_uring() {
    recv_completes_while_queue_stays_busy(Backend::IoUring, Chain::Nop)
}

#[test]
fn recv_completes_while_posts_keep_the_queue_busy_on_epoll() {
    recv_completes_while_queue_stays_busy(Backend::Epoll, Chain::Post)
}

#[test]
fn recv_completes_while_nops_keep_the_queue_busy_on_epoll() {
    recv_completes_while_queue_stays_busy(Backend::Epoll, Chain::Nop)
}

#[test]
fn recv_completes_while_posts_keep_the_queue_busy_get_many_on_io_uring() {
    recv_completes_while_busy(Backend::IoUring, Chain::Post, Take::Many)
}

#[test]
fn recv_completes_while_posts_keep_the_queue_busy_get_many_on_epoll() {
    recv_completes_while_busy(Backend::Epoll, Chain::Post, Take::Many)
}
