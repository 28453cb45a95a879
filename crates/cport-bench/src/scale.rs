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
//! Two more rows say how much of the drop is the kernel's: the raw epoll
//! loop at 10 000 against itself at 50 (`scale_raw_epoll`: the same
//! question asked of the yardstick), and our server against the raw epoll
//! loop, both at 10 000 (`scale_vs_raw_epoll`).
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

/// The `scale` rows: ours at 10 000 vs 50, the raw epoll loop at 10 000
/// vs 50, ours vs the raw epoll loop at 10 000.
pub(super) fn run(s: &Settings, backend: Backend) -> io::Result<Vec<Row>> {
    // The hidden --scale shrinks the connection count too (tests), never
    // below 100 nor above 10 000.
    let big = ((FULL as f64 * s.scale.min(1.0)).round() as usize).clamp(100, FULL);
    // This process holds the server's ends; the load generator runs in a
    // child process with its own limit.
    echo::raise_nofile(big as u64 + 512)
        .map_err(|e| io::Error::new(e.kind(), format!("scale: {big} connections: {e}")))?;
    let ms = s.work(2000, 500, 50, 1);
    let ours = Server::Ours(backend);
    let ours_name = |n: usize| format!("completion-port ({backend}), {n} connections");
    let raw_name = |n: usize| format!("raw epoll loop, {n} connections");
    let sides = [
        (
            "scale",
            format!("scale echo {big} vs {SMALL} conns x{SIZE} B ({backend})"),
            (ours, big, ours_name(big)),
            (ours, SMALL, ours_name(SMALL)),
            "our server with 2 workers, {big} connections against {SMALL}; ratio = requests/s at {big} / requests/s at {SMALL}",
            Some(0.8),
        ),
        (
            "scale_raw_epoll",
            format!("scale echo {big} vs {SMALL} conns x{SIZE} B (raw epoll loop)"),
            (Server::RawEpoll, big, raw_name(big)),
            (Server::RawEpoll, SMALL, raw_name(SMALL)),
            "the raw epoll loop (single thread), {big} connections against {SMALL}: how much the kernel alone loses; ratio = requests/s at {big} / requests/s at {SMALL}",
            None,
        ),
        (
            "scale_vs_raw_epoll",
            format!("scale echo {big} conns x{SIZE} B ({backend} vs raw epoll loop)"),
            (ours, big, ours_name(big)),
            (Server::RawEpoll, big, raw_name(big)),
            "our server with 2 workers against the raw epoll loop, both at {big} connections; ratio = ours / raw epoll",
            None,
        ),
    ];
    let mut rows = Vec::new();
    for (id, label, (a, an, aname), (b, bn, bname), what, target) in sides {
        let mut c = EchoContest {
            measure_rss: true,
            ..EchoContest::new(s, label.clone(), (a, an), (b, bn))
        };
        let (ours, peer) = c.run(ms, (aname, bname))?;
        let what = what
            .replace("{big}", &big.to_string())
            .replace("{SMALL}", &SMALL.to_string());
        let extra = vec![
            Extra {
                name: "resident memory per connection, first side (VmRSS growth / connections)",
                value: ours.rss_per_conn(),
                unit: "bytes",
            },
            Extra {
                name:
                    "resident memory per connection, second side (coarse at 50: page granularity)",
                value: peer.rss_per_conn(),
                unit: "bytes",
            },
            Extra {
                name: "connections (large count)",
                value: big as f64,
                unit: "connections",
            },
        ];
        rows.push(Row {
            id,
            label,
            describe: format!(
                "TCP echo over loopback, {what}; {SIZE}-byte messages in closed loops for {ms} ms \
                 (connections established before the clock starts); CPU = server threads only \
                 (ours: its workers and the library's monitor thread)"
            ),
            ops_per_trial: 0,
            ours,
            peer,
            target,
            kind: RatioKind::Rate,
            note: None,
            extra,
        });
    }
    Ok(rows)
}
