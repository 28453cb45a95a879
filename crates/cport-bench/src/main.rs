//! `cport-bench`: the port side by side with its peers, in one run (also
//! reachable as `cport bench …`, which hands its arguments to this
//! program).
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
//! `mixed.rs`, `handlers.rs`, `scale.rs`, `pooled.rs`, `file.rs`, `wake.rs`,
//! `timers.rs`, `sends.rs`, `blocking.rs`; `yardstick.rs` checks the raw echo peers against each
//! other); this file
//! holds the command line, the run's settings and the dispatch to the
//! workloads. `trial.rs` holds the trial loop and the rows it makes,
//! `meter.rs` the meters and samples, `threads.rs` thread pinning and the
//! stuck-trial limit, and `report.rs` prints the table and writes the JSON.
//! Latency rows record every hand-off or request in an `hdrhistogram` and
//! compare percentiles (lower is better there: see [`RatioKind`]).

mod blocking;
mod echo;
mod file;
mod handlers;
mod http;
mod loadgen;
mod meter;
mod mixed;
mod nop;
mod pooled;
mod queue;
mod report;
mod scale;
mod sends;
mod threads;
mod timers;
mod trial;
mod wake;
mod yardstick;

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::Instant;

use completion_port::{Backend, Port};

pub(crate) use meter::{
    library_threads_use, ns_histogram, thread_use, Lat, Meter, Sample, ThreadUse,
};
pub(crate) use threads::{collect, collect_ticking, join_all, pin, run_on_thread, spawn_pinned};
pub(crate) use trial::{check_contexts, median, run_pairs, Contest, Extra, RatioKind, Row, Side};

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
    /// Pooled receives (`recv_pooled`, one pool for all connections)
    /// against a buffer per connection: echo at 50 connections (server CPU
    /// per request) and at 10 000 (throughput and memory per connection).
    Pooled,
    /// 4 KiB O_DIRECT random reads at queue depth 32 on a 1 GiB file (256
    /// MiB with --quick) against fio's io_uring engine on the same file.
    File,
    /// post→wake latency of a parked waiter against a Mutex+Condvar
    /// hand-off of the same shape (p50/p99; lower is better).
    Wake,
    /// 100 000 pending timers (`post_after`) armed and expired by one
    /// thread against tokio's timer wheel: CPU per timer and lateness.
    Timers,
    /// Large `send_all`s (256 KiB, 1 MiB) over one loopback TCP connection
    /// to a draining reader: zero-copy sends on (`SEND_ZC`) against off;
    /// process and sender CPU per send.
    Sends,
    /// Handlers that block 1 ms in 10 % of packets: a port with blocking
    /// detection on and off against a plain thread pool; plus the
    /// monitor's detection delay and CPU cost. Not part of `all`.
    Blocking,
    /// The echo where 10 % of requests make the handler block 1 ms (a
    /// synchronous call): ours (concurrency = CPUs, blocked-thread
    /// detection, a pool of 8 workers per CPU) against tokio (blocking
    /// inline, and with spawn_blocking) and compio, nothing pinned;
    /// throughput and p99 latency.
    Handlers,
    /// Static files over HTTP/1.1 keep-alive, `wrk -t1 -c100`, 4 KiB and
    /// 1 MiB: the crate's example `http_server` against the same server
    /// for tokio and against nginx (1 worker, sendfile; with and without
    /// open_file_cache); server CPU per request. Needs wrk (and nginx):
    /// `crates/cport-bench/setup.sh`.
    Http,
    /// Every workload but `blocking`.
    All,
}

/// Benchmark the port side by side with its peers and print ratios.
///
/// Workloads: queue, nop, echo (vs raw epoll, raw io_uring, tokio,
/// compio), mixed (heavy-tailed CPU per request: throughput and p50/p99
/// latency vs tokio and compio), handlers (10 % of handlers block 1 ms:
/// throughput and p99 vs tokio and compio), scale (10 000 vs 50
/// connections, memory per connection), pooled (recv_pooled against a
/// buffer per connection: CPU per request, memory per connection), file (O_DIRECT random reads vs
/// fio), wake (post→wake latency vs Mutex+Condvar), timers (100 000
/// pending timers vs tokio), sends (large sends, zero-copy on vs off),
/// http (static files with wrk vs tokio and nginx), all; and blocking (the monitor's detection delay and cost; not
/// part of all).
#[derive(clap::Parser, Debug)]
#[command(
    name = "cport-bench",
    version,
    about,
    after_help = "Examples:
  cport-bench all --quick                        every workload in well under 2 minutes
  cport-bench echo --json echo.json              echo vs raw epoll, raw io_uring, tokio, compio; JSON with units
  cport-bench file --dir /mnt/nvme               O_DIRECT reads on that filesystem vs fio (needs fio on PATH)
  cport-bench http --pairs 9                     HTTP files with wrk vs tokio and nginx (crates/cport-bench/setup.sh installs them)"
)]
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
    /// Buffers of the pool of the `pooled` rows [default: 256 for
    /// `echo_pooled`, 4096 for `scale_pooled`].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=32768))]
    pub pool_buffers: Option<u64>,
    /// Build our ports with blocked-thread detection off (to measure what
    /// detection costs; `blocking` compares on and off itself).
    #[arg(long)]
    pub no_detection: bool,
    /// Multiply the work per trial (for tests); also read from the
    /// CPORT_BENCH_SCALE environment variable.
    #[arg(long, hide = true, value_parser = parse_scale)]
    pub scale: Option<f64>,
    /// Internal: run as the `scale` workload's load-generator process
    /// (ADDR,CONNECTIONS,SIZE,MILLISECONDS,CPU|-), talking on stdin/stdout.
    #[arg(long, hide = true, value_name = "SPEC")]
    pub loadgen_child: Option<String>,
    /// Internal: run one echo server on its own until stdin ends
    /// (SERVER,ADDR,CPU|-), to be driven from outside.
    #[arg(long, hide = true, value_name = "SPEC")]
    pub serve: Option<String>,
    /// The tokio server the `http` rows compare with: tokio-sendfile
    /// (default), tokio-read or tokio-fs (see `http_serve.rs`).
    #[arg(long, default_value = "tokio-sendfile", value_parser = parse_tokio)]
    pub http_tokio: &'static str,
    /// Internal: run one `http` server on 127.0.0.1 (KIND,DIR,CPU|-; KIND
    /// ours, ours-open, ours-sendfile, tokio-sendfile, tokio-read,
    /// tokio-fs) until SIGTERM; it prints `listening on http://ADDR …`.
    #[arg(long, hide = true, value_name = "SPEC")]
    pub http_serve: Option<String>,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse::<Backend>().map_err(|e| e.to_string())
}

