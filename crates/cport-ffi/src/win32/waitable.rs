//! Waitable objects — events, semaphores and threads — and the waits on
//! them: the engine behind `SetEvent`, `WaitForMultipleObjects`, thread
//! exit and `OVERLAPPED.hEvent`.
//!
//! # One lock
//! Every change of an object's state and every wait takes one process-wide
//! lock, [`ENGINE`]. With it, a wait-all sees and takes all its objects in
//! one atomic step, and a signal hands itself to the waiters that can use
//! it, first come first served, without lock-ordering rules. The cost is
//! that unrelated events serialise on that lock for the few instructions a
//! signal or a check takes; IOCP servers signal events rarely (start-up,
//! shutdown, `hEvent` of the odd operation), not per packet. Each object's
//! own `Mutex` is only ever locked with `ENGINE` held, so it never
//! contends; it is there to give Rust a place for the state.
//!
//! # Invariants (all under `ENGINE`)
//! - A waiter sits in the waiter list of each of its objects exactly while
//!   its `result` is [`WAITING`]; whoever sets the result (a signaller in
//!   [`wake`], or the waiter itself on time-out) removes it from every list
//!   in the same critical section.
//! - A signal is offered to the waiters of its object in arrival order
//!   ([`wake`]) right when it is made, so a registered waiter never sleeps
//!   while one of its objects is signalled (wait-any), or while all are
//!   (wait-all).
//! - Taking a signal ([`Waitable::take`]) resets an auto-reset event and
//!   decrements a semaphore; manual-reset events and exited threads stay
//!   signalled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// The one lock of the engine (module docs).
static ENGINE: Mutex<()> = Mutex::new(());

/// What kind of object, and what taking its signal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An event: manual reset (stays signalled until reset) or auto reset
    /// (one waiter takes the signal).
    Event { manual: bool },
    /// A semaphore with this maximum count.
    Semaphore { max: u32 },
    /// A thread: signalled once it has exited.
    Thread,
}

/// An object a thread can wait for.
pub(crate) struct Waitable {
    kind: Kind,
    state: Mutex<State>,
    /// Threads: their id and start gate.
    thread: Option<ThreadCtl>,
}

/// What only thread objects have.
pub(crate) struct ThreadCtl {
    /// The id `GetCurrentThreadId` reports in the thread.
    pub(crate) id: u32,
    /// Suspend count (1 for `CREATE_SUSPENDED` until `ResumeThread`).
    suspend: Mutex<u32>,
    resumed: Condvar,
}

impl ThreadCtl {
    /// Lowers the suspend count, starting the thread at 0; the previous
    /// count.
    pub(crate) fn resume(&self) -> u32 {
        let mut n = self.suspend.lock();
        let prev = *n;
        if prev > 0 {
            *n -= 1;
            if *n == 0 {
                self.resumed.notify_all();
            }
        }
        prev
    }

    /// Waits until the suspend count is 0 (in the new thread, before it
    /// runs its start function).
    pub(crate) fn wait_resumed(&self) {
        let mut n = self.suspend.lock();
        while *n > 0 {
            self.resumed.wait(&mut n);
        }
    }
}

struct State {
    /// Signal count: 0 or 1 for events and threads, the count of a
    /// semaphore.
    count: u32,
    /// Threads: the exit code, once exited.
    exit_code: u32,
    waiters: Vec<Arc<Waiter>>,
}

/// `result` of a waiter still waiting.
const WAITING: usize = usize::MAX;

/// One thread waiting in `WaitForMultipleObjects`.
struct Waiter {
    objects: Vec<Arc<Waitable>>,
    all: bool,
    /// The index that satisfied the wait, or [`WAITING`]; written under
    /// `ENGINE`.
    result: AtomicUsize,
    cv: Condvar,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Satisfied by the object at this index (wait-any), or by all (0).
    Signalled(usize),
    TimedOut,
}

impl Waitable {
    /// A new object of `kind` with signal count `count`.
    pub(crate) fn new(kind: Kind, count: u32) -> Arc<Waitable> {
        Self::make(kind, count, None)
    }

    /// A thread object for thread `id`, not exited, suspended or not.
    pub(crate) fn new_thread(id: u32, suspended: bool) -> Arc<Waitable> {
        let ctl = ThreadCtl {
            id,
            suspend: Mutex::new(suspended as u32),
            resumed: Condvar::new(),
        };
        Self::make(Kind::Thread, 0, Some(ctl))
    }

