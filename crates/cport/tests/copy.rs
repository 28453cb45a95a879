//! Runs the built `cport copy` end to end on both backends: exact copies
//! (buffered and O_DIRECT, sizes on and off block boundaries), refusals
//! that leave DST untouched, and failures that leave neither DST nor a
//! temporary file. Every wait is bounded.
//!
//! Not covered, and why:
//! - an unreadable source or a read-only destination directory through
//!   permission bits: the tests run as root, whom mode bits do not stop; a
//!   source that is a directory, a DST in a missing directory, a DST that
//!   is a directory and a DST directory that is a file stand in for them;
//! - a really full disk (`ENOSPC`): provoking it safely needs a small
//!   filesystem (a tiny tmpfs), which needs mount rights the tests do not
//!   have. A file-size limit (`RLIMIT_FSIZE`, set in the child only) makes
//!   the writes fail midway with `EFBIG` instead, which exercises the same
//!   clean-up path, with and without preallocation.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Bound of every run: a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(120);
const BACKENDS: [&str; 2] = ["io_uring", "epoll"];

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.status.success()
    }
}

fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(s) = child.try_wait().expect("wait for cport") {
            return s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cport {what} still running after {WAIT:?}; killed");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a started child to the end (bounded), collecting its output.
fn collect(mut child: Child, what: &str) -> Run {
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, what);
    let run = Run {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "cport {what} panicked:\n{}",
        run.stderr
    );
    run
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cport"));
    c.arg("copy")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn copy(args: &[&str]) -> Run {
    collect(
        command(args).spawn().expect("start cport copy"),
        &format!("copy {args:?}"),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn write_random(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let p = dir.join(name);
    let data = random_bytes(len, seed);
    fs::write(&p, &data).unwrap();
    (p, data)
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_same(dst: &Path, want: &[u8], what: &str) {
    let got = fs::read(dst).unwrap_or_else(|e| panic!("{what}: cannot read {dst:?}: {e}"));
    assert_eq!(got.len(), want.len(), "{what}: sizes differ");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!("{what}: byte {i} differs");
    }
}

const MIB: usize = 1 << 20;

/// (size, extra arguments) of the copies every backend makes.
fn cases() -> Vec<(usize, Vec<&'static str>)> {
    vec![
        // Multi-MiB, not a multiple of the (default, 1 MiB) block size.
        (5 * MIB + 12_345, vec![]),
        // Many small blocks, more blocks than the queue depth.
        (
            3 * MIB + 1,
            vec!["--block-size", "64K", "--queue-depth", "4"],
        ),
        (
            MIB + 4095,
            vec!["--block-size", "4K", "--queue-depth", "64"],
        ),
        // Exactly a multiple of the block size; smaller than one block.
        (4 * MIB, vec!["--block-size", "1M"]),
        (1000, vec![]),
        (1, vec!["--queue-depth", "1"]),
        (0, vec![]),
        // Without preallocation.
        (
            2 * MIB + 3,
            vec!["--no-preallocate", "--block-size", "256K"],
        ),
    ]
}

fn copies_exactly(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (i, (size, extra)) in cases().into_iter().enumerate() {
        let (src, data) = write_random(dir.path(), &format!("src{i}"), size, 0x5eed + i as u64);
        let dst = dir.path().join(format!("dst{i}"));
        let mut args = vec![s(&src), s(&dst), "--backend", backend];
        args.extend(extra.iter().copied());
        let r = copy(&args);
        assert!(
            r.ok(),
            "cport copy {args:?} failed:\n{}{}",
            r.stdout,
            r.stderr
        );
        assert_same(&dst, &data, &format!("{args:?}"));
        assert!(r.stdout.contains("copied"), "no summary:\n{}", r.stdout);
        assert!(
            r.stdout.contains(backend),
            "backend not named:\n{}",
            r.stdout
        );
    }
    // Nothing but sources and copies: no temporary file left.
    let left = names(dir.path());
    assert!(
        left.iter()
            .all(|n| n.starts_with("src") || n.starts_with("dst")),
        "stray files: {left:?}"
    );
}

#[test]
fn io_uring_copies_exactly() {
    copies_exactly("io_uring");
}

#[test]
fn epoll_copies_exactly() {
    copies_exactly("epoll");
}

/// Whether files in `dir` can be opened with O_DIRECT.
fn direct_works(dir: &Path) -> bool {
    let p = dir.join("probe");
    let r = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p);
    let _ = fs::remove_file(&p);
    r.is_ok()
}

fn copies_exactly_with_o_direct(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    if !direct_works(dir.path()) {
        eprintln!(
            "skipping the O_DIRECT copies: {} does not support O_DIRECT",
            dir.path().display()
        );
        return;
    }
    for (i, (size, extra)) in [
        // Tail not a multiple of 4096 nor of the block size.
        (3 * MIB + 777, vec!["--block-size", "64K"]),
        (5 * MIB + 4096, vec![]),
        (12 * 4096, vec!["--block-size", "8K", "--queue-depth", "3"]),
        (100, vec![]),
        (0, vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let (src, data) = write_random(dir.path(), &format!("src{i}"), size, 0xd1 + i as u64);
        let dst = dir.path().join(format!("dst{i}"));
        let mut args = vec![s(&src), s(&dst), "--direct", "--backend", backend];
        args.extend(extra.iter().copied());
        let r = copy(&args);
        assert!(
            r.ok(),
            "cport copy {args:?} failed:\n{}{}",
            r.stdout,
            r.stderr
        );
        assert_same(&dst, &data, &format!("{args:?}"));
        assert!(r.stdout.contains("O_DIRECT on"), "{}", r.stdout);
    }
    let left = names(dir.path());
    assert!(
        left.iter()
            .all(|n| n.starts_with("src") || n.starts_with("dst")),
        "stray files: {left:?}"
    );
}

#[test]
fn io_uring_copies_exactly_with_o_direct() {
    copies_exactly_with_o_direct("io_uring");
}

#[test]
fn epoll_copies_exactly_with_o_direct() {
    copies_exactly_with_o_direct("epoll");
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = write_random(dir.path(), "src", 300_000, 7);
    let dst = dir.path().join("dst");
    fs::write(&dst, b"precious").unwrap();
    let r = copy(&[s(&src), s(&dst)]);
    assert!(!r.ok(), "overwrote without --force");
    assert!(
        r.stderr.contains("--force"),
        "no hint at --force:\n{}",
        r.stderr
    );
    assert_eq!(fs::read(&dst).unwrap(), b"precious", "DST was touched");
    assert_eq!(names(dir.path()), ["dst", "src"]);

    for backend in BACKENDS {
        let r = copy(&[s(&src), s(&dst), "--force", "--backend", backend]);
        assert!(r.ok(), "--force failed:\n{}", r.stderr);
        assert_same(&dst, &data, "--force");
        assert_eq!(names(dir.path()), ["dst", "src"]);
    }

    // The same file, even with --force, is refused and left alone.
    let r = copy(&[s(&src), s(&src), "--force"]);
    assert!(!r.ok());
    assert!(r.stderr.contains("same file"), "{}", r.stderr);
    assert_same(&src, &data, "source after copying onto itself");
}

#[test]
fn bad_sources_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst");
    let missing = dir.path().join("missing");
    let subdir = dir.path().join("subdir");
    fs::create_dir(&subdir).unwrap();
    for (src, says) in [
        (&missing, "No such file"),
        // Root reads anything, so "unreadable" is a source that is a
        // directory.
        (&subdir, "is a directory"),
    ] {
        for backend in BACKENDS {
            let r = copy(&[s(src), s(&dst), "--backend", backend]);
            assert!(!r.ok(), "copying {src:?} succeeded");
            assert!(
                r.stderr.contains("source") && r.stderr.contains(says),
                "no clear error for {src:?}:\n{}",
                r.stderr
            );
            assert_eq!(names(dir.path()), ["subdir"], "left files behind");
        }
    }
}

#[test]
fn bad_destinations_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = write_random(dir.path(), "src", 100_000, 9);
    let a_dir = dir.path().join("a_dir");
    fs::create_dir(&a_dir).unwrap();
    let a_file = dir.path().join("a_file");
    fs::write(&a_file, b"x").unwrap();
    let cases = [
        // Root can write into read-only directories, so the failures are a
        // missing directory, a directory as DST, a file as DST's directory.
        (dir.path().join("no/such/dir/dst"), "does not exist"),
        (a_dir.clone(), "is a directory"),
        (a_file.join("dst"), "not a directory"),
    ];
    for (dst, says) in &cases {
        for force in [false, true] {
            let mut args = vec![s(&src), s(dst)];
            if force {
                args.push("--force");
            }
            let r = copy(&args);
            assert!(!r.ok(), "cport copy {args:?} succeeded");
            assert!(
                r.stderr.contains(says),
                "{args:?}: no clear error:\n{}",
                r.stderr
            );
            assert_eq!(names(dir.path()), ["a_dir", "a_file", "src"]);
            assert!(names(&a_dir).is_empty(), "wrote into {a_dir:?}");
            assert_eq!(fs::read(&a_file).unwrap(), b"x");
        }
    }
}

/// Writes that fail midway (the child's file-size limit is 1 MiB, so a
/// 4 MiB copy fails with EFBIG) leave neither DST nor a temporary file.
#[test]
fn failed_writes_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = write_random(dir.path(), "src", 4 * MIB, 11);
    let dst = dir.path().join("dst");
    let direct = direct_works(dir.path());
    for backend in BACKENDS {
        for extra in [
            &[][..],
            &["--no-preallocate"],
            &["--no-preallocate", "--block-size", "64K"],
            &["--no-preallocate", "--direct"],
        ] {
            if extra.contains(&"--direct") && !direct {
                continue;
            }
            let mut args = vec![s(&src), s(&dst), "--backend", backend];
            args.extend_from_slice(extra);
            let mut cmd = command(&args);
            // SAFETY: the closure runs in the forked child before exec and
            // only calls setrlimit, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    let lim = libc::rlimit {
                        rlim_cur: MIB as libc::rlim_t,
                        rlim_max: MIB as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let r = collect(cmd.spawn().expect("start cport copy"), "copy (limited)");
            assert!(!r.ok(), "{args:?} succeeded past the file-size limit");
            assert!(
                r.stderr.contains("too large") && r.stderr.contains("was not created"),
                "{args:?}: no clear error:\n{}",
                r.stderr
            );
            assert_eq!(names(dir.path()), ["src"], "{args:?} left files behind");
        }
    }
}

