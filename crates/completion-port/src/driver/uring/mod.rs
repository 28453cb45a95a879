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
//!   thread running for the port, see `core/running.rs`) pushes the entry
//!   and publishes the tail without entering the kernel. Every
//!   `io_uring_enter` that submits passes the whole published SQ, so the
//!   entry goes with the next leader wait (`submit_and_wait`), the next
//!   immediate submission of any thread, or [`Ring::flush`], which the port
//!   calls at the issuing thread's next `get`, blocking scope or exit.
//! - **Reserved `user_data`**: [`WAKE`], [`CANCEL`], [`LINK_TIMEOUT`] and
//!   the doorbell's (`wake.rs`). Real ops carry the address of their
//!   record, a heap pointer, which is never one of these values.
//! - **Waking the leader** takes no SQ lock where the kernel allows
//!   (`wake.rs`): the doorbell posts a [`WAKE`] CQE with one system call.
//! - **Fixed files**: associated fds get a slot of the ring's registered
//!   file table on first use and their SQEs name it (`files.rs`, which
//!   says when a slot may be reused).
//!
//! # Never dropping a completion
//! The ring requires `IORING_FEAT_NODROP`: when the CQ is full the kernel
//! keeps further CQEs on an overflow list and sets `IORING_SQ_CQ_OVERFLOW`.
//! Every `io_uring_enter` with `GETEVENTS` (each leader wait, and each
//! submit while the flag is set) moves them back into the CQ; a reaper that
//! finds the CQ full also checks the flag and flushes. A kernel without
//! NODROP is refused at open.

mod buf_ring;
mod files;
mod op;
mod send_zc;
mod setup;
mod timers;
mod wake;

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types, IoUring};
use parking_lot::Mutex;

use crate::driver::{
    self, Completion, Config, Engine, FdRef, OpIo, OpKind, OpPtr, Reaped, Submitted,
};
use send_zc::ZeroCopy;
use timers::{Tick, Timers};
use wake::Doorbell;

pub(crate) use buf_ring::{page_size, BufRing};
pub(crate) use files::FixedFile;

/// `user_data` of the CQE that wakes the leader (`wake.rs`).
const WAKE: u64 = u64::MAX;
/// `user_data` of the cancel-everything request of [`Ring::shutdown`].
const CANCEL: u64 = u64::MAX - 1;
/// `user_data` of the `LINK_TIMEOUT` that carries an operation's deadline
/// (`op::entries`).
const LINK_TIMEOUT: u64 = u64::MAX - 2;

pub(crate) struct Ring {
    ring: IoUring,
    /// The SQ lock; `true` once `shutdown` ran (submissions are refused).
    sq: Mutex<bool>,
    /// The CQ lock.
    cq: Mutex<()>,
    /// Timer operations (`timers.rs`). Lock order: after the SQ and CQ
    /// locks; nothing is locked while it is held.
    timers: Mutex<Timers>,
    /// A tick's CQE was seen: arm the next tick (`settle_ticks`).
    rearm: AtomicBool,
    /// The fixed-file table (`files.rs`), if the ring has one.
    files: Option<Arc<files::Table>>,
    /// Zero-copy sends (`send_zc.rs`).
    zc: ZeroCopy,
    /// How `wake` reaches the leader (`wake.rs`).
    bell: Doorbell,
}

impl Ring {
    pub(crate) fn open(cfg: Config) -> io::Result<Ring> {
        let (ring, probe) = setup::open(cfg)?;
        let files = files::Table::open(&ring, cfg.fixed_files);
        Ok(Ring {
            bell: Doorbell::open(&ring),
            ring,
            zc: ZeroCopy::new(cfg.send_zerocopy, &probe, setup::kernel_version()),
            sq: Mutex::new(false),
            cq: Mutex::new(()),
            timers: Mutex::new(Timers::new()),
            rearm: AtomicBool::new(false),
            files,
        })
    }

