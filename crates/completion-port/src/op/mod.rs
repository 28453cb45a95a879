//! Overlapped operations: the heap record an operation lives in while the
//! kernel owns it, and what its completion turns into.
//!
//! # Life of an operation
//! 1. A [`Handle`](crate::Handle) method (`read_at`, `recv`, …; see
//!    [`file`](mod@file) and [`net`]) validates its arguments and allocates an operation
//!    record (`OpRecord`): the fd, the buffers, the caller's context, the
//!    key.
//! 2. The port hands the record to the backend (`Driver::submit` in
//!    `sys/mod.rs`); from then on it belongs to the kernel and nothing in
//!    user space touches it.
//! 3. The backend reports a completion carrying the same pointer exactly
//!    once; the port takes the record back (`OpRecord::from_completion`)
//!    and builds the [`Packet`](crate::Packet) that hands buffers and
//!    context back.
//!
//! Records live in a `RecordBox` (`record.rs`): owned like a `Box`, with
//! memory recycled through a small per-thread cache.

pub mod file;
pub mod net;
mod record;

pub(crate) use record::RecordBox;

use std::io;
use std::mem;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::handle::FdOwner;
use crate::Buf;

/// Identifies one issued operation; the same value comes back in its
/// packet ([`Packet::token`](crate::Packet::token)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub(crate) u64);

impl Token {
    /// The token's number (unique in this process).
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Tokens a thread takes from [`NEXT_TOKEN`] at a time, so that issuing an
/// operation does not touch a process-wide counter every time.
const TOKEN_BLOCK: u64 = 256;

thread_local! {
    /// This thread's unused tokens: `next..end`.
    static TOKENS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// A token never handed out before in this process.
fn next_token() -> Token {
    let from_block = TOKENS
        .try_with(|t| {
            let (mut next, mut end) = t.get();
            if next == end {
                next = NEXT_TOKEN.fetch_add(TOKEN_BLOCK, Ordering::Relaxed);
                end = next + TOKEN_BLOCK;
            }
            t.set((next + 1, end));
            next
        })
        .ok();
    // During thread-local destruction: one at a time.
    Token(from_block.unwrap_or_else(|| NEXT_TOKEN.fetch_add(1, Ordering::Relaxed)))
}

/// What a packet reports: which call produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketKind {
    /// A packet queued by [`Port::post`](crate::Port::post).
    Posted,
    /// [`Handle::nop`](crate::Handle::nop).
    Nop,
    /// `read_at` / `read`.
    Read,
    /// `write_at` / `write`.
    Write,
    /// `recv` / `recv_vectored`.
    Recv,
    /// `send` / `send_vectored`.
    Send,
    /// `accept`: see [`Packet::take_accepted`](crate::Packet::take_accepted).
    Accept,
    /// `connect`.
    Connect,
}

/// The operation, as the backends see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Nop,
    /// Read into the spare capacity at `offset` ([`OFFSET_CURRENT`]: the
    /// file position, for pipes and character devices).
    Read,
    Write,
    Recv,
    Send,
    RecvVectored,
    SendVectored,
    Accept,
    Connect,
}

impl OpKind {
    pub(crate) fn packet_kind(self) -> PacketKind {
        match self {
            OpKind::Nop => PacketKind::Nop,
            OpKind::Read => PacketKind::Read,
            OpKind::Write => PacketKind::Write,
            OpKind::Recv | OpKind::RecvVectored => PacketKind::Recv,
            OpKind::Send | OpKind::SendVectored => PacketKind::Send,
            OpKind::Accept => PacketKind::Accept,
            OpKind::Connect => PacketKind::Connect,
        }
    }
}

/// Where an operation's completion goes (spec §3.13–14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notify {
    /// A packet on the port (the default).
    Packet,
    /// A packet, unless it succeeds during the issue call: then its result
    /// is kept for [`Port::take_result`](crate::Port::take_result) (the
    /// handle is in skip-on-success mode).
    SkipOnSuccess,
    /// Never a packet: its result is kept for
    /// [`Port::take_result`](crate::Port::take_result) /
    /// [`Port::wait_result`](crate::Port::wait_result).
    Result,
}

/// `offset` value meaning "the fd's current position" (what the kernel
/// calls `-1`): used by the stream `read`/`write` of pipes.
pub(crate) const OFFSET_CURRENT: u64 = u64::MAX;

/// The buffers an operation owns.
#[derive(Debug, Default)]
pub(crate) enum Buffers {
    #[default]
    None,
    One(Buf),
    Many(Vec<Buf>),
}

impl Buffers {
    pub(crate) fn take_one(&mut self) -> Option<Buf> {
        match mem::take(self) {
            Buffers::One(b) => Some(b),
            other => {
                *self = other;
                None
            }
        }
    }

    pub(crate) fn take_many(&mut self) -> Vec<Buf> {
        match mem::take(self) {
            Buffers::Many(v) => v,
            other => {
                *self = other;
                Vec::new()
            }
        }
    }

    pub(crate) fn one_mut(&mut self) -> &mut Buf {
        match self {
            Buffers::One(b) => b,
            _ => unreachable!("single-buffer op without its buffer"),
        }
    }

    pub(crate) fn many_mut(&mut self) -> &mut [Buf] {
        match self {
            Buffers::Many(v) => v,
            _ => unreachable!("vectored op without its buffers"),
        }
    }
}

