//! Association: an fd bound to one port, with the completion key that comes
//! back in every packet of its operations.

use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::buf::Buffers;
use crate::core::fd::FdOwner;
use crate::core::record::{Notify, OpRecord, RecordBox};
use crate::core::{CloseFd, Core, Token};
use crate::driver::OpKind;
use crate::error::{invalid_input, Rejected};
use crate::port::{Owner, Port};

/// An association refused: the reason, and the fd handed back open.
#[derive(Debug)]
pub struct AssociateError {
    /// Why the association was refused.
    pub error: io::Error,
    /// The fd the call was given, still open and unassociated.
    pub fd: OwnedFd,
}

impl fmt::Display for AssociateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot associate fd {}: {}",
            self.fd.as_raw_fd(),
            self.error
        )
    }
}

impl std::error::Error for AssociateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<AssociateError> for io::Error {
    fn from(e: AssociateError) -> io::Error {
        e.error
    }
}

pub(crate) fn associate<C: Send + 'static>(
    port: &Arc<Owner<C>>,
    fd: OwnedFd,
    key: usize,
) -> Result<Handle<C>, AssociateError> {
    let core = &port.core;
    if let Some(error) = core.fork_refusal() {
        return Err(AssociateError { error, fd });
    }
    if core.is_closed() {
        return Err(AssociateError {
            error: crate::error::port_closed(),
            fd,
        });
    }
    let owner = FdOwner::new(fd).map_err(|(error, fd)| AssociateError { error, fd })?;
    Ok(Handle {
        inner: Arc::new(HandleInner {
            core: core.clone(),
            closer: core.clone(),
            port: Arc::downgrade(port) as Weak<dyn Any + Send + Sync>,
            owner: Arc::new(owner),
            key,
            skip_on_success: AtomicBool::new(false),
        }),
        without_packets: false,
        timeout: None,
    })
}

/// An fd associated with a port: operations issued on it queue their
/// packets to that port, carrying its completion key.
///
/// Cheap to clone; clones share the fd. Dropping the last clone closes the
/// handle, as `CloseHandle` does: its operations in flight are cancelled
/// (each still yields its packet, with `ECANCELED`), and the fd itself is
/// closed once the last of them is gone — so a peer waiting on an idle
/// connection sees it close, and an fd number is never reused while the
/// kernel may still act on the old file. A clone kept in an operation's
/// context keeps the handle open until that packet is dropped.
///
/// A handle keeps its port's backend alive, but not the port's open state:
/// after [`Port::close`](crate::Port::close) every new operation is
/// refused with the port-closed error, and the fd stays usable for
/// blocking I/O through [`AsFd`].
pub struct Handle<C> {
    inner: Arc<HandleInner<C>>,
    /// Operations issued through this value queue no packet (see
    /// [`Handle::without_packets`]).
    without_packets: bool,
    /// Operations issued through this value time out after this long (see
    /// [`Handle::with_timeout`]).
    timeout: Option<Duration>,
}

struct HandleInner<C> {
    core: Arc<Core<C>>,
    /// The same core, for the drop (which has no bound on `C`).
    closer: Arc<dyn CloseFd>,
    /// The port it was associated with (an `Owner<C>`), while any clone of
    /// it is alive.
    port: Weak<dyn Any + Send + Sync>,
    owner: Arc<FdOwner>,
    key: usize,
    /// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` (see
    /// [`Handle::set_skip_packet_on_success`]).
    skip_on_success: AtomicBool,
}

/// The last clone of a handle is gone: `CloseHandle` (module docs of
/// [`Handle`]).
impl<C> Drop for HandleInner<C> {
    fn drop(&mut self) {
        self.closer.close_fd(&self.owner);
    }
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            inner: self.inner.clone(),
            without_packets: self.without_packets,
            timeout: self.timeout,
        }
    }
}

impl<C> fmt::Debug for Handle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("fd", &self.inner.owner.raw())
            .field("key", &self.inner.key)
            .finish()
    }
}

impl<C> AsFd for Handle<C> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.owner.fd().as_fd()
    }
}

impl<C> AsRawFd for Handle<C> {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.owner.raw()
    }
}

