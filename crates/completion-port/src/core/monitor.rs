//! Blocked-thread detection: one monitor thread per process notices when a
//! thread that counts as running for a port (windows-semantics §1.4) blocks in the
//! kernel, for any reason — a `read` on a pipe, a sleep, a contended mutex,
//! a page fault — and counts it out, as Windows does, releasing a waiter if
//! packets are queued; when the thread runs again it counts it back in.
//!
//! # The rule
//! Every [`SAMPLE_PERIOD`] the monitor looks at each thread in `COUNTED` state
//! (running.rs) on a port with detection on:
//! 1. it reads the thread's CPU-time clock (`pthread_getcpuclockid` +
//!    `clock_gettime`, one cheap system call);
//! 2. only if that did not advance since the previous look (a whole period
//!    without running), it reads the state field of
//!    `/proc/self/task/<tid>/stat` (kept open, `pread`; dearer): anything
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
//! A blocked thread is detected after one to two sampling periods
//! (0.25–0.5 ms: it ran for part of the period in which it blocked), plus
//! the scheduling delay of the monitor itself.
//! Why this rule, with measurements: `monitor/look.rs`, which holds the
//! looks.
//!
//! # When the monitor looks
//! Counting a blocked thread out only helps when a packet waits for its
//! slot — packets are queued and every slot is held (`running >=
//! concurrency`: the port is *contended*) — or when the thread deferred
//! io_uring submissions (`Record::pending`) that nobody else would make.
//! So the monitor looks at a thread only when it is `COUNTED` and its port
//! is contended or it has submissions pending; when no thread is in that
//! case (and none is `DETECTED`, to be counted back in) it sleeps with no
//! periodic wake-up at all. A blocked worker on a port with no queued
//! packet and no pending submission is therefore *not* counted out
//! (`PortStats::blocked` stays 0): nobody waits for its slot. The moment a
//! packet is queued for it (or the port fills while packets wait), the
//! monitor is woken and its first look sees the thread blocked at once —
//! however long it has been blocked already.
//!
//! The wake-up: `asleep` is true while the monitor does not look.
//! - The monitor, before sleeping, stores `asleep = true`, fences
//!   (`SeqCst`), then evaluates every watched port's [`contended`] and
//!   every watched thread's `pending` again; if any holds it stays awake.
//! - Each way *into* the contended state ends with a `SeqCst` fence, then
//!   a relaxed load of `asleep`, and wakes the monitor if it is true
//!   ([`wake`]; the swap to `false` elects one waker):
//!   - `post` (core/mod.rs) already pushes, fences and loads `running`: only
//!     when every slot is held does it load `asleep` — one relaxed load
//!     in a branch a post with a free slot does not take;
//!   - a `get` that *reserved* a slot (not the running thread asking
//!     again, which changes neither count) and took a packet loads
//!     `running` (just written by its own CAS, in cache), and only when
//!     that took the last slot fences and looks at the queue;
//!   - `dispatch` (hand-offs, completions queued by the leader) fences
//!     and looks when it leaves every slot held with packets queued;
//!   - `count_up` (a blocking scope ends, the monitor counts a thread
//!     back) fences and looks.
//! - A thread that defers a submission stores `pending`, fences (already,
//!   running.rs), then loads `asleep`.
//!
//! Two writers of the contended state (a poster's push, a getter's
//! reservation) meet in the existing Dekker pair of core/mod.rs (push / fence
//! / load `running` against reserve / fence / load the queue): at least
//! one of them sees both halves and wakes the monitor; and each waker's
//! fence against the monitor's fence means the waker sees `asleep ==
//! true` or the monitor's re-evaluation sees the waker's write (C++20
//! fence rules: if the monitor's fence came second, its loads see every
//! write that happens before the waker's fence). The loom model
//! `monitor_wakes_when_slots_fill` checks this protocol.
//!
//! # Two mechanisms
//! - **Switch events** (opt-in, `CPORT_DETECT=switch`): the monitor opens, for every watched
//!   thread, a `perf_event_open` software event counting the thread's
//!   context switches (`PERF_COUNT_SW_CONTEXT_SWITCHES`, `sample_period`
//!   1), whose overflow signal (`F_SETSIG`, `F_SETOWN_EX` to the monitor's
//!   thread id) the monitor reads from a `signalfd`. The events are
//!   enabled only while the monitor looks. Each switch-out of a watched
//!   thread wakes the monitor, which reads that thread's state field: a
//!   thread that blocked is counted out within tens of microseconds; a
//!   preempted one is `R` and left alone. When it starts looking (and for
//!   a thread it starts watching meanwhile) it reads the state field of
//!   every thread it must look at once, so a thread that blocked before
//!   is seen at once. The kernel must let the process count kernel-side
//!   events of its own threads (`exclude_kernel = 0`: root or
//!   `CAP_PERFMON`, or `kernel.perf_event_paranoid` ≤ 1) — context
//!   switches happen in the kernel, so with `exclude_kernel` they are
//!   never counted.
//! - **Sampling** (the default; also the fallback when switch events are
//!   refused): every [`SAMPLE_PERIOD`] while it looks, the rule above (CPU
//!   clock, then state field).
//!
//! [`mechanism`] says which one runs (`Port::blocking_detection`).
//!
//! # Exited threads
//! The monitor keeps, per watched thread, its stat file (and its switch
//! event) open between looks. A thread that exits sets its exit flag and
//! wakes the monitor ([`ExitGuard`]); the monitor drops it — closing both —
//! at its next pass, and does not sleep while a watched thread is flagged.
//!
//! # Where the code is
//! Here: the monitor thread (`run`: when it looks, when it sleeps), its
//! wake-ups, and `detect`/`resume` (the state machine hooks). The look at
//! one thread: `monitor/look.rs`. The perf events, the signal and the
//! `signalfd` of switch events: `monitor/switch.rs`.

