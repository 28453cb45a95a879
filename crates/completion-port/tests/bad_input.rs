//! Calls refused at once (windows-semantics §3.13 "failed at once": no packet), with
//! everything they were given handed back.

mod common;

use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use completion_port::{
    is_aborted, is_port_closed, Backend, Buf, GetError, Handle, Packet, PacketKind, Port,
    PortBuilder, Rejected, Token, MAX_IOVECS,
};
use socket2::{Domain, Socket, Type};

use common::{port, QUIET, WAIT};

/// A buffer holding `bytes` with room for `cap`, and the address of its
/// memory, to check that the very same buffer comes back.
fn marked(bytes: &[u8], cap: usize) -> (Buf, *const u8) {
    let mut b = Buf::with_capacity(cap);
    b.extend_from_slice(bytes);
    let p = b[..].as_ptr();
    (b, p)
}

fn assert_same(b: &Buf, bytes: &[u8], cap: usize, addr: *const u8) {
    assert_eq!(&b[..], bytes);
    assert_eq!(b.capacity(), cap);
    assert_eq!(b[..].as_ptr(), addr, "a different buffer came back");
}

fn assert_invalid<C>(r: &Rejected<C>) {
    assert_eq!(r.error.kind(), ErrorKind::InvalidInput, "{:?}", r.error);
    assert!(!is_port_closed(&r.error));
}

/// Nothing was queued and nothing is in flight.
fn assert_no_packet<C: Send + 'static + std::fmt::Debug>(port: &Port<C>) {
    match port.get(Some(Duration::ZERO)) {
        Err(GetError::Timeout) => {}
        other => panic!("a refused call queued a packet: {other:?}"),
    }
    assert_eq!(port.stats().in_flight, 0);
}

/// Every kind of operation on a handle of a closed port is refused with
/// the port-closed error; context and buffers come back.
fn ops_on_closed_port_are_refused(backend: Backend) {
    let port = port::<String>(backend, 1);
    let file = port.associate(tempfile::tempfile().unwrap(), 1).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let sock = port
        .associate(TcpStream::connect(addr).unwrap(), 2)
        .unwrap();
    let listener = port.associate(l, 3).unwrap();
    port.close();

    let check = |r: Rejected<String>, what: &str| {
        assert!(is_port_closed(&r.error), "{what}: {:?}", r.error);
        assert_eq!(r.error.kind(), ErrorKind::BrokenPipe);
        assert_eq!(r.context, what, "the context comes back");
        r
    };
    let (b, addr_b) = marked(b"to write", 32);
    let mut r = check(
        file.write_at(b, 5, "write_at".into()).unwrap_err(),
        "write_at",
    );
    assert_same(&r.take_buf().unwrap(), b"to write", 32, addr_b);
    assert!(r.take_buf().is_none(), "handed back once");

    let (b, addr_b) = marked(b"xy", 64);
    let mut r = check(file.read_at(b, 0, "read_at".into()).unwrap_err(), "read_at");
    assert_same(&r.take_buf().unwrap(), b"xy", 64, addr_b);

    let (b, addr_b) = marked(b"", 16);
    let mut r = check(file.read(b, "read".into()).unwrap_err(), "read");
    assert_same(&r.take_buf().unwrap(), b"", 16, addr_b);

    let (b, addr_b) = marked(b"w", 1);
    let mut r = check(file.write(b, "write".into()).unwrap_err(), "write");
    assert_same(&r.take_buf().unwrap(), b"w", 1, addr_b);

    let (b, addr_b) = marked(b"", 8);
    let mut r = check(sock.recv(b, "recv".into()).unwrap_err(), "recv");
    assert_same(&r.take_buf().unwrap(), b"", 8, addr_b);

    let (b, addr_b) = marked(b"abc", 3);
    let mut r = check(sock.send(b, "send".into()).unwrap_err(), "send");
    assert_same(&r.take_buf().unwrap(), b"abc", 3, addr_b);

    let (b1, a1) = marked(b"1", 4);
    let (b2, a2) = marked(b"22", 4);
    let mut r = check(
        sock.send_vectored(vec![b1, b2], "send_vectored".into())
            .unwrap_err(),
        "send_vectored",
    );
    assert!(r.take_buf().is_none());
    let bufs = r.take_bufs();
    assert_eq!(bufs.len(), 2);
    assert_same(&bufs[0], b"1", 4, a1);
    assert_same(&bufs[1], b"22", 4, a2);

    let (b1, a1) = marked(b"", 4);
    let mut r = check(
        sock.recv_vectored(vec![b1], "recv_vectored".into())
            .unwrap_err(),
        "recv_vectored",
    );
    assert_same(&r.take_bufs()[0], b"", 4, a1);

    check(listener.accept("accept".into()).unwrap_err(), "accept");
    check(sock.connect(addr, "connect".into()).unwrap_err(), "connect");
    check(sock.nop("nop".into()).unwrap_err(), "nop");
    let r = check(port.post(9, 9, "post".into()).unwrap_err(), "post");
    assert!(r.into_error().to_string().contains("closed"));
    assert_eq!(port.stats().in_flight, 0);

    // The handles stay open for ordinary blocking I/O.
    let mut f = File::from(file.as_fd_owned());
    f.write_all(b"sync").unwrap();
    f.rewind().unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "sync");
}

