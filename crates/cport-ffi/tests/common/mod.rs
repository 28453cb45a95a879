//! Building C and C++ programs against the library and running them with
//! a bounded wait.
//!
//! Needs `cc`, `g++` and `pkg-config` (`.ci/run` installs them). A hung
//! program is killed and the test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BACKENDS: [&str; 2] = ["io_uring", "epoll"];
pub const LIMIT: Duration = Duration::from_secs(120);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Where cargo put the libcport.so/.a built with this test binary:
/// `target/<profile>/deps` (a test build does not copy them up to
/// `target/<profile>`, whose copies may be older).
pub fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().to_path_buf();
    assert!(
        dir.join("libcport.so").exists() && dir.join("libcport.a").exists(),
        "libcport.so/.a not found in {}",
        dir.display()
    );
    dir
}

/// The pkg-config file build.rs wrote (in `target/<profile>/pkgconfig`).
fn pkg_config_dir() -> PathBuf {
    lib_dir().parent().unwrap().join("pkgconfig")
}

/// Compiles `src` (C or C++ by extension) into `out` with `extra` flags
/// (the library flags), warnings as errors.
pub fn compile(src: &Path, out: &Path, extra: &[String]) {
    let cxx = src.extension().is_some_and(|e| e == "cpp");
    let (compiler, std) = if cxx {
        ("g++", "-std=c++17")
    } else {
        ("cc", "-std=gnu11")
    };
    let mut cmd = Command::new(compiler);
    cmd.args([std, "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra);
    let o = cmd.output().unwrap_or_else(|e| {
        panic!("{compiler} not runnable ({e}); install gcc and g++ (.ci/run does)")
    });
    assert!(
        o.status.success(),
        "{compiler} failed for {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `-I include -L <lib> -lcport` (shared library, rpath set).
pub fn direct_flags() -> Vec<String> {
    let lib = lib_dir();
    vec![
        format!("-I{}", repo().join("include").display()),
        format!("-L{}", lib.display()),
        format!("-Wl,-rpath,{}", lib.display()),
        "-lcport".into(),
    ]
}

/// The flags `pkg-config --cflags --libs cport` gives for this build.
pub fn pkg_config_flags() -> Vec<String> {
    let o = Command::new("pkg-config")
        .args(["--cflags", "--libs", "cport"])
        // The file as written, pointed at this build's library.
        .arg(format!("--define-variable=libdir={}", lib_dir().display()))
        .env("PKG_CONFIG_PATH", pkg_config_dir())
        .output()
        .expect("pkg-config not runnable; install pkg-config (.ci/run does)");
    assert!(
        o.status.success(),
        "pkg-config: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Waits for `child` up to `LIMIT`, killing it (and failing) past that.
pub fn wait_bounded(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {LIMIT:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run(bin: &Path, args: &[&str], backend: &str) -> Output {
    let child = Command::new(bin)
        // cargo's LD_LIBRARY_PATH for tests lists target/<profile> first,
        // whose libcport.so may be older than this build's.
        .env("LD_LIBRARY_PATH", lib_dir())
        .args(args)
        .env("CPORT_BACKEND", backend)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, &format!("{} ({backend})", bin.display()))
}

/// Builds the C test program `src` (relative to the repository) against
/// the library and runs it on both backends: it must end with "N passed,
/// 0 failed" and N >= `min_passed`.
pub fn c_tests_pass(src: &str, min_passed: usize) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("c_tests");
    compile(&repo().join(src), &bin, &direct_flags());
    for backend in BACKENDS {
        let o = run(&bin, &[], backend);
        let stdout = String::from_utf8_lossy(&o.stdout);
        let last = stdout.lines().last().unwrap_or("");
        assert!(
            o.status.success() && last.ends_with(" 0 failed"),
            "{src} on {backend}: {last}\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let passed: usize = last.split(' ').next().unwrap().parse().unwrap();
        assert!(passed >= min_passed, "{src} ran only {passed} tests");
    }
}
