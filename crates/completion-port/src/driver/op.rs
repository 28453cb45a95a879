//! The backend-neutral description of one operation: what the kernel reads
//! and writes ([`OpIo`]), and how its raw result is applied to its buffers
//! ([`OpIo::complete`]).
//!
//! The port core embeds an `OpIo` as the first field of its operation
//! record (`core/record.rs`) and hands backends an [`OpPtr`] to it; a
//! backend builds a submission from it (io_uring: `uring/op.rs`) or tries
//! the system call itself (epoll: `epoll/fd.rs`), and reports the raw
//! result back in a [`Completion`](super::Completion). Nothing here knows
//! the caller's context type, the completion key or where the packet goes.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::valgrind;
use super::{FdState, PoolOp};
use crate::buf::Buffers;

/// The operation, as the backends see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Completes with 0 without touching the fd.
    Nop,
    /// Read into the spare capacity at `offset` ([`OFFSET_CURRENT`]: the
    /// file position, for pipes and character devices).
    Read,
    /// Write the filled bytes at `offset`.
    Write,
    /// Receive into the spare capacity (never empty: refused at issue).
    Recv,
    /// Receive into a buffer of [`OpIo::pool`], picked once data is there
    /// (`buf_pool.rs`).
    RecvPooled,
    /// Complete with 0 once the fd is readable (the zero-byte receive of
    /// IOCP servers: wait for data without lending a buffer).
    Readable,
    /// Send the filled bytes.
    Send,
    /// Receive into the spare capacity of several buffers, in order.
    RecvVectored,
    /// Send the filled bytes of several buffers, in order.
    SendVectored,
    /// Accept a connection (the new fd lands in [`OpIo::accepted`]).
    Accept,
    /// Connect to the address in [`OpExtra::addr`].
    Connect,
    /// Complete with `-ETIME` at [`OpIo::deadline`] (a timer packet; its fd
    /// is the port's own, and is not used).
    Timer,
    /// `fsync(2)`, or `fdatasync(2)` with `data_only`.
    Fsync { data_only: bool },
    /// `fallocate(2)` of `len` bytes at `offset`.
    Fallocate { mode: i32, len: u64 },
    /// `statx(2)` of the fd itself; the result lands in [`OpExtra::stat`].
    Stat,
    /// `shutdown(2)`.
    Shutdown { how: i32 },
    /// `openat(AT_FDCWD, OpExtra::path)`; the new fd lands in
    /// [`OpIo::new_fd`] (its own fd is the port's, and is not used).
    Open { flags: i32, mode: u32 },
    /// File to socket without copying (`TransmitFile`): splices from the
    /// source file into a pipe, then from the pipe into the socket, until
    /// `len` bytes (or the end of the file) went; see [`Splice`].
    SendFile,
}

/// The state of a [`OpKind::SendFile`]: a pipe, filled from the file and
/// drained into the socket, one pipe-full at a time. Each submission is one
/// splice; [`OpIo::advance`] moves between the two.
pub(crate) struct Splice {
    /// `[read end, write end]`.
    pub(crate) pipe: [OwnedFd; 2],
    /// The source file (kept open by the core's record).
    pub(crate) src: RawFd,
    /// Bytes to send in all (the file's end may come first).
    pub(crate) len: u64,
    /// Bytes in the pipe, not yet in the socket.
    pub(crate) in_pipe: usize,
    /// The next splice drains the pipe (else it fills it).
    pub(crate) draining: bool,
    /// Its last splice ended it: [`OpIo::advance`] says so again if asked
    /// twice (by the backend that ran it, then by the core).
    pub(crate) finished: bool,
}

/// How much one fill of the pipe asks for (a pipe holds 64 KiB by default).
pub(crate) const SPLICE_CHUNK: usize = 64 * 1024;

/// `offset` value meaning "the fd's current position" (what the kernel
/// calls `-1`): used by the stream `read`/`write` of pipes.
pub(crate) const OFFSET_CURRENT: u64 = u64::MAX;