trait OwnedCopy {
    fn as_fd_owned(&self) -> OwnedFd;
}

impl<T: std::os::fd::AsFd> OwnedCopy for T {
    fn as_fd_owned(&self) -> OwnedFd {
        self.as_fd().try_clone_to_owned().unwrap()
    }
}

/// Empty and oversized scatter/gather lists are refused with
/// `InvalidInput`, buffers handed back in order; exactly `MAX_IOVECS`
/// buffers are accepted.
fn vectored_list_limits(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut peer, _) = l.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let h = port.associate(ours, 1).unwrap();

    let mut r = h.recv_vectored(vec![], 1).unwrap_err();
    assert_invalid(&r);
    assert_eq!(r.context, 1);
    assert!(r.take_bufs().is_empty());
    let r = h.send_vectored(Vec::new(), 2).unwrap_err();
    assert_invalid(&r);
    assert_eq!(r.context, 2);

    let many = |n: usize| -> Vec<Buf> {
        (0..n)
            .map(|i| {
                let mut b = Buf::with_capacity(2);
                b.extend_from_slice(&[i as u8]);
                b
            })
            .collect()
    };
    let mut r = h.recv_vectored(many(MAX_IOVECS + 1), 3).unwrap_err();
    assert_invalid(&r);
    assert_eq!(r.context, 3);
    let back = r.take_bufs();
    assert_eq!(back.len(), MAX_IOVECS + 1);
    assert!(back
        .iter()
        .enumerate()
        .all(|(i, b)| b[..] == [i as u8] && b.capacity() == 2));
    let mut r = h.send_vectored(many(MAX_IOVECS + 1), 4).unwrap_err();
    assert_invalid(&r);
    assert_eq!(r.take_bufs().len(), MAX_IOVECS + 1);
    assert_no_packet(&port);

    // The limit itself is fine.
    h.send_vectored(many(MAX_IOVECS), 5).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 5);
    assert_eq!(*p.result.as_ref().unwrap(), MAX_IOVECS);
    assert_eq!(p.take_bufs().len(), MAX_IOVECS);
    let mut got = vec![0; MAX_IOVECS];
    peer.read_exact(&mut got).unwrap();
    assert!(got.iter().enumerate().all(|(i, &x)| x == i as u8));
}

/// Offsets past `i64::MAX` are refused at the call.
fn offset_past_i64_max(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let h = port.associate(tempfile::tempfile().unwrap(), 1).unwrap();
    for off in [i64::MAX as u64 + 1, u64::MAX - 1, u64::MAX] {
        let (b, a) = marked(b"data", 8);
        let mut r = h.write_at(b, off, 1).unwrap_err();
        assert_invalid(&r);
        assert_eq!(r.context, 1);
        assert_same(&r.take_buf().unwrap(), b"data", 8, a);

        let (b, a) = marked(b"", 8);
        let mut r = h.read_at(b, off, 2).unwrap_err();
        assert_invalid(&r);
        assert_eq!(r.context, 2);
        assert_same(&r.take_buf().unwrap(), b"", 8, a);
    }
    assert_no_packet(&port);
    // i64::MAX itself passes the check; the kernel has its say in the
    // packet (offset + length overflows: EINVAL).
    h.read_at(Buf::with_capacity(8), i64::MAX as u64, 3)
        .unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 3);
    assert_eq!(
        p.result.as_ref().map_err(|e| e.raw_os_error()),
        Err(Some(libc::EINVAL))
    );
}

/// A second association of the same open fd is refused with
/// `InvalidInput`, to this or another port, and the fd handed back.
fn double_association(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let other = common::port::<u32>(backend, 1);
    let h = port.associate(tempfile::tempfile().unwrap(), 1).unwrap();
    let raw = h.as_raw_fd();
    for (p, key) in [(&port, 2), (&other, 3)] {
        // SAFETY: a second owner of an fd `h` owns; it is forgotten below,
        // never closed.
        let dup = unsafe { OwnedFd::from_raw_fd(raw) };
        let e = p.associate(dup, key).unwrap_err();
        assert_eq!(e.error.kind(), ErrorKind::InvalidInput, "{:?}", e.error);
        assert!(!is_port_closed(&e.error));
        assert_eq!(e.fd.as_raw_fd(), raw, "the fd comes back");
        assert!(e.to_string().contains(&raw.to_string()));
        std::mem::forget(e.fd);
    }
    // The first association still works.
    h.nop(7).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.context), (1, 7));
    drop(p);
    // Once the handle is gone, its fd number is free again.
    drop(h);
    let f = tempfile::tempfile().unwrap();
    let again = other.associate(f, 4).unwrap();
    again.nop(8).unwrap();
    assert_eq!(other.get(Some(WAIT)).unwrap().key, 4);
}

/// An `OwnedFd` built from a number that is not open is refused (`EBADF`)
/// and handed back.
fn associate_closed_fd(backend: Backend) {
    let port = port::<u32>(backend, 1);
    // Far above any fd number in use (`fs.nr_open`, the ceiling of
    // RLIMIT_NOFILE, defaults to 2^20).
    let raw = (1 << 30) + 7;
    // SAFETY: deliberately invalid; the fd handed back is forgotten, never
    // closed.
    let bogus = unsafe { OwnedFd::from_raw_fd(raw) };
    let e = port.associate(bogus, 1).unwrap_err();
    assert_eq!(e.fd.as_raw_fd(), raw);
    std::mem::forget(e.fd);
    assert_eq!(e.error.raw_os_error(), Some(libc::EBADF));
}

