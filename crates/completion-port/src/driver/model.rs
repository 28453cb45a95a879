//! A model engine for the loom tests of the port core (`core/loom.rs`):
//! the [`Engine`] contract over loom's primitives, with a "kernel" that
//! keeps every submitted operation pending until it is cancelled, the port
//! shuts down, or the model completes it ([`Model::complete_all`]).
//!
//! It keeps the orderings the core relies on:
//! - **Submission order**: a deferred op waits in `sq` and reaches the
//!   kernel with the next `flush`, `wait`, immediate submission or cancel
//!   request — in order, as io_uring consumes its SQ. A cancel request
//!   finds only ops already in the kernel (or before it in `sq`); one made
//!   before the op was submitted finds nothing, exactly the race the core
//!   must rule out.
//! - **Wake-ups**: `wake` sets a pending flag that the leader's `wait`
//!   consumes; `reap` may consume it too and says so (io_uring's reaper
//!   can drain the leader's `WAKE` CQE), when built with `swallows_wakes`.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use loom::sync::{Condvar, Mutex};

use super::{closed, Completion, Engine, FdRef, OpPtr, Reaped, Submitted};

/// The model engine (module docs).
pub(crate) struct Model {
    state: Mutex<Kernel>,
    changed: Condvar,
    defers: bool,
    swallows_wakes: bool,
}

#[derive(Default)]
struct Kernel {
    /// Deferred submissions, not yet seen by the kernel.
    sq: Vec<OpPtr>,
    /// Operations the kernel has, pending.
    pending: VecDeque<OpPtr>,
    /// Completions not yet reaped.
    done: VecDeque<Completion>,
    wake: bool,
    closed: bool,
}

impl Kernel {
    fn submit_sq(&mut self) {
        let sq = std::mem::take(&mut self.sq);
        self.pending.extend(sq);
    }
}

impl Model {
    /// `defers`: submissions of running threads may wait in `sq` (like
    /// io_uring); `swallows_wakes`: a reap may consume the leader's wake.
    pub(crate) fn new(defers: bool, swallows_wakes: bool) -> Model {
        Model {
            state: Mutex::new(Kernel::default()),
            changed: Condvar::new(),
            defers,
            swallows_wakes,
        }
    }

    /// The kernel finishes every pending operation with `res`.
    pub(crate) fn complete_all(&self, res: i32) {
        let mut k = self.state.lock().unwrap();
        while let Some(op) = k.pending.pop_front() {
            k.done.push_back(Completion { op, res });
        }
        drop(k);
        self.changed.notify_all();
    }

    /// Operations the kernel has, pending.
    pub(crate) fn in_kernel(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// Deferred submissions the kernel has not seen.
    pub(crate) fn unsubmitted(&self) -> usize {
        self.state.lock().unwrap().sq.len()
    }
}

impl Engine for Model {
    fn can_defer(&self) -> bool {
        self.defers
    }

    fn orders_per_fd(&self) -> bool {
        true
    }

    fn submit(
        &self,
        op: OpPtr,
        defer: bool,
        _spill: &mut Vec<Completion>,
    ) -> io::Result<Submitted> {
        let mut k = self.state.lock().unwrap();
        if k.closed {
            return Err(closed());
        }
        k.sq.push(op);
        if !defer {
            k.submit_sq();
        }
        Ok(Submitted::Queued)
    }

    fn flush(&self, _spill: &mut Vec<Completion>) {
        self.state.lock().unwrap().submit_sq();
    }

    /// Without a deadline, blocks until a completion or a wake-up; with
    /// one (no time in a model), returns at once as if it had passed.
    fn wait(&self, deadline: Option<Instant>, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut k = self.state.lock().unwrap();
        k.submit_sq();
        while k.done.is_empty() && !k.wake {
            if deadline.is_some() {
                drop(k);
                loom::thread::yield_now();
                return Ok(());
            }
            k = self.changed.wait(k).unwrap();
        }
        k.wake = false;
        out.extend(k.done.drain(..));
        Ok(())
    }

    fn reap(&self, out: &mut Vec<Completion>) -> Reaped {
        let mut k = self.state.lock().unwrap();
        out.extend(k.done.drain(..));
        let swallowed_wake = self.swallows_wakes && std::mem::take(&mut k.wake);
        Reaped {
            swallowed_wake,
            complete: false,
        }
    }

    fn poll(&self, out: &mut Vec<Completion>) -> Reaped {
        self.state.lock().unwrap().submit_sq();
        Reaped {
            complete: true,
            ..self.reap(out)
        }
    }

    fn wake(&self, _spill: &mut Vec<Completion>) {
        self.state.lock().unwrap().wake = true;
        self.changed.notify_all();
    }

    fn cancel(
        &self,
        fd: FdRef,
        targets: &[OpPtr],
        all: bool,
        _spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        let mut k = self.state.lock().unwrap();
        if k.closed {
            return Ok(());
        }
        // The request goes behind what `sq` holds, as on io_uring.
        k.submit_sq();
        let hit = |op: &OpPtr| {
            if all {
                // SAFETY: ops in the model kernel are owned by it.
                unsafe { op.op() }.fd.raw == fd.raw
            } else {
                targets.contains(op)
            }
        };
        let mut kept = VecDeque::new();
        while let Some(op) = k.pending.pop_front() {
            if hit(&op) {
                k.done.push_back(Completion {
                    op,
                    res: -libc::ECANCELED,
                });
            } else {
                kept.push_back(op);
            }
        }
        k.pending = kept;
        drop(k);
        self.changed.notify_all();
        Ok(())
    }

    fn resubmit(&self, ops: &[OpPtr], _spill: &mut Vec<Completion>) -> Vec<bool> {
        let mut k = self.state.lock().unwrap();
        if k.closed {
            return vec![false; ops.len()];
        }
        k.pending.extend(ops.iter().copied());
        vec![true; ops.len()]
    }

    fn shutdown(&self, _spill: &mut Vec<Completion>) {
        let mut k = self.state.lock().unwrap();
        k.closed = true;
        k.submit_sq();
        while let Some(op) = k.pending.pop_front() {
            k.done.push_back(Completion {
                op,
                res: -libc::ECANCELED,
            });
        }
        k.wake = true;
        drop(k);
        self.changed.notify_all();
    }
}
