//! The meters of a trial: [`Meter`] reads the wall clock, the process CPU
//! time (`CLOCK_PROCESS_CPUTIME_ID`), kernel CPU time and context switches
//! (`getrusage`) before and after and makes a [`Sample`]; [`thread_use`]
//! reads the same of the calling thread alone (the echo servers report
//! their own threads' use); [`Lat`] holds the latency percentiles of a
//! trial's `hdrhistogram`.

use std::io;
use std::time::{Duration, Instant};

/// Latency percentiles of one trial, from its histogram.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Lat {
    pub p50_ns: f64,
    pub p99_ns: f64,
    /// Values recorded.
    pub count: u64,
}

impl Lat {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Lat {
        Lat {
            p50_ns: h.value_at_quantile(0.50) as f64,
            p99_ns: h.value_at_quantile(0.99) as f64,
            count: h.len(),
        }
    }
}

/// A histogram of nanoseconds, 1 ns to 100 s, 3 significant digits.
pub(crate) fn ns_histogram() -> io::Result<hdrhistogram::Histogram<u64>> {
    hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .map_err(|e| io::Error::other(format!("histogram: {e}")))
}

/// One timed trial.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sample {
    /// Operations done (counted, not assumed).
    pub ops: u64,
    pub wall: Duration,
    /// Process CPU time (all threads) spent during the trial.
    pub cpu: Duration,
    /// Part of `cpu` spent in the kernel (from `getrusage`, µs resolution).
    pub sys: Duration,
    /// Voluntary + involuntary context switches of the process.
    pub csw: u64,
    /// Stalls seen (and rescued) during the trial (see `queue.rs`).
    pub stalls: u64,
    /// Latency percentiles, for workloads that measure them.
    pub lat: Option<Lat>,
    /// Resident memory added per connection (`scale`), bytes.
    pub rss_per_conn: Option<f64>,
}

impl Sample {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn cpu_ns_per_op(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.ops.max(1) as f64
    }
    pub fn csw_per_op(&self) -> f64 {
        self.csw as f64 / self.ops.max(1) as f64
    }
    pub fn sys_ns_per_op(&self) -> f64 {
        self.sys.as_nanos() as f64 / self.ops.max(1) as f64
    }
}

/// Readings at the start of a trial.
pub(crate) struct Meter {
    usage: Usage,
    cpu: Duration,
    t: Instant,
}

impl Meter {
    pub fn start() -> Meter {
        let usage = usage(libc::RUSAGE_SELF);
        let cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
        Meter {
            usage,
            cpu,
            t: Instant::now(),
        }
    }

    pub fn stop(self, ops: u64) -> Sample {
        let wall = self.t.elapsed();
        let cpu = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(self.cpu);
        let u = usage(libc::RUSAGE_SELF);
        Sample {
            ops,
            wall,
            cpu,
            sys: u.sys.saturating_sub(self.usage.sys),
            csw: u.csw.saturating_sub(self.usage.csw),
            stalls: 0,
            lat: None,
            rss_per_conn: None,
        }
    }
}

/// CPU time, kernel CPU time and context switches of some threads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThreadUse {
    pub cpu: Duration,
    pub sys: Duration,
    pub csw: u64,
}

impl std::ops::AddAssign for ThreadUse {
    fn add_assign(&mut self, o: ThreadUse) {
        self.cpu += o.cpu;
        self.sys += o.sys;
        self.csw += o.csw;
    }
}

/// What the calling thread has used so far: CPU time (thread CPU clock),
/// kernel CPU time and context switches (`getrusage(RUSAGE_THREAD)`).
pub(crate) fn thread_use() -> ThreadUse {
    let cpu = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID);
    let u = usage(libc::RUSAGE_THREAD);
    ThreadUse {
        cpu,
        sys: u.sys,
        csw: u.csw,
    }
}

impl ThreadUse {
    /// What was used between `earlier` and `self` (saturating).
    pub fn since(self, earlier: ThreadUse) -> ThreadUse {
        ThreadUse {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            sys: self.sys.saturating_sub(earlier.sys),
            csw: self.csw.saturating_sub(earlier.csw),
        }
    }
}

/// What the library's own threads of this process (named `cport-…`: the
/// blocked-thread monitor, which also keeps ports moving while nobody
/// waits, and the epoll backend's file pool) have used so far, from
/// `/proc/self/task`: CPU time from `schedstat` (ns), kernel CPU time from
/// `stat` (clock ticks), context switches from `status`. A port's server
/// CPU is its workers' *and* these threads' (threads that exited are not
/// counted).
pub(crate) fn library_threads_use() -> ThreadUse {
    let mut total = ThreadUse::default();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return total;
    };
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    for task in dir.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.starts_with("cport-") {
            continue;
        }
        let sched = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let ns: u64 = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        let stime: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(12)?.parse().ok())
            .unwrap_or(0);
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let csw: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        total += ThreadUse {
            cpu: Duration::from_nanos(ns),
            sys: Duration::from_nanos(stime * 1_000_000_000 / tick),
            csw,
        };
    }
    total
}

/// CPU time used so far by what `clock` measures (the whole process or
/// the calling thread); zero if the clock cannot be read.
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is one of
    // the constants every Linux kernel knows.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Kernel CPU time and context switches of the whole process (live and
/// exited threads: `RUSAGE_SELF`) or of the calling thread
/// (`RUSAGE_THREAD`).
struct Usage {
    sys: Duration,
    csw: u64,
}

fn usage(who: libc::c_int) -> Usage {
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable; RUSAGE_SELF and RUSAGE_THREAD
    // are always accepted.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Usage {
            sys: Duration::ZERO,
            csw: 0,
        };
    }
    Usage {
        sys: Duration::from_secs(ru.ru_stime.tv_sec.max(0) as u64)
            + Duration::from_micros(ru.ru_stime.tv_usec.max(0) as u64),
        csw: (ru.ru_nvcsw.max(0) + ru.ru_nivcsw.max(0)) as u64,
    }
}
