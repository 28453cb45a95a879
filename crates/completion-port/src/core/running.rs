//! Which port the current thread is *running* for (windows-semantics §1.4), the
//! explicit blocking scope, and the per-thread record the blocked-thread
//! monitor (`monitor.rs`) shares.
//!
//! A thread counts as running for port P from the moment a `get` on P
//! returns a packet until it calls `get` again (on any port), enters a
//! blocking scope, exits, or — when P has blocking detection on — the
//! monitor sees it blocked in the kernel. A thread belongs to at most one
//! port: a `get` on another port first counts it down on the old one.
//!
//! The count itself lives in the port (`Core`); this module remembers, per
//! thread, whether this thread is part of it.
//!
//! # The per-thread state machine
//! Each thread has one [`Worker`] record, shared (`Arc`) between its thread-local
//! and, once it ran for a port with detection on, the monitor. Its `state`:
//!
//! | state      | counted in `running`? | who leaves it                        |
//! |------------|-----------------------|--------------------------------------|
//! | `Idle`     | no                    | the thread (`counted`)               |
//! | `Counted`  | yes                   | the thread, or the monitor (→ `Detected`) |
//! | `Blocked`  | no (explicit scope)   | the thread only                      |
//! | `Detected` | no (monitor saw it blocked) | the thread, or the monitor (→ `Counted`) |
//! | `Exited`   | no                    | nobody (the thread is gone)          |
//!
//! Transitions, each one atomic on `state` (a CAS or a swap), and who then
//! changes the port's `running` count:
//! - thread, `get` returns a packet: `Idle`/`Blocked` → `Counted` (the port
//!   already incremented `running` for it, before this store);
//! - thread, start of `get`, blocking scope, exit: `Counted` → `Idle` /
//!   `Blocked` / `Exited` — the thread decrements; `Detected` → the same —
//!   nobody decrements (the monitor already did);
//! - monitor, thread seen blocked: CAS `Counted` → `Detected`, then it
//!   decrements (`Accounting::count_down`, which also releases a waiter);
//! - monitor, thread seen running again: it *first* increments, then CAS
//!   `Detected` → `Counted`; if the CAS fails (the thread meanwhile left
//!   `Detected` itself, which decrements nothing) it decrements again.
//! - blocking scope ends: if still `Blocked`, the thread increments, then
//!   stores `Counted`.
//!
//! **Invariant**: `running` ≥ the number of records in `Counted` for the
//! port, and every decrement is made by the one side whose atomic
//! transition left `Counted` — so a slot is counted down exactly once, and
//! never before the increment it undoes (increment-then-publish on every
//! way *into* `Counted`). The surplus (increments not yet published, or
//! being undone) is transient.
//!
//! Only the monitor changes `Counted` ↔ `Detected`; only the thread
//! changes the other states, so the thread's CAS loops (`fetch_update`)
//! retry at most once per monitor move.
//!
//! # Deferred submissions
//! An operation issued by a thread that counts as running for its port may
//! be left in the backend's submission queue (io_uring) instead of being
//! handed to the kernel at once ([`defer_submit`]). `Worker::pending` then
//! says that this thread has submissions pending, and they are submitted
//! at the thread's next state change: its next `get` (the port merges them
//! into its kernel wait or submits them before returning or parking;
//! [`begin_get`] hands the flag over), a `get` on another port (that port
//! is flushed here), a blocking scope ([`BlockingGuard::enter`]), its exit
//! (the thread-local destructor) — or the monitor's detection, since a
//! thread blocked without a scope would otherwise sit on them.
//!
//! `pending` is taken with a swap by whoever flushes. The thread sets it
//! *after* handing the operation to the backend, fences, then re-reads
//! `state` ([`deferred`]); the monitor moves `state` to `Detected`, fences,
//! then looks at `pending` (Dekker, `SeqCst` fences as in core/mod.rs; checked
//! by the loom model `detection_flushes_deferred_submissions`), so either
//! the monitor sees the flag (and flushes) or the thread sees `Detected`
//! (and flushes itself): no deferred operation is left behind by a thread
//! the port no longer waits for.
//!
//! A batch costs one store and fence, not one per operation: a thread that
//! finds `pending` still set after its push (a `SeqCst` load) does nothing
//! more. The flag is then taken later in the `SeqCst` order by whoever
//! takes it, and that taker's flush locks the backend's submission queue
//! after this thread's push released it — had the taker locked it first,
//! its swap would happen before this thread's load, which would then have
//! read `false`. So the push is in the queue the taker submits. (Checked by
//! the loom model `detection_flushes_deferred_submissions`, whose
//! thread defers two operations.)

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use super::monitor;
use crate::sync::{fence, thread_local, AtomicBool, AtomicU8, Mutex, Ordering};

