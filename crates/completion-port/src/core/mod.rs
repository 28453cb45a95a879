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
//!   already runs (a running thread asking again keeps its slot, windows-semantics §1.5)
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
//!    collected in [`AfterUnlock`] and done after release (a context's `Drop`
//!    may call back into the port).
//!
//! # Where the code is
//! Here: the state, the slots, `post`, `get`/`take_more` and `dispatch` —
//! where a post queues a packet, and where packets are handed over and
//! dequeued. The rest of `impl Core`, in submodules:
//! - `core/reap.rs`: from the kernel into the queue (the leader's wait,
//!   reaping, `enqueue`: where a completion's packet is queued);
//! - `core/after_unlock.rs`: [`AfterUnlock`] and `run` (invariant 5);
//! - `core/submit.rs`: `submit` and `cancel` of operations;
//! - `core/wait_result.rs`: `take_result`, `wait_result`;
//! - `core/close.rs`: `close` (invariant 4);
//! - `core/accounting.rs`: the [`Accounting`] hooks (a thread counted down
//!   or up by `running.rs` or the blocked-thread monitor).

mod accounting;
mod after_unlock;
mod close;
mod direct;
pub(crate) mod fd;
mod file_stat;
mod fork;
mod lanes;
pub(crate) mod monitor;
mod packet;
mod port_ops;
mod progress;
mod reap;
pub(crate) mod record;
mod results;
pub(crate) mod running;
mod stats;
mod submit;
mod token;
mod wait_result;
mod waiter;

#[cfg(all(test, loom))]
mod loom;

use std::mem;
// Port ids and statistics are not part of any protocol: plain `std`
// atomics, invisible to (and not explored by) the loom models.
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

pub use self::file_stat::FileStat;
pub use self::monitor::BlockingDetection;
pub use self::packet::{Accepted, Packet, PacketKind, PacketParts};
pub use self::running::BlockingGuard;
pub use self::stats::PortStats;
pub(crate) use self::submit::CloseFd;
pub use self::token::Token;

use self::after_unlock::AfterUnlock;
use self::direct::Direct;
use self::results::Results;
use self::running::Accounting;
use self::waiter::{Waiter, Wake};
use crate::buf::Buffers;
use crate::driver::Driver;
use crate::error::{port_closed, GetError, Rejected};
use crate::sync::{fence, AtomicBool, AtomicUsize, Mutex, Ordering, Queue};

static NEXT_PORT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct Core<C> {
    id: u64,
    pub(crate) concurrency: usize,
    /// Threads running for this port are watched by the blocked-thread
    /// monitor (`monitor.rs`).
    pub(crate) detect: bool,
    /// Threads now counted out because the monitor saw them blocked, and
    /// how many times that happened (statistics).
    detected: CachePadded<Detected>,
    pub(crate) driver: Driver,
    state: Mutex<State<C>>,
    /// FIFO of packets ready to be dequeued (lock-free; see the module docs).
    queue: Queue<Packet<C>>,
    /// What every post reads: kept on a cache line of its own, which a get
    /// that finds a packet does not write.
    hot: CachePadded<Hot>,
    /// Packets dequeued since creation (statistics), counted per thread
    /// stripe so that concurrent getters do not share a cache line.
    dequeued: [CachePadded<AtomicU64>; DEQUEUED_STRIPES],
    /// Operations handed to the driver and not yet turned into packets.
    in_flight: CachePadded<AtomicUsize>,
    /// Results kept by token instead of queued (`results.rs`).
    results: Results<C>,
    /// Counts the times the backend was waited on, polled, or reaped
    /// completely (`Reaped::complete`): the
    /// monitor polls a port whose count stood still for a whole tick while
    /// operations are in flight and nobody leads (`progress.rs`).
    reaped: AtomicU64,
    /// The monitor's last look at `reaped` (only the monitor writes it).
    reaped_seen: AtomicU64,
    /// Run on every operation's context and result when its completion is
    /// collected, before its packet is queued
    /// ([`PortBuilder::on_completion`](crate::PortBuilder::on_completion)).
    hook: Option<CompletionHook<C>>,
    /// The port's own fd, for timers and opens (`port_ops.rs`).
    own: std::sync::OnceLock<Arc<fd::FdOwner>>,
    me: Weak<Core<C>>,
    /// The process and fork generation that created the port (`fork.rs`).
    birth: fork::Birth,
}

/// A port's completion hook (see [`Core::complete`]).
pub(crate) type CompletionHook<C> = Box<dyn Fn(&mut Packet<C>) -> Delivery + Send + Sync>;

/// What becomes of an operation's packet once the completion hook
/// ([`PortBuilder::on_completion`](crate::PortBuilder::on_completion)) ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued (or its result kept by token), as without a hook.
    Deliver,
    /// Dropped by the port instead: no packet will come for this
    /// operation. For a hook that started a follow-up operation whose
    /// packet stands for this one, or that handed the result over itself.
    Discard,
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
    /// Parked threads (`State::waiters.len()`), written with `sleepers`:
    /// a leader hands its packets straight to itself only when nobody is
    /// parked (`direct.rs`).
    parked: AtomicUsize,
    /// Set once by `close` (also mirrored in `State::closed`).
    closed: AtomicBool,
    /// Mirrors `State::leader` for readers without the lock: a thread
    /// holds the leadership, so the ring is (or is about to be) watched by
    /// a kernel wait that submits what the SQ holds (`set_leader`).
    leading: AtomicBool,
}

