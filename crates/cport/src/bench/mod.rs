//! `cport bench`: the port side by side with its peers, in one run.
//!
//! Each workload runs as interleaved *pairs* of trials (ours, peer, ours,
//! peer, …); each trial does a fixed amount of work, timed with `Instant`,
//! with the process CPU time (`CLOCK_PROCESS_CPUTIME_ID`), kernel CPU time
//! and context switches (`getrusage`) read before and after. A row reports
//! the median rate of each side, the median of the per-pair ratios
//! (ours/peer) and the median CPU time per operation. Every trial counts
//! the operations it saw complete and fails unless they match its work.
//!
//! The workloads live one per file (`queue.rs`, `nop.rs`, `echo.rs`,
//! `mixed.rs`, `scale.rs`, `file.rs`, `wake.rs`); this file holds the
//! command line, the trial loop, the meters and thread pinning;
//! `report.rs` prints the table and writes the JSON. Latency rows record
//! every hand-off or request in an `hdrhistogram` and compare percentiles
//! (lower is better there: see [`RatioKind`]).

mod blocking;
mod echo;
mod file;
mod loadgen;
mod mixed;
mod nop;
mod queue;
mod report;
mod scale;
mod wake;

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use completion_port::{Backend, Port};

/// Which workloads to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// post→get throughput: 2 posters and 2 waiters on one port
    /// (concurrency 2) against the same shape on a crossbeam channel.
    Queue,
    /// Backend no-ops at batch 1 and batch 32 against a raw io-uring loop.
    Nop,
    /// TCP echo, 50 connections x 512 B over loopback: ours on each backend
    /// (2 workers on one port) against a raw single-thread epoll loop, and
    /// ours on io_uring against a raw single-thread io_uring loop, tokio
    /// (2 workers) and compio (1 thread-per-core runtime), all driven by
    /// the same in-repo epoll load generator.
    Echo,
    /// The echo with a heavy-tailed CPU cost per request (90 % 2 µs, 10 %
    /// 200 µs, seeded): throughput and p50/p99 latency, ours against tokio
    /// and compio.
    Mixed,
    /// The echo at 10 000 connections against 50: throughput ratio and
    /// resident memory per connection.
    Scale,
    /// 4 KiB O_DIRECT random reads at queue depth 32 on a 1 GiB file (256
    /// MiB with --quick) against fio's io_uring engine on the same file.
    File,
    /// post→wake latency of a parked waiter against a Mutex+Condvar
    /// hand-off of the same shape (p50/p99; lower is better).
    Wake,
    /// Handlers that block 1 ms in 10 % of packets: a port with blocking
    /// detection on and off against a plain thread pool; plus the
    /// monitor's detection delay and CPU cost. Not part of `all`.
    Blocking,
    /// Every workload but `blocking`.
    All,
}

/// Benchmark the port side by side with its peers and print ratios.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Workload to run.
    #[arg(value_enum, default_value_t = Workload::All)]
    pub workload: Workload,
    /// Fewer pairs (3) and less work per trial: well under two minutes.
    #[arg(long)]
    pub quick: bool,
    /// Also write every number, with its unit, and the machine description
    /// to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Backend of our port: auto, io_uring or epoll (the peers stay the
    /// same). `auto` honours CPORT_BACKEND.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: Backend,
    /// Pairs of trials per workload [default: 5, 3 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pairs: Option<u32>,
    /// Do not pin threads to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Directory on the filesystem the `file` workload tests: its data file
    /// goes in a temporary directory created inside it [default: the
    /// system temporary directory]. fio is looked up on PATH, or taken from
    /// the CPORT_BENCH_FIO environment variable.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Multiply the work per trial (for tests); also read from the
    /// CPORT_BENCH_SCALE environment variable.
    #[arg(long, hide = true, value_parser = parse_scale)]
    pub scale: Option<f64>,
    /// Internal: run as the `scale` workload's load-generator process
    /// (ADDR,CONNECTIONS,SIZE,MILLISECONDS,CPU|-), talking on stdin/stdout.
    #[arg(long, hide = true, value_name = "SPEC")]
    pub loadgen_child: Option<String>,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse::<Backend>().map_err(|e| e.to_string())
}