/// What a port exposes to the per-thread bookkeeping and the monitor.
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
    /// Whether the monitor watches threads running for this port.
    fn detects_blocking(&self) -> bool;
    /// A thread of this port entered (`true`) or left (`false`) the
    /// `Detected` state (statistics only).
    fn note_detected(&self, entered: bool);
    /// Packets are queued and every slot is held: the only state in which
    /// counting a blocked thread out lets a packet run sooner. Always
    /// false for a port with detection off.
    fn contended(&self) -> bool;
    /// Operations are in flight and nobody leads (`progress.rs`).
    fn needs_progress(&self) -> bool;
    /// The monitor's progress tick (`progress.rs`).
    fn tick_progress(&self);
}

/// The state of a thread's [`Worker`] record (see the module docs).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Not counted: never ran for a port, or asked again.
    Idle = 0,
    /// Counted in its port's `running`.
    Counted = 1,
    /// In an explicit blocking scope: not counted.
    Blocked = 2,
    /// Seen blocked by the monitor, which counted it out.
    Detected = 3,
    /// The thread is gone.
    Exited = 4,
}

impl RunState {
    fn from_u8(v: u8) -> RunState {
        match v {
            0 => RunState::Idle,
            1 => RunState::Counted,
            2 => RunState::Blocked,
            3 => RunState::Detected,
            4 => RunState::Exited,
            _ => unreachable!("only RunState values are ever stored"),
        }
    }
}

/// A [`RunState`] changed atomically (`SeqCst` everywhere: the state takes
/// part in the Dekker pairs of the module docs).
pub(crate) struct AtomicRunState(AtomicU8);

impl AtomicRunState {
    fn new(s: RunState) -> AtomicRunState {
        AtomicRunState(AtomicU8::new(s as u8))
    }

    pub(crate) fn load(&self) -> RunState {
        RunState::from_u8(self.0.load(Ordering::SeqCst))
    }

    pub(crate) fn store(&self, s: RunState) {
        self.0.store(s as u8, Ordering::SeqCst);
    }

    fn swap(&self, s: RunState) -> RunState {
        RunState::from_u8(self.0.swap(s as u8, Ordering::SeqCst))
    }

    /// Moves `from` → `to`; `Err` with the state found otherwise.
    pub(crate) fn transition(&self, from: RunState, to: RunState) -> Result<(), RunState> {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(RunState::from_u8)
    }

    /// Leaves `Counted` or `Detected` for `to`; returns the state left (or
    /// the unchanged state when it was neither).
    fn leave_running(&self, to: RunState) -> RunState {
        let r = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                matches!(RunState::from_u8(s), RunState::Counted | RunState::Detected)
                    .then_some(to as u8)
            });
        match r {
            Ok(prev) | Err(prev) => RunState::from_u8(prev),
        }
    }
}

/// The port a record's state refers to.
#[derive(Clone)]
pub(crate) struct PortRef {
    pub(crate) id: u64,
    pub(crate) port: Weak<dyn Accounting>,
    pub(crate) detect: bool,
}

/// One thread's running state, shared with the monitor.
pub(crate) struct Worker {
    /// Module docs.
    pub(crate) state: AtomicRunState,
    /// Submissions deferred and not yet flushed (module docs).
    pub(crate) pending: AtomicBool,
    /// The port `state` refers to. Changed by the thread only while the
    /// state is not `Counted`/`Detected`, under this lock; the monitor holds
    /// it across its CAS on `state`, so the port it counts down or up is
    /// the one the state it replaced referred to.
    pub(crate) port: Mutex<Option<PortRef>>,
    /// Kernel thread id (`/proc/self/task/<tid>/stat`).
    pub(crate) tid: i32,
    /// CPU-time clock of the thread (`pthread_getcpuclockid`); `None` if
    /// the thread has none (then it is never watched).
    pub(crate) clock: Option<libc::clockid_t>,
    /// Handed to the monitor already.
    registered: AtomicBool,
}

impl Worker {
    fn for_current_thread() -> Worker {
        Worker {
            state: AtomicRunState::new(RunState::Idle),
            pending: AtomicBool::new(false),
            port: Mutex::new(None),
            tid: monitor::gettid(),
            clock: monitor::current_cpu_clock(),
            registered: AtomicBool::new(false),
        }
    }

    /// Takes the pending flag (module docs).
    fn take_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::SeqCst)
    }
}

