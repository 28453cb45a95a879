//! The port's state machine: where packets are queued and dequeued, and
//! which thread waits where. Backend-independent: the kernel is reached only
//! through [`Driver`].
//!
//! # Roles of a waiting thread
//! - At most one **leader** waits in the kernel (`Driver::wait`) for
//!   completions. When it returns it queues what it reaped, takes a packet
//!   if the concurrency value allows, and gives up the leadership.
//! - Every other waiter is **parked** in user space on a LIFO stack
//!   (`State::waiters`, top = last). Packets are handed to parked threads
//!   directly, top first ([`Waiter`] describes the hand-off).
//!
//! # What is shared without the lock
//! The FIFO `queue` (a lock-free `SegQueue`) and the `running` count (an
//! atomic) are read and changed without the state lock, so that the two hot
//! cases take none: a `post` that needs to wake nobody, and a `get` that
//! finds a packet. Everything about *sleeping* threads (the LIFO stack, the
//! leader) stays under the lock, and `sleepers` mirrors it for the posters.
//!
//! - **Slots.** A thread takes a packet only holding a slot: it either
//!   already runs (a running thread asking again keeps its slot, spec §1.5)
//!   or reserves one with a compare-and-swap of `running` from `r < N` to
//!   `r + 1` (`try_reserve`). A reservation that finds no packet is given
//!   back (`release_slot`). So `running` never exceeds the concurrency value
//!   N because of a dequeue (only `count_up`, after a blocking scope, may
//!   take it above, as on Windows).
//! - **No lost wake-up** rests on two store-then-fence-then-load pairs
//!   (Dekker), each side with a `SeqCst` fence between its write and its
//!   read, so at least one side sees the other's write:
//!   - a poster *pushes*, fences, then reads `running` and `sleepers`; it
//!     takes the lock to hand the packet over (`dispatch`) unless
//!     `running >= N` (every slot is held: a holder will come back, and
//!     whoever frees a slot looks at the queue, below) or `sleepers == 0`
//!     (nobody sleeps: whoever goes to sleep looks at the queue first);
//!   - a thread about to sleep *publishes* `sleepers` (parking: pushed on the
//!     stack; leading: `leader_woken = false`), fences, then looks at the
//!     queue (`dispatch`, or the leader's re-check) — so if the poster saw no
//!     sleeper, the sleeper sees the packet;
//!   - a thread that *frees a slot* (`release_slot`: a `get` that found
//!     nothing, `count_down`) fences, then looks at the queue (takes a packet
//!     itself, or `dispatch`es under the lock) — so if the poster saw every
//!     slot held, the freer sees the packet.
//! - `close` sets `closed`, fences, then empties the queue; a poster that
//!   pushed, fenced and then sees `closed` empties it too. So no packet stays
//!   queued after close, and contexts are dropped outside the lock.
//!
//! # Invariants of the state under the lock
//! 1. `running` counts the threads counted as running (see `running.rs`)
//!    plus transient reservations; a packet is taken by, or handed to, a
//!    thread only with a slot (above).
//! 2. After every change under the lock (`dispatch`): if `running <
//!    concurrency` and a thread is parked, then the queue was found empty
//!    after `sleepers` was published, and a leader exists. Together with
//!    the protocol above: a queued packet never waits while a thread that
//!    may take it sleeps, and the ring is never left unwatched while a
//!    waiter could use a completion.
//! 3. `leader` is true from the moment a thread takes (or is given) the
//!    leadership until it gives it up under the lock: when it takes a
//!    packet, times out, fails, sees the port closed, or finds every slot
//!    taken. A kernel wait that returns does not end it.
//!    `leader_woken` is true when the leader needs no wake-up: one is
//!    already on its way (a burst of posts costs one wake, not one per
//!    post), or it is awake, queueing what its wait returned.
//! 4. Completions are only queued while `!closed` (under the lock); `close`
//!    empties the stack in the same critical section that sets `closed`, and
//!    the queue right after (see above for posts racing with it).
//! 5. Nothing is dropped, unparked or submitted under the lock: that work is
//!    collected in [`Deferred`] and done after release (a context's `Drop`
//!    may call back into the port).

use std::cell::Cell;
use std::io;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use parking_lot::{Mutex, MutexGuard};

use super::monitor;
use super::results::Results;
use super::running::{self, Accounting, BlockingGuard};
use super::waiter::{Waiter, Wake};
use crate::error::{handle_closed, port_closed, GetError, Rejected};
use crate::handle::{FdOwner, InFlightOp, OpPtr};
use crate::op::{Buffers, Notify, RecordBox, Token};
use crate::sys::{Completion, Driver};
use crate::{Packet, PortStats};