/// Statistics of blocked-thread detection.
struct Detected {
    now: std::sync::atomic::AtomicUsize,
    total: AtomicU64,
}

const DEQUEUED_STRIPES: usize = 4;

/// This thread's stripe of the `dequeued` counters.
fn stripe() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
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

impl<C: Send + 'static> Core<C> {
    pub(crate) fn new(
        concurrency: usize,
        driver: Driver,
        detect: bool,
        hook: Option<CompletionHook<C>>,
    ) -> Arc<Core<C>> {
        let core = Arc::new_cyclic(|me| Core {
            id: NEXT_PORT_ID.fetch_add(1, Ordering::Relaxed),
            concurrency,
            detect,
            detected: CachePadded::new(Detected {
                now: std::sync::atomic::AtomicUsize::new(0),
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
            queue: Queue::new(),
            hot: CachePadded::new(Hot {
                running: AtomicUsize::new(0),
                sleepers: AtomicUsize::new(0),
                parked: AtomicUsize::new(0),
                closed: AtomicBool::new(false),
                leading: AtomicBool::new(false),
            }),
            dequeued: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            in_flight: CachePadded::new(AtomicUsize::new(0)),
            results: Results::new(),
            reaped: AtomicU64::new(0),
            reaped_seen: AtomicU64::new(0),
            hook,
            own: std::sync::OnceLock::new(),
            me: me.clone(),
            birth: fork::Birth::now(),
        });
        // Every port: the monitor keeps ports moving that nobody waits on
        // (`progress.rs`), and watches the threads of those with detection.
        monitor::watch_port(Arc::downgrade(&core) as Weak<dyn Accounting>);
        core
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.hot.closed.load(Ordering::Acquire)
    }

    /// In a child forked after the port was created: the error every call
    /// gets there (`fork.rs`); `None` in the creator (one relaxed load).
    #[inline]
    pub(crate) fn fork_refusal(&self) -> Option<std::io::Error> {
        self.birth.forked().then(|| self.birth.error())
    }

    /// Whether this is a child forked after the port was created.
    #[inline]
    pub(crate) fn forked(&self) -> bool {
        self.birth.forked()
    }

    /// Queues a user packet.
    pub(crate) fn post(&self, key: usize, bytes: usize, context: C) -> Result<(), Rejected<C>> {
        if let Some(e) = self.fork_refusal() {
            return Err(Rejected::new(e, context, Buffers::None));
        }
        if self.hot.closed.load(Ordering::SeqCst) {
            return Err(Rejected::new(port_closed(), context, Buffers::None));
        }
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            // Operations that ended before this post are queued ahead of
            // it, as Windows queues a packet when its I/O ends: collect
            // what the backend holds first (windows-semantics §3.15).
            // Best effort: a thread collecting right now queues its batch
            // when it is done, which may be after this packet.
            let c = self.collect(false);
            if c.needs_lock() {
                let mut later = AfterUnlock::default();
                let mut st = self.state.lock();
                self.after_collect(&mut st, c, &mut later);
                drop(st);
                self.run(later);
            }
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
                monitor::wake();
            }
            return Ok(());
        }
        if self.hot.sleepers.load(Ordering::SeqCst) == 0 {
            // Nobody sleeps: no hand-off to make.
            return Ok(());
        }
        let mut later = AfterUnlock::default();
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
                monitor::wake();
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
        self.hot.parked.store(st.waiters.len(), Ordering::SeqCst);
        self.hot.sleepers.store(n, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// Takes a packet with a slot the caller holds (it runs for the port, or
    /// reserved one). `None` also when the port is closed by now: the
    /// packet goes to `graveyard` (dropped by the caller, after any lock),
    /// not to a thread. Close drops what is queued, and a completion the
    /// close itself caused (an operation it cancelled) can be pushed by a
    /// reaping thread and popped here before the close's own drain sees it
    /// (found by the model test): such a packet must not come out of a
    /// closed port.
    fn pop_counted(&self, graveyard: &mut Vec<Packet<C>>) -> Option<Packet<C>> {
        let p = self.queue.pop()?;
        if self.hot.closed.load(Ordering::SeqCst) {
            graveyard.push(p);
            return None;
        }
        self.dequeued[stripe()].fetch_add(1, Ordering::Relaxed);
        Some(p)
    }

    /// Drops whatever is queued on a closed port (after the caller's fence).
    fn drain_closed(&self) {
        while let Some(p) = self.queue.pop() {
            drop(p);
        }
    }

    /// Dequeues one packet for the calling thread (windows-semantics §4.17, §1.3–1.5).
    pub(crate) fn get(&self, timeout: Option<Duration>) -> Result<Packet<C>, GetError> {
        let mut one = Direct::One(None);
        self.get_into(timeout, &mut one)?;
        match one {
            Direct::One(Some(p)) => Ok(p),
            _ => unreachable!("a get that succeeded took a packet"),
        }
    }

    /// Dequeues up to `max` (≥ 1) packets into `out`, waiting for the first
    /// (windows-semantics §4.18). Returns how many.
    pub(crate) fn get_many(
        &self,
        out: &mut Vec<Packet<C>>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        let before = out.len();
        let mut many = Direct::Many {
            out: &mut *out,
            max,
            taken: 0,
        };
        self.get_into(timeout, &mut many)?;
        let taken = many.taken();
        self.take_more(out, max - taken);
        Ok(out.len() - before)
    }

    /// `get` and `get_many`: takes at least one packet into `direct`
    /// (more only straight from the leader's wait: `direct.rs`).
    fn get_into(
        &self,
        timeout: Option<Duration>,
        direct: &mut Direct<'_, C>,
    ) -> Result<(), GetError> {
        if let Some(e) = self.fork_refusal() {
            return Err(GetError::Io(e));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let start = running::begin_get(self.id);
        // This thread's deferred submissions: submitted by the kernel wait if
        // it leads, else explicitly before it parks or returns.
        let mut pending = start.pending;
        // Fast path, without the lock: a running thread asking again takes
        // the next packet with the slot it holds (windows-semantics §1.5) — unless the
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
            let mut graveyard = Vec::new();
            if let Some(p) = self.pop_counted(&mut graveyard) {
                if !was_running {
                    // A slot was taken: the port may now be full with
                    // packets waiting (monitor.rs).
                    self.took_slot();
                }
                if pending {
                    self.flush();
                }
                running::counted(self.id, || self.me.clone() as Weak<dyn Accounting>);
                direct.push(p);
                return Ok(());
            }
            // Nothing queued (or closed): it stops counting (windows-semantics
            // §1.4). The loop below looks at the queue again.
            self.release_slot();
            drop(graveyard);
        } else if was_running {
            self.release_slot();
        }
        let mut later = AfterUnlock::default();
        let mut st = self.state.lock();
        // `leading`: this thread owns `st.leader`.
        let mut leading = false;
        let outcome = loop {
            if st.closed {
                if leading {
                    self.set_leader(&mut st, false);
                }
                break Err(GetError::Closed);
            }
            if self.try_reserve() {
                if let Some(p) = self.pop_counted(&mut later.drop) {
                    if leading {
                        self.set_leader(&mut st, false);
                    }
                    self.dispatch(&mut st, &mut later);
                    direct.push(p);
                    break Ok(());
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
                self.set_leader(&mut st, false);
                leading = false;
                self.dispatch(&mut st, &mut later);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                if leading {
                    self.set_leader(&mut st, false);
                    self.dispatch(&mut st, &mut later);
                }
                break Err(GetError::Timeout);
            }
            if !leading && !st.leader && self.hot.running.load(Ordering::SeqCst) < self.concurrency
            {
                self.set_leader(&mut st, true);
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
                (st, r) = self.lead_once(st, deadline, &mut later, Some(&mut *direct));
                if direct.taken() > 0 {
                    // Handed over straight from the wait, with a slot
                    // (`direct.rs`). A wait error with completions is met
                    // again by the next wait.
                    self.set_leader(&mut st, false);
                    self.dispatch(&mut st, &mut later);
                    break Ok(());
                }
                if let Err(e) = r {
                    self.set_leader(&mut st, false);
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
                    direct.push(p);
                    return Ok(());
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
                        Some(Wake::Packet(p)) => {
                            direct.push(p);
                            break Ok(());
                        }
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

    /// Takes up to `max - 1` more packets for a thread that just got one
    /// (windows-semantics §4.18: what is queued, without waiting).
    pub(crate) fn take_more(&self, out: &mut Vec<Packet<C>>, max: usize) {
        if max == 0 {
            return;
        }
        let mut want = max;
        while want > 0 {
            // The caller runs for the port: it takes these with its slot.
            let mut graveyard = Vec::new();
            if let Some(p) = self.pop_counted(&mut graveyard) {
                out.push(p);
                want -= 1;
                continue;
            }
            if !graveyard.is_empty() {
                // Closed: nothing more comes out of this port.
                break;
            }
            let mut later = AfterUnlock::default();
            let st = self.state.lock();
            let st = self.reap_unlocked(st, &mut later);
            drop(st);
            self.run(later);
            if self.queue.is_empty() {
                break;
            }
        }
    }

    /// Restores invariant 2 after any change of the state.
    fn dispatch(&self, st: &mut State<C>, later: &mut AfterUnlock<C>) {
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
            let Some(p) = self.pop_counted(&mut later.drop) else {
                // Taken meanwhile by a thread holding a slot (or dropped:
                // the port is closed). Give the reservation back and look
                // again.
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
                self.set_leader(st, true);
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
        self.hot.parked.store(st.waiters.len(), Ordering::SeqCst);
        self.hot.sleepers.store(n, Ordering::SeqCst);
    }
}