mod look;
mod switch;

use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
// The monitor's own thread, and its kernel thread id, are not modelled by
// loom (the models call `detect`, `resume` and the sleep decision
// themselves): plain `std`.
use std::sync::atomic::{AtomicBool as StdAtomicBool, AtomicI32};
use std::sync::{Arc, Weak};
use std::thread::{self, Thread};
use std::time::Duration;

use self::look::Watched;
use self::switch::{
    open_switch_event, set_enabled, signal, signal_fd, switch_event_to, wait_signals, Signals,
};
use super::running::{Accounting, RunState, Worker};
use crate::sync::{fence, AtomicBool, Mutex, Ordering};

/// The monitor's tick while it looks: progress (`progress.rs`) and, with
/// switch events, the looks.
pub(crate) const PERIOD: Duration = Duration::from_millis(1);
/// How often running threads are sampled while a packet waits for their
/// slot. A block is seen one to two samples after it began, so this sets
/// the shortest block worth detecting: with 1 ms, a 1 ms block (a database
/// client's query) ended before it was seen. Each sample is one CPU-clock
/// read per running thread (the state field only for a thread that did
/// not run for a whole sample) and one wake-up of the monitor, and only
/// while the port is contended.
pub(crate) const SAMPLE_PERIOD: Duration = Duration::from_micros(250);
/// How often threads detected as blocked are looked at (to count them back
/// in when they run again).
pub(crate) const SLOW_PERIOD: Duration = Duration::from_millis(8);
/// With switch events, while looking: how often the monitor re-evaluates
/// without any event (a port that stopped being contended).
const EVENT_IDLE: Duration = Duration::from_millis(100);
/// Ticks (of [`PERIOD`]) the monitor goes on ticking after the last port
/// that needed progress (`progress.rs`): a busy port gains and loses its
/// leader at every packet, and must not cost a wake-up each time.
pub(crate) const LINGER: u32 = 16;

