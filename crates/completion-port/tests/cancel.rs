//! Cancel and close (windows-semantics §6.25–26) on both backends: a cancelled operation
//! still yields exactly one packet, aborted or with its real result; nothing
//! to cancel is `NotFound`; closing a handle cancels its I/O, refuses new
//! operations, and its fd number is not reused while any op could use it.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use common::*;
use completion_port::{is_aborted, Backend, Buf, GetError, PacketKind};

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the flags of `fd`, if it is open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

fn cancel_a_pending_receive(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, _peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 4).unwrap();
    let t = h.recv(Buf::with_capacity(64), 7).unwrap();
    h.cancel(t).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(
        (p.key, p.context, p.kind(), p.token()),
        (4, 7, PacketKind::Recv, Some(t))
    );
    let e = p.result.as_ref().unwrap_err();
    assert!(is_aborted(e), "{e:?}");
    let b = p.take_buf().unwrap();
    assert_eq!((b.len(), b.capacity()), (0, 64));
    // Exactly one packet, and nothing left to cancel.
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
    assert_eq!(
        h.cancel(t).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(
        h.cancel_all().unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
}

fn nothing_to_cancel_is_not_found(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, b) = UnixStream::pair().unwrap();
    let (ha, hb) = (port.associate(a, 1).unwrap(), port.associate(b, 2).unwrap());
    // Completed and dequeued: no longer in flight.
    let t = ha.nop(1).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().token(), Some(t));
    let e = ha.cancel(t).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().starts_with("nothing to cancel"), "{e}");
    // In flight, but on another handle.
    let t2 = hb.recv(Buf::with_capacity(8), 2).unwrap();
    assert_eq!(
        ha.cancel(t2).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    assert_eq!(
        ha.cancel_all().unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    hb.cancel(t2).unwrap();
    assert!(is_aborted(
        port.get(Some(WAIT)).unwrap().result.as_ref().unwrap_err()
    ));
}

fn cancel_all_cancels_every_pending_operation(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, _peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 3).unwrap();
    for i in 0..10 {
        h.recv(Buf::with_capacity(16), i).unwrap();
    }
    assert_eq!(h.cancel_all().unwrap(), 10);
    let mut seen = [false; 10];
    for mut p in take(&port, 10) {
        assert!(is_aborted(p.result.as_ref().unwrap_err()));
        assert!(p.take_buf().is_some());
        assert!(!std::mem::replace(&mut seen[p.context as usize], true));
    }
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
}

/// Cancel races completion: each round, the peer writes one byte while
/// another thread cancels the pending receive. Exactly one packet comes;
/// if it was aborted, the byte is still there for the next receive, so
/// no data is lost either way.
fn cancel_racing_completion_loses_nothing(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap();
    let (mut aborted, mut delivered) = (0, 0);
    for round in 0..300u32 {
        let t = h.recv(Buf::with_capacity(1), round).unwrap();
        let byte = [round as u8];
        let h2 = h.clone();
        let canceller = thread::spawn(move || h2.cancel(t).is_ok());
        peer.write_all(&byte).unwrap();
        canceller.join().unwrap();
        let mut p = port.get(Some(WAIT)).unwrap();
        assert_eq!(p.context, round);
        match &p.result {
            Ok(1) => {
                assert_eq!(p.take_buf().unwrap()[0], byte[0]);
                delivered += 1;
            }
            Err(e) if is_aborted(e) => {
                aborted += 1;
                h.recv(Buf::with_capacity(1), 10_000 + round).unwrap();
                let mut p = port.get(Some(WAIT)).unwrap();
                assert_eq!(*p.result.as_ref().unwrap(), 1);
                assert_eq!(
                    p.take_buf().unwrap()[0],
                    byte[0],
                    "round {round}: the byte was lost"
                );
            }
            other => panic!("round {round}: unexpected {other:?}"),
        }
        assert!(matches!(
            port.get(Some(Duration::ZERO)),
            Err(GetError::Timeout)
        ));
    }
    assert_eq!(aborted + delivered, 300);
}

fn cancel_from_another_thread_releases_the_waiter(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let (a, _peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 9).unwrap();
    let t = h.recv(Buf::with_capacity(8), 5).unwrap();
    let waiter = {
        let port = port.clone();
        thread::spawn(move || {
            port.get(Some(WAIT))
                .map(|p| (p.context, p.result.map_err(|e| is_aborted(&e))))
        })
    };
    wait_until("the waiter waits", || port.stats().leader);
    h.cancel(t).unwrap();
    let (ctx, r) = waiter.join().unwrap().unwrap();
    assert_eq!((ctx, r), (5, Err(true)));
}

/// Closing a handle with I/O pending: every op completes aborted with its
/// buffer; new ops are refused with EBADF (buffers handed back); the fd
/// stays open until the last packet is gone, so a new file cannot take its
/// number while an old op could still touch it.
fn close_with_pending_operations(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let raw = a.as_raw_fd();
    let h = port.associate(a, 6).unwrap();
    for i in 0..3 {
        h.recv(Buf::with_capacity(32), i).unwrap();
    }
    assert_eq!(h.close(), 3);
    assert!(h.is_closed());
    let mut r = h.send(Buf::copy_from(b"late"), 99).unwrap_err();
    assert_eq!(r.error.raw_os_error(), Some(libc::EBADF));
    assert_eq!((r.context, &r.take_buf().unwrap()[..]), (99, &b"late"[..]));
    assert_eq!(h.close(), 0, "closing twice is harmless");
    drop(h);
    let packets = take(&port, 3);
    for p in &packets {
        assert!(is_aborted(p.result.as_ref().unwrap_err()));
    }
    // The packets still hold the fd: its number cannot be reused yet.
    assert!(fd_is_open(raw));
    drop(packets);
    assert!(!fd_is_open(raw), "the fd closes with its last packet");
    // A new fd takes the number; the old socket's peer sees it closed, and
    // nothing stale reaches the new handle.
    let (c, _d) = UnixStream::pair().unwrap();
    let reused = c.as_raw_fd() == raw;
    let h2 = port.associate(c, 7).unwrap();
    let mut buf = [0u8; 4];
    peer.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(peer.read(&mut buf).unwrap(), 0, "the old socket is closed");
    h2.nop(1).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.context), (7, 1));
    assert!(matches!(port.get(Some(QUIET)), Err(GetError::Timeout)));
    eprintln!("fd number reused by the new socket: {reused}");
}

/// A cancelled accept and connect (windows-semantics §6.25 for every kind of op).
fn cancel_accept(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let l = port
        .associate(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 1)
        .unwrap();
    let t = l.accept(1).unwrap();
    l.cancel(t).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.kind(), PacketKind::Accept);
    assert!(is_aborted(p.result.as_ref().unwrap_err()));
    assert!(p.take_accepted().is_none());
    // The listener still works afterwards.
    let addr = socket2::SockRef::from(&l)
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap();
    l.accept(2).unwrap();
    let _c = std::net::TcpStream::connect(addr).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.context, p.result.is_ok()), (2, true));
    assert!(p.take_accepted().is_some());
}

per_backend!(
    cancel_a_pending_receive,
    nothing_to_cancel_is_not_found,
    cancel_all_cancels_every_pending_operation,
    cancel_racing_completion_loses_nothing,
    cancel_from_another_thread_releases_the_waiter,
    close_with_pending_operations,
    cancel_accept,
);