/// `get_many` with `max == 0` is refused, consuming nothing.
fn get_many_max_zero(backend: Backend) {
    let port = port::<u32>(backend, 1);
    port.post(1, 0, 5).unwrap();
    let mut out = Vec::new();
    match port.get_many(&mut out, 0, Some(WAIT)) {
        Err(GetError::Io(e)) => assert_eq!(e.kind(), ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
    assert!(out.is_empty());
    assert_eq!(port.stats().queued, 1);
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().context, 5);
    // The error converts to io::Error keeping its kind; time-out and
    // closed convert to TimedOut and the port-closed error.
    let e: io::Error = GetError::Timeout.into();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    let e: io::Error = GetError::Closed.into();
    assert!(is_port_closed(&e));
}

fn bad_buffer_alignment() {
    for align in [0, 3, 12, 4097] {
        let e = Buf::aligned(4096, align).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "align {align}");
    }
    let e = Buf::aligned(usize::MAX, 4096).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().contains("exceed the largest allocation"),
        "{e}"
    );
    let e = Buf::aligned(64, 3).unwrap_err();
    assert!(e.to_string().contains("power of two"), "{e}");
    let b = Buf::aligned(0, 512).unwrap();
    assert_eq!((b.len(), b.capacity(), b.alignment()), (0, 0, 512));
    assert_eq!(b[..].as_ptr() as usize % 512, 0);
    let b = Buf::aligned(8192, 512).unwrap();
    assert_eq!((b.len(), b.capacity()), (0, 8192));
    assert_eq!(b[..].as_ptr() as usize % 512, 0);
}

fn zero_ring_entries(backend: Backend) {
    let e = PortBuilder::<u32>::new()
        .backend(backend)
        .entries(0)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = Port::<u32>::builder().entries(0).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn buf_aligned_bad_alignment() {
    bad_buffer_alignment();
}

#[test]
fn unknown_backend_name() {
    let e = "kqueue".parse::<Backend>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!("io_uring".parse::<Backend>().unwrap(), Backend::IoUring);
    assert_eq!("EPOLL".parse::<Backend>().unwrap(), Backend::Epoll);
    assert_eq!("".parse::<Backend>().unwrap(), Backend::Auto);
}

/// The three kinds of handle every operation needs: a file, a connected
/// socket, a listening socket (and the listener's address).
struct Handles {
    file: Handle<String>,
    sock: Handle<String>,
    listener: Handle<String>,
    addr: SocketAddr,
    _peer: TcpStream,
}

fn handles(port: &Port<String>) -> Handles {
    let file = port.associate(tempfile::tempfile().unwrap(), 1).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let ours = TcpStream::connect(addr).unwrap();
    let (peer, _) = l.accept().unwrap();
    let sock = port.associate(ours, 2).unwrap();
    let listener = port.associate(l, 3).unwrap();
    Handles {
        file,
        sock,
        listener,
        addr,
        _peer: peer,
    }
}

/// Issues every kind of operation and checks that each is refused at the
/// call with an error `expect` accepts, handing back the very same context
/// and buffers.
fn every_op_refused(h: &Handles, expect: &dyn Fn(&io::Error, &str)) {
    let check = |r: Rejected<String>, what: &str| {
        expect(&r.error, what);
        assert_eq!(r.context, what, "the context comes back");
        r
    };
    let (b, a) = marked(b"to write", 32);
    let mut r = check(
        h.file.write_at(b, 5, "write_at".into()).unwrap_err(),
        "write_at",
    );
    assert_same(&r.take_buf().unwrap(), b"to write", 32, a);
    assert!(
        r.take_buf().is_none() && r.take_bufs().is_empty(),
        "handed back once"
    );

    let (b, a) = marked(b"xy", 64);
    let mut r = check(
        h.file.read_at(b, 0, "read_at".into()).unwrap_err(),
        "read_at",
    );
    assert_same(&r.take_buf().unwrap(), b"xy", 64, a);

    let (b, a) = marked(b"", 16);
    let mut r = check(h.file.read(b, "read".into()).unwrap_err(), "read");
    assert_same(&r.take_buf().unwrap(), b"", 16, a);

    let (b, a) = marked(b"w", 1);
    let mut r = check(h.file.write(b, "write".into()).unwrap_err(), "write");
    assert_same(&r.take_buf().unwrap(), b"w", 1, a);

    let (b, a) = marked(b"", 8);
    let mut r = check(h.sock.recv(b, "recv".into()).unwrap_err(), "recv");
    assert_same(&r.take_buf().unwrap(), b"", 8, a);

    let (b, a) = marked(b"abc", 3);
    let mut r = check(h.sock.send(b, "send".into()).unwrap_err(), "send");
    assert_same(&r.take_buf().unwrap(), b"abc", 3, a);

    let (b1, a1) = marked(b"", 4);
    let (b2, a2) = marked(b"z", 8);
    let mut r = check(
        h.sock
            .recv_vectored(vec![b1, b2], "recv_vectored".into())
            .unwrap_err(),
        "recv_vectored",
    );
    assert!(r.take_buf().is_none());
    let bufs = r.take_bufs();
    assert_eq!(bufs.len(), 2);
    assert_same(&bufs[0], b"", 4, a1);
    assert_same(&bufs[1], b"z", 8, a2);

    let (b1, a1) = marked(b"1", 4);
    let (b2, a2) = marked(b"22", 4);
    let mut r = check(
        h.sock
            .send_vectored(vec![b1, b2], "send_vectored".into())
            .unwrap_err(),
        "send_vectored",
    );
    let bufs = r.take_bufs();
    assert_eq!(bufs.len(), 2);
    assert_same(&bufs[0], b"1", 4, a1);
    assert_same(&bufs[1], b"22", 4, a2);

    check(h.listener.accept("accept".into()).unwrap_err(), "accept");
    check(
        h.sock.connect(h.addr, "connect".into()).unwrap_err(),
        "connect",
    );
    check(h.file.nop("nop".into()).unwrap_err(), "nop");
}

fn expect_ebadf(e: &io::Error, what: &str) {
    assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{what}: {e:?}");
    assert!(!is_port_closed(e), "{what}");
}

/// After `Handle::close`, every operation on it (or a clone) is refused
/// with `EBADF`, everything handed back, no packet. That wins over a
/// closed port; cancelling then finds nothing, closing again returns 0.
fn ops_on_closed_handle_are_refused(backend: Backend) {
    let port = port::<String>(backend, 1);
    let h = handles(&port);
    let clones = [h.file.clone(), h.sock.clone(), h.listener.clone()];
    for c in &clones {
        assert_eq!(c.close(), 0, "nothing was in flight");
        assert!(c.is_closed());
    }
    assert!(h.file.is_closed() && h.sock.is_closed() && h.listener.is_closed());
    every_op_refused(&h, &expect_ebadf);
    assert_no_packet(&port);
    for c in &clones {
        assert_eq!(c.close(), 0, "closing twice");
        let e = c.cancel_all().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().starts_with("nothing to cancel"), "{e}");
    }
    // Closed handle on a closed port: still EBADF (the handle is checked
    // first).
    port.close();
    every_op_refused(&h, &expect_ebadf);
    assert_eq!(port.stats().in_flight, 0);
}