/// SIGINT during a copy: either the copy had finished (DST complete) or it
/// stops with an error and leaves nothing; never a partial DST.
#[test]
fn interrupted_copy_leaves_nothing_partial() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = write_random(dir.path(), "src", 32 * MIB, 13);
    for backend in BACKENDS {
        let dst = dir.path().join(format!("dst-{backend}"));
        let args = [
            s(&src),
            s(&dst),
            "--block-size",
            "4K",
            "--queue-depth",
            "1",
            "--backend",
            backend,
        ];
        let child = command(&args).spawn().expect("start cport copy");
        thread::sleep(Duration::from_millis(100));
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill only sends a signal to our own child process.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let r = collect(child, "copy (interrupted)");
        if r.ok() {
            assert_same(&dst, &data, "copy that finished before SIGINT");
            fs::remove_file(&dst).unwrap();
        } else {
            assert!(r.stderr.contains("interrupted"), "{}", r.stderr);
            assert!(!dst.exists(), "partial DST left");
        }
        assert_eq!(names(dir.path()), ["src"], "left files behind");
    }
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = write_random(dir.path(), "src", 10, 1);
    let dst = dir.path().join("dst");
    for extra in [
        &["--block-size", "0"][..],
        &["--block-size", "1X"],
        &["--block-size", "512M"],
        &["--block-size=-4K"],
        &["--queue-depth", "0"],
        &["--backend", "kqueue"],
    ] {
        let mut args = vec![s(&src), s(&dst)];
        args.extend_from_slice(extra);
        let r = copy(&args);
        assert!(!r.ok(), "{extra:?} accepted");
        assert!(
            r.stderr.contains("invalid value"),
            "{extra:?}:\n{}",
            r.stderr
        );
    }
    let r = copy(&[s(&src), s(&dst), "--direct", "--block-size", "1000"]);
    assert!(!r.ok());
    assert!(r.stderr.contains("multiple of 4K"), "{}", r.stderr);
    assert_eq!(names(dir.path()), ["src"]);
}

