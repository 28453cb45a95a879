//! Which port the current thread is *running* for (spec §1.4), kept in a
//! thread-local, and the explicit blocking scope.
//!
//! A thread counts as running for port P from the moment a `get` on P
//! returns a packet until it calls `get` again (on any port), enters a
//! blocking scope, or exits. A thread belongs to at most one port: a `get`
//! on another port first counts it down on the old one.
//!
//! The count itself lives in the port's state (under its lock); this module
//! only remembers, per thread, whether this thread is part of it.
//!
//! # Deferred submissions
//! An operation issued by a thread that counts as running for its port may
//! be left in the backend's submission queue (io_uring) instead of being
//! handed to the kernel at once ([`defer_submit`]). The thread-local then
//! remembers that this thread has submissions *pending*, and they are
//! submitted at the thread's next state change, each of which passes
//! through here: its next `get` (the port merges them into its kernel wait
//! or submits them before returning or parking; [`begin_get`] hands the
//! flag over), a `get` on another port (that port is flushed here), a
//! blocking scope ([`BlockingGuard::enter`]) or its exit (the thread-local
//! destructor). A thread that is not running for the port never defers.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Weak;

/// What a port exposes to the thread-local bookkeeping.
pub(crate) trait Accounting: Send + Sync {
    /// The thread stopped running for the port (asked again elsewhere,
    /// blocked, exited): decrement, and release a waiter if that frees a
    /// slot.
    fn count_down(&self);
    /// A blocked thread runs again: increment (may exceed the concurrency
    /// value for a while, as on Windows).
    fn count_up(&self);
    /// Hands the submissions this thread deferred to the kernel.
    fn flush(&self);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Counted in the port's running count.
    Counted,
    /// Not counted: inside a `get`, or it returned without a packet.
    Idle,
    /// Not counted because a blocking scope is open.
    Blocked,
}

struct Current {
    id: u64,
    port: Weak<dyn Accounting>,
    mode: Mode,
    /// This thread left submissions for the port unsubmitted (only ever set
    /// while `mode == Counted`; cleared by whoever flushes them).
    pending: bool,
}

struct Slot(RefCell<Option<Current>>);

impl Drop for Slot {
    /// Thread exit: a thread that was running submits what it deferred and
    /// counts down.
    fn drop(&mut self) {
        if let Some(cur) = self.0.get_mut().take() {
            if cur.mode == Mode::Counted || cur.pending {
                if let Some(p) = cur.port.upgrade() {
                    if cur.pending {
                        p.flush();
                    }
                    if cur.mode == Mode::Counted {
                        p.count_down();
                    }
                }
            }
        }
    }
}

thread_local! {
    static CURRENT: Slot = const { Slot(RefCell::new(None)) };
}

/// What [`begin_get`] found.
pub(crate) struct GetStart {
    /// The thread was counted as running for this port (the caller
    /// decrements under its lock).
    pub(crate) was_running: bool,
    /// The thread deferred submissions on this port: the caller now owns
    /// them and must submit them before it returns or parks.
    pub(crate) pending: bool,
}

/// Start of a `get` on port `id`. If the thread was counted (or left
/// submissions pending) for another port, that port is counted down (and
/// flushed) now.
pub(crate) fn begin_get(id: u64) -> GetStart {
    enum Found {
        Here(GetStart),
        Other(Weak<dyn Accounting>, bool, bool),
    }
    let found = CURRENT
        .try_with(|c| {
            let mut c = c.0.borrow_mut();
            let cur = c.as_mut()?;
            let counted = cur.mode == Mode::Counted;
            if counted {
                cur.mode = Mode::Idle;
            }
            let pending = std::mem::take(&mut cur.pending);
            if cur.id == id {
                Some(Found::Here(GetStart {
                    was_running: counted,
                    pending,
                }))
            } else if counted || pending {
                Some(Found::Other(cur.port.clone(), counted, pending))
            } else {
                None
            }
        })
        .ok()
        .flatten();
    match found {
        Some(Found::Here(start)) => start,
        Some(Found::Other(port, counted, pending)) => {
            if let Some(p) = port.upgrade() {
                if pending {
                    p.flush();
                }
                if counted {
                    p.count_down();
                }
            }
            GetStart {
                was_running: false,
                pending: false,
            }
        }
        None => GetStart {
            was_running: false,
            pending: false,
        },
    }
}

