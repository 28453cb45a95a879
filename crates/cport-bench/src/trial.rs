//! The trial loop and what it produces: a workload is a [`Contest`] of two
//! sides, [`run_pairs`] runs its warm-ups and interleaved pairs of trials,
//! and a [`Row`] holds the two [`Side`]s with their samples, the medians
//! and the ratio the table and the JSON report. [`check_contexts`] is the
//! exactly-once check of trials whose packets carry contexts 1..=n.

use std::io;

use super::{report, Sample, Settings};

/// One side of a comparison.
#[derive(Clone)]
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
    /// ours/peer of the process CPU time per operation: lower is better,
    /// the target is a maximum.
    Cpu,
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
            RatioKind::Cpu => "CPU per op, lower is better",
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
                RatioKind::Cpu => Some(o.cpu_ns_per_op() / p.cpu_ns_per_op().max(1e-9)),
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

/// The exactly-once check of a trial whose packets carry the contexts
/// 1..=n: `parts` are the (count, wrapping sum) of the contexts each thread
/// received. Returns the count, or what was received against what was
/// expected ("C packets (context sum S), expected N (sum W)") for the
/// caller's error message.
pub(crate) fn check_contexts(
    n: u64,
    parts: impl IntoIterator<Item = (u64, u64)>,
) -> Result<u64, String> {
    let (count, sum) = parts.into_iter().fold((0u64, 0u64), |(c, s), (pc, ps)| {
        (c + pc, s.wrapping_add(ps))
    });
    let want = (u128::from(n) * (u128::from(n) + 1) / 2) as u64;
    if count != n || sum != want {
        return Err(format!(
            "{count} packets (context sum {sum}), expected {n} (sum {want})"
        ));
    }
    Ok(count)
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