/// Argument checks come before state checks: a bad argument is
/// `InvalidInput` even on a closed handle of a closed port.
fn argument_checks_come_first(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let file = port.associate(tempfile::tempfile().unwrap(), 1).unwrap();
    let (sock, _peer) = UnixStream::pair().unwrap();
    let sock = port.associate(sock, 2).unwrap();
    file.close();
    sock.close();
    port.close();
    let (b, a) = marked(b"", 8);
    let mut r = file.read_at(b, u64::MAX, 1).unwrap_err();
    assert_invalid(&r);
    assert_eq!(r.context, 1);
    assert_same(&r.take_buf().unwrap(), b"", 8, a);
    let r = sock.send_vectored(Vec::new(), 2).unwrap_err();
    assert_invalid(&r);
    assert_eq!(r.context, 2);
    // Without a bad argument, the closed handle answers.
    let r = sock.send(Buf::copy_from(b"x"), 3).unwrap_err();
    assert_eq!(r.error.raw_os_error(), Some(libc::EBADF));
}

/// Associating with a closed port is refused with the port-closed error;
/// the very same fd comes back, open.
fn associate_on_closed_port(backend: Backend) {
    let port = port::<u32>(backend, 1);
    port.close();
    let f = tempfile::tempfile().unwrap();
    let raw = f.as_raw_fd();
    let e = port.associate(f, 6).unwrap_err();
    assert!(is_port_closed(&e.error), "{:?}", e.error);
    assert_eq!(e.error.kind(), ErrorKind::BrokenPipe);
    assert_eq!(e.fd.as_raw_fd(), raw, "the same fd comes back");
    assert!(e.to_string().contains("closed"));
    let mut f = File::from(e.fd);
    f.write_all(b"still open").unwrap();
    // Not left registered as associated: a live port takes it.
    let live = common::port::<u32>(backend, 1);
    let h = live.associate(f, 7).unwrap();
    h.nop(1).unwrap();
    assert_eq!(live.get(Some(WAIT)).unwrap().key, 7);
}

