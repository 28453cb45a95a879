//! The epoll backend: readiness turned into completions, for where io_uring
//! is missing or denied (seccomp profiles, `kernel.io_uring_disabled`,
//! gVisor, old kernels).
//!
//! - **Sockets, pipes**: an operation is tried at once without blocking; if
//!   it would block it waits in its fd's queue until epoll reports
//!   readiness, then the leader thread finishes it (`fd.rs`).
//! - **Regular files**: run on a small blocking pool (`pool.rs`).
//! - **No-ops, shutdowns**: complete at once.
//! - **Calls that cannot be made non-blocking** (`fsync`, `fdatasync`,
//!   `fallocate`, `stat`, `open`): the blocking pool too.
//! - **Timers and time-outs**: one ordered map per port, watched by a
//!   timerfd in the epoll set (`timers.rs`).
//! - **The fd's own mode is kept**: sockets and pipes are driven with
//!   `MSG_DONTWAIT` / `RWF_NOWAIT` per call. Only `connect` and the socket
//!   side of `send_file` need the fd itself non-blocking, and set
//!   `O_NONBLOCK` just for their one call: a blocking call the user makes
//!   on the same fd at that very moment may see `EAGAIN`.
//! - **Wake-ups** (posts, shutdown, pool results) go through an eventfd
//!   registered with the epoll instance: no polling loop, no sleep.
//!
//! The port core is the same as for io_uring: one leader waits in
//! `epoll_wait` (and finishes ready operations), the others park LIFO in
//! user space. Completions produced outside the leader (immediate results,
//! pool results) reach the port through the `spill` of `submit` or the
//! `ready` list, which `wait` and `reap` drain.

mod fd;
mod pool;
mod timers;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

pub(crate) use self::fd::Registration;
use self::fd::{
    attempt, classify, is_blocking, is_read_side, Attempt, FdEntry, FdKind, Pending, Queues,
};
use self::pool::Pool;
use self::timers::{Deadline, Timers};
use crate::driver::{closed, Completion, Engine, FdRef, OpIo, OpKind, OpPtr, Reaped, Submitted};

/// epoll `data` of the wake eventfd; fd registrations use ids from 1.
const WAKE_ID: u64 = 0;
/// epoll `data` of the deadlines' timerfd (`timers.rs`).
const TIMER_ID: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

pub(crate) struct Reactor {
    shared: Arc<Shared>,
    pool: Pool,
}

pub(super) struct Shared {
    epfd: OwnedFd,
    wakefd: OwnedFd,
    /// Set by `shutdown`; checked under each queue's lock before queueing.
    closed: AtomicBool,
    /// Registered fds by id (weak: an fd's registration dies with its owner).
    regs: Mutex<HashMap<u64, Weak<FdEntry>>>,
    next_id: AtomicU64,
    /// Completions produced outside `wait` (pool results), not yet reaped.
    ready: Mutex<Vec<Completion>>,
    /// Timer operations and the deadlines of waiting operations.
    timers: Mutex<Timers>,
    /// The process that created the instance: a child forked from it
    /// shares the epoll instance and must not change its interest list
    /// (`core/fork.rs`).
    pub(super) pid: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Shared {
    pub(super) fn epfd(&self) -> RawFd {
        self.epfd.as_raw_fd()
    }

    /// Hands over a completion produced by another thread and wakes the
    /// leader to collect it.
    pub(super) fn complete(&self, c: Completion) {
        self.ready.lock().push(c);
        self.wake();
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd. A full
        // counter (EAGAIN) already means "wake pending".
        unsafe { libc::write(self.wakefd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn take_ready(&self, out: &mut Vec<Completion>) {
        let mut r = self.ready.lock();
        if !r.is_empty() {
            out.append(&mut r);
        }
    }
}

impl Reactor {
    pub(crate) fn open() -> io::Result<Reactor> {
        // SAFETY: plain syscalls; each returned fd is owned right away.
        let epfd = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        // SAFETY: as above.
        let wakefd = unsafe {
            OwnedFd::from_raw_fd(cvt(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?)
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE_ID,
        };
        // SAFETY: both fds are open; `ev` is valid.
        cvt(unsafe {
            libc::epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                wakefd.as_raw_fd(),
                &mut ev,
            )
        })?;
        let timers = Timers::new()?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: TIMER_ID,
        };
        // SAFETY: both fds are open; `ev` is valid.
        cvt(unsafe {
            libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, timers.fd(), &mut ev)
        })?;
        let shared = Arc::new(Shared {
            epfd,
            wakefd,
            closed: AtomicBool::new(false),
            regs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(WAKE_ID + 1),
            ready: Mutex::new(Vec::new()),
            timers: Mutex::new(timers),
            pid: std::process::id(),
        });
        let pool = Pool::new(Arc::downgrade(&shared));
        Ok(Reactor { shared, pool })
    }

    /// The fd's registration, made on first use.
    fn registration<'a>(&self, fd: &'a FdRef) -> &'a Registration {
        fd.state().epoll.get_or_init(|| {
            let raw = fd.raw;
            let entry = Arc::new(FdEntry {
                id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
                fd: raw,
                kind: classify(raw),
                queues: Mutex::new(Queues::default()),
            });
            self.shared
                .regs
                .lock()
                .insert(entry.id, Arc::downgrade(&entry));
            Registration {
                state: entry,
                shared: Arc::downgrade(&self.shared),
            }
        })
    }
}

