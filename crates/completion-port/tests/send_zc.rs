//! Zero-copy sends (`PortBuilder::send_zerocopy_threshold`): on io_uring,
//! sends at or above the threshold on a TCP socket go out as `SEND_ZC` /
//! `SENDMSG_ZC`, whose op is reported once, after the kernel's
//! notification; on epoll the knob changes nothing. Both backends: every
//! byte in order, one packet per op, the buffer back with the packet —
//! also when the op is cancelled, its handle closed, its deadline passes,
//! its issuing thread exits or its port is dropped while it is in flight
//! (even when the peer never reads).

mod common;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use common::*;
use completion_port::{is_aborted, Backend, Buf, GetError, Packet, Port};

/// The threshold the tests use.
const MIN: usize = 64 * 1024;
/// Far more than a loopback socket's send and receive buffers hold: a
/// `send_all` of it stays in flight until the peer reads.
const BIG: usize = 16 << 20;

fn zc_port<C: Send + 'static>(backend: Backend, threshold: usize) -> Port<C> {
    Port::builder()
        .backend(backend)
        .concurrency(2)
        .send_zerocopy_threshold(threshold)
        .build()
        .unwrap_or_else(|e| panic!("cannot open a {backend} port: {e}"))
}

/// A connected TCP pair on 127.0.0.1.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// Byte `i` of a test stream (chunks told apart).
fn byte(i: usize) -> u8 {
    (i % 251) as u8 ^ (i / 251) as u8
}

/// Bytes `from..from + len` of the test stream (`from + len` at most
/// 2 × [`BIG`]); computed once, so tests stay quick under valgrind.
fn stream(from: usize, len: usize) -> &'static [u8] {
    static STREAM: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    &STREAM.get_or_init(|| (0..2 * BIG).map(byte).collect())[from..from + len]
}

fn pattern(from: usize, len: usize) -> Vec<u8> {
    stream(from, len).to_vec()
}

/// Reads `r` to its end (or `limit` bytes) once `go` fires (or at once
/// with `None`), pausing now and then (a slow reader); returns the bytes.
fn reader(
    mut r: TcpStream,
    limit: usize,
    go: Option<mpsc::Receiver<()>>,
) -> thread::JoinHandle<Vec<u8>> {
    r.set_read_timeout(Some(WAIT)).unwrap();
    thread::spawn(move || {
        if let Some(go) = go {
            // Generous: the test may run under valgrind.
            go.recv_timeout(6 * WAIT).expect("the go signal");
        }
        let mut all = Vec::new();
        let mut chunk = vec![0u8; 256 * 1024];
        while all.len() < limit {
            let n = match r.read(&mut chunk) {
                Ok(n) => n,
                // A port closed while its zero-copy send's peer read
                // nothing for seconds resets the connection (possible in
                // the port-drop tests on a slow machine).
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("read: {e}"),
            };
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
            if all.len() % (1 << 20) < n {
                thread::sleep(Duration::from_millis(1));
            }
        }
        all
    })
}

/// The next packet, waited for in short slices (up to [`WAIT`] in all):
/// valgrind holds its global lock while a thread waits in
/// `io_uring_enter`, so a long wait there would starve the reader.
fn next<C: Send + 'static>(port: &Port<C>) -> Packet<C> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        match port.get(Some(Duration::from_millis(20))) {
            Ok(p) => return p,
            Err(GetError::Timeout) if std::time::Instant::now() < end => {}
            Err(e) => panic!("no packet: {e:?}"),
        }
    }
}

/// How many sends of `port` went zero-copy.
fn zc_sends<C: Send + 'static>(port: &Port<C>) -> u64 {
    port.stats().zerocopy_sends
}

/// No further packet comes.
fn no_more<C: Send + 'static>(port: &Port<C>) {
    assert!(port.get(Some(QUIET)).is_err(), "a second packet");
}

/// 16 MiB in one `send_all` to a slow reader: one packet with every
/// byte, in order; zero-copy on io_uring.
fn large_send_all_is_whole_and_in_order(backend: Backend) {
    let port: Port<()> = zc_port(backend, MIN);
    let (a, b) = tcp_pair();
    let a = port.associate(a, 1).unwrap();
    let r = reader(b, BIG, None);
    a.send_all(Buf::from(pattern(0, BIG)), ()).unwrap();
    let mut p = next(&port);
    assert_eq!(p.bytes(), BIG, "{:?}", p.result);
    assert_eq!(p.take_buf().map(|b| b.len()), Some(BIG));
    no_more(&port);
    let got = r.join().unwrap();
    assert_eq!(got.len(), BIG);
    assert!(got == stream(0, BIG), "bytes out of order");
    let expect = u64::from(backend == Backend::IoUring);
    assert!(
        zc_sends(&port) >= expect && (expect == 1 || zc_sends(&port) == 0),
        "{backend}: {:?}",
        port.stats()
    );
}

