//! Files and pipes: positioned reads and writes from several threads,
//! end of file, `O_DIRECT`, vectored calls on a non-socket, pipes.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::thread;

use completion_port::{Backend, Buf, Handle, PacketKind};

use common::{port, take, QUIET, WAIT};

/// The content of chunk `c`: distinct in every chunk and position.
fn pattern(c: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + c * 7 + 1) as u8).collect()
}

/// An independent view of the handle's file, for checking with `pread`.
fn view<C>(h: &Handle<C>) -> File {
    File::from(h.as_fd().try_clone_to_owned().unwrap())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Io {
    Write(usize),
    Read(usize),
}

fn write_then_read_at_offsets_from_threads(backend: Backend) {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 8;
    const CHUNK: usize = 3000; // not a multiple of a block: odd offsets
    let port = port::<Io>(backend, 2);
    let h = port.associate(tempfile::tempfile().unwrap(), 11).unwrap();
    // Chunk c lives at offset c * CHUNK; issue in a scattered order from
    // several threads at once.
    let issue = |kind: fn(usize) -> Io| {
        thread::scope(|s| {
            for t in 0..THREADS {
                let h = h.clone();
                s.spawn(move || {
                    for j in (0..PER_THREAD).rev() {
                        let c = j * THREADS + t;
                        let off = (c * CHUNK) as u64;
                        match kind(c) {
                            Io::Write(_) => {
                                h.write_at(Buf::from(pattern(c, CHUNK)), off, Io::Write(c))
                                    .unwrap();
                            }
                            Io::Read(_) => {
                                h.read_at(Buf::with_capacity(CHUNK), off, Io::Read(c))
                                    .unwrap();
                            }
                        }
                    }
                });
            }
        })
    };
    let total = THREADS * PER_THREAD;
    issue(Io::Write);
    let mut seen = vec![false; total];
    for mut p in take(&port, total) {
        let Io::Write(c) = p.context else {
            panic!("{:?}", p.context)
        };
        assert!(!seen[c], "chunk {c} written twice");
        seen[c] = true;
        assert_eq!((p.key, p.kind()), (11, PacketKind::Write));
        assert_eq!(*p.result.as_ref().unwrap(), CHUNK);
        let b = p.take_buf().expect("the written buffer comes back");
        assert_eq!(&b[..], &pattern(c, CHUNK)[..]);
        assert!(p.take_buf().is_none());
    }
    // Check through the kernel's own pread, not the port.
    let f = view(&h);
    assert_eq!(f.metadata().unwrap().len(), (total * CHUNK) as u64);
    for c in 0..total {
        let mut got = vec![0; CHUNK];
        f.read_exact_at(&mut got, (c * CHUNK) as u64).unwrap();
        assert_eq!(got, pattern(c, CHUNK), "chunk {c}");
    }

    issue(Io::Read);
    let mut seen = vec![false; total];
    for mut p in take(&port, total) {
        let Io::Read(c) = p.context else {
            panic!("{:?}", p.context)
        };
        assert!(!seen[c], "chunk {c} read twice");
        seen[c] = true;
        assert_eq!((p.key, p.kind()), (11, PacketKind::Read));
        assert_eq!(*p.result.as_ref().unwrap(), CHUNK);
        let b = p.take_buf().unwrap();
        assert_eq!((b.len(), b.capacity()), (CHUNK, CHUNK));
        assert_eq!(&b[..], &pattern(c, CHUNK)[..], "chunk {c}");
    }

    // A read straddling chunks 2 and 3.
    h.read_at(
        Buf::with_capacity(100),
        (3 * CHUNK - 40) as u64,
        Io::Read(0),
    )
    .unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(*p.result.as_ref().unwrap(), 100);
    let mut want = pattern(2, CHUNK)[CHUNK - 40..].to_vec();
    want.extend_from_slice(&pattern(3, CHUNK)[..60]);
    assert_eq!(&p.take_buf().unwrap()[..], &want[..]);
}

/// A read fills the spare capacity after the bytes already in the buffer;
/// at or past the end of file it completes with `Ok(0)` (the Rust
/// convention; Windows says `ERROR_HANDLE_EOF`).
fn read_appends_and_eof_is_zero(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"0123456789").unwrap();
    let h = port.associate(f, 1).unwrap();

    let mut b = Buf::with_capacity(8);
    b.extend_from_slice(b"ab");
    h.read_at(b, 4, 1).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(*p.result.as_ref().unwrap(), 6);
    let b = p.take_buf().unwrap();
    assert_eq!(&b[..], b"ab456789");
    assert_eq!(b.capacity(), 8);

    // Short read at the end.
    h.read_at(Buf::with_capacity(100), 7, 2).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(*p.result.as_ref().unwrap(), 3);
    assert_eq!(&p.take_buf().unwrap()[..], b"789");

    for (ctx, off) in [(3, 10u64), (4, 11), (5, 1 << 40)] {
        h.read_at(Buf::with_capacity(16), off, ctx).unwrap();
        let mut p = port.get(Some(WAIT)).unwrap();
        assert_eq!(p.context, ctx);
        assert_eq!(*p.result.as_ref().unwrap(), 0, "read at {off}");
        assert_eq!(p.bytes(), 0);
        assert!(p.take_buf().unwrap().is_empty());
    }
}

