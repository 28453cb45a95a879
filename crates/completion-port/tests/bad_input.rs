//! Calls refused at once (spec §3.13 "failed at once": no packet), with
//! everything they were given handed back.

mod common;

use std::fs::File;
use std::io::{self, ErrorKind, Read, Seek, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use completion_port::{
    is_port_closed, Backend, Buf, GetError, Port, PortBuilder, Rejected, MAX_IOVECS,
};

use common::{port, WAIT};

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

per_backend! {
    ops_on_closed_port_are_refused,
    vectored_list_limits,
    offset_past_i64_max,
    double_association,
    associate_closed_fd,
    get_many_max_zero,
    zero_ring_entries,
}