/// The thread-local view: the record, plus a copy of its port for the
/// thread's own lock-free use (only the thread changes it).
struct Current {
    rec: Arc<Worker>,
    port: Option<PortRef>,
}

impl Current {
    fn id(&self) -> Option<u64> {
        self.port.as_ref().map(|p| p.id)
    }
}

struct Slot(RefCell<Option<Current>>);

impl Drop for Slot {
    /// Thread exit: a thread that was running submits what it deferred and
    /// counts down.
    fn drop(&mut self) {
        if let Some(cur) = self.0.get_mut().take() {
            exit(cur);
        }
    }
}

#[cfg(not(loom))]
thread_local! {
    static CURRENT: Slot = const { Slot(RefCell::new(None)) };
}

// loom's thread-locals (one per model thread) take no `const` initialiser.
#[cfg(loom)]
thread_local! {
    static CURRENT: Slot = Slot(RefCell::new(None));
}

/// The thread exits: it submits what it deferred and counts down.
fn exit(cur: Current) {
    let prev = cur.rec.state.swap(RunState::Exited);
    let pending = cur.rec.take_pending();
    if let Some(p) = cur.port.as_ref().and_then(|p| p.port.upgrade()) {
        if pending {
            p.flush();
        }
        settle_left(&*p, prev);
    }
}

/// The thread left `prev` for a state that is not counted: the port counts
/// it down if it was counted, or just notes that the monitor's count-down
/// stands (statistics) if it was detected.
fn settle_left(port: &dyn Accounting, prev: RunState) {
    match prev {
        RunState::Counted => port.count_down(),
        RunState::Detected => port.note_detected(false),
        RunState::Idle | RunState::Blocked | RunState::Exited => {}
    }
}

/// What [`begin_get`] found.
pub(crate) struct GetStart {
    /// The thread was counted as running for this port (the caller
    /// decrements).
    pub(crate) was_running: bool,
    /// The thread deferred submissions on this port: the caller now owns
    /// them and must submit them before it returns or parks.
    pub(crate) pending: bool,
}

/// Start of a `get` on port `id`. If the thread was counted (or left
/// submissions pending) for another port, that port is counted down (and
/// flushed) now.
pub(crate) fn begin_get(id: u64) -> GetStart {
    let none = GetStart {
        was_running: false,
        pending: false,
    };
    let found = CURRENT
        .try_with(|c| {
            let c = c.0.borrow();
            let cur = c.as_ref()?;
            let prev = cur.rec.state.leave_running(RunState::Idle);
            let pending = cur.rec.take_pending();
            Some((cur.id() == Some(id), prev, pending, cur.port.clone()))
        })
        .ok()
        .flatten();
    let Some((here, prev, pending, port)) = found else {
        return none;
    };
    if here {
        if prev == RunState::Detected {
            if let Some(p) = port.and_then(|p| p.port.upgrade()) {
                p.note_detected(false);
            }
        }
        return GetStart {
            was_running: prev == RunState::Counted,
            pending,
        };
    }
    if matches!(prev, RunState::Counted | RunState::Detected) || pending {
        if let Some(p) = port.and_then(|p| p.port.upgrade()) {
            if pending {
                p.flush();
            }
            settle_left(&*p, prev);
        }
    }
    none
}

/// An operation is being issued on port `id`: returns `true` when the
/// current thread counts as running for `id`, so its submission may be
/// deferred. The caller then hands it to the backend and calls
/// [`deferred`].
pub(crate) fn defer_submit(id: u64) -> bool {
    CURRENT
        .try_with(|c| {
            matches!(&*c.0.borrow(), Some(cur)
                if cur.id() == Some(id) && cur.rec.state.load() == RunState::Counted)
        })
        .unwrap_or(false)
}

/// A deferred submission was handed to the backend: records it as pending
/// (module docs). Returns `true` when the caller must flush now, because
/// the thread no longer counts as running (the monitor saw it blocked
/// meanwhile, and may have flushed before this submission was queued).
pub(crate) fn deferred() -> bool {
    CURRENT
        .try_with(|c| {
            let c = c.0.borrow();
            let Some(cur) = c.as_ref() else {
                return true;
            };
            if cur.rec.pending.load(Ordering::SeqCst) {
                // Still set by an earlier deferral, not yet taken (module
                // docs, "a batch costs one store and fence"): whoever takes
                // it flushes after this push.
                return false;
            }
            cur.rec.pending.store(true, Ordering::SeqCst);
            // Store, fence, load (module docs): the monitor fences between
            // its CAS on `state` and its look at `pending`.
            fence(Ordering::SeqCst);
            // The same fence orders the store before the monitor's
            // `asleep` (monitor.rs, "When the monitor looks"): a sleeping
            // monitor must look at a thread that sits on submissions.
            if cur.port.as_ref().is_some_and(|p| p.detect) {
                monitor::wake();
            }
            cur.rec.state.load() != RunState::Counted && cur.rec.take_pending()
        })
        .unwrap_or(true)
}