/// `get` and `get_many` on a closed port return `Closed` at once, with or
/// without a time-out, and consume nothing; queued packets were dropped.
/// `get_many` with `max == 0` is still `InvalidInput`. Closing again is
/// harmless, from any clone.
fn get_on_closed_port(backend: Backend) {
    let port = port::<Arc<()>>(backend, 1);
    let ctx = Arc::new(());
    port.post(1, 0, ctx.clone()).unwrap();
    port.close();
    assert_eq!(Arc::strong_count(&ctx), 1, "the queued packet was dropped");
    for t in [Some(Duration::ZERO), Some(WAIT), Some(Duration::MAX)] {
        assert!(matches!(port.get(t), Err(GetError::Closed)), "{t:?}");
        let mut out = Vec::new();
        assert!(matches!(
            port.get_many(&mut out, 4, t),
            Err(GetError::Closed)
        ));
        assert!(out.is_empty());
    }
    // No time-out: run it on a thread so a hang fails instead of hanging.
    let (tx, rx) = std::sync::mpsc::channel();
    let p = port.clone();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let many = matches!(p.get_many(&mut out, 1, None), Err(GetError::Closed));
        tx.send((matches!(p.get(None), Err(GetError::Closed)), many))
            .unwrap();
    });
    assert_eq!(
        rx.recv_timeout(WAIT).expect("get(None) returned"),
        (true, true)
    );
    let mut out = Vec::new();
    match port.get_many(&mut out, 0, Some(WAIT)) {
        Err(GetError::Io(e)) => assert_eq!(e.kind(), ErrorKind::InvalidInput),
        other => panic!("{other:?}"),
    }
    let e = io::Error::from(GetError::Closed);
    assert!(is_port_closed(&e));
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);

    // Closing twice (and from a clone) is harmless.
    port.clone().close();
    port.close();
    assert!(port.is_closed());
    assert!(matches!(
        port.get(Some(Duration::ZERO)),
        Err(GetError::Closed)
    ));
    let r = port.post(2, 0, ctx.clone()).unwrap_err();
    assert!(is_port_closed(&r.error));
    assert!(Arc::ptr_eq(&r.context, &ctx), "the same context comes back");
}

/// A time-out too large for `Instant` means "forever", not a panic.
fn huge_timeout_is_forever(backend: Backend) {
    let port = port::<u32>(backend, 1);
    port.post(1, 0, 10).unwrap();
    assert_eq!(port.get(Some(Duration::MAX)).unwrap().context, 10);
    port.post(2, 0, 20).unwrap();
    let mut out = Vec::new();
    assert_eq!(port.get_many(&mut out, 8, Some(Duration::MAX)).unwrap(), 1);
    assert_eq!(out[0].context, 20);
}

/// Ring entries above the kernel's maximum are clamped, not refused; one
/// entry is enough.
fn ring_entries_are_clamped(backend: Backend) {
    for n in [1, 32769, u32::MAX] {
        let port = PortBuilder::<u32>::new()
            .backend(backend)
            .entries(n)
            .build()
            .unwrap_or_else(|e| panic!("entries({n}): {e}"));
        let (a, _b) = UnixStream::pair().unwrap();
        let h = port.associate(a, 1).unwrap();
        for i in 0..3 {
            h.nop(i).unwrap();
        }
        assert_eq!(common::take(&port, 3).len(), 3);
    }
}

/// `cancel` of a token that is not in flight on this handle (completed,
/// or in flight on another handle or port) and `cancel_all` with nothing
/// in flight fail with `NotFound` ("nothing to cancel: …") and touch
/// nothing.
fn cancel_without_target(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let other_port = common::port::<u32>(backend, 1);
    let (a, _pa) = UnixStream::pair().unwrap();
    let (b, _pb) = UnixStream::pair().unwrap();
    let (c, _pc) = UnixStream::pair().unwrap();
    let ha = port.associate(a, 1).unwrap();
    let hb = port.associate(b, 2).unwrap();
    let hc = other_port.associate(c, 3).unwrap();
    let not_found = |r: io::Result<()>| {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().starts_with("nothing to cancel"), "{e}");
    };
    not_found(ha.cancel_all().map(drop));
    // Completed and dequeued.
    let done = ha.nop(1).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().token(), Some(done));
    not_found(ha.cancel(done));
    // In flight, on another handle of this port and on another port.
    let tb = hb.recv(Buf::with_capacity(8), 2).unwrap();
    let tc = hc.recv(Buf::with_capacity(8), 3).unwrap();
    not_found(ha.cancel(tb));
    not_found(ha.cancel(tc));
    not_found(hb.cancel(tc));
    not_found(ha.cancel_all().map(drop));
    // Nothing was cancelled by those calls.
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
    assert_eq!(port.stats().in_flight, 1);
    assert_eq!(other_port.stats().in_flight, 1);
    // The right handle cancels them.
    hb.cancel(tb).unwrap();
    assert_eq!(hc.cancel_all().unwrap(), 1);
    for (p, t) in [(&port, tb), (&other_port, tc)] {
        let p = p.get(Some(WAIT)).unwrap();
        assert_eq!(p.token(), Some(t));
        assert!(is_aborted(p.result.as_ref().unwrap_err()));
    }
    // On a closed port nothing is in flight any more.
    let t4 = hb.recv(Buf::with_capacity(8), 4).unwrap();
    port.close();
    not_found(hb.cancel(t4));
    not_found(hb.cancel_all().map(drop));
}

/// Closing a handle twice: the second close (from any clone) cancels
/// nothing and returns 0; the first one's packet still comes, once.
fn close_handle_twice(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let (a, _peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap();
    let (b, addr) = marked(b"", 16);
    let t = h.recv(b, 7).unwrap();
    let clone = h.clone();
    assert_eq!(h.close(), 1);
    assert_eq!(h.close(), 0);
    assert_eq!(clone.close(), 0);
    assert!(clone.is_closed());
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.token(), p.context), (Some(t), 7));
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    assert_same(&p.take_buf().unwrap(), b"", 16, addr);
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
}

