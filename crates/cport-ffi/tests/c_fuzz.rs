//! The C ABI fuzzer (`tests/c/fuzz.c`, `fuzz_model.c`, `fuzz_steps.c`),
//! built with AddressSanitizer and run briefly on both backends; and the C
//! suite under AddressSanitizer.
//!
//! AddressSanitizer and the Rust library: the C program is compiled and
//! linked with `-fsanitize=address`, so `libasan` is the first library the
//! program loads and its `malloc`/`free`/`memcpy` replace the C library's
//! for the whole process — `libcport.so` included (Rust allocates through
//! `malloc`). The library's own code is not instrumented (that needs a
//! nightly compiler), so ASan sees every heap overflow and use after free
//! by the C side and by library calls into intercepted functions; writes
//! by Rust code or by the kernel into a buffer or OVERLAPPED the program
//! already got back are caught by the fuzzer's canaries instead. No
//! `LD_PRELOAD` is needed for an ASan-built program.
//!
//! Long runs: `CPORT_FUZZ_SEEDS` (default 3 from `CPORT_FUZZ_SEED`, default
//! 1) seeds of `CPORT_FUZZ_CALLS` calls (default 4 000) per backend.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn asan_flags() -> Vec<String> {
    let mut f = vec![
        "-fsanitize=address".into(),
        "-fno-omit-frame-pointer".into(),
    ];
    f.extend(direct_flags());
    f
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?}")))
        .unwrap_or(default)
}

/// Runs an ASan-built program of this build on `backend`
/// (bounded); an ASan report makes it exit with status 86.
fn run_asan(bin: &Path, args: &[&str], backend: &str) -> Output {
    let child = Command::new(bin)
        .args(args)
        .env("LD_LIBRARY_PATH", lib_dir())
        .env("CPORT_BACKEND", backend)
        .env("ASAN_OPTIONS", "detect_leaks=1:exitcode=86")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, &format!("{} {args:?} on {backend}", bin.display()))
}

/// Builds the fuzzer with ASan into `dir`.
fn build_fuzzer(dir: &Path) -> PathBuf {
    let c = repo().join("crates/cport-ffi/tests/c");
    let bin = dir.join("fuzz");
    let mut flags = vec![
        c.join("fuzz_steps.c").display().to_string(),
        c.join("fuzz_model.c").display().to_string(),
    ];
    flags.extend(asan_flags());
    compile(&c.join("fuzz.c"), &bin, &flags);
    bin
}

/// Runs the fuzzer for each seed on each backend; returns the failures
/// (its stderr), or panics on a crash it did not report itself.
fn fuzz() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let bin = build_fuzzer(dir.path());
    let first = env_num("CPORT_FUZZ_SEED", 1);
    let seeds = env_num("CPORT_FUZZ_SEEDS", 3);
    let calls = env_num("CPORT_FUZZ_CALLS", 4_000).to_string();
    let mut failures = Vec::new();
    for backend in BACKENDS {
        for seed in first..first + seeds {
            let seed_arg = seed.to_string();
            let o = run_asan(&bin, &[&seed_arg, &calls], backend);
            let stdout = String::from_utf8_lossy(&o.stdout);
            let stderr = String::from_utf8_lossy(&o.stderr);
            match o.status.code() {
                Some(0) => print!("{backend}: {stdout}"),
                // The fuzzer's own verdicts: a failed check, a hang.
                Some(1 | 3) => failures.push(format!("{backend}: {stderr}")),
                _ => panic!(
                    "fuzz seed {seed} on {backend} crashed ({:?}; 86: AddressSanitizer):\n{stderr}",
                    o.status
                ),
            }
        }
    }
    failures
}

/// Every check the fuzzer makes holds (the bugs it found are fixed, each
/// with a minimal test: `found_by_fuzz.rs`, completion-port's
/// `busy_queue.rs`), under ASan, on both backends.
#[test]
fn fuzz_briefly_under_asan_on_both_backends() {
    let failures = fuzz();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The C suite under ASan, on the backend of this CI pass (`CPORT_BACKEND`,
/// io_uring when unset): `.ci/run` runs the tests once per backend, so the
/// suite runs once under ASan on each.
#[test]
fn c_suite_passes_under_asan() {
    let backend = std::env::var("CPORT_BACKEND")
        .ok()
        .filter(|b| BACKENDS.contains(&b.as_str()))
        .unwrap_or_else(|| "io_uring".into());
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("suite_asan");
    compile(
        &repo().join("crates/cport-ffi/tests/c/suite.c"),
        &bin,
        &asan_flags(),
    );
    let o = run_asan(&bin, &[], &backend);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        o.status.success() && last.ends_with(" 0 failed"),
        "C suite under ASan on {backend} ({:?}): {last}\n{stdout}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}