/// A `get` on port `id` returned a packet: the thread counts as running for
/// it (the port already incremented its count).
pub(crate) fn counted(id: u64, port: impl FnOnce() -> Weak<dyn Accounting>) {
    let _ = CURRENT.try_with(|c| {
        let mut c = c.0.borrow_mut();
        let cur = c.get_or_insert_with(|| Current {
            rec: Arc::new(Worker::for_current_thread()),
            port: None,
        });
        if cur.id() != Some(id) {
            // Not Counted/Detected here (`begin_get` left those states), so
            // the monitor does not look at the port field: change it.
            let port = port();
            let detect = port.upgrade().is_some_and(|p| p.detects_blocking());
            let r = PortRef { id, port, detect };
            *cur.rec.port.lock() = Some(r.clone());
            cur.port = Some(r);
        }
        cur.rec.state.store(RunState::Counted);
        // Nothing more per `get`: the monitor is woken by the port when a
        // packet waits for a slot (monitor.rs, "When the monitor looks").
        if !cur.rec.registered.load(Ordering::Relaxed)
            && cur.port.as_ref().is_some_and(|p| p.detect)
        {
            cur.rec.registered.store(true, Ordering::Relaxed);
            monitor::register(cur.rec.clone());
        }
    });
}

/// Whether the current thread counts as running for port `id`.
pub(crate) fn is_counted_for(id: u64) -> bool {
    CURRENT
        .try_with(|c| {
            matches!(&*c.0.borrow(), Some(cur)
                if cur.id() == Some(id) && cur.rec.state.load() == RunState::Counted)
        })
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
    /// The record and port of a thread that was running (or detected as
    /// blocked) when the scope opened (`None`: no effect).
    port: Option<(Arc<Worker>, Weak<dyn Accounting>)>,
    _not_send: PhantomData<*const ()>,
}

impl BlockingGuard {
    /// Submits what the thread deferred, and stops counting it.
    pub(crate) fn enter() -> BlockingGuard {
        let found = CURRENT
            .try_with(|c| {
                let c = c.0.borrow();
                let cur = c.as_ref()?;
                let prev = cur.rec.state.leave_running(RunState::Blocked);
                if !matches!(prev, RunState::Counted | RunState::Detected) {
                    return None;
                }
                let pending = cur.rec.take_pending();
                let port = cur.port.as_ref()?.port.clone();
                Some((cur.rec.clone(), port, prev, pending))
            })
            .ok()
            .flatten();
        let port = found.map(|(rec, port, prev, pending)| {
            if let Some(p) = port.upgrade() {
                if pending {
                    p.flush();
                }
                settle_left(&*p, prev);
            }
            (rec, port)
        });
        BlockingGuard {
            port,
            _not_send: PhantomData,
        }
    }
}

impl Drop for BlockingGuard {
    fn drop(&mut self) {
        let Some((rec, port)) = self.port.take() else {
            return;
        };
        // Count up again only if nothing else changed this thread's state
        // meanwhile (a `get` inside the scope already re-counted it, or
        // left it idle). Only this thread leaves Blocked: no race here.
        if rec.state.load() != RunState::Blocked {
            return;
        }
        if let Some(p) = port.upgrade() {
            // Increment, then publish Counted (module docs).
            // `count_up` wakes the monitor if this fills the port while
            // packets wait.
            p.count_up();
            rec.state.store(RunState::Counted);
        } else {
            rec.state.store(RunState::Idle);
        }
    }
}

/// Whether the current thread counts as running for `core`'s port.
pub(crate) fn is_counted_for_core<C: Send + 'static>(core: &super::Core<C>) -> bool {
    is_counted_for(core.id())
}

/// What the thread-local destructor does at thread exit, done now: loom's
/// `join` returns before a thread's locals are destroyed, so the models'
/// threads end with this.
#[cfg(loom)]
pub(crate) fn exit_current() {
    if let Some(cur) = CURRENT.with(|c| c.0.borrow_mut().take()) {
        exit(cur);
    }
}

/// The calling thread's record, once it ran for a port (the loom models
/// hand it to their monitor).
#[cfg(loom)]
pub(crate) fn current_worker() -> Option<Arc<Worker>> {
    CURRENT
        .try_with(|c| c.0.borrow().as_ref().map(|cur| cur.rec.clone()))
        .ok()
        .flatten()
}
