//! Blocked-thread detection: one monitor thread per process notices when a
//! thread that counts as running for a port (spec §1.4) blocks in the
//! kernel, for any reason — a `read` on a pipe, a sleep, a contended mutex,
//! a page fault — and counts it out, as Windows does, releasing a waiter if
//! packets are queued; when the thread runs again it counts it back in.
//!
//! # The rule
//! Every [`PERIOD`] the monitor looks at each thread in `COUNTED` state
//! (running.rs) on a port with detection on:
//! 1. it reads the thread's CPU-time clock (`pthread_getcpuclockid` +
//!    `clock_gettime`, one system call, ~0.6 µs);
//! 2. only if that did not advance since the previous look (a whole period
//!    without running), it reads the state field of
//!    `/proc/self/task/<tid>/stat` (kept open, `pread`, ~3.6 µs): anything
//!    but `R` (running or runnable) means blocked. A thread that is merely
//!    preempted is `R`, so it is never counted out.
//!
//! A thread seen blocked is moved `COUNTED` → `DETECTED` and counted down.
//! A `DETECTED` thread whose CPU time advanced is counted up again (which
//! may take the count above the concurrency value for a while) — or, if it
//! calls `get` (or opens a blocking scope, or exits) first, it simply
//! leaves `DETECTED` itself. The race between the two is settled by the
//! state machine of running.rs.
//!
//! A blocked thread is detected after one to two periods (it ran for part
//! of the period in which it blocked), plus the scheduling delay of the
//! monitor itself.
//!
//! # Measured on the development machine (2 vCPUs, AMD EPYC, Linux 6.18)
//! `cargo run --release -p completion-port --example probe_blocking`:
//!
//! | look at another thread                         | cost     |
//! |------------------------------------------------|----------|
//! | `clock_gettime` on its CPU-time clock          | 580 ns   |
//! | `/proc/self/task/<tid>/stat`, open+read+close  | 9 090 ns |
//! | `/proc/self/task/<tid>/stat`, kept open, pread | 3 630 ns |
//! | `/proc/self/task/<tid>/schedstat`, kept open   | 905 ns   |
//!
//! Detection delay (block on a pipe read after spinning; 200 blocks):
//!
//! | period | rule                  | p50     | p99     | sampler CPU (one core) |
//! |--------|-----------------------|---------|---------|------------------------|
//! | 0.5 ms | CPU clock only        | 0.82 ms | 1.03 ms | 4.7 %                  |
//! | 0.5 ms | CPU clock, then state | 0.80 ms | 0.86 ms | 3.8 %                  |
//! | 1 ms   | CPU clock only        | 1.76 ms | 1.86 ms | 2.8 %                  |
//! | 1 ms   | CPU clock, then state | 1.76 ms | 1.87 ms | 3.1 %                  |
//! | 1 ms   | state twice           | 1.81 ms | 1.90 ms | 3.8 %                  |
//! | 2 ms   | CPU clock, then state | 2.76 ms | 3.04 ms | 2.6 %                  |
//!
//! And the decisive one, false alarms on a thread that never blocks but is
//! preempted (it spins while two more spinners share the 2 CPUs, 1 ms
//! period): CPU clock only said "blocked" on 368 of 1 820 looks; CPU clock
//! then state, 0 of 1 792; state twice, 0 of 1 800. So: the CPU clock
//! alone is wrong on a busy machine, the state field alone costs 6× more
//! per look at every running thread; the clock first and the state only
//! for a thread that did not run costs one cheap system call per running
//! thread per period. The sampler's own CPU is mostly its wake-up, not the
//! looks. The numbers with the port (end-to-end delay, cost under load)
//! are in BENCHMARKS.md (`cport bench blocking`).
//!
//! # Sleeping
//! The monitor samples only while some watched thread is `COUNTED`: with
//! none (every worker waits in `get`: an idle port) it parks, costing
//! nothing; with only `DETECTED` ones it looks every [`SLOW_PERIOD`] (to
//! count them back in when they resume). A thread that becomes `COUNTED`
//! on a port with detection on wakes it:
//! - the thread stores `COUNTED` (`SeqCst`), then loads `awake` (`SeqCst`);
//!   if it is false, it sets it (swap, so one waker) and unparks the
//!   monitor;
//! - the monitor, before parking or slowing down, stores `awake = false`
//!   (`SeqCst`), then loads every record's state (and the list of new
//!   records, under its mutex); if any is `COUNTED` it stays awake.
//!
//! Either the thread sees `awake == false` or the monitor sees `COUNTED`:
//! store-then-load on both sides, all four accesses `SeqCst`, which the
//! language's memory model (C++20's single total order of `SeqCst`
//! operations) forbids from both missing the other's store — no lost
//! wake-up. Unlike the `pending` hand-off, no fence is added: this pair is
//! on every `get`, and on x86-64 the `SeqCst` store is already an `xchg`
//! (a full barrier). The loom model does not cover it (loom treats
//! `SeqCst` accesses as acquire/release; only fences get their full
//! strength there). A busy worker pays one load of a shared, rarely
//! written flag per `get`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::Duration;