/// The fd an operation works on: its number, and the backend's state for
/// it. Both belong to the core's per-fd owner, which the operation's record
/// keeps alive until the operation is reported complete.
#[derive(Clone, Copy)]
pub(crate) struct FdRef {
    pub(crate) raw: RawFd,
    state: NonNull<FdState>,
}

// SAFETY: an address of a `FdState` (which is `Sync`) plus an fd number;
// dereferenced only while its owner is alive (see `FdRef::state`).
unsafe impl Send for FdRef {}
// SAFETY: as above; `state` gives out only shared references.
unsafe impl Sync for FdRef {}

impl FdRef {
    /// # Safety
    /// `state` must stay alive (and at this address) as long as any copy of
    /// this `FdRef` is used: the core builds one from its per-fd owner,
    /// which every operation record and every cancel request keeps alive.
    pub(crate) unsafe fn new(raw: RawFd, state: &FdState) -> FdRef {
        FdRef {
            raw,
            state: NonNull::from(state),
        }
    }

    /// The backend's state for this fd.
    pub(crate) fn state(&self) -> &FdState {
        // SAFETY: alive for as long as this `FdRef` is used (`new`'s
        // contract).
        unsafe { self.state.as_ref() }
    }
}

/// The backend-independent part of an operation: everything the kernel
/// reads or writes. Lives first in the core's operation record (in a
/// `RecordBox`); its address is the io_uring `user_data` and must not change
/// while the op is in flight (hence the box).
pub(crate) struct OpIo {
    pub(crate) kind: OpKind,
    pub(crate) fd: FdRef,
    pub(crate) offset: u64,
    pub(crate) bufs: Buffers,
    /// Vectored ops, accept and connect: their larger fields, allocated on
    /// first use ([`extra`](Self::extra)) so that the records of the common
    /// ops stay small.
    pub(crate) extra: Option<Box<OpExtra>>,
    /// Accept, open: the new fd, once completed.
    pub(crate) new_fd: Option<OwnedFd>,
    /// Send-like ops (send, vectored send, write): complete only when
    /// every byte is transferred, or with an error — never short. The
    /// backend keeps sending the rest (epoll), or the kernel does
    /// (io_uring's `MSG_WAITALL` on stream sockets), and the core resubmits
    /// what is left of a short completion (`Core::settle`).
    pub(crate) whole: bool,
    /// Send-like ops: bytes transferred by earlier submissions or attempts
    /// of this same op (a whole transfer in progress). Each submission
    /// starts after them; a completion's result counts only its own bytes.
    pub(crate) done: usize,
    /// When a timer fires, or when an operation that is still not done is
    /// ended with `-ETIMEDOUT` (its time-out). Backends arm the time left
    /// at each submission.
    pub(crate) deadline: Option<Instant>,
    /// The time left, as the kernel reads it (io_uring's `TIMEOUT` and
    /// `LINK_TIMEOUT` take a pointer to it); written at each submission.
    pub(crate) ts: KernelTimespec,
    /// Pooled receives: the pool, and the buffer the receive delivered
    /// (`buf_pool.rs`). The backend records the buffer it took with
    /// [`pool_took`](Self::pool_took) before it reports the completion.
    pub(crate) pool: Option<PoolOp>,
}

/// `struct __kernel_timespec`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelTimespec {
    pub(crate) sec: i64,
    pub(crate) nsec: i64,
}

impl KernelTimespec {
    fn of(d: Duration) -> KernelTimespec {
        KernelTimespec {
            sec: d.as_secs().min(i64::MAX as u64) as i64,
            nsec: i64::from(d.subsec_nanos()),
        }
    }
}

/// The fields only vectored ops, accept and connect use. Boxed: its
/// address, like the record's, does not change while the op is in flight.
pub(crate) struct OpExtra {
    /// Vectored ops: one entry per buffer, pointing into `bufs`' heap memory.
    pub(crate) iov: Vec<libc::iovec>,
    /// Vectored ops: points at `iov`.
    pub(crate) msg: libc::msghdr,
    /// Accept: the peer address (written by the kernel). Connect: the
    /// address to connect to.
    pub(crate) addr: libc::sockaddr_storage,
    pub(crate) addr_len: libc::socklen_t,
    /// Open: the path.
    pub(crate) path: Option<CString>,
    /// Stat: the result (written by the kernel).
    pub(crate) stat: Option<Box<libc::statx>>,
    /// SendFile: the pipe and the progress.
    pub(crate) splice: Option<Splice>,
}