/// The packet of an operation the kernel refused: its error, and the same
/// context and buffer.
fn failed_packet<C: Send + 'static + PartialEq + std::fmt::Debug>(
    port: &Port<C>,
    token: Token,
    context: C,
    errno: i32,
) -> Packet<C> {
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.token(), Some(token));
    assert_eq!(p.context, context);
    let e = p.result.as_ref().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(errno), "{context:?}: {e:?}");
    p
}

/// `connect` to an address of another family than the socket's is
/// accepted at the call; the kernel's refusal comes in the packet.
fn connect_wrong_family(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (domain, addr, errno) in [
        (Domain::IPV4, v6, libc::EAFNOSUPPORT),
        (Domain::IPV6, v4, libc::EINVAL),
        (Domain::UNIX, v4, libc::EINVAL),
    ] {
        let s = port
            .associate(Socket::new(domain, Type::STREAM, None).unwrap(), 1)
            .unwrap();
        let t = s.connect(addr, errno as u32).unwrap();
        let p = failed_packet(&port, t, errno as u32, errno);
        assert_eq!(p.kind(), PacketKind::Connect);
    }
    assert_no_packet(&port);
}

/// Operations on the wrong kind of fd are accepted at the call and fail
/// in their packet, buffers handed back untouched.
fn ops_on_wrong_kind_of_fd(backend: Backend) {
    let port = port::<&'static str>(backend, 1);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"data").unwrap();
    let file = port.associate(f, 1).unwrap();
    let one = |r: Result<Token, Rejected<&'static str>>,
               ctx: &'static str,
               errno: i32,
               (bytes, cap, addr): (&[u8], usize, *const u8)| {
        let mut p = failed_packet(&port, r.unwrap(), ctx, errno);
        assert_eq!(p.bytes(), 0);
        assert_same(&p.take_buf().unwrap(), bytes, cap, addr);
    };

    // Socket calls on a regular file: ENOTSOCK.
    let (b, a) = marked(b"", 8);
    one(file.recv(b, "recv"), "recv", libc::ENOTSOCK, (b"", 8, a));
    let (b, a) = marked(b"xy", 8);
    one(file.send(b, "send"), "send", libc::ENOTSOCK, (b"xy", 8, a));
    let (b1, a1) = marked(b"", 4);
    let (b2, a2) = marked(b"q", 4);
    let t = file.send_vectored(vec![b1, b2], "send_vectored").unwrap();
    let mut p = failed_packet(&port, t, "send_vectored", libc::ENOTSOCK);
    let bufs = p.take_bufs();
    assert_same(&bufs[0], b"", 4, a1);
    assert_same(&bufs[1], b"q", 4, a2);
    let (b1, a1) = marked(b"", 4);
    let t = file.recv_vectored(vec![b1], "recv_vectored").unwrap();
    let mut p = failed_packet(&port, t, "recv_vectored", libc::ENOTSOCK);
    assert_same(&p.take_bufs()[0], b"", 4, a1);
    let t = file.accept("accept").unwrap();
    let mut p = failed_packet(&port, t, "accept", libc::ENOTSOCK);
    assert!(p.take_accepted().is_none());
    let t = file
        .connect("127.0.0.1:9".parse::<SocketAddr>().unwrap(), "connect")
        .unwrap();
    failed_packet(&port, t, "connect", libc::ENOTSOCK);

    // A write on a file opened read-only: EBADF.
    let ro = port
        .associate(File::open(file_path(&file)).unwrap(), 2)
        .unwrap();
    let (b, a) = marked(b"zz", 2);
    one(
        ro.write_at(b, 0, "ro write_at"),
        "ro write_at",
        libc::EBADF,
        (b"zz", 2, a),
    );

    // Pipe ends used the wrong way round: EBADF.
    let (r, w) = pipe();
    let (r, w) = (port.associate(r, 3).unwrap(), port.associate(w, 4).unwrap());
    let (b, a) = marked(b"x", 1);
    one(
        r.write(b, "write on read end"),
        "write on read end",
        libc::EBADF,
        (b"x", 1, a),
    );
    let (b, a) = marked(b"", 4);
    one(
        w.read(b, "read on write end"),
        "read on write end",
        libc::EBADF,
        (b"", 4, a),
    );

    // A listening socket: not connected.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let l = port.associate(l, 5).unwrap();
    let (b, a) = marked(b"", 8);
    one(
        l.recv(b, "recv on listener"),
        "recv on listener",
        libc::ENOTCONN,
        (b"", 8, a),
    );
    let (b, a) = marked(b"", 8);
    one(
        l.read(b, "read on listener"),
        "read on listener",
        libc::ENOTCONN,
        (b"", 8, a),
    );
    let (b, a) = marked(b"s", 8);
    one(
        l.send(b, "send on listener"),
        "send on listener",
        libc::EPIPE,
        (b"s", 8, a),
    );
    let t = l.connect(addr, "connect on listener").unwrap();
    failed_packet(&port, t, "connect on listener", libc::EISCONN);

    // An unconnected socket: accept is EINVAL, recv ENOTCONN, send EPIPE.
    let s = port
        .associate(Socket::new(Domain::IPV4, Type::STREAM, None).unwrap(), 6)
        .unwrap();
    let t = s.accept("accept unconnected").unwrap();
    failed_packet(&port, t, "accept unconnected", libc::EINVAL);
    let (b, a) = marked(b"", 8);
    one(
        s.recv(b, "recv unconnected"),
        "recv unconnected",
        libc::ENOTCONN,
        (b"", 8, a),
    );
    let (b, a) = marked(b"s", 8);
    one(
        s.send(b, "send unconnected"),
        "send unconnected",
        libc::EPIPE,
        (b"s", 8, a),
    );

    // A connected socket: connect again is EISCONN.
    let c = port
        .associate(TcpStream::connect(addr).unwrap(), 7)
        .unwrap();
    let t = c.connect(addr, "connect connected").unwrap();
    failed_packet(&port, t, "connect connected", libc::EISCONN);
    assert_no_packet(&port);
}

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The path of an associated file (through /proc), to reopen it.
fn file_path<C>(h: &Handle<C>) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", h.as_raw_fd()).into()
}