use parking_lot::Mutex;

use super::running::{Record, COUNTED, DETECTED, EXITED};

/// How often running threads are looked at.
pub(crate) const PERIOD: Duration = Duration::from_millis(1);
/// How often threads detected as blocked are looked at when no thread runs.
pub(crate) const SLOW_PERIOD: Duration = Duration::from_millis(8);

struct Monitor {
    /// Records registered since the monitor's last look (it takes them).
    new: Mutex<Vec<Arc<Record>>>,
    /// False while the monitor parks or looks only every `SLOW_PERIOD`
    /// (module docs, "Sleeping").
    awake: AtomicBool,
    /// The monitor thread; `None` if it could not be started (then nothing
    /// is detected, and a warning was logged).
    thread: Option<Thread>,
}

static MONITOR: OnceLock<Monitor> = OnceLock::new();

fn monitor() -> &'static Monitor {
    MONITOR.get_or_init(|| {
        let r = thread::Builder::new()
            .name("cport-monitor".into())
            .stack_size(64 * 1024)
            .spawn(run);
        let thread = match r {
            Ok(h) => Some(h.thread().clone()),
            Err(e) => {
                tracing::warn!(
                    "completion port: cannot start the blocked-thread monitor ({e}); blocking is not detected"
                );
                None
            }
        };
        Monitor {
            new: Mutex::new(Vec::new()),
            awake: AtomicBool::new(true),
            thread,
        }
    })
}

/// Hands a thread's record to the monitor (once per thread).
pub(crate) fn register(rec: Arc<Record>) {
    monitor().new.lock().push(rec);
}

/// A thread just stored `COUNTED` on a port with detection on: wakes the
/// monitor if it sleeps (module docs, "Sleeping").
pub(crate) fn running_thread_seen() {
    let Some(m) = MONITOR.get() else {
        return;
    };
    if !m.awake.load(Ordering::SeqCst) && !m.awake.swap(true, Ordering::SeqCst) {
        if let Some(t) = &m.thread {
            t.unpark();
        }
    }
}

/// The calling thread's kernel id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The calling thread's CPU-time clock, readable from other threads.
pub(crate) fn current_cpu_clock() -> Option<libc::clockid_t> {
    let mut id: libc::clockid_t = 0;
    // SAFETY: `pthread_self()` is the calling, live thread; `id` is a
    // valid, writable clockid_t.
    let r = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    (r == 0).then_some(id)
}

/// CPU time of the thread of `clock`, in ns (`None`: it exited).
fn cpu_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; a clock id of a thread
    // that exited only makes the call fail with EINVAL.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then(|| (ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64)
}

/// A record, with what the monitor remembers of its previous look.
struct Watched {
    rec: Arc<Record>,
    /// CPU time at the previous look, if the thread was `COUNTED` or
    /// `DETECTED` then.
    last_cpu: Option<u64>,
    /// `/proc/self/task/<tid>/stat`, opened at the first need.
    stat: Option<File>,
}

impl Watched {
    /// Whether the thread is in the kernel's `R` state (running or
    /// runnable). Unknown counts as runnable: never a false "blocked".
    fn runnable(&mut self) -> bool {
        if self.stat.is_none() {
            self.stat = File::open(format!("/proc/self/task/{}/stat", self.rec.tid)).ok();
        }
        let Some(f) = &self.stat else {
            return true;
        };
        let mut buf = [0u8; 512];
        let n = f.read_at(&mut buf, 0).unwrap_or(0);
        let s = &buf[..n];
        // "pid (comm) S ...": the state follows the last ')' (the thread
        // name may contain one).
        match s.iter().rposition(|&b| b == b')') {
            Some(i) if i + 2 < n => s[i + 2] == b'R',
            _ => true,
        }
    }