/// Scatter/gather calls are socket calls: on a file the kernel refuses
/// them (`ENOTSOCK`) in the packet, and the buffers come back untouched.
fn vectored_on_a_file_fails_in_the_packet(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"data").unwrap();
    let h = port.associate(f, 4).unwrap();
    h.recv_vectored(vec![Buf::with_capacity(4), Buf::with_capacity(4)], 1)
        .unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.context, p.kind()), (4, 1, PacketKind::Recv));
    assert_eq!(
        p.result.as_ref().unwrap_err().raw_os_error(),
        Some(libc::ENOTSOCK)
    );
    assert_eq!(p.bytes(), 0);
    let bufs = p.take_bufs();
    assert_eq!(bufs.len(), 2);
    assert!(bufs.iter().all(|b| b.is_empty() && b.capacity() == 4));

    h.send_vectored(vec![Buf::copy_from(b"xy"), Buf::copy_from(b"z")], 2)
        .unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.context, p.kind()), (2, PacketKind::Send));
    assert_eq!(
        p.result.as_ref().unwrap_err().raw_os_error(),
        Some(libc::ENOTSOCK)
    );
    let bufs = p.take_bufs();
    assert_eq!(&bufs[0][..], b"xy");
    assert_eq!(&bufs[1][..], b"z");
    // The file is unchanged.
    let mut got = [0; 8];
    assert_eq!(view(&h).read_at(&mut got, 0).unwrap(), 4);
    assert_eq!(&got[..4], b"data");
}

/// Opens a new file with `O_DIRECT` in the first candidate directory whose
/// file system supports it.
fn direct_file() -> Option<(tempfile::TempDir, File)> {
    let mut dirs: Vec<PathBuf> = vec![
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    ];
    dirs.dedup();
    for dir in dirs {
        let Ok(tmp) = tempfile::tempdir_in(&dir) else {
            continue;
        };
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(tmp.path().join("direct"))
        {
            Ok(f) => return Some((tmp, f)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                println!("note: {} does not support O_DIRECT", dir.display());
            }
            Err(e) => panic!("opening a file in {}: {e}", dir.display()),
        }
    }
    None
}