/// A wrong kind of fd where the backends once differed (docs/bad-input.md):
/// a positioned `read_at`/`write_at` on a pipe or socket, and `accept` on a
/// connected (not listening) socket. Both now answer alike.
fn wrong_kind_of_fd_backend_differences(backend: Backend) {
    let port = port::<&'static str>(backend, 1);
    let (r, w) = pipe();
    let (r, w) = (port.associate(r, 1).unwrap(), port.associate(w, 2).unwrap());
    let tw = w
        .write_at(Buf::copy_from(b"x"), 100, "write_at pipe")
        .unwrap();
    let pw = port.get(Some(WAIT)).unwrap();
    assert_eq!((pw.token(), pw.context), (Some(tw), "write_at pipe"));
    let tr = r
        .read_at(Buf::with_capacity(4), 100, "read_at pipe")
        .unwrap();
    let pr = port.get(Some(WAIT)).unwrap();
    assert_eq!((pr.token(), pr.context), (Some(tr), "read_at pipe"));
    let lh = port
        .associate(TcpListener::bind("127.0.0.1:0").unwrap(), 3)
        .unwrap();
    let (a, mut peer) = UnixStream::pair().unwrap();
    let conn = port.associate(a, 4).unwrap();
    // Both backends: the offset is ignored on a non-seekable fd (stream
    // I/O, as on Windows); a listener is not readable or writable; accept on
    // a connected (non-listening) socket fails at once.
    assert_eq!(*pw.result.as_ref().unwrap(), 1);
    assert_eq!(*pr.result.as_ref().unwrap(), 1);
    let t = lh
        .read_at(Buf::with_capacity(4), 0, "read_at listener")
        .unwrap();
    failed_packet(&port, t, "read_at listener", libc::ENOTCONN);
    let t = lh
        .write_at(Buf::copy_from(b"x"), 0, "write_at listener")
        .unwrap();
    failed_packet(&port, t, "write_at listener", libc::EPIPE);
    let ta = conn.accept("accept connected").unwrap();
    failed_packet(&port, ta, "accept connected", libc::EINVAL);
    let _ = backend;
    peer.write_all(b"!").unwrap();
    drop(peer);
    assert_no_packet(&port);
}

/// A read into a buffer with no spare capacity (a `Buf` made from a full
/// `Vec`) is refused at the call with `InvalidInput`: it would complete with
/// `Ok(0)`, the same result as end of file. The buffer comes back.
fn read_into_full_buffer(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"data").unwrap();
    let h = port.associate(f, 1).unwrap();
    for stream in [false, true] {
        let b = Buf::from(vec![7u8; 8]);
        assert_eq!(b.spare_capacity(), 0);
        let a = b[..].as_ptr();
        let mut r = if stream {
            h.read(b, 2).unwrap_err()
        } else {
            h.read_at(b, 0, 1).unwrap_err()
        };
        assert_eq!(r.error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            r.error.to_string().contains("spare capacity"),
            "{}",
            r.error
        );
        assert_same(&r.take_buf().unwrap(), &[7; 8], 8, a);
    }
    assert_no_packet(&port);
}

/// A buffer of `n` bytes, filled (zeros) or empty, that the process never
/// touches: the zeroed allocation is mapped lazily, so even 4 GiB costs no
/// memory. `None` when the allocator refuses (strict overcommit, small
/// machine).
fn untouched(n: usize, filled: bool) -> Option<Buf> {
    let layout = std::alloc::Layout::array::<u8>(n).ok()?;
    // SAFETY: `layout` has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    let len = if filled { n } else { 0 };
    // SAFETY: allocated by the global allocator with `Layout::array::<u8>(n)`,
    // all `n` bytes initialised (zeroed), `len <= n`.
    Some(Buf::from(unsafe { Vec::from_raw_parts(ptr, len, n) }))
}