static NEXT_PORT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's spare completion buffer (see [`Scratch`]).
    static SCRATCH: Cell<Vec<Completion>> = const { Cell::new(Vec::new()) };
}

/// A completion buffer borrowed from the thread's spare, so that a kernel
/// wait or a reap does not allocate (and grow) a fresh `Vec` each time.
/// Given back, empty, when dropped. Re-entrant calls (a context's `Drop`
/// calling into a port) just find no spare and allocate.
struct Scratch(Vec<Completion>);

impl Scratch {
    fn take() -> Scratch {
        Scratch(SCRATCH.try_with(Cell::take).unwrap_or_default())
    }
}

impl Deref for Scratch {
    type Target = Vec<Completion>;
    fn deref(&self) -> &Vec<Completion> {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<Completion> {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Every user hands the completions to `enqueue`, which empties it.
        debug_assert!(self.0.is_empty(), "completions left in a scratch buffer");
        let v = mem::take(&mut self.0);
        if v.capacity() > 0 && v.is_empty() {
            let _ = SCRATCH.try_with(|s| s.set(v));
        }
    }
}

pub(crate) struct Core<C> {
    id: u64,
    pub(crate) concurrency: usize,
    /// Threads running for this port are watched by the blocked-thread
    /// monitor (`monitor.rs`).
    pub(crate) detect: bool,
    /// Threads now counted out because the monitor saw them blocked, and
    /// how many times that happened (statistics).
    detected: CacheLine<Detected>,
    pub(crate) driver: Driver,
    state: Mutex<State<C>>,
    /// FIFO of packets ready to be dequeued (lock-free; see the module docs).
    queue: SegQueue<Packet<C>>,
    /// What every post reads: kept on a cache line of its own, which a get
    /// that finds a packet does not write.
    hot: CacheLine<Hot>,
    /// Packets dequeued since creation (statistics), counted per thread
    /// stripe so that concurrent getters do not share a cache line.
    dequeued: [CacheLine<AtomicU64>; DEQUEUED_STRIPES],
    /// Operations handed to the driver and not yet turned into packets.
    in_flight: CacheLine<AtomicUsize>,
    /// Results kept by token instead of queued (`results.rs`).
    results: Results<C>,
    me: Weak<Core<C>>,
}

/// Aligned (and so padded) to two cache lines, against false sharing.
#[repr(align(128))]
struct CacheLine<T>(T);

impl<T> Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The atomics a post reads (see the module docs).
struct Hot {
    /// Threads counted as running for this port, plus reservations (see
    /// "Slots" in the module docs).
    running: AtomicUsize,
    /// Threads that sleep and need a hand-off or a wake-up: parked threads,
    /// plus one for a leader with `!leader_woken`. Written under the lock
    /// (`publish_sleepers`), read by posters without it.
    sleepers: AtomicUsize,
    /// Set once by `close` (also mirrored in `State::closed`).
    closed: AtomicBool,
}

/// Statistics of blocked-thread detection.
struct Detected {
    now: AtomicUsize,
    total: AtomicU64,
}

const DEQUEUED_STRIPES: usize = 4;

/// This thread's stripe of the `dequeued` counters.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % DEQUEUED_STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

struct State<C> {
    /// Parked threads, LIFO (the last element is released first).
    waiters: Vec<Arc<Waiter<C>>>,
    /// A thread holds the leadership (invariant 3).
    leader: bool,
    /// A wake is already on its way to the leader.
    leader_woken: bool,
    /// The leader waits for results (`wait_result`), not for packets: a
    /// result stored by another thread must wake it.
    leader_for_result: bool,
    closed: bool,
}

/// Work collected under the state lock and done after releasing it.
struct Deferred<C> {
    unpark: Vec<Arc<Waiter<C>>>,
    wake_leader: bool,
    /// The leadership is free while threads wait for results: they may
    /// have to drive the backend themselves (`wait_result`).
    notify_results: bool,
    drop: Vec<Packet<C>>,
    /// Every slot is held while packets wait: wake the blocked-thread
    /// monitor (`monitor::slots_full`).
    wake_monitor: bool,
}

impl<C> Default for Deferred<C> {
    fn default() -> Self {
        Deferred {
            unpark: Vec::new(),
            wake_leader: false,
            notify_results: false,
            drop: Vec::new(),
            wake_monitor: false,
        }
    }
}

impl<C: Send + 'static> Core<C> {
    pub(crate) fn new(concurrency: usize, driver: Driver, detect: bool) -> Arc<Core<C>> {
        let core = Arc::new_cyclic(|me| Core {
            id: NEXT_PORT_ID.fetch_add(1, Ordering::Relaxed),
            concurrency,
            detect,
            detected: CacheLine(Detected {
                now: AtomicUsize::new(0),
                total: AtomicU64::new(0),
            }),
            driver,
            state: Mutex::new(State {
                waiters: Vec::new(),
                leader: false,
                leader_woken: false,
                leader_for_result: false,
                closed: false,
            }),
            queue: SegQueue::new(),
            hot: CacheLine(Hot {
                running: AtomicUsize::new(0),
                sleepers: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
            }),
            dequeued: std::array::from_fn(|_| CacheLine(AtomicU64::new(0))),
            in_flight: CacheLine(AtomicUsize::new(0)),
            results: Results::new(),
            me: me.clone(),
        });
        if detect {
            monitor::watch_port(Arc::downgrade(&core) as Weak<dyn Accounting>);
        }
        core
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.hot.closed.load(Ordering::Acquire)
    }

