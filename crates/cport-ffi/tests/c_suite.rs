//! The C test suite (`tests/c/suite.c`): docs/windows-semantics.md's points through
//! the C ABI, in plain C, on both backends.

mod common;

#[test]
fn c_suite_passes_on_both_backends() {
    common::c_tests_pass("crates/cport-ffi/tests/c/suite.c", 40);
}