/// Below the threshold (or with the knob at 0, or on a socket that is not
/// TCP) a send is plain; at or above it, zero-copy (io_uring only). Every
/// send completes with its bytes and the reader sees them all in order.
fn the_threshold_decides(backend: Backend) {
    let port: Port<usize> = zc_port(backend, MIN);
    let (a, b) = tcp_pair();
    let a = port.associate(a, 1).unwrap();
    // Sizes around the threshold; the vectored ones split in three.
    let sizes = [100, MIN - 1, MIN, 3 * MIN, 1 << 20, MIN - 1, 2 << 20];
    let total: usize = sizes.iter().sum();
    let r = reader(b, total, None);
    let mut at = 0;
    let mut want_zc = 0u64;
    for (i, &n) in sizes.iter().enumerate() {
        let data = pattern(at, n);
        if i % 2 == 0 {
            a.send_all(Buf::from(data), n).unwrap();
        } else {
            let (x, rest) = data.split_at(n / 3);
            let (y, z) = rest.split_at(n / 3);
            let bufs = vec![Buf::copy_from(x), Buf::copy_from(y), Buf::copy_from(z)];
            a.send_all_vectored(bufs, n).unwrap();
        }
        let p = next(&port);
        assert_eq!((p.context, p.bytes()), (n, n), "{:?}", p.result);
        if n >= MIN && backend == Backend::IoUring {
            want_zc += 1;
        }
        // Whole sends may take more than one submission (each counts),
        // but a small one never goes zero-copy.
        let got = zc_sends(&port);
        if n < MIN || backend == Backend::Epoll {
            assert_eq!(got, want_zc, "send {i} of {n} bytes: {:?}", port.stats());
        } else {
            assert!(got >= want_zc, "send {i} of {n} bytes: {:?}", port.stats());
            want_zc = got;
        }
        at += n;
    }
    no_more(&port);
    let got = r.join().unwrap();
    assert!(got == stream(0, total), "bytes lost or out of order");

    // The knob at 0, and a Unix socket: never zero-copy.
    let off: Port<()> = zc_port(backend, 0);
    let (c, d) = tcp_pair();
    let c = off.associate(c, 1).unwrap();
    let r = reader(d, 1 << 20, None);
    c.send_all(Buf::from(pattern(0, 1 << 20)), ()).unwrap();
    assert_eq!(next(&off).bytes(), 1 << 20);
    assert!(r.join().unwrap() == stream(0, 1 << 20));
    let (u, mut v) = std::os::unix::net::UnixStream::pair().unwrap();
    let u = off.associate(u, 2).unwrap();
    u.send_all(Buf::from(pattern(0, MIN)), ()).unwrap();
    let mut got = vec![0u8; MIN];
    v.read_exact(&mut got).unwrap();
    assert_eq!(next(&off).bytes(), MIN);
    assert!(got == stream(0, MIN));
    let unix_port: Port<()> = zc_port(backend, 1);
    let (u, mut v) = std::os::unix::net::UnixStream::pair().unwrap();
    let u = unix_port.associate(u, 3).unwrap();
    u.send_all(Buf::from(pattern(0, MIN)), ()).unwrap();
    v.read_exact(&mut got).unwrap();
    assert_eq!(next(&unix_port).bytes(), MIN);
    assert!(got == stream(0, MIN));
    assert_eq!(zc_sends(&off) + zc_sends(&unix_port), 0);
}

/// How a test ends an op in flight.
#[derive(Clone, Copy, Debug)]
enum End {
    Cancel,
    Close,
    TimeOut,
}

/// A zero-copy `send_all` in flight (the peer does not read) is cancelled,
/// its handle closed, or its time-out passes; then the peer reads. One
/// packet, aborted (or timed out), with the whole buffer back, unchanged.
fn ended_in_flight(backend: Backend, how: End) {
    let port: Port<u32> = zc_port(backend, MIN);
    let (a, b) = tcp_pair();
    let a = port.associate(a, 1).unwrap();
    let (go, wait) = mpsc::channel();
    let r = reader(b, usize::MAX, Some(wait));
    let sender = match how {
        End::TimeOut => a.with_timeout(Duration::from_millis(100)),
        _ => a.clone(),
    };
    let token = sender.send_all(Buf::from(pattern(0, BIG)), 7).unwrap();
    thread::sleep(Duration::from_millis(20));
    match how {
        End::Cancel => a.cancel(token).unwrap(),
        End::Close => {
            a.close();
        }
        // Past the deadline before the peer reads.
        End::TimeOut => thread::sleep(Duration::from_millis(300)),
    }
    // The kernel releases the buffer only once the bytes it queued are
    // gone: let the peer read.
    go.send(()).unwrap();
    let mut p = next(&port);
    assert_eq!(p.context, 7);
    let e = p.result.as_ref().expect_err("ended before the peer read");
    match how {
        End::TimeOut => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e:?}"),
        _ => assert!(is_aborted(e), "{how:?}: {e:?}"),
    }
    let buf = p.take_buf().expect("the buffer comes back");
    assert!(buf[..] == *stream(0, BIG), "the buffer changed");
    no_more(&port);
    // The last handle and packet gone: the socket closes, the peer sees
    // its end.
    drop((a, sender, p));
    drop(port);
    let got = r.join().unwrap();
    assert!(got.len() < BIG, "all {} bytes went", got.len());
    assert!(
        got == stream(0, got.len()),
        "the bytes that went are a prefix"
    );
}

