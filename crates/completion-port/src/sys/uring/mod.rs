//! The io_uring backend: one ring per port, shared by all its threads.
//!
//! # Sharing a single-producer, single-consumer ring
//! - **SQ lock** (`sq`): every push to the submission queue, and the
//!   `closed` flag, are under it. Submitting (`io_uring_enter` with
//!   `to_submit`) may happen from any thread without it: the kernel reads
//!   only the entries whose tail we already published, under its own lock.
//! - **CQ lock** (`cq`): every read of the completion queue is under it. It
//!   is never held across a blocking `io_uring_enter`, so a running thread
//!   can reap ready completions while the leader sleeps in the kernel.
//! - Lock order: SQ before CQ. Code holding the CQ lock never takes the SQ
//!   lock.
//! - **Deferred submissions**: `submit(op, defer = true)` (an op issued by a
//!   thread running for the port, see `port/running.rs`) pushes the entry
//!   and publishes the tail without entering the kernel. Every
//!   `io_uring_enter` that submits passes the whole published SQ, so the
//!   entry goes with the next leader wait (`submit_and_wait`), the next
//!   immediate submission of any thread, or [`Ring::flush`], which the port
//!   calls at the issuing thread's next `get`, blocking scope or exit.
//! - **Reserved `user_data`**: [`WAKE`] and [`CANCEL`]. Real ops carry the
//!   address of their record, a heap pointer, which is never either value.
//!
//! # Never dropping a completion
//! The ring requires `IORING_FEAT_NODROP`: when the CQ is full the kernel
//! keeps further CQEs on an overflow list and sets `IORING_SQ_CQ_OVERFLOW`.
//! Every `io_uring_enter` with `GETEVENTS` (each leader wait, and each
//! submit while the flag is set) moves them back into the CQ; a reaper that
//! finds the CQ full also checks the flag and flushes. A kernel without
//! NODROP is refused at open.

mod op;
mod setup;

use std::io;
use std::ptr::NonNull;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use parking_lot::Mutex;

use super::{Completion, Config};
use crate::error::port_closed;
use crate::handle::OpPtr;
use crate::op::OpIo;

/// `user_data` of the NOP that [`Ring::wake`] submits.
const WAKE: u64 = u64::MAX;
/// `user_data` of the cancel-everything request of [`Ring::shutdown`].
const CANCEL: u64 = u64::MAX - 1;

pub(crate) struct Ring {
    ring: IoUring,
    /// The SQ lock; `true` once `shutdown` ran (submissions are refused).
    sq: Mutex<bool>,
    /// The CQ lock.
    cq: Mutex<()>,
}

impl Ring {
    pub(crate) fn open(cfg: Config) -> io::Result<Ring> {
        Ok(Ring {
            ring: setup::open(cfg)?,
            sq: Mutex::new(false),
            cq: Mutex::new(()),
        })
    }

    /// Queues `op`, and submits it to the kernel at once unless `defer`: then
    /// it stays in the SQ until the next [`flush`](Self::flush),
    /// [`wait`](Self::wait) or immediate submission from any thread (a full
    /// SQ is submitted to make room either way).
    pub(crate) fn submit(
        &self,
        mut op: NonNull<OpIo>,
        defer: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        let closed = self.sq.lock();
        if *closed {
            return Err(port_closed());
        }
        // SAFETY: the caller hands us exclusive ownership of the record;
        // nothing else references it until its CQE is reaped.
        let entry = op::entry(unsafe { op.as_mut() });
        // SAFETY: the entry's pointers stay valid until its completion (see
        // `op::entry`), and we hold the SQ lock.
        unsafe { self.push(&entry, spill)? };
        if defer {
            return Ok(());
        }
        self.enter_submit(spill)
    }

    /// Submits the entries waiting in the SQ, if any (no system call when
    /// there are none).
    pub(crate) fn flush(&self, spill: &mut Vec<Completion>) {
        let _sq = self.sq.lock();
        // SAFETY: we hold the SQ lock, so this is the only
        // `SubmissionQueue` alive; it is only read.
        if unsafe { self.ring.submission_shared() }.is_empty() {
            return;
        }
        if let Err(e) = self.enter_submit(spill) {
            // Only kernel resource errors are left; the entries stay in the
            // SQ and go with the next submission or wait.
            tracing::warn!("io_uring: submitting deferred operations failed: {e}");
        }
    }

    /// Makes the leader's wait return: a NOP tagged [`WAKE`].
    pub(crate) fn wake(&self, spill: &mut Vec<Completion>) {
        let _sq = self.sq.lock();
        let nop = opcode::Nop::new().build().user_data(WAKE);
        // SAFETY: a NOP references no memory; we hold the SQ lock.
        let r = unsafe { self.push(&nop, spill) }.and_then(|()| self.enter_submit(spill));
        if let Err(e) = r {
            // Only kernel resource errors are left; the leader still returns
            // at its deadline or with the next completion.
            tracing::warn!("io_uring: could not wake the waiting thread: {e}");
        }
    }

