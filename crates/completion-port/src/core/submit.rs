//! An operation handed to the backend (`Core::submit`: registered with its
//! fd and handed to the driver under the fd's in-flight lock, then
//! submitted at once or deferred to the issuing thread's next visit to the
//! port, `running.rs`), operations cancelled (`Core::cancel`), and a handle
//! closed (`Core::close_fd`). Its packet is born when the backend reports
//! it complete (`Packet::completed`, `packet.rs`) and queued by `enqueue`
//! (`reap.rs`).
//!
//! # Why the in-flight lock is held across the driver's `submit`
//! A cancel (or a close) finds its targets in the fd's in-flight registry
//! and asks the backend to cancel them, under the same lock. Were the lock
//! released between registering an operation and handing it to the
//! backend, a cancel could reach the backend first, find nothing there,
//! and the operation — accepted, registered, then submitted — would wait
//! forever for an event that never comes: an accepted operation without
//! its packet. Holding the lock until the backend has the operation (in
//! its submission queue, or its per-fd queue) means every cancel is
//! ordered after it: io_uring processes the SQ in order, and the epoll
//! backend's queues are searched under their own lock.

use std::io;
use std::mem;
use std::sync::Arc;

use super::fd::{FdOwner, InFlightOp};
use super::record::{Notify, RecordBox};
use super::Core;
use crate::core::running;
use crate::core::Token;
use crate::driver::{Completion, Engine, OpPtr, Submitted};
use crate::error::{handle_closed, Rejected};
use crate::sync::Ordering;

