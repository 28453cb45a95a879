//! `mixed`: the echo of `echo.rs` (50 connections x 512 B, the same load
//! generator) where each request's handler burns a heavy-tailed amount of
//! CPU on the server: 90 % of requests ask for 2 µs, 10 % for 200 µs
//! (seeded, so every side gets the same sequence per connection), spinning
//! on the clock. The load generator times every round trip into an
//! `hdrhistogram`.
//!
//! Two rows: against tokio (2 workers) the ratio is the throughput (higher
//! is better), against compio (2 thread-per-core runtimes, the same thread
//! count as ours and tokio) it is the p99 latency (lower is better). Every
//! server's threads are pinned to the same CPU, the load generator to the
//! other.

use std::io;

use completion_port::Backend;

use super::echo::{EchoContest, Server, CONNECTIONS, SIZE, TOKIO};
use super::loadgen::{Cost, Profile};
use super::{RatioKind, Row, Settings};

/// The peer of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peer {
    Tokio,
    Compio,
}

/// Seed of the CPU-cost sequence.
const SEED: u64 = 0x6d69_7865_6421;
/// Runtimes of the compio peer.
const COMPIO_RUNTIMES: usize = 2;

/// The `mixed_vs_tokio` (throughput) or `mixed_vs_compio` (p99) row.
pub(super) fn run(s: &Settings, backend: Backend, peer: Peer) -> io::Result<Row> {
    // Timed trials: the "ops" are milliseconds.
    let ms = s.work(2000, 500, 50, 1);
    let short = match peer {
        Peer::Tokio => "tokio",
        Peer::Compio => "compio",
    };
    let (id, server, peer_name, kind, target) = match peer {
        Peer::Tokio => (
            "mixed_vs_tokio",
            TOKIO,
            "tokio (2 workers)".to_string(),
            RatioKind::Rate,
            1.0,
        ),
        Peer::Compio => (
            "mixed_vs_compio",
            Server::Compio(COMPIO_RUNTIMES),
            format!("compio ({COMPIO_RUNTIMES} runtimes)"),
            RatioKind::P99,
            0.7,
        ),
    };
    let mut c = EchoContest {
        cost: Some(Cost {
            seed: SEED,
            profile: Profile::Mixed,
        }),
        latency: true,
        ..EchoContest::new(
            s,
            format!("mixed ({backend}) vs {server:?}"),
            (Server::Ours(backend), CONNECTIONS),
            (server, CONNECTIONS),
        )
    };
    let (ours, peer) = c.run(
        ms,
        (format!("completion-port ({backend}, 2 workers)"), peer_name),
    )?;
    Ok(Row {
        id,
        label: format!(
            "mixed {CONNECTIONS}x{SIZE} B, CPU 90% 2 µs/10% 200 µs ({backend} vs {short})"
        ),
        describe: format!(
            "TCP echo over loopback, {CONNECTIONS} connections x {SIZE}-byte messages in closed loops for {ms} ms; \
             each request makes the server spin for 2 µs (90 %) or 200 µs (10 %), seeded; ops = verified round trips, \
             CPU = server threads only (ours: its workers and the library's monitor thread), latency = round trip measured by the load generator"
        ),
        ops_per_trial: 0,
        ours,
        peer,
        target: Some(target),
        kind,
        note: None,
        extra: Vec::new(),
    })
}