    pub(crate) fn stats(&self) -> PortStats {
        let st = self.state.lock();
        PortStats {
            queued: self.queue.len(),
            running: self.hot.running.load(Ordering::SeqCst),
            parked: st.waiters.len(),
            leader: st.leader,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            blocked: self.detected.now.load(Ordering::Relaxed),
            blocked_total: self.detected.total.load(Ordering::Relaxed),
            dequeued: self
                .dequeued
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .sum(),
        }
    }

    /// Hands an operation to the backend. On refusal everything comes back.
    pub(crate) fn submit(&self, rec: RecordBox<C>) -> Result<Token, Rejected<C>> {
        let token = rec.io.token;
        let raw = rec.into_raw();
        // SAFETY: `raw` comes from `RecordBox::into_raw`, so it is valid and
        // unaliased; `io` is its first field.
        let io = unsafe { &mut (*raw.as_ptr()).io };
        io.prepare();
        // Register before submitting (the op may complete at once), under
        // the lock that `Handle::close` sets `closed` with.
        let owner = io.owner.clone();
        {
            let mut reg = owner.inflight();
            if reg.closed {
                drop(reg);
                // SAFETY: never handed to the driver: still ours.
                let mut rec = unsafe { RecordBox::from_raw(raw) };
                let bufs = mem::take(&mut rec.io.bufs);
                let ctx = rec.ctx.take().expect("context present until completion");
                return Err(Rejected::new(handle_closed(), ctx, bufs));
            }
            reg.ops.insert(
                token.0,
                InFlightOp {
                    ptr: OpPtr(std::ptr::NonNull::from(&mut *io)),
                    cancelled: false,
                },
            );
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // A thread running for this port will come back to the port (next
        // `get`, blocking scope or exit: `running.rs`), and the pending
        // submission is made then; any other thread submits at once.
        let defer = self.driver.can_defer() && running::defer_submit(self.id);
        let notify = io.notify;
        let op = std::ptr::NonNull::from(io);
        let mut spill = Vec::new();
        let r = self.driver.submit(op, defer, &mut spill);
        if defer && r.is_ok() && running::deferred() {
            // The monitor counted this thread out meanwhile and may have
            // flushed before this op was queued (running.rs).
            self.driver.flush(&mut spill);
        }
        if notify == Notify::SkipOnSuccess {
            // Succeeded during this call (the backend reported it in
            // `spill`): no packet, the result is kept for `take_result`.
            if let Some(i) = spill.iter().position(|c| c.op == op && c.res >= 0) {
                let c = spill.swap_remove(i);
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                // SAFETY: reported once by this port's driver, for a record
                // `submit` made (an `OpRecord<C>`).
                let p = unsafe { Packet::completed(c) };
                self.results.store(token.0, p);
            }
        }
        self.absorb(&mut spill);
        match r {
            // From here on the record belongs to the backend: not touched.
            Ok(()) => Ok(token),
            Err(error) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                owner.inflight().ops.remove(&token.0);
                // SAFETY: the driver refused the op, so ownership never left us.
                let mut rec = unsafe { RecordBox::from_raw(raw) };
                let bufs = mem::take(&mut rec.io.bufs);
                let ctx = rec.ctx.take().expect("context present until completion");
                Err(Rejected::new(error, ctx, bufs))
            }
        }
    }

