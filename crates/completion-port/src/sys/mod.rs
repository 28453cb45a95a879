//! OS backends. Everything kernel-specific lives below this module; the
//! port core (`port/`) only sees [`Driver`].
//!
//! # The backend contract
//! A backend turns operations into completions. It provides:
//! - `submit(op)`: take ownership of an operation record (`*mut OpIo`) and
//!   start it. Either the op is accepted — and then reported **exactly once**
//!   as a [`Completion`], whatever happens (success, failure, cancel) — or
//!   the call fails and the op was not taken. After `shutdown` every submit
//!   fails with the port-closed error. With `defer`, a backend that batches
//!   (io_uring: see [`Driver::can_defer`]) may queue the op without entering
//!   the kernel; it is then submitted by the next `flush`, `wait`, or any
//!   other submission.
//! - `flush()`: submit every op left pending by a deferred `submit`.
//! - `wait(deadline)`: block until at least one completion, a `wake`, or the
//!   deadline. Called by one thread at a time (the port's *leader*). When it
//!   enters the kernel it submits the pending ops in the same call.
//! - `reap()`: collect completions without blocking; callable from any
//!   thread, concurrently with `wait`. If it consumes a wake-up meant for
//!   the leader it says so, and the port sends another if still needed.
//! - `wake()`: make the current (or next) `wait` return soon. Any thread.
//! - `cancel(ops)`: ask the kernel to cancel ops in flight on one fd; each
//!   is still reported exactly once.
//! - `shutdown()`: refuse new submissions and ask the kernel to cancel
//!   everything in flight; the cancelled ops are still reported.
//!
//! Calls that may collect completions as a side effect (`submit` when the
//! kernel pushes back) hand them over through a `spill` vector, so no
//! completion is ever held where the port cannot see it.

pub(crate) mod epoll;
pub(crate) mod uring;
pub(crate) mod valgrind;

use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::time::Instant;

use crate::handle::{FdOwner, OpPtr};
use crate::op::OpIo;

/// One finished operation, as reported by a backend.
pub(crate) struct Completion {
    /// The record handed to `submit`.
    pub(crate) op: NonNull<OpIo>,
    /// `>= 0`: bytes (or the new fd of an accept); `< 0`: `-errno`.
    pub(crate) res: i32,
}

// SAFETY: a completion transfers ownership of its op record (which is
// `Send`) to whichever thread builds the packet.
unsafe impl Send for Completion {}

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
}

/// The engine of one port, and why it is not io_uring when `Auto` fell back.
pub(crate) struct Driver {
    engine: Engine,
    fallback: Option<String>,
}

enum Engine {
    /// Boxed: the ring is large and the enum is moved around at open.
    Uring(Box<uring::Ring>),
    Epoll(epoll::Reactor),
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
            Backend::IoUring => (Engine::Uring(Box::new(uring::Ring::open(cfg)?)), None),
            Backend::Epoll => (Engine::Epoll(epoll::Reactor::open()?), None),
            Backend::Auto => match uring::Ring::open(cfg) {
                Ok(r) => (Engine::Uring(Box::new(r)), None),
                Err(e) => {
                    let reason = e.to_string();
                    log_fallback_once(&reason);
                    (Engine::Epoll(epoll::Reactor::open()?), Some(reason))
                }
            },
        };
        Ok(Driver { engine, fallback })
    }

    pub(crate) fn backend(&self) -> Backend {
        match self.engine {
            Engine::Uring(_) => Backend::IoUring,
            Engine::Epoll(_) => Backend::Epoll,
        }
    }

    pub(crate) fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Whether `submit` with `defer` can leave an op pending (io_uring); the
    /// epoll backend tries every op at once, so it has nothing to defer.
    pub(crate) fn can_defer(&self) -> bool {
        matches!(self.engine, Engine::Uring(_))
    }

    pub(crate) fn submit(
        &self,
        op: NonNull<OpIo>,
        defer: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        match &self.engine {
            Engine::Uring(r) => r.submit(op, defer, spill),
            Engine::Epoll(r) => r.submit(op, spill),
        }
    }

    /// Submits the ops deferred submissions left pending.
    pub(crate) fn flush(&self, spill: &mut Vec<Completion>) {
        match &self.engine {
            Engine::Uring(r) => r.flush(spill),
            Engine::Epoll(_) => {}
        }
    }

    /// Returns `Ok(true)` when the deadline passed with nothing collected.
    pub(crate) fn wait(
        &self,
        deadline: Option<Instant>,
        out: &mut Vec<Completion>,
    ) -> io::Result<bool> {
        match &self.engine {
            Engine::Uring(r) => r.wait(deadline, out),
            Engine::Epoll(r) => r.wait(deadline, out),
        }
    }

    /// Collects ready completions without blocking. Returns `true` when it
    /// consumed a wake-up meant for the leader (the port then re-arms it).
    pub(crate) fn reap(&self, out: &mut Vec<Completion>) -> bool {
        match &self.engine {
            Engine::Uring(r) => r.reap(out),
            Engine::Epoll(r) => r.reap(out),
        }
    }

    pub(crate) fn wake(&self, spill: &mut Vec<Completion>) {
        match &self.engine {
            Engine::Uring(r) => r.wake(spill),
            Engine::Epoll(r) => r.wake(),
        }
    }

    /// Asks the backend to cancel `targets`, operations in flight on the fd
    /// of `owner` (`all`: every one of them). Called with the fd's in-flight
    /// lock held, so every target is alive. A cancelled op is still reported
    /// exactly once (with `ECANCELED`, or its real result if it finished
    /// first), possibly right away through `spill`.
    pub(crate) fn cancel(
        &self,
        owner: &FdOwner,
        targets: &[OpPtr],
        all: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        match &self.engine {
            Engine::Uring(r) => r.cancel(owner.raw(), targets, all, spill),
            Engine::Epoll(r) => {
                r.cancel(owner, targets, spill);
                Ok(())
            }
        }
    }

    pub(crate) fn shutdown(&self, spill: &mut Vec<Completion>) {
        match &self.engine {
            Engine::Uring(r) => r.shutdown(spill),
            Engine::Epoll(r) => r.shutdown(spill),
        }
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
