//! Association: an fd bound to one port, with the completion key that comes
//! back in every packet of its operations.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::error::{invalid_input, Rejected};
use crate::op::{Buffers, Notify, OpIo, OpKind, OpRecord, RecordBox, Token};
use crate::port::core::Core;

/// Every fd currently owned by some handle, in any port of the process.
/// An fd number is in here from association until the last operation that
/// uses it has completed and the fd is closed, so a double association (the
/// same open fd owned twice, which only `unsafe` code can arrange) is
/// refused, and a reused fd number is never confused with the old one.
static ASSOCIATED: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// Owns an associated fd. Shared by the handle's clones and by every
/// operation in flight on it, so the fd is closed only when the handle is
/// dropped **and** its last operation has completed: an fd number is never
/// reused while the kernel may still act on the old file.
pub(crate) struct FdOwner {
    /// Per-fd state a backend attaches on first use (the epoll backend's
    /// registration and operation queues). Dropped before `fd` is closed
    /// (field order), so a backend can deregister the fd in its `Drop`.
    backend: OnceLock<Box<dyn Any + Send + Sync>>,
    /// The operations in flight on this fd, by token: registered before
    /// submission, removed when their packet is built. Cancellation reaches
    /// an op only through this map and under its lock, so the record it
    /// names is alive (its packet cannot be built meanwhile) and its address
    /// cannot have been reused by another op.
    inflight: Mutex<InFlight>,
    fd: OwnedFd,
}

/// Token → record of the operations in flight on one fd, and whether the
/// handle was closed (then nothing new is registered).
#[derive(Default)]
pub(crate) struct InFlight {
    pub(crate) ops: HashMap<u64, InFlightOp, BuildHasherDefault<TokenHasher>>,
    pub(crate) closed: bool,
}

/// One operation in flight.
#[derive(Clone, Copy)]
pub(crate) struct InFlightOp {
    pub(crate) ptr: OpPtr,
    /// A cancel was requested: its `ECANCELED` is the user's, not the
    /// kernel's clean-up of an exited thread (see `sys/uring`).
    pub(crate) cancelled: bool,
}

/// The address of an operation record in flight.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpPtr(pub(crate) NonNull<OpIo>);

// SAFETY: only an address; whoever dereferences it must own the record or
// hold the `inflight` lock that keeps it alive (see `FdOwner::inflight`).
unsafe impl Send for OpPtr {}

/// Tokens are unique integers: one multiply spreads them over the table's
/// control bits (an identity hash would leave the high bits all zero).
#[derive(Default)]
pub(crate) struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl FdOwner {
    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The in-flight registry (see the field's docs).
    pub(crate) fn inflight(&self) -> parking_lot::MutexGuard<'_, InFlight> {
        self.inflight.lock()
    }

    /// The backend's state for this fd, if it made one.
    pub(crate) fn existing_backend_state<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.backend.get()?.downcast_ref::<T>()
    }

    /// The backend's state for this fd, created by `init` on first use.
    pub(crate) fn backend_state<T: Any + Send + Sync>(
        &self,
        init: impl FnOnce() -> T,
    ) -> Option<&T> {
        self.backend
            .get_or_init(|| Box::new(init()))
            .downcast_ref::<T>()
    }
}

impl Drop for FdOwner {
    fn drop(&mut self) {
        // Unregister before closing: until `fd` is closed nobody else can own
        // this number, so no concurrent `associate` can be refused by mistake.
        ASSOCIATED.lock().remove(&self.fd.as_raw_fd());
    }
}

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
    core: &Arc<Core<C>>,
    fd: OwnedFd,
    key: usize,
) -> Result<Handle<C>, AssociateError> {
    let raw = fd.as_raw_fd();
    if core.is_closed() {
        return Err(AssociateError {
            error: crate::error::port_closed(),
            fd,
        });
    }
    // An `OwnedFd` is open by contract; this catches one that unsafe code
    // built from a closed number.
    // SAFETY: F_GETFD only reads the fd's flags.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(AssociateError {
            error: io::Error::last_os_error(),
            fd,
        });
    }
    if !ASSOCIATED.lock().insert(raw) {
        return Err(AssociateError {
            error: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {raw} is already associated with a completion port (a handle belongs to one port for life)"),
            ),
            fd,
        });
    }
    Ok(Handle {
        inner: Arc::new(HandleInner {
            core: core.clone(),
            owner: Arc::new(FdOwner {
                backend: OnceLock::new(),
                inflight: Mutex::new(InFlight::default()),
                fd,
            }),
            key,
            skip_on_success: AtomicBool::new(false),
        }),
        without_packets: false,
    })
}