fn cancel_in_flight(backend: Backend) {
    ended_in_flight(backend, End::Cancel)
}

fn close_in_flight(backend: Backend) {
    ended_in_flight(backend, End::Close)
}

fn time_out_in_flight(backend: Backend) {
    ended_in_flight(backend, End::TimeOut)
}

/// The thread that issued a zero-copy `send_all` exits while it is in
/// flight: the send still completes whole (io_uring cancels the exiting
/// thread's requests; the port issues the rest again).
fn issuing_thread_exits(backend: Backend) {
    let port: Port<()> = zc_port(backend, MIN);
    let (a, b) = tcp_pair();
    let a = port.associate(a, 1).unwrap();
    let (go, wait) = mpsc::channel();
    let r = reader(b, BIG, Some(wait));
    let a2 = a.clone();
    thread::spawn(move || a2.send_all(Buf::from(pattern(0, BIG)), ()).unwrap())
        .join()
        .unwrap();
    thread::sleep(Duration::from_millis(20));
    go.send(()).unwrap();
    let p = next(&port);
    assert_eq!(p.bytes(), BIG, "{:?}", p.result);
    no_more(&port);
    assert!(
        r.join().unwrap() == stream(0, BIG),
        "bytes lost or out of order"
    );
}

/// Counts its drops.
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, SeqCst);
    }
}

/// The port is dropped with a zero-copy send in flight (the peer reads
/// only later): the drop returns once the kernel let go of the buffer,
/// and the op's context is dropped exactly once.
fn port_dropped_in_flight(backend: Backend) {
    let port: Port<Guard> = zc_port(backend, MIN);
    let drops = Arc::new(AtomicUsize::new(0));
    let (a, b) = tcp_pair();
    let a = port.associate(a, 1).unwrap();
    let (go, wait) = mpsc::channel();
    let r = reader(b, usize::MAX, Some(wait));
    a.send_all(Buf::from(pattern(0, BIG)), Guard(drops.clone()))
        .unwrap();
    thread::sleep(Duration::from_millis(20));
    let (done_tx, done) = mpsc::channel();
    let closer = thread::spawn(move || {
        drop(port);
        done_tx.send(()).unwrap();
    });
    thread::sleep(Duration::from_millis(20));
    go.send(()).unwrap();
    done.recv_timeout(WAIT).expect("dropping the port returns");
    closer.join().unwrap();
    assert_eq!(drops.load(SeqCst), 1, "the context is dropped once");
    drop(a);
    let got = r.join().unwrap();
    assert!(
        got == stream(0, got.len()),
        "the bytes that went are a prefix"
    );
}

/// The port is dropped with a zero-copy send in flight whose peer never
/// reads: the drop still returns (io_uring: after a grace period the
/// connection is reset so the kernel lets go of the buffer), and the op's
/// context is dropped exactly once.
fn port_dropped_peer_never_reads(backend: Backend) {
    let port: Port<Guard> = zc_port(backend, MIN);
    let drops = Arc::new(AtomicUsize::new(0));
    let (a, b) = tcp_pair();
    let a = port.associate(a, 1).unwrap();
    a.send_all(Buf::from(pattern(0, BIG)), Guard(drops.clone()))
        .unwrap();
    thread::sleep(Duration::from_millis(20));
    let (done_tx, done) = mpsc::channel();
    let closer = thread::spawn(move || {
        drop(port);
        done_tx.send(()).unwrap();
    });
    done.recv_timeout(WAIT).expect("dropping the port returns");
    closer.join().unwrap();
    assert_eq!(drops.load(SeqCst), 1, "the context is dropped once");
    drop((a, b));
}

per_backend!(
    large_send_all_is_whole_and_in_order,
    the_threshold_decides,
    cancel_in_flight,
    close_in_flight,
    time_out_in_flight,
    issuing_thread_exits,
    port_dropped_in_flight,
    port_dropped_peer_never_reads,
);