    fn make(kind: Kind, count: u32, thread: Option<ThreadCtl>) -> Arc<Waitable> {
        Arc::new(Waitable {
            kind,
            state: Mutex::new(State {
                count,
                exit_code: 0,
                waiters: Vec::new(),
            }),
            thread,
        })
    }

    /// The thread part of a thread object.
    pub(crate) fn thread(&self) -> Option<&ThreadCtl> {
        self.thread.as_ref()
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// Sets the signal of an event (`SetEvent`).
    pub(crate) fn set(self: &Arc<Self>) {
        let _g = ENGINE.lock();
        self.state.lock().count = 1;
        wake(self);
    }

    /// Clears the signal of an event (`ResetEvent`).
    pub(crate) fn reset(&self) {
        let _g = ENGINE.lock();
        self.state.lock().count = 0;
    }

    /// Adds `n` to a semaphore's count; its previous count, or `None` when
    /// that would exceed the maximum (nothing changes then).
    pub(crate) fn release(self: &Arc<Self>, n: u32) -> Option<u32> {
        let Kind::Semaphore { max } = self.kind else {
            return None;
        };
        let _g = ENGINE.lock();
        let mut st = self.state.lock();
        let prev = st.count;
        if n > max - prev {
            return None;
        }
        st.count = prev + n;
        drop(st);
        wake(self);
        Some(prev)
    }

    /// Marks a thread exited with `code` and wakes its waiters.
    pub(crate) fn exit(self: &Arc<Self>, code: u32) {
        let _g = ENGINE.lock();
        let mut st = self.state.lock();
        if st.count != 0 {
            return; // already exited
        }
        st.count = 1;
        st.exit_code = code;
        drop(st);
        wake(self);
    }

    /// A thread's exit code, once it has exited.
    pub(crate) fn exit_code(&self) -> Option<u32> {
        let _g = ENGINE.lock();
        let st = self.state.lock();
        (st.count != 0).then_some(st.exit_code)
    }

    fn signalled(&self) -> bool {
        self.state.lock().count != 0
    }

    /// Takes the signal (module docs). `ENGINE` must be held.
    fn take(&self) {
        let mut st = self.state.lock();
        match self.kind {
            Kind::Event { manual: false } => st.count = 0,
            Kind::Semaphore { .. } => st.count = st.count.saturating_sub(1),
            Kind::Event { manual: true } | Kind::Thread => {}
        }
    }
}

/// Whether `objects` can satisfy a wait now, taking their signals if so.
/// `ENGINE` must be held.
fn try_satisfy(objects: &[Arc<Waitable>], all: bool) -> Option<usize> {
    if all {
        if !objects.iter().all(|o| o.signalled()) {
            return None;
        }
        objects.iter().for_each(|o| o.take());
        return Some(0);
    }
    let i = objects.iter().position(|o| o.signalled())?;
    objects[i].take();
    Some(i)
}

/// Offers `object`'s new signal to its waiters, oldest first. `ENGINE`
/// must be held.
fn wake(object: &Arc<Waitable>) {
    let waiters = object.state.lock().waiters.clone();
    for w in waiters {
        if !object.signalled() {
            break; // taken
        }
        if let Some(i) = try_satisfy(&w.objects, w.all) {
            unregister(&w);
            w.result.store(i, Ordering::Relaxed);
            w.cv.notify_one();
        }
    }
}

/// Removes `w` from the waiter lists of its objects. `ENGINE` must be
/// held.
fn unregister(w: &Arc<Waiter>) {
    for o in &w.objects {
        o.state.lock().waiters.retain(|x| !Arc::ptr_eq(x, w));
    }
}

/// Waits until one of `objects` (`all`: every one of them at once) is
/// signalled, or `deadline` passes (`None`: never). The signals that
/// satisfy the wait are taken. The sleep is a blocking scope for the
/// port's concurrency value. `objects` must be distinct when `all`.
pub(crate) fn wait(objects: Vec<Arc<Waitable>>, all: bool, deadline: Option<Instant>) -> Outcome {
    let w = {
        let _g = ENGINE.lock();
        if let Some(i) = try_satisfy(&objects, all) {
            return Outcome::Signalled(i);
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Outcome::TimedOut;
        }
        let w = Arc::new(Waiter {
            objects,
            all,
            result: AtomicUsize::new(WAITING),
            cv: Condvar::new(),
        });
        for (i, o) in w.objects.iter().enumerate() {
            // Listed once per object, even when named twice (wait-any).
            if !w.objects[..i].iter().any(|p| Arc::ptr_eq(p, o)) {
                o.state.lock().waiters.push(w.clone());
            }
        }
        w
    };
    // The guard of the blocking scope is taken before ENGINE: entering it
    // may flush deferred I/O, which must not run under our lock.
    crate::port::blocking(|| {
        let mut g = ENGINE.lock();
        loop {
            let r = w.result.load(Ordering::Relaxed);
            if r != WAITING {
                return Outcome::Signalled(r);
            }
            match deadline {
                None => w.cv.wait(&mut g),
                Some(d) => {
                    if w.cv.wait_until(&mut g, d).timed_out() {
                        let r = w.result.load(Ordering::Relaxed);
                        if r != WAITING {
                            return Outcome::Signalled(r);
                        }
                        unregister(&w);
                        return Outcome::TimedOut;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_millis(20))
    }

    /// Number of threads registered as waiting on `o`.
    fn waiting(o: &Waitable) -> usize {
        let _g = ENGINE.lock();
        o.state.lock().waiters.len()
    }

    /// Spins (bounded) until `n` threads wait on `o`.
    fn until_waiting(o: &Waitable, n: usize) {
        let start = Instant::now();
        while waiting(o) != n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "waiters never came"
            );
            std::thread::yield_now();
        }
    }

    /// `n` threads waiting on `e` without a deadline, once all wait.
    fn waiters(e: &Arc<Waitable>, n: usize) -> Vec<std::thread::JoinHandle<Outcome>> {
        let threads = (0..n)
            .map(|_| {
                let e = e.clone();
                std::thread::spawn(move || wait(vec![e], false, None))
            })
            .collect();
        until_waiting(e, n);
        threads
    }

    #[test]
    fn auto_reset_event_releases_one_waiter_per_signal() {
        let e = Waitable::new(Kind::Event { manual: false }, 0);
        let threads = waiters(&e, 3);
        for left in (0..3).rev() {
            e.set();
            // The signal went to exactly one waiter, synchronously.
            assert_eq!(waiting(&e), left);
            assert!(!e.signalled(), "taken by the waiter it released");
        }
        for t in threads {
            assert_eq!(t.join().unwrap(), Outcome::Signalled(0));
        }
        // Signals do not count: two sets with nobody waiting leave one.
        e.set();
        e.set();
        assert_eq!(wait(vec![e.clone()], false, soon()), Outcome::Signalled(0));
        assert_eq!(wait(vec![e], false, soon()), Outcome::TimedOut);
    }

    #[test]
    fn manual_reset_event_releases_every_waiter() {
        let e = Waitable::new(Kind::Event { manual: true }, 0);
        let threads = waiters(&e, 3);
        e.set();
        assert_eq!(waiting(&e), 0);
        for t in threads {
            assert_eq!(t.join().unwrap(), Outcome::Signalled(0));
        }
        assert!(e.signalled());
    }

    #[test]
    fn wait_all_takes_every_signal_at_once() {
        let a = Waitable::new(Kind::Event { manual: false }, 1);
        let b = Waitable::new(Kind::Event { manual: false }, 0);
        assert_eq!(
            wait(vec![a.clone(), b.clone()], true, soon()),
            Outcome::TimedOut
        );
        assert!(a.signalled(), "a timed-out wait-all takes nothing");
        b.set();
        assert_eq!(
            wait(vec![a.clone(), b.clone()], true, None),
            Outcome::Signalled(0)
        );
        assert!(!a.signalled() && !b.signalled());
    }

    #[test]
    fn semaphore_counts_down_and_refuses_overflow() {
        let s = Waitable::new(Kind::Semaphore { max: 2 }, 0);
        assert_eq!(s.release(3), None);
        assert_eq!(s.release(2), Some(0));
        assert_eq!(wait(vec![s.clone()], false, soon()), Outcome::Signalled(0));
        assert_eq!(wait(vec![s.clone()], false, soon()), Outcome::Signalled(0));
        assert_eq!(wait(vec![s], false, soon()), Outcome::TimedOut);
    }
}