    /// One look. Returns the state seen, for the caller's bookkeeping.
    fn look(&mut self) -> u8 {
        let state = self.rec.state.load(Ordering::SeqCst);
        let Some(clock) = self.rec.clock else {
            return state;
        };
        match state {
            COUNTED => {
                let Some(c) = cpu_ns(clock) else {
                    return state;
                };
                let idle = self.last_cpu == Some(c);
                self.last_cpu = Some(c);
                if idle && !self.runnable() {
                    detect(&self.rec);
                }
            }
            DETECTED => {
                let Some(c) = cpu_ns(clock) else {
                    return state;
                };
                let ran = self.last_cpu != Some(c);
                self.last_cpu = Some(c);
                if ran {
                    resume(&self.rec);
                }
            }
            _ => self.last_cpu = None,
        }
        state
    }
}

/// Whether the record's thread runs for a port with detection on.
fn watched_port(rec: &Record) -> bool {
    rec.port.lock().as_ref().is_some_and(|p| p.detect)
}

/// The thread was seen blocked: `COUNTED` → `DETECTED`, then count it down
/// and submit what it deferred (running.rs, the state machine).
fn detect(rec: &Record) {
    let port = {
        // Held across the CAS: the port is the one the state refers to.
        let g = rec.port.lock();
        let Some(p) = g.as_ref().filter(|p| p.detect) else {
            return;
        };
        let Some(port) = p.port.upgrade() else {
            return;
        };
        // Before the CAS, so that the thread (which undoes it when it
        // leaves DETECTED) never takes the statistic below zero.
        port.note_detected(true);
        if rec
            .state
            .compare_exchange(COUNTED, DETECTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            port.note_detected(false);
            return;
        }
        port
    };
    // CAS, fence, then look at `pending` (running.rs, "Deferred
    // submissions").
    fence(Ordering::SeqCst);
    if rec.pending.load(Ordering::SeqCst) && rec.pending.swap(false, Ordering::SeqCst) {
        port.flush();
    }
    port.count_down();
}

/// A thread seen blocked runs again: increment, then CAS `DETECTED` →
/// `COUNTED`; undo if the thread left `DETECTED` itself meanwhile.
fn resume(rec: &Record) {
    let (port, ok) = {
        let g = rec.port.lock();
        let Some(port) = g.as_ref().and_then(|p| p.port.upgrade()) else {
            return;
        };
        port.count_up();
        let ok = rec
            .state
            .compare_exchange(DETECTED, COUNTED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        (port, ok)
    };
    if ok {
        port.note_detected(false);
    } else {
        port.count_down();
    }
}

/// The monitor thread.
fn run() {
    // `monitor()` may still be initialising on the thread that started
    // this one: wait for it.
    let m = loop {
        if let Some(m) = MONITOR.get() {
            break m;
        }
        thread::sleep(PERIOD);
    };
    let mut watched: Vec<Watched> = Vec::new();
    loop {
        watched.extend(m.new.lock().drain(..).map(|rec| Watched {
            rec,
            last_cpu: None,
            stat: None,
        }));
        let (mut counted, mut detected) = (false, false);
        for w in &mut watched {
            // A panic here (a context's Drop run by a flush or a release)
            // must not end detection for the whole process.
            let state = catch_unwind(AssertUnwindSafe(|| w.look())).unwrap_or(EXITED);
            if state == COUNTED || state == DETECTED {
                let on = watched_port(&w.rec);
                counted |= on && state == COUNTED;
                detected |= on && state == DETECTED;
            }
        }
        watched.retain(|w| w.rec.state.load(Ordering::Relaxed) != EXITED);
        if counted {
            thread::sleep(PERIOD);
            continue;
        }
        // About to sleep: publish, then look again (module docs).
        m.awake.store(false, Ordering::SeqCst);
        let again = !m.new.lock().is_empty()
            || watched
                .iter()
                .any(|w| w.rec.state.load(Ordering::SeqCst) == COUNTED && watched_port(&w.rec));
        if again {
            m.awake.store(true, Ordering::SeqCst);
            thread::sleep(PERIOD);
            continue;
        }
        if detected {
            thread::park_timeout(SLOW_PERIOD);
        } else {
            thread::park();
        }
        m.awake.store(true, Ordering::SeqCst);
    }
}
