//! The peer check: the two raw echo loops (single-thread epoll,
//! single-thread io_uring) are the yardsticks of the `echo` rows, and on
//! the same machine neither should lose to the other — a liburing loop
//! runs at the speed of an epoll loop. So `echo` (and `all`) runs them
//! against each other, interleaved like every row (row `echo_raw_peers`:
//! "ours" there is the raw io_uring loop), and warns when one falls more
//! than [`TOLERANCE`] below the other: a weak peer is a bug in the bench,
//! and every ratio against it is meaningless until it is fixed.

use std::io;

use super::echo::{EchoContest, Server, CONNECTIONS, SIZE};
use super::{RatioKind, Row, Settings};

/// Id of the peer-check row.
pub(crate) const ROW_ID: &str = "echo_raw_peers";
/// How far below the other raw loop one may fall before the warning.
pub(crate) const TOLERANCE: f64 = 0.05;

/// The `echo_raw_peers` row: raw io_uring (as "ours") against raw epoll.
pub(super) fn run(s: &Settings) -> io::Result<Row> {
    // Timed trials: the "ops" are milliseconds.
    let ms = s.work(2000, 500, 50, 1);
    let mut c = EchoContest::new(
        s,
        "peer check: raw io_uring vs raw epoll".to_string(),
        (super::echo::RAW_URING, CONNECTIONS),
        (Server::RawEpoll, CONNECTIONS),
    );
    let (ours, peer) = c.run(
        ms,
        (
            "raw io_uring (1 thread)".to_string(),
            "raw epoll (1 thread)".to_string(),
        ),
    )?;
    Ok(Row {
        id: ROW_ID,
        label: format!("peer check: echo {CONNECTIONS}x{SIZE} B, raw io_uring"),
        describe: format!(
            "the two raw echo peers against each other (\"ours\" is the raw io_uring loop): \
             {CONNECTIONS} connections x {SIZE}-byte messages in closed loops for {ms} ms; \
             a ratio more than {:.0} % from 1 means a weak peer",
            TOLERANCE * 100.0
        ),
        ops_per_trial: 0,
        ours,
        peer,
        target: Some(1.0),
        kind: RatioKind::Rate,
        note: None,
        extra: Vec::new(),
    })
}

/// The warning for a peer-check ratio (raw io_uring / raw epoll rates), if
/// one loop is more than [`TOLERANCE`] below the other. `cpu` is the two
/// loops' server CPU per request (io_uring, epoll), which a busy machine
/// moves much less than the rates: when it is within [`TOLERANCE`], the
/// warning says the gap may be the machine's.
pub(crate) fn weak_peer(ratio: f64, cpu: (f64, f64)) -> Option<String> {
    if !ratio.is_finite() || ratio <= 0.0 {
        return None;
    }
    let (weak, strong, behind) = if ratio < 1.0 {
        ("raw io_uring", "raw epoll", 1.0 - ratio)
    } else {
        ("raw epoll", "raw io_uring", 1.0 - 1.0 / ratio)
    };
    // A hair of tolerance for the float arithmetic at the boundary.
    if behind <= TOLERANCE + 1e-9 {
        return None;
    }
    let mut w = format!(
        "the {weak} echo peer is {:.1} % below the {strong} peer (raw io_uring/raw epoll {ratio:.3}×, \
         more than {:.0} % apart): a weak peer is a bug in the bench, and the ratios against it are \
         meaningless until it is fixed",
        behind * 100.0,
        TOLERANCE * 100.0
    );
    let (uring, epoll) = cpu;
    if uring > 0.0 && epoll > 0.0 && (uring / epoll - 1.0).abs() <= TOLERANCE {
        w.push_str(&format!(
            "; but their server CPU per request is within {:.0} % ({uring:.0} vs {epoll:.0} ns), \
             so a busy machine may have made the gap: rerun on a quiet one",
            TOLERANCE * 100.0
        ));
    }
    Some(w)
}

