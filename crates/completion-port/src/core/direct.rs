//! Packets handed straight to the caller of `get` / `get_many` when the
//! leader reaps completions and the queue is empty: built from the
//! completions into the caller's `Vec` (or the one packet of a `get`)
//! instead of being pushed on the queue and popped again.
//!
//! # Why this keeps the port's order
//! Threads are released LIFO: a packet goes to the thread that parked
//! last, and the leader (the oldest waiter) only gets one when nobody is
//! parked. So the leader takes packets straight only when no thread is
//! parked (`Hot::parked`, read after its wait returned); otherwise they are
//! queued and `dispatch` hands them out, top of the stack first. A thread
//! that parks after that look started waiting after these completions were
//! reaped, and is not owed them.
//!
//! The queue is FIFO, and a `get` returns its oldest packet. The leader
//! looks at the queue *after* its wait returned: if it is empty, every
//! packet queued before these completions were reaped has been taken, so
//! the first of them is the oldest packet of the port, and the next ones
//! follow it. A packet posted (or queued by another reaper) after that look
//! is concurrent with this `get`, which may be ordered before it. What does
//! not fit the caller's room is queued as usual, and handed out by
//! `dispatch`.
//!
//! # The rules the queue's path follows, kept here
//! - **A slot.** A packet is taken only with a slot (`core/mod.rs`,
//!   "Slots"): the leader reserves one first, and if none is free it queues
//!   everything as before.
//! - **Closed ports.** As `queue_completions` does after its pushes, the
//!   leader fences and then reads `closed`; if the port is closed by now,
//!   the packets are dropped (by the caller, after any lock), never handed
//!   out: a completion the close itself caused (an operation it cancelled)
//!   must not come out of a closed port (the loom model
//!   `close_cancels_in_flight_vs_get`).
//! - **In flight** drops after that look, as for queued packets, so `close`
//!   returns only once they are handed out or dropped.
//! - Results kept by token and packets the completion hook discards are
//!   handled as on the queue's path (`queue_completions`), and the packets
//!   taken count as dequeued (`PortStats::dequeued`), with one add.

use std::mem;

use super::{Core, Packet};
use crate::driver::Completion;
use crate::sync::{fence, Ordering};

/// Where a `get` puts the packets it takes.
pub(crate) enum Direct<'a, C> {
    /// `get`: one packet.
    One(Option<Packet<C>>),
    /// `get_many`: up to `max` packets appended to the caller's `Vec`.
    Many {
        out: &'a mut Vec<Packet<C>>,
        max: usize,
        taken: usize,
    },
}

impl<C> Direct<'_, C> {
    /// Room for more packets.
    fn room(&self) -> bool {
        match self {
            Direct::One(p) => p.is_none(),
            Direct::Many { max, taken, .. } => taken < max,
        }
    }

    /// How many packets it holds.
    pub(crate) fn taken(&self) -> usize {
        match self {
            Direct::One(p) => usize::from(p.is_some()),
            Direct::Many { taken, .. } => *taken,
        }
    }

    /// Adds a packet the caller took with its slot.
    pub(crate) fn push(&mut self, p: Packet<C>) {
        match self {
            Direct::One(slot) => {
                debug_assert!(slot.is_none(), "one packet per get");
                *slot = Some(p);
            }
            Direct::Many { out, taken, .. } => {
                out.push(p);
                *taken += 1;
            }
        }
    }

    /// Takes back what it holds (the port closed meanwhile) into `graveyard`.
    fn undo(&mut self, graveyard: &mut Vec<Packet<C>>) {
        match self {
            Direct::One(p) => graveyard.extend(p.take()),
            Direct::Many { out, taken, .. } => {
                let from = out.len() - *taken;
                graveyard.extend(out.drain(from..));
                *taken = 0;
            }
        }
    }
}

impl<C: Send + 'static> Core<C> {
    /// The leader's direct hand-over (module docs): when the queue is empty
    /// and a slot is free, builds the packets of the first completions of
    /// `done` into `direct` while it has room, and leaves the rest in
    /// `done` for `queue_completions`. Returns whether a result was kept
    /// (as `queue_completions` does). With packets taken, the caller holds
    /// the reserved slot; otherwise it was given back.
    pub(super) fn deliver_direct(
        &self,
        done: &mut Vec<Completion>,
        direct: &mut Direct<'_, C>,
        graveyard: &mut Vec<Packet<C>>,
    ) -> bool {
        if done.is_empty()
            || !direct.room()
            || self.hot.parked.load(Ordering::SeqCst) > 0
            || !self.queue.is_empty()
            || !self.try_reserve()
        {
            return false;
        }
        let before = direct.taken();
        let mut kept = false;
        let mut n = 0;
        // `complete` may end more operations (the next of a lane): they
        // come after these, as on the queue's path.
        let mut more = Vec::new();
        let mut rest = mem::take(done).into_iter();
        while direct.room() {
            let Some(c) = rest.next() else {
                if more.is_empty() {
                    break;
                }
                rest = mem::take(&mut more).into_iter();
                continue;
            };
            n += 1;
            let Some(p) = self.complete(c, &mut more) else {
                continue;
            };
            kept |= self.keep_or(p, |p| direct.push(p));
        }
        done.extend(rest);
        done.append(&mut more);
        // As `queue_completions` after its pushes (module docs).
        fence(Ordering::SeqCst);
        if self.hot.closed.load(Ordering::SeqCst) {
            direct.undo(graveyard);
        }
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        let taken = direct.taken() - before;
        if taken > 0 {
            // Statistics: one add for the batch.
            self.dequeued[super::stripe()].fetch_add(taken as u64, Ordering::Relaxed);
        }
        if taken == 0 {
            // Nothing taken (all kept by token, discarded, or closed): the
            // caller looks at the queue again.
            self.release_slot();
        } else if before == 0 {
            self.took_slot();
        }
        kept
    }
}
