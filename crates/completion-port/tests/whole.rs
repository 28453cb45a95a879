//! Whole transfers and stream order (issues 14 and 15): `send_all`,
//! `send_all_vectored`, `write_all`, `write_all_at` complete with every
//! byte or an error, never short; the sends (and the receives) of one
//! stream socket complete in the order they were issued, on both backends
//! (io_uring needs the core's lanes for that: `core/lanes.rs`).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use completion_port::{is_aborted, Backend, Buf, Port};

/// Byte `i` of a test stream: a pattern whose chunks are told apart.
fn byte(i: usize) -> u8 {
    (i % 251) as u8 ^ (i / 251) as u8
}

fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(byte).collect()
}

/// Reads everything from `r` in small slices with pauses (a slow reader),
/// returning it.
fn slow_reader(mut r: UnixStream, total: usize) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::with_capacity(total);
        let mut chunk = vec![0u8; 64 * 1024];
        while all.len() < total {
            let n = r.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
            if all.len() % (1 << 20) < n {
                thread::sleep(Duration::from_millis(2));
            }
        }
        all
    })
}

/// 16 MiB in one `send_all` to a reader much slower than the socket
/// buffer: one packet with every byte, the bytes in order.
fn send_all_16_mib(backend: Backend) {
    const N: usize = 16 << 20;
    let port: Port<()> = port(backend, 2);
    let (a, b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    let reader = slow_reader(b, N);
    a.send_all(Buf::from(pattern(0, N)), ()).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.bytes(), N, "{:?}", p.result);
    let got = reader.join().unwrap();
    assert_eq!(got.len(), N);
    assert!(got == pattern(0, N), "bytes out of order");
}

/// Eight whole sends of 1 MiB each (single-buffer and vectored), issued
/// back to back: the reader sees them in issue order, byte for byte, and
/// each packet reports its full size.
fn whole_sends_keep_their_order(backend: Backend) {
    const CHUNK: usize = 1 << 20;
    const K: usize = 8;
    let port: Port<usize> = port(backend, 2);
    let (a, b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    let reader = slow_reader(b, K * CHUNK);
    for i in 0..K {
        let data = pattern(i * CHUNK, CHUNK);
        if i % 2 == 0 {
            a.send_all(Buf::from(data), i).unwrap();
        } else {
            let (x, y) = data.split_at(CHUNK / 3);
            let bufs = vec![Buf::copy_from(x), Buf::copy_from(y)];
            a.send_all_vectored(bufs, i).unwrap();
        }
    }
    let mut seen: Vec<usize> = take(&port, K)
        .iter()
        .map(|p| {
            assert_eq!(p.bytes(), CHUNK, "send {}: {:?}", p.context, p.result);
            p.context
        })
        .collect();
    let got = reader.join().unwrap();
    assert!(
        got == pattern(0, K * CHUNK),
        "sends interleaved or reordered"
    );
    seen.sort();
    assert_eq!(seen, (0..K).collect::<Vec<_>>());
}

/// Eight receives in flight on one socket, then the data in one write:
/// receive i gets bytes 16i..16i+16 — issue order.
fn receives_keep_their_order(backend: Backend) {
    const K: usize = 8;
    let port: Port<usize> = port(backend, 2);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    for i in 0..K {
        a.recv(Buf::with_capacity(16), i).unwrap();
    }
    b.write_all(&pattern(0, 16 * K)).unwrap();
    for mut p in take(&port, K) {
        let i = p.context;
        assert_eq!(
            &p.take_buf().unwrap()[..],
            &pattern(16 * i, 16)[..],
            "receive {i} got another receive's bytes"
        );
    }
}

/// A receive waiting behind another on the same socket is cancelled at
/// once; the first still gets the data; closing the handle ends the rest.
fn cancel_a_waiting_receive(backend: Backend) {
    let port: Port<usize> = port(backend, 2);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    a.recv(Buf::with_capacity(16), 0).unwrap();
    let second = a.recv(Buf::with_capacity(16), 1).unwrap();
    a.recv(Buf::with_capacity(16), 2).unwrap();
    a.cancel(second).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 1);
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    b.write_all(b"first").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 0);
    assert_eq!(&p.take_buf().unwrap()[..], b"first");
    assert_eq!(a.close(), 1);
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 2);
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    wait_until("nothing in flight", || port.stats().in_flight == 0);
}

