//! Ports and `fork`: a port belongs to the process that created it.
//!
//! A child made by `fork` inherits a copy of the port's memory and the
//! *same* kernel objects: the io_uring instance (its submission and
//! completion rings are memory shared with the parent) or the epoll
//! instance (one interest list, one ready list), and the fds. Whatever the
//! child did with them would act on the parent's port: reaping a
//! completion takes it from the parent, a submission or a cancel runs in
//! the parent's ring (closing a handle cancels the parent's operations), an
//! `epoll_wait` consumes readiness the parent waits for, an
//! `EPOLL_CTL_DEL` removes the parent's registration. And none of the
//! port's threads (the process-wide monitor, the epoll backend's file
//! pool) exist in the child.
//!
//! So in a forked child every call on an inherited port fails at once,
//! touching nothing, with the error [`is_port_forked`](crate::error::is_port_forked)
//! recognises (also a port-closed error: the port is closed *to this
//! process*): `get`, `get_many`, `wait_result` (`GetError::Io`), every
//! operation, `post`, `post_after`, `open` (refused, context and buffers
//! back), `cancel`, `cancel_all`, `cancel_timer`, `associate`;
//! `take_result` finds nothing; a blocking scope submits nothing. Closing
//! or dropping the port or its handles in the child touches neither the
//! kernel objects nor the port's locks (another thread of the parent may
//! have held one at the fork): the child's copy of the port's state —
//! queued packets, the records of operations in flight (the parent's) — is
//! left as it is, never freed in the child; its fds are closed (the
//! child's copies only).
//!
//! What a child should do with a port is nothing: `exec` (or `_exit`).
//! POSIX lets the child of a multi-threaded process make only
//! async-signal-safe calls until it execs, and a process that created a
//! port has threads (the monitor, started with the first port, does not
//! survive the fork; a lock one of them held at the fork stays locked in
//! the child). The refusal makes an accidental use fail loudly, naming the
//! cause, instead of corrupting the parent's port.
//!
//! How a fork is noticed without a system call per call: a
//! `pthread_atfork` child handler, installed when the first port is
//! created, counts forks in the child; each port records the count at its
//! creation ([`Birth`]) and compares (one relaxed load of a variable
//! written only by forks).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

/// Forks this process is a child of, since the handler was installed.
static FORKS: AtomicU64 = AtomicU64::new(0);
static HANDLER: Once = Once::new();

/// The `pthread_atfork` child handler: runs in the child, in its only
/// thread, before `fork` returns there.
extern "C" fn in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Where and when a port was created.
#[derive(Debug)]
pub(crate) struct Birth {
    forks: u64,
    pid: u32,
}

impl Birth {
    /// The calling process, now (installs the fork handler the first time).
    pub(crate) fn now() -> Birth {
        HANDLER.call_once(|| {
            // SAFETY: registers a plain function that only bumps an atomic
            // (async-signal-safe, as a child handler must be).
            let r = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
            if r != 0 {
                tracing::warn!(
                    "completion port: pthread_atfork failed ({r}): a forked child's use of an \
                     inherited port is not detected"
                );
            }
        });
        Birth {
            forks: FORKS.load(Ordering::Relaxed),
            pid: std::process::id(),
        }
    }

    /// Whether this is a child forked since the port's creation.
    #[inline]
    pub(crate) fn forked(&self) -> bool {
        FORKS.load(Ordering::Relaxed) != self.forks
    }

    /// The error every call on the port gets in a forked child.
    pub(crate) fn error(&self) -> io::Error {
        crate::error::port_forked(self.pid)
    }
}
