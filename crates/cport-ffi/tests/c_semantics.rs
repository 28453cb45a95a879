//! The C semantics tests (`tests/c/semantics.c`): closing and cancelling
//! `AcceptEx`, blocked calls and `closesocket`, Winsock errors of the BSD
//! calls, socket options across `AcceptEx`, the file APIs and the Win32
//! names, through the C ABI, on both backends.

mod common;

#[test]
fn c_semantics_pass_on_both_backends() {
    common::c_tests_pass("crates/cport-ffi/tests/c/semantics.c", 20);
}
