//! `wake`: how long a parked waiter takes to wake up once a packet is
//! posted. One thread (pinned to the second CPU) loops on `port.get` on an
//! empty port (concurrency 1), so it is parked when each packet arrives;
//! another (on the first CPU) waits until the waiter has handled the
//! previous packet, spins 50 µs so the waiter is surely parked again,
//! reads the clock and posts a packet carrying that time. The waiter reads
//! the clock as soon as `get` returns and records the difference in an
//! `hdrhistogram`.
//!
//! The peer is the same shape with a `Mutex<Option<u64>>` and a `Condvar`
//! (std's, futex-based): the poster stores the time and notifies; the
//! waiter waits on the condition variable.
//!
//! The ratio is ours/peer of the median wake-up latency: lower is better.
//! CPU/op includes the poster's spin-waits, so it says little here; the
//! poster's own cost is measured apart: its thread CPU time inside each
//! `post` (or store-and-notify), reported as an extra number of the row.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use completion_port::{Backend, GetError};
use hdrhistogram::Histogram;

use super::{
    join_all, median, ns_histogram, open_port, run_on_thread, run_pairs, spawn_pinned, Contest,
    Extra, Lat, Meter, RatioKind, Row, Sample, Settings,
};

const POSTER_SLOT: usize = 0;
const WAITER_SLOT: usize = 1;
/// Key of the stop packet.
const STOP: usize = usize::MAX;
/// Gap between the waiter's acknowledgement and the next post.
const GAP: Duration = Duration::from_micros(50);
/// How long the poster waits for an acknowledgement before failing.
const ACK_LIMIT: Duration = Duration::from_secs(10);

fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Waits until `ack` reaches `n`.
fn wait_ack(ack: &AtomicU64, n: u64) -> io::Result<()> {
    let limit = Instant::now() + ACK_LIMIT;
    while ack.load(Ordering::Acquire) < n {
        if Instant::now() > limit {
            return Err(io::Error::other(format!(
                "wake: the waiter did not wake within {} s of post {n} (a lost wake-up?)",
                ACK_LIMIT.as_secs()
            )));
        }
        std::hint::spin_loop();
    }
    Ok(())
}