impl Reactor {
    /// One `epoll_wait` of up to `timeout_ms`: finishes the ops of every fd
    /// reported ready into `out`. Returns whether the wake-up eventfd fired
    /// (and resets it).
    fn epoll_once(&self, timeout_ms: i32, out: &mut Vec<Completion>) -> io::Result<bool> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: `events` has room for EVENTS entries.
        let n = unsafe {
            libc::epoll_wait(
                self.shared.epfd(),
                events.as_mut_ptr(),
                EVENTS as i32,
                timeout_ms,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut woke = false;
        for ev in &events[..n as usize] {
            let (id, flags) = (ev.u64, ev.events);
            if id == WAKE_ID {
                let mut v: u64 = 0;
                // SAFETY: reads 8 bytes into a valid u64 (resets the eventfd).
                unsafe {
                    libc::read(
                        self.shared.wakefd.as_raw_fd(),
                        (&mut v as *mut u64).cast(),
                        8,
                    )
                };
                woke = true;
                continue;
            }
            if id == TIMER_ID {
                self.expire(out);
                continue;
            }
            let entry = self.shared.regs.lock().get(&id).and_then(Weak::upgrade);
            if let Some(entry) = entry {
                run_ready(&self.shared, &entry, flags, out);
            }
        }
        Ok(woke)
    }

    /// The timerfd fired: ends what is due (`timers.rs`). A timer fires
    /// (`-ETIME`); an operation still waiting times out (`-ETIMEDOUT`); one
    /// no longer in its queue finished or was cancelled meanwhile.
    fn expire(&self, out: &mut Vec<Completion>) {
        let due = {
            let mut t = self.shared.timers.lock();
            t.acknowledge();
            t.expired()
        };
        for d in due {
            match d {
                Deadline::Timer(op) => out.push(Completion {
                    op,
                    res: -libc::ETIME,
                }),
                Deadline::Queued { op, fd } => {
                    let mut q = fd.queues.lock();
                    let q = &mut *q;
                    for queue in [&mut q.read, &mut q.write] {
                        if let Some(i) = queue.iter().position(|p| p.op == op) {
                            queue.remove(i);
                            out.push(Completion {
                                op,
                                res: -libc::ETIMEDOUT,
                            });
                        }
                    }
                }
                Deadline::Pooled(op) => {
                    if self.pool.take(op) {
                        out.push(Completion {
                            op,
                            res: -libc::ETIMEDOUT,
                        });
                    }
                }
            }
        }
    }
}

impl Engine for Reactor {
    /// Every op is tried at once: nothing to defer.
    fn can_defer(&self) -> bool {
        false
    }

    /// Yes: each fd keeps one FIFO queue per direction, and only its front
    /// is tried (`fd.rs`).
    fn orders_per_fd(&self) -> bool {
        true
    }