fn parse_tokio(s: &str) -> Result<&'static str, String> {
    http::KINDS
        .iter()
        .find(|k| k.starts_with("tokio") && **k == s)
        .copied()
        .ok_or_else(|| format!("{s:?} is not one of tokio-sendfile, tokio-read, tokio-fs"))
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
/// `--no-detection`: our ports are built with blocked-thread detection off.
static NO_DETECTION: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether our ports detect blocked threads in this run.
pub(crate) fn detection() -> bool {
    !NO_DETECTION.load(std::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn open_port<C: Send + 'static>(
    backend: Backend,
    concurrency: usize,
) -> io::Result<Port<C>> {
    Port::builder()
        .concurrency(concurrency)
        .entries(256)
        .backend(backend)
        .blocking_detection(detection())
        .build()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open a port (backend {backend}): {e}"),
            )
        })
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
    let cpus = threads::allowed_cpus();
    let mut pin = !a.no_pin && !cpus.is_empty();
    if pin {
        // Check once that pinning works here (a container may forbid it).
        let probe_cpu = cpus[0];
        let ok = thread::spawn(move || threads::pin_current_thread(probe_cpu))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("probe thread panicked")));
        if let Err(e) = ok {
            eprintln!("cport-bench: cannot pin threads to CPUs ({e}); running unpinned");
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

fn main() {
    let args = <Args as clap::Parser>::parse();
    if let Err(e) = run(args) {
        eprintln!("cport-bench: {e}");
        std::process::exit(1);
    }
}

/// Runs the workloads `a` asks for and prints (and writes) the results.
fn run(a: Args) -> io::Result<()> {
    if let Some(spec) = &a.loadgen_child {
        return echo::loadgen_child(spec);
    }
    if let Some(spec) = &a.serve {
        return echo::serve(spec);
    }
    if let Some(spec) = &a.http_serve {
        return http::serve(spec, a.backend);
    }
    let s = settings(&a)?;
    NO_DETECTION.store(a.no_detection, std::sync::atomic::Ordering::Relaxed);
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
        "cport-bench: {} pairs per workload{}, backend {backend}, {} {}, {}",
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
        // The yardsticks first: the raw loops against each other.
        rows.push(yardstick::run(&s)?);
        // Both backends, whatever --backend says: the epoll row is the
        // fallback's own target.
        rows.push(echo::run(&s, Backend::IoUring, echo::Server::RawEpoll)?);
        rows.push(echo::run(&s, Backend::Epoll, echo::Server::RawEpoll)?);
        // Our io_uring backend against the other peers.
        rows.push(echo::run(&s, Backend::IoUring, echo::RAW_URING)?);
        rows.push(echo::run(&s, Backend::IoUring, echo::TOKIO)?);
        rows.push(echo::run(&s, Backend::IoUring, echo::Server::Compio(1))?);
    }
    if matches!(a.workload, Workload::Mixed | Workload::All) {
        rows.push(mixed::run(&s, backend, mixed::Peer::Tokio)?);
        rows.push(mixed::run(&s, backend, mixed::Peer::Compio)?);
    }
    if matches!(a.workload, Workload::Handlers | Workload::All) {
        rows.extend(handlers::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Scale | Workload::All) {
        rows.extend(scale::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Pooled | Workload::All) {
        rows.extend(pooled::run(
            &s,
            backend,
            a.pool_buffers.map(|n| n as usize),
        )?);
    }
    if matches!(a.workload, Workload::File | Workload::All) {
        rows.push(file::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Wake | Workload::All) {
        rows.push(wake::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Timers | Workload::All) {
        rows.push(timers::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Sends | Workload::All) {
        rows.extend(sends::run(&s, backend)?);
    }
    if matches!(a.workload, Workload::Http | Workload::All) {
        rows.extend(http::run(&s, backend, a.http_tokio)?);
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
        eprintln!("cport-bench: wrote {}", path.display());
    }
    Ok(())
}