/// One transfer over `u32::MAX` bytes (io_uring lengths are `u32`) is
/// refused with `InvalidInput`, the buffers handed back; exactly
/// `u32::MAX` is accepted.
fn oversized_transfer(backend: Backend) {
    const OVER: usize = u32::MAX as usize + 1;
    let (Some(empty), Some(full), Some(h1), Some(h2)) = (
        untouched(OVER, false),
        untouched(OVER, true),
        untouched(OVER / 2, false),
        untouched(OVER / 2, true),
    ) else {
        eprintln!("skipped: the allocator refused 4 GiB of address space");
        return;
    };
    let port = port::<u32>(backend, 1);
    let file = port.associate(tempfile::tempfile().unwrap(), 1).unwrap();
    let (s, _peer) = UnixStream::pair().unwrap();
    let sock = port.associate(s, 2).unwrap();
    let refused = |r: Result<Token, Rejected<u32>>, ctx: u32| -> Rejected<u32> {
        let r = r.unwrap_err();
        assert_invalid(&r);
        assert!(r.error.to_string().contains("4294967295"), "{}", r.error);
        assert_eq!(r.context, ctx);
        r
    };
    let same = |b: &Buf, len: usize, cap: usize, addr: *const u8| {
        assert_eq!((b.len(), b.capacity(), b[..].as_ptr()), (len, cap, addr));
    };
    let (ea, fa) = (empty[..].as_ptr(), full[..].as_ptr());
    let mut empty = refused(file.read_at(empty, 0, 1), 1).take_buf().unwrap();
    same(&empty, 0, OVER, ea);
    empty = refused(file.read(empty, 2), 2).take_buf().unwrap();
    empty = refused(sock.recv(empty, 3), 3).take_buf().unwrap();
    same(&empty, 0, OVER, ea);
    let mut full = refused(file.write_at(full, 0, 4), 4).take_buf().unwrap();
    same(&full, OVER, OVER, fa);
    full = refused(file.write(full, 5), 5).take_buf().unwrap();
    full = refused(sock.send(full, 6), 6).take_buf().unwrap();
    same(&full, OVER, OVER, fa);
    // Vectored: each buffer is under the limit, their sum is not.
    let a1 = h1[..].as_ptr();
    let a2 = h2[..].as_ptr();
    let back = refused(sock.recv_vectored(vec![h1, empty], 7), 7).take_bufs();
    assert_eq!(back.len(), 2);
    same(&back[0], 0, OVER / 2, a1);
    same(&back[1], 0, OVER, ea);
    let back = refused(sock.send_vectored(vec![h2, full], 8), 8).take_bufs();
    assert_eq!(back.len(), 2);
    same(&back[0], OVER / 2, OVER / 2, a2);
    same(&back[1], OVER, OVER, fa);
    drop(back);
    // Two halves: each under the limit, their sum over it.
    let halves = vec![
        untouched(OVER / 2, false).unwrap(),
        untouched(OVER / 2, false).unwrap(),
    ];
    let back = refused(sock.recv_vectored(halves, 9), 9).take_bufs();
    assert_eq!(back.len(), 2);
    assert!(back
        .iter()
        .all(|b| b.capacity() == OVER / 2 && b.is_empty()));
    drop(back);
    assert_no_packet(&port);
    // Exactly u32::MAX is accepted (an empty file: nothing is read).
    let mut at_limit = untouched(u32::MAX as usize, false).unwrap();
    let a = at_limit[..].as_ptr();
    let t = file.read_at(at_limit, 0, 10).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.token(), p.context), (Some(t), 10));
    assert_eq!(*p.result.as_ref().unwrap(), 0);
    at_limit = p.take_buf().unwrap();
    same(&at_limit, 0, u32::MAX as usize, a);
}

/// An unknown `CPORT_BACKEND` makes every `Backend::Auto` port fail with
/// `InvalidInput` naming the value; an explicit backend ignores it. Runs
/// in a child process so the variable reaches no other test.
#[test]
fn unknown_backend_in_environment() {
    const CHILD: &str = "CPORT_BAD_INPUT_ENV_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let e = Port::<u32>::new(1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("kqueue"), "{e}");
        let e = Port::<u32>::builder()
            .backend(Backend::Auto)
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let p = Port::<u32>::builder()
            .backend(Backend::Epoll)
            .build()
            .unwrap();
        assert_eq!(p.backend(), Backend::Epoll);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unknown_backend_in_environment",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("CPORT_BACKEND", "kqueue")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

/// `Buf::reserve` past what an allocation can hold panics, like
/// `Vec::reserve`.
#[test]
fn buf_reserve_overflow_panics() {
    fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let e = std::panic::catch_unwind(f).expect_err("no panic");
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }
    let m = panics(|| Buf::copy_from(b"x").reserve(usize::MAX));
    assert!(m.contains("overflows usize"), "{m}");
    let m = panics(|| Buf::with_capacity(0).reserve(usize::MAX));
    assert!(m.contains("capacity overflow"), "{m}");
    // An aligned buffer panics too.
    let m = panics(|| Buf::aligned(0, 4096).unwrap().reserve(usize::MAX));
    assert!(m.contains("overflows"), "{m}");
}

per_backend! {
    ops_on_closed_port_are_refused,
    vectored_list_limits,
    offset_past_i64_max,
    double_association,
    associate_closed_fd,
    get_many_max_zero,
    zero_ring_entries,
    ops_on_closed_handle_are_refused,
    argument_checks_come_first,
    associate_on_closed_port,
    get_on_closed_port,
    huge_timeout_is_forever,
    ring_entries_are_clamped,
    cancel_without_target,
    close_handle_twice,
    connect_wrong_family,
    ops_on_wrong_kind_of_fd,
    wrong_kind_of_fd_backend_differences,
    read_into_full_buffer,
    oversized_transfer,
}