/// An fd associated with a port: operations issued on it queue their
/// packets to that port, carrying its completion key.
///
/// Cheap to clone; clones share the fd. The fd is closed when the last
/// clone is dropped and the last operation on it has completed. A handle
/// keeps its port's backend alive, but not the port's open state: after
/// [`Port::close`](crate::Port::close) every new operation is refused with the port-closed
/// error, and the fd stays usable for blocking I/O through [`AsFd`].
pub struct Handle<C> {
    inner: Arc<HandleInner<C>>,
    /// Operations issued through this value queue no packet (see
    /// [`Handle::without_packets`]).
    without_packets: bool,
}

struct HandleInner<C> {
    core: Arc<Core<C>>,
    owner: Arc<FdOwner>,
    key: usize,
    /// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` (see
    /// [`Handle::set_skip_packet_on_success`]).
    skip_on_success: AtomicBool,
}

impl<C> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Handle {
            inner: self.inner.clone(),
            without_packets: self.without_packets,
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
        self.inner.owner.fd.as_fd()
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

    /// Cancels the operation `token` (returned when it was issued on this
    /// handle), from any thread (spec §6.25, `CancelIoEx(h, ov)`).
    ///
    /// The operation still yields exactly one packet: with `ECANCELED`
    /// (kind `Other`, see [`is_aborted`](crate::is_aborted)) and its buffers,
    /// or with its real result if it finished first. Fails with `NotFound`
    /// (`ENOENT`) when no such operation is in flight on this handle (it
    /// already completed, or belongs to another handle).
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

    /// Closes the handle (`CloseHandle` with I/O pending, spec §6.26): every
    /// operation in flight is cancelled and still yields its packet, with
    /// its buffers; new operations on this handle (any clone) are refused
    /// with `EBADF`. The fd itself is closed once the last clone is dropped
    /// **and** the last of those packets has been built, so its number
    /// cannot be reused while the kernel may still act on the old file.
    /// Returns how many operations were cancelled; closing again does
    /// nothing and returns 0.
    pub fn close(&self) -> usize {
        {
            let mut reg = self.inner.owner.inflight();
            if reg.closed {
                return 0;
            }
            reg.closed = true;
        }
        self.cancel_all().unwrap_or(0)
    }

    /// Whether [`close`](Self::close) was called on this handle (or a clone).
    pub fn is_closed(&self) -> bool {
        self.inner.owner.inflight().closed
    }

    /// A clone of this handle whose operations queue **no packet** (the
    /// `hEvent` low-bit analogue, spec §3.14): each one's result is kept by
    /// its token, to be taken with [`Port::take_result`](crate::Port::take_result)
    /// or waited for with [`Port::wait_result`](crate::Port::wait_result)
    /// (`GetOverlappedResult`). A result nobody takes is kept until the
    /// port closes.
    pub fn without_packets(&self) -> Handle<C> {
        Handle {
            inner: self.inner.clone(),
            without_packets: true,
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
        let mut io = self.new_io(kind, bufs);
        io.offset = offset;
        self.inner.core.submit(OpRecord::boxed(io, context))
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
        if let Some(msg) = check(&bufs) {
            return Err(Rejected::new(invalid_input(msg), context, bufs));
        }
        self.issue(kind, offset, bufs, context)
    }

    pub(crate) fn issue_record(&self, rec: RecordBox<C>) -> Result<Token, Rejected<C>> {
        self.inner.core.submit(rec)
    }

    pub(crate) fn new_io(&self, kind: OpKind, bufs: Buffers) -> OpIo {
        let mut io = OpIo::new(kind, self.inner.owner.clone(), self.inner.key, bufs);
        io.notify = self.notify();
        io
    }
}