// SAFETY: the raw pointers in `extra` (`iov`, `msg`) point into memory owned
// by this same record (`bufs`, `extra.iov`), and `fd` into the per-fd owner
// the record keeps alive; they are only dereferenced by the kernel or the
// backend while the record is in flight, which is never concurrent with
// user access. Moving the record between threads is therefore like moving
// a `Vec<u8>` and its slices together.
unsafe impl Send for OpIo {}

/// The address of an operation in flight, as backends hold and report it.
/// Whoever dereferences it must own the operation (the backend, from
/// submission until it reports the completion) or hold the lock that keeps
/// it alive (the fd's in-flight registry in the core).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct OpPtr(pub(crate) NonNull<OpIo>);

// SAFETY: only an address; see the type's docs for who may dereference it.
unsafe impl Send for OpPtr {}

impl OpPtr {
    /// The operation, for the backend that owns it.
    ///
    /// # Safety
    /// The caller owns the operation (it was handed over by `submit` and
    /// not yet reported) and nobody else accesses it during the borrow.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn op(&self) -> &mut OpIo {
        // SAFETY: forwarded to the caller.
        unsafe { &mut *self.0.as_ptr() }
    }

    /// The operation's kind, read in place (never written after issue), so
    /// anyone who keeps the operation alive may look while its owner works
    /// on its other fields.
    ///
    /// # Safety
    /// The operation is alive (see the type's docs).
    pub(crate) unsafe fn kind(&self) -> OpKind {
        // SAFETY: alive (caller); a read of one field, through no reference
        // to the whole record.
        unsafe { (*self.0.as_ptr()).kind }
    }

    /// The `user_data` io_uring carries for this operation: its address.
    pub(crate) fn user_data(&self) -> u64 {
        self.0.as_ptr() as u64
    }
}

impl OpIo {
    pub(crate) fn new(kind: OpKind, fd: FdRef, bufs: Buffers) -> OpIo {
        OpIo {
            kind,
            fd,
            offset: 0,
            bufs,
            extra: None,
            new_fd: None,
            whole: false,
            done: 0,
            deadline: None,
            ts: KernelTimespec::default(),
            pool: None,
        }
    }

    /// A pooled receive took buffer `id` from its pool and ended with
    /// `res`: the op holds the buffer when `res > 0`, else it is freed at
    /// once (`buf_pool.rs`, invariants). Called by the backend that owns
    /// the op, before reporting it.
    pub(crate) fn pool_took(&mut self, id: u16, res: i32) {
        if let Some(p) = self.pool.as_mut() {
            p.deliver(id, res);
        }
    }

    /// Writes the time left until the deadline (none left: zero) into
    /// `ts`, for a submission; `false` when the op has no deadline.
    pub(crate) fn arm_deadline(&mut self) -> bool {
        match self.deadline {
            Some(d) => {
                self.ts = KernelTimespec::of(d.saturating_duration_since(Instant::now()));
                true
            }
            None => false,
        }
    }

    /// Moves a transfer on after a submission's result `res`: a whole send
    /// cut short ([`advance_whole`](Self::advance_whole)), or a file sent
    /// to a socket between its two splices. Returns `true` when the op must
    /// be submitted again (its next step is set up), `false` when `res`
    /// ends it.
    pub(crate) fn advance(&mut self, res: i32) -> bool {
        if self.kind != OpKind::SendFile {
            return self.advance_whole(res);
        }
        let Some(s) = self.extra.as_mut().and_then(|e| e.splice.as_mut()) else {
            return false;
        };
        if res < 0 || s.finished {
            return false;
        }
        let n = res as usize;
        if !s.draining {
            if n == 0 {
                // The end of the file: what was sent is all there is.
                s.finished = true;
                return false;
            }
            s.in_pipe = n;
            s.draining = true;
            return true;
        }
        s.in_pipe -= n.min(s.in_pipe);
        self.done += n;
        if s.in_pipe > 0 {
            return true;
        }
        s.draining = false;
        s.finished = self.done as u64 >= s.len;
        !s.finished
    }

