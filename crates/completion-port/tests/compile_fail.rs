//! Misuse the types rule out: buffers and contexts must be owned,
//! `'static` and `Send` (the kernel owns them until the packet is
//! dequeued, on any thread).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