/// An operation is being issued on port `id`: returns `true` when the
/// current thread counts as running for `id`, so its submission may be
/// deferred, and records that it has submissions pending (see the module
/// docs for when they are submitted).
pub(crate) fn defer_submit(id: u64) -> bool {
    CURRENT
        .try_with(|c| {
            let mut c = c.0.borrow_mut();
            match c.as_mut() {
                Some(cur) if cur.id == id && cur.mode == Mode::Counted => {
                    cur.pending = true;
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false)
}

/// A `get` on port `id` returned a packet: the thread counts as running for
/// it (the port already incremented its count).
pub(crate) fn counted(id: u64, port: impl FnOnce() -> Weak<dyn Accounting>) {
    let _ = CURRENT.try_with(|c| {
        let mut c = c.0.borrow_mut();
        match c.as_mut() {
            Some(cur) if cur.id == id => cur.mode = Mode::Counted,
            _ => {
                *c = Some(Current {
                    id,
                    port: port(),
                    mode: Mode::Counted,
                    pending: false,
                })
            }
        }
    });
}

/// Whether the current thread counts as running for port `id`.
pub(crate) fn is_counted_for(id: u64) -> bool {
    CURRENT
        .try_with(
            |c| matches!(&*c.0.borrow(), Some(cur) if cur.id == id && cur.mode == Mode::Counted),
        )
        .unwrap_or(false)
}

/// An open blocking scope: while it lives, the current thread does not
/// count as running for its port, so another waiter may be released. Made
/// by [`Port::blocking_guard`](crate::Port::blocking_guard); dropping it
/// counts the thread again (which may take the count above the concurrency
/// value for a while, as on Windows).
///
/// Not `Send`: it describes the thread that made it.
#[must_use = "the scope ends when the guard is dropped"]
pub struct BlockingGuard {
    /// The port the thread was counted for, if any (`None`: no effect).
    port: Option<(u64, Weak<dyn Accounting>)>,
    _not_send: PhantomData<*const ()>,
}

impl BlockingGuard {
    /// Submits what the thread deferred, and stops counting it.
    pub(crate) fn enter() -> BlockingGuard {
        let port = CURRENT
            .try_with(|c| {
                let mut c = c.0.borrow_mut();
                let cur = c.as_mut()?;
                if cur.mode != Mode::Counted {
                    return None;
                }
                cur.mode = Mode::Blocked;
                let pending = std::mem::take(&mut cur.pending);
                Some((cur.id, cur.port.clone(), pending))
            })
            .ok()
            .flatten();
        let port = port.map(|(id, p, pending)| {
            if let Some(p) = p.upgrade() {
                if pending {
                    p.flush();
                }
                p.count_down();
            }
            (id, p)
        });
        BlockingGuard {
            port,
            _not_send: PhantomData,
        }
    }
}

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        let Some((id, port)) = self.port.take() else {
            return;
        };
        // Count up again only if nothing else changed this thread's state
        // meanwhile (a `get` inside the scope already re-counted it).
        let resume = CURRENT
            .try_with(|c| {
                let mut c = c.0.borrow_mut();
                match c.as_mut() {
                    Some(cur) if cur.id == id && cur.mode == Mode::Blocked => {
                        cur.mode = Mode::Counted;
                        true
                    }
                    _ => false,
                }
            })
            .unwrap_or(false);
        if resume {
            if let Some(p) = port.upgrade() {
                p.count_up();
            }
        }
    }
}

/// Whether the current thread counts as running for `core`'s port.
pub(crate) fn is_counted_for_core<C: Send + 'static>(core: &super::core::Core<C>) -> bool {
    is_counted_for(core.id())
}