    /// No-ops, and operations whose first non-blocking attempt finishes,
    /// are [`Submitted::Done`]; regular-file reads and writes go to the
    /// pool; the rest wait in their fd's queue for readiness.
    fn submit(
        &self,
        op: OpPtr,
        _defer: bool,
        _spill: &mut Vec<Completion>,
    ) -> io::Result<Submitted> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        // SAFETY: the caller hands us exclusive ownership of the record; we
        // only read its kind and fd here.
        let io: &OpIo = unsafe { op.op() };
        let deadline = io.deadline;
        match io.kind {
            OpKind::Nop => return Ok(Submitted::Done(0)),
            OpKind::Timer => {
                let at = deadline.expect("a timer has a deadline");
                self.shared.timers.lock().insert(at, Deadline::Timer(op));
                return Ok(Submitted::Queued);
            }
            _ => {}
        }
        let fd = io.fd;
        let entry = &self.registration(&fd).state;
        let file_io = entry.kind == FdKind::File && matches!(io.kind, OpKind::Read | OpKind::Write);
        if file_io || is_blocking(io.kind) {
            let mut job = Pending::new(op);
            let key = deadline.map(|at| self.shared.timers.lock().insert(at, Deadline::Pooled(op)));
            job.timer = key;
            if let Err(e) = self.pool.push(job) {
                if let Some(key) = key {
                    self.shared.timers.lock().remove(key);
                }
                return Err(e);
            }
            return Ok(Submitted::Queued);
        }
        let read_side = is_read_side(io.kind);
        let mut q = entry.queues.lock();
        // Checked again under the queue lock: `shutdown` sets the flag, then
        // empties every queue under its lock, so an op queued after this
        // check is still cancelled.
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        let queue_empty = if read_side {
            q.read.is_empty()
        } else {
            q.write.is_empty()
        };
        let mut pending = Pending::new(op);
        if queue_empty {
            // SAFETY: we own the record and nobody else sees it yet.
            if let Attempt::Done(res) = unsafe { attempt(&mut pending, entry.kind) } {
                return Ok(Submitted::Done(res));
            }
        }
        if !q.registered {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
                u64: entry.id,
            };
            // SAFETY: `entry.fd` is open (the op's owner keeps it), `ev` valid.
            let r = unsafe {
                libc::epoll_ctl(self.shared.epfd(), libc::EPOLL_CTL_ADD, entry.fd, &mut ev)
            };
            if r < 0 {
                // Not pollable after all: fail the op in its packet.
                let errno = io::Error::last_os_error().raw_os_error();
                return Ok(Submitted::Done(-errno.unwrap_or(libc::EIO)));
            }
            q.registered = true;
        }
        if let Some(at) = deadline {
            // Under the queue lock, then the timers' (timers.rs).
            let d = Deadline::Queued {
                op,
                fd: entry.clone(),
            };
            pending.timer = Some(self.shared.timers.lock().insert(at, d));
        }
        if read_side {
            q.read.push_back(pending);
        } else {
            q.write.push_back(pending);
        }
        Ok(Submitted::Queued)
    }

    /// Nothing is ever deferred.
    fn flush(&self, _spill: &mut Vec<Completion>) {}

    /// Leader only: waits for readiness, finishes ready ops into `out`.
    fn wait(&self, deadline: Option<Instant>, out: &mut Vec<Completion>) -> io::Result<()> {
        loop {
            self.shared.take_ready(out);
            if !out.is_empty() {
                return Ok(());
            }
            let timeout_ms = match deadline {
                None => -1,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(());
                    }
                    // Round up so a short wait does not spin at 0 ms.
                    let us = (d - now).as_micros();
                    us.div_ceil(1000).min(i32::MAX as u128) as i32
                }
            };
            let woke = match self.epoll_once(timeout_ms, out) {
                Ok(w) => w,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            };
            self.shared.take_ready(out);
            if woke || !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// Collects completions produced by other threads, without blocking.
    /// Never consumes the leader's wake-up (only the leader reads the
    /// eventfd).
    /// Takes the operations already finished; does not ask the kernel
    /// which fds are ready (`complete: false`: that is a `poll`).
    fn reap(&self, out: &mut Vec<Completion>) -> Reaped {
        self.shared.take_ready(out);
        Reaped::default()
    }

    /// One `epoll_wait` that does not block: runs the ops whose fds are
    /// ready, and collects the pool's results.
    fn poll(&self, out: &mut Vec<Completion>) -> Reaped {
        let woke = match self.epoll_once(0, out) {
            Ok(w) => w,
            Err(e) => {
                if e.raw_os_error() != Some(libc::EINTR) {
                    tracing::warn!("epoll: polling for readiness failed: {e}");
                }
                false
            }
        };
        self.shared.take_ready(out);
        Reaped {
            swallowed_wake: woke,
            complete: true,
        }
    }

    fn wake(&self, _spill: &mut Vec<Completion>) {
        self.shared.wake();
    }

    /// Ops still waiting for readiness or for a pool thread come back at
    /// once in `spill` with `ECANCELED`; the others are finishing and keep
    /// their real result. With `all`, every op queued on the fd (and every
    /// pool job for it) is a target, found without searching `targets`.
    fn cancel(
        &self,
        fd: FdRef,
        targets: &[OpPtr],
        all: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<()> {
        let many: HashSet<OpPtr> = if !all && targets.len() > 8 {
            targets.iter().copied().collect()
        } else {
            Default::default()
        };
        let is_target = |p: &Pending| {
            if all {
                // SAFETY: queued ops (and pool jobs) are owned by the
                // backend, and are read under their queue's lock.
                unsafe { p.op.op() }.fd.raw == fd.raw
            } else if many.is_empty() {
                targets.contains(&p.op)
            } else {
                many.contains(&p.op)
            }
        };
        if let Some(reg) = fd.state().epoll.get() {
            let mut q = reg.state.queues.lock();
            let q = &mut *q;
            for queue in [&mut q.read, &mut q.write] {
                // The others keep their issue order.
                let mut kept = VecDeque::with_capacity(queue.len());
                for p in queue.drain(..) {
                    if is_target(&p) {
                        if let Some(key) = p.timer {
                            self.shared.timers.lock().remove(key);
                        }
                        spill.push(Completion {
                            op: p.op,
                            res: -libc::ECANCELED,
                        });
                    } else {
                        kept.push_back(p);
                    }
                }
                *queue = kept;
            }
        }
        self.pool.cancel(&is_target, spill);
        // Timer operations live only in the timers (timers.rs).
        let mut timers = self.shared.timers.lock();
        for &t in targets {
            // SAFETY: every target is alive (the caller holds its fd's
            // in-flight lock).
            if unsafe { t.kind() } == OpKind::Timer && timers.take_timer(t) {
                spill.push(Completion {
                    op: t,
                    res: -libc::ECANCELED,
                });
            }
        }
        Ok(())
    }

    /// The kernel never cancels an epoll backend's operation on its own, so
    /// the core never finds orphans here; any op it hands back is simply
    /// submitted again.
    fn resubmit(&self, ops: &[OpPtr], spill: &mut Vec<Completion>) -> Vec<bool> {
        ops.iter()
            .map(|&op| match self.submit(op, false, spill) {
                Ok(Submitted::Queued) => true,
                Ok(Submitted::Done(res)) => {
                    spill.push(Completion { op, res });
                    true
                }
                Err(_) => false,
            })
            .collect()
    }

    /// Refuses new ops; every queued op comes back cancelled in `spill`.
    fn shutdown(&self, spill: &mut Vec<Completion>) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.pool.shutdown(spill);
        // Timers end cancelled; the deadlines of queued ops go with them
        // (those ops are drained below).
        spill.extend(
            self.shared
                .timers
                .lock()
                .clear()
                .into_iter()
                .map(|op| Completion {
                    op,
                    res: -libc::ECANCELED,
                }),
        );
        let entries: Vec<Arc<FdEntry>> = self
            .shared
            .regs
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for entry in entries {
            let mut q = entry.queues.lock();
            let q = &mut *q;
            for p in q.read.drain(..).chain(q.write.drain(..)) {
                spill.push(Completion {
                    op: p.op,
                    res: -libc::ECANCELED,
                });
            }
        }
        self.shared.wake();
    }
}

/// Runs the queues of an fd that epoll reported ready.
fn run_ready(shared: &Shared, entry: &FdEntry, flags: u32, out: &mut Vec<Completion>) {
    let readable =
        flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
    let writable = flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
    let mut q = entry.queues.lock();
    let q = &mut *q;
    for (ready, queue) in [(readable, &mut q.read), (writable, &mut q.write)] {
        if !ready {
            continue;
        }
        while let Some(front) = queue.front_mut() {
            // SAFETY: queued records are owned by the backend; we hold the
            // fd's lock, so nobody else touches them.
            match unsafe { attempt(front, entry.kind) } {
                Attempt::Done(res) => {
                    let p = queue.pop_front().expect("front exists");
                    if let Some(key) = p.timer {
                        shared.timers.lock().remove(key);
                    }
                    out.push(Completion { op: p.op, res });
                }
                Attempt::WouldBlock => break,
            }
        }
    }
}
