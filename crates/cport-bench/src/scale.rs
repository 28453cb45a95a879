//! `scale`: our echo server (io_uring or the run's backend, 2 workers) at
//! 10 000 connections against itself at 50, same load generator, same
//! message size, interleaved trials. The ratio is requests/s at 10 000
//! over requests/s at 50. The memory probe reads VmRSS of the server's
//! process just before the load generator starts (freed heap trimmed) and
//! once the server has accepted every connection and has a receive in
//! flight on each: the growth per
//! connection is reported (user-space memory; socket buffers are the
//! kernel's and not in RSS).
//!
//! The load generator runs in a child process (this program again, with a
//! hidden option), so the server's VmRSS is its own and each process needs
//! one descriptor per connection: the soft open-file limit is raised as
//! needed (and the hard one when allowed); otherwise the workload fails
//! saying how many it needs.

use std::io;

use completion_port::Backend;

use super::echo::{self, EchoContest, Server, SIZE};
use super::{Extra, RatioKind, Row, Settings};

const FULL: usize = 10_000;
const SMALL: usize = 50;

/// The `scale` row.
pub(super) fn run(s: &Settings, backend: Backend) -> io::Result<Row> {
    // The hidden --scale shrinks the connection count too (tests), never
    // below 100 nor above 10 000.
    let big = ((FULL as f64 * s.scale.min(1.0)).round() as usize).clamp(100, FULL);
    // This process holds the server's ends; the load generator runs in a
    // child process with its own limit.
    echo::raise_nofile(big as u64 + 512)
        .map_err(|e| io::Error::new(e.kind(), format!("scale: {big} connections: {e}")))?;
    let ms = s.work(2000, 500, 50, 1);
    let mut c = EchoContest {
        measure_rss: true,
        ..EchoContest::new(
            s,
            format!("scale {big} vs {SMALL} connections"),
            (Server::Ours(backend), big),
            (Server::Ours(backend), SMALL),
        )
    };
    let (ours, peer) = c.run(
        ms,
        (
            format!("completion-port ({backend}), {big} connections"),
            format!("completion-port ({backend}), {SMALL} connections"),
        ),
    )?;
    let extra = vec![
        Extra {
            name: "server resident memory per connection at the large count (VmRSS growth / connections)",
            value: ours.rss_per_conn(),
            unit: "bytes",
        },
        Extra {
            name: "server resident memory per connection at 50 (coarse: page granularity)",
            value: peer.rss_per_conn(),
            unit: "bytes",
        },
        Extra {
            name: "connections (large count)",
            value: big as f64,
            unit: "connections",
        },
    ];
    Ok(Row {
        id: "scale",
        label: format!("scale echo {big} vs {SMALL} conns x{SIZE} B ({backend})"),
        describe: format!(
            "TCP echo over loopback, our server with 2 workers, {big} connections against {SMALL}, \
             {SIZE}-byte messages in closed loops for {ms} ms (connections established before the clock starts); \
             ratio = requests/s at {big} / requests/s at {SMALL}; CPU = server threads only (ours: its workers and the library's monitor thread)"
        ),
        ops_per_trial: 0,
        ours,
        peer,
        target: Some(0.8),
        kind: RatioKind::Rate,
        note: None,
        extra,
    })
}
