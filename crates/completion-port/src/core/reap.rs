//! From the kernel into the queue: the leader's kernel wait (`lead_once`),
//! reaping or polling without waiting (`collect_unlocked`), operations
//! issued again — orphans, and whole transfers cut short (`settle`) — and
//! `queue_completions`, where a completed operation's packet is born
//! (`complete`) and queued (or its result kept, or, on a closed port,
//! dropped); `absorb` for completions a backend call collected on the
//! side, and `flush` of deferred submissions; plus the per-thread
//! [`Scratch`] buffer the waits reap into.
//!
//! The kernel is waited on and reaped, and packets are queued, without the
//! state lock (as posts are); only the hand-out (`dispatch`, invariant 2 of
//! `core/mod.rs`) runs under it, right after.

use std::cell::Cell;
use std::io;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use std::sync::Arc;

use super::direct::Direct;
use super::record::{Notify, OpRecord};
use super::{AfterUnlock, Core, Delivery, State};
use crate::core::Packet;
use crate::driver::{Completion, Engine, OpKind};
use crate::sync::{fence, MutexGuard, Ordering};

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

/// What a non-blocking collection did ([`Core::collect`]).
pub(super) struct Collected {
    /// It consumed a wake-up meant for the leader.
    swallowed_wake: bool,
    /// It queued packets (or kept results).
    collected: bool,
    /// A result was kept by token.
    kept: bool,
}

impl Collected {
    /// Whether [`Core::after_collect`] has anything to do (under the lock).
    pub(super) fn needs_lock(&self) -> bool {
        self.collected || self.swallowed_wake
    }
}