/// Which blocked-thread detection mechanism runs in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockingDetection {
    /// The port has detection turned off.
    Off,
    /// Context-switch events (`perf_event_open`, asked for with
    /// `CPORT_DETECT=switch`): the monitor runs when a
    /// watched thread switches out; blocked threads are seen within tens
    /// of microseconds.
    SwitchEvents,
    /// Sampling every 0.25 ms (the default, and the fallback when the
    /// kernel refuses switch events): blocked threads are seen 0.25–0.5 ms
    /// after they block.
    Sampling,
    /// The monitor thread could not be started: nothing is detected.
    Unavailable,
}

struct Monitor {
    /// Records registered since the monitor's last look (it takes them),
    /// each with its thread's exit flag ([`register`]).
    new: Mutex<Vec<(Arc<Worker>, Arc<StdAtomicBool>)>>,
    /// Ports with detection on (dead ones pruned by the monitor).
    ports: Mutex<Vec<Weak<dyn Accounting>>>,
    /// True while the monitor does not look (module docs, "When the
    /// monitor looks").
    asleep: AtomicBool,
    /// The mechanism (decided before the thread starts).
    mechanism: BlockingDetection,
    /// Switch events: the monitor's kernel thread id, once its signals are
    /// blocked (0 before: nobody signals it then).
    tid: AtomicI32,
    /// The monitor thread; `None` if it could not be started.
    thread: Option<Thread>,
}

impl Monitor {
    fn new(mechanism: BlockingDetection, thread: Option<Thread>) -> Monitor {
        Monitor {
            new: Mutex::new(Vec::new()),
            ports: Mutex::new(Vec::new()),
            asleep: AtomicBool::new(false),
            mechanism,
            tid: AtomicI32::new(0),
            thread,
        }
    }
}

#[cfg(not(loom))]
static MONITOR: std::sync::OnceLock<Monitor> = std::sync::OnceLock::new();

/// The monitor, started on first use.
#[cfg(not(loom))]
fn monitor() -> &'static Monitor {
    MONITOR.get_or_init(|| {
        let mut mechanism = choose();
        let r = thread::Builder::new()
            .name("cport-monitor".into())
            .stack_size(128 * 1024)
            .spawn(run);
        let thread = match r {
            Ok(h) => Some(h.thread().clone()),
            Err(e) => {
                tracing::warn!(
                    "completion port: cannot start the blocked-thread monitor ({e}); blocking is not detected"
                );
                mechanism = BlockingDetection::Unavailable;
                None
            }
        };
        Monitor::new(mechanism, thread)
    })
}

/// The monitor, if a port with detection on ever started it.
#[cfg(not(loom))]
fn started() -> Option<&'static Monitor> {
    MONITOR.get()
}

#[cfg(loom)]
loom::lazy_static! {
    /// Under loom: a monitor per model execution and no thread; the models
    /// play its part (`detect`, `resume`, `try_sleep`).
    static ref MODEL_MONITOR: Monitor = Monitor::new(BlockingDetection::Sampling, None);
}

#[cfg(loom)]
fn monitor() -> &'static Monitor {
    &MODEL_MONITOR
}

#[cfg(loom)]
fn started() -> Option<&'static Monitor> {
    Some(monitor())
}

/// Sampling, unless `CPORT_DETECT=switch` asks for switch events and the
/// kernel allows them (tried on the calling thread).
///
/// Why sampling is the default: with switch events the monitor wakes at
/// every switch-out of a running thread while a packet waits, preemptions
/// included, and reads that thread's state; where workers share a CPU
/// (the `echo` benchmark: 2 workers pinned to one CPU) that adds a
/// measurable CPU cost per request (BENCHMARKS.md, "Blocking detection",
/// "Default: sampling"). Switch events pay off for handlers that
/// block for well under a millisecond.
fn choose() -> BlockingDetection {
    if !std::env::var("CPORT_DETECT").is_ok_and(|v| v.trim() == "switch") {
        return BlockingDetection::Sampling;
    }
    match open_switch_event(0) {
        Ok(_) => BlockingDetection::SwitchEvents,
        Err(e) => {
            tracing::debug!(
                "completion port: no context-switch events ({e}); blocked-thread detection samples"
            );
            BlockingDetection::Sampling
        }
    }
}