    /// Cancels one operation (`token`) or all operations of the fd `owner`
    /// (spec §6.25). Returns how many were in flight; `NotFound` if none.
    ///
    /// The kernel's cancel request is made while holding the fd's in-flight
    /// lock: the named records cannot complete into packets (and be freed,
    /// and their addresses reused) until it has been handed to the backend.
    pub(crate) fn cancel(&self, owner: &FdOwner, token: Option<Token>) -> io::Result<usize> {
        let mut spill = Vec::new();
        let n = {
            let mut reg = owner.inflight();
            let mut targets: Vec<OpPtr> = Vec::new();
            let mut mark = |op: &mut InFlightOp| {
                op.cancelled = true;
                targets.push(op.ptr);
            };
            match token {
                Some(t) => reg.ops.get_mut(&t.0).into_iter().for_each(&mut mark),
                None => reg.ops.values_mut().for_each(&mut mark),
            }
            if targets.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let all = token.is_none();
            self.driver.cancel(owner, &targets, all, &mut spill)?;
            targets.len()
        };
        self.absorb(&mut spill);
        Ok(n)
    }

    /// The kept result of operation `token` (`results.rs`), if it is there;
    /// collects ready completions first, without blocking.
    pub(crate) fn take_result(&self, token: Token) -> Option<Packet<C>> {
        if let Some(p) = self.results.take(token.0) {
            return Some(p);
        }
        let mut later = Deferred::default();
        let st = self.state.lock();
        let st = self.reap_unlocked(st, &mut later);
        drop(st);
        self.run(later);
        self.results.take(token.0)
    }

