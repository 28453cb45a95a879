//! The driver: the contract between the port core and the OS backends, and
//! the backends themselves. Everything kernel-specific lives below this
//! module; the core (`core/`) sees only the types defined here and the
//! [`Driver`] that dispatches to one [`Engine`].
//!
//! # What a backend is given
//! - An operation, as an [`OpPtr`] to an [`OpIo`] (`op.rs`): its kind, its
//!   fd ([`FdRef`]: the number and the backend's own [`FdState`] for it),
//!   its offset and its buffers. Backend-neutral: no context type, no
//!   completion key, no notion of packets.
//! - Per fd, an [`FdState`] it may fill on first use (the epoll backend's
//!   registration and operation queues). It lives in the core's per-fd
//!   owner and is dropped before the fd is closed, so a backend can
//!   deregister the fd in its `Drop`.
//!
//! # What a backend reports
//! A [`Completion`] per operation: the same [`OpPtr`] and the raw result
//! (`>= 0` a count or an fd, `< 0` `-errno`). The core applies it to the
//! buffers ([`OpIo::complete`]) and builds the packet. Ownership of the
//! operation goes to the backend with a successful `submit` and comes back
//! with its completion, exactly once.
//!
//! A pooled receive ([`OpKind::RecvPooled`], `pool.rs`) takes a buffer of
//! its op's pool only when data is there (io_uring: the kernel picks it
//! from the pool's buffer ring and names it in the CQE's flags; epoll: the
//! backend takes one from the free list). Before reporting such an op the
//! backend hands the buffer's id and the result to [`OpIo::pool_took`],
//! which keeps the buffer for the packet or frees it; the raw result of an
//! empty pool is `-ENOBUFS`.
//!
//! # The contract ([`Engine`])
//! - `submit(op, defer)`: take the operation and start it. Either it is
//!   accepted — [`Submitted::Queued`], then reported **exactly once**
//!   later, whatever happens (success, failure, cancel), or
//!   [`Submitted::Done`] with its result when it finished inside the call
//!   (the core then builds its packet: nothing is reported later) — or the
//!   call fails and the op was not taken. After `shutdown` every submit
//!   fails with [`closed`]. With `defer`, a backend that batches
//!   ([`Engine::can_defer`]) may leave the op in its submission queue
//!   without entering the kernel; it is then submitted by the next
//!   `flush`, `wait`, or any other submission.
//! - `flush()`: submit every op left pending by a deferred `submit`.
//! - `wait(deadline)`: block until at least one completion, a `wake`, or
//!   the deadline. Called by one thread at a time (the port's *leader*).
//!   When it enters the kernel it submits the pending ops in the same call.
//! - `reap()`: collect completions without blocking; callable from any
//!   thread, concurrently with `wait`. If it consumes a wake-up meant for
//!   the leader it says so ([`Reaped::swallowed_wake`]), and the core sends
//!   another if still needed.
//! - `poll()`: what `wait` does, without blocking: collect completions and
//!   do the work the leader's wait would do (epoll: run the operations
//!   whose fds are ready). For when no leader waits (the monitor's progress
//!   duty, and fairness when the queue never empties); never concurrent
//!   with `wait` (the core calls it only while nobody leads). Reports a
//!   consumed wake-up like `reap`.
//! - `wake()`: make the current (or next) `wait` return soon. Any thread.
//! - `cancel(fd, targets, all)`: ask the kernel to cancel `targets`
//!   (every op of `fd` when `all`); each is still reported exactly once,
//!   with `-ECANCELED` or its real result if it finished first. The core
//!   calls it holding the fd's in-flight lock, so every target is alive and
//!   its address cannot be reused before the request is made.
//! - `resubmit(ops)`: start again operations that were reported
//!   `-ECANCELED` although nobody cancelled them. io_uring cancels the
//!   requests of a thread that exits; on Windows (and here) an operation
//!   outlives the thread that issued it. The core, which owns the in-flight
//!   registry, decides which completions are such orphans; the backend
//!   only re-issues them. Returns, per op, whether it was taken back into
//!   flight (the others are reported as they were).
//! - `shutdown()`: refuse new submissions and ask the kernel to cancel
//!   everything in flight; the cancelled ops are still reported.
//!
//! Calls that may collect completions as a side effect (a `submit` when the
//! kernel pushes back) hand them over through a `spill` vector, so no
//! completion is ever held where the core cannot see it.
//!
//! # The backends
//! Each is a module with the same shape: `uring/` ([`uring::Ring`], the
//! primary) and `epoll/` ([`epoll::Reactor`], the fallback), plus, under
//! `cfg(loom)`, `model.rs` (a model engine for the loom tests of the core).

