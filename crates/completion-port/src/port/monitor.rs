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
//!   ([`slots_full`]; the swap to `false` elects one waker):
//!   - `post` (core.rs) already pushes, fences and loads `running`: only
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
//! reservation) meet in the existing Dekker pair of core.rs (push / fence
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
//!   refused): every [`PERIOD`] while it looks, the rule above (CPU clock,
//!   then state field).
//!
//! [`mechanism`] says which one runs (`Port::blocking_detection`).
//!
//! Signal used: `SIGRTMAX - 3` ([`signal`]), blocked in the monitor thread
//! only and aimed at that thread only; if the kernel's queue of real-time
//! signals overflows, it sends `SIGIO` instead, which the monitor also
//! blocks and takes as "look at every thread".

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::Duration;

use parking_lot::Mutex;

use super::running::{Accounting, Record, COUNTED, DETECTED, EXITED};

/// How often threads are looked at while the monitor looks (sampling).
pub(crate) const PERIOD: Duration = Duration::from_millis(1);
/// How often threads detected as blocked are looked at (to count them back
/// in when they run again).
pub(crate) const SLOW_PERIOD: Duration = Duration::from_millis(8);
/// With switch events, while looking: how often the monitor re-evaluates
/// without any event (a port that stopped being contended).
const EVENT_IDLE: Duration = Duration::from_millis(100);

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
    /// Sampling every millisecond (the default, and the fallback when the
    /// kernel refuses switch events): blocked threads are seen about 1 ms
    /// after they block.
    Sampling,
    /// The monitor thread could not be started: nothing is detected.
    Unavailable,
}

struct Monitor {
    /// Records registered since the monitor's last look (it takes them).
    new: Mutex<Vec<Arc<Record>>>,
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

static MONITOR: OnceLock<Monitor> = OnceLock::new();

/// The real-time signal the switch events raise.
fn signal() -> libc::c_int {
    libc::SIGRTMAX() - 3
}

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
        Monitor {
            new: Mutex::new(Vec::new()),
            ports: Mutex::new(Vec::new()),
            asleep: AtomicBool::new(false),
            mechanism,
            tid: AtomicI32::new(0),
            thread,
        }
    })
}

/// Sampling, unless `CPORT_DETECT=switch` asks for switch events and the
/// kernel allows them (tried on the calling thread).
///
/// Why sampling is the default: with switch events the monitor wakes at
/// every switch-out of a running thread while a packet waits, preemptions
/// included, and reads that thread's state; where workers share a CPU
/// (the `echo` benchmark: 2 workers pinned to one CPU) that cost the
/// server 3-5 µs of CPU per request (9.2-9.5 µs without detection, 9.0-10.8
/// µs sampling, 12.5-14.7 µs switch events; BENCHMARKS.md). Switch events
/// pay off for handlers that block for about a millisecond or less.
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

/// Hands a thread's record to the monitor (once per thread).
pub(crate) fn register(rec: Arc<Record>) {
    let m = monitor();
    m.new.lock().push(rec);
    if m.mechanism == BlockingDetection::SwitchEvents && !m.asleep.load(Ordering::SeqCst) {
        // Looking: it must open this thread's event now, not at its next
        // event (sleeping, it takes the record when it wakes).
        signal_monitor(m);
    }
}

/// A port with detection on was created.
pub(crate) fn watch_port(port: Weak<dyn Accounting>) {
    monitor().ports.lock().push(port);
}

/// Whether the monitor sleeps (a relaxed load; callers fence first).
pub(crate) fn asleep() -> bool {
    MONITOR
        .get()
        .is_some_and(|m| m.asleep.load(Ordering::Relaxed))
}

