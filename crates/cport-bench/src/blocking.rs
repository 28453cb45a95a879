//! `blocking`: handlers that sometimes block, and what blocked-thread
//! detection buys.
//!
//! Each trial: `n` packets, posted up front by the main thread (contexts
//! 1..=n, then one stop per worker); 4 × CPUs worker threads; each packet's
//! handler does a little CPU work ([`WORK_ROUNDS`] rounds of a hash) and,
//! for 10 % of the packets (chosen by a seeded hash of the context, the same
//! on every side), first blocks for 1 ms in `thread::sleep` — without a
//! blocking scope (`CPORT_BENCH_BLOCK_US` changes the 1 ms). Sides:
//! - a port with concurrency = CPUs and blocking detection **on**;
//! - the same port with detection **off** (a sleeping worker holds its slot);
//! - the peer: a plain pool of as many threads on an unbounded
//!   `crossbeam-channel` (no concurrency limit at all).
//!
//! Two rows (on vs pool, off vs pool); context switches per packet are in
//! the diagnostics line of each. Every trial checks the count and the sum
//! of the contexts (each packet handled exactly once).
//!
//! Before the rows, three measurements of the monitor itself (printed):
//! - **detection delay**, end to end: concurrency 1, two workers; the one
//!   holding the slot posts a probe packet and blocks on a pipe `read`; the
//!   delay runs from just before the `read` to the other worker receiving
//!   the probe (p50/p99 over the rounds);
//! - **monitor CPU when idle**: workers parked in `get`, for 1 s;
//! - **monitor CPU under load**: 2 posters, 2 waiters, concurrency 2, as
//!   fast as they go for 1 s, with detection on and off (packets/s of
//!   each), the monitor's CPU read from `/proc/self/task/<tid>/schedstat`.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use completion_port::{Backend, Port};

use super::{
    check_contexts, collect, join_all, spawn_pinned, Contest, Meter, Row, Sample, Settings,
};

/// Rounds of CPU work in every handler (a few µs).
const WORK_ROUNDS: u32 = 2_000;
/// How long a blocking handler sleeps: 1 ms, or the environment variable
/// `CPORT_BENCH_BLOCK_US` (µs), to see where detection starts to pay.
fn block() -> Duration {
    static BLOCK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *BLOCK.get_or_init(|| {
        let us = std::env::var("CPORT_BENCH_BLOCK_US")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us <= 1_000_000)
            .unwrap_or(1000);
        Duration::from_micros(us)
    })
}
/// Seed of the choice of blocking packets.
const SEED: u64 = 0x00b1_0c4e_d5ee_d001;
const STOP: u64 = 0;

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The handler of packet `ctx`: blocks 1 ms for 10 % of the packets, then
/// a little CPU work. Returns a value so the work is not optimised away.
fn handle(ctx: u64) -> u64 {
    if mix(ctx ^ SEED) % 10 == 0 {
        thread::sleep(block());
    }
    let mut h = ctx;
    for _ in 0..WORK_ROUNDS {
        h = mix(h);
    }
    h
}

#[derive(Default)]
struct Tally {
    count: u64,
    sum: u64,
    sink: u64,
}

fn check(what: &str, n: u64, tallies: &[Tally]) -> io::Result<u64> {
    let count = check_contexts(n, tallies.iter().map(|t| (t.count, t.sum)))
        .map_err(|m| io::Error::other(format!("{what}: handled {m}")))?;
    std::hint::black_box(tallies.iter().fold(0u64, |a, t| a.wrapping_add(t.sink)));
    Ok(count)
}

fn cpus(s: &Settings) -> usize {
    s.cpus.len().max(1)
}

fn port(s: &Settings, concurrency: usize, detect: bool) -> io::Result<Port<u64>> {
    Port::builder()
        .concurrency(concurrency)
        .entries(256)
        .backend(s.backend)
        .blocking_detection(detect)
        .build()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open a port (backend {}): {e}", s.backend),
            )
        })
}

