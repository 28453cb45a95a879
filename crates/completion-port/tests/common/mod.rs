//! Shared test harness: every behaviour test runs once per backend.
//!
//! Write a test as `fn name(backend: Backend)` and list it in
//! `per_backend!`; the macro makes `io_uring::name` and `epoll::name`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use completion_port::{Backend, Port};

/// Generous bound for every wait in a test: a bug fails the test instead
/// of hanging CI. Never a speed assertion.
pub const WAIT: Duration = Duration::from_secs(10);

/// Instantiates each listed `fn(Backend)` once per backend.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod io_uring {
            $( #[test] fn $name() { super::$name(completion_port::Backend::IoUring) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::$name(completion_port::Backend::Epoll) } )*
        }
    };
}

/// A port on `backend` with the given concurrency value.
pub fn port<C: Send + 'static>(backend: Backend, concurrency: usize) -> Port<C> {
    Port::builder()
        .backend(backend)
        .concurrency(concurrency)
        .build()
        .unwrap_or_else(|e| panic!("cannot open a {backend} port: {e}"))
}

/// Polls `cond` until it holds, failing the test after [`WAIT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
