//! [`FdOwner`]: an associated fd, the backend's state for it, and the
//! registry of the operations in flight on it.
//!
//! # Invariants
//! - An fd number is in [`ASSOCIATED`] from association until its owner is
//!   dropped, which happens only after the last handle clone **and** the
//!   last operation record that uses it are gone. So a double association
//!   (the same open fd owned twice, which only `unsafe` code can arrange)
//!   is refused, and a reused fd number is never confused with the old one.
//! - Every operation in flight on the fd is in `inflight.ops`: registered
//!   before the backend gets it, removed when its packet is built. A cancel
//!   reaches an op only through this map and under its lock, so the record
//!   it names is alive (its packet cannot be built meanwhile) and its
//!   address cannot have been reused by another op.
//! - The lock is held from the registration until the backend has the
//!   operation (`Core::submit`), and `closed` is set under it: a cancel or
//!   a close finds every accepted operation already in the backend, and
//!   nothing is registered after a close.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::sync::{Mutex, MutexGuard};

use std::sync::OnceLock;

use super::lanes::LaneState;
use crate::driver::{FdRef, FdState, OpPtr};

/// Every fd currently owned by some [`FdOwner`], in any port of the process
/// (see the module docs). Held only briefly, with no other lock: plain
/// `parking_lot`, outside the loom models.
static ASSOCIATED: parking_lot::Mutex<BTreeSet<RawFd>> = parking_lot::Mutex::new(BTreeSet::new());

/// Owns an associated fd. Shared by the handle's clones and by every
/// operation in flight on it, so the fd is closed only when the handle is
/// dropped **and** its last operation has completed: an fd number is never
/// reused while the kernel may still act on the old file.
pub(crate) struct FdOwner {
    /// The backend's state for this fd. Dropped before `fd` is closed
    /// (field order), so a backend can deregister the fd in its `Drop`.
    state: FdState,
    /// The operations in flight on this fd (module docs).
    inflight: Mutex<InFlight>,
    /// Whether the fd is a stream (`is_stream`), found on first need.
    stream: OnceLock<bool>,
    fd: OwnedFd,
}

/// Token → operation of the operations in flight on one fd, whether the
/// handle was closed (then nothing new is registered), and the fd's two
/// lanes (`lanes.rs`).
#[derive(Default)]
pub(crate) struct InFlight {
    pub(crate) ops: HashMap<u64, InFlightOp, BuildHasherDefault<TokenHasher>>,
    pub(crate) closed: bool,
    /// Indexed by [`Lane`](super::lanes::Lane).
    pub(crate) lanes: [LaneState; 2],
}

/// One operation in flight.
#[derive(Clone, Copy)]
pub(crate) struct InFlightOp {
    pub(crate) ptr: OpPtr,
    /// A cancel was requested: its `ECANCELED` is the user's, not the
    /// kernel's clean-up of an exited thread (`Core::settle`).
    pub(crate) cancelled: bool,
}

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
    /// Takes ownership of `fd` for a new association. Refused, with the fd
    /// handed back, when it is not open or another owner has it.
    pub(crate) fn new(fd: OwnedFd) -> Result<FdOwner, (io::Error, OwnedFd)> {
        let raw = fd.as_raw_fd();
        // An `OwnedFd` is open by contract; this catches one that unsafe code
        // built from a closed number.
        // SAFETY: F_GETFD only reads the fd's flags.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err((io::Error::last_os_error(), fd));
        }
        if !ASSOCIATED.lock().insert(raw) {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "fd {raw} is already associated with a completion port (a handle belongs to one port for life)"
                ),
            );
            return Err((e, fd));
        }
        Ok(FdOwner {
            state: FdState::default(),
            inflight: Mutex::new(InFlight::default()),
            stream: OnceLock::new(),
            fd,
        })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The fd as the driver sees it. Valid while this owner lives: every
    /// user (an operation record, a cancel under the in-flight lock) keeps
    /// it alive.
    pub(crate) fn driver_fd(&self) -> FdRef {
        // SAFETY: `self.state` lives as long as this owner, which outlives
        // every use of the returned value (see above).
        unsafe { FdRef::new(self.raw(), &self.state) }
    }

    /// Whether the fd is a byte stream whose operations' order matters: a
    /// stream or seqpacket socket, a pipe or FIFO, a character device.
    /// Regular files (positioned I/O), datagram sockets and anything
    /// unknown are not.
    pub(crate) fn is_stream(&self) -> bool {
        *self.stream.get_or_init(|| {
            let fd = self.raw();
            // SAFETY: `st` is written by fstat before it is read.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: `fd` is open (owned here) and `st` is valid.
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return false;
            }
            match st.st_mode & libc::S_IFMT {
                libc::S_IFIFO | libc::S_IFCHR => true,
                libc::S_IFSOCK => matches!(
                    socket2::SockRef::from(&self.fd).r#type(),
                    Ok(socket2::Type::STREAM | socket2::Type::SEQPACKET)
                ),
                _ => false,
            }
        })
    }

    /// The in-flight registry (see the module docs).
    pub(crate) fn inflight(&self) -> MutexGuard<'_, InFlight> {
        self.inflight.lock()
    }
}

impl Drop for FdOwner {
    fn drop(&mut self) {
        // Unregister before closing: until `fd` is closed nobody else can own
        // this number, so no concurrent `associate` can be refused by mistake.
        ASSOCIATED.lock().remove(&self.fd.as_raw_fd());
    }
}