    /// Pushes one entry, submitting to make room when the SQ is full.
    ///
    /// # Safety
    /// The SQ lock must be held, and the entry's pointers must stay valid
    /// until its completion.
    unsafe fn push(&self, entry: &squeue::Entry, spill: &mut Vec<Completion>) -> io::Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.push_all(std::slice::from_ref(entry), spill) }
    }

    /// Pushes `entries` next to each other in the SQ (linked entries must
    /// be), submitting to make room when the SQ lacks it.
    ///
    /// # Safety
    /// As [`push`](Self::push), for every entry.
    unsafe fn push_all(
        &self,
        entries: &[squeue::Entry],
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        loop {
            // SAFETY: the caller holds the SQ lock, so this is the only
            // `SubmissionQueue` alive; it publishes the tail when dropped.
            let mut sq = unsafe { self.ring.submission_shared() };
            // SAFETY: forwarded from the caller.
            if unsafe { sq.push_multiple(entries) }.is_ok() {
                return Ok(());
            }
            drop(sq);
            // Full: hand the queued entries to the kernel and retry.
            self.enter_submit(spill)?;
        }
    }

    /// Pushes a tick: a kernel time-out at the tick's absolute time on the
    /// monotonic clock (`timers.rs`).
    ///
    /// # Safety
    /// The SQ lock must be held; the tick's timespec stays in `timers`
    /// until the tick's CQE.
    unsafe fn push_tick(&self, tick: Tick, spill: &mut Vec<Completion>) -> io::Result<()> {
        let e = opcode::Timeout::new(tick.ts)
            .flags(types::TimeoutFlags::ABS)
            .build()
            .user_data(tick.user_data);
        // SAFETY: forwarded from the caller.
        unsafe { self.push(&e, spill) }
    }

    /// Arms the next tick after a tick's CQE, if timers are pending and no
    /// tick in flight covers the earliest (`timers.rs`). Called without
    /// any of the ring's locks.
    fn settle_ticks(&self, spill: &mut Vec<Completion>) {
        if !self.rearm.swap(false, Ordering::AcqRel) {
            return;
        }
        let closed = self.sq.lock();
        if *closed {
            return;
        }
        let Some(tick) = self.timers.lock().rearm() else {
            return;
        };
        // SAFETY: we hold the SQ lock; the timespec lives in `timers`.
        let r = unsafe { self.push_tick(tick, spill) }.and_then(|()| {
            drop(closed);
            self.enter_submit(spill)
        });
        if let Err(e) = r {
            // Kernel resource errors only: the tick stays in the SQ and goes
            // with the next submission.
            tracing::warn!("io_uring: arming the timers' next tick failed: {e}");
        }
    }

    /// Pushes an operation's entries (`op::entries`).
    ///
    /// # Safety
    /// The caller owns `op` (it is being handed to the kernel) and holds
    /// the SQ lock.
    unsafe fn push_op(&self, op: OpPtr, spill: &mut Vec<Completion>) -> io::Result<()> {
        // SAFETY: forwarded from the caller: the record is ours.
        let (e, link) = op::entries(unsafe { op.op() }, &self.zc);
        // SAFETY: the entries' pointers stay valid until the op's
        // completion (see `op::entries`); we hold the SQ lock.
        unsafe {
            match link {
                Some(l) => self.push_all(&[e, l], spill),
                None => self.push(&e, spill),
            }
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

    /// Drains the CQ into `out`, flushing the kernel's overflow list when the
    /// CQ was found full, and arms the timers' next tick if one fired.
    /// Returns whether a [`WAKE`] was seen.
    fn drain(&self, out: &mut Vec<Completion>) -> bool {
        let woke = self.drain_all(out);
        self.settle_ticks(out);
        woke
    }

    /// [`drain`](Self::drain) without the ticks.
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

    /// Pops every CQE under the CQ lock. Returns (saw a wake, CQ was full).
    fn drain_cq(&self, out: &mut Vec<Completion>) -> (bool, bool) {
        let _cq = self.cq.lock();
        // SAFETY: we hold the CQ lock, so this is the only
        // `CompletionQueue` alive; it publishes the new head when dropped.
        let mut cq = unsafe { self.ring.completion_shared() };
        let full = cq.is_full();
        let mut woke = false;
        let mut due = Vec::new();
        for cqe in &mut cq {
            match cqe.user_data() {
                WAKE => woke = true,
                CANCEL | LINK_TIMEOUT | wake::PROBE => {}
                ud if Timers::is_tick(ud) => {
                    let mut t = self.timers.lock();
                    t.tick_done(ud);
                    t.due(&mut due);
                    self.rearm.store(true, Ordering::Release);
                }
                ud => {
                    // A real op's user_data is the non-null address of its record.
                    let op =
                        OpPtr(NonNull::new(ud as *mut OpIo).expect("CQE without an op record"));
                    let mut res = cqe.result();
                    let flags = cqe.flags();
                    // SAFETY: the op is in flight (the kernel posted its
                    // CQE and we have not reported it), so it is alive; its
                    // kind is never written after issue.
                    let send =
                        || matches!(unsafe { op.kind() }, OpKind::Send | OpKind::SendVectored);
                    if ZeroCopy::is_zc_cqe(flags, send) {
                        // One of a zero-copy send's two CQEs: the op is
                        // reported at the second (`send_zc.rs`).
                        match self.zc.cqe(ud, res, flags) {
                            Some(r) => res = r,
                            None => continue,
                        }
                    }
                    if let Some(id) = io_uring::cqueue::buffer_select(flags) {
                        // A pooled receive took a buffer (`buf_pool.rs`).
                        // SAFETY: the op is ours until reported, just below.
                        unsafe { op.op() }.pool_took(id, res);
                    }
                    out.push(Completion { op, res });
                }
            }
        }
        out.extend(due.into_iter().map(|op| Completion {
            op,
            res: -libc::ETIME,
        }));
        (woke, full)
    }

    /// Makes the leader's wait return with a NOP tagged [`WAKE`].
    fn wake_nop(&self, spill: &mut Vec<Completion>) {
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
}

impl Engine for Ring {
    /// Ops issued by a thread running for the port wait in the SQ for that
    /// thread's next visit to the port (`core/running.rs`).
    fn can_defer(&self) -> bool {
        true
    }

    /// No: two receives (or sends) armed on one socket are woken in no
    /// particular order (the socket's wait queue is LIFO), so a stream's
    /// bytes could land out of order.
    fn orders_per_fd(&self) -> bool {
        false
    }

    /// Queues `op`, and submits it to the kernel at once unless `defer`: then
    /// it stays in the SQ until the next [`flush`](Engine::flush),
    /// [`wait`](Engine::wait) or immediate submission from any thread (a
    /// full SQ is submitted to make room either way). Never
    /// [`Submitted::Done`]: the kernel reports every op through the CQ.
    fn submit(&self, op: OpPtr, defer: bool, spill: &mut Vec<Completion>) -> io::Result<Submitted> {
        // SAFETY: the caller hands us exclusive ownership of the record; we
        // read its kind, fd and deadline.
        let io = unsafe { op.op() };
        if let Some(files) = &self.files {
            if files::names_fd(io.kind) {
                // First use of the fd: one register call, outside the SQ
                // lock. `op::entries` reads the slot back.
                let _ = files.slot(&io.fd);
            }
        }
        let closed = self.sq.lock();
        if *closed {
            return Err(driver::closed());
        }
        if io.kind == OpKind::Timer {
            let at = io.deadline.expect("a timer has a deadline");
            let Some(tick) = self.timers.lock().insert(at, op) else {
                // A tick in flight fires no later than this timer.
                return Ok(Submitted::Queued);
            };
            // SAFETY: we hold the SQ lock; the timespec lives in `timers`.
            unsafe { self.push_tick(tick, spill)? };
        } else {
            // SAFETY: the caller hands us exclusive ownership of the record;
            // nothing else references it until its CQE is reaped. We hold
            // the SQ lock.
            unsafe { self.push_op(op, spill)? };
        }
        if !defer {
            self.enter_submit(spill)?;
        }
        Ok(Submitted::Queued)
    }

    /// Submits the entries waiting in the SQ, if any (no system call when
    /// there are none).
    fn flush(&self, spill: &mut Vec<Completion>) {
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

    /// Leader only: blocks until the kernel reports a completion (or a
    /// wake), or `deadline` passes, and collects what is ready into `out`.
    ///
    /// Returns after every return from the kernel, even with nothing
    /// collected: another thread may have reaped the completion that woke
    /// it, and only the core (under its lock) knows whether that left a
    /// packet for this thread.
    fn wait(&self, deadline: Option<Instant>, out: &mut Vec<Completion>) -> io::Result<()> {
        // A closing port ends zero-copy sends whose peers stopped reading.
        self.zc.abort_stuck();
        let woke = self.drain(out);
        if woke || !out.is_empty() {
            return Ok(());
        }
        let r = match deadline {
            None => self.ring.submitter().submit_and_wait(1),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(());
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
        Ok(())
    }

    /// Collects ready completions without blocking. Skips (returns nothing)
    /// when another thread is reaping right now: that thread queues them.
    /// Reports a consumed [`WAKE`]: that wake was meant for the leader,
    /// which will not see it.
    fn reap(&self, out: &mut Vec<Completion>) -> Reaped {
        if self.cq.is_locked() {
            return Reaped::default();
        }
        Reaped {
            swallowed_wake: self.drain(out),
            complete: true,
        }
    }

    /// Completions are posted to the CQ by the kernel itself: draining it
    /// is all a wait would add.
    fn poll(&self, out: &mut Vec<Completion>) -> Reaped {
        Reaped {
            swallowed_wake: self.drain(out),
            complete: true,
        }
    }

    /// Makes the leader's wait return: the doorbell (`wake.rs`), or a NOP
    /// tagged [`WAKE`].
    fn wake(&self, spill: &mut Vec<Completion>) {
        if !self.ring_bell() {
            self.wake_nop(spill);
        }
    }

    /// Cancels `targets` (all ops of `fd` when `all`). The caller holds
    /// their fd's in-flight lock, so each target is alive and its address is
    /// not reused before this cancel request is in the SQ; ops submitted
    /// later are behind it in the SQ, so the kernel cannot confuse them.
    fn cancel(
        &self,
        fd: FdRef,
        targets: &[OpPtr],
        all: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        let closed = self.sq.lock();
        if *closed {
            // `shutdown` already cancelled everything in flight.
            return Ok(());
        }
        // Timers are ours (`timers.rs`): a pending one ends here; one no
        // longer pending fired, and its completion is on its way.
        let mut kernel = Vec::with_capacity(targets.len());
        {
            let mut timers = self.timers.lock();
            for &t in targets {
                // SAFETY: every target is alive (the caller holds its fd's
                // in-flight lock).
                if unsafe { t.kind() } != OpKind::Timer {
                    kernel.push(t);
                } else if timers.take(t) {
                    spill.push(Completion {
                        op: t,
                        res: -libc::ECANCELED,
                    });
                }
            }
        }
        if kernel.is_empty() {
            return Ok(());
        }
        let builders: Vec<types::CancelBuilder> = if all {
            // The kernel matches by file: one request catches the fd's ops
            // whether their SQEs named its slot or its number.
            let by_fd = match files::installed(&fd) {
                Some(slot) => types::CancelBuilder::fd(types::Fixed(slot)),
                None => types::CancelBuilder::fd(types::Fd(fd.raw)),
            };
            vec![by_fd.all()]
        } else {
            kernel
                .iter()
                .map(|t| types::CancelBuilder::user_data(t.user_data()))
                .collect()
        };
        for b in builders {
            let e = opcode::AsyncCancel2::new(b).build().user_data(CANCEL);
            // SAFETY: a cancel request references no memory; we hold the SQ lock.
            unsafe { self.push(&e, spill)? };
        }
        self.enter_submit(spill)
    }

    /// Pushes the orphans' entries again and submits them. Refused (all
    /// `false`) once `shutdown` ran: its cancel-everything made them.
    fn resubmit(&self, ops: &[OpPtr], spill: &mut Vec<Completion>) -> Vec<bool> {
        let closed = self.sq.lock();
        if *closed {
            return vec![false; ops.len()];
        }
        let taken: Vec<bool> = ops
            .iter()
            .map(|op| {
                // SAFETY: the op was reported complete, so the kernel no
                // longer references it, and the caller hands it back to us;
                // we hold the SQ lock.
                match unsafe { self.push_op(*op, spill) } {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!("io_uring: could not resubmit an orphaned operation: {e}");
                        false
                    }
                }
            })
            .collect();
        if let Err(e) = self.enter_submit(spill) {
            tracing::warn!("io_uring: submitting resubmitted operations failed: {e}");
        }
        taken
    }

    /// Zero-copy sends reported, and how many of them the kernel copied.
    fn zerocopy_counts(&self) -> (u64, u64) {
        self.zc.counts()
    }

    /// Refuses further submissions and cancels every op in flight. A
    /// zero-copy send whose result was posted has nothing left to cancel:
    /// it is reported at its notification, which the waits that follow
    /// force after a grace period (`send_zc.rs`).
    fn shutdown(&self, spill: &mut Vec<Completion>) {
        let mut closed = self.sq.lock();
        if *closed {
            return;
        }
        *closed = true;
        self.zc.shut_down();
        // Pending timers end cancelled; their ticks go with the rest.
        spill.extend(self.timers.lock().clear().into_iter().map(|op| Completion {
            op,
            res: -libc::ECANCELED,
        }));
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(CANCEL);
        // SAFETY: the cancel request references no memory; we hold the SQ lock.
        let r = unsafe { self.push(&cancel, spill) }.and_then(|()| self.enter_submit(spill));
        if let Err(e) = r {
            tracing::warn!("io_uring: could not cancel operations at close: {e}");
        }
    }
}

impl Drop for Ring {
    /// Stops the fixed-file table's register calls before the ring's fd is
    /// closed (fds outliving the port then have nothing to release: the
    /// table goes with the ring).
    fn drop(&mut self) {
        if let Some(files) = &self.files {
            files.close();
        }
    }
}
