//! Lanes: the operations of one direction on one stream fd reach the kernel
//! one at a time, in the order they were issued, when the backend does not
//! keep that order itself ([`Engine::orders_per_fd`]: io_uring).
//!
//! Windows completes the receives (and the sends) of a stream socket in the
//! order they were issued, and a stream send only once every byte is sent
//! (`send_all`; the C ABI's `WSASend`). io_uring arms each operation that
//! cannot finish at once on the socket's wait queue, and wakes them in no
//! particular order: two receives in flight on one socket can take the data
//! in the wrong order, and two whole sends can interleave their bytes. So
//! on such a backend each stream fd has two lanes — sends (send, vectored
//! send, write) and receives (receive, vectored receive, read) — and a lane
//! holds at most one operation in the kernel; the others wait here, in
//! issue order, and go in as the one before them ends.
//!
//! # Invariants (under the fd's in-flight lock)
//! - `busy` is true exactly while one operation of the lane is in the
//!   kernel (submitted, or being resubmitted to finish a whole transfer);
//!   every operation in `waiting` is registered in flight and unknown to
//!   the backend.
//! - A waiting operation leaves the lane only to be submitted (the one
//!   before it ended: `Core::lane_next`) or completed here, cancelled
//!   (`Core::cancel_locked`), so it yields exactly one packet like any
//!   other. When the port closes, the operation in the kernel is cancelled,
//!   and each waiting one is refused by the closed backend in turn and
//!   completed cancelled.
//! - Operations on regular files (positioned), datagram sockets and
//!   listening sockets take no lane: their order does not matter.

use std::collections::VecDeque;

use super::fd::{FdOwner, InFlight};
use super::record::OpRecord;
use super::Core;
use crate::driver::{Completion, Engine, OpKind, OpPtr, Submitted};

/// A direction of a stream fd.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Lane {
    Send = 0,
    Recv = 1,
}

impl Lane {
    /// The lane an operation of `kind` takes on a stream fd, if any.
    fn of(kind: OpKind) -> Option<Lane> {
        match kind {
            // A shutdown of the sending side goes after the sends before it.
            OpKind::Send
            | OpKind::SendVectored
            | OpKind::Write
            | OpKind::SendFile
            | OpKind::Shutdown { .. } => Some(Lane::Send),
            OpKind::Recv | OpKind::RecvVectored | OpKind::RecvPooled | OpKind::Read => {
                Some(Lane::Recv)
            }
            // Waiting for readability consumes nothing: no order to keep.
            OpKind::Nop
            | OpKind::Accept
            | OpKind::Connect
            | OpKind::Readable
            | OpKind::Timer
            | OpKind::Fsync { .. }
            | OpKind::Fallocate { .. }
            | OpKind::Stat
            | OpKind::Open { .. } => None,
        }
    }
}

/// One lane of one fd (module docs).
#[derive(Default)]
pub(crate) struct LaneState {
    pub(crate) busy: bool,
    pub(crate) waiting: VecDeque<OpPtr>,
}

impl<C: Send + 'static> Core<C> {
    /// The lane an operation of `kind` on `owner`'s fd takes, if the
    /// backend needs lanes and the fd is a stream.
    pub(super) fn lane_for(&self, owner: &FdOwner, kind: OpKind) -> Option<Lane> {
        if self.driver.orders_per_fd() {
            return None;
        }
        Lane::of(kind).filter(|_| owner.is_stream())
    }

    /// The lane's operation in the kernel ended: the next waiting one goes
    /// in. One the backend refuses (the port closed) is completed here,
    /// cancelled, into `spill`, and the one after it tried.
    pub(super) fn lane_next(&self, reg: &mut InFlight, lane: Lane, spill: &mut Vec<Completion>) {
        let ls = &mut reg.lanes[lane as usize];
        while let Some(op) = ls.waiting.pop_front() {
            match self.driver.submit(op, false, spill) {
                Ok(Submitted::Queued) => return,
                Ok(Submitted::Done(res)) => spill.push(Completion { op, res }),
                Err(_) => spill.push(Completion {
                    op,
                    res: -libc::ECANCELED,
                }),
            }
        }
        ls.busy = false;
    }

    /// Takes `targets` out of their lanes' waiting queues: those are
    /// completed here, cancelled, into `spill`. Returns the targets that
    /// are left, which the backend has.
    pub(super) fn lane_cancel(
        &self,
        reg: &mut InFlight,
        targets: Vec<OpPtr>,
        spill: &mut Vec<Completion>,
    ) -> Vec<OpPtr> {
        if reg.lanes.iter().all(|l| l.waiting.is_empty()) {
            return targets;
        }
        let mut kept = Vec::with_capacity(targets.len());
        for t in targets {
            let lane = reg.lanes.iter_mut().find(|l| l.waiting.contains(&t));
            match lane {
                Some(l) => {
                    l.waiting.retain(|w| *w != t);
                    // It never held the lane: its end must not pass the
                    // lane on (`complete` does that for the op in the
                    // kernel).
                    // SAFETY: a waiting op is registered in flight and
                    // unknown to the backend: the core owns its record, and
                    // the in-flight lock (held) keeps every other user out.
                    unsafe { (*t.0.cast::<OpRecord<C>>().as_ptr()).lane = None };
                    spill.push(Completion {
                        op: t,
                        res: -libc::ECANCELED,
                    });
                }
                None => kept.push(t),
            }
        }
        kept
    }
}
