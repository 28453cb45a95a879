//! The printed table, the JSON file and the machine description.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use completion_port::Backend;
use serde_json::{json, Value};

use super::{RatioKind, Row, Sample, Settings, Side};

/// What this run ran on.
pub(crate) struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// First "model name" of /proc/cpuinfo.
    pub cpu_model: String,
    /// CPUs this process may run on (what `nproc` prints).
    pub nproc: usize,
    /// CPUs in the affinity mask.
    pub cpus: Vec<usize>,
    /// /sys/devices/system/cpu/online.
    pub online: String,
    /// 1-minute load average when the run started.
    pub load_before: Option<f64>,
}

impl Machine {
    pub fn describe(s: &Settings) -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map(|o| o.trim().to_string())
            .unwrap_or_default();
        let nproc = if s.cpus.is_empty() {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            s.cpus.len()
        };
        Machine {
            kernel,
            cpu_model,
            nproc,
            cpus: s.cpus.clone(),
            online,
            load_before: loadavg(),
        }
    }

    pub fn describe_cpus(&self) -> String {
        format!(
            "×{} CPU{}, Linux {}",
            self.nproc,
            if self.nproc == 1 { "" } else { "s" },
            self.kernel
        )
    }
}

/// Facts about the run as a whole.
pub(crate) struct RunInfo {
    pub command: String,
    pub backend: Backend,
    pub elapsed: Duration,
    pub load_after: Option<f64>,
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// "12.3 M/s", "456.7 k/s".
pub(crate) fn fmt_rate(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0} /s")
    }
}