fn parse_scale(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("scale {s:?} is not a number"))?;
    if v.is_finite() && v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!(
            "scale {s:?} is out of range (greater than 0, at most 100)"
        ))
    }
}

/// Name of the environment variable that shrinks (or grows) the work.
const SCALE_ENV: &str = "CPORT_BENCH_SCALE";

/// A trial that has not finished after this long is reported as stuck (a
/// lost packet would otherwise hang the benchmark).
const TRIAL_LIMIT: Duration = Duration::from_secs(120);

/// What every workload needs to know about this run.
pub(crate) struct Settings {
    pub quick: bool,
    pub scale: f64,
    pub pairs: usize,
    /// Backend asked for on the command line.
    pub backend: Backend,
    /// CPUs this process may run on; threads are pinned to them by slot.
    pub cpus: Vec<usize>,
    pub pin: bool,
    /// Where the `file` workload puts its data file (`--dir`).
    pub dir: Option<PathBuf>,
}

impl Settings {
    /// Work per trial: `normal` (or `quick`) scaled, at least `min`, rounded
    /// up to a multiple of `multiple`.
    pub fn work(&self, normal: u64, quick: u64, min: u64, multiple: u64) -> u64 {
        let base = if self.quick { quick } else { normal };
        let n = ((base as f64) * self.scale).round() as u64;
        let n = n.max(min).max(1);
        n.div_ceil(multiple) * multiple
    }

    /// The CPU that pin slot `slot` maps to, when pinning.
    pub fn cpu_for(&self, slot: usize) -> Option<usize> {
        if !self.pin || self.cpus.is_empty() {
            return None;
        }
        Some(self.cpus[slot % self.cpus.len()])
    }

    /// A port with this run's backend.
    pub fn port<C: Send + 'static>(&self, concurrency: usize) -> io::Result<Port<C>> {
        open_port(self.backend, concurrency)
    }
}

/// A port for a trial: 256 ring entries, the given backend.
pub(crate) fn open_port<C: Send + 'static>(
    backend: Backend,
    concurrency: usize,
) -> io::Result<Port<C>> {
    Port::builder()
        .concurrency(concurrency)
        .entries(256)
        .backend(backend)
        .build()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open a port (backend {backend}): {e}"),
            )
        })
}

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
        let usage = usage();
        let cpu = process_cpu_time();
        Meter {
            usage,
            cpu,
            t: Instant::now(),
        }
    }

    pub fn stop(self, ops: u64) -> Sample {
        let wall = self.t.elapsed();
        let cpu = process_cpu_time().saturating_sub(self.cpu);
        let u = usage();
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

/// CPU time used by every thread of this process so far.
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a
    // constant every Linux kernel knows.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Kernel CPU time and context switches of the whole process (live and
/// exited threads).
struct Usage {
    sys: Duration,
    csw: u64,
}

fn usage() -> Usage {
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable; RUSAGE_SELF is always accepted.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
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

/// CPUs in the calling thread's affinity mask, ascending.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the kernel writes at most
    // `size_of::<cpu_set_t>()` bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to one CPU.
fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to be below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the
    // size given.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu` when given. Pinning was checked to work
/// before the trials, so a failure here only loses the pinning.
pub(crate) fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let _ = pin_current_thread(cpu);
    }
}

/// Spawns a named benchmark thread, pinned to `cpu`.
pub(crate) fn spawn_pinned<T: Send + 'static>(
    name: String,
    cpu: Option<usize>,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<thread::JoinHandle<T>> {
    thread::Builder::new().name(name).spawn(move || {
        pin(cpu);
        f()
    })
}

/// Waits for `n` results on `rx`, failing if the trial is stuck.
pub(crate) fn collect<T>(
    rx: &mpsc::Receiver<io::Result<T>>,
    n: usize,
    what: &str,
) -> io::Result<Vec<T>> {
    collect_ticking(rx, n, what, TRIAL_LIMIT, &mut || {})
}

