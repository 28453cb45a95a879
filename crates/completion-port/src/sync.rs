//! The synchronisation primitives the port core (`core/`) is built on, in
//! one place, so that the loom tests check the real code: under
//! `cfg(loom)` each one is swapped for loom's model of it, and the loom
//! models in `core/loom.rs` run the real `Core` over the model engine of
//! `driver/model.rs`.
//!
//! Normal builds use `std`'s atomics and threads, `parking_lot`'s locks
//! and crossbeam's `SegQueue` — re-exported here unchanged, at no cost.
//!
//! Under loom:
//! - **The packet queue** is a `Mutex<VecDeque>` plus an atomic length that
//!   stands for the `SegQueue`'s head and tail indices: `is_empty` (and a
//!   `pop` that finds the queue empty) reads it without the lock, as
//!   `SegQueue::is_empty` / `pop` read those indices. Were every look at
//!   the queue to take the lock, the lock alone would order a poster's push
//!   against a sleeper's look, and the core's `SeqCst` fences (the Dekker
//!   pairs of `core/mod.rs`) could not be checked. Its internal correctness
//!   is crossbeam's.
//! - **Time** does not exist in a model: `park_timeout` is a spurious
//!   wake-up (a yield), so a deadline loop makes progress without one; the
//!   models use no deadlines.
//!
//! The backends (`driver/`) keep their own locks: they are not modelled.

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU8, AtomicUsize};
    pub(crate) use std::thread_local;

    pub(crate) use crossbeam_queue::SegQueue as Queue;
    pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};

    /// Thread parking (`std::thread`).
    pub(crate) mod thread {
        pub(crate) use std::thread::{current, park, park_timeout, Thread};
    }
}

#[cfg(loom)]
mod imp {
    use std::collections::VecDeque;
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU8, AtomicUsize};
    pub(crate) use loom::thread_local;
    use std::sync::atomic::Ordering;

    /// Thread parking (loom's), and a `park_timeout` that is a yield.
    pub(crate) mod thread {
        pub(crate) use loom::thread::{current, park, Thread};

        /// No time in a model: returns at once, as a spurious wake-up may.
        pub(crate) fn park_timeout(_: std::time::Duration) {
            loom::thread::yield_now();
        }
    }

    /// loom's mutex with `parking_lot`'s API (no poisoning).
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// The guard of [`Mutex`]; an `Option` so that [`Condvar`] can take it
    /// and put it back.
    pub(crate) struct MutexGuard<'a, T> {
        guard: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(v))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            let guard = self.0.lock().expect("no panics in the models");
            MutexGuard { guard: Some(guard) }
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.guard.as_ref().expect("guard present")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_mut().expect("guard present")
        }
    }

    /// The outcome of [`Condvar::wait_until`].
    pub(crate) struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// loom's condition variable with `parking_lot`'s API.
    #[derive(Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, g: &mut MutexGuard<'_, T>) {
            let inner = g.guard.take().expect("guard present");
            g.guard = Some(self.0.wait(inner).expect("no panics in the models"));
        }

        /// No time in a model: a wait that may end spuriously.
        pub(crate) fn wait_until<T>(
            &self,
            g: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            self.wait(g);
            WaitTimeoutResult(false)
        }

        pub(crate) fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }

        pub(crate) fn notify_all(&self) -> usize {
            self.0.notify_all();
            0
        }
    }

    /// The packet queue's model (module docs).
    pub(crate) struct Queue<T> {
        items: loom::sync::Mutex<VecDeque<T>>,
        len: loom::sync::atomic::AtomicUsize,
    }

    impl<T> Queue<T> {
        pub(crate) fn new() -> Queue<T> {
            Queue {
                items: loom::sync::Mutex::new(VecDeque::new()),
                len: loom::sync::atomic::AtomicUsize::new(0),
            }
        }

        pub(crate) fn push(&self, v: T) {
            let mut q = self.items.lock().unwrap();
            q.push_back(v);
            self.len.store(q.len(), Ordering::SeqCst);
        }

        pub(crate) fn pop(&self) -> Option<T> {
            // An empty queue is seen without the lock (module docs).
            if self.len.load(Ordering::SeqCst) == 0 {
                return None;
            }
            let mut q = self.items.lock().unwrap();
            let v = q.pop_front();
            self.len.store(q.len(), Ordering::SeqCst);
            v
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.len.load(Ordering::SeqCst) == 0
        }

        pub(crate) fn len(&self) -> usize {
            self.len.load(Ordering::SeqCst)
        }
    }
}

pub(crate) use imp::*;
pub(crate) use std::sync::atomic::Ordering;