    /// Waits for the kept result of operation `token` (`GetOverlappedResult`
    /// with `bWait`).
    ///
    /// The thread counts as blocked meanwhile (a blocking scope, which also
    /// submits what it deferred). If no thread leads (waits in the kernel
    /// for the port), it takes the leadership itself for one kernel wait at
    /// a time and queues what it reaps as any leader does; otherwise it
    /// sleeps until a result is stored or the leadership becomes free
    /// (`dispatch` signals both), then looks again.
    pub(crate) fn wait_result(
        &self,
        token: Token,
        timeout: Option<Duration>,
    ) -> Result<Packet<C>, GetError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let _scope = BlockingGuard::enter();
        loop {
            if let Some(p) = self.results.take(token.0) {
                return Ok(p);
            }
            if self.is_closed() {
                return Err(GetError::Closed);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(GetError::Timeout);
            }
            let mut later = Deferred::default();
            let mut st = self.state.lock();
            if st.closed {
                return Err(GetError::Closed);
            }
            // Results of completions are stored under the state lock: look
            // again now, or one stored since the look above would be missed
            // by the sleep below.
            if let Some(p) = self.results.take(token.0) {
                return Ok(p);
            }
            if !st.leader {
                st.leader = true;
                st.leader_woken = false;
                st.leader_for_result = true;
                self.publish_sleepers(&st);
                let r;
                (st, r) = self.lead_once(st, deadline, &mut later);
                st.leader = false;
                st.leader_for_result = false;
                self.dispatch(&mut st, &mut later);
                drop(st);
                self.run(later);
                r.map_err(GetError::Io)?;
                continue;
            }
            // Another thread leads: it reaps, and stores our result, or the
            // leadership becomes free; both move the epoch read here, under
            // the state lock, before it can happen.
            let seen = self.results.epoch();
            self.results.waiters.fetch_add(1, Ordering::SeqCst);
            drop(st);
            self.run(later);
            self.results.wait_changed(seen, deadline);
            self.results.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Queues a user packet.
    pub(crate) fn post(&self, key: usize, bytes: usize, context: C) -> Result<(), Rejected<C>> {
        if self.hot.closed.load(Ordering::SeqCst) {
            return Err(Rejected::new(port_closed(), context, Buffers::None));
        }
        self.queue.push(Packet::posted(key, bytes, context));
        // Push, fence, then look (module docs, "No lost wake-up").
        fence(Ordering::SeqCst);
        if self.hot.closed.load(Ordering::SeqCst) {
            // `close` may have emptied the queue before this push landed.
            self.drain_closed();
            return Ok(());
        }
        if self.hot.running.load(Ordering::SeqCst) >= self.concurrency {
            // Every slot is held: no hand-off to make. A packet now waits
            // for a slot: if the blocked-thread monitor sleeps, wake it
            // (after the fence above; monitor.rs, "When the monitor looks").
            if self.detect {
                monitor::slots_full();
            }
            return Ok(());
        }
        if self.hot.sleepers.load(Ordering::SeqCst) == 0 {
            // Nobody sleeps: no hand-off to make.
            return Ok(());
        }
        let mut later = Deferred::default();
        let mut st = self.state.lock();
        self.dispatch(&mut st, &mut later);
        drop(st);
        self.run(later);
        Ok(())
    }

    /// Reserves a slot: `running += 1` if `running < concurrency`.
    fn try_reserve(&self) -> bool {
        let mut r = self.hot.running.load(Ordering::SeqCst);
        while r < self.concurrency {
            match self.hot.running.compare_exchange_weak(
                r,
                r + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(now) => r = now,
            }
        }
        false
    }

    /// A `get` reserved a slot and took a packet with it. If that took the
    /// last slot while more packets wait, the blocked-thread monitor must
    /// look (monitor.rs, "When the monitor looks"). Common case: one load
    /// of `running`, which the reservation just wrote (in cache), and a
    /// branch not taken while slots are free.
    fn took_slot(&self) {
        if self.detect && self.hot.running.load(Ordering::Relaxed) >= self.concurrency {
            // Reservation (a SeqCst RMW), fence, then the looks.
            fence(Ordering::SeqCst);
            if !self.queue.is_empty() {
                monitor::slots_full();
            }
        }
    }

    /// Gives a slot back. The caller must look at the queue afterwards
    /// (take a packet itself or `dispatch`): a poster may have seen the slot
    /// held and left its packet for whoever frees one.
    fn release_slot(&self) {
        let _ = self
            .hot
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                Some(r.saturating_sub(1))
            });
        fence(Ordering::SeqCst);
    }

    /// Publishes the number of sleeping threads for posters, then fences:
    /// the caller looks at the queue afterwards.
    fn publish_sleepers(&self, st: &State<C>) {
        let n = st.waiters.len() + usize::from(st.leader && !st.leader_woken);
        self.hot.sleepers.store(n, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Takes a packet with a slot the caller holds (it runs for the port, or
    /// reserved one).
    fn pop_counted(&self) -> Option<Packet<C>> {
        let p = self.queue.pop()?;
        self.dequeued[stripe()].fetch_add(1, Ordering::Relaxed);
        Some(p)
    }

    /// Drops whatever is queued on a closed port (after the caller's fence).
    fn drain_closed(&self) {
        while let Some(p) = self.queue.pop() {
            drop(p);
        }
    }

    /// Dequeues one packet for the calling thread (spec §4.17, §1.3–1.5).
    pub(crate) fn get(&self, timeout: Option<Duration>) -> Result<Packet<C>, GetError> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let start = running::begin_get(self.id);
        // This thread's deferred submissions: submitted by the kernel wait if
        // it leads, else explicitly before it parks or returns.
        let mut pending = start.pending;
        // Fast path, without the lock: a running thread asking again takes
        // the next packet with the slot it holds (spec §1.5) — unless the
        // count is above the concurrency value (a blocked thread came
        // back): counted out, it would not be below the value, so it
        // gives the slot up. Another thread reserves a slot first.
        let mut was_running = start.was_running;
        if was_running && self.hot.running.load(Ordering::SeqCst) > self.concurrency {
            // The loop below looks at the queue after this release.
            self.release_slot();
            was_running = false;
        }
        if !self.hot.closed.load(Ordering::SeqCst) && (was_running || self.try_reserve()) {
            if let Some(p) = self.pop_counted() {
                if !was_running {
                    // A slot was taken: the port may now be full with
                    // packets waiting (monitor.rs).
                    self.took_slot();
                }
                if pending {
                    self.flush();
                }
                running::counted(self.id, || self.me.clone() as Weak<dyn Accounting>);
                return Ok(p);
            }
            // Nothing queued: it stops counting (spec §1.4). The loop below
            // looks at the queue again.
            self.release_slot();
        } else if was_running {
            self.release_slot();
        }
        let mut later = Deferred::default();
        let mut st = self.state.lock();
        // `leading`: this thread owns `st.leader`.
        let mut leading = false;
        let outcome = loop {
            if st.closed {
                if leading {
                    st.leader = false;
                }
                break Err(GetError::Closed);
            }
            if self.try_reserve() {
                if let Some(p) = self.pop_counted() {
                    if leading {
                        st.leader = false;
                    }
                    self.dispatch(&mut st, &mut later);
                    break Ok(p);
                }
                self.release_slot();
                // Nothing queued: collect ready completions without blocking.
                st = self.reap_unlocked(st, &mut later);
                if !self.queue.is_empty() || st.closed {
                    continue;
                }
            }
            if leading && self.hot.running.load(Ordering::SeqCst) >= self.concurrency {
                // Promoted, but the slots filled meanwhile: nothing to lead for.
                st.leader = false;
                leading = false;
                self.dispatch(&mut st, &mut later);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if leading {
                    st.leader = false;
                    self.dispatch(&mut st, &mut later);
                }
                break Err(GetError::Timeout);
            }
            if !leading && !st.leader && self.hot.running.load(Ordering::SeqCst) < self.concurrency
            {
                st.leader = true;
                st.leader_woken = false;
                leading = true;
            }
            if leading {
                // From here until it re-takes the lock, a post must wake it.
                st.leader_woken = false;
                // Publish, fence, look (module docs): a post that saw no
                // sleeper left its packet for this look.
                self.publish_sleepers(&st);
                if !self.queue.is_empty()
                    && self.hot.running.load(Ordering::SeqCst) < self.concurrency
                {
                    continue;
                }
                // The wait submits whatever the SQ holds when it enters the
                // kernel; `pending` stays set in case it returned without
                // entering (the final flush then finds little or nothing).
                // Still the leader while queueing what it reaped: `dispatch`
                // hands the packets to parked threads, top first, without
                // promoting the top one to lead (which would wake it only to
                // wait in the kernel, and put this older thread on top of
                // the stack, breaking LIFO). The loop then lets this thread
                // take a packet or lead on.
                let r;
                (st, r) = self.lead_once(st, deadline, &mut later);
                if let Err(e) = r {
                    st.leader = false;
                    self.dispatch(&mut st, &mut later);
                    break Err(GetError::Io(e));
                }
                continue;
            }
            // Park (LIFO), after a last look at the queue above (done under
            // this same lock hold: no lost wake-up).
            let me = Arc::new(Waiter::new());
            st.waiters.push(me.clone());
            self.dispatch(&mut st, &mut later);
            drop(st);
            self.run(mem::take(&mut later));
            if mem::take(&mut pending) {
                // Nobody else would submit them while this thread sleeps.
                self.flush();
            }
            match me.park(deadline) {
                Some(Wake::Packet(p)) => {
                    // The giver counted this thread as running already.
                    running::counted(self.id, || self.me.clone() as Weak<dyn Accounting>);
                    return Ok(p);
                }
                Some(Wake::Closed) => return Err(GetError::Closed),
                Some(Wake::Lead) => {
                    st = self.state.lock();
                    leading = true;
                }
                None => {
                    // Timed out: settle the race with a giver under the lock.
                    st = self.state.lock();
                    match me.take() {
                        Some(Wake::Packet(p)) => break Ok(p),
                        Some(Wake::Closed) => break Err(GetError::Closed),
                        Some(Wake::Lead) => leading = true,
                        None => {
                            let pos = st.waiters.iter().rposition(|w| Arc::ptr_eq(w, &me));
                            st.waiters
                                .remove(pos.expect("a waiter given nothing is still on the stack"));
                            self.publish_sleepers(&st);
                        }
                    }
                }
            }
        };
        drop(st);
        self.run(later);
        if pending {
            self.flush();
        }
        if outcome.is_ok() {
            running::counted(self.id, || self.me.clone() as Weak<dyn Accounting>);
        }
        outcome
    }

    /// Submits every operation left pending in the backend.
    fn flush(&self) {
        let mut spill = Vec::new();
        self.driver.flush(&mut spill);
        self.absorb(&mut spill);
    }

    /// One kernel wait by the leader (the caller holds `st.leader`): waits
    /// without the lock (after doing the deferred work), re-locks, marks
    /// itself awake (so `dispatch` sends it no wake-up while it queues), and
    /// queues what it reaped. Returns the re-taken lock and the wait's
    /// outcome.
    fn lead_once<'a>(
        &'a self,
        st: MutexGuard<'a, State<C>>,
        deadline: Option<Instant>,
        later: &mut Deferred<C>,
    ) -> (MutexGuard<'a, State<C>>, io::Result<bool>) {
        drop(st);
        self.run(mem::take(later));
        let mut done = Scratch::take();
        let r = self.driver.wait(deadline, &mut done);
        let mut st = self.state.lock();
        st.leader_woken = true;
        self.enqueue(&mut st, &mut done, later);
        (st, r)
    }

    /// Takes up to `max - 1` more packets for a thread that just got one
    /// (spec §4.18: what is queued, without waiting).
    pub(crate) fn take_more(&self, out: &mut Vec<Packet<C>>, max: usize) {
        if max == 0 {
            return;
        }
        let mut want = max;
        while want > 0 {
            // The caller runs for the port: it takes these with its slot.
            if let Some(p) = self.pop_counted() {
                out.push(p);
                want -= 1;
                continue;
            }
            let mut later = Deferred::default();
            let st = self.state.lock();
            let st = self.reap_unlocked(st, &mut later);
            drop(st);
            self.run(later);
            if self.queue.is_empty() {
                break;
            }
        }
    }

    /// Reaps ready completions with the lock released, then re-locks and
    /// queues them.
    fn reap_unlocked<'a>(
        &'a self,
        st: MutexGuard<'a, State<C>>,
        later: &mut Deferred<C>,
    ) -> MutexGuard<'a, State<C>> {
        drop(st);
        let mut done = Scratch::take();
        let swallowed_wake = self.driver.reap(&mut done);
        let mut st = self.state.lock();
        if swallowed_wake {
            // The leader's wake-up was consumed here: it may still sleep in
            // the kernel. Let `dispatch` send another if it is still needed.
            st.leader_woken = false;
            self.wake_result_leader(&mut st, later);
        }
        if !done.is_empty() {
            self.enqueue(&mut st, &mut done, later);
        } else if swallowed_wake {
            self.dispatch(&mut st, later);
        }
        st
    }

    /// Turns completions into packets and queues them (or drops them after
    /// the lock if the port is closed), then dispatches.
    /// Empties `done`.
    fn enqueue(&self, st: &mut State<C>, done: &mut Vec<Completion>, later: &mut Deferred<C>) {
        if done.is_empty() {
            return;
        }
        self.in_flight.fetch_sub(done.len(), Ordering::AcqRel);
        for c in done.drain(..) {
            // SAFETY: every op this port's driver reports was submitted by
            // `Core::<C>::submit` (so it is an `OpRecord<C>`), and the
            // driver reports each exactly once.
            let p = unsafe { Packet::completed(c) };
            if st.closed {
                later.drop.push(p);
            } else if p.notify() == Notify::Result {
                let token = p.token().expect("an operation's packet has a token");
                self.results.store(token.0, p);
                self.wake_result_leader(st, later);
            } else {
                self.queue.push(p);
            }
        }
        self.dispatch(st, later);
    }

    /// A leader waiting in the kernel for a result may have had it reaped
    /// and stored by another thread (or its wake-up swallowed): wake it to
    /// look at the results.
    fn wake_result_leader(&self, st: &mut State<C>, later: &mut Deferred<C>) {
        if st.leader && st.leader_for_result && !st.leader_woken {
            st.leader_woken = true;
            later.wake_leader = true;
        }
    }

    /// Restores invariant 2 after any change of the state.
    fn dispatch(&self, st: &mut State<C>, later: &mut Deferred<C>) {
        if !st.leader && self.results.waiters.load(Ordering::SeqCst) > 0 {
            later.notify_results = true;
        }
        if st.closed {
            // A leader still in the kernel must come out and see `closed`.
            if st.leader && !st.leader_woken {
                st.leader_woken = true;
                later.wake_leader = true;
            }
            return;
        }
        // Publish, fence, then look at the queue (module docs).
        self.publish_sleepers(st);
        while !st.waiters.is_empty() && !self.queue.is_empty() {
            if !self.try_reserve() {
                break;
            }
            let Some(p) = self.pop_counted() else {
                // Taken meanwhile by a thread holding a slot. Give the
                // reservation back and look again.
                self.release_slot();
                continue;
            };
            let w = st.waiters.pop().expect("a parked thread");
            w.give(Wake::Packet(p));
            later.unpark.push(w);
        }
        let free = self.hot.running.load(Ordering::SeqCst) < self.concurrency;
        if !free && self.detect {
            // Every slot is held (after this call's reservations, or
            // packets it was handed to queue): wake the monitor if packets
            // wait. The fence orders the reservations and the pushes before
            // the look at `asleep` (monitor.rs, "When the monitor looks").
            fence(Ordering::SeqCst);
            if !self.queue.is_empty() && monitor::asleep() {
                later.wake_monitor = true;
            }
        }
        if free && !st.leader {
            if let Some(w) = st.waiters.pop() {
                st.leader = true;
                st.leader_woken = false;
                w.give(Wake::Lead);
                later.unpark.push(w);
            }
        }
        if free && !self.queue.is_empty() && st.leader && !st.leader_woken {
            // No parked thread, but the leader may take these: wake it.
            st.leader_woken = true;
            later.wake_leader = true;
        }
        // Only decreases since the publication above: no fence needed.
        let n = st.waiters.len() + usize::from(st.leader && !st.leader_woken);
        self.hot.sleepers.store(n, Ordering::SeqCst);
    }

    /// Does the work collected under the lock.
    fn run(&self, later: Deferred<C>) {
        for w in &later.unpark {
            w.unpark();
        }
        if later.notify_results {
            self.results.notify();
        }
        if later.wake_monitor {
            monitor::slots_full();
        }
        if later.wake_leader {
            let mut spill = Vec::new();
            self.driver.wake(&mut spill);
            self.absorb(&mut spill);
        }
        drop(later.drop);
    }

    /// Queues completions a backend collected as a side effect.
    fn absorb(&self, spill: &mut Vec<Completion>) {
        if spill.is_empty() {
            return;
        }
        let mut later = Deferred::default();
        let mut st = self.state.lock();
        self.enqueue(&mut st, spill, &mut later);
        drop(st);
        self.run(later);
    }

    /// Closes the port: waiters get `Closed`, queued packets are dropped,
    /// in-flight operations are cancelled and reaped (their buffers and
    /// contexts dropped exactly once). Returns once nothing is in flight.
    pub(crate) fn close(&self) {
        if self.hot.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut spill = Vec::new();
        self.driver.shutdown(&mut spill);
        let mut later = Deferred::default();
        let mut st = self.state.lock();
        st.closed = true;
        let waiters = mem::take(&mut st.waiters);
        for w in &waiters {
            w.give(Wake::Closed);
        }
        // Wakes the leader, if any, so it sees `closed`.
        self.dispatch(&mut st, &mut later);
        self.enqueue(&mut st, &mut spill, &mut later);
        drop(st);
        for w in &waiters {
            w.unpark();
        }
        // `closed` is set: fence, then empty the queue (a poster racing with
        // this sees `closed` after its push and empties it too).
        fence(Ordering::SeqCst);
        self.drain_closed();
        drop(self.results.close());
        self.run(later);
        // Reap until every cancelled op is back. The leader, if any, reaps
        // too (and drops what it gets), so wait in short slices. Each wait
        // may consume the leader's wake-up, so re-arm it after each one.
        while self.in_flight.load(Ordering::Acquire) > 0 {
            let mut done = Vec::new();
            let r = self
                .driver
                .wait(Some(Instant::now() + Duration::from_millis(20)), &mut done);
            let mut later = Deferred::default();
            let mut st = self.state.lock();
            self.enqueue(&mut st, &mut done, &mut later);
            st.leader_woken = false;
            self.dispatch(&mut st, &mut later);
            drop(st);
            self.run(later);
            if let Err(e) = r {
                tracing::error!(
                    "completion port: reaping cancelled operations at close failed: {e}"
                );
                break;
            }
        }
    }
}

impl<C: Send + 'static> Accounting for Core<C> {
    fn count_down(&self) {
        let mut later = Deferred::default();
        let mut st = self.state.lock();
        // Free the slot, then look at the queue (`dispatch`).
        self.release_slot();
        self.dispatch(&mut st, &mut later);
        drop(st);
        self.run(later);
    }

    fn count_up(&self) {
        self.hot.running.fetch_add(1, Ordering::SeqCst);
        if self.detect {
            // Increment, fence, look (monitor.rs, "When the monitor looks").
            fence(Ordering::SeqCst);
            if self.contended() {
                monitor::slots_full();
            }
        }
    }

    fn contended(&self) -> bool {
        self.hot.running.load(Ordering::SeqCst) >= self.concurrency && !self.queue.is_empty()
    }

    fn flush(&self) {
        Core::flush(self);
    }

    fn detects_blocking(&self) -> bool {
        self.detect
    }

    fn note_detected(&self, entered: bool) {
        if entered {
            self.detected.now.fetch_add(1, Ordering::Relaxed);
            self.detected.total.fetch_add(1, Ordering::Relaxed);
        } else {
            self.detected.now.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
