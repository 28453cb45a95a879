//! Shared test harness: every behaviour test runs once per backend.
//!
//! Write a test as `fn name(backend: Backend)` and list it in
//! `per_backend!`; the macro makes `io_uring::name` and `epoll::name`.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use completion_port::{Backend, Packet, Port};

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

/// A port on `backend` with blocking detection off: for tests of the
/// explicit accounting (a thread counts as running until its next `get`,
/// blocking scope or exit), whose threads wait on channels, joins or sleeps
/// while they count as running — which detection would see as blocking.
pub fn explicit_port<C: Send + 'static>(backend: Backend, concurrency: usize) -> Port<C> {
    Port::builder()
        .backend(backend)
        .concurrency(concurrency)
        .blocking_detection(false)
        .build()
        .unwrap_or_else(|e| panic!("cannot open a {backend} port: {e}"))
}

/// How long a test watches for something that must *not* happen. A slow
/// machine can only make such a check pass, never fail a correct port.
pub const QUIET: Duration = Duration::from_millis(50);

/// Dequeues exactly `n` packets (each wait bounded by [`WAIT`]).
pub fn take<C: Send + 'static>(port: &Port<C>, n: usize) -> Vec<Packet<C>> {
    (0..n)
        .map(|i| {
            port.get(Some(WAIT))
                .unwrap_or_else(|e| panic!("packet {i} of {n}: {e:?}"))
        })
        .collect()
}

/// Polls `cond` until it holds, failing the test after [`WAIT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Tiny xorshift64 generator for seeded tests: the same seed gives the
/// same sequence.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The number in environment variable `name`, or `default` when unset;
/// a value that is not a number fails the test.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}
