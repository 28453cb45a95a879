//! `timers`: what 100 000 pending timers cost. One thread (pinned to the
//! first CPU) arms `n` timers whose delays are spread over [`SPREAD`] in a
//! shuffled order, so each one is inserted among many pending, then takes
//! their `n` expirations. Each timer carries its index and its deadline:
//! every index must come back exactly once, and its lateness (the time
//! from its deadline to the moment the thread has it) goes into an
//! `hdrhistogram`.
//!
//! - **ours**: `Port::post_after` (io_uring: one kernel time-out per timer;
//!   epoll: one ordered map per port behind a timerfd) and `Port::get`.
//! - **peer**: tokio (current-thread runtime, its timer wheel), the way
//!   tokio code holds a timer: one task per timer that sleeps until its
//!   deadline and then sends its index on an unbounded channel, which the
//!   thread drains.
//!
//! The ratio is ours/peer of the process CPU per timer (arm, expiry,
//! delivery): lower is better. The wall time is set by `SPREAD`, so the
//! rate says little; lateness percentiles show each timer's precision
//! (tokio's wheel has a 1 ms resolution).

use std::io;
use std::time::{Duration, Instant};

use completion_port::{Backend, GetError};
use hdrhistogram::Histogram;

use super::{ns_histogram, open_port, run_on_thread, run_pairs, Contest, Lat, Meter, RatioKind};
use super::{Row, Sample, Settings};

/// The delays are spread over this much time.
const SPREAD: Duration = Duration::from_millis(200);
/// How long the thread waits for one expiry before failing.
const LIMIT: Duration = Duration::from_secs(10);

/// The delay of timer `i` of `n`: a permutation of `n` evenly spaced
/// delays (7919 is prime, so coprime with any `n` it does not divide).
fn delay(i: u64, n: u64) -> Duration {
    let slot = if n % 7919 == 0 { i } else { i * 7919 % n };
    SPREAD * (slot as u32) / (n as u32).max(1)
}

/// What a trial saw: which timers expired, and how late.
struct Expiries {
    seen: Vec<bool>,
    late: Histogram<u64>,
    base: Instant,
}

impl Expiries {
    fn new(n: u64) -> io::Result<Expiries> {
        Ok(Expiries {
            seen: vec![false; n as usize],
            late: ns_histogram()?,
            base: Instant::now(),
        })
    }

    /// `at` from now, in ns since `base`: a timer's deadline.
    fn deadline(&self, at: Duration) -> u64 {
        self.now() + at.as_nanos() as u64
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Timer `index`, due at `deadline`, expired now: it must be new.
    fn expired(&mut self, index: u64, deadline: u64) -> io::Result<()> {
        let slot = self
            .seen
            .get_mut(index as usize)
            .ok_or_else(|| io::Error::other(format!("timers: unknown timer {index}")))?;
        if std::mem::replace(slot, true) {
            return Err(io::Error::other(format!(
                "timers: timer {index} expired twice"
            )));
        }
        let late = self.now().saturating_sub(deadline);
        self.late.saturating_record(late.max(1));
        Ok(())
    }
}

fn ours(n: u64, backend: Backend) -> io::Result<Sample> {
    // Context: (index, deadline in ns since `base`).
    let port = open_port::<(u64, u64)>(backend, 1)?;
    let mut e = Expiries::new(n)?;
    let meter = Meter::start();
    for i in 0..n {
        let d = delay(i, n);
        port.post_after(d, 0, (i, e.deadline(d))).map_err(|r| {
            io::Error::new(r.error.kind(), format!("timers: post_after: {}", r.error))
        })?;
    }
    for _ in 0..n {
        let p = match port.get(Some(LIMIT)) {
            Ok(p) => p,
            Err(GetError::Timeout) => {
                return Err(io::Error::other(format!(
                    "timers: no expiry within {} s",
                    LIMIT.as_secs()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        p.result
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), format!("timers: a timer failed: {e}")))?;
        let (index, deadline) = p.context;
        e.expired(index, deadline)?;
    }
    let mut sample = meter.stop(n);
    port.close();
    sample.lat = Some(Lat::of(&e.late));
    Ok(sample)
}

fn tokio_timers(n: u64) -> io::Result<Sample> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let mut e = Expiries::new(n)?;
    let meter = Meter::start();
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        for i in 0..n {
            let d = delay(i, n);
            let deadline = e.deadline(d);
            let at = tokio::time::Instant::now() + d;
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let _ = tx.send((i, deadline));
            });
        }
        drop(tx);
        for _ in 0..n {
            let next = tokio::time::timeout(LIMIT, rx.recv()).await;
            let Ok(Some((index, deadline))) = next else {
                return Err(io::Error::other("timers: tokio: an expiry is missing"));
            };
            e.expired(index, deadline)?;
        }
        Ok(())
    })?;
    let mut sample = meter.stop(n);
    sample.lat = Some(Lat::of(&e.late));
    Ok(sample)
}

struct Timers<'a> {
    s: &'a Settings,
    backend: Backend,
}

impl Contest for Timers<'_> {
    fn label(&self) -> String {
        "timers".into()
    }
    fn ours(&mut self, n: u64) -> io::Result<Sample> {
        let backend = self.backend;
        run_on_thread("timers", self.s.cpu_for(0), move || ours(n, backend))
    }
    fn peer(&mut self, n: u64) -> io::Result<Sample> {
        run_on_thread("timers", self.s.cpu_for(0), move || tokio_timers(n))
    }
}

/// The `timers` row.
pub(super) fn run(s: &Settings, backend: Backend) -> io::Result<Row> {
    let n = s.work(100_000, 100_000, 1_000, 1);
    let mut c = Timers { s, backend };
    let (ours, peer) = run_pairs(
        s,
        &mut c,
        n,
        (n / 10).max(100),
        (
            format!("completion-port ({backend}) post_after → get"),
            "tokio (current thread): a task per timer".to_string(),
        ),
    )?;
    Ok(Row {
        id: "timers",
        label: format!("timers: {n} pending"),
        describe: format!(
            "{n} timers armed at once by one thread, delays spread over {} ms in shuffled order, then their {n} \
             expiries taken by the same thread (every timer exactly once); peer: tokio's timer wheel, one task per \
             timer sending on a channel; ratio = process CPU per timer ours/peer, lower is better; p50/p99 = \
             lateness after the deadline",
            SPREAD.as_millis()
        ),
        ops_per_trial: n,
        ours,
        peer,
        target: Some(1.0),
        kind: RatioKind::Cpu,
        note: None,
        extra: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_a_permutation_of_the_spread() {
        let n = 1000;
        let mut slots: Vec<Duration> = (0..n).map(|i| delay(i, n)).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), n as usize);
        assert_eq!(slots[0], Duration::ZERO);
        assert!(slots[slots.len() - 1] < SPREAD);
    }

    #[test]
    fn both_sides_deliver_every_timer_once() {
        for backend in [Backend::IoUring, Backend::Epoll] {
            let s = ours(2_000, backend).unwrap();
            assert_eq!(s.ops, 2_000);
            assert!(s.lat.is_some());
        }
        assert_eq!(tokio_timers(2_000).unwrap().ops, 2_000);
    }
}
