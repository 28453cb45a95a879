//! The `cport` command line itself: every subcommand's help teaches by
//! example, and `cport bench …` hands its arguments to the separate
//! `cport-bench` program next to `cport`, or says how to build it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Every command here answers at once; this only stops a bug from hanging
/// the suite.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion within [`LIMIT`] (killed and failed after it).
fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A file this test process just wrote may still be open for writing in
    // a child another test thread forked meanwhile (until that child
    // execs): ETXTBSY, for a moment.
    let mut tries = 0;
    let child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r.expect("start the command"),
        }
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("collect the output"),
        Err(_) => {
            // SAFETY: plain syscall on our own child, which has not been
            // reaped (its waiter is still blocked).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{cmd:?} still running after {LIMIT:?}; killed");
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_teaches_by_example() {
    for args in [
        &["--help"][..],
        &["demo", "--help"],
        &["echo", "--help"],
        &["copy", "--help"],
        &["help", "bench"],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cport"));
        cmd.args(args);
        let out = run(cmd);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        let examples = help.split("Examples:").nth(1).unwrap_or("");
        let n = examples
            .lines()
            .filter(|l| l.trim_start().starts_with("cport "))
            .count();
        assert!((2..=4).contains(&n), "{args:?}: {n} examples in:\n{help}");
    }
}

/// A copy of the built `cport` alone in a fresh directory (so what sits
/// next to it is up to the test).
fn lone_cport(dir: &Path) -> std::path::PathBuf {
    let exe = dir.join("cport");
    std::fs::copy(env!("CARGO_BIN_EXE_cport"), &exe).expect("copy cport");
    exe
}

#[test]
fn bench_without_cport_bench_says_how_to_build_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(lone_cport(dir.path()));
    cmd.args(["bench", "all", "--quick"]);
    let out = run(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!stderr.contains("panicked"), "{}", text(&out));
    let missing = dir.path().join("cport-bench");
    assert!(
        stderr.contains(&format!("{} (not found)", missing.display())),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("cargo build --release -p cport-bench"),
        "{}",
        text(&out)
    );
}

#[test]
fn bench_hands_every_argument_to_cport_bench() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = lone_cport(dir.path());
    // A stand-in that prints its arguments one per line and exits 7.
    let fake = dir.path().join("cport-bench");
    std::fs::write(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do echo \"[$a]\"; done\nexit 7\n",
    )
    .expect("write the stand-in");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))
        .expect("make it executable");
    for args in [
        &["echo", "--pairs", "3", "--json", "a b.json"][..],
        &["--help"],
        &["-h"],
        &[],
    ] {
        let mut cmd = Command::new(&exe);
        cmd.arg("bench").args(args);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {}", text(&out));
        let want: String = args.iter().map(|a| format!("[{a}]\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{args:?}");
    }
}
