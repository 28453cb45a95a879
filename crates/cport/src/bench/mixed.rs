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
use std::time::Duration;

use completion_port::Backend;

use super::echo::{self, Server};
use super::{run_pairs, Contest, RatioKind, Row, Sample, Settings};

/// The peer of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peer {
    Tokio,
    Compio,
}

const CONNECTIONS: usize = 50;
const SIZE: usize = 512;
/// Seed of the CPU-cost sequence.
const SEED: u64 = 0x6d69_7865_6421;
/// Runtimes of the compio peer.
const COMPIO_RUNTIMES: usize = 2;
const SERVER_SLOT: usize = 0;
const CLIENT_SLOT: usize = 1;

struct Mixed<'a> {
    s: &'a Settings,
    backend: Backend,
    peer: Server,
}

impl Mixed<'_> {
    fn sample(&self, server: Server, ms: u64) -> io::Result<Sample> {
        echo::sample(
            server,
            echo::Opts {
                connections: CONNECTIONS,
                size: SIZE,
                duration: Duration::from_millis(ms),
                server_cpu: self.s.cpu_for(SERVER_SLOT),
                client_cpu: self.s.cpu_for(CLIENT_SLOT),
                burn_seed: Some(SEED),
                latency: true,
                measure_rss: false,
            },
        )
    }
}

impl Contest for Mixed<'_> {
    fn label(&self) -> String {
        format!("mixed ({}) vs {:?}", self.backend, self.peer)
    }
    fn ours(&mut self, ms: u64) -> io::Result<Sample> {
        self.sample(Server::Ours(self.backend), ms)
    }
    fn peer(&mut self, ms: u64) -> io::Result<Sample> {
        self.sample(self.peer, ms)
    }
}

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
            Server::Tokio,
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
    let mut c = Mixed {
        s,
        backend,
        peer: server,
    };
    let (ours, peer) = run_pairs(
        s,
        &mut c,
        ms,
        (ms / 4).max(50),
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
             CPU = server threads only, latency = round trip measured by the load generator"
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
