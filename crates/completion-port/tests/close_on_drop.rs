//! Dropping the last clone of a handle closes it, as `CloseHandle` does
//! (issue 15): its pending operations end cancelled (their packets still
//! come), and the fd closes after the last of them — a peer waiting on an
//! idle connection sees end of file. A clone held in an operation's
//! context keeps the handle open until that packet is gone.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use common::*;
use completion_port::{is_aborted, Backend, Buf, Handle, Port};

/// Whether `peer` sees end of file within `limit` (a read returning 0).
fn sees_eof(peer: &mut UnixStream, limit: std::time::Duration) -> bool {
    peer.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 16];
    matches!(peer.read(&mut b), Ok(0))
}

fn drop_closes_the_socket(backend: Backend) {
    let port: Port<u32> = port(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap();
    h.recv(Buf::with_capacity(16), 1).unwrap();
    h.recv(Buf::with_capacity(16), 2).unwrap();
    drop(h);
    let ps = take(&port, 2);
    assert!(ps
        .iter()
        .all(|p| is_aborted(p.result.as_ref().unwrap_err())));
    drop(ps);
    assert!(
        sees_eof(&mut peer, WAIT),
        "the peer never saw the handle close"
    );
    assert_eq!(port.stats().in_flight, 0);
}

/// A context that holds a clone of its handle.
struct Conn(#[allow(dead_code)] Handle<Conn>);

fn clone_in_context_keeps_it_open(backend: Backend) {
    let port: Port<Conn> = port(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap();
    h.recv(Buf::with_capacity(16), Conn(h.clone())).unwrap();
    drop(h);
    // Still open: the pending receive's context holds a clone.
    assert!(!sees_eof(&mut peer, QUIET));
    peer.write_all(b"hi").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(&p.take_buf().unwrap()[..], b"hi");
    drop(p); // the last clone goes with the packet
    assert!(
        sees_eof(&mut peer, WAIT),
        "the peer never saw the handle close"
    );
}

per_backend!(drop_closes_the_socket, clone_in_context_keeps_it_open);