mod op;
mod pool;
mod valgrind;

pub(crate) mod epoll;
#[cfg(loom)]
pub(crate) mod model;
pub(crate) mod uring;

use std::fmt;
use std::io;
use std::sync::OnceLock;
use std::time::Instant;

pub(crate) use self::op::{
    FdRef, KernelTimespec, OpIo, OpKind, OpPtr, Splice, OFFSET_CURRENT, SPLICE_CHUNK,
};
pub use self::pool::PooledBuf;
pub(crate) use self::pool::{PoolOp, PoolShared};
pub(crate) use self::valgrind::mark_defined;

/// One finished operation, as reported by a backend.
pub(crate) struct Completion {
    /// The operation handed to `submit`.
    pub(crate) op: OpPtr,
    /// `>= 0`: bytes (or the new fd of an accept); `< 0`: `-errno`.
    pub(crate) res: i32,
}

/// What became of an operation handed to [`Engine::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Submitted {
    /// In flight: it will be reported once, later.
    Queued,
    /// Finished inside the call with this raw result; it will not be
    /// reported (the caller owns the operation again).
    Done(i32),
}

/// What [`Engine::reap`] did besides collecting completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use]
pub(crate) struct Reaped {
    /// It consumed a wake-up meant for the leader, who will not see it.
    pub(crate) swallowed_wake: bool,
    /// It collected everything the kernel had finished: a non-blocking
    /// wait right after would collect nothing more. Always true of `poll`;
    /// true of io_uring's `reap` (the kernel posts to the CQ by itself);
    /// false of epoll's, which takes finished operations without asking
    /// the kernel which fds are ready. The monitor counts only such
    /// collections as progress (`core/progress.rs`).
    pub(crate) complete: bool,
}

/// The backends' state for one fd (see the module docs). Only the backend
/// the fd's port runs fills its part.
#[derive(Default)]
pub(crate) struct FdState {
    /// The epoll backend: registration and per-direction queues.
    epoll: OnceLock<epoll::Registration>,
    /// The io_uring backend: the fd's fixed-file slot (`uring/files.rs`).
    uring: OnceLock<uring::FixedFile>,
    /// The io_uring backend: whether the fd is a TCP socket (zero-copy
    /// sends qualify), checked at its first large send.
    pub(crate) uring_tcp: OnceLock<bool>,
}

/// Timer operations ([`OpKind::Timer`]) fire on this grid: up to this much
/// after their deadline, never before, so that timers due close together
/// share one kernel wake-up (a tick costs an interrupt and a system call;
/// 100 000 timers spread over 200 ms cost 2.6 µs of CPU each on a 1 µs
/// grid and 1.4 µs on this one: BENCHMARKS.md, "Timers"). Both backends use
/// it, so a timer is as late on either. Operations' own time-outs
/// (`OpIo::deadline` of other kinds) are not rounded.
pub(crate) const TIMER_GRANULARITY: std::time::Duration = std::time::Duration::from_micros(250);

/// The error every call makes after `shutdown`: the port is closed.
pub(crate) fn closed() -> io::Error {
    crate::error::port_closed()
}

