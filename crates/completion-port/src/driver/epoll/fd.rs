//! Per-fd state of the epoll backend and the non-blocking attempt of each
//! operation.
//!
//! # Invariants
//! - Each fd has two FIFO queues of pending operations, one per direction
//!   (receive-like: recv, recvmsg, accept, read; send-like: send, sendmsg,
//!   connect, write). An operation is tried at once only when its queue is
//!   empty, so operations of one direction complete in issue order.
//! - Trying an operation and queueing it happen under the fd's lock, and the
//!   readiness handler runs the queues under the same lock. So readiness
//!   that arrives between a failed attempt and the push is never lost: the
//!   handler either ran before the attempt (which then finds the data) or
//!   after the push (and runs the op).
//! - The fd is registered with epoll (edge-triggered) on the first attempt
//!   that would block, and deregistered when its last user is gone (before
//!   the fd is closed).

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::timers::TimerKey;
use super::Shared;
use std::os::fd::AsRawFd;

use crate::driver::{OpIo, OpKind, OpPtr, OFFSET_CURRENT, SPLICE_CHUNK};

/// How the backend drives an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FdKind {
    /// Non-blocking attempts (`MSG_DONTWAIT`), then epoll readiness.
    Socket,
    /// Pipes, FIFOs, character devices: `RWF_NOWAIT` attempts, then epoll.
    Pollable,
    /// Regular files and block devices (epoll refuses them): the blocking
    /// pool.
    File,
}

/// An operation the backend owns and has not finished: queued on an fd,
/// or waiting for a pool thread.
pub(super) struct Pending {
    pub(super) op: OpPtr,
    /// A connect whose non-blocking `connect(2)` was made: later attempts
    /// only check how it ended.
    pub(super) started: bool,
    /// The op's deadline entry (`timers.rs`), removed by whoever takes the
    /// op out of its queue.
    pub(super) timer: Option<TimerKey>,
}

impl Pending {
    pub(super) fn new(op: OpPtr) -> Pending {
        Pending {
            op,
            started: false,
            timer: None,
        }
    }
}

#[derive(Default)]
pub(super) struct Queues {
    pub(super) read: VecDeque<Pending>,
    pub(super) write: VecDeque<Pending>,
    pub(super) registered: bool,
}

pub(super) struct FdEntry {
    pub(super) id: u64,
    pub(super) fd: RawFd,
    pub(super) kind: FdKind,
    pub(super) queues: Mutex<Queues>,
}

/// Lives in the fd's [`FdState`](crate::driver::FdState) (in the core's
/// per-fd owner) and so dies just before the fd is closed: deregisters it.
pub(crate) struct Registration {
    pub(super) state: Arc<FdEntry>,
    pub(super) shared: Weak<Shared>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if std::process::id() != shared.pid {
            // A forked child's copy: the registration is the parent's.
            return;
        }
        shared.regs.lock().remove(&self.state.id);
        if self.state.queues.lock().registered {
            // SAFETY: the fd is still open (its owner closes it after this
            // drop); EPOLL_CTL_DEL ignores the event argument.
            unsafe {
                libc::epoll_ctl(
                    shared.epfd(),
                    libc::EPOLL_CTL_DEL,
                    self.state.fd,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

pub(super) fn classify(fd: RawFd) -> FdKind {
    // SAFETY: `st` is written by fstat before it is read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open (owned by the caller's handle) and `st` is valid.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return FdKind::Pollable;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFSOCK => FdKind::Socket,
        libc::S_IFREG | libc::S_IFBLK | libc::S_IFDIR => FdKind::File,
        _ => FdKind::Pollable,
    }
}

/// Whether an operation goes in the receive-like queue.
pub(super) fn is_read_side(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Recv
            | OpKind::RecvPooled
            | OpKind::RecvVectored
            | OpKind::Accept
            | OpKind::Read
            | OpKind::Readable
    )
}

/// Whether an operation runs on the blocking pool whatever its fd: the
/// system calls that cannot be made non-blocking.
pub(super) fn is_blocking(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Fsync { .. } | OpKind::Fallocate { .. } | OpKind::Stat | OpKind::Open { .. }
    )
}

/// Result of one non-blocking attempt.
pub(super) enum Attempt {
    /// Finished: `>= 0` result or `-errno`.
    Done(i32),
    /// Not ready; wait for readiness.
    WouldBlock,
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Maps a syscall return value: `EAGAIN` → wait, `EINTR` → retry.
fn settle(r: isize, retry: &mut bool) -> Option<Attempt> {
    if r >= 0 {
        return Some(Attempt::Done(r.min(i32::MAX as isize) as i32));
    }
    match errno() {
        libc::EAGAIN => Some(Attempt::WouldBlock),
        libc::EINTR => {
            *retry = true;
            None
        }
        e => Some(Attempt::Done(-e)),
    }
}

/// Whether `fd` is a listening socket (`SO_ACCEPTCONN`). `accept` on any
/// other fd fails at once with `EINVAL`, as `accept4` (and io_uring) would,
/// instead of waiting for a readiness that means something else.
fn is_listening(fd: RawFd) -> bool {
    // SAFETY: `fd` is open for this call (an operation on it runs).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    // Not a socket at all: let accept4 report the right error (ENOTSOCK).
    socket2::SockRef::from(&fd).is_listener().unwrap_or(true)
}

/// Whether `fd` is ready for `events` right now (a zero-time poll).
fn ready_now(fd: RawFd, events: libc::c_short) -> Result<bool, i32> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(errno());
    }
    Ok(r > 0)
}

