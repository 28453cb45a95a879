//! loom models of the real port core: `Core` (post, get, dispatch, close,
//! submit, cancel), the per-thread state machine (`running.rs`), the
//! blocked-thread monitor's `detect`/`resume` and its sleep decision
//! (`monitor.rs`), over loom's primitives (`sync.rs`) and the model engine
//! (`driver/model.rs`), checked over loom's exhaustive interleavings up to a
//! preemption bound.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p completion-port --lib --release core::loom`
//!
//! # What is checked
//! 1. **No lost wake-up, the concurrency limit**: posters post P packets,
//!    getters together make P `get`s without a deadline; every packet is
//!    delivered exactly once, no getter blocks forever (loom reports a
//!    deadlock otherwise), and at most N getters are between a `get` that
//!    returned and their next `get` or exit.
//! 2. **Close**: getters wait while a poster races `close`; every getter
//!    returns, none gets a packet once it saw `Closed`, and every packet is
//!    delivered or dropped exactly once, none left queued. An operation in
//!    flight that the close cancels never reaches a `get`, even one that
//!    reaps its completion.
//! 3. **Blocked-thread detection**: the monitor counts a getter out and
//!    back in while it makes its own `get`s and exits; every packet is
//!    delivered once and no slot is held at the end. The hand-off of
//!    deferred submissions between a running thread and the monitor that
//!    detects it leaves nothing unsubmitted. The monitor never sleeps while
//!    a packet waits for a held slot.
//! 4. **Issue, cancel and close**: an operation issued while its handle is
//!    closed (or cancelled) from another thread is either refused or yields
//!    exactly one packet — never accepted and then lost; an operation the
//!    kernel cancels on its own (an io_uring orphan) racing a user's cancel
//!    still yields exactly one packet; a handle dropped while its operations
//!    complete keeps its fd open until their packets are dropped.
//!
//! Ghost counters (plain `std` atomics: loom runs one thread at a time, so
//! they follow the real interleaving without adding any) count packets
//! delivered and dropped and threads running, for the assertions.
//!
//! # Deliberate bugs they find
//! See RELIABILITY.md ("loom"): each model was checked to fail with the
//! fence or the lock it guards removed.

use std::fs::File;
use std::sync::atomic::AtomicUsize as Ghost;
use std::sync::Arc;

use loom::sync::atomic::AtomicBool;
use loom::thread;

use super::fd::FdOwner;
use super::monitor;
use super::record::{Notify, OpRecord};
use super::running::{self, Accounting, RunState};
use super::Core;
use crate::buf::Buffers;
use crate::driver::model::Model;
use crate::driver::{Driver, OpKind};
use crate::error::GetError;
use crate::sync::Ordering;

/// Relaxed is enough for ghost counters: loom runs one thread at a time.
const G: Ordering = Ordering::Relaxed;

const MAX: usize = 4;

/// Bookkeeping for the assertions, outside the model.
#[derive(Default)]
struct Ghosts {
    delivered: [Ghost; MAX],
    dropped: [Ghost; MAX],
    /// Threads between a `get` that returned a packet and their next `get`.
    running: Ghost,
}

/// The per-operation context: counts its own drop unless delivered.
struct Ctx {
    id: usize,
    delivered: bool,
    ghosts: Arc<Ghosts>,
}

impl Ctx {
    fn new(id: usize, ghosts: &Arc<Ghosts>) -> Ctx {
        Ctx {
            id,
            delivered: false,
            ghosts: ghosts.clone(),
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if !self.delivered {
            self.ghosts.dropped[self.id].fetch_add(1, G);
        }
    }
}

fn builder(bound: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b
}

fn core(n: usize, detect: bool, model: &Arc<Model>) -> Arc<Core<Ctx>> {
    Core::new(n, Driver::model(model.clone()), detect, None)
}

/// A getter: counts itself running (ghost) from a `get` that returned a
/// packet until its next `get` or its end, and checks the limit.
struct Getter {
    core: Arc<Core<Ctx>>,
    ghosts: Arc<Ghosts>,
    n: usize,
    holding: bool,
}

impl Getter {
    fn new(core: &Arc<Core<Ctx>>, ghosts: &Arc<Ghosts>, n: usize) -> Getter {
        Getter {
            core: core.clone(),
            ghosts: ghosts.clone(),
            n,
            holding: false,
        }
    }

