//! `handlers`: the echo of `echo.rs` (50 connections x 512 B, the same
//! load generator, every round trip timed) where a request's handler
//! sometimes blocks: 10 % of requests (seeded, the same sequence for every
//! side) make a 1 ms blocking call — a sleep in the kernel, as a database
//! client library's synchronous query is — and the rest only echo.
//!
//! This is where a shared queue should win on more than one CPU: while a
//! handler blocks, the other CPUs keep serving every connection, whereas a
//! runtime whose worker blocks stalls the tasks that sit on that worker.
//! So the server gets every CPU (nothing pinned; the load generator runs
//! on them too), and the sides are:
//! - **ours**: one port, concurrency = CPUs, blocked-thread detection on
//!   (unless `--no-detection`), and [`POOL_PER_CPU`] x CPUs worker threads
//!   — more threads than CPUs, as IOCP servers have, so a blocked worker's
//!   slot goes to a spare one. The handler blocks plainly (it does not
//!   know about the port, like a library); a last row shows the same
//!   server with the call announced in `port.blocking`;
//! - **tokio** (2 workers = CPUs here), the handler as tokio users write
//!   it: once blocking inline in the task, once with
//!   `spawn_blocking(..).await`;
//! - **compio**, one thread-per-core runtime per CPU, blocking inline.
//!
//! Rows give the throughput ratio (higher is better) and, against tokio
//! with `spawn_blocking` and compio, the p99 latency ratio of the same
//! trials (lower is better).

use std::io;

use completion_port::Backend;

use super::echo::{EchoContest, Pool, Server, TokioBlocking, CONNECTIONS, SIZE, TOKIO};
use super::loadgen::{Cost, Profile};
use super::{RatioKind, Row, Settings, Side};

/// Seed of the blocking-call sequence.
const SEED: u64 = 0x6861_6e64_6c65;
/// Worker threads of our server per CPU: enough for the CPUs plus the
/// threads blocked at once (10 % x rate x 1.1 ms: ~16 at 150 k requests/s,
/// tokio's rate with `spawn_blocking` on 2 CPUs).
pub(crate) const POOL_PER_CPU: usize = 16;

/// One contest of the workload: our server against a peer.
struct Contest {
    /// Row id of the throughput ratio (the p99 row adds `_p99`).
    id: &'static str,
    /// How the peer is called in labels.
    short: &'static str,
    /// Our handler makes its blocking call in `port.blocking`.
    scope: bool,
    peer: Server,
    peer_name: String,
    /// Minimum throughput ratio.
    rate_target: f64,
    /// The row id and maximum of the p99 ratio, when it has a row.
    p99: Option<(&'static str, f64)>,
}

/// The `handlers_*` rows.
pub(super) fn run(s: &Settings, backend: Backend) -> io::Result<Vec<Row>> {
    // Timed trials: the "ops" are milliseconds.
    let ms = s.work(2000, 500, 50, 1);
    let cpus = s.cpus.len().max(1);
    let pool = |scope| Pool {
        backend,
        workers: POOL_PER_CPU * cpus,
        concurrency: cpus,
        scope,
        pooled: None,
    };
    let spawn_blocking = Server::Tokio(TokioBlocking::SpawnBlocking);
    let contests = [
        Contest {
            id: "handlers_vs_tokio",
            short: "tokio, inline",
            scope: false,
            peer: TOKIO,
            peer_name: "tokio (2 workers), blocking inline".into(),
            rate_target: 1.0,
            p99: None,
        },
        Contest {
            id: "handlers_vs_tokio_spawn_blocking",
            short: "tokio, spawn_blocking",
            scope: false,
            peer: spawn_blocking,
            peer_name: "tokio (2 workers) + spawn_blocking".into(),
            rate_target: 1.0,
            p99: Some(("handlers_p99_vs_tokio_spawn_blocking", 1.0)),
        },
        Contest {
            id: "handlers_vs_compio",
            short: "compio",
            scope: false,
            peer: Server::Compio(cpus),
            peer_name: format!("compio ({cpus} runtimes), blocking inline"),
            rate_target: 1.5,
            p99: Some(("handlers_p99_vs_compio", 1.0)),
        },
        Contest {
            id: "handlers_scope_vs_tokio_spawn_blocking",
            short: "tokio, spawn_blocking",
            scope: true,
            peer: spawn_blocking,
            peer_name: "tokio (2 workers) + spawn_blocking".into(),
            rate_target: 1.0,
            p99: None,
        },
    ];
    let mut rows = Vec::new();
    for c in contests {
        let mut contest = EchoContest {
            cost: Some(Cost {
                seed: SEED,
                profile: Profile::Blocking,
            }),
            latency: true,
            unpinned: true,
            ..EchoContest::new(
                s,
                format!(
                    "handlers ({backend}{}) vs {}",
                    if c.scope { ", port.blocking" } else { "" },
                    c.short
                ),
                (Server::OursPool(pool(c.scope)), CONNECTIONS),
                (c.peer, CONNECTIONS),
            )
        };
        let ours_name = format!(
            "completion-port ({backend}, {} workers, concurrency {cpus}{})",
            POOL_PER_CPU * cpus,
            if c.scope { ", port.blocking" } else { "" }
        );
        let (o, p) = contest.run(ms, (ours_name, c.peer_name.clone()))?;
        let row = |id, kind, target, ours: Side, peer: Side| {
            Row {
            id,
            label: format!(
                "handlers {CONNECTIONS}x{SIZE} B, 10% block 1 ms ({backend}{} vs {})",
                if c.scope { " in port.blocking" } else { "" },
                c.short
            ),
            describe: format!(
                "TCP echo over loopback, {CONNECTIONS} connections x {SIZE}-byte messages in closed loops for {ms} ms; \
                 10 % of requests (seeded) make the handler block 1 ms in a sleep, the rest only echo; \
                 nothing pinned (the server may use all {cpus} CPUs); ops = verified round trips, \
                 CPU = server threads only (ours: its workers and the library's monitor thread), latency = round trip measured by the load generator"
            ),
            ops_per_trial: 0,
            ours,
            peer,
            target: Some(target),
            kind,
            note: None,
            extra: Vec::new(),
        }
        };
        if let Some((id_p99, t)) = c.p99 {
            rows.push(row(
                c.id,
                RatioKind::Rate,
                c.rate_target,
                o.clone(),
                p.clone(),
            ));
            rows.push(row(id_p99, RatioKind::P99, t, o, p));
        } else {
            rows.push(row(c.id, RatioKind::Rate, c.rate_target, o, p));
        }
    }
    Ok(rows)
}
