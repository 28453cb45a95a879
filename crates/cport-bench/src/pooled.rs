//! `pooled`: our echo server receiving with `recv_pooled` (one pool shared
//! by every connection: [`ECHO_POOL`] or [`SCALE_POOL`] buffers of the
//! message size, or `--pool-buffers`; each reply a copy of the pooled bytes
//! in a fresh `Buf`) against the same server with a
//! buffer per connection (`recv` into it, the same buffer sent back), on
//! the run's backend, interleaved trials:
//! - `echo_pooled`: 50 connections; the ratio is server CPU per request,
//!   pooled over per-connection (lower is better);
//! - `scale_pooled`: 10 000 connections; the ratio is requests/s, and the
//!   extras give the server's resident memory per connection of each side
//!   (the `scale` probe: VmRSS growth once every connection has a receive
//!   in flight).
//!
//! Both rows count the pooled receives that found the pool empty: the data
//! waits in the socket, and the connection waits for a returned buffer
//! (each worker that drops one issues one waiting receive again:
//! `echo_ours.rs`), as the cookbook recommends.

use std::io;
use std::sync::atomic::Ordering;

use completion_port::Backend;

use super::echo::{self, EchoContest, Server, CONNECTIONS, POOL_EXHAUSTED, SIZE};
use super::{Extra, RatioKind, Row, Settings};

const FULL: usize = 10_000;

/// The pool of the `echo_pooled` row: more buffers than connections.
pub(super) const ECHO_POOL: usize = 256;
/// The pool of the `scale_pooled` row: fewer buffers than connections
/// (a smaller pool makes more receives find it empty and wait for a
/// buffer: BENCHMARKS.md, "Pooled receives").
pub(super) const SCALE_POOL: usize = 4096;

/// The `echo_pooled` and `scale_pooled` rows; `buffers` overrides both
/// pools' size.
pub(super) fn run(s: &Settings, backend: Backend, buffers: Option<usize>) -> io::Result<Vec<Row>> {
    let ms = s.work(2000, 500, 50, 1);
    let names = |n: usize| {
        (
            format!("completion-port ({backend}), recv_pooled, {n} connections"),
            format!("completion-port ({backend}), a buffer per connection, {n} connections"),
        )
    };
    let plain = Server::Ours(backend);
    let n = buffers.unwrap_or(ECHO_POOL);
    let pooled = Server::OursPooled(backend, n);

    POOL_EXHAUSTED.store(0, Ordering::Relaxed);
    let mut c = EchoContest::new(
        s,
        format!("echo pooled vs per-connection buffers ({backend})"),
        (pooled, CONNECTIONS),
        (plain, CONNECTIONS),
    );
    let (ours, peer) = c.run(ms, names(CONNECTIONS))?;
    let echo_row = Row {
        id: "echo_pooled",
        label: format!("echo {CONNECTIONS}x{SIZE} B pooled recv ({backend})"),
        describe: format!(
            "TCP echo over loopback, our server with 2 workers, {CONNECTIONS} connections x {SIZE}-byte \
             messages for {ms} ms: recv_pooled from {n} shared buffers (reply copied into a \
             fresh Buf) against recv into a buffer per connection; ratio = server CPU per request, \
             pooled / per-connection"
        ),
        ops_per_trial: 0,
        ours,
        peer,
        target: None,
        kind: RatioKind::Cpu,
        note: None,
        extra: vec![exhausted()],
    };

    let big = ((FULL as f64 * s.scale.min(1.0)).round() as usize).clamp(100, FULL);
    echo::raise_nofile(big as u64 + 512)
        .map_err(|e| io::Error::new(e.kind(), format!("scale_pooled: {big} connections: {e}")))?;
    POOL_EXHAUSTED.store(0, Ordering::Relaxed);
    let n = buffers.unwrap_or(SCALE_POOL);
    let pooled = Server::OursPooled(backend, n);
    let mut c = EchoContest {
        measure_rss: true,
        ..EchoContest::new(
            s,
            format!("scale {big} pooled vs per-connection buffers ({backend})"),
            (pooled, big),
            (plain, big),
        )
    };
    let (ours, peer) = c.run(ms, names(big))?;
    let extra = vec![
        Extra {
            name: "server resident memory per connection, recv_pooled (VmRSS growth / connections)",
            value: ours.rss_per_conn(),
            unit: "bytes",
        },
        Extra {
            name: "server resident memory per connection, a buffer per connection",
            value: peer.rss_per_conn(),
            unit: "bytes",
        },
        Extra {
            name: "connections",
            value: big as f64,
            unit: "connections",
        },
        exhausted(),
    ];
    let scale_row = Row {
        id: "scale_pooled",
        label: format!("scale {big} conns x{SIZE} B pooled recv ({backend})"),
        describe: format!(
            "TCP echo over loopback, our server with 2 workers, {big} connections x {SIZE}-byte \
             messages for {ms} ms: recv_pooled from {n} shared buffers against recv into a \
             buffer per connection; ratio = requests/s, pooled / per-connection; memory in the extras"
        ),
        ops_per_trial: 0,
        ours,
        peer,
        target: None,
        kind: RatioKind::Rate,
        note: None,
        extra,
    };
    Ok(vec![echo_row, scale_row])
}

/// The pool-empty count of the trials just run.
fn exhausted() -> Extra {
    Extra {
        name: "pooled receives that found the pool empty (all trials)",
        value: POOL_EXHAUSTED.load(Ordering::Relaxed) as f64,
        unit: "receives",
    }
}