struct Blocking<'a> {
    s: &'a Settings,
    detect: bool,
}

impl Contest for Blocking<'_> {
    fn label(&self) -> String {
        format!("blocking (detection {})", on_off(self.detect))
    }

    fn ours(&mut self, n: u64) -> io::Result<Sample> {
        let what = self.label();
        let workers = 4 * cpus(self.s);
        let port = port(self.s, cpus(self.s), self.detect)?;
        let (tx, rx) = mpsc::channel::<io::Result<Tally>>();
        let m = Meter::start();
        let mut hs = Vec::new();
        for i in 0..workers {
            let (port, tx) = (port.clone(), tx.clone());
            hs.push(spawn_pinned(
                format!("b-ours-{i}"),
                self.s.cpu_for(i),
                move || {
                    let r = (|| {
                        let mut t = Tally::default();
                        loop {
                            let p = port.get(None).map_err(io::Error::from)?;
                            if p.context == STOP {
                                return Ok(t);
                            }
                            t.sink = t.sink.wrapping_add(handle(p.context));
                            t.count += 1;
                            t.sum = t.sum.wrapping_add(p.context);
                        }
                    })();
                    if r.is_err() {
                        port.close();
                    }
                    let _ = tx.send(r);
                },
            )?);
        }
        drop(tx);
        for ctx in 1..=n {
            port.post(1, 0, ctx)?;
        }
        for _ in 0..workers {
            port.post(0, 0, STOP)?;
        }
        let tallies = collect(&rx, workers, &what)?;
        let mut sample = m.stop(0);
        join_all(hs, &what)?;
        sample.ops = check(&what, n, &tallies)?;
        Ok(sample)
    }

    fn peer(&mut self, n: u64) -> io::Result<Sample> {
        let what = "blocking (thread pool)";
        let workers = 4 * cpus(self.s);
        let (ctx_tx, ctx_rx) = crossbeam_channel::unbounded::<u64>();
        let (tx, rx) = mpsc::channel::<io::Result<Tally>>();
        let m = Meter::start();
        let mut hs = Vec::new();
        for i in 0..workers {
            let (chan, tx) = (ctx_rx.clone(), tx.clone());
            hs.push(spawn_pinned(
                format!("b-pool-{i}"),
                self.s.cpu_for(i),
                move || {
                    let mut t = Tally::default();
                    let r = loop {
                        match chan.recv() {
                            Ok(STOP) => break Ok(t),
                            Ok(ctx) => {
                                t.sink = t.sink.wrapping_add(handle(ctx));
                                t.count += 1;
                                t.sum = t.sum.wrapping_add(ctx);
                            }
                            Err(_) => break Err(io::Error::other("pool channel closed")),
                        }
                    };
                    let _ = tx.send(r);
                },
            )?);
        }
        drop((tx, ctx_rx));
        let dead = || io::Error::other("blocking (pool): every worker is gone");
        for ctx in 1..=n {
            ctx_tx.send(ctx).map_err(|_| dead())?;
        }
        for _ in 0..workers {
            ctx_tx.send(STOP).map_err(|_| dead())?;
        }
        let tallies = collect(&rx, workers, what)?;
        let mut sample = m.stop(0);
        join_all(hs, what)?;
        sample.ops = check(what, n, &tallies)?;
        Ok(sample)
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The monitor thread's CPU time so far (ns), from its schedstat.
fn monitor_cpu_ns() -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = e.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "cport-monitor" {
            let st = std::fs::read_to_string(dir.join("schedstat")).ok()?;
            return st.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// End-to-end detection delay (see the module docs), in µs.
fn detection_delays(s: &Settings, rounds: usize) -> io::Result<Vec<f64>> {
    const BLOCKER: usize = 1;
    const PROBE: usize = 2;
    let port = port(s, 1, true)?;
    let (read_end, mut write_end) = UnixStream::pair()?;
    let read_end = Arc::new(read_end);
    let epoch = Instant::now();
    let blocked_at = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<io::Result<f64>>();
    let mut hs = Vec::new();
    for i in 0..2 {
        let (port, tx, read_end, blocked_at) = (
            port.clone(),
            tx.clone(),
            read_end.clone(),
            blocked_at.clone(),
        );
        hs.push(spawn_pinned(
            format!("b-delay-{i}"),
            s.cpu_for(i),
            move || loop {
                let p = match port.get(None) {
                    Ok(p) => p,
                    Err(_) => return,
                };
                match p.key {
                    BLOCKER => {
                        blocked_at.store(epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
                        // Counted, concurrency 1: the probe stays queued
                        // until this thread is seen blocked.
                        if port.post(PROBE, 0, 0).is_err() {
                            return;
                        }
                        let mut b = [0u8; 1];
                        if (&*read_end).read_exact(&mut b).is_err() {
                            return;
                        }
                    }
                    PROBE => {
                        let now = epoch.elapsed().as_nanos() as u64;
                        let t0 = blocked_at.load(Ordering::SeqCst);
                        let _ = tx.send(Ok(now.saturating_sub(t0) as f64 / 1000.0));
                    }
                    _ => return,
                }
            },
        )?);
    }
    drop(tx);
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        port.post(BLOCKER, 0, 0)?;
        out.extend(collect(&rx, 1, "blocking (detection delay)")?);
        std::io::Write::write_all(&mut write_end, b"x")?;
        // Let the blocked worker resume and ask again.
        thread::sleep(Duration::from_millis(5));
    }
    port.close();
    join_all(hs, "blocking (detection delay)")?;
    Ok(out)
}

/// Monitor CPU while `workers` threads wait in `get` on a detecting port
/// (after each handled one packet), over `dur`: (monitor ns, wall ns).
fn monitor_idle(s: &Settings, dur: Duration) -> io::Result<(u64, u64)> {
    let port = port(s, cpus(s), true)?;
    let mut hs = Vec::new();
    for i in 0..4 {
        let port = port.clone();
        hs.push(spawn_pinned(
            format!("b-idle-{i}"),
            s.cpu_for(i),
            move || {
                while port.get(None).is_ok() {}
            },
        )?);
    }
    for _ in 0..4 {
        port.post(1, 0, 1)?;
    }
    let t = Instant::now();
    while port.stats().dequeued < 4 || port.stats().running > 0 {
        if t.elapsed() > Duration::from_secs(10) {
            return Err(io::Error::other("blocking (idle): workers did not settle"));
        }
        thread::sleep(Duration::from_millis(1));
    }
    // Let the monitor notice and park.
    thread::sleep(Duration::from_millis(20));
    let c0 = monitor_cpu_ns().unwrap_or(0);
    let t0 = Instant::now();
    thread::sleep(dur);
    let used = monitor_cpu_ns().unwrap_or(0).saturating_sub(c0);
    let wall = t0.elapsed().as_nanos() as u64;
    port.close();
    join_all(hs, "blocking (idle)")?;
    Ok((used, wall))
}

/// 2 posters, 2 waiters, concurrency 2, for `dur`: (packets/s, monitor
/// ns, wall ns).
fn monitor_load(s: &Settings, detect: bool, dur: Duration) -> io::Result<(f64, u64, u64)> {
    let port = port(s, 2, detect)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for i in 0..2 {
        let port = port.clone();
        hs.push(spawn_pinned(
            format!("b-load-get{i}"),
            s.cpu_for(i),
            move || {
                while port.get(None).is_ok() {}
            },
        )?);
    }
    let mut posters = Vec::new();
    for i in 0..2 {
        let (port, stop) = (port.clone(), stop.clone());
        posters.push(spawn_pinned(
            format!("b-load-post{i}"),
            s.cpu_for(i),
            move || {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        if port.post(1, 0, 1).is_err() {
                            return;
                        }
                    }
                    // Keep the queue short: the waiters set the pace.
                    while port.stats().queued > 4096 && !stop.load(Ordering::Relaxed) {
                        thread::yield_now();
                    }
                }
            },
        )?);
    }
    thread::sleep(Duration::from_millis(100));
    let d0 = port.stats().dequeued;
    let c0 = monitor_cpu_ns().unwrap_or(0);
    let t0 = Instant::now();
    thread::sleep(dur);
    let d1 = port.stats().dequeued;
    let used = monitor_cpu_ns().unwrap_or(0).saturating_sub(c0);
    let wall = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    join_all(posters, "blocking (load)")?;
    port.close();
    join_all(hs, "blocking (load)")?;
    Ok((
        (d1 - d0) as f64 / wall.as_secs_f64(),
        used,
        wall.as_nanos() as u64,
    ))
}