/// Like [`collect`], calling `tick` about every `every` while waiting.
pub(crate) fn collect_ticking<T>(
    rx: &mpsc::Receiver<io::Result<T>>,
    n: usize,
    what: &str,
    every: Duration,
    tick: &mut dyn FnMut(),
) -> io::Result<Vec<T>> {
    let deadline = Instant::now() + TRIAL_LIMIT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        match rx.recv_timeout(left.min(every)) {
            Ok(r) => out.push(r?),
            Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => tick(),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                    "{what}: trial did not finish within {} s (a lost packet or a lost wake-up?)",
                    TRIAL_LIMIT.as_secs()
                ),
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other(format!(
                    "{what}: a benchmark thread died (panicked) before reporting"
                )))
            }
        }
    }
    Ok(out)
}

/// Joins benchmark threads, turning a panic into an error.
pub(crate) fn join_all<T>(handles: Vec<thread::JoinHandle<T>>, what: &str) -> io::Result<Vec<T>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| io::Error::other(format!("{what}: a benchmark thread panicked")))
        })
        .collect()
}

/// Runs `f` on one thread pinned to `cpu`, with the stuck-trial limit.
pub(crate) fn run_on_thread<T: Send + 'static>(
    what: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_pinned(format!("bench-{what}"), cpu, move || {
        let _ = tx.send(f());
    })?;
    let mut r = collect(&rx, 1, what)?;
    join_all(vec![h], what)?;
    Ok(r.pop().expect("one result collected"))
}

/// One side of a comparison.
pub(crate) struct Side {
    /// What ran, e.g. "completion-port (io_uring)" or "crossbeam-channel".
    pub name: String,
    pub samples: Vec<Sample>,
    /// The warm-up trial (not in the medians; its stalls are reported).
    pub warmup: Option<Sample>,
}

/// What a row's ratio compares, and which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RatioKind {
    /// ours/peer of the rates: higher is better, the target is a minimum.
    Rate,
    /// ours/peer of the median latency: lower is better, the target is a
    /// maximum.
    P50,
    /// ours/peer of the 99th-percentile latency: lower is better, the
    /// target is a maximum.
    P99,
}

impl RatioKind {
    pub fn higher_is_better(self) -> bool {
        self == RatioKind::Rate
    }
    /// Short description for the table and the JSON.
    pub fn describe(self) -> &'static str {
        match self {
            RatioKind::Rate => "ops/s, higher is better",
            RatioKind::P50 => "p50 latency, lower is better",
            RatioKind::P99 => "p99 latency, lower is better",
        }
    }
}

/// A named number of a row beyond the standard columns (e.g. memory).
pub(crate) struct Extra {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
}