    /// Whether this op transfers the filled bytes of its buffers (send,
    /// vectored send, write).
    pub(crate) fn is_send_like(&self) -> bool {
        matches!(
            self.kind,
            OpKind::Send | OpKind::SendVectored | OpKind::Write
        )
    }

    /// Send-like ops: the bytes to transfer in all.
    pub(crate) fn total(&self) -> usize {
        match &self.bufs {
            Buffers::One(b) => b.len(),
            Buffers::Many(v) => v.iter().map(|b| b.len()).sum(),
            Buffers::None => 0,
        }
    }

    /// Single-buffer send/write: what the next submission transfers (the
    /// filled bytes after `done`).
    pub(crate) fn out_bytes(&mut self) -> (*const u8, usize) {
        let done = self.done;
        let b = self.bufs.one_mut();
        let done = done.min(b.len());
        // SAFETY: `done <= len`, so the pointer stays within the buffer.
        (unsafe { b.as_ptr().add(done) }, b.len() - done)
    }

    /// Like [`out_bytes`](Self::out_bytes) for a write, and a null
    /// pointer and 0 for other ops (which do not send).
    pub(crate) fn out_bytes_or_null(&mut self) -> (*const u8, usize) {
        if self.is_send_like() && matches!(self.bufs, Buffers::One(_)) {
            self.out_bytes()
        } else {
            (std::ptr::null(), 0)
        }
    }

    /// Positioned write: the offset of the next submission (`offset`
    /// advanced by `done`; [`OFFSET_CURRENT`] stays as it is).
    pub(crate) fn out_offset(&self) -> u64 {
        if self.offset == OFFSET_CURRENT {
            self.offset
        } else {
            self.offset + self.done as u64
        }
    }

    /// A whole transfer that `res` (this submission's result) leaves
    /// unfinished: counts the bytes, points the next submission at the
    /// rest, and returns `true`. `false` when it is finished or failed.
    pub(crate) fn advance_whole(&mut self, res: i32) -> bool {
        if !self.whole || res <= 0 || !self.is_send_like() {
            return false;
        }
        let total = self.total();
        if self.done + res as usize >= total {
            return false;
        }
        self.done += res as usize;
        self.prepare();
        true
    }

    /// The vectored/accept/connect fields, zeroed on first use.
    pub(crate) fn extra(&mut self) -> &mut OpExtra {
        self.extra.get_or_insert_with(|| {
            Box::new(OpExtra {
                iov: Vec::new(),
                // SAFETY: all-zero is a valid `msghdr` and `sockaddr_storage`.
                msg: unsafe { mem::zeroed() },
                // SAFETY: as above.
                addr: unsafe { mem::zeroed() },
                addr_len: 0,
                path: None,
                stat: None,
                splice: None,
            })
        })
    }