/// Runs the `blocking` workload: the monitor measurements, then two rows.
pub(crate) fn run(s: &Settings, backend: Backend) -> io::Result<Vec<Row>> {
    let rounds = if s.quick { 30 } else { 200 };
    let mut d = detection_delays(s, rounds)?;
    let (p50, p99, max) = (
        percentile(&mut d, 0.5),
        percentile(&mut d, 0.99),
        percentile(&mut d, 1.0),
    );
    let dur = Duration::from_millis(if s.quick { 300 } else { 1000 });
    let (idle_ns, idle_wall) = monitor_idle(s, dur)?;
    let (rate_on, load_ns, load_wall) = monitor_load(s, true, dur)?;
    let (rate_off, _, _) = monitor_load(s, false, dur)?;
    let pct = |ns: u64, wall: u64| 100.0 * ns as f64 / wall.max(1) as f64;
    println!(
        "blocking: detection delay (blocked → other worker has the packet), {rounds} rounds: p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs"
    );
    println!(
        "blocking: monitor CPU with 4 workers idle in get: {} µs in {:.1} s ({:.3} % of one CPU)",
        idle_ns / 1000,
        idle_wall as f64 / 1e9,
        pct(idle_ns, idle_wall)
    );
    println!(
        "blocking: 2 posters + 2 waiters (concurrency 2): detection on {:.2} M packets/s, monitor CPU {:.2} % of one CPU ({:.1} ns per packet); detection off {:.2} M packets/s",
        rate_on / 1e6,
        pct(load_ns, load_wall),
        load_ns as f64 / (rate_on * load_wall as f64 / 1e9).max(1.0),
        rate_off / 1e6,
    );

    let ops = s.work(20_000, 4_000, 200, 1);
    let warmup = (ops / 10).max(1);
    let workers = 4 * cpus(s);
    eprintln!(
        "blocking: {ops} packets per trial, {workers} workers, concurrency {} (10 % of handlers sleep {} µs)",
        cpus(s),
        block().as_micros()
    );
    let mut rows = Vec::new();
    for detect in [true, false] {
        let names = (
            format!("completion-port ({backend}) detection {}", on_off(detect)),
            format!("thread pool ({workers} threads, crossbeam-channel)"),
        );
        let (ours, peer) = super::run_pairs(s, &mut Blocking { s, detect }, ops, warmup, names)?;
        rows.push(Row {
            id: if detect { "blocking_on" } else { "blocking_off" },
            label: format!(
                "blocking {} µs, detection {}",
                block().as_micros(),
                on_off(detect)
            ),
            describe: format!(
                "{ops} packets per trial, posted up front; {workers} workers; port concurrency {}; each handler does {WORK_ROUNDS} hash rounds, and 10 % (seeded) first sleep {} µs without a blocking scope; peer: {workers}-thread pool on a crossbeam channel",
                cpus(s),
                block().as_micros()
            ),
            ops_per_trial: ops,
            ours,
            peer,
            target: None,
            kind: super::RatioKind::Rate,
            note: None,
            extra: Vec::new(),
        });
    }
    Ok(rows)
}