/// Tries `op` without blocking: once, or for a whole transfer until every
/// byte is sent or the fd would block (its progress is kept in `op.done`,
/// so the next attempt goes on from there).
///
/// # Safety
/// `p.op` must be a live record owned by the caller (the backend), with
/// `prepare` done, and not accessed by anyone else during the call.
pub(super) unsafe fn attempt(p: &mut Pending, kind: FdKind) -> Attempt {
    loop {
        // SAFETY: forwarded from the caller.
        let a = unsafe { attempt_once(p, kind) };
        // SAFETY: as above; the attempt above has ended.
        let op = unsafe { p.op.op() };
        match a {
            Attempt::Done(res) if op.advance(res) => continue,
            a => return a,
        }
    }
}

/// One non-blocking attempt of `op` (see [`attempt`]).
///
/// # Safety
/// As [`attempt`].
unsafe fn attempt_once(p: &mut Pending, kind: FdKind) -> Attempt {
    // SAFETY: per the contract, exclusive access to a live record.
    let op = unsafe { p.op.op() };
    let started = &mut p.started;
    let fd = op.fd.raw;
    loop {
        let mut retry = false;
        // Every pointer below points into the record or its buffers, which
        // the backend owns for the duration of the call.
        let r = match op.kind {
            OpKind::Nop => Some(Attempt::Done(0)),
            // Timers never reach an fd (the timers hold them: timers.rs).
            OpKind::Timer => Some(Attempt::WouldBlock),
            OpKind::Recv => {
                let b = op.bufs.one_mut();
                // SAFETY: the spare capacity is writable memory of the buffer.
                let r = unsafe {
                    libc::recv(
                        fd,
                        b.spare_ptr().cast(),
                        b.spare_capacity(),
                        libc::MSG_DONTWAIT,
                    )
                };
                settle(r, &mut retry)
            }
            OpKind::RecvPooled => recv_pooled(op, &mut retry),
            OpKind::Readable => match ready_now(fd, libc::POLLIN) {
                Ok(true) => Some(Attempt::Done(0)),
                Ok(false) => Some(Attempt::WouldBlock),
                Err(e) => Some(Attempt::Done(-e)),
            },
            OpKind::Send => {
                let (ptr, len) = op.out_bytes();
                // SAFETY: the filled bytes not yet sent are readable memory
                // of the buffer.
                let r = unsafe {
                    libc::send(fd, ptr.cast(), len, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                };
                settle(r, &mut retry)
            }
            OpKind::RecvVectored => {
                // SAFETY: `msg` points at iovecs over the buffers' spare capacity.
                let r = unsafe { libc::recvmsg(fd, &mut op.extra().msg, libc::MSG_DONTWAIT) };
                settle(r, &mut retry)
            }
            OpKind::SendVectored => {
                let msg = &op.extra().msg;
                // SAFETY: `msg` points at iovecs over the buffers' filled bytes.
                let r = unsafe { libc::sendmsg(fd, msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
                settle(r, &mut retry)
            }
            OpKind::Accept if !is_listening(fd) => Some(Attempt::Done(-libc::EINVAL)),
            OpKind::Accept => match ready_now(fd, libc::POLLIN) {
                // Only accept when a connection waits: the listener may be in
                // blocking mode, and only this queue accepts on it.
                Ok(true) => {
                    let ex = op.extra();
                    // SAFETY: `addr`/`addr_len` are the record's storage.
                    let r = unsafe {
                        libc::accept4(
                            fd,
                            (&mut ex.addr as *mut libc::sockaddr_storage).cast(),
                            &mut ex.addr_len,
                            libc::SOCK_CLOEXEC,
                        )
                    };
                    settle(r as isize, &mut retry)
                }
                Ok(false) => Some(Attempt::WouldBlock),
                Err(e) => Some(Attempt::Done(-e)),
            },
            OpKind::Connect => Some(connect(op, started)),
            OpKind::Read | OpKind::Write if kind == FdKind::File => {
                // Regular files never come here (the pool runs them); a
                // misclassified fd is run as a plain blocking call.
                Some(blocking_op(op))
            }
            OpKind::Read | OpKind::Write => Some(nowait_rw(op)),
            OpKind::Fsync { .. }
            | OpKind::Fallocate { .. }
            | OpKind::Stat
            | OpKind::Open { .. } => Some(blocking_op(op)),
            OpKind::Shutdown { how } => {
                // SAFETY: plain system call on the op's fd.
                let r = unsafe { libc::shutdown(fd, how) };
                Some(Attempt::Done(if r < 0 { -errno() } else { 0 }))
            }
            OpKind::SendFile => Some(splice_step(op)),
        };
        if let Some(a) = r {
            return a;
        }
        debug_assert!(retry);
    }
}

/// A pooled receive (`buf_pool.rs`): takes a free buffer and receives into
/// it; the buffer is delivered with a positive count and freed otherwise.
/// No buffer free: fails with `ENOBUFS` if data is there (as io_uring's
/// buffer selection does), waits if not.
fn recv_pooled(op: &mut OpIo, retry: &mut bool) -> Option<Attempt> {
    let fd = op.fd.raw;
    let p = op.pool.as_mut().expect("a pooled receive has its pool");
    let Some((id, ptr, len)) = p.take_free() else {
        return Some(match ready_now(fd, libc::POLLIN) {
            Ok(true) => Attempt::Done(-libc::ENOBUFS),
            Ok(false) => Attempt::WouldBlock,
            Err(e) => Attempt::Done(-e),
        });
    };
    // SAFETY: the pool gave us buffer `id`, `len` writable bytes that
    // nobody else touches until we deliver or free it below.
    let r = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
    let a = settle(r, retry);
    match a {
        Some(Attempt::Done(res)) => p.deliver(id, res),
        // Would block or interrupted: give it back (the retry takes one again).
        _ => p.deliver(id, 0),
    }
    a
}

/// A connect: started non-blocking once, then finished on writability.
fn connect(op: &mut OpIo, started: &mut bool) -> Attempt {
    let fd = op.fd.raw;
    if !*started {
        *started = true;
        let ex = op.extra();
        // Non-blocking just for the call, so the fd keeps its mode for the
        // user's own blocking I/O.
        let r = with_nonblocking(fd, || {
            // SAFETY: `addr` holds `addr_len` bytes of a sockaddr.
            unsafe {
                libc::connect(
                    fd,
                    (&ex.addr as *const libc::sockaddr_storage).cast(),
                    ex.addr_len,
                ) as isize
            }
        });
        let e = if r < 0 { errno() } else { 0 };
        return match e {
            0 => Attempt::Done(0),
            libc::EINPROGRESS | libc::EAGAIN | libc::EINTR => Attempt::WouldBlock,
            e => Attempt::Done(-e),
        };
    }
    // SAFETY: `fd` is open for this call (its connect is in flight).
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    match socket2::SockRef::from(&sock).take_error() {
        Err(e) => return Attempt::Done(-e.raw_os_error().unwrap_or(libc::EIO)),
        Ok(Some(e)) => return Attempt::Done(-e.raw_os_error().unwrap_or(libc::EIO)),
        Ok(None) => {}
    }
    // Writable with no error: connected, unless the handshake is still on.
    // SAFETY: `ss`/`sl` are valid out-parameters for getpeername.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut sl = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    if unsafe { libc::getpeername(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut sl) }
        == 0
    {
        Attempt::Done(0)
    } else {
        match errno() {
            libc::ENOTCONN => Attempt::WouldBlock,
            e => Attempt::Done(-e),
        }
    }
}

fn offset_arg(op: &OpIo) -> libc::off_t {
    let offset = if op.kind == OpKind::Write {
        op.out_offset()
    } else {
        op.offset
    };
    if offset == OFFSET_CURRENT {
        -1
    } else {
        offset as libc::off_t
    }
}

/// Read/write on a pollable fd with `RWF_NOWAIT`; falls back to a readiness
/// check when the fd does not support it.
fn nowait_rw(op: &mut OpIo) -> Attempt {
    let fd = op.fd.raw;
    // Pipes, FIFOs, sockets and character devices have no file position to
    // speak of: an offset is ignored (as io_uring and Windows do), not an
    // `ESPIPE`.
    let off = -1;
    let write = op.kind == OpKind::Write;
    let (out, out_len) = op.out_bytes_or_null();
    let b = op.bufs.one_mut();
    let iov = if write {
        libc::iovec {
            iov_base: out as *mut libc::c_void,
            iov_len: out_len,
        }
    } else {
        libc::iovec {
            iov_base: b.spare_ptr().cast(),
            iov_len: b.spare_capacity(),
        }
    };
    loop {
        // SAFETY: one iovec over the buffer's filled bytes (write) or spare
        // capacity (read).
        let r = unsafe {
            if write {
                libc::pwritev2(fd, &iov, 1, off, libc::RWF_NOWAIT)
            } else {
                libc::preadv2(fd, &iov, 1, off, libc::RWF_NOWAIT)
            }
        };
        if r >= 0 {
            return Attempt::Done(r.min(i32::MAX as isize) as i32);
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Attempt::WouldBlock,
            libc::EOPNOTSUPP => {
                let events = if write { libc::POLLOUT } else { libc::POLLIN };
                return match ready_now(fd, events) {
                    Ok(true) => stream_rw(op),
                    Ok(false) => Attempt::WouldBlock,
                    Err(e) => Attempt::Done(-e),
                };
            }
            e => return Attempt::Done(-e),
        }
    }
}

/// The pool's work: a plain (possibly blocking) read/write at the op's
/// offset on a regular file, or one of the calls that always block.
pub(super) fn blocking_op(op: &mut OpIo) -> Attempt {
    let fd = op.fd.raw;
    let done = |r: libc::c_int| Attempt::Done(if r < 0 { -errno() } else { r });
    match op.kind {
        OpKind::Fsync { data_only } => {
            // SAFETY: plain system calls on the op's fd.
            done(unsafe {
                if data_only {
                    libc::fdatasync(fd)
                } else {
                    libc::fsync(fd)
                }
            })
        }
        OpKind::Fallocate { mode, len } => {
            // SAFETY: plain system call on the op's fd.
            let r =
                unsafe { libc::fallocate(fd, mode, op.offset as libc::off_t, len as libc::off_t) };
            done(if r < 0 { r } else { 0 })
        }
        OpKind::Stat => {
            let ex = op.extra();
            // SAFETY: all-zero is a valid `statx` (plain integers).
            let st = ex
                .stat
                .get_or_insert_with(|| Box::new(unsafe { std::mem::zeroed() }));
            // SAFETY: an empty path with AT_EMPTY_PATH stats `fd` itself;
            // `st` is a writable `statx`.
            done(unsafe {
                libc::statx(
                    fd,
                    c"".as_ptr(),
                    libc::AT_EMPTY_PATH,
                    libc::STATX_BASIC_STATS | libc::STATX_BTIME,
                    &mut **st,
                )
            })
        }
        OpKind::Open { flags, mode } => {
            let path = op
                .extra()
                .path
                .as_ref()
                .map_or(c"".as_ptr(), |p| p.as_ptr());
            // SAFETY: `path` is a NUL-terminated string owned by the op.
            done(unsafe { libc::openat(libc::AT_FDCWD, path, flags | libc::O_CLOEXEC, mode) })
        }
        _ => {
            let off = offset_arg(op);
            rw_at(op, off)
        }
    }
}

/// Runs `f` (a system call on `fd`, returning -1 and `errno` on failure)
/// with `O_NONBLOCK` set on `fd`, restoring its flags afterwards (and
/// `errno` with them). A concurrent blocking call of the user's on the same
/// fd may see `EAGAIN` meanwhile (module docs of `epoll/`).
fn with_nonblocking(fd: RawFd, f: impl FnOnce() -> isize) -> isize {
    // SAFETY: F_GETFL/F_SETFL on an open fd.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return -1;
    }
    if flags & libc::O_NONBLOCK != 0 {
        return f();
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    let r = f();
    let e = errno();
    // SAFETY: as above.
    unsafe {
        libc::fcntl(fd, libc::F_SETFL, flags);
        *libc::__errno_location() = e;
    }
    r
}

/// One splice of a file sent to a socket (`OpKind::SendFile`): fills the
/// pipe from the file (which may wait for the disk), or drains it into the
/// socket without blocking. `attempt` moves between the two
/// (`OpIo::advance`).
fn splice_step(op: &mut OpIo) -> Attempt {
    let sock = op.fd.raw;
    let (done, offset) = (op.done, op.offset);
    let Some(s) = op.extra.as_mut().and_then(|e| e.splice.as_mut()) else {
        return Attempt::Done(-libc::EINVAL);
    };
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        let r = if s.draining {
            // A splice into a socket waits for room unless the socket itself
            // is non-blocking (`SPLICE_F_NONBLOCK` concerns only the pipe):
            // non-blocking just for the call, as `connect` does, so the fd
            // keeps its mode for the user's own blocking I/O.
            with_nonblocking(sock, || {
                // SAFETY: plain system call on fds the op owns or keeps open.
                unsafe {
                    libc::splice(
                        s.pipe[0].as_raw_fd(),
                        std::ptr::null_mut(),
                        sock,
                        std::ptr::null_mut(),
                        s.in_pipe,
                        flags,
                    )
                }
            })
        } else {
            let mut off = (offset + done as u64) as libc::loff_t;
            let left = (s.len - done as u64).min(SPLICE_CHUNK as u64) as usize;
            // SAFETY: as above; `off` is a valid in/out offset.
            unsafe {
                libc::splice(
                    s.src,
                    &mut off,
                    s.pipe[1].as_raw_fd(),
                    std::ptr::null_mut(),
                    left,
                    flags,
                )
            }
        };
        if r >= 0 {
            return Attempt::Done(r.min(i32::MAX as isize) as i32);
        }
        match errno() {
            libc::EINTR => continue,
            libc::EAGAIN => return Attempt::WouldBlock,
            e => return Attempt::Done(-e),
        }
    }
}

/// A plain read/write at the current position, for a non-seekable fd that
/// reported readiness.
fn stream_rw(op: &mut OpIo) -> Attempt {
    rw_at(op, -1)
}

fn rw_at(op: &mut OpIo, off: libc::off_t) -> Attempt {
    let fd = op.fd.raw;
    let write = op.kind == OpKind::Write;
    let (out, out_len) = op.out_bytes_or_null();
    let b = op.bufs.one_mut();
    loop {
        // SAFETY: the buffer's filled bytes not yet written (write) or
        // spare capacity (read) are valid for the length given.
        let r = unsafe {
            match (write, off) {
                (true, -1) => libc::write(fd, out.cast(), out_len),
                (true, o) => libc::pwrite(fd, out.cast(), out_len, o),
                (false, -1) => libc::read(fd, b.spare_ptr().cast(), b.spare_capacity()),
                (false, o) => libc::pread(fd, b.spare_ptr().cast(), b.spare_capacity(), o),
            }
        };
        if r >= 0 {
            return Attempt::Done(r.min(i32::MAX as isize) as i32);
        }
        match errno() {
            libc::EINTR => continue,
            e => return Attempt::Done(-e),
        }
    }
}