/// The contract every backend implements (module docs).
pub(crate) trait Engine: Send + Sync {
    /// Whether `submit` with `defer` can leave an op pending.
    fn can_defer(&self) -> bool;
    /// Whether operations of one direction on one stream fd (sends;
    /// receives) complete in the order they were submitted. If not, the
    /// core submits them one at a time (`core/lanes.rs`).
    fn orders_per_fd(&self) -> bool;
    /// Takes `op` and starts it; see the module docs.
    fn submit(&self, op: OpPtr, defer: bool, spill: &mut Vec<Completion>) -> io::Result<Submitted>;
    /// Submits the ops deferred submissions left pending.
    fn flush(&self, spill: &mut Vec<Completion>);
    /// Leader only: waits for completions, a wake-up or the deadline.
    fn wait(&self, deadline: Option<Instant>, out: &mut Vec<Completion>) -> io::Result<()>;
    /// Collects ready completions without blocking.
    fn reap(&self, out: &mut Vec<Completion>) -> Reaped;
    /// Does what `wait` does, without blocking (nobody leads).
    fn poll(&self, out: &mut Vec<Completion>) -> Reaped;
    /// Makes the current (or next) `wait` return soon.
    fn wake(&self, spill: &mut Vec<Completion>);
    /// Asks the kernel to cancel `targets` (every op of `fd` when `all`).
    fn cancel(
        &self,
        fd: FdRef,
        targets: &[OpPtr],
        all: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()>;
    /// Starts again operations the kernel cancelled on its own.
    fn resubmit(&self, ops: &[OpPtr], spill: &mut Vec<Completion>) -> Vec<bool>;
    /// Refuses new submissions and cancels everything in flight.
    fn shutdown(&self, spill: &mut Vec<Completion>);
    /// Zero-copy sends reported, and how many of them the kernel copied
    /// anyway (io_uring only).
    fn zerocopy_counts(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// Which engine runs a port's I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// Choose automatically: io_uring, or epoll when io_uring cannot be used
    /// (the reason is logged once through `tracing` and kept in
    /// [`Port::fallback_reason`](crate::Port::fallback_reason)). The
    /// environment variable `CPORT_BACKEND=io_uring|epoll` forces a backend
    /// for tests and benchmarks (`auto` or unset: automatic).
    #[default]
    Auto,
    /// io_uring (Linux 5.19 or newer).
    IoUring,
    /// epoll readiness turned into completions, for where io_uring is
    /// missing or denied.
    Epoll,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Backend::Auto),
            "io_uring" | "io-uring" | "uring" => Ok(Backend::IoUring),
            "epoll" => Ok(Backend::Epoll),
            other => Err(crate::error::invalid_input(format!(
                "unknown backend {other:?} (expected auto, io_uring or epoll)"
            ))),
        }
    }
}

/// Settings a backend is opened with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// Submission queue size (io_uring entries).
    pub(crate) entries: u32,
    /// Slots of the io_uring fixed-file table (`uring/files.rs`); 0: none.
    pub(crate) fixed_files: u32,
    /// Smallest send sent zero-copy (io_uring); 0: never.
    pub(crate) send_zerocopy: usize,
}

/// The engine of one port, and why it is not io_uring when `Auto` fell back.
pub(crate) struct Driver {
    engine: Engines,
    fallback: Option<String>,
}

enum Engines {
    /// Shared (and boxed: the ring is large): a buffer pool keeps it open
    /// until its buffer ring is unregistered (`uring/buf_ring.rs`).
    Uring(std::sync::Arc<uring::Ring>),
    Epoll(epoll::Reactor),
    #[cfg(loom)]
    Model(std::sync::Arc<model::Model>),
}

/// Calls the same [`Engine`] method on whichever engine runs.
macro_rules! dispatch {
    ($self:ident, $e:ident => $call:expr) => {
        match &$self.engine {
            Engines::Uring($e) => $call,
            Engines::Epoll($e) => $call,
            #[cfg(loom)]
            Engines::Model($e) => $call,
        }
    };
}