impl<C: Send + 'static> Handle<C> {
    /// The completion key given at association.
    pub fn key(&self) -> usize {
        self.inner.key
    }

    /// The port this handle is associated with; `None` once every clone of
    /// the port was dropped (a handle does not keep its port open: see
    /// [`Port::close`](crate::Port::close)).
    ///
    /// ```
    /// use completion_port::Port;
    /// # fn main() -> std::io::Result<()> {
    /// let port = Port::<()>::new(0)?;
    /// let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// let h = port.associate(a, 7)?;
    /// h.port().expect("the port is alive").post(1, 0, ())?;
    /// assert_eq!(port.get(None)?.key, 1);
    /// drop(port);
    /// assert!(h.port().is_none());
    /// # Ok(()) }
    /// ```
    pub fn port(&self) -> Option<Port<C>> {
        let owner = self.inner.port.upgrade()?.downcast::<Owner<C>>().ok()?;
        Some(Port::from_owner(owner))
    }

    /// Cancels the operation `token` (returned when it was issued on this
    /// handle), from any thread (windows-semantics §6.25, `CancelIoEx(h, ov)`).
    ///
    /// The operation still yields exactly one packet: with `ECANCELED`
    /// (kind `Other`, see [`is_aborted`](crate::is_aborted)) and its buffers,
    /// or with its real result if it finished first. Fails with `NotFound`
    /// ("nothing to cancel: …") when no such operation is in flight on this
    /// handle (it already completed, or belongs to another handle).
    pub fn cancel(&self, token: Token) -> io::Result<()> {
        self.inner
            .core
            .cancel(&self.inner.owner, Some(token))
            .map(|_| ())
    }

    /// Cancels every operation in flight on this handle (`CancelIoEx(h,
    /// NULL)`); each still yields exactly one packet, as with
    /// [`cancel`](Self::cancel). Returns how many were in flight; fails with
    /// `NotFound` when there were none.
    pub fn cancel_all(&self) -> io::Result<usize> {
        self.inner.core.cancel(&self.inner.owner, None)
    }

    /// Closes the handle (`CloseHandle` with I/O pending, windows-semantics §6.26): every
    /// operation in flight is cancelled and still yields its packet, with
    /// its buffers; new operations on this handle (any clone) are refused
    /// with `EBADF`. The fd itself is closed once the last clone is dropped
    /// **and** the last of those packets has been built, so its number
    /// cannot be reused while the kernel may still act on the old file.
    /// Returns how many operations were cancelled; closing again does
    /// nothing and returns 0.
    pub fn close(&self) -> usize {
        self.inner.core.close_fd(&self.inner.owner)
    }

    /// Whether [`close`](Self::close) was called on this handle (or a clone).
    pub fn is_closed(&self) -> bool {
        self.inner.owner.inflight().closed
    }

    /// A clone of this handle whose operations queue **no packet** (the
    /// Rust form of an `OVERLAPPED` whose `hEvent` has its low bit set,
    /// windows-semantics §3.14): each one's result is kept by
    /// its token, to be taken with [`Port::take_result`](crate::Port::take_result)
    /// or waited for with [`Port::wait_result`](crate::Port::wait_result)
    /// (`GetOverlappedResult`). A result nobody takes is kept until the
    /// port closes.
    pub fn without_packets(&self) -> Handle<C> {
        Handle {
            without_packets: true,
            ..self.clone()
        }
    }

    /// A clone of this handle whose operations time out: one not done
    /// `timeout` after its issue call is ended, and its packet comes with
    /// `ETIMEDOUT` (kind `TimedOut`) and its buffers (a receive: nothing
    /// was received; a whole send: some bytes may have been sent). The
    /// handle stays open and usable: time a connection out by closing it
    /// when such a packet comes. Other clones are unaffected; `with_timeout`
    /// on a clone replaces its time-out.
    ///
    /// io_uring arms a linked time-out with each submission; epoll keeps
    /// the deadlines in one ordered map per port, watched by a timerfd.
    /// Either way, no thread per time-out.
    ///
    /// ```
    /// use completion_port::{Buf, Port};
    /// use std::io::ErrorKind;
    /// use std::time::Duration;
    /// # fn main() -> std::io::Result<()> {
    /// let port = Port::<()>::new(0)?;
    /// let (a, _silent_peer) = std::os::unix::net::UnixStream::pair()?;
    /// let conn = port.associate(a, 0)?;
    /// conn.with_timeout(Duration::from_millis(20))
    ///     .recv(Buf::with_capacity(4096), ())?;
    /// let mut p = port.get(None)?;
    /// assert_eq!(p.result.as_ref().unwrap_err().kind(), ErrorKind::TimedOut);
    /// assert_eq!(p.take_buf().unwrap().capacity(), 4096); // the buffer comes back
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Handle<C> {
        Handle {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// Skip-on-success mode (`FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`, spec
    /// §3.13), for this handle and all its clones: an operation that
    /// **succeeds during its issue call** queues no packet; right after the
    /// call, [`Port::take_result`](crate::Port::take_result) with its token
    /// returns its result. Any other operation (pending, or failed) still
    /// yields its packet.
    ///
    /// When an operation counts as immediate: on the epoll backend, when its
    /// first non-blocking attempt, made inside the issue call, succeeds (a
    /// no-op; a receive with data already buffered; a send with room in the
    /// socket buffer; an accept with a connection waiting). On io_uring,
    /// never: the kernel completes an operation after the submission returns
    /// from the caller's point of view, so every operation yields a packet.
    pub fn set_skip_packet_on_success(&self, on: bool) {
        self.inner.skip_on_success.store(on, Ordering::Relaxed);
    }

    /// Where the completion of an op issued through this value goes.
    fn notify(&self) -> Notify {
        if self.without_packets {
            Notify::Result
        } else if self.inner.skip_on_success.load(Ordering::Relaxed) {
            Notify::SkipOnSuccess
        } else {
            Notify::Packet
        }
    }

    /// A no-op that travels through the backend like real I/O and completes
    /// with `Ok(0)`: for tests, benchmarks and waking the pool through the
    /// kernel path.
    pub fn nop(&self, context: C) -> Result<Token, Rejected<C>> {
        self.issue(OpKind::Nop, 0, Buffers::None, context)
    }

    /// Starts an operation: allocates its record and hands it to the backend.
    pub(crate) fn issue(
        &self,
        kind: OpKind,
        offset: u64,
        bufs: Buffers,
        context: C,
    ) -> Result<Token, Rejected<C>> {
        self.issue_as(false, kind, offset, bufs, context, |_| None)
    }

    /// Like [`issue`](Self::issue), after `check` accepted the arguments.
    pub(crate) fn issue_checked(
        &self,
        kind: OpKind,
        offset: u64,
        bufs: Buffers,
        context: C,
        check: impl FnOnce(&Buffers) -> Option<String>,
    ) -> Result<Token, Rejected<C>> {
        self.issue_as(false, kind, offset, bufs, context, check)
    }

    /// Like [`issue_checked`](Self::issue_checked), for a whole transfer
    /// (`send_all`, `write_all_at`, …: see `OpIo::whole`).
    pub(crate) fn issue_whole(
        &self,
        kind: OpKind,
        offset: u64,
        bufs: Buffers,
        context: C,
        check: impl FnOnce(&Buffers) -> Option<String>,
    ) -> Result<Token, Rejected<C>> {
        self.issue_as(true, kind, offset, bufs, context, check)
    }

    /// The three above: `check`, then a record (`whole` or not) to the port.
    fn issue_as(
        &self,
        whole: bool,
        kind: OpKind,
        offset: u64,
        bufs: Buffers,
        context: C,
        check: impl FnOnce(&Buffers) -> Option<String>,
    ) -> Result<Token, Rejected<C>> {
        if let Some(msg) = check(&bufs) {
            return Err(Rejected::new(invalid_input(msg), context, bufs));
        }
        let mut rec = self.new_record(kind, bufs, context);
        rec.io.offset = offset;
        rec.io.whole = whole;
        self.inner.core.submit(rec)
    }

    pub(crate) fn issue_record(&self, rec: RecordBox<C>) -> Result<Token, Rejected<C>> {
        self.inner.core.submit(rec)
    }

    /// The id of the port the handle belongs to (`Core::id`).
    pub(crate) fn port_id(&self) -> u64 {
        self.inner.core.id()
    }

    /// The handle's fd owner.
    pub(crate) fn owner(&self) -> &Arc<FdOwner> {
        &self.inner.owner
    }

    /// A record for an operation of `kind` on this handle.
    pub(crate) fn new_record(&self, kind: OpKind, bufs: Buffers, context: C) -> RecordBox<C> {
        let mut rec = OpRecord::boxed(
            kind,
            &self.inner.owner,
            self.inner.key,
            self.notify(),
            bufs,
            context,
        );
        rec.io.deadline = self.timeout.and_then(|t| Instant::now().checked_add(t));
        rec
    }
}