pub(crate) fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "-".into()
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Prints the table, the targets and the diagnostics to stdout.
pub(crate) fn print_table(rows: &[Row], s: &Settings, m: &Machine, run: &RunInfo) {
    let with_lat = rows.iter().any(|r| {
        r.ours
            .samples
            .iter()
            .chain(&r.peer.samples)
            .any(|x| x.lat.is_some())
    });
    let mut head: Vec<String> = [
        "workload",
        "ours",
        "peer",
        "ratio (ours/peer)",
        "ratio of",
        "CPU/op ours",
        "CPU/op peer",
    ]
    .map(String::from)
    .to_vec();
    if with_lat {
        head.extend(["p50 ours", "p50 peer", "p99 ours", "p99 peer"].map(String::from));
    }
    let mut cells = vec![head];
    let rate = |side: &Side| {
        if side.samples.is_empty() {
            "n/a".to_string()
        } else {
            fmt_rate(side.rate())
        }
    };
    for r in rows {
        let mut label = format!("{} (peer: {})", r.label, r.peer.name);
        if let Some(note) = &r.note {
            label.push_str(&format!(" [{note}]"));
        }
        let mut row = vec![
            label,
            rate(&r.ours),
            rate(&r.peer),
            fmt_ratio(r.ratio()),
            r.kind.describe().to_string(),
            fmt_ns(r.ours.cpu_ns_per_op()),
            fmt_ns(r.peer.cpu_ns_per_op()),
        ];
        if with_lat {
            row.extend([
                fmt_ns(r.ours.p50_ns()),
                fmt_ns(r.peer.p50_ns()),
                fmt_ns(r.ours.p99_ns()),
                fmt_ns(r.peer.p99_ns()),
            ]);
        }
        cells.push(row);
    }
    let widths: Vec<usize> = (0..cells[0].len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: &[String]| {
        let parts: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i] - c.chars().count();
                if i == 0 || i == 4 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    let mut out = String::new();
    out.push_str(&format!(
        "\ncport-bench: {} pairs of trials per workload{}, ours = completion-port on {}, {}\n",
        s.pairs,
        if s.quick { " (--quick)" } else { "" },
        run.backend,
        if s.pin {
            "threads pinned"
        } else {
            "not pinned"
        },
    ));
    out.push_str(&format!(
        "machine: {} {}; load average {} before, {} after; {:.1} s\n\n",
        m.cpu_model,
        m.describe_cpus(),
        m.load_before.map_or("?".into(), |l| format!("{l:.2}")),
        run.load_after.map_or("?".into(), |l| format!("{l:.2}")),
        run.elapsed.as_secs_f64(),
    ));
    out.push_str(&line(&cells[0]));
    out.push('\n');
    let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&format!("|-{}-|\n", sep.join("-|-")));
    for row in &cells[1..] {
        out.push_str(&line(row));
        out.push('\n');
    }
    out.push_str(
        "\nours/peer: operations per second (median of trials); ratio: median of per-pair ratios of what \"ratio of\" names (for latency, lower is better: 0.7× means ours waits 30 % less); CPU/op: process CPU time per operation (median; echo, mixed, handlers and scale rows: the server's threads only (ours: its workers and the library's own threads, the monitor included), per request; file: the reading thread, or fio's usr+sys); p50/p99: latency percentiles (median of trials; mixed, handlers: request round trip; wake: post to wake-up)\n",
    );
    if run.backend != Backend::IoUring && rows.iter().any(|r| r.id.starts_with("nop")) {
        out.push_str(&format!(
            "note: on the {} backend a no-op completes in user space, without a system call, so the nop rows compare it with io_uring NOPs that enter the kernel\n",
            run.backend
        ));
    }
    out.push_str("\ntargets:\n");
    for r in rows {
        let Some(t) = r.target else { continue };
        let (op, what) = match r.kind {
            RatioKind::Rate => (">=", ""),
            RatioKind::P50 => ("<=", " (p50 latency)"),
            RatioKind::P99 => ("<=", " (p99 latency)"),
            RatioKind::Cpu => ("<=", " (CPU per op)"),
        };
        let status = match r.target_met() {
            Some(true) => "MET".to_string(),
            Some(false) => "MISSED".to_string(),
            None => format!("NOT MEASURED: {}", r.note.as_deref().unwrap_or("no ratio")),
        };
        out.push_str(&format!(
            "  {}{what} {op} {:.2}× {}: {status} ({})\n",
            r.label,
            t,
            r.peer.name,
            fmt_ratio(r.ratio()),
        ));
    }
    out.push_str("\ndiagnostics (medians over trials; kernel CPU from getrusage):\n");
    for r in rows {
        let (lo, hi) = min_max(&r.ratios());
        // Echo trials are timed and measured by the server's own threads,
        // per request; the others per operation, for the whole process.
        let (scope, unit) = if ["echo", "mixed", "handlers", "scale"]
            .iter()
            .any(|p| r.id.starts_with(p))
        {
            ("server threads: ", "request")
        } else {
            ("", "op")
        };
        out.push_str(&format!(
            "  {}: ratio range {}–{}; {scope}kernel CPU/{unit} ours {}, peer {}; context switches/{unit} ours {:.4}, peer {:.4}\n",
            r.label,
            fmt_ratio(lo),
            fmt_ratio(hi),
            fmt_ns(r.ours.sys_ns_per_op()),
            fmt_ns(r.peer.sys_ns_per_op()),
            r.ours.csw_per_op(),
            r.peer.csw_per_op(),
        ));
        if r.kind != RatioKind::Rate {
            let rates: Vec<f64> = r
                .ours
                .samples
                .iter()
                .zip(&r.peer.samples)
                .map(|(o, p)| o.ops_per_sec() / p.ops_per_sec().max(1e-9))
                .collect();
            out.push_str(&format!(
                "    rate ratio (ours/peer, higher is better) {}\n",
                fmt_ratio(super::median(rates))
            ));
        } else if r.ours.p99_ns().is_finite() && r.peer.p99_ns().is_finite() {
            out.push_str(&format!(
                "    latency ratio (ours/peer, lower is better): p50 {}, p99 {}\n",
                fmt_ratio(r.ours.p50_ns() / r.peer.p50_ns()),
                fmt_ratio(r.ours.p99_ns() / r.peer.p99_ns()),
            ));
        }
        for e in &r.extra {
            out.push_str(&format!("    {}: {:.1} {}\n", e.name, e.value, e.unit));
        }
        if let Some(w) = super::yardstick::warning(r) {
            out.push_str(&format!("    WARNING: {w}\n"));
        }
        if r.ours.stalls() > 0 {
            out.push_str(&format!(
                "    WARNING: ours stalled {} time(s), warm-up included (a packet queued, a free slot, no dequeue: a lost wake-up); each was rescued by a no-op after ~{} ms, which stays in the time\n",
                r.ours.stalls(),
                super::queue::stall_ms(),
            ));
        }
    }
    for w in rows.iter().filter_map(super::yardstick::warning) {
        out.push_str(&format!("\nWARNING: {w}\n"));
        eprintln!("cport-bench: WARNING: {w}");
    }
    print!("{out}");
    let _ = io::stdout().flush();
}