/// The warning of a row, if it is the peer check and a peer is weak.
pub(crate) fn warning(r: &Row) -> Option<String> {
    if r.id == ROW_ID {
        weak_peer(r.ratio(), (r.ours.cpu_ns_per_op(), r.peer.cpu_ns_per_op()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Sample, Side};

    /// No CPU figures (NaN, as a side without samples has).
    const NO_CPU: (f64, f64) = (f64::NAN, f64::NAN);

    #[test]
    fn close_peers_pass() {
        for r in [1.0, 0.96, 0.95, 1.04, 1.0 / 0.95] {
            assert_eq!(weak_peer(r, NO_CPU), None, "ratio {r}");
        }
    }

    #[test]
    fn a_weak_uring_peer_is_named() {
        let w = weak_peer(0.61, NO_CPU).expect("0.61 is weak");
        assert!(
            w.starts_with("the raw io_uring echo peer is 39.0 % below the raw epoll peer"),
            "{w}"
        );
        assert!(w.contains("a weak peer is a bug in the bench"), "{w}");
        assert!(!w.contains("busy machine"), "{w}");
        assert!(weak_peer(0.949, NO_CPU).is_some());
    }

    #[test]
    fn a_weak_epoll_peer_is_named() {
        // epoll at 1/1.25 = 0.8 of io_uring: 20 % below.
        let w = weak_peer(1.25, NO_CPU).expect("1.25 is weak");
        assert!(
            w.starts_with("the raw epoll echo peer is 20.0 % below the raw io_uring peer"),
            "{w}"
        );
        assert!(weak_peer(1.06, NO_CPU).is_some());
    }

    #[test]
    fn equal_cpu_per_request_points_at_the_machine() {
        let w = weak_peer(0.6, (4220.0, 4252.0)).expect("still a warning");
        assert!(w.contains("a weak peer is a bug in the bench"), "{w}");
        assert!(
            w.ends_with("within 5 % (4220 vs 4252 ns), so a busy machine may have made the gap: rerun on a quiet one"),
            "{w}"
        );
        // A loop that also burns more CPU per request is just weak.
        let w = weak_peer(0.6, (6300.0, 3400.0)).expect("weak");
        assert!(!w.contains("busy machine"), "{w}");
        // No warning, whatever the CPU says, when the rates are close.
        assert_eq!(weak_peer(0.97, (6300.0, 3400.0)), None);
    }

    #[test]
    fn no_ratio_no_warning() {
        assert_eq!(weak_peer(f64::NAN, NO_CPU), None);
        assert_eq!(weak_peer(f64::INFINITY, NO_CPU), None);
        assert_eq!(weak_peer(0.0, NO_CPU), None);
    }

    fn side(rates: &[u64]) -> Side {
        Side {
            name: String::new(),
            samples: rates
                .iter()
                .map(|&ops| Sample {
                    ops,
                    wall: Duration::from_secs(1),
                    ..Sample::default()
                })
                .collect(),
            warmup: None,
        }
    }

    fn row(id: &'static str, uring: &[u64], epoll: &[u64]) -> Row {
        Row {
            id,
            label: String::new(),
            describe: String::new(),
            ops_per_trial: 0,
            ours: side(uring),
            peer: side(epoll),
            target: Some(1.0),
            kind: RatioKind::Rate,
            note: None,
            extra: Vec::new(),
        }
    }

    #[test]
    fn the_row_warns_on_the_median_pair_ratio() {
        // Per-pair ratios 0.5, 0.9, 1.0: median 0.9, 10 % below.
        let weak = row(ROW_ID, &[50, 90, 100], &[100, 100, 100]);
        let w = warning(&weak).expect("a weak io_uring peer");
        assert!(w.contains("raw io_uring echo peer is 10.0 % below"), "{w}");
        // One bad pair does not make a weak peer: 0.5, 1.0, 1.01.
        let noisy = row(ROW_ID, &[50, 100, 101], &[100, 100, 100]);
        assert_eq!(warning(&noisy), None);
        // Other rows are never checked.
        assert_eq!(warning(&row("echo_io_uring", &[50], &[100])), None);
    }
}
