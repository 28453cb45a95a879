//! `cport-bench blocking` end to end, on a tiny amount of work: it prints
//! the monitor's measurements and both rows, and exits 0. No speed is
//! asserted.

use std::process::Command;

#[test]
fn bench_blocking_quick_prints_every_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_cport-bench"))
        .args(["blocking", "--quick"])
        .env("CPORT_BENCH_SCALE", "0.01")
        .output()
        .expect("run cport-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "status {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    for needle in [
        "blocking: detection delay",
        "blocking: monitor CPU with 4 workers idle",
        "blocking: 2 posters + 2 waiters",
        "detection on (peer: thread pool",
        "detection off (peer: thread pool",
        "context switches/op",
    ] {
        assert!(stdout.contains(needle), "no {needle:?} in:\n{stdout}");
    }
}