/// The results of one workload.
pub(crate) struct Row {
    /// Stable identifier, e.g. `queue`, `nop_batch_32`.
    pub id: &'static str,
    /// Label in the table, e.g. "nop batch 32".
    pub label: String,
    /// What one trial does.
    pub describe: String,
    /// Operations per trial.
    pub ops_per_trial: u64,
    pub ours: Side,
    pub peer: Side,
    /// The ratio ours/peer this workload should reach: a minimum for
    /// [`RatioKind::Rate`], a maximum for the latency kinds.
    pub target: Option<f64>,
    /// What the ratio compares.
    pub kind: RatioKind,
    /// Why a side has no numbers (e.g. "fio not found"), shown in the row.
    pub note: Option<String>,
    /// Further numbers of the row.
    pub extra: Vec<Extra>,
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Side {
    pub fn rate(&self) -> f64 {
        median(self.samples.iter().map(Sample::ops_per_sec).collect())
    }
    pub fn cpu_ns_per_op(&self) -> f64 {
        median(self.samples.iter().map(Sample::cpu_ns_per_op).collect())
    }
    pub fn csw_per_op(&self) -> f64 {
        median(self.samples.iter().map(Sample::csw_per_op).collect())
    }
    pub fn sys_ns_per_op(&self) -> f64 {
        median(self.samples.iter().map(Sample::sys_ns_per_op).collect())
    }
    /// Median over trials of the latency percentiles (NaN without them).
    pub fn p50_ns(&self) -> f64 {
        median(
            self.samples
                .iter()
                .filter_map(|s| s.lat)
                .map(|l| l.p50_ns)
                .collect(),
        )
    }
    pub fn p99_ns(&self) -> f64 {
        median(
            self.samples
                .iter()
                .filter_map(|s| s.lat)
                .map(|l| l.p99_ns)
                .collect(),
        )
    }
    /// Median resident memory per connection (NaN when not measured).
    pub fn rss_per_conn(&self) -> f64 {
        median(self.samples.iter().filter_map(|s| s.rss_per_conn).collect())
    }
    /// Stalls over all trials, the warm-up included.
    pub fn stalls(&self) -> u64 {
        self.samples
            .iter()
            .chain(&self.warmup)
            .map(|s| s.stalls)
            .sum()
    }
}

impl Row {
    /// Per-pair ratios ours/peer of what the row compares (see `kind`).
    pub fn ratios(&self) -> Vec<f64> {
        let kind = self.kind;
        self.ours
            .samples
            .iter()
            .zip(&self.peer.samples)
            .filter_map(|(o, p)| match kind {
                RatioKind::Rate => Some(o.ops_per_sec() / p.ops_per_sec().max(1e-9)),
                RatioKind::P50 => Some(o.lat?.p50_ns / p.lat?.p50_ns.max(1.0)),
                RatioKind::P99 => Some(o.lat?.p99_ns / p.lat?.p99_ns.max(1.0)),
            })
            .collect()
    }
    pub fn ratio(&self) -> f64 {
        median(self.ratios())
    }
    /// Whether the target was reached (`None`: no target, or no ratio).
    pub fn target_met(&self) -> Option<bool> {
        let r = self.ratio();
        if !r.is_finite() {
            return None;
        }
        self.target.map(|t| {
            if self.kind.higher_is_better() {
                r >= t
            } else {
                r <= t
            }
        })
    }
}

/// A workload, as the trial loop sees it: one trial of each side.
pub(crate) trait Contest {
    /// Label in the progress lines.
    fn label(&self) -> String;
    fn ours(&mut self, ops: u64) -> io::Result<Sample>;
    fn peer(&mut self, ops: u64) -> io::Result<Sample>;
}

/// Runs a warm-up of each side (a tenth of the work, not recorded), then
/// `pairs` interleaved pairs of trials.
pub(crate) fn run_pairs(
    s: &Settings,
    c: &mut dyn Contest,
    ops: u64,
    warmup_ops: u64,
    names: (String, String),
) -> io::Result<(Side, Side)> {
    let label = c.label();
    let ours_warmup = c.ours(warmup_ops)?;
    let peer_warmup = c.peer(warmup_ops)?;
    let mut ours = Vec::with_capacity(s.pairs);
    let mut peer = Vec::with_capacity(s.pairs);
    let lat = |x: &Sample| match x.lat {
        Some(l) => format!(
            ", p50 {} p99 {}",
            report::fmt_ns(l.p50_ns),
            report::fmt_ns(l.p99_ns)
        ),
        None => String::new(),
    };
    for i in 0..s.pairs {
        let o = c.ours(ops)?;
        let p = c.peer(ops)?;
        eprintln!(
            "  {label}: pair {}/{}: ours {} ({:.0} ns CPU/op{}), peer {} ({:.0} ns CPU/op{}), rate ratio {:.2}",
            i + 1,
            s.pairs,
            report::fmt_rate(o.ops_per_sec()),
            o.cpu_ns_per_op(),
            lat(&o),
            report::fmt_rate(p.ops_per_sec()),
            p.cpu_ns_per_op(),
            lat(&p),
            o.ops_per_sec() / p.ops_per_sec().max(1e-9),
        );
        ours.push(o);
        peer.push(p);
    }
    Ok((
        Side {
            name: names.0,
            samples: ours,
            warmup: Some(ours_warmup),
        },
        Side {
            name: names.1,
            samples: peer,
            warmup: Some(peer_warmup),
        },
    ))
}

fn settings(a: &Args) -> io::Result<Settings> {
    let scale = match a.scale {
        Some(s) => s,
        None => match std::env::var(SCALE_ENV) {
            Ok(v) => parse_scale(&v).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{SCALE_ENV}: {e}"))
            })?,
            Err(std::env::VarError::NotPresent) => 1.0,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{SCALE_ENV} is not valid UTF-8"),
                ))
            }
        },
    };
    let pairs = a
        .pairs
        .map(|p| p as usize)
        .unwrap_or(if a.quick { 3 } else { 5 });
    let cpus = allowed_cpus();
    let mut pin = !a.no_pin && !cpus.is_empty();
    if pin {
        // Check once that pinning works here (a container may forbid it).
        let probe_cpu = cpus[0];
        let ok = thread::spawn(move || pin_current_thread(probe_cpu))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("probe thread panicked")));
        if let Err(e) = ok {
            eprintln!("cport bench: cannot pin threads to CPUs ({e}); running unpinned");
            pin = false;
        }
    }
    Ok(Settings {
        quick: a.quick,
        scale,
        pairs,
        backend: a.backend,
        cpus,
        pin,
        dir: a.dir.clone(),
    })
}

