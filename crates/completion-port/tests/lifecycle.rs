//! Lifecycle and zero-copy operations (issue 15), on both backends: open,
//! stat, fsync, fdatasync, fallocate, shutdown and send_file — each one's
//! result, and its errors (in the packet, or refused at the call).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::thread;

use common::*;
use completion_port::{is_aborted, Backend, Buf, OpenOptions, PacketKind, Port};

fn errno(p: &completion_port::Packet<u32>) -> Option<i32> {
    p.result.as_ref().err().and_then(|e| e.raw_os_error())
}

/// A file of `n` patterned bytes.
fn file_of(n: usize) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&(0..n).map(|i| (i % 253) as u8).collect::<Vec<_>>())
        .unwrap();
    f
}

fn open_and_its_errors(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.txt");
    // Created, written through the port, read back.
    port.open(&path, OpenOptions::write().create(true).mode(0o600), 1, 1)
        .unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.kind(), PacketKind::Open);
    let f = port.associate(p.take_opened().unwrap(), 1).unwrap();
    f.write_all_at(Buf::copy_from(b"contents"), 0, 2).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().bytes(), 8);
    assert_eq!(std::fs::read(&path).unwrap(), b"contents");
    // Errors come in the packet.
    port.open(&path, OpenOptions::write().create_new(true), 1, 3)
        .unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(errno(&p), Some(libc::EEXIST));
    assert!(p.take_opened().is_none());
    port.open(dir.path().join("missing"), OpenOptions::read(), 1, 4)
        .unwrap();
    assert_eq!(errno(&port.get(Some(WAIT)).unwrap()), Some(libc::ENOENT));
    // A NUL byte is refused at the call.
    let r = port.open("a\0b", OpenOptions::read(), 1, 5).unwrap_err();
    assert_eq!(r.error.kind(), ErrorKind::InvalidInput);
    assert_eq!(r.context, 5);
}

fn stat_fsync_fallocate(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    let f = port.associate(file_of(1000), 1).unwrap();
    f.stat(1).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    let st = p.stat().unwrap();
    assert_eq!((st.size, st.is_file(), st.is_dir()), (1000, true, false));
    f.fallocate(0, 0, 1 << 20, 2).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().result.unwrap(), 0);
    f.stat(3).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().stat().unwrap().size, 1 << 20);
    f.fsync(4).unwrap();
    f.fdatasync(5).unwrap();
    for p in take(&port, 2) {
        assert_eq!(p.kind(), PacketKind::Fsync);
        assert_eq!(p.result.unwrap(), 0);
    }
    // Bad spans are refused at the call; kernel errors come in packets.
    let r = f.fallocate(0, 10, 0, 6).unwrap_err();
    assert_eq!(r.error.kind(), ErrorKind::InvalidInput);
    let r = f.fallocate(0, u64::MAX - 1, 10, 6).unwrap_err();
    assert_eq!(r.error.kind(), ErrorKind::InvalidInput);
    let (a, _b) = UnixStream::pair().unwrap();
    let sock = port.associate(a, 2).unwrap();
    sock.fsync(7).unwrap();
    assert_eq!(errno(&port.get(Some(WAIT)).unwrap()), Some(libc::EINVAL));
    sock.stat(8).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.stat().unwrap().mode & libc::S_IFMT, libc::S_IFSOCK);
}

/// A shutdown of the writing side after sends: the peer reads every byte,
/// then end of file. On an unconnected socket: ENOTCONN in the packet.
fn shutdown_after_sends(backend: Backend) {
    let port: Port<u32> = port(backend, 1);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let a = port.associate(a, 1).unwrap();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        all
    });
    a.send_all(Buf::from(vec![1u8; 1 << 20]), 1).unwrap();
    a.send_all(Buf::from(vec![2u8; 1 << 20]), 2).unwrap();
    a.shutdown(Shutdown::Write, 3).unwrap();
    let ps = take(&port, 3);
    assert!(ps.iter().all(|p| p.result.is_ok()), "{:?}", ps);
    let all = reader.join().unwrap();
    assert_eq!(all.len(), 2 << 20, "end of file came before the sends");
    assert!(all[..1 << 20].iter().all(|&b| b == 1) && all[1 << 20..].iter().all(|&b| b == 2));

    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let s = port.associate(s, 2).unwrap();
    s.shutdown(Shutdown::Both, 4).unwrap();
    assert_eq!(errno(&port.get(Some(WAIT)).unwrap()), Some(libc::ENOTCONN));
}

/// send_file: 3 MiB and a bit from an offset to a slow reader (several
/// fills of even the largest pipe, the last one partial), in order between
/// two whole sends; past the end of the file it sends what there is; the
/// file's handle may be dropped meanwhile; cancelled, it ends cancelled.
fn send_file(backend: Backend) {
    const N: usize = (3 << 20) + 123;
    let port: Port<u32> = port(backend, 1);
    let f = file_of(N + 5000);
    let mut want = vec![0u8; N];
    f.read_exact_at(&mut want, 5000).unwrap();
    let file = port.associate(f, 1).unwrap();
    let (a, mut peer) = UnixStream::pair().unwrap();
    let a = port.associate(a, 2).unwrap();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        peer.read_to_end(&mut all).unwrap();
        all
    });
    a.send_all(Buf::copy_from(b"head"), 1).unwrap();
    a.send_file(&file, 5000, N as u64, 2).unwrap();
    a.send_all(Buf::copy_from(b"tail"), 3).unwrap();
    // Past the end: only what there is.
    a.send_file(&file, N as u64, 1 << 30, 4).unwrap();
    drop(file);
    let mut ps = take(&port, 4);
    ps.sort_by_key(|p| p.context);
    let bytes: Vec<usize> = ps.iter().map(|p| p.bytes()).collect();
    assert_eq!(bytes, [4, N, 4, 5000], "{:?}", ps);
    assert_eq!(ps[1].kind(), PacketKind::SendFile);
    // The last handle and the packets (which hold the fd open) gone: the
    // socket closes and the reader sees the end.
    drop((a, ps));
    let all = reader.join().unwrap();
    assert_eq!(&all[..4], b"head");
    assert!(all[4..4 + N] == want[..], "send_file bytes differ");
    assert_eq!(&all[4 + N..8 + N], b"tail");
    assert_eq!(all.len(), 8 + N + 5000);

    // Nobody reads: cancelled.
    let f = port.associate(file_of(N), 3).unwrap();
    let (c, _silent) = UnixStream::pair().unwrap();
    let c = port.associate(c, 4).unwrap();
    let t = c.send_file(&f, 0, N as u64, 5).unwrap();
    wait_until("the send_file is under way", || port.stats().in_flight == 1);
    c.cancel(t).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert!(is_aborted(p.result.as_ref().unwrap_err()), "{:?}", p.result);
}

per_backend!(
    open_and_its_errors,
    stat_fsync_fallocate,
    shutdown_after_sends,
    send_file,
);