/// A `send_all` nobody reads, cancelled: its packet comes, aborted.
fn cancel_a_whole_send(backend: Backend) {
    let port: Port<()> = port(backend, 2);
    let (a, _b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    let t = a.send_all(Buf::from(vec![1u8; 16 << 20]), ()).unwrap();
    // Let it send what fits first.
    wait_until("the send is under way", || port.stats().in_flight == 1);
    a.cancel(t).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert!(is_aborted(p.result.as_ref().unwrap_err()), "{:?}", p.result);
}

/// `write_all` on a pipe (1 MiB, slow reader) and `write_all_at` on a file.
fn whole_writes(backend: Backend) {
    const N: usize = 1 << 20;
    let port: Port<()> = port(backend, 2);
    let (r, w) = UnixStream::pair().unwrap();
    let w = port.associate(w, 1).unwrap();
    let reader = slow_reader(r, N);
    w.write_all(Buf::from(pattern(0, N)), ()).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().bytes(), N);
    assert!(reader.join().unwrap() == pattern(0, N));

    let file = tempfile::tempfile().unwrap();
    let f = port.associate(file.try_clone().unwrap(), 2).unwrap();
    f.write_all_at(Buf::from(pattern(0, N)), 4096, ()).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().bytes(), N);
    let mut back = vec![0u8; N];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 4096).unwrap();
    assert!(back == pattern(0, N));
}

/// Closing the port with receives in flight and waiting behind each other:
/// every context is dropped exactly once, and `close` returns.
fn port_close_with_waiting_receives(backend: Backend) {
    struct Ctx(Arc<AtomicUsize>);
    impl Drop for Ctx {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let port: Port<Ctx> = port(backend, 2);
    let (a, _b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    for _ in 0..4 {
        a.recv(Buf::with_capacity(16), Ctx(dropped.clone()))
            .unwrap();
    }
    port.close();
    assert_eq!(dropped.load(SeqCst), 4);
    assert_eq!(port.stats().in_flight, 0);
}

/// A short send retried by hand without copying: `Buf::consume` the bytes
/// sent and send the same buffer again, until it is empty.
fn short_sends_retried_with_consume(backend: Backend) {
    const N: usize = 4 << 20;
    let port: Port<()> = port(backend, 2);
    let (a, b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    let reader = slow_reader(b, N);
    let mut buf = Buf::from(pattern(0, N));
    let mut sent = 0;
    while !buf.is_empty() {
        a.send(buf, ()).unwrap();
        let mut p = port.get(Some(WAIT)).unwrap();
        let n = p.bytes();
        assert!(n > 0, "{:?}", p.result);
        sent += n;
        buf = p.take_buf().unwrap();
        buf.consume(n);
    }
    assert_eq!(sent, N);
    assert!(reader.join().unwrap() == pattern(0, N));
}

/// A receive into a large buffer with a spare limit takes no more than it.
fn receive_with_a_spare_limit(backend: Backend) {
    let port: Port<()> = port(backend, 2);
    let (a, mut b) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    b.write_all(b"abcdef").unwrap();
    let mut buf = Buf::with_capacity(4096);
    buf.set_spare_limit(Some(3));
    a.recv(buf, ()).unwrap();
    let mut buf = port.get(Some(WAIT)).unwrap().take_buf().unwrap();
    assert_eq!(&buf[..], b"abc");
    buf.clear();
    a.recv(buf, ()).unwrap();
    assert_eq!(
        &port.get(Some(WAIT)).unwrap().take_buf().unwrap()[..],
        b"def"
    );
}

per_backend!(
    short_sends_retried_with_consume,
    receive_with_a_spare_limit,
    send_all_16_mib,
    whole_sends_keep_their_order,
    receives_keep_their_order,
    cancel_a_waiting_receive,
    cancel_a_whole_send,
    whole_writes,
    port_close_with_waiting_receives,
);