/// A FIFO as the source is refused at once (its `open` would block until a
/// writer came, with SIGINT/SIGTERM blocked and not yet taken: issue 17.6),
/// leaving nothing behind.
#[test]
fn fifo_source_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let r = copy(&[s(&fifo), s(&dir.path().join("dst"))]);
    assert!(!r.ok(), "copied a FIFO");
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);
    assert_eq!(names(dir.path()), ["fifo"], "left files behind");
}

/// A copy killed with SIGKILL leaves no hidden temporary file (issue
/// 17.6): the copy is an unnamed file (`O_TMPFILE`) until it is linked
/// as DST. One-byte blocks, one in flight: still copying when killed.
#[test]
fn killed_copy_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = write_random(dir.path(), "src", 4 * MIB, 17);
    let out = tempfile::tempdir().unwrap();
    for backend in BACKENDS {
        let dst = out.path().join(format!("dst-{backend}"));
        let args = [s(&src), s(&dst), "--block-size", "1", "--queue-depth", "1"];
        let mut child = command(&args)
            .arg("--backend")
            .arg(backend)
            .spawn()
            .unwrap();
        // Wait (bounded) until it holds a file in DST's directory open.
        let fds = format!("/proc/{}/fd", child.id());
        let end = Instant::now() + WAIT;
        while !fs::read_dir(&fds)
            .unwrap()
            .any(|e| fs::read_link(e.unwrap().path()).is_ok_and(|t| t.starts_with(out.path())))
        {
            assert!(
                Instant::now() < end,
                "the copy never opened its temporary file"
            );
            thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            names(out.path()),
            Vec::<String>::new(),
            "{backend}: left behind"
        );
    }
}

/// Temporary files that copies killed earlier left (by a version that
/// named them, or in the instant between link and rename) are removed by
/// the next copy to the same DST, when their process is gone.
#[test]
fn stale_temporary_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = write_random(dir.path(), "src", 1000, 19);
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = dir.path().join(format!(".dst.cport-{dead}-1a2b3c.tmp"));
    let alive = dir
        .path()
        .join(format!(".dst.cport-{}-4d5e.tmp", std::process::id()));
    let other = dir.path().join(format!(".other.cport-{dead}-77.tmp"));
    for f in [&stale, &alive, &other] {
        fs::write(f, b"partial").unwrap();
    }
    let r = copy(&[s(&src), s(&dir.path().join("dst"))]);
    assert!(r.ok(), "{}", r.stderr);
    assert_same(&dir.path().join("dst"), &data, "copy");
    assert!(!stale.exists(), "a dead copy's temporary file was kept");
    assert!(
        alive.exists() && other.exists(),
        "a live copy's or another DST's file was removed"
    );
}
