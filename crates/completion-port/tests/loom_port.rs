//! A `loom` model of the port's waiter / running-count / close protocol
//! (`src/port/core.rs`, `src/port/waiter.rs`, `src/port/running.rs`),
//! checked over loom's exhaustive interleavings (up to a preemption bound).
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p completion-port --test loom_port --release`
//! (without `--cfg loom` this file compiles to nothing).
//!
//! # What is modelled, and how
//! The model is a line-by-line copy of the parts of `Core` that decide who
//! takes a packet and who sleeps: `post`, `get` (without a deadline),
//! `try_reserve`, `release_slot`, `publish_sleepers`, `pop_counted`,
//! `dispatch`, `reap_unlocked`, `run`, `close` and `count_down`, with the
//! same atomics, the same orderings and the same `SeqCst` fences, over loom's
//! `Mutex`, `Condvar`, atomics and thread park/unpark.
//!
//! - **The queue.** The lock-free `SegQueue` is modelled as a
//!   `loom::sync::Mutex<VecDeque>` (its internal correctness is crossbeam's;
//!   what matters here is our push / fence / check ordering around it), plus
//!   an atomic length that stands for the `SegQueue`'s head and tail
//!   indices: `is_empty` (and a `pop` that finds the queue empty) reads it
//!   without the mutex, as `SegQueue::is_empty` / `pop` read those indices
//!   without any lock. Were every look at the queue to take the mutex, the
//!   mutex alone would order a poster's push against a sleeper's look, and
//!   the Dekker fences of core.rs could not be checked at all.
//! - **The kernel.** The leader's kernel wait (`Driver::wait`, no deadline)
//!   is a wait on a loom `Condvar` until a wake request (`Driver::wake`) is
//!   pending; the wait consumes it. `Driver::reap` may consume a pending
//!   wake-up too and says so (the io_uring backend's behaviour: a reap can
//!   drain the leader's `WAKE` NOP; epoll's never does, a subset of these
//!   behaviours). No operation is in flight in the model: every packet is
//!   posted, so a wait or a reap returns no completion.
//! - **Parked waiters** are [`Waiter`]s with the exact hand-off of
//!   waiter.rs (slot under a mutex, `given` flag, park/unpark); a thread's
//!   park token is a loom `Mutex<bool>` + `Condvar` ([`Parker`]).
//! - **Running accounting** (running.rs) is the per-getter `Record::state`
//!   atomic: a getter that got a packet is `COUNTED` until its next `get`
//!   (`begin_get`, a CAS loop out of `COUNTED`/`DETECTED`) or its exit
//!   (`count_down`, as the thread-local's destructor does), or until the
//!   **monitor** (monitor.rs `detect`) moves it to `DETECTED` and counts it
//!   down; the monitor's `resume` increments, then CASes it back to
//!   `COUNTED`, and undoes the increment if the getter left `DETECTED`
//!   first.
//!
//! Ghost state (plain `std` atomics, outside loom's model: loom runs one
//! thread at a time, so they follow the real interleaving) counts packets
//! delivered and dropped, slots reserved and threads counted as running,
//! for the assertions below.
//!
//! # What is checked
//! 1. No lost wake-up: posters post P packets, getters together make P
//!    `get`s without a deadline; every packet is delivered exactly once, and
//!    no getter blocks forever (loom reports a deadlock otherwise).
//! 2. The concurrency limit: a packet is taken (fast path, loop, or handed
//!    over by `dispatch`) only with a slot reserved, and the reserved count
//!    (`running`, mirrored) never exceeds N, nor do the threads counted as
//!    running.
//! 3. Close: getters wait while a poster races `close`; every getter
//!    returns (`Closed` or packets), none gets a packet once it saw
//!    `Closed`, a `get` after `Closed` sees `Closed` again, and every packet
//!    is delivered or dropped exactly once (counted in the packet's `Drop`),
//!    none left queued.
//!
//! 4. Blocked-thread detection: the monitor counts a getter out and back in
//!    while it makes its own `get`s and exits; every packet is delivered
//!    once, no get blocks forever, and at the end no slot is held (no
//!    double count-down, no lost count-up). And the hand-off of deferred
//!    submissions (`pending`) between a running thread and the monitor
//!    that detects it: nothing it queued is left unsubmitted (this one
//!    fails without either of its two fences).
//!
//! # Bounds
//! Each model runs under `loom::model::Builder::preemption_bound`, the last
//! argument in each test below (threads counted with the main thread):
//! 4-5 with three threads and one packet, 3 with three threads and two
//! packets or four threads with one getter, 2 with four threads otherwise,
//! 1 with five (at 2, each of those takes about a minute). The whole file
//! takes about 30 s run one test at a time, 45 s in parallel on two cores.
//!
//! # Deliberate bugs it finds
//! Removing the leader's re-check of the queue after `publish_sleepers`, the
//! fence in `publish_sleepers` or the fence in `post` makes loom report a
//! deadlock (a getter asleep in the kernel wait with a packet queued); the
//! last also leaves a packet queued after `close`. Removing the fence in
//! `release_slot` is *not* caught: without deadlines every path that frees
//! a slot publishes `sleepers` and fences again before its final look at
//! the queue; that fence guards the timed paths, not modelled here.
#![cfg(loom)]

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::AtomicUsize as GhostCount;

use loom::sync::atomic::{fence, AtomicBool, AtomicU8, AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
use loom::thread;

/// Relaxed is enough for ghost counters: loom runs one thread at a time.
const G: Ordering = Ordering::Relaxed;

const MAX_PACKETS: usize = 4;

/// Bookkeeping for the assertions, outside the model.
struct Ghost {
    n: usize,
    /// Slots reserved may exceed `n` by this much: count-ups of threads
    /// that resume after the monitor counted them out (running.rs).
    over: GhostCount,
    delivered: [GhostCount; MAX_PACKETS],
    dropped: [GhostCount; MAX_PACKETS],
    /// Mirror of `running`: slots held (counted threads plus reservations).
    reserved: GhostCount,
    /// Threads counted as running (running.rs `Mode::Counted`).
    counted: GhostCount,
}

impl Ghost {
    fn new(n: usize) -> std::sync::Arc<Ghost> {
        std::sync::Arc::new(Ghost {
            n,
            over: GhostCount::new(0),
            delivered: Default::default(),
            dropped: Default::default(),
            reserved: GhostCount::new(0),
            counted: GhostCount::new(0),
        })
    }

    fn reserve(&self) {
        let r = self.reserved.fetch_add(1, G) + 1;
        assert!(
            r <= self.n + self.over.load(G),
            "running = {r} exceeds the concurrency value"
        );
    }

    fn release(&self) {
        let r = self.reserved.fetch_sub(1, G);
        assert!(r > 0, "a slot released that nobody held");
        assert!(
            self.counted.load(G) < r,
            "a slot released while every holder is counted as running"
        );
    }

    /// A packet is taken: the taker must hold a slot.
    fn take(&self) {
        assert!(
            self.reserved.load(G) > self.counted.load(G),
            "a packet taken without a slot"
        );
    }
}

/// A packet; its `Drop` counts it as dropped unless it was delivered.
struct Packet {
    id: usize,
    delivered: bool,
    ghost: std::sync::Arc<Ghost>,
}

impl Drop for Packet {
    fn drop(&mut self) {
        if !self.delivered {
            self.ghost.dropped[self.id].fetch_add(1, G);
        }
    }
}

/// waiter.rs `Wake`.
enum Wake {
    Packet(Packet),
    Lead,
    Closed,
}

/// A thread's park token, as `std::thread::park` / `Thread::unpark` keep
/// it: an unpark before the park makes the park return at once. (Built on a
/// loom `Mutex` and `Condvar`: loom 0.7's own `Thread::unpark` wrongly makes
/// a thread runnable while it is blocked on a loom mutex, and then panics
/// with "expected to be able to acquire lock".)
#[derive(Default)]
struct Parker {
    token: Mutex<bool>,
    cv: Condvar,
}

impl Parker {
    fn park(&self) {
        let mut t = self.token.lock().unwrap();
        while !*t {
            t = self.cv.wait(t).unwrap();
        }
        *t = false;
    }

    fn unpark(&self) {
        *self.token.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

/// waiter.rs `Waiter`, over loom's primitives.
struct Waiter {
    given: AtomicBool,
    slot: Mutex<Option<Wake>>,
    /// The parked thread (`thread::current()`).
    thread: Arc<Parker>,
}

impl Waiter {
    fn new(thread: Arc<Parker>) -> Waiter {
        Waiter {
            given: AtomicBool::new(false),
            slot: Mutex::new(None),
            thread,
        }
    }

    /// Caller holds the state lock and has just popped this waiter.
    fn give(&self, w: Wake) {
        *self.slot.lock().unwrap() = Some(w);
        self.given.store(true, Ordering::Release);
    }

    fn unpark(&self) {
        self.thread.unpark();
    }

    /// `Waiter::park(None)`: sleeps until given something.
    fn park(&self) -> Option<Wake> {
        loop {
            if self.given.load(Ordering::Acquire) {
                return self.slot.lock().unwrap().take();
            }
            self.thread.park();
        }
    }
}

/// The `SegQueue` (see the module docs).
struct Queue {
    items: Mutex<VecDeque<Packet>>,
    /// Stands for the `SegQueue`'s head/tail indices (read lock-free).
    len: AtomicUsize,
}

impl Queue {
    fn new() -> Queue {
        Queue {
            items: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
        }
    }

    fn push(&self, p: Packet) {
        let mut q = self.items.lock().unwrap();
        q.push_back(p);
        self.len.store(q.len(), Ordering::SeqCst);
    }

    fn pop(&self) -> Option<Packet> {
        if self.len.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut q = self.items.lock().unwrap();
        let p = q.pop_front();
        self.len.store(q.len(), Ordering::SeqCst);
        p
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }
}

/// The kernel side of `Driver` (see the module docs).
struct Kernel {
    wake_pending: Mutex<bool>,
    cv: Condvar,
}

impl Kernel {
    /// `Driver::wait(None, ..)`: returns once a wake-up is pending, and
    /// consumes it.
    fn wait(&self) {
        let mut w = self.wake_pending.lock().unwrap();
        while !*w {
            w = self.cv.wait(w).unwrap();
        }
        *w = false;
    }

    /// `Driver::reap`: returns whether it consumed the leader's wake-up.
    fn reap(&self) -> bool {
        mem::take(&mut *self.wake_pending.lock().unwrap())
    }

    /// `Driver::wake`.
    fn wake(&self) {
        *self.wake_pending.lock().unwrap() = true;
        self.cv.notify_one();
    }
}

struct State {
    waiters: Vec<Arc<Waiter>>,
    leader: bool,
    leader_woken: bool,
    closed: bool,
}

#[derive(Default)]
struct Deferred {
    unpark: Vec<Arc<Waiter>>,
    wake_leader: bool,
}

#[derive(Debug, PartialEq)]
struct Closed;

/// `Core`, reduced to the protocol.
struct Core {
    concurrency: usize,
    state: Mutex<State>,
    queue: Queue,
    running: AtomicUsize,
    sleepers: AtomicUsize,
    closed: AtomicBool,
    kernel: Kernel,
    ghost: std::sync::Arc<Ghost>,
}

/// running.rs `Record::state` values.
const IDLE: u8 = 0;
const COUNTED: u8 = 1;
const DETECTED: u8 = 3;
const EXITED: u8 = 4;

/// A getter thread: its running.rs record (`state`, shared with the
/// monitor), and its park token.
#[derive(Default)]
struct Current {
    state: Arc<AtomicU8>,
    thread: Arc<Parker>,
}

impl Core {
    fn new(concurrency: usize, ghost: std::sync::Arc<Ghost>) -> Core {
        Core {
            concurrency,
            state: Mutex::new(State {
                waiters: Vec::new(),
                leader: false,
                leader_woken: false,
                closed: false,
            }),
            queue: Queue::new(),
            running: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            kernel: Kernel {
                wake_pending: Mutex::new(false),
                cv: Condvar::new(),
            },
            ghost,
        }
    }

    /// `Core::post`. `Err` gives the packet back (the caller drops it).
    fn post(&self, p: Packet) -> Result<(), Packet> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(p);
        }
        self.queue.push(p);
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.drain_closed();
            return Ok(());
        }
        if self.running.load(Ordering::SeqCst) >= self.concurrency
            || self.sleepers.load(Ordering::SeqCst) == 0
        {
            return Ok(());
        }
        let mut later = Deferred::default();
        let mut st = self.state.lock().unwrap();
        self.dispatch(&mut st, &mut later);
        drop(st);
        self.run(later);
        Ok(())
    }

    /// `Core::try_reserve`.
    fn try_reserve(&self) -> bool {
        let mut r = self.running.load(Ordering::SeqCst);
        while r < self.concurrency {
            match self
                .running
                .compare_exchange_weak(r, r + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    self.ghost.reserve();
                    return true;
                }
                Err(now) => r = now,
            }
        }
        false
    }

    /// `Core::release_slot`.
    fn release_slot(&self) {
        let _ = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| {
                Some(r.saturating_sub(1))
            });
        self.ghost.release();
        fence(Ordering::SeqCst);
    }

    /// `Core::publish_sleepers`.
    fn publish_sleepers(&self, st: &State) {
        let n = st.waiters.len() + usize::from(st.leader && !st.leader_woken);
        self.sleepers.store(n, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// `Core::pop_counted`: the caller holds a slot.
    fn pop_counted(&self) -> Option<Packet> {
        let p = self.queue.pop()?;
        self.ghost.take();
        Some(p)
    }

    /// `Core::drain_closed`.
    fn drain_closed(&self) {
        while let Some(p) = self.queue.pop() {
            drop(p);
        }
    }

    /// `Core::get(None)`, with running.rs's `begin_get` / `counted`.
    fn get(&self, cur: &mut Current) -> Result<Packet, Closed> {
        // running::begin_get: leave COUNTED or DETECTED; only a thread that
        // left COUNTED itself gives its slot back.
        let prev = match cur
            .state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                matches!(s, COUNTED | DETECTED).then_some(IDLE)
            }) {
            Ok(p) | Err(p) => p,
        };
        let was_running = prev == COUNTED;
        if was_running {
            self.ghost.counted.fetch_sub(1, G);
        }
        let r = self.get_inner(was_running, &cur.thread);
        if r.is_ok() {
            // running::counted
            let c = self.ghost.counted.fetch_add(1, G) + 1;
            assert!(c <= self.ghost.reserved.load(G), "counted without a slot");
            cur.state.store(COUNTED, Ordering::SeqCst);
        }
        r
    }

    fn get_inner(&self, mut was_running: bool, thread: &Arc<Parker>) -> Result<Packet, Closed> {
        // Above the value (a thread counted back in): give the slot up.
        if was_running && self.running.load(Ordering::SeqCst) > self.concurrency {
            self.release_slot();
            was_running = false;
        }
        if !self.closed.load(Ordering::SeqCst) && (was_running || self.try_reserve()) {
            if let Some(p) = self.pop_counted() {
                return Ok(p);
            }
            self.release_slot();
        } else if was_running {
            self.release_slot();
        }
        let mut later = Deferred::default();
        let mut st = self.state.lock().unwrap();
        let mut leading = false;
        let outcome = loop {
            if st.closed {
                if leading {
                    st.leader = false;
                }
                break Err(Closed);
            }
            if self.try_reserve() {
                if let Some(p) = self.pop_counted() {
                    if leading {
                        st.leader = false;
                    }
                    self.dispatch(&mut st, &mut later);
                    break Ok(p);
                }
                self.release_slot();
                st = self.reap_unlocked(st, &mut later);
                if !self.queue.is_empty() || st.closed {
                    continue;
                }
            }
            if leading && self.running.load(Ordering::SeqCst) >= self.concurrency {
                st.leader = false;
                leading = false;
            }
            // (No deadline in the model.)
            if !leading && !st.leader && self.running.load(Ordering::SeqCst) < self.concurrency {
                st.leader = true;
                st.leader_woken = false;
                leading = true;
            }
            if leading {
                st.leader_woken = false;
                self.publish_sleepers(&st);
                if !self.queue.is_empty() && self.running.load(Ordering::SeqCst) < self.concurrency
                {
                    continue;
                }
                drop(st);
                self.run(mem::take(&mut later));
                self.kernel.wait();
                st = self.state.lock().unwrap();
                st.leader_woken = true;
                // `enqueue` of what the wait returned: nothing (no
                // operation in flight in the model).
                continue;
            }
            let me = Arc::new(Waiter::new(thread.clone()));
            st.waiters.push(me.clone());
            self.dispatch(&mut st, &mut later);
            drop(st);
            self.run(mem::take(&mut later));
            match me.park() {
                Some(Wake::Packet(p)) => return Ok(p),
                Some(Wake::Closed) => return Err(Closed),
                Some(Wake::Lead) => {
                    st = self.state.lock().unwrap();
                    leading = true;
                }
                None => unreachable!("woken with nothing given"),
            }
        };
        drop(st);
        self.run(later);
        outcome
    }

    /// `Core::reap_unlocked` (the reap returns no completion).
    fn reap_unlocked<'a>(
        &'a self,
        st: MutexGuard<'a, State>,
        later: &mut Deferred,
    ) -> MutexGuard<'a, State> {
        drop(st);
        let swallowed_wake = self.kernel.reap();
        let mut st = self.state.lock().unwrap();
        if swallowed_wake {
            st.leader_woken = false;
            self.dispatch(&mut st, later);
        }
        st
    }

    /// `Core::dispatch`.
    fn dispatch(&self, st: &mut State, later: &mut Deferred) {
        if st.closed {
            if st.leader && !st.leader_woken {
                st.leader_woken = true;
                later.wake_leader = true;
            }
            return;
        }
        self.publish_sleepers(st);
        while !st.waiters.is_empty() && !self.queue.is_empty() {
            if !self.try_reserve() {
                break;
            }
            let Some(p) = self.pop_counted() else {
                self.release_slot();
                continue;
            };
            let w = st.waiters.pop().expect("a parked thread");
            w.give(Wake::Packet(p));
            later.unpark.push(w);
        }
        let free = self.running.load(Ordering::SeqCst) < self.concurrency;
        if free && !st.leader {
            if let Some(w) = st.waiters.pop() {
                st.leader = true;
                st.leader_woken = false;
                w.give(Wake::Lead);
                later.unpark.push(w);
            }
        }
        if free && !self.queue.is_empty() && st.leader && !st.leader_woken {
            st.leader_woken = true;
            later.wake_leader = true;
        }
        let n = st.waiters.len() + usize::from(st.leader && !st.leader_woken);
        self.sleepers.store(n, Ordering::SeqCst);
    }

    /// `Core::run`.
    fn run(&self, later: Deferred) {
        for w in &later.unpark {
            w.unpark();
        }
        if later.wake_leader {
            self.kernel.wake();
        }
    }

    /// `Core::close` (nothing in flight: no shutdown spill, no reap loop).
    fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut later = Deferred::default();
        let mut st = self.state.lock().unwrap();
        st.closed = true;
        let waiters = mem::take(&mut st.waiters);
        for w in &waiters {
            w.give(Wake::Closed);
        }
        self.dispatch(&mut st, &mut later);
        drop(st);
        for w in &waiters {
            w.unpark();
        }
        fence(Ordering::SeqCst);
        self.drain_closed();
        self.run(later);
    }

    /// `Accounting::count_down` (a counted thread exits).
    fn count_down(&self) {
        let mut later = Deferred::default();
        let mut st = self.state.lock().unwrap();
        self.release_slot();
        self.dispatch(&mut st, &mut later);
        drop(st);
        self.run(later);
    }

    /// `Accounting::count_up` (a thread counted back in).
    fn count_up(&self) {
        self.ghost.over.fetch_add(1, G);
        self.ghost.reserved.fetch_add(1, G);
        self.running.fetch_add(1, Ordering::SeqCst);
    }

    /// The thread-local destructor of running.rs.
    fn exit(&self, cur: Current) {
        if cur.state.swap(EXITED, Ordering::SeqCst) == COUNTED {
            self.ghost.counted.fetch_sub(1, G);
            self.count_down();
        }
    }

    /// monitor.rs `detect`: the thread was seen blocked.
    fn monitor_detect(&self, state: &AtomicU8) -> bool {
        if state
            .compare_exchange(COUNTED, DETECTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        self.ghost.counted.fetch_sub(1, G);
        self.count_down();
        true
    }

    /// monitor.rs `resume`: the thread runs again. Increment first, then
    /// publish COUNTED; undo if the thread left DETECTED itself.
    fn monitor_resume(&self, state: &AtomicU8) {
        self.count_up();
        // The ghost counts the thread before the CAS can make it visible.
        self.ghost.counted.fetch_add(1, G);
        if state
            .compare_exchange(DETECTED, COUNTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            self.ghost.counted.fetch_sub(1, G);
            self.count_down();
        }
    }

    /// After every thread finished: nothing queued, nobody sleeping.
    fn check_quiescent(&self) {
        assert!(self.queue.is_empty(), "a packet left queued");
        let st = self.state.lock().unwrap();
        assert!(st.waiters.is_empty(), "a waiter left parked");
        assert!(!st.leader, "a leader left behind");
        assert_eq!(self.ghost.reserved.load(G), 0, "a slot left held");
    }
}

fn builder(bound: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b
}

/// Check 1 and 2: `posts[i]` packets posted by poster i, `gets[j]` gets
/// made by getter j (in total as many as posted), concurrency `n`.
fn no_lost_wakeup(n: usize, posts: &'static [usize], gets: &'static [usize], bound: usize) {
    let total: usize = posts.iter().sum();
    assert_eq!(total, gets.iter().sum::<usize>());
    assert!(total <= MAX_PACKETS);
    builder(bound).check(move || {
        let ghost = Ghost::new(n);
        let core = Arc::new(Core::new(n, ghost.clone()));
        let mut threads = Vec::new();
        let mut next = 0;
        for &k in posts {
            let core = core.clone();
            let ghost = ghost.clone();
            let ids = next..next + k;
            next += k;
            threads.push(thread::spawn(move || {
                for id in ids {
                    let p = Packet {
                        id,
                        delivered: false,
                        ghost: ghost.clone(),
                    };
                    assert!(core.post(p).is_ok(), "post on an open port refused");
                }
            }));
        }
        for &k in gets {
            let core = core.clone();
            threads.push(thread::spawn(move || {
                let mut cur = Current::default();
                for _ in 0..k {
                    let mut p = core.get(&mut cur).expect("port not closed");
                    p.delivered = true;
                    core.ghost.delivered[p.id].fetch_add(1, G);
                }
                core.exit(cur);
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        core.check_quiescent();
        assert_eq!(ghost.counted.load(G), 0);
        for id in 0..total {
            assert_eq!(ghost.delivered[id].load(G), 1, "packet {id} delivered");
            assert_eq!(ghost.dropped[id].load(G), 0, "packet {id} dropped");
        }
    });
}

/// Check 3: `getters` threads get until `Closed` (then once more), one
/// thread posts `posts` packets, and the main thread closes the port.
fn close_race(n: usize, getters: usize, posts: usize, bound: usize) {
    assert!(posts <= MAX_PACKETS);
    builder(bound).check(move || {
        let ghost = Ghost::new(n);
        let core = Arc::new(Core::new(n, ghost.clone()));
        let mut threads = Vec::new();
        for _ in 0..getters {
            let core = core.clone();
            threads.push(thread::spawn(move || {
                let mut cur = Current::default();
                while let Ok(mut p) = core.get(&mut cur) {
                    p.delivered = true;
                    core.ghost.delivered[p.id].fetch_add(1, G);
                }
                // Nothing after `Closed`.
                assert!(core.get(&mut cur).is_err(), "a packet after Closed");
                core.exit(cur);
            }));
        }
        {
            let core = core.clone();
            let ghost = ghost.clone();
            threads.push(thread::spawn(move || {
                for id in 0..posts {
                    let p = Packet {
                        id,
                        delivered: false,
                        ghost: ghost.clone(),
                    };
                    // A refused post hands the packet back: dropped here.
                    let _ = core.post(p);
                }
            }));
        }
        core.close();
        for t in threads {
            t.join().unwrap();
        }
        core.check_quiescent();
        for id in 0..posts {
            let d = ghost.delivered[id].load(G);
            let x = ghost.dropped[id].load(G);
            assert_eq!(d + x, 1, "packet {id}: delivered {d}, dropped {x}");
        }
    });
}

// ---- 1 and 2: no lost wake-up, concurrency limit ----

#[test]
fn n1_one_poster_one_getter() {
    no_lost_wakeup(1, &[1], &[1], 5);
}

#[test]
fn n1_one_poster_two_getters() {
    // The first getter holds the only slot until it exits (`count_down`).
    no_lost_wakeup(1, &[2], &[1, 1], 2);
}

#[test]
fn n1_two_posters_one_getter() {
    // The second get is made by a running thread (keeps its slot).
    no_lost_wakeup(1, &[1, 1], &[2], 3);
}

#[test]
fn n1_two_posters_two_getters() {
    no_lost_wakeup(1, &[1, 1], &[1, 1], 1);
}

#[test]
fn n2_one_poster_two_getters() {
    no_lost_wakeup(2, &[2], &[1, 1], 2);
}

#[test]
fn n2_two_posters_two_getters() {
    no_lost_wakeup(2, &[1, 1], &[1, 1], 1);
}

// ---- 3: close ----

#[test]
fn close_one_getter_one_post() {
    close_race(1, 1, 1, 4);
}

#[test]
fn close_one_getter_two_posts() {
    close_race(1, 1, 2, 3);
}

#[test]
fn close_two_getters_n1() {
    // One getter leads (kernel wait), the other parks.
    close_race(1, 2, 1, 2);
}

#[test]
fn close_two_getters_n2() {
    close_race(2, 2, 1, 2);
}

// ---- 4: blocked-thread detection (running.rs state machine) ----

/// Concurrency 1, two getters (the first makes two gets, the second one),
/// three packets posted up front, and the monitor, which counts the first
/// getter out if it is `COUNTED` (as if seen blocked) and then counts it
/// back in if it is still `DETECTED` — racing with its own `get`s and
/// exit. Every packet is delivered once, no get blocks forever, and at the
/// end no slot is held: no double count-down, no lost count-up.
fn detection_race(bound: usize) {
    builder(bound).check(move || {
        let ghost = Ghost::new(1);
        let core = Arc::new(Core::new(1, ghost.clone()));
        for id in 0..3 {
            let p = Packet {
                id,
                delivered: false,
                ghost: ghost.clone(),
            };
            assert!(core.post(p).is_ok());
        }
        let first = Current::default();
        let watched = first.state.clone();
        let mut threads = Vec::new();
        for (gets, cur) in [(2, first), (1, Current::default())] {
            let core = core.clone();
            threads.push(thread::spawn(move || {
                let mut cur = cur;
                for _ in 0..gets {
                    let mut p = core.get(&mut cur).expect("port not closed");
                    p.delivered = true;
                    core.ghost.delivered[p.id].fetch_add(1, G);
                }
                core.exit(cur);
            }));
        }
        {
            let core = core.clone();
            threads.push(thread::spawn(move || {
                if core.monitor_detect(&watched) && watched.load(Ordering::SeqCst) == DETECTED {
                    core.monitor_resume(&watched);
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        core.check_quiescent();
        assert_eq!(ghost.counted.load(G), 0);
        for id in 0..3 {
            assert_eq!(ghost.delivered[id].load(G), 1, "packet {id} delivered");
        }
    });
}

#[test]
fn detection_two_getters_n1() {
    detection_race(2);
}

/// running.rs "Deferred submissions": a running thread queues an operation
/// in the ring, then sets `pending` and re-reads its state; the monitor
/// moves the state to `DETECTED`, then takes `pending`. Whoever takes the
/// flag flushes the ring. If the monitor counted the thread out, nothing
/// the thread queued is left unsubmitted.
#[test]
fn detection_flushes_deferred_submissions() {
    builder(3).check(|| {
        let state = Arc::new(AtomicU8::new(COUNTED));
        let pending = Arc::new(AtomicBool::new(false));
        // (queued in the ring, submitted to the kernel), under the SQ lock.
        let ring = Arc::new(Mutex::new((0usize, 0usize)));
        let flush = |ring: &Mutex<(usize, usize)>| {
            let mut r = ring.lock().unwrap();
            r.1 = r.0;
        };
        let take = |pending: &AtomicBool| {
            pending.load(Ordering::SeqCst) && pending.swap(false, Ordering::SeqCst)
        };
        let t = {
            let (state, pending, ring) = (state.clone(), pending.clone(), ring.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    // defer_submit: only while COUNTED.
                    if state.load(Ordering::SeqCst) != COUNTED {
                        // Not deferred: submitted at once.
                        let mut r = ring.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.0;
                        continue;
                    }
                    ring.lock().unwrap().0 += 1;
                    // running::deferred
                    pending.store(true, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    if state.load(Ordering::SeqCst) != COUNTED && take(&pending) {
                        flush(&ring);
                    }
                }
            })
        };
        let detected = state
            .compare_exchange(COUNTED, DETECTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        assert!(detected);
        fence(Ordering::SeqCst);
        if take(&pending) {
            flush(&ring);
        }
        t.join().unwrap();
        let r = ring.lock().unwrap();
        assert_eq!(r.0, 2);
        assert_eq!(
            r.1, r.0,
            "an operation left unsubmitted by a detected thread"
        );
    });
}

/// monitor.rs "When the monitor looks": the monitor sleeps only when no
/// port is contended (packets queued, every slot held), and whoever makes
/// a port contended wakes it. Concurrency 1, one packet queued up front;
/// a getter reserves the slot, takes it and then checks (`took_slot`: its
/// `running`, fence, the queue, `asleep`); a poster pushes a second packet
/// (push, fence, `running`, `asleep`: core.rs `post`); the monitor goes to
/// sleep (store `asleep`, fence, evaluate every port again). At the end, if
/// a packet waits with the slot held, the monitor is awake or was woken.
/// Fails without any one of the three fences.
#[test]
fn monitor_wakes_when_slots_fill() {
    builder(3).check(|| {
        const N: usize = 1;
        let running = Arc::new(AtomicUsize::new(0));
        let queued = Arc::new(AtomicUsize::new(1));
        let asleep = Arc::new(AtomicBool::new(false));
        // monitor::slots_full (the wake itself is the swap's outcome).
        let slots_full = |asleep: &AtomicBool| {
            if asleep.load(Ordering::Relaxed) {
                asleep.swap(false, Ordering::SeqCst);
            }
        };
        let getter = {
            let (running, queued, asleep) = (running.clone(), queued.clone(), asleep.clone());
            thread::spawn(move || {
                // try_reserve
                if running
                    .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    return;
                }
                // pop_counted
                let mut q = queued.load(Ordering::SeqCst);
                while q > 0 {
                    match queued.compare_exchange(q, q - 1, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => break,
                        Err(now) => q = now,
                    }
                }
                // Core::took_slot
                if running.load(Ordering::Relaxed) >= N {
                    fence(Ordering::SeqCst);
                    if queued.load(Ordering::SeqCst) > 0 {
                        slots_full(&asleep);
                    }
                }
            })
        };
        let poster = {
            let (running, queued, asleep) = (running.clone(), queued.clone(), asleep.clone());
            thread::spawn(move || {
                queued.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if running.load(Ordering::SeqCst) >= N {
                    slots_full(&asleep);
                }
            })
        };
        // The monitor: about to sleep.
        asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let contended = running.load(Ordering::SeqCst) >= N && queued.load(Ordering::SeqCst) > 0;
        if contended {
            asleep.store(false, Ordering::SeqCst);
        }
        getter.join().unwrap();
        poster.join().unwrap();
        let contended = running.load(Ordering::SeqCst) >= N && queued.load(Ordering::SeqCst) > 0;
        assert!(
            !contended || !asleep.load(Ordering::SeqCst),
            "a packet waits for a held slot and the monitor sleeps"
        );
    });
}