    /// Cancels `targets` (all ops of `fd` when `all`). The caller holds
    /// their fd's in-flight lock, so each target is alive and its address is
    /// not reused before this cancel request is in the SQ; ops submitted
    /// later are behind it in the SQ, so the kernel cannot confuse them.
    pub(crate) fn cancel(
        &self,
        fd: std::os::fd::RawFd,
        targets: &[OpPtr],
        all: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        let closed = self.sq.lock();
        if *closed {
            // `shutdown` already cancelled everything in flight.
            return Ok(());
        }
        let builders: Vec<types::CancelBuilder> = if all {
            vec![types::CancelBuilder::fd(types::Fd(fd)).all()]
        } else {
            targets
                .iter()
                .map(|t| types::CancelBuilder::user_data(t.0.as_ptr() as u64))
                .collect()
        };
        for b in builders {
            let e = opcode::AsyncCancel2::new(b).build().user_data(CANCEL);
            // SAFETY: a cancel request references no memory; we hold the SQ lock.
            unsafe { self.push(&e, spill)? };
        }
        self.enter_submit(spill)
    }

    /// Refuses further submissions and cancels every op in flight.
    pub(crate) fn shutdown(&self, spill: &mut Vec<Completion>) {
        let mut closed = self.sq.lock();
        if *closed {
            return;
        }
        *closed = true;
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        // SAFETY: the cancel request references no memory; we hold the SQ lock.
        let r = unsafe { self.push(&cancel, spill) }.and_then(|()| self.enter_submit(spill));
        if let Err(e) = r {
            tracing::warn!("io_uring: could not cancel operations at close: {e}");
        }
    }

    /// Pushes one entry, submitting to make room when the SQ is full.
    ///
    /// # Safety
    /// The SQ lock must be held, and the entry's pointers must stay valid
    /// until its completion.
    unsafe fn push(&self, entry: &squeue::Entry, spill: &mut Vec<Completion>) -> io::Result<()> {
        loop {
            // SAFETY: the caller holds the SQ lock, so this is the only
            // `SubmissionQueue` alive; it publishes the tail when dropped.
            let mut sq = unsafe { self.ring.submission_shared() };
            // SAFETY: forwarded from the caller.
            if unsafe { sq.push(entry) }.is_ok() {
                return Ok(());
            }
            drop(sq);
            // Full: hand the queued entries to the kernel and retry.
            self.enter_submit(spill)?;
        }
    }