fn o_direct_aligned_read_write(backend: Backend) {
    let Some((_dir, file)) = direct_file() else {
        println!("note: skipped: no directory here supports O_DIRECT");
        return;
    };
    let port = port::<u32>(backend, 1);
    let h = port.associate(file, 2).unwrap();
    let data: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();
    let mut b = Buf::aligned(4096, 4096).unwrap();
    b.extend_from_slice(&data);
    assert_eq!(b.capacity(), 4096);
    h.write_at(b, 4096, 1).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(*p.result.as_ref().unwrap(), 4096, "{:?}", p.result);
    assert_eq!(p.take_buf().unwrap().alignment(), 4096);

    h.read_at(Buf::aligned(4096, 4096).unwrap(), 4096, 2)
        .unwrap();
    h.read_at(Buf::aligned(4096, 4096).unwrap(), 0, 3).unwrap();
    h.read_at(Buf::aligned(4096, 4096).unwrap(), 8192, 4)
        .unwrap();
    let mut ps = take(&port, 3);
    ps.sort_by_key(|p| p.context);
    let bufs: Vec<(usize, Buf)> = ps
        .iter_mut()
        .map(|p| (*p.result.as_ref().unwrap(), p.take_buf().unwrap()))
        .collect();
    assert_eq!(bufs[0].0, 4096);
    assert_eq!(&bufs[0].1[..], &data[..]);
    // The hole before it reads as zeros; past the end, nothing.
    assert_eq!(bufs[1].0, 4096);
    assert!(bufs[1].1.iter().all(|&x| x == 0));
    assert_eq!(bufs[2].0, 0);

    // A misaligned transfer is refused by the kernel, in the packet.
    let mut b = Buf::aligned(4096, 4096).unwrap();
    b.extend_from_slice(&data[..100]);
    h.write_at(b, 0, 5).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(
        p.result.as_ref().unwrap_err().raw_os_error(),
        Some(libc::EINVAL)
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Stream `read`/`write` on a pipe: a read issued before any data waits
/// for it; reads see the bytes in order; closing the write end gives
/// `Ok(0)`.
fn pipe_read_write(backend: Backend) {
    let port = port::<&'static str>(backend, 1);
    let (r, w) = pipe();
    let r = port.associate(r, 1).unwrap();
    let w = port.associate(w, 2).unwrap();

    r.read(Buf::with_capacity(64), "read 1").unwrap();
    assert!(matches!(
        port.get(Some(QUIET)),
        Err(completion_port::GetError::Timeout)
    ));
    assert_eq!(port.stats().in_flight, 1);
    w.write(Buf::copy_from(b"hello, pipe"), "write 1").unwrap();
    let mut ps = take(&port, 2);
    ps.sort_by_key(|p| p.key);
    assert_eq!((ps[0].context, ps[0].kind()), ("read 1", PacketKind::Read));
    assert_eq!(*ps[0].result.as_ref().unwrap(), 11);
    assert_eq!(&ps[0].take_buf().unwrap()[..], b"hello, pipe");
    assert_eq!(
        (ps[1].context, ps[1].kind()),
        ("write 1", PacketKind::Write)
    );
    assert_eq!(*ps[1].result.as_ref().unwrap(), 11);

    // Two writes, then reads: the bytes come in order, a read takes at
    // most its spare capacity.
    w.write(Buf::copy_from(b"abc"), "write 2").unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().context, "write 2");
    w.write(Buf::copy_from(b"defg"), "write 3").unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().context, "write 3");
    r.read(Buf::with_capacity(5), "read 2").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(&p.take_buf().unwrap()[..], b"abcde");
    r.read(Buf::with_capacity(5), "read 3").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(&p.take_buf().unwrap()[..], b"fg");

    // Dropping the only write handle closes the write end once no packet
    // of it is alive any more (a packet holds its fd open): a pending read
    // sees the end of the stream.
    r.read(Buf::with_capacity(5), "read 4").unwrap();
    drop(w);
    assert!(port.get(Some(QUIET)).is_err(), "a packet holds the fd open");
    drop(ps);
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, "read 4");
    assert_eq!(*p.result.as_ref().unwrap(), 0);
    assert!(p.take_buf().unwrap().is_empty());
}

/// Writing to a pipe whose read end is closed fails with `EPIPE` in the
/// packet.
fn pipe_write_to_closed_reader(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let (r, w) = pipe();
    drop(r);
    let w = port.associate(w, 2).unwrap();
    w.write(Buf::copy_from(b"lost"), 1).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(
        p.result.as_ref().unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    assert_eq!(&p.take_buf().unwrap()[..], b"lost");
}

per_backend! {
    write_then_read_at_offsets_from_threads,
    read_appends_and_eof_is_zero,
    vectored_on_a_file_fails_in_the_packet,
    o_direct_aligned_read_write,
    pipe_read_write,
    pipe_write_to_closed_reader,
}