impl Driver {
    /// Opens the backend asked for; `Auto` reads `CPORT_BACKEND` first, then
    /// tries io_uring and falls back to epoll. An explicit io_uring request
    /// that cannot be met is an error, never a silent fallback.
    pub(crate) fn open(backend: Backend, cfg: Config) -> io::Result<Driver> {
        let backend = match backend {
            Backend::Auto => match std::env::var("CPORT_BACKEND") {
                Ok(v) => v.parse()?,
                Err(_) => Backend::Auto,
            },
            b => b,
        };
        let (engine, fallback) = match backend {
            Backend::IoUring => (
                Engines::Uring(std::sync::Arc::new(uring::Ring::open(cfg)?)),
                None,
            ),
            Backend::Epoll => (Engines::Epoll(epoll::Reactor::open()?), None),
            Backend::Auto => match uring::Ring::open(cfg) {
                Ok(r) => (Engines::Uring(std::sync::Arc::new(r)), None),
                Err(e) => {
                    let reason = e.to_string();
                    log_fallback_once(&reason);
                    (Engines::Epoll(epoll::Reactor::open()?), Some(reason))
                }
            },
        };
        Ok(Driver { engine, fallback })
    }

    /// A driver over the loom model engine (`model.rs`).
    #[cfg(loom)]
    pub(crate) fn model(m: std::sync::Arc<model::Model>) -> Driver {
        Driver {
            engine: Engines::Model(m),
            fallback: None,
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.engine {
            Engines::Uring(_) => Backend::IoUring,
            Engines::Epoll(_) => Backend::Epoll,
            #[cfg(loom)]
            Engines::Model(_) => Backend::Epoll,
        }
    }

    pub(crate) fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The io_uring engine, when it runs (for buffer pools: `buf_pool.rs`).
    pub(crate) fn uring(&self) -> Option<&std::sync::Arc<uring::Ring>> {
        match &self.engine {
            Engines::Uring(r) => Some(r),
            _ => None,
        }
    }
}

impl Engine for Driver {
    fn can_defer(&self) -> bool {
        dispatch!(self, e => e.can_defer())
    }

    fn orders_per_fd(&self) -> bool {
        dispatch!(self, e => e.orders_per_fd())
    }

    fn submit(&self, op: OpPtr, defer: bool, spill: &mut Vec<Completion>) -> io::Result<Submitted> {
        dispatch!(self, e => e.submit(op, defer, spill))
    }

    fn flush(&self, spill: &mut Vec<Completion>) {
        dispatch!(self, e => e.flush(spill))
    }

    fn wait(&self, deadline: Option<Instant>, out: &mut Vec<Completion>) -> io::Result<()> {
        dispatch!(self, e => e.wait(deadline, out))
    }

    fn reap(&self, out: &mut Vec<Completion>) -> Reaped {
        dispatch!(self, e => e.reap(out))
    }

    fn poll(&self, out: &mut Vec<Completion>) -> Reaped {
        dispatch!(self, e => e.poll(out))
    }

    fn wake(&self, spill: &mut Vec<Completion>) {
        dispatch!(self, e => e.wake(spill))
    }

    fn cancel(
        &self,
        fd: FdRef,
        targets: &[OpPtr],
        all: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        dispatch!(self, e => e.cancel(fd, targets, all, spill))
    }

    fn resubmit(&self, ops: &[OpPtr], spill: &mut Vec<Completion>) -> Vec<bool> {
        dispatch!(self, e => e.resubmit(ops, spill))
    }

    fn shutdown(&self, spill: &mut Vec<Completion>) {
        dispatch!(self, e => e.shutdown(spill))
    }

    fn zerocopy_counts(&self) -> (u64, u64) {
        dispatch!(self, e => e.zerocopy_counts())
    }
}

/// Reports the first fallback of the process (later ports fall back for the
/// same reason, and repeating it would only be noise).
fn log_fallback_once(reason: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!("completion-port: io_uring unavailable, using the epoll backend: {reason}")
    });
}