    /// `io_uring_enter(to_submit)`, absorbing the transient refusals: on
    /// `EBUSY`/`EAGAIN` (completions backed up) it reaps into `spill` and
    /// retries, so a submission never fails because of load.
    fn enter_submit(&self, spill: &mut Vec<Completion>) -> io::Result<()> {
        loop {
            match self.ring.submitter().submit() {
                Ok(_) => return Ok(()),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                        self.drain_cq(spill);
                        std::thread::yield_now();
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    /// Leader only: blocks until the kernel reports a completion (or a
    /// wake), or `deadline` passes, and collects what is ready into `out`.
    /// Returns `Ok(true)` when the deadline passed with nothing collected.
    ///
    /// Returns after every return from the kernel, even with nothing
    /// collected: another thread may have reaped the completion that woke
    /// it, and only the port (under its lock) knows whether that left a
    /// packet for this thread.
    pub(crate) fn wait(
        &self,
        deadline: Option<Instant>,
        out: &mut Vec<Completion>,
    ) -> io::Result<bool> {
        let woke = self.drain(out);
        if woke || !out.is_empty() {
            return Ok(false);
        }
        let r = match deadline {
            None => self.ring.submitter().submit_and_wait(1),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(true);
                }
                let ts = types::Timespec::from(d - now);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        if let Err(e) = r {
            match e.raw_os_error() {
                Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => {}
                _ => return Err(e),
            }
        }
        self.drain(out);
        Ok(out.is_empty() && deadline.is_some_and(|d| Instant::now() >= d))
    }

    /// Collects ready completions without blocking. Skips (returns nothing)
    /// when another thread is reaping right now: that thread queues them.
    ///
    /// Returns whether it consumed a [`WAKE`]: that wake was meant for the
    /// leader, which will not see it, so the port must send another if the
    /// leader still needs one.
    pub(crate) fn reap(&self, out: &mut Vec<Completion>) -> bool {
        if self.cq.is_locked() {
            return false;
        }
        self.drain(out)
    }

    /// Drains the CQ into `out`, flushing the kernel's overflow list when the
    /// CQ was found full. Returns whether a [`WAKE`] was seen.
    fn drain(&self, out: &mut Vec<Completion>) -> bool {
        let start = out.len();
        let woke = self.drain_all(out);
        self.resubmit_orphans(out, start);
        woke
    }

    fn drain_all(&self, out: &mut Vec<Completion>) -> bool {
        let mut woke = false;
        loop {
            let (w, full) = self.drain_cq(out);
            woke |= w;
            if !full {
                return woke;
            }
            // The CQ was full, so the kernel may hold CQEs on its overflow
            // list. Flush them (enter with GETEVENTS, which `submit` adds
            // while the overflow flag is set) and drain again. The CQ lock is
            // released here: lock order is SQ before CQ.
            let _sq = self.sq.lock();
            // SAFETY: we hold the SQ lock; the queue is only read.
            let overflow = unsafe { self.ring.submission_shared() }.cq_overflow();
            if !overflow {
                return woke;
            }
            if let Err(e) = self.ring.submitter().submit() {
                tracing::warn!("io_uring: flushing the CQ overflow list failed: {e}");
                return woke;
            }
        }
    }

    /// Resubmits the operations in `out[start..]` that the kernel cancelled
    /// on its own.
    ///
    /// io_uring ties each request to the thread that submitted it, and when
    /// that thread exits the kernel cancels its requests that are still
    /// waiting (armed polls, queued io-wq work): they complete with
    /// `ECANCELED`. On Windows, and on our epoll backend, an operation
    /// outlives the thread that issued it. So an `ECANCELED` the port did not
    /// ask for (it asks only when closing) is such an orphan: nothing was
    /// transferred, and the record is intact, so it is submitted again from
    /// this thread and its completion stays pending.
    fn resubmit_orphans(&self, out: &mut Vec<Completion>, start: usize) {
        if !out[start..].iter().any(|c| c.res == -libc::ECANCELED) {
            return;
        }
        // Which `ECANCELED` are orphans: not cancelled by the user (the
        // fd's in-flight entry says so). Checked before taking the SQ lock:
        // lock order is in-flight lock, then SQ.
        let orphan: Vec<bool> = out[start..]
            .iter()
            .map(|c| {
                if c.res != -libc::ECANCELED {
                    return false;
                }
                // SAFETY: reaped and not yet handed back, so the record is
                // ours; only shared fields are read.
                let io = unsafe { c.op.as_ref() };
                let reg = io.owner.inflight();
                reg.ops.get(&io.token.0).is_some_and(|e| !e.cancelled)
            })
            .collect();
        if !orphan.contains(&true) {
            return;
        }
        let closed = self.sq.lock();
        if *closed {
            // Cancelled by our own shutdown: report them as they are.
            return;
        }
        let mut spill = Vec::new();
        let mut resubmitted = Vec::new();
        let mut kept = start;
        for i in start..out.len() {
            let c = &out[i];
            if !orphan[i - start] {
                out.swap(kept, i);
                kept += 1;
                continue;
            }
            let mut op = c.op;
            // SAFETY: the op completed, so the kernel no longer references
            // it, and we own the record again until we hand it back.
            let io = unsafe { op.as_mut() };
            let who = (io.owner.clone(), io.token);
            let entry = op::entry(io);
            // SAFETY: as in `submit`; we hold the SQ lock.
            match unsafe { self.push(&entry, &mut spill) } {
                Ok(()) => resubmitted.push(who),
                Err(e) => {
                    tracing::warn!("io_uring: could not resubmit an orphaned operation: {e}");
                    out.swap(kept, i);
                    kept += 1;
                }
            }
        }
        out.truncate(kept);
        if let Err(e) = self.enter_submit(&mut spill) {
            tracing::warn!("io_uring: submitting resubmitted operations failed: {e}");
        }
        drop(closed);
        // A user's cancel that came between the check above and the
        // resubmission found nothing in flight in the kernel: repeat it.
        for (owner, token) in resubmitted {
            let reg = owner.inflight();
            if let Some(e) = reg.ops.get(&token.0).filter(|e| e.cancelled) {
                let r = self.cancel(owner.raw(), &[e.ptr], false, &mut spill);
                if let Err(e) = r {
                    tracing::warn!("io_uring: could not repeat a cancel: {e}");
                }
            }
        }
        out.append(&mut spill);
    }

    /// Pops every CQE under the CQ lock. Returns (saw a wake, CQ was full).
    fn drain_cq(&self, out: &mut Vec<Completion>) -> (bool, bool) {
        let _cq = self.cq.lock();
        // SAFETY: we hold the CQ lock, so this is the only
        // `CompletionQueue` alive; it publishes the new head when dropped.
        let mut cq = unsafe { self.ring.completion_shared() };
        let full = cq.is_full();
        let mut woke = false;
        for cqe in &mut cq {
            match cqe.user_data() {
                WAKE => woke = true,
                CANCEL => {}
                ud => out.push(Completion {
                    // A real op's user_data is the non-null address of its record.
                    op: NonNull::new(ud as *mut OpIo).expect("CQE without an op record"),
                    res: cqe.result(),
                }),
            }
        }
        (woke, full)
    }
}
