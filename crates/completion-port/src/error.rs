//! Errors of the port itself (as opposed to the OS errors that packets of
//! failed I/O carry in [`Packet::result`](crate::Packet::result)).

use std::error::Error;
use std::fmt;
use std::io;

use crate::buf::{Buf, Buffers};

/// Why [`Port::get`](crate::Port::get) or
/// [`Port::get_many`](crate::Port::get_many) returned no packet.
///
/// Windows reports these two as `WAIT_TIMEOUT` and `ERROR_ABANDONED_WAIT_0`;
/// here they are distinct variants, so a worker loop can tell "nothing to
/// do yet" from "stop".
#[derive(Debug)]
pub enum GetError {
    /// The time-out passed with no packet for this thread. No packet was
    /// consumed.
    Timeout,
    /// The port is closed (before or during the wait). Nothing more will
    /// ever be dequeued from it.
    Closed,
    /// The backend failed in a way the port could not absorb (for example
    /// the kernel refused memory for the wait). The port stays usable; a
    /// retry may succeed — except in a child forked after the port was
    /// created ([`is_port_forked`]), where it never will.
    Io(io::Error),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Timeout => f.write_str("timed out waiting for a completion packet"),
            GetError::Closed => f.write_str("the completion port is closed"),
            GetError::Io(e) => write!(f, "waiting for completions failed: {e}"),
        }
    }
}

impl Error for GetError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            GetError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<GetError> for io::Error {
    /// `Timeout` becomes `ETIMEDOUT` (kind `TimedOut`), `Closed` becomes
    /// the [port-closed error](is_port_closed).
    fn from(e: GetError) -> io::Error {
        match e {
            GetError::Timeout => io::Error::from_raw_os_error(libc::ETIMEDOUT),
            GetError::Closed => port_closed(),
            GetError::Io(e) => e,
        }
    }
}

/// The payload of the "port is closed" `io::Error`.
#[derive(Debug)]
struct PortClosed;

impl fmt::Display for PortClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the completion port is closed")
    }
}

impl Error for PortClosed {}

/// The error for a call on a closed port (kind `BrokenPipe`: the port is a
/// pipe of packets whose reading end is gone). Test for it with
/// [`is_port_closed`].
pub(crate) fn port_closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, PortClosed)
}

/// Whether `e` says the completion port is closed (as returned when an
/// operation is issued or a packet posted after [`Port::close`](crate::Port::close)),
/// or closed to this process: a port inherited across `fork`, used in the
/// child ([`is_port_forked`]).
pub fn is_port_closed(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<PortClosed>() || inner.is::<PortForked>())
}

/// The payload of the "port inherited across fork" `io::Error`.
#[derive(Debug)]
struct PortForked {
    creator: u32,
    child: u32,
}

impl fmt::Display for PortForked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the completion port belongs to process {}, and process {} is a child forked from \
             it: a port cannot be used across fork (it shares its io_uring or epoll instance \
             with its creator, whose completions the child would take); create a port in the \
             child",
            self.creator, self.child
        )
    }
}

impl Error for PortForked {}

/// The error for any call, in a forked child, on a port that process
/// `creator` created before the fork (kind `Unsupported`; `core/fork.rs`).
pub(crate) fn port_forked(creator: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        PortForked {
            creator,
            child: std::process::id(),
        },
    )
}

/// Whether `e` is the error of a call on a port inherited across `fork`,
/// made in the child: every call fails so (the port's io_uring or epoll
/// instance is shared with the parent); the child may create its own.
/// [`is_port_closed`] is true for it too.
pub fn is_port_forked(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<PortForked>())
}

/// Whether `e` is the error of a cancelled operation (`ECANCELED`, Windows'
/// `ERROR_OPERATION_ABORTED`): after [`Handle::cancel`](crate::Handle::cancel),
/// [`Handle::cancel_all`](crate::Handle::cancel_all) or
/// [`Handle::close`](crate::Handle::close).
pub fn is_aborted(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}

/// The error of a cancel that found nothing to cancel (kind `NotFound`;
/// Windows' `ERROR_NOT_FOUND`), naming what was looked for.
pub(crate) fn nothing_to_cancel(token: Option<u64>) -> io::Error {
    let msg = match token {
        Some(t) => format!(
            "nothing to cancel: operation {t} is not in flight on this handle (it already completed, or was issued on another handle)"
        ),
        None => "nothing to cancel: no operation is in flight on this handle".to_string(),
    };
    io::Error::new(io::ErrorKind::NotFound, msg)
}

/// The error for an operation issued on a closed handle: `EBADF`.
pub(crate) fn handle_closed() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

pub(crate) fn invalid_input(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// An operation or post the port refused at the call: the error, and
/// everything the call was given, handed back untouched. No packet will
/// come for it (windows-semantics §3.13, "failed at once").
///
/// `?` turns it into its `io::Error` (dropping the context and buffers).
pub struct Rejected<C> {
    /// Why the call was refused.
    pub error: io::Error,
    /// The context the call was given.
    pub context: C,
    pub(crate) buffers: Buffers,
}

impl<C> Rejected<C> {
    pub(crate) fn new(error: io::Error, context: C, buffers: Buffers) -> Self {
        Rejected {
            error,
            context,
            buffers,
        }
    }

    /// The single buffer the call was given, if it took one.
    pub fn take_buf(&mut self) -> Option<Buf> {
        self.buffers.take_one()
    }

    /// The buffers of a vectored call (empty for other calls).
    pub fn take_bufs(&mut self) -> Vec<Buf> {
        self.buffers.take_many()
    }

    /// The error, dropping the context and buffers.
    pub fn into_error(self) -> io::Error {
        self.error
    }
}

impl<C> fmt::Debug for Rejected<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<C> fmt::Display for Rejected<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operation refused: {}", self.error)
    }
}

impl<C> Error for Rejected<C> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

impl<C> From<Rejected<C>> for io::Error {
    fn from(r: Rejected<C>) -> io::Error {
        r.error
    }
}

/// The payload of the error of a pooled receive that found its pool empty.
#[derive(Debug)]
struct PoolExhausted {
    /// The pool, described.
    what: String,
}

impl fmt::Display for PoolExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "recv_pooled: data arrived but the buffer pool had no free buffer (ENOBUFS; the pool \
             has {}): the data stays in the socket; drop PooledBufs sooner or make the pool \
             larger, and receive again",
            self.what
        )
    }
}

impl Error for PoolExhausted {}

/// The error of a pooled receive that found its pool (described by
/// `what`) empty when data arrived (kind `OutOfMemory`).
pub(crate) fn pool_exhausted(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::OutOfMemory, PoolExhausted { what })
}

/// Whether `e` is the error of a pooled receive that found its pool empty
/// when data arrived (see [`buf_pool`](crate::buf_pool)).
pub fn is_pool_exhausted(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<PoolExhausted>())
}