fn ns_since(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// The calling thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A trial's sample and its poster's CPU time per post, in nanoseconds.
type Trial = (Sample, f64);

fn ours(n: u64, backend: Backend, waiter_cpu: Option<usize>) -> io::Result<Trial> {
    let port = open_port::<u64>(backend, 1)?;
    let ack = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let waiter = {
        let port = port.clone();
        let ack = ack.clone();
        spawn_pinned("wake-waiter".into(), waiter_cpu, move || {
            let mut h = ns_histogram()?;
            loop {
                let p = match port.get(Some(Duration::from_secs(60))) {
                    Ok(p) => p,
                    Err(GetError::Closed) => return Ok(h),
                    Err(e) => return Err(io::Error::from(e)),
                };
                if p.key == STOP {
                    return Ok(h);
                }
                let now = ns_since(base);
                h.saturating_record(now.saturating_sub(p.context).max(1));
                ack.fetch_add(1, Ordering::Release);
            }
        })?
    };
    let meter = Meter::start();
    let mut posting = 0;
    let r = (|| -> io::Result<()> {
        for i in 0..n {
            wait_ack(&ack, i)?;
            spin_for(GAP);
            let t = thread_cpu_ns();
            port.post(0, 0, ns_since(base))?;
            posting += thread_cpu_ns() - t;
        }
        wait_ack(&ack, n)
    })();
    let mut sample = meter.stop(n);
    if r.is_err() {
        port.close();
    } else {
        port.post(STOP, 0, 0)?;
    }
    let h: io::Result<Histogram<u64>> = join_all(vec![waiter], "wake")?
        .pop()
        .ok_or_else(|| io::Error::other("wake: no waiter"))?;
    r?;
    let h = h?;
    port.close();
    sample.lat = Some(Lat::of(&h));
    Ok((sample, posting as f64 / n as f64))
}

/// The peer's shared slot: the posted time, or the stop flag.
struct Slot {
    m: Mutex<(Option<u64>, bool)>,
    cv: Condvar,
}

fn condvar(n: u64, waiter_cpu: Option<usize>) -> io::Result<Trial> {
    let slot = Arc::new(Slot {
        m: Mutex::new((None, false)),
        cv: Condvar::new(),
    });
    let ack = Arc::new(AtomicU64::new(0));
    let base = Instant::now();
    let waiter = {
        let slot = slot.clone();
        let ack = ack.clone();
        spawn_pinned("wake-waiter".into(), waiter_cpu, move || {
            let mut h = ns_histogram()?;
            loop {
                let mut g = slot.m.lock().unwrap_or_else(|e| e.into_inner());
                while g.0.is_none() && !g.1 {
                    g = slot.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                let Some(t) = g.0.take() else {
                    return Ok(h);
                };
                drop(g);
                let now = ns_since(base);
                h.saturating_record(now.saturating_sub(t).max(1));
                ack.fetch_add(1, Ordering::Release);
            }
        })?
    };
    let set = |v: (Option<u64>, bool)| {
        *slot.m.lock().unwrap_or_else(|e| e.into_inner()) = v;
        slot.cv.notify_one();
    };
    let meter = Meter::start();
    let mut posting = 0;
    let r = (|| -> io::Result<()> {
        for i in 0..n {
            wait_ack(&ack, i)?;
            spin_for(GAP);
            let t = thread_cpu_ns();
            set((Some(ns_since(base)), false));
            posting += thread_cpu_ns() - t;
        }
        wait_ack(&ack, n)
    })();
    let mut sample = meter.stop(n);
    set((None, true));
    let h: io::Result<Histogram<u64>> = join_all(vec![waiter], "wake")?
        .pop()
        .ok_or_else(|| io::Error::other("wake: no waiter"))?;
    r?;
    sample.lat = Some(Lat::of(&h?));
    Ok((sample, posting as f64 / n as f64))
}

struct Wake<'a> {
    s: &'a Settings,
    backend: Backend,
    /// Poster CPU per post of each trial (warm-ups included): ours, peer.
    posting: (Vec<f64>, Vec<f64>),
}

impl Contest for Wake<'_> {
    fn label(&self) -> String {
        "wake".into()
    }
    fn ours(&mut self, n: u64) -> io::Result<Sample> {
        let (backend, cpu) = (self.backend, self.s.cpu_for(WAITER_SLOT));
        let (sample, posting) = run_on_thread("wake", self.s.cpu_for(POSTER_SLOT), move || {
            ours(n, backend, cpu)
        })?;
        self.posting.0.push(posting);
        Ok(sample)
    }
    fn peer(&mut self, n: u64) -> io::Result<Sample> {
        let cpu = self.s.cpu_for(WAITER_SLOT);
        let (sample, posting) =
            run_on_thread("wake", self.s.cpu_for(POSTER_SLOT), move || condvar(n, cpu))?;
        self.posting.1.push(posting);
        Ok(sample)
    }
}

/// The `wake` row.
pub(super) fn run(s: &Settings, backend: Backend) -> io::Result<Row> {
    let n = s.work(20_000, 3_000, 200, 1);
    let mut c = Wake {
        s,
        backend,
        posting: (Vec::new(), Vec::new()),
    };
    let (ours, peer) = run_pairs(
        s,
        &mut c,
        n,
        (n / 10).max(100),
        (
            format!("completion-port ({backend}) post → get"),
            "Mutex+Condvar".to_string(),
        ),
    )?;
    Ok(Row {
        id: "wake",
        label: "wake: post → parked get".into(),
        describe: format!(
            "{n} hand-offs per trial: a thread parked in port.get (concurrency 1) is woken by a post from a thread \
             on the other CPU, 50 µs after it acknowledged the previous one; latency = post time to get's return; \
             peer: the same with Mutex+Condvar; ratio = p50 ours/peer, lower is better"
        ),
        ops_per_trial: n,
        ours,
        peer,
        target: Some(1.1),
        kind: RatioKind::P50,
        note: None,
        extra: vec![
            Extra {
                name: "poster CPU per post, ours (thread CPU time inside port.post, median of trials)",
                value: median(c.posting.0),
                unit: "ns",
            },
            Extra {
                name: "poster CPU per store-and-notify, peer (median of trials)",
                value: median(c.posting.1),
                unit: "ns",
            },
        ],
    })
}