impl<C: Send + 'static> Core<C> {
    /// Submits every operation left pending in the backend.
    pub(super) fn flush(&self) {
        if self.forked() {
            return; // what the SQ holds is the parent's (`fork.rs`)
        }
        let mut spill = Vec::new();
        self.driver.flush(&mut spill);
        self.absorb(&mut spill);
    }

    /// One kernel wait by the leader (the caller holds `st.leader`): waits
    /// without the lock (after doing the deferred work), re-locks, marks
    /// itself awake (so `dispatch` sends it no wake-up while it queues), and
    /// queues what it reaped — or hands the first packets straight to a
    /// `get` (`direct`: `direct.rs`; it then holds a slot). Returns the
    /// re-taken lock and the wait's outcome.
    pub(super) fn lead_once<'a>(
        &'a self,
        st: MutexGuard<'a, State<C>>,
        deadline: Option<Instant>,
        later: &mut AfterUnlock<C>,
        direct: Option<&mut Direct<'_, C>>,
    ) -> (MutexGuard<'a, State<C>>, io::Result<()>) {
        drop(st);
        self.run(mem::take(later));
        let mut done = Scratch::take();
        let r = self.driver.wait(deadline, &mut done);
        self.reaped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.settle(&mut done);
        let mut kept = match direct {
            Some(d) => self.deliver_direct(&mut done, d, &mut later.drop),
            None => false,
        };
        kept |= self.queue_completions(&mut done);
        let mut st = self.state.lock();
        st.leader_woken = true;
        self.after_queueing(&mut st, kept, later);
        (st, r)
    }

    /// Reaps ready completions with the lock released, then re-locks and
    /// queues them.
    pub(super) fn reap_unlocked<'a>(
        &'a self,
        st: MutexGuard<'a, State<C>>,
        later: &mut AfterUnlock<C>,
    ) -> MutexGuard<'a, State<C>> {
        self.collect_unlocked(st, later, false)
    }

    /// Collects completions with the lock released — reaping (`poll ==
    /// false`) or polling the backend (`Engine::poll`: the non-blocking
    /// version of a leader's wait; `progress.rs`) — then re-locks and
    /// queues them.
    pub(super) fn collect_unlocked<'a>(
        &'a self,
        st: MutexGuard<'a, State<C>>,
        later: &mut AfterUnlock<C>,
        poll: bool,
    ) -> MutexGuard<'a, State<C>> {
        drop(st);
        let c = self.collect(poll);
        let mut st = self.state.lock();
        self.after_collect(&mut st, c, later);
        st
    }

    /// The unlocked half of [`collect_unlocked`](Self::collect_unlocked):
    /// reaps (or polls) the backend and queues what it collected. The
    /// caller then takes the lock for [`after_collect`](Self::after_collect)
    /// when [`Collected::needs_lock`] says so.
    pub(super) fn collect(&self, poll: bool) -> Collected {
        let mut done = Scratch::take();
        let reaped = if poll {
            self.driver.poll(&mut done)
        } else {
            self.driver.reap(&mut done)
        };
        if reaped.complete {
            // Progress the monitor may count on (`progress.rs`).
            self.reaped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.settle(&mut done);
        let collected = !done.is_empty();
        let kept = self.queue_completions(&mut done);
        Collected {
            swallowed_wake: reaped.swallowed_wake,
            collected,
            kept,
        }
    }

    /// The locked half: hands out what [`collect`](Self::collect) queued,
    /// and sends again a wake-up it consumed.
    pub(super) fn after_collect(
        &self,
        st: &mut State<C>,
        c: Collected,
        later: &mut AfterUnlock<C>,
    ) {
        if c.swallowed_wake {
            // The leader's wake-up was consumed here: it may still sleep in
            // the kernel. Let `dispatch` send another if it is still needed.
            st.leader_woken = false;
            self.wake_result_leader(st, later);
        }
        if c.collected {
            self.after_queueing(st, c.kept, later);
        } else if c.swallowed_wake {
            self.dispatch(st, later);
        }
    }

    /// Turns completions into packets and queues them, without the state
    /// lock (as a post does): each record is taken back, its in-flight
    /// entry removed and the completion hook run (`complete`), then the
    /// packet is pushed on the queue, or its result kept by token. On a
    /// closed port (checked after a fence, as `post` does) the queue is
    /// emptied again. `in_flight` drops last, so `close` returns only once
    /// these are queued or dropped. Empties `done`; returns whether a
    /// result was kept (the caller then looks for a leader waiting for
    /// one, under the lock, in `after_queueing`).
    pub(super) fn queue_completions(&self, done: &mut Vec<Completion>) -> bool {
        if done.is_empty() {
            return false;
        }
        let mut n = 0;
        let mut kept = false;
        // `complete` may end more operations (the next of a lane, refused
        // by a closed backend): they join the batch.
        let mut more = Vec::new();
        while !done.is_empty() {
            for c in done.drain(..) {
                n += 1;
                let Some(p) = self.complete(c, &mut more) else {
                    continue;
                };
                kept |= self.keep_or(p, |p| self.queue.push(p));
            }
            done.append(&mut more);
        }
        // Push, fence, then look (core/mod.rs, "No lost wake-up").
        fence(Ordering::SeqCst);
        if self.hot.closed.load(Ordering::SeqCst) {
            self.drain_closed();
        }
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        kept
    }

    /// Where a completed operation's packet goes: a result-by-token
    /// packet is kept in the results map (returns whether it was kept;
    /// `Port::wait_result`), any other is handed to `deliver` (the queue,
    /// or a getter's own `Vec`: `direct.rs`).
    pub(super) fn keep_or(&self, p: Packet<C>, deliver: impl FnOnce(Packet<C>)) -> bool {
        if p.notify() == Notify::Result {
            let token = p.token().expect("an operation's packet has a token");
            self.results.store(token.0, p).is_ok()
        } else {
            deliver(p);
            false
        }
    }

    /// Under the lock, after `queue_completions`: wakes a leader waiting
    /// for a result that was kept, and hands the queued packets out.
    pub(super) fn after_queueing(&self, st: &mut State<C>, kept: bool, later: &mut AfterUnlock<C>) {
        if kept {
            self.wake_result_leader(st, later);
        }
        self.dispatch(st, later);
    }

    /// The packet of a completion the driver reported: the record taken
    /// back and out of its fd's in-flight registry (so no cancel can reach
    /// it any more), the next operation of its lane submitted (`lanes.rs`;
    /// ones that end at once go to `more`), then the completion hook run on
    /// the packet; `None` when the hook discarded it (it is dropped here).
    pub(super) fn complete(&self, c: Completion, more: &mut Vec<Completion>) -> Option<Packet<C>> {
        // SAFETY: every op this port's driver reports was submitted by
        // `Core::<C>::submit` (so it is an `OpRecord<C>`), and the driver
        // reports each exactly once.
        let rec = unsafe { OpRecord::<C>::from_completion(c.op) };
        {
            let mut reg = rec.owner.inflight();
            reg.ops.remove(&rec.token.0);
            if let Some(lane) = rec.lane {
                self.lane_next(&mut reg, lane, more);
            }
        }
        let mut p = Packet::completed(rec, c.res);
        match &self.hook {
            Some(hook) if hook(&mut p) == Delivery::Discard => None,
            _ => Some(p),
        }
    }

    /// A leader waiting in the kernel for a result may have had it reaped
    /// and stored by another thread (or its wake-up swallowed): wake it to
    /// look at the results.
    pub(super) fn wake_result_leader(&self, st: &mut State<C>, later: &mut AfterUnlock<C>) {
        if st.leader && st.leader_for_result && !st.leader_woken {
            st.leader_woken = true;
            later.wake_leader = true;
        }
    }

    /// Queues completions a backend collected as a side effect.
    pub(super) fn absorb(&self, spill: &mut Vec<Completion>) {
        if spill.is_empty() {
            return;
        }
        self.settle(spill);
        let kept = self.queue_completions(spill);
        let mut later = AfterUnlock::default();
        let mut st = self.state.lock();
        self.after_queueing(&mut st, kept, &mut later);
        drop(st);
        self.run(later);
    }
    /// Takes out of `done` the completions that do not end their
    /// operation, and issues those operations again:
    ///
    /// - **Orphans.** io_uring ties each request to the thread that
    ///   submitted it, and when that thread exits the kernel cancels its
    ///   requests that are still waiting (armed polls, queued io-wq work):
    ///   they complete with `ECANCELED`. On Windows an operation outlives
    ///   the thread that issued it. So an `ECANCELED` nobody asked for — the
    ///   op's in-flight entry is not marked cancelled, and the port is open
    ///   (closing cancels everything) — is such an orphan: nothing was
    ///   transferred and the record is intact, so the driver issues it
    ///   again.
    /// - **Whole transfers cut short** (`send_all`, `write_all_at`, the C
    ///   ABI's stream sends): the bytes are counted and the rest is issued
    ///   (`OpIo::advance_whole`); one cancelled meanwhile ends cancelled,
    ///   one past its deadline timed out.
    ///
    /// Decided under the fd's in-flight lock, held until the driver has the
    /// op again, so a user's cancel is either seen here (the op is reported
    /// cancelled) or comes after the resubmission (and reaches it). An op
    /// the driver does not take back (the port closed) ends cancelled.
    pub(super) fn settle(&self, done: &mut Vec<Completion>) {
        let unfinished = |c: &Completion| {
            // SAFETY: reaped and not yet handed back: the record is ours.
            c.res == -libc::ECANCELED || (c.res > 0 && unsafe { c.op.op() }.whole)
        };
        if !done.iter().any(unfinished) || self.is_closed() {
            return;
        }
        let mut spill = Vec::new();
        for c in done.iter_mut().filter(|c| unfinished(c)) {
            let (owner, token) = {
                // SAFETY: ours (above); every op this port's driver reports
                // is an `OpRecord<C>`. Only shared fields are read.
                let rec = unsafe { OpRecord::<C>::peek(c.op) };
                (Arc::as_ptr(&rec.owner), rec.token)
            };
            // SAFETY: the record (ours) keeps its owner alive.
            let reg = unsafe { &*owner }.inflight();
            let cancelled = reg.ops.get(&token.0).is_none_or(|e| e.cancelled);
            // SAFETY: ours, and no other reference to it is alive.
            let io = unsafe { c.op.op() };
            let overdue = io.deadline.is_some_and(|d| Instant::now() >= d);
            let again = if c.res == -libc::ECANCELED {
                if !cancelled && overdue {
                    // Its deadline passed: a linked time-out ended it, or a
                    // timer was cancelled with its thread right as it fired.
                    c.res = if io.kind == OpKind::Timer {
                        -libc::ETIME
                    } else {
                        -libc::ETIMEDOUT
                    };
                }
                !cancelled && !overdue
            } else if io.advance(c.res) {
                // Cut short by a cancel, or by its linked time-out (the
                // kernel then reports the bytes it sent, not `ECANCELED`):
                // it ends here, never issued again past its deadline.
                if cancelled {
                    c.res = -libc::ECANCELED;
                } else if overdue {
                    c.res = -libc::ETIMEDOUT;
                }
                !cancelled && !overdue
            } else {
                false
            };
            if again {
                if self.driver.resubmit(&[c.op], &mut spill)[0] {
                    c.res = RESUBMITTED;
                } else {
                    c.res = -libc::ECANCELED;
                }
            }
        }
        done.retain(|c| c.res != RESUBMITTED);
        // What the resubmission collected on the side (never unfinished
        // completions of this same pass: those were just issued again).
        done.append(&mut spill);
    }
}

/// Marks a completion whose operation `settle` issued again (no real result
/// is this low: results are `-errno` or a count).
const RESUBMITTED: i32 = i32::MIN;