/// The backend-independent part of an operation: everything the kernel
/// reads or writes. Lives inside an [`OpRecord`] (in a [`RecordBox`]); its
/// address is the io_uring `user_data` and must not change while the op is
/// in flight (hence the box).
pub(crate) struct OpIo {
    pub(crate) kind: OpKind,
    pub(crate) fd: RawFd,
    pub(crate) offset: u64,
    pub(crate) bufs: Buffers,
    /// Vectored ops, accept and connect: their larger fields, allocated on
    /// first use ([`extra`](Self::extra)) so that the records of the common
    /// ops stay small.
    pub(crate) extra: Option<Box<OpExtra>>,
    /// Accept: the new socket, once completed.
    pub(crate) accepted: Option<OwnedFd>,
    pub(crate) key: usize,
    pub(crate) token: Token,
    /// Where the completion goes.
    pub(crate) notify: Notify,
    /// Backend scratch: the epoll backend marks a connect it has started.
    pub(crate) started: bool,
    /// Keeps the fd open (and its number reserved) until this op is gone.
    pub(crate) owner: Arc<FdOwner>,
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
}

// SAFETY: the raw pointers in `extra` (`iov`, `msg`) point into memory owned
// by this same record (`bufs`, `extra.iov`); they are only dereferenced by
// the kernel or the backend while the record is in flight, which is never
// concurrent with user access. Moving the record between threads is
// therefore like moving a `Vec<u8>` and its slices together.
unsafe impl Send for OpIo {}

impl OpIo {
    pub(crate) fn new(kind: OpKind, owner: Arc<FdOwner>, key: usize, bufs: Buffers) -> OpIo {
        OpIo {
            kind,
            fd: owner.raw(),
            offset: 0,
            bufs,
            extra: None,
            accepted: None,
            key,
            started: false,
            notify: Notify::Packet,
            token: next_token(),
            owner,
        }
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
            OpKind::SendVectored => self
                .bufs
                .many_mut()
                .iter()
                .map(|b| libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                })
                .collect(),
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
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        let n = res as usize;
        match self.kind {
            OpKind::Read | OpKind::Recv => {
                let b = self.bufs.one_mut();
                // The kernel never reports more than the spare capacity it
                // was given; a zero-byte receive waits for readability and
                // may report a poll mask instead of a count.
                let n = n.min(b.spare_capacity());
                crate::sys::valgrind::mark_defined(b.spare_ptr(), n);
                // SAFETY: the kernel wrote `n` bytes at `len..`, within the
                // spare capacity it was given.
                unsafe { b.advance(n) };
                return Ok(n);
            }
            OpKind::RecvVectored => {
                let mut left = n;
                for b in self.bufs.many_mut() {
                    let take = left.min(b.spare_capacity());
                    crate::sys::valgrind::mark_defined(b.spare_ptr(), take);
                    // SAFETY: the kernel filled the iovecs in order, each up to
                    // its buffer's spare capacity; `take` bytes landed here.
                    unsafe { b.advance(take) };
                    left -= take;
                }
            }
            OpKind::Accept => {
                if let Some(ex) = &self.extra {
                    // The kernel wrote the peer address and its length.
                    crate::sys::valgrind::mark_defined(
                        (&ex.addr_len as *const libc::socklen_t).cast(),
                        std::mem::size_of::<libc::socklen_t>(),
                    );
                    let len =
                        (ex.addr_len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
                    crate::sys::valgrind::mark_defined(
                        (&ex.addr as *const libc::sockaddr_storage).cast(),
                        len,
                    );
                }
                // SAFETY: a successful accept returns a new fd that nobody
                // else owns.
                self.accepted = Some(unsafe { OwnedFd::from_raw_fd(res) });
                return Ok(0);
            }
            OpKind::Connect | OpKind::Nop => return Ok(0),
            OpKind::Write | OpKind::Send | OpKind::SendVectored => {}
        }
        Ok(n)
    }
}

/// An operation in flight: [`OpIo`] first (backends only ever see a
/// pointer to it), then the caller's context.
#[repr(C)]
pub(crate) struct OpRecord<C> {
    /// Must stay the first field: backends get `*mut OpIo` and the port
    /// casts it back to `*mut OpRecord<C>`.
    pub(crate) io: OpIo,
    /// `Some` until the packet is built.
    pub(crate) ctx: Option<C>,
}

impl<C> OpRecord<C> {
    pub(crate) fn boxed(io: OpIo, ctx: C) -> RecordBox<C> {
        RecordBox::new(OpRecord { io, ctx: Some(ctx) })
    }

    /// Takes back a record that a backend reported complete.
    ///
    /// # Safety
    /// `io` must come from [`RecordBox::into_raw`] of a `RecordBox<C>` (with
    /// this same `C`) whose ownership was handed to the backend, and the
    /// backend must report it exactly once.
    pub(crate) unsafe fn from_completion(io: std::ptr::NonNull<OpIo>) -> RecordBox<C> {
        // SAFETY: `OpRecord<C>` is `repr(C)` with `io` first, so the two
        // pointers are equal; ownership comes back exactly once per the
        // caller's contract.
        unsafe { RecordBox::from_raw(io.cast::<OpRecord<C>>()) }
    }
}

/// A socket accepted by [`Handle::accept`](crate::Handle::accept): not yet
/// associated with any port.
#[derive(Debug)]
pub struct Accepted {
    /// The new connection.
    pub socket: socket2::Socket,
    /// The peer's address.
    pub peer: socket2::SockAddr,
}