fn q(value: impl Into<Value>, unit: &str) -> Value {
    json!({ "value": value.into(), "unit": unit })
}

fn lat_json(l: Option<super::Lat>) -> Value {
    match l {
        Some(l) => json!({
            "p50": q(l.p50_ns, "ns"),
            "p99": q(l.p99_ns, "ns"),
            "count": q(l.count, "values"),
        }),
        None => Value::Null,
    }
}

fn trial_json(t: &Sample) -> Value {
    json!({
        "latency": lat_json(t.lat),
        "rss_per_connection": t.rss_per_conn.map(|b| q(b, "bytes")),
        "ops": q(t.ops, "ops"),
        "wall": q(t.wall.as_secs_f64(), "s"),
        "cpu": q(t.cpu.as_secs_f64(), "s"),
        "context_switches": q(t.csw, "switches"),
        "rate": q(t.ops_per_sec(), "ops/s"),
        "cpu_per_op": q(t.cpu_ns_per_op(), "ns"),
        "kernel_cpu": q(t.sys.as_secs_f64(), "s"),
        "stalls": q(t.stalls, "stalls"),
    })
}

fn side_json(side: &Side) -> Value {
    json!({
        "name": side.name,
        "rate": q(side.rate(), "ops/s"),
        "cpu_per_op": q(side.cpu_ns_per_op(), "ns"),
        "kernel_cpu_per_op": q(side.sys_ns_per_op(), "ns"),
        "context_switches_per_op": q(side.csw_per_op(), "switches/op"),
        "stalls_incl_warmup": q(side.stalls(), "stalls"),
        "latency_p50": q(side.p50_ns(), "ns"),
        "latency_p99": q(side.p99_ns(), "ns"),
        "trials": side.samples.iter().map(trial_json).collect::<Vec<_>>(),
    })
}

fn row_json(r: &Row) -> Value {
    json!({
        "id": r.id,
        "workload": r.label,
        "describe": r.describe,
        "ops_per_trial": q(r.ops_per_trial, "ops"),
        "ours": side_json(&r.ours),
        "peer": side_json(&r.peer),
        "ratio": {
            "value": r.ratio(),
            "unit": match r.kind {
                RatioKind::Rate => "ours/peer (ops/s), median of per-pair ratios; higher is better",
                RatioKind::P50 => "ours/peer (p50 latency), median of per-pair ratios; lower is better",
                RatioKind::P99 => "ours/peer (p99 latency), median of per-pair ratios; lower is better",
                RatioKind::Cpu => "ours/peer (CPU per op), median of per-pair ratios; lower is better",
            },
            "of": r.kind.describe(),
            "per_pair": r.ratios(),
        },
        "target": r.target.map(|t| if r.kind.higher_is_better() {
            json!({ "min_ratio": q(t, "ours/peer"), "met": r.target_met() })
        } else {
            json!({ "max_ratio": q(t, "ours/peer"), "met": r.target_met() })
        }),
        "note": r.note,
        "warning": super::yardstick::warning(r),
        "extra": r.extra.iter().map(|e| (e.name.to_string(), q(e.value, e.unit))).collect::<serde_json::Map<_, _>>(),
    })
}

/// Writes every number, with its unit, and the machine description.
pub(crate) fn write_json(
    mut file: File,
    path: &Path,
    rows: &[Row],
    s: &Settings,
    m: &Machine,
    run: &RunInfo,
) -> io::Result<()> {
    let doc = json!({
        "tool": "cport-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "command": run.command,
        "machine": {
            "kernel": m.kernel,
            "cpu_model": m.cpu_model,
            "nproc": m.nproc,
            "allowed_cpus": m.cpus,
            "online_cpus": m.online,
            "loadavg_1m_before": m.load_before,
            "loadavg_1m_after": run.load_after,
        },
        "settings": {
            "quick": s.quick,
            "scale": s.scale,
            "pairs": s.pairs,
            "pinned": s.pin,
            "backend_requested": s.backend.to_string(),
            "backend": run.backend.to_string(),
        },
        "elapsed": q(run.elapsed.as_secs_f64(), "s"),
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}