    fn get(&mut self) -> Result<(), GetError> {
        self.release();
        let mut p = self.core.get(None)?;
        p.context.delivered = true;
        self.ghosts.delivered[p.context.id].fetch_add(1, G);
        let now = self.ghosts.running.fetch_add(1, G) + 1;
        assert!(
            now <= self.n,
            "{now} threads running, concurrency {}",
            self.n
        );
        self.holding = true;
        Ok(())
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.ghosts.running.fetch_sub(1, G);
        }
    }
}

impl Drop for Getter {
    /// The thread ends (see `running::exit_current`).
    fn drop(&mut self) {
        self.release();
        running::exit_current();
    }
}

fn posts(core: &Arc<Core<Ctx>>, ghosts: &Arc<Ghosts>, ids: std::ops::Range<usize>) {
    for id in ids {
        assert!(
            core.post(id, 0, Ctx::new(id, ghosts)).is_ok(),
            "post on an open port refused"
        );
    }
}

fn assert_delivered_once(ghosts: &Ghosts, total: usize) {
    for id in 0..total {
        assert_eq!(ghosts.delivered[id].load(G), 1, "packet {id} delivered");
        assert_eq!(ghosts.dropped[id].load(G), 0, "packet {id} dropped");
    }
}

/// Check 1: `posts[i]` packets posted by poster i, `gets[j]` gets made by
/// getter j (in total as many as posted), concurrency `n`.
fn no_lost_wakeup(n: usize, posters: &'static [usize], gets: &'static [usize], bound: usize) {
    let total: usize = posters.iter().sum();
    assert_eq!(total, gets.iter().sum::<usize>());
    assert!(total <= MAX);
    builder(bound).check(move || {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(n, false, &model);
        let mut threads = Vec::new();
        let mut next = 0;
        for &k in posters {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            let ids = next..next + k;
            next += k;
            threads.push(thread::spawn(move || posts(&core, &ghosts, ids)));
        }
        for &k in gets {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            threads.push(thread::spawn(move || {
                let mut g = Getter::new(&core, &ghosts, n);
                for _ in 0..k {
                    g.get().expect("port not closed");
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_delivered_once(&ghosts, total);
        let s = core.stats();
        assert_eq!((s.running, s.queued, s.parked), (0, 0, 0));
    });
}

/// Check 2: `getters` threads get until `Closed` (then once more), one
/// thread posts `posts` packets, and the main thread closes the port.
fn close_race(n: usize, getters: usize, posts: usize, bound: usize) {
    assert!(posts <= MAX);
    builder(bound).check(move || {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(n, false, &model);
        let mut threads = Vec::new();
        for _ in 0..getters {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            threads.push(thread::spawn(move || {
                let mut g = Getter::new(&core, &ghosts, n);
                while g.get().is_ok() {}
                // Nothing after `Closed`.
                assert!(g.get().is_err(), "a packet after Closed");
            }));
        }
        {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            threads.push(thread::spawn(move || {
                for id in 0..posts {
                    // A refused post hands the context back: dropped here.
                    let _ = core.post(id, 0, Ctx::new(id, &ghosts));
                }
            }));
        }
        core.close();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(core.stats().queued, 0, "a packet left queued after close");
        for id in 0..posts {
            let d = ghosts.delivered[id].load(G);
            let x = ghosts.dropped[id].load(G);
            assert_eq!(d + x, 1, "packet {id}: delivered {d}, dropped {x}");
        }
    });
}

// ---- 1: no lost wake-up, concurrency limit ----

#[test]
fn n1_one_poster_one_getter() {
    no_lost_wakeup(1, &[1], &[1], 4);
}

#[test]
fn n1_one_poster_two_getters() {
    // The first getter holds the only slot until it exits.
    no_lost_wakeup(1, &[2], &[1, 1], 2);
}

#[test]
fn n1_two_posters_one_getter() {
    // The second get is made by a running thread (keeps its slot).
    no_lost_wakeup(1, &[1, 1], &[2], 2);
}

#[test]
fn n2_one_poster_two_getters() {
    no_lost_wakeup(2, &[2], &[1, 1], 2);
}

// ---- 2: close ----

#[test]
fn close_one_getter_one_post() {
    close_race(1, 1, 1, 3);
}

#[test]
fn close_one_getter_two_posts() {
    close_race(1, 1, 2, 2);
}

#[test]
fn close_two_getters_n1() {
    // One getter leads (kernel wait), the other parks.
    close_race(1, 2, 1, 2);
}

// ---- 3: blocked-thread detection ----

/// Concurrency 1, two getters (the first makes two gets, the second one),
/// three packets posted up front, and the monitor, which counts the first
/// getter out once it runs (as if seen blocked) and then counts it back in
/// if it is still detected — racing with its own `get`s and exit. Every
/// packet is delivered once, no get blocks forever, and at the end no
/// slot is held: no double count-down, no lost count-up.
#[test]
fn detection_two_getters_n1() {
    builder(2).check(|| {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(1, true, &model);
        posts(&core, &ghosts, 0..3);
        let first: Arc<loom::sync::Mutex<Option<Arc<running::Worker>>>> = Default::default();
        let mut threads = Vec::new();
        for (gets, publish) in [(2, Some(first.clone())), (1, None)] {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            threads.push(thread::spawn(move || {
                // Not `Getter`: a detected thread may be counted back in
                // above the limit (as on Windows), so no limit check here.
                for _ in 0..gets {
                    let mut p = core.get(None).expect("port not closed");
                    p.context.delivered = true;
                    ghosts.delivered[p.context.id].fetch_add(1, G);
                    if let Some(slot) = &publish {
                        *slot.lock().unwrap() = running::current_worker();
                    }
                }
                running::exit_current();
            }));
        }
        {
            threads.push(thread::spawn(move || {
                let w = first.lock().unwrap().clone();
                if let Some(w) = w {
                    monitor::detect(&w);
                    if w.state.load() == RunState::Detected {
                        monitor::resume(&w);
                    }
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_delivered_once(&ghosts, 3);
        assert_eq!(core.stats().running, 0, "a slot left held");
    });
}

/// running.rs "Deferred submissions": a running thread issues operations
/// (deferred: left in the model's SQ) and then blocks elsewhere, while the
/// monitor detects it. Whoever takes the `pending` flag flushes: once both
/// are done, nothing it issued is left unsubmitted.
#[test]
fn detection_flushes_deferred_submissions() {
    builder(2).check(|| {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(true, true));
        let core = core(1, true, &model);
        posts(&core, &ghosts, 0..1);
        let owner = Arc::new(FdOwner::new(devnull()).map_err(|e| e.0).unwrap());
        let worker: Arc<loom::sync::Mutex<Option<Arc<running::Worker>>>> = Default::default();
        let issued = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let t = {
            let (core, ghosts, owner) = (core.clone(), ghosts.clone(), owner.clone());
            let (worker, issued, release) = (worker.clone(), issued.clone(), release.clone());
            thread::spawn(move || {
                let mut p = core.get(None).expect("open");
                p.context.delivered = true;
                ghosts.delivered[0].fetch_add(1, G);
                *worker.lock().unwrap() = running::current_worker();
                for id in 1..3 {
                    let rec = nop(&owner, id, &ghosts);
                    assert!(core.submit(rec).is_ok());
                }
                issued.store(true, Ordering::SeqCst);
                // Blocked somewhere the port cannot see.
                while !release.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                running::exit_current();
            })
        };
        let monitor = {
            let worker = worker.clone();
            thread::spawn(move || loop {
                let w = worker.lock().unwrap().clone();
                if let Some(w) = w {
                    monitor::detect(&w);
                    return;
                }
                thread::yield_now();
            })
        };
        monitor.join().unwrap();
        while !issued.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        assert_eq!(
            (model.in_kernel(), model.unsubmitted()),
            (2, 0),
            "operations of a detected thread left unsubmitted"
        );
        release.store(true, Ordering::SeqCst);
        t.join().unwrap();
        core.close();
    });
}

/// monitor.rs "When the monitor looks": the monitor sleeps only when no
/// port is contended (packets queued, every slot held), and whoever makes
/// the port contended wakes it. Concurrency 1, one packet queued up front;
/// a getter takes it (its reservation fills the port), a poster posts a
/// second one, and the monitor decides to sleep. At the end, if a packet
/// waits with the slot held, the monitor is awake (or was woken).
#[test]
fn monitor_wakes_when_slots_fill() {
    builder(3).check(|| {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(1, true, &model);
        posts(&core, &ghosts, 0..1);
        let got = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let getter = {
            let (core, got, release) = (core.clone(), got.clone(), release.clone());
            thread::spawn(move || {
                let mut p = core.get(None).expect("open");
                p.context.delivered = true;
                got.store(true, Ordering::SeqCst);
                // Holds its slot until released.
                while !release.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                running::exit_current();
            })
        };
        let poster = {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            thread::spawn(move || posts(&core, &ghosts, 1..2))
        };
        let _ = monitor::model_try_sleep();
        poster.join().unwrap();
        while !got.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        assert!(
            !core.contended() || !monitor::asleep(),
            "a packet waits for a held slot and the monitor sleeps"
        );
        release.store(true, Ordering::SeqCst);
        getter.join().unwrap();
        core.close();
    });
}

// ---- 4: issue, cancel, close ----

fn devnull() -> std::os::fd::OwnedFd {
    File::open("/dev/null").expect("/dev/null").into()
}

/// A no-op on `owner`'s fd: the model kernel keeps it pending until it is
/// cancelled (like a receive on an idle socket).
fn nop(owner: &Arc<FdOwner>, id: usize, ghosts: &Arc<Ghosts>) -> super::record::RecordBox<Ctx> {
    OpRecord::boxed(
        OpKind::Nop,
        owner,
        id,
        Notify::Packet,
        Buffers::None,
        Ctx::new(id, ghosts),
    )
}

/// One thread issues an operation on a handle while another closes the
/// handle (`Handle::close`, `CloseHandle`). The operation is refused, or
/// its one packet comes (cancelled): an accepted operation is never lost
/// (the main thread's `get` would block forever, which loom reports).
/// `running`: the issuing thread runs for the port, so its submission is
/// deferred.
fn issue_vs_close(running: bool, bound: usize) {
    builder(bound).check(move || {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(true, true));
        let core = core(2, false, &model);
        if running {
            posts(&core, &ghosts, 0..1);
        }
        let owner = Arc::new(FdOwner::new(devnull()).map_err(|e| e.0).unwrap());
        let issuer = {
            let (core, ghosts, owner) = (core.clone(), ghosts.clone(), owner.clone());
            thread::spawn(move || {
                if running {
                    let mut p = core.get(None).expect("open");
                    p.context.delivered = true;
                    ghosts.delivered[0].fetch_add(1, G);
                }
                let accepted = core.submit(nop(&owner, 1, &ghosts)).is_ok();
                running::exit_current();
                accepted
            })
        };
        let closer = {
            let (core, owner) = (core.clone(), owner.clone());
            thread::spawn(move || core.close_fd(&owner))
        };
        let accepted = issuer.join().unwrap();
        closer.join().unwrap();
        if accepted {
            let mut p = core.get(None).expect("the accepted operation's packet");
            assert!(crate::error::is_aborted(p.result.as_ref().unwrap_err()));
            p.context.delivered = true;
            ghosts.delivered[1].fetch_add(1, G);
        } else {
            assert_eq!(ghosts.dropped[1].load(G), 1, "refused: context handed back");
        }
        assert_eq!(core.stats().in_flight, 0);
        assert_eq!((model.in_kernel(), model.unsubmitted()), (0, 0));
        core.close();
    });
}

#[test]
fn issue_vs_close_handle() {
    issue_vs_close(false, 3);
}

#[test]
fn deferred_issue_vs_close_handle() {
    issue_vs_close(true, 2);
}

/// Check 2 with an operation in flight: `Port::close` cancels it while a
/// getter waits for packets (it leads: its wait is in the model kernel, so
/// it may reap the cancelled completion itself). That packet is the
/// close's to drop, never a `get`'s: closing drops what is in flight with
/// its context (found by the model test, `tests/close_port_race.rs`; the
/// graveyard of `pop_counted`).
#[test]
fn close_cancels_in_flight_vs_get() {
    builder(2).check(|| {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(1, false, &model);
        let owner = Arc::new(FdOwner::new(devnull()).map_err(|e| e.0).unwrap());
        assert!(core.submit(nop(&owner, 0, &ghosts)).is_ok(), "accepted");
        let getter = {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            thread::spawn(move || {
                let mut g = Getter::new(&core, &ghosts, 1);
                while g.get().is_ok() {}
            })
        };
        core.close();
        getter.join().unwrap();
        assert_eq!(
            ghosts.delivered[0].load(G),
            0,
            "a packet the close cancelled came out of the closed port"
        );
        assert_eq!(ghosts.dropped[0].load(G), 1, "its context dropped once");
        assert_eq!(core.stats().in_flight, 0);
    });
}

/// An operation the kernel cancels on its own (an io_uring orphan: its
/// issuing thread exited) races a user's cancel of it. The core resubmits
/// orphans under the fd's in-flight lock, so the user's cancel either
/// marks it first (it is reported cancelled) or reaches it after the
/// resubmission: exactly one packet either way.
#[test]
fn orphan_vs_user_cancel() {
    builder(2).check(|| {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(1, false, &model);
        let owner = Arc::new(FdOwner::new(devnull()).map_err(|e| e.0).unwrap());
        let token = core.submit(nop(&owner, 0, &ghosts)).ok().expect("accepted");
        let canceller = {
            let (core, owner) = (core.clone(), owner.clone());
            thread::spawn(move || core.cancel(&owner, Some(token)).is_ok())
        };
        let kernel = {
            let model = model.clone();
            thread::spawn(move || model.complete_all(-libc::ECANCELED))
        };
        kernel.join().unwrap();
        let mut p = core.get(None).expect("the operation's packet");
        assert!(crate::error::is_aborted(p.result.as_ref().unwrap_err()));
        p.context.delivered = true;
        canceller.join().unwrap();
        assert_eq!(core.stats().in_flight, 0);
        assert_eq!((model.in_kernel(), model.unsubmitted()), (0, 0));
        core.close();
    });
}

/// A handle's last clone goes (`close_fd`, then its reference dropped)
/// while its two operations complete: each record counts a reference to
/// the fd's owner, which its packet keeps (fd.rs), so each of the two
/// packets comes once and the fd closes only when both are dropped.
#[test]
fn handle_drop_vs_completions() {
    builder(2).check(|| {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(2, false, &model);
        let owner = Arc::new(FdOwner::new(devnull()).map_err(|e| e.0).unwrap());
        let alive = Arc::downgrade(&owner);
        for id in 0..2 {
            assert!(core.submit(nop(&owner, id, &ghosts)).is_ok(), "accepted");
        }
        let closer = {
            let core = core.clone();
            thread::spawn(move || {
                assert_eq!(core.close_fd(&owner), 2);
                drop(owner); // the handle's own reference
            })
        };
        let mut packets = Vec::new();
        for _ in 0..2 {
            let mut p = core.get(None).expect("a cancelled operation's packet");
            assert!(crate::error::is_aborted(p.result.as_ref().unwrap_err()));
            p.context.delivered = true;
            ghosts.delivered[p.context.id].fetch_add(1, G);
            packets.push(p);
        }
        closer.join().unwrap();
        assert!(alive.upgrade().is_some(), "the packets hold the fd");
        drop(packets.pop());
        assert!(alive.upgrade().is_some(), "one packet still holds the fd");
        drop(packets);
        assert!(
            alive.upgrade().is_none(),
            "the fd closes with its last packet"
        );
        for id in 0..2 {
            assert_eq!(ghosts.delivered[id].load(G), 1, "one packet per operation");
        }
        assert_eq!(core.stats().in_flight, 0);
        running::exit_current();
        core.close();
    });
}

/// direct.rs: a `get_many` that leads takes the packets of its wait
/// straight into its `Vec` (room for one of the two completions: the other
/// is queued, and taken by its next call), while the port closes. Every
/// packet is delivered or dropped exactly once, and none comes out of the
/// port after `Closed`.
#[test]
fn get_many_direct_vs_close() {
    builder(2).check(|| {
        let ghosts = Arc::new(Ghosts::default());
        let model = Arc::new(Model::new(false, true));
        let core = core(1, false, &model);
        let owner = Arc::new(FdOwner::new(devnull()).map_err(|e| e.0).unwrap());
        for id in 0..2 {
            assert!(core.submit(nop(&owner, id, &ghosts)).is_ok(), "accepted");
        }
        let getter = {
            let (core, ghosts) = (core.clone(), ghosts.clone());
            thread::spawn(move || {
                let mut out = Vec::new();
                while core.get_many(&mut out, 1, None).is_ok() {
                    assert_eq!(out.len(), 1, "room for one");
                    for mut p in out.drain(..) {
                        p.context.delivered = true;
                        ghosts.delivered[p.context.id].fetch_add(1, G);
                    }
                }
                running::exit_current();
            })
        };
        model.complete_all(0);
        core.close();
        getter.join().unwrap();
        for id in 0..2 {
            assert_eq!(
                ghosts.delivered[id].load(G) + ghosts.dropped[id].load(G),
                1,
                "packet {id} delivered or dropped exactly once"
            );
        }
        assert_eq!(core.stats().in_flight, 0);
    });
}