/// The mechanism in force (starts the monitor if needed).
pub(crate) fn mechanism() -> BlockingDetection {
    monitor().mechanism
}

/// Hands a thread's record to the monitor (once per thread; called on that
/// thread), with an exit flag that the thread sets when it exits.
pub(crate) fn register(rec: Arc<Worker>) {
    let m = monitor();
    let gone = Arc::new(StdAtomicBool::new(false));
    #[cfg(not(loom))]
    {
        let flag = gone.clone();
        // `try_with`: a thread registering from a thread-local destructor
        // (its slot gone already) is dropped at the monitor's next pass
        // after its state says `Exited`.
        let _ = EXIT.try_with(|e| *e.borrow_mut() = Some(ExitGuard(flag)));
    }
    m.new.lock().push((rec, gone));
    if m.mechanism == BlockingDetection::SwitchEvents && !m.asleep.load(Ordering::SeqCst) {
        // Looking: it must open this thread's event now, not at its next
        // event (sleeping, it takes the record when it wakes).
        signal_monitor(m);
    }
}

/// The exit of a registered thread (issue 17.7). The monitor keeps, for
/// each thread it watches, `/proc/self/task/<tid>/stat` open between looks
/// (and, with switch events, the thread's perf event): they must close when
/// the thread exits, not at the monitor's next pass — which, on an idle
/// process, may never come. So the thread's exit (this guard, a
/// thread-local dropped when the thread exits) sets its flag, fences and
/// wakes the monitor if it sleeps; the monitor drops every flagged thread
/// at its next pass (closing both fds), and does not go to sleep while one
/// is flagged (`run`: it looks at the flags after publishing `asleep` and
/// fencing — the Dekker pair of the module docs, "When the monitor
/// looks").
#[cfg(not(loom))]
struct ExitGuard(Arc<StdAtomicBool>);

#[cfg(not(loom))]
impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        wake();
    }
}

#[cfg(not(loom))]
thread_local! {
    static EXIT: std::cell::RefCell<Option<ExitGuard>> = const { std::cell::RefCell::new(None) };
}

/// A port with detection on was created.
pub(crate) fn watch_port(port: Weak<dyn Accounting>) {
    monitor().ports.lock().push(port);
}

/// Whether the monitor sleeps (a relaxed load; callers fence first).
pub(crate) fn asleep() -> bool {
    started().is_some_and(|m| m.asleep.load(Ordering::Relaxed))
}

/// A port just became contended or in need of progress (`progress.rs`),
/// or a running thread deferred a submission: wakes the monitor if it
/// sleeps. The caller fenced after its write (module docs).
pub(crate) fn wake() {
    let Some(m) = started() else {
        return;
    };
    if m.asleep.load(Ordering::Relaxed) && m.asleep.swap(false, Ordering::SeqCst) {
        match m.mechanism {
            BlockingDetection::SwitchEvents => signal_monitor(m),
            _ => {
                if let Some(t) = &m.thread {
                    t.unpark();
                }
            }
        }
    }
}