impl<C: Send + 'static> Core<C> {
    /// Hands an operation to the backend. On refusal everything comes back.
    /// The caller holds a reference to the record's fd owner (a handle, or
    /// the port for its own fd) for the whole call.
    pub(crate) fn submit(&self, mut rec: RecordBox<C>) -> Result<Token, Rejected<C>> {
        if let Some(e) = self.fork_refusal() {
            return Err(refused(rec, e));
        }
        let token = rec.token;
        let notify = rec.notify;
        rec.io.prepare();
        // Borrowed without a count (no atomic read-modify-write pair per
        // operation): the record is handed away below, and may even be freed
        // by its completion once the lock is released, but the caller's own
        // reference keeps the owner alive for the whole call (above).
        // SAFETY: alive for this call, as just said.
        let owner: &FdOwner = unsafe { &*Arc::as_ptr(&rec.owner) };
        let mut reg = owner.inflight();
        if reg.closed {
            drop(reg);
            return Err(refused(rec, handle_closed()));
        }
        rec.lane = self.lane_for(owner, rec.io.kind);
        let lane = rec.lane;
        // Registered before submitting (the op may complete at once), and
        // the lock kept until the backend has it (module docs).
        let op = rec.into_op();
        reg.ops.insert(
            token.0,
            InFlightOp {
                ptr: op,
                cancelled: false,
            },
        );
        let prev = self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.in_flight_added(prev);
        if let Some(lane) = lane {
            let ls = &mut reg.lanes[lane as usize];
            if ls.busy {
                // Its turn comes when the one before it ends (lanes.rs).
                ls.waiting.push_back(op);
                return Ok(token);
            }
            ls.busy = true;
        }
        // A thread running for this port will come back to the port (next
        // `get`, blocking scope or exit: `running.rs`), and the pending
        // submission is made then — unless a thread leads: its kernel wait
        // would not see it (`progress.rs`). Any other thread submits at
        // once.
        let defer = self.driver.can_defer() && !self.leading() && running::defer_submit(self.id);
        let mut spill = Vec::new();
        let r = self.driver.submit(op, defer, &mut spill);
        if !matches!(r, Ok(Submitted::Queued)) {
            // Ours again: not in flight any more (nothing waits behind it
            // in its lane: it was first).
            reg.ops.remove(&token.0);
            if let Some(lane) = lane {
                reg.lanes[lane as usize].busy = false;
            }
        }
        drop(reg);
        let r = match r {
            // From here on the record belongs to the backend: not touched.
            Ok(Submitted::Queued) => {
                // Pushed, then (inside `deferred`) fenced: if the monitor
                // counted this thread out meanwhile it may have flushed
                // before this op was queued (running.rs); if a thread took
                // the leadership meanwhile, its wait may not see it
                // (progress.rs). Either way, submit it now.
                if defer && (running::deferred() || self.leading()) {
                    self.driver.flush(&mut spill);
                }
                Ok(token)
            }
            Ok(Submitted::Done(res)) => {
                if notify == Notify::SkipOnSuccess && res >= 0 {
                    // Succeeded during this call: no packet, the result is
                    // kept for `take_result`.
                    if let Some(p) = self.complete(Completion { op, res }, &mut spill) {
                        // A refusal (the port closed meanwhile) drops it here.
                        let _ = self.results.store(token.0, p);
                    }
                    self.in_flight.fetch_sub(1, Ordering::AcqRel);
                } else {
                    // Queued like any completion (below).
                    spill.push(Completion { op, res });
                }
                Ok(token)
            }
            Err(error) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                // SAFETY: the driver refused the op, so ownership never left
                // us; it came from a `RecordBox<C>`.
                let rec = unsafe { RecordBox::from_raw(op.0.cast()) };
                Err(refused(rec, error))
            }
        };
        self.absorb(&mut spill);
        r
    }

    /// Cancels one operation (`token`) or all operations of the fd `owner`
    /// (windows-semantics §6.25). Returns how many were in flight; `NotFound` if none.
    ///
    /// The kernel's cancel request is made while holding the fd's in-flight
    /// lock: the named records cannot complete into packets (and be freed,
    /// and their addresses reused) until it has been handed to the backend.
    pub(crate) fn cancel(&self, owner: &FdOwner, token: Option<Token>) -> io::Result<usize> {
        if let Some(e) = self.fork_refusal() {
            return Err(e);
        }
        let mut spill = Vec::new();
        let n = {
            let mut reg = owner.inflight();
            let n = self.cancel_locked(owner, &mut reg, token, &mut spill)?;
            if n == 0 {
                return Err(crate::error::nothing_to_cancel(token.map(|t| t.0)));
            }
            n
        };
        self.absorb(&mut spill);
        Ok(n)
    }

    /// Closes a handle's fd for operations: nothing new is accepted on it,
    /// and every operation in flight is cancelled (each still yields its
    /// packet). Returns how many were cancelled; 0 when already closed.
    pub(crate) fn close_fd(&self, owner: &FdOwner) -> usize {
        if self.forked() {
            return 0; // the operations in flight are the parent's (`fork.rs`)
        }
        let mut spill = Vec::new();
        let n = {
            let mut reg = owner.inflight();
            if reg.closed {
                return 0;
            }
            reg.closed = true;
            match self.cancel_locked(owner, &mut reg, None, &mut spill) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("completion port: cancelling at handle close failed: {e}");
                    0
                }
            }
        };
        self.absorb(&mut spill);
        n
    }

    /// Marks `token` (or every op of the fd) cancelled and asks the driver
    /// to cancel it, with the fd's in-flight lock held. Returns how many.
    fn cancel_locked(
        &self,
        owner: &FdOwner,
        reg: &mut super::fd::InFlight,
        token: Option<Token>,
        spill: &mut Vec<Completion>,
    ) -> io::Result<usize> {
        let mut targets: Vec<OpPtr> = Vec::new();
        let mut mark = |op: &mut InFlightOp| {
            op.cancelled = true;
            targets.push(op.ptr);
        };
        match token {
            Some(t) => reg.ops.get_mut(&t.0).into_iter().for_each(&mut mark),
            None => reg.ops.values_mut().for_each(&mut mark),
        }
        let n = targets.len();
        if n == 0 {
            return Ok(0);
        }
        // Those still waiting in a lane end here; the backend has the rest.
        let targets = self.lane_cancel(reg, targets, spill);
        if !targets.is_empty() {
            self.driver
                .cancel(owner.driver_fd(), &targets, token.is_none(), spill)?;
        }
        Ok(n)
    }
}

/// An operation refused at the call: its context and buffers go back.
fn refused<C>(mut rec: RecordBox<C>, error: io::Error) -> Rejected<C> {
    let bufs = mem::take(&mut rec.io.bufs);
    let ctx = rec.ctx.take().expect("context present until completion");
    Rejected::new(error, ctx, bufs)
}

/// [`Core::close_fd`] without the context type: what a handle's last clone
/// calls when it is dropped (`handle.rs`).
pub(crate) trait CloseFd: Send + Sync {
    fn close_fd(&self, owner: &FdOwner) -> usize;
}

impl<C: Send + 'static> CloseFd for Core<C> {
    fn close_fd(&self, owner: &FdOwner) -> usize {
        Core::close_fd(self, owner)
    }
}