/// A port just became contended, or a running thread deferred a
/// submission: wakes the monitor if it sleeps. The caller fenced after its
/// write (module docs).
pub(crate) fn slots_full() {
    let Some(m) = MONITOR.get() else {
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

/// `struct perf_event_attr`, its first version (`PERF_ATTR_SIZE_VER0`,
/// 64 bytes: every field this needs; the kernel zero-extends).
#[repr(C)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CONTEXT_SWITCHES: u64 = 3;
/// `attr.disabled` (bit 0 of the flags).
const ATTR_DISABLED: u64 = 1;
/// `attr.exclude_hv` (bit 6).
const ATTR_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;
/// `si_code` of a signal raised by an fd becoming readable.
const POLL_IN: i32 = 1;

#[repr(C)]
struct FOwnerEx {
    type_: libc::c_int,
    pid: libc::pid_t,
}

/// A disabled context-switch event of thread `tid` (0: the caller),
/// sampling every switch.
fn open_switch_event(tid: i32) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CONTEXT_SWITCHES,
        sample_period: 1,
        sample_type: 0,
        read_format: 0,
        // Kernel-side events included: a switch happens in the kernel.
        flags: ATTR_DISABLED | ATTR_EXCLUDE_HV,
        wakeup_events: 1,
        bp_type: 0,
        config1: 0,
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it states;
    // the call only reads it. pid = a thread of this process, any CPU, no
    // group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid as libc::c_long,
            -1 as libc::c_long,
            -1 as libc::c_long,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Opens thread `tid`'s switch event, signalling `monitor_tid`.
fn switch_event_to(tid: i32, monitor_tid: i32) -> std::io::Result<OwnedFd> {
    let fd = open_switch_event(tid)?;
    let raw = fd.as_raw_fd();
    let owner = FOwnerEx {
        type_: F_OWNER_TID,
        pid: monitor_tid,
    };
    // SAFETY: fcntl on an fd we own; `owner` is a valid f_owner_ex.
    let ok = unsafe {
        libc::fcntl(raw, F_SETOWN_EX, &owner as *const FOwnerEx) == 0
            && libc::fcntl(raw, F_SETSIG, signal()) == 0
            && libc::fcntl(
                raw,
                libc::F_SETFL,
                libc::fcntl(raw, libc::F_GETFL) | libc::O_ASYNC,
            ) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn set_enabled(fd: &OwnedFd, on: bool) {
    let req = if on {
        PERF_EVENT_IOC_ENABLE
    } else {
        PERF_EVENT_IOC_DISABLE
    };
    // SAFETY: an ioctl without argument on a perf fd we own.
    unsafe {
        libc::ioctl(fd.as_raw_fd(), req as _, 0);
    }
}

/// A record, with what the monitor remembers of its previous look.
struct Watched {
    rec: Arc<Record>,
    /// CPU time at the previous look, if the thread was looked at then
    /// (`None`: the next look reads the state field at once).
    last_cpu: Option<u64>,
    /// `/proc/self/task/<tid>/stat`, opened at the first need.
    stat: Option<File>,
    /// Switch events: the thread's event, if it could be opened (else the
    /// thread is sampled), and whether it is enabled.
    event: Option<OwnedFd>,
    enabled: bool,
    /// A switch-out was signalled since the last look.
    switched: bool,
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

    /// Whether the monitor must look at this `COUNTED` thread now: its
    /// port is contended, or it deferred submissions.
    fn wanted(&self) -> bool {
        if self.rec.pending.load(Ordering::SeqCst) {
            return true;
        }
        // Upgraded under the lock, used (and maybe dropped) after it.
        let port = (self.rec.port.lock().as_ref())
            .filter(|p| p.detect)
            .and_then(|p| p.port.upgrade());
        port.is_some_and(|p| p.contended())
    }

    /// One look at a `COUNTED` thread the monitor must look at. With a
    /// switch event: the state field, if it switched out since the last
    /// look (or at the first look). Sampling: the CPU clock, then the
    /// state field if it did not advance (or at once, the first look).
    fn look_counted(&mut self) {
        let prev = self.last_cpu;
        let now = self.rec.clock.and_then(cpu_ns);
        self.last_cpu = Some(now.unwrap_or(0));
        let switched = std::mem::take(&mut self.switched);
        let suspect = match prev {
            // Blocked for however long before the monitor looked: seen now.
            None => true,
            Some(_) if self.event.is_some() => switched,
            Some(p) => now == Some(p),
        };
        if suspect && !self.runnable() {
            detect(&self.rec);
        }
    }

    /// One look at a `DETECTED` thread: counted back in if it ran.
    fn look_detected(&mut self) {
        let Some(c) = self.rec.clock.and_then(cpu_ns) else {
            return;
        };
        let ran = self.last_cpu.is_some_and(|l| l != c);
        self.last_cpu = Some(c);
        if ran {
            resume(&self.rec);
        }
    }
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

/// Switch events: the monitor's `signalfd` for [`signal`] and `SIGIO`
/// (both blocked in this thread first).
fn signal_fd() -> Option<OwnedFd> {
    // SAFETY: `set` is a valid sigset_t, initialised by sigemptyset before
    // use; pthread_sigmask and signalfd only read it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal());
        libc::sigaddset(&mut set, libc::SIGIO);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return None;
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    }
}

/// What a wait on the `signalfd` returned.
#[derive(Default)]
struct Signals {
    /// fds of the switch events that fired.
    fds: Vec<i32>,
    /// Look at every thread (a wake-up, or an overflow to `SIGIO`).
    all: bool,
}

/// Waits up to `timeout` (`None`: forever) for signals, and reads them all.
fn wait_signals(sfd: &OwnedFd, timeout: Option<Duration>, out: &mut Signals) {
    let mut pfd = libc::pollfd {
        fd: sfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, 60_000) as libc::c_int);
    // SAFETY: one valid pollfd.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
    const N: usize = 32;
    // SAFETY: signalfd_siginfo is plain old data: all zeroes is valid.
    let mut buf: [libc::signalfd_siginfo; N] = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `buf` is writable for its whole size; a non-blocking
        // signalfd returns whole records or fails with EAGAIN.
        let n = unsafe {
            libc::read(
                sfd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                std::mem::size_of_val(&buf),
            )
        };
        if n <= 0 {
            return;
        }
        let got = n as usize / std::mem::size_of::<libc::signalfd_siginfo>();
        for si in &buf[..got] {
            if si.ssi_signo as libc::c_int == signal() && si.ssi_code == POLL_IN {
                out.fds.push(si.ssi_fd);
            } else {
                out.all = true;
            }
        }
        if got < N {
            return;
        }
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
            let _ = catch_unwind(AssertUnwindSafe(|| {
                match w.rec.state.load(Ordering::SeqCst) {
                    COUNTED if w.wanted() => {
                        wanted = true;
                        sampled |= w.event.is_none();
                        w.look_counted();
                    }
                    DETECTED => {
                        detected = true;
                        w.look_detected();
                    }
                    _ => w.last_cpu = None,
                }
            }));
        }
        watched.retain(|w| w.rec.state.load(Ordering::Relaxed) != EXITED);
        // A contended port whose running threads the monitor does not know
        // yet (registration races the first `get`) keeps it looking too.
        let wanted = wanted || any_port_contended(m);
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
                    let t = if detected { SLOW_PERIOD } else { EVENT_IDLE };
                    wait_signals(sfd, Some(t), &mut sig);
                }
                _ => thread::sleep(PERIOD),
            }
            continue;
        }
        // About to sleep: publish, fence, evaluate again (module docs).
        m.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        take_new(m, &mut watched, sfd.is_some(), me, false);
        let again = any_port_contended(m)
            || watched.iter().any(|w| {
                w.rec.state.load(Ordering::SeqCst) == COUNTED
                    && w.rec.pending.load(Ordering::SeqCst)
            });
        if again {
            m.asleep.store(false, Ordering::SeqCst);
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

/// Takes the newly registered records; with switch events, opens each
/// one's event (enabled if `enable`; then its first look reads its state).
fn take_new(m: &Monitor, watched: &mut Vec<Watched>, events: bool, me: i32, enable: bool) {
    let new: Vec<Arc<Record>> = std::mem::take(&mut *m.new.lock());
    for rec in new {
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
        if w.rec.state.load(Ordering::Relaxed) != DETECTED {
            w.last_cpu = None;
        }
    }
}

/// Whether any port with detection on is contended (prunes dead ones).
fn any_port_contended(m: &Monitor) -> bool {
    // Copied out: a port dropped by the look below must not run its
    // destructor under the lock.
    let ports: Vec<Weak<dyn Accounting>> = {
        let mut g = m.ports.lock();
        g.retain(|p| p.strong_count() > 0);
        g.clone()
    };
    ports
        .iter()
        .any(|p| p.upgrade().is_some_and(|p| p.contended()))
}