/// `cport bench`.
pub fn run(a: Args) -> io::Result<()> {
    if let Some(spec) = &a.loadgen_child {
        return echo::loadgen_child(spec);
    }
    let s = settings(&a)?;
    // Fail before minutes of work if the JSON file cannot be written.
    let json_file = match &a.json {
        Some(path) => Some((
            path.clone(),
            File::create(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
            })?,
        )),
        None => None,
    };
    // Open a port once: an unusable backend fails here, with its reason.
    let backend = s.port::<()>(1)?.backend();
    let machine = report::Machine::describe(&s);
    eprintln!(
        "cport bench: {} pairs per workload{}, backend {backend}, {} {}, {}",
        s.pairs,
        if s.quick { " (quick)" } else { "" },
        machine.cpu_model,
        machine.describe_cpus(),
        if s.pin {
            "threads pinned"
        } else {
            "threads not pinned"
        },
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    if matches!(a.workload, Workload::Queue | Workload::All) {
        rows.push(queue::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Nop | Workload::All) {
        rows.push(nop::run(&s, backend, 1)?);
        rows.push(nop::run(&s, backend, 32)?);
    }
    if matches!(a.workload, Workload::Echo | Workload::All) {
        // Both backends, whatever --backend says: the epoll row is the
        // fallback's own target.
        rows.push(echo::run(&s, Backend::IoUring, echo::Server::RawEpoll)?);
        rows.push(echo::run(&s, Backend::Epoll, echo::Server::RawEpoll)?);
        // Our io_uring backend against the other peers.
        rows.push(echo::run(&s, Backend::IoUring, echo::Server::RawUring)?);
        rows.push(echo::run(&s, Backend::IoUring, echo::Server::Tokio)?);
        rows.push(echo::run(&s, Backend::IoUring, echo::Server::Compio(1))?);
    }
    if matches!(a.workload, Workload::Mixed | Workload::All) {
        rows.push(mixed::run(&s, backend, mixed::Peer::Tokio)?);
        rows.push(mixed::run(&s, backend, mixed::Peer::Compio)?);
    }
    if matches!(a.workload, Workload::Scale | Workload::All) {
        rows.push(scale::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::File | Workload::All) {
        rows.push(file::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Wake | Workload::All) {
        rows.push(wake::run(&s, backend)?);
    }
    if a.workload == Workload::Blocking {
        rows.extend(blocking::run(&s, backend)?);
    }
    let elapsed = started.elapsed();
    let run = report::RunInfo {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        backend,
        elapsed,
        load_after: report::loadavg(),
    };
    report::print_table(&rows, &s, &machine, &run);
    if let Some((path, file)) = json_file {
        report::write_json(file, &path, &rows, &s, &machine, &run)?;
        eprintln!("cport bench: wrote {}", path.display());
    }
    Ok(())
}
