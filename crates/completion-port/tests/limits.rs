//! Never drop, never stall (windows-semantics §3.16 under load): completion bursts far
//! larger than the ring, a port with 100 000 operations pending, and a
//! handler that panics.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;

use common::*;
use completion_port::{Backend, Buf, GetError, PacketKind, Port};

/// A 2-entry ring (8 CQEs) and a burst of 20 000 no-ops issued before any
/// is reaped: the kernel's overflow list must hold the excess, and every
/// packet must come out exactly once.
fn burst_far_larger_than_the_ring(backend: Backend) {
    let port: Port<u32> = Port::builder()
        .backend(backend)
        .entries(2)
        .concurrency(2)
        .build()
        .unwrap();
    let h = port
        .associate(std::fs::File::open("/dev/null").unwrap(), 5)
        .unwrap();
    const N: u32 = 20_000;
    // Issued from a thread that is not running for the port: each op is
    // submitted at once, so completions pile up in the kernel unreaped.
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..N {
                h.nop(i).unwrap();
            }
        });
    });
    let mut seen = vec![false; N as usize];
    let mut batch = Vec::new();
    let mut got = 0;
    while got < N as usize {
        batch.clear();
        got += port.get_many(&mut batch, 512, Some(WAIT)).unwrap();
        for p in &batch {
            assert_eq!((p.key, p.kind()), (5, PacketKind::Nop));
            assert_eq!(*p.result.as_ref().unwrap(), 0);
            assert!(
                !std::mem::replace(&mut seen[p.context as usize], true),
                "nop {} twice",
                p.context
            );
        }
    }
    assert!(seen.iter().all(|&s| s));
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
    assert_eq!(port.stats().in_flight, 0);
}

/// 100 000 one-byte receives pending on one socket: the port keeps serving
/// posts meanwhile, and once the peer writes 100 000 bytes every receive
/// completes exactly once, together carrying every byte.
fn hundred_thousand_pending_operations(backend: Backend) {
    const N: usize = 100_000;
    let port: Port<usize> = port(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let sock = port.associate(a, 1).unwrap();
    for i in 0..N {
        sock.recv(Buf::with_capacity(1), i).unwrap();
    }
    assert_eq!(port.stats().in_flight, N);
    // The port still works with all of them pending.
    port.post(9, 3, usize::MAX).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.context, p.bytes()), (9, usize::MAX, 3));

    let writer = thread::spawn(move || {
        let data: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
        peer.write_all(&data).unwrap();
        peer
    });
    let mut seen = vec![false; N];
    let mut counts = [0usize; 251];
    let mut batch = Vec::new();
    let mut got = 0;
    while got < N {
        batch.clear();
        got += port.get_many(&mut batch, 1024, Some(WAIT)).unwrap();
        for p in &mut batch {
            assert_eq!(p.kind(), PacketKind::Recv);
            assert_eq!(*p.result.as_ref().unwrap(), 1, "recv {}", p.context);
            assert!(!std::mem::replace(&mut seen[p.context], true));
            counts[p.take_buf().unwrap()[0] as usize] += 1;
        }
    }
    let _peer = writer.join().unwrap();
    // Every byte value arrived as often as it was sent.
    for (v, &c) in counts.iter().enumerate() {
        assert_eq!(c, (0..N).filter(|i| i % 251 == v).count(), "byte {v}");
    }
    assert_eq!(port.stats().in_flight, 0);
}

/// A handler that panics: its thread dies, the port counts it out, and the
/// other worker gets the next packet (with concurrency 1, a wedged count
/// would block it for good).
fn a_panicking_handler_does_not_wedge_the_port(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    port.post(0, 0, 1).unwrap();
    let p2 = port.clone();
    let r = thread::spawn(move || {
        let p = p2.get(Some(WAIT)).unwrap();
        assert_eq!(p2.stats().running, 1);
        panic!("handler of packet {} failed", p.context);
    })
    .join();
    assert!(r.is_err(), "the handler panicked");
    assert_eq!(port.stats().running, 0);
    port.post(0, 0, 2).unwrap();
    let p2 = port.clone();
    let got = thread::spawn(move || p2.get(Some(WAIT)).map(|p| p.context))
        .join()
        .unwrap();
    assert_eq!(got.unwrap(), 2);
}

per_backend!(
    burst_far_larger_than_the_ring,
    hundred_thousand_pending_operations,
    a_panicking_handler_does_not_wedge_the_port,
);
