//! Measures the candidate mechanisms for blocked-thread detection on this
//! machine (the numbers behind the choice in `src/port/monitor.rs`).
//!
//! `cargo run --release -p completion-port --example probe_blocking`
//!
//! 1. Cost of one look at *another* thread, per mechanism:
//!    - `clock_gettime` on its CPU-time clock (`pthread_getcpuclockid`);
//!    - `/proc/self/task/<tid>/stat` (state field), opened each time, and
//!      kept open and re-read with `pread` at offset 0;
//!    - `/proc/self/task/<tid>/schedstat` kept open, `pread`.
//! 2. Detection delay of a sampler with a given period: a thread spins,
//!    then blocks on a pipe `read`; the delay is from just before the
//!    `read` to the sampler's verdict "blocked". Verdict rules:
//!    - `cpu`: its CPU time did not advance over one whole period;
//!    - `cpu+state`: the same, and then the state field is not `R`
//!      (a preempted thread is runnable: not blocked);
//!    - `state`: the state field is not `R` on two samples in a row.
//! 3. False alarms of each rule on a thread that never blocks but is
//!    preempted (it spins while two more spinners share the CPUs).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

fn cpu_clock_of_current() -> libc::clockid_t {
    let mut id: libc::clockid_t = 0;
    // SAFETY: `pthread_self()` is the calling thread; `id` is writable.
    let r = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    assert_eq!(r, 0);
    id
}

