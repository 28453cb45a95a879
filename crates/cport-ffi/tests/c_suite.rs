//! The C test suite (`tests/c/suite.c`): the spec's statements through
//! the C ABI, in plain C, on both backends.

mod common;

use common::*;

#[test]
fn c_suite_passes_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("suite");
    compile(
        &repo().join("crates/cport-ffi/tests/c/suite.c"),
        &bin,
        &direct_flags(),
    );
    for backend in BACKENDS {
        let o = run(&bin, &[], backend);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let last = stdout.lines().last().unwrap_or("");
        assert!(
            o.status.success() && last.ends_with(" 0 failed"),
            "C suite on {backend}: {last}\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
        assert!(passed >= 40, "C suite ran only {passed} tests");
    }
}