    /// Points `iov` and `msg` at the buffers. Called once the record is in
    /// its final place, right before submission.
    pub(crate) fn prepare(&mut self) {
        let iov: Vec<libc::iovec> = match self.kind {
            OpKind::RecvVectored => self
                .bufs
                .many_mut()
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.spare_ptr().cast(),
                    iov_len: b.spare_capacity(),
                })
                .collect(),
            OpKind::SendVectored => {
                // The filled bytes after the first `done` of them.
                let mut skip = self.done;
                self.bufs
                    .many_mut()
                    .iter()
                    .filter_map(|b| {
                        let s = skip.min(b.len());
                        skip -= s;
                        (s < b.len()).then(|| libc::iovec {
                            // SAFETY: `s < len`: within the buffer.
                            iov_base: unsafe { b.as_ptr().add(s) } as *mut libc::c_void,
                            iov_len: b.len() - s,
                        })
                    })
                    .collect()
            }
            _ => return,
        };
        let ex = self.extra();
        ex.iov = iov;
        ex.msg.msg_iov = ex.iov.as_mut_ptr();
        ex.msg.msg_iovlen = ex.iov.len();
    }

    /// Applies the kernel's result (`>= 0`: a count or an fd; `< 0`:
    /// `-errno`) to the buffers and returns the packet's result.
    pub(crate) fn complete(&mut self, res: i32) -> io::Result<usize> {
        if self.kind == OpKind::Timer && res == -libc::ETIME {
            // It fired.
            return Ok(0);
        }
        if self.kind == OpKind::RecvPooled {
            return self.complete_pooled(res);
        }
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        if self.kind == OpKind::SendFile {
            // `advance` counted every drained byte.
            return Ok(self.done);
        }
        let n = res as usize;
        match self.kind {
            OpKind::Read | OpKind::Recv => {
                let b = self.bufs.one_mut();
                // The kernel never reports more than the spare capacity it
                // was given; a zero-byte receive waits for readability and
                // may report a poll mask instead of a count.
                let n = n.min(b.spare_capacity());
                valgrind::mark_defined(b.spare_ptr(), n);
                // SAFETY: the kernel wrote `n` bytes at `len..`, within the
                // spare capacity it was given.
                unsafe { b.advance(n) };
                return Ok(n);
            }
            OpKind::RecvVectored => {
                let mut left = n;
                for b in self.bufs.many_mut() {
                    let take = left.min(b.spare_capacity());
                    valgrind::mark_defined(b.spare_ptr(), take);
                    // SAFETY: the kernel filled the iovecs in order, each up to
                    // its buffer's spare capacity; `take` bytes landed here.
                    unsafe { b.advance(take) };
                    left -= take;
                }
            }
            OpKind::Accept => {
                if let Some(ex) = &self.extra {
                    // The kernel wrote the peer address and its length.
                    valgrind::mark_defined(
                        (&ex.addr_len as *const libc::socklen_t).cast(),
                        mem::size_of::<libc::socklen_t>(),
                    );
                    let len = (ex.addr_len as usize).min(mem::size_of::<libc::sockaddr_storage>());
                    valgrind::mark_defined((&ex.addr as *const libc::sockaddr_storage).cast(), len);
                }
                // SAFETY: a successful accept returns a new fd that nobody
                // else owns.
                self.new_fd = Some(unsafe { OwnedFd::from_raw_fd(res) });
                return Ok(0);
            }
            OpKind::Open { .. } => {
                // SAFETY: a successful open returns a new fd that nobody
                // else owns.
                self.new_fd = Some(unsafe { OwnedFd::from_raw_fd(res) });
                return Ok(0);
            }
            OpKind::Stat => {
                if let Some(st) = self.extra.as_ref().and_then(|e| e.stat.as_deref()) {
                    valgrind::mark_defined(
                        (st as *const libc::statx).cast(),
                        mem::size_of::<libc::statx>(),
                    );
                }
                return Ok(0);
            }
            OpKind::Connect
            | OpKind::Nop
            | OpKind::Readable
            | OpKind::Fsync { .. }
            | OpKind::Fallocate { .. }
            | OpKind::Shutdown { .. } => return Ok(0),
            OpKind::Timer | OpKind::SendFile | OpKind::RecvPooled => unreachable!("handled above"),
            // Earlier submissions of a whole transfer count too.
            OpKind::Write | OpKind::Send | OpKind::SendVectored => return Ok(self.done + n),
        }
        Ok(n)
    }

    /// [`complete`](Self::complete) for a pooled receive: the count of the
    /// bytes in the buffer it holds, `Ok(0)` at end of stream, or the error
    /// (an empty pool named as such).
    fn complete_pooled(&mut self, res: i32) -> io::Result<usize> {
        let Some(p) = self.pool.as_ref() else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        match res {
            r if r == -libc::ENOBUFS => Err(p.exhausted()),
            r if r < 0 => Err(io::Error::from_raw_os_error(-r)),
            0 => Ok(0),
            // A count without a buffer cannot come from either backend.
            _ if !p.holds() => Err(io::Error::from_raw_os_error(libc::EIO)),
            r => Ok(r as usize),
        }
    }
}