fn clock_ns(id: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let r = unsafe { libc::clock_gettime(id, &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn state_of(f: &File, buf: &mut [u8]) -> u8 {
    let n = f.read_at(buf, 0).unwrap_or(0);
    let s = &buf[..n];
    // The state is the field after the last ')' (the name may contain one).
    match s.iter().rposition(|&b| b == b')') {
        Some(i) if i + 2 < n => s[i + 2],
        _ => b'?',
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A spinning target thread, its tid and CPU clock.
struct Target {
    tid: i32,
    clock: libc::clockid_t,
    stop: Arc<AtomicBool>,
    h: std::thread::JoinHandle<()>,
}

fn spinner() -> Target {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let h = std::thread::spawn(move || {
        tx.send((gettid(), cpu_clock_of_current())).unwrap();
        while !s.load(Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    });
    let (tid, clock) = rx.recv().unwrap();
    Target {
        tid,
        clock,
        stop,
        h,
    }
}

fn cost(name: &str, iters: u32, mut f: impl FnMut()) {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("  {name:<44} {ns:>8.0} ns per look");
}

fn costs() {
    println!("1. cost of one look at another (spinning) thread");
    let t = spinner();
    let n = 20_000;
    cost("clock_gettime(thread CPU clock)", n, || {
        std::hint::black_box(clock_ns(t.clock));
    });
    let path = format!("/proc/self/task/{}/stat", t.tid);
    let mut buf = [0u8; 512];
    cost("/proc/self/task/<tid>/stat, open+read+close", n / 4, || {
        let f = File::open(&path).unwrap();
        std::hint::black_box(state_of(&f, &mut buf));
    });
    let f = File::open(&path).unwrap();
    cost(
        "/proc/self/task/<tid>/stat, kept open, pread",
        n / 4,
        || {
            std::hint::black_box(state_of(&f, &mut buf));
        },
    );
    let fs = File::open(format!("/proc/self/task/{}/schedstat", t.tid)).unwrap();
    cost("/proc/self/task/<tid>/schedstat, kept open", n / 4, || {
        std::hint::black_box(fs.read_at(&mut buf, 0).unwrap());
    });
    t.stop.store(true, Ordering::Relaxed);
    t.h.join().unwrap();
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Rule {
    Cpu,
    CpuState,
    State,
}

/// Detection delays (µs) of `rounds` blocks with sampling period `period`.
fn delays(rule: Rule, period: Duration, rounds: usize) -> (Vec<f64>, u32, f64) {
    let (mut r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    let _ = &mut r;
    let blocked_at = Arc::new(AtomicU64::new(0));
    let go = Arc::new(AtomicI32::new(0));
    let epoch = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let th = {
        let (blocked_at, go) = (blocked_at.clone(), go.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            tx.send((gettid(), cpu_clock_of_current())).unwrap();
            let mut b = [0u8; 1];
            loop {
                // Wait (spinning: stays runnable) for the next round.
                let g = loop {
                    let g = go.load(Ordering::Acquire);
                    if g != 0 {
                        break g;
                    }
                    std::hint::spin_loop();
                };
                if g < 0 {
                    return;
                }
                go.store(0, Ordering::Release);
                // Spin a while, then block.
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(1500) {
                    std::hint::spin_loop();
                }
                blocked_at.store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
                r.read_exact(&mut b).unwrap();
            }
        })
    };
    let (tid, clock) = rx.recv().unwrap();
    let stat = File::open(format!("/proc/self/task/{tid}/stat")).unwrap();
    let mut buf = [0u8; 512];
    let mut out = Vec::new();
    let mut false_alarms = 0;
    let cpu0 = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap();
    let wall0 = Instant::now();
    let mut w = w;
    for _ in 0..rounds {
        blocked_at.store(0, Ordering::Release);
        go.store(1, Ordering::Release);
        let mut last_cpu = clock_ns(clock).unwrap();
        let mut not_r = 0;
        loop {
            std::thread::sleep(period);
            let c = clock_ns(clock).unwrap();
            let verdict = match rule {
                Rule::Cpu => c == last_cpu,
                Rule::CpuState => c == last_cpu && state_of(&stat, &mut buf) != b'R',
                Rule::State => {
                    if state_of(&stat, &mut buf) != b'R' {
                        not_r += 1;
                    } else {
                        not_r = 0;
                    }
                    not_r >= 2
                }
            };
            last_cpu = c;
            if verdict {
                let now = epoch.elapsed().as_nanos() as u64;
                let b = blocked_at.load(Ordering::Acquire);
                if b == 0 {
                    false_alarms += 1;
                    continue;
                }
                out.push((now - b) as f64 / 1000.0);
                break;
            }
        }
        w.write_all(b"x").unwrap();
    }
    let sampler_cpu = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap() - cpu0;
    let sampler_share = sampler_cpu as f64 / wall0.elapsed().as_nanos() as f64;
    go.store(-1, Ordering::Release);
    th.join().unwrap();
    let _ = w.as_raw_fd();
    (out, false_alarms, sampler_share)
}

/// False alarms on a thread that never blocks but is preempted: it spins
/// for `secs` while two more spinners compete for the CPUs.
fn preempted(rule: Rule, period: Duration, secs: f64) -> (u32, u32) {
    let t = spinner();
    let hogs: Vec<Target> = (0..2).map(|_| spinner()).collect();
    let stat = File::open(format!("/proc/self/task/{}/stat", t.tid)).unwrap();
    let mut buf = [0u8; 512];
    let (mut samples, mut alarms, mut not_r) = (0, 0, 0);
    let mut last_cpu = clock_ns(t.clock).unwrap();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        std::thread::sleep(period);
        let c = clock_ns(t.clock).unwrap();
        let verdict = match rule {
            Rule::Cpu => c == last_cpu,
            Rule::CpuState => c == last_cpu && state_of(&stat, &mut buf) != b'R',
            Rule::State => {
                if state_of(&stat, &mut buf) != b'R' {
                    not_r += 1;
                } else {
                    not_r = 0;
                }
                not_r >= 2
            }
        };
        last_cpu = c;
        samples += 1;
        alarms += u32::from(verdict);
    }
    for h in hogs.into_iter().chain([t]) {
        h.stop.store(true, Ordering::Relaxed);
        h.h.join().unwrap();
    }
    (samples, alarms)
}

fn main() {
    costs();
    println!("2. detection delay (block on a pipe read after 1.5 ms of spinning), 200 rounds each");
    for period_us in [500u64, 1000, 2000] {
        for rule in [Rule::Cpu, Rule::CpuState, Rule::State] {
            let (mut d, fa, share) = delays(rule, Duration::from_micros(period_us), 200);
            println!(
                "  period {period_us:>5} µs, rule {:<9}: p50 {:>7.0} µs, p99 {:>7.0} µs, max {:>7.0} µs, false alarms {fa}, sampler CPU {:.2}% of one core",
                format!("{rule:?}"),
                percentile(&mut d, 0.5),
                percentile(&mut d, 0.99),
                percentile(&mut d, 1.0),
                share * 100.0,
            );
        }
    }
    println!("3. false alarms: a spinning thread preempted by 2 other spinners (2 s each)");
    for rule in [Rule::Cpu, Rule::CpuState, Rule::State] {
        let (n, a) = preempted(rule, Duration::from_millis(1), 2.0);
        println!(
            "  period  1000 µs, rule {:<9}: {a} of {n} samples said \"blocked\"",
            format!("{rule:?}")
        );
    }
}