/// Wakes the monitor from its `signalfd` wait.
fn signal_monitor(m: &Monitor) {
    let tid = m.tid.load(Ordering::SeqCst);
    if tid != 0 {
        // SAFETY: plain system calls; the signal is blocked in the target
        // thread (set before `tid` was published), so it only queues.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                tid as libc::c_long,
                signal() as libc::c_long,
            );
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

/// The thread was seen blocked: `Counted` → `Detected`, then count it down
/// and submit what it deferred (running.rs, the state machine).
pub(crate) fn detect(rec: &Worker) {
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
            .transition(RunState::Counted, RunState::Detected)
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

/// A thread seen blocked runs again: increment, then CAS `Detected` →
/// `Counted`; undo if the thread left `Detected` itself meanwhile.
pub(crate) fn resume(rec: &Worker) {
    let (port, ok) = {
        let g = rec.port.lock();
        let Some(port) = g.as_ref().and_then(|p| p.port.upgrade()) else {
            return;
        };
        port.count_up();
        let ok = rec
            .state
            .transition(RunState::Detected, RunState::Counted)
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
        if let Some(m) = started() {
            break m;
        }
        thread::sleep(PERIOD);
    };
    let me = gettid();
    let sfd = match m.mechanism {
        BlockingDetection::SwitchEvents => signal_fd(),
        _ => None,
    };
    if sfd.is_some() {
        // Signals are blocked here: wakers may signal from now on.
        m.tid.store(me, Ordering::SeqCst);
    }
    let mut watched: Vec<Watched> = Vec::new();
    let mut sig = Signals::default();
    // Whether the monitor looked during the previous pass (switch events
    // are enabled exactly while it looks).
    let mut looking = false;
    // Ticks since a port last needed progress.
    let mut idle_ticks = LINGER;
    loop {
        let events = looking && sfd.is_some();
        take_new(m, &mut watched, sfd.is_some(), me, events);
        if !sig.fds.is_empty() || sig.all {
            for w in &mut watched {
                let fd = w.event.as_ref().map(|e| e.as_raw_fd());
                if sig.all || fd.is_some_and(|fd| sig.fds.contains(&fd)) {
                    w.switched = true;
                }
            }
            sig.fds.clear();
            sig.all = false;
        }
        let mut wanted = false;
        let mut sampled = false;
        let mut detected = false;
        for w in &mut watched {
            // A panic here (a context's Drop run by a flush or a release)
            // must not end detection for the whole process.
            let _ = catch_unwind(AssertUnwindSafe(|| match w.rec.state.load() {
                RunState::Counted if w.wanted() => {
                    wanted = true;
                    sampled |= w.event.is_none();
                    w.look_counted();
                }
                RunState::Detected => {
                    detected = true;
                    w.look_detected();
                }
                RunState::Counted | RunState::Idle | RunState::Blocked | RunState::Exited => {
                    w.last_cpu = None
                }
            }));
        }
        // Exited threads go, and their fds close with them.
        watched.retain(|w| w.rec.state.load() != RunState::Exited && !w.exited());
        // Progress (`progress.rs`): every port that needs it is looked at
        // once per tick, and the ticks go on a while after the last one.
        if tick_ports(m) {
            idle_ticks = 0;
        } else {
            idle_ticks = idle_ticks.saturating_add(1);
        }
        let progress = idle_ticks < LINGER;
        // A contended port whose running threads the monitor does not know
        // yet (registration races the first `get`) keeps it looking too.
        let wanted = wanted || any_port_contended(m) || progress;
        if wanted {
            if !looking {
                looking = true;
                if sfd.is_some() {
                    // Enable, then look at once at every thread (a thread
                    // that blocked before is seen now; one that blocks
                    // after raises an event).
                    set_all(&mut watched, true);
                    continue;
                }
            }
            match &sfd {
                Some(sfd) if !sampled => {
                    let t = if progress {
                        PERIOD
                    } else if detected {
                        SLOW_PERIOD
                    } else {
                        EVENT_IDLE
                    };
                    wait_signals(sfd, Some(t), &mut sig);
                }
                _ if sampled => thread::sleep(SAMPLE_PERIOD),
                _ => thread::sleep(PERIOD),
            }
            continue;
        }
        let may_sleep = try_sleep(m, || {
            take_new(m, &mut watched, sfd.is_some(), me, false);
            watched.iter().any(|w| {
                // A thread that exited since the pass: drop it first.
                w.exited()
                    || (w.rec.state.load() == RunState::Counted
                        && w.rec.pending.load(Ordering::SeqCst))
            })
        });
        if !may_sleep {
            continue;
        }
        if looking {
            looking = false;
            set_all(&mut watched, false);
        }
        let timeout = detected.then_some(SLOW_PERIOD);
        match &sfd {
            Some(sfd) => wait_signals(sfd, timeout, &mut sig),
            None => match timeout {
                Some(t) => thread::park_timeout(t),
                None => thread::park(),
            },
        }
        // Switch events are disabled while asleep: what was read is stale.
        sig.fds.clear();
        sig.all = false;
        m.asleep.store(false, Ordering::SeqCst);
    }
}

/// About to sleep: publish `asleep`, fence, then evaluate every watched
/// port's contention and `busy` (a watched thread sits on deferred
/// submissions) again (module docs, "When the monitor looks"). Returns
/// whether the monitor may sleep; if not, `asleep` is false again.
fn try_sleep(m: &Monitor, busy: impl FnOnce() -> bool) -> bool {
    m.asleep.store(true, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if any_port_contended(m) || ports(m).iter().any(|p| p.needs_progress()) || busy() {
        m.asleep.store(false, Ordering::SeqCst);
        return false;
    }
    true
}

/// The loom models' monitor deciding to sleep (its real decision, with
/// no thread of its own to watch).
#[cfg(loom)]
pub(crate) fn model_try_sleep() -> bool {
    try_sleep(monitor(), || false)
}

/// Takes the newly registered records; with switch events, opens each
/// one's event (enabled if `enable`; then its first look reads its state).
fn take_new(m: &Monitor, watched: &mut Vec<Watched>, events: bool, me: i32, enable: bool) {
    let new: Vec<(Arc<Worker>, Arc<StdAtomicBool>)> = std::mem::take(&mut *m.new.lock());
    for (rec, gone) in new {
        if gone.load(std::sync::atomic::Ordering::SeqCst) {
            continue; // exited before the monitor took it: nothing to open
        }
        let event = if events {
            match switch_event_to(rec.tid, me) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::debug!(
                        "completion port: no switch event for thread {} ({e}); it is sampled",
                        rec.tid
                    );
                    None
                }
            }
        } else {
            None
        };
        if enable {
            if let Some(fd) = &event {
                set_enabled(fd, true);
            }
        }
        watched.push(Watched {
            rec,
            gone,
            last_cpu: None,
            stat: None,
            enabled: enable && event.is_some(),
            event,
            switched: false,
        });
    }
}

/// Enables or disables every switch event; every thread's next look is a
/// first look.
fn set_all(watched: &mut [Watched], on: bool) {
    for w in watched {
        if let Some(fd) = &w.event {
            if w.enabled != on {
                set_enabled(fd, on);
                w.enabled = on;
            }
        }
        // Enabled: the next look reads the state field (a thread that
        // blocked before the enable raised no event). Disabled: the next
        // look, when the monitor looks again, is a first look too.
        if w.rec.state.load() != RunState::Detected {
            w.last_cpu = None;
        }
    }
}

/// The live ports (prunes dead ones). Copied out: a port dropped by the
/// caller's look must not run its destructor under the lock.
fn ports(m: &Monitor) -> Vec<Arc<dyn Accounting>> {
    let weak: Vec<Weak<dyn Accounting>> = {
        let mut g = m.ports.lock();
        g.retain(|p| p.strong_count() > 0);
        g.clone()
    };
    weak.iter().filter_map(Weak::upgrade).collect()
}

/// Whether any port with detection on is contended.
fn any_port_contended(m: &Monitor) -> bool {
    ports(m).iter().any(|p| p.contended())
}

/// One progress tick of every port (`progress.rs`). Returns whether any
/// needed it.
fn tick_ports(m: &Monitor) -> bool {
    let mut any = false;
    for p in ports(m) {
        if p.needs_progress() {
            any = true;
            // A panic here (a context's Drop run by a poll) must not end
            // the monitor for the whole process.
            let _ = catch_unwind(AssertUnwindSafe(|| p.tick_progress()));
        }
    }
    any
}
