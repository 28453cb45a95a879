//! The blocked-thread monitor reads `/proc/self/task/<tid>/stat` of the
//! threads it looks at and keeps the file open between looks (with switch
//! events, the thread's perf event too). A thread that exits must not leave
//! those fds behind (issue 17.7) — also when it exits while the monitor
//! sleeps, which it may do for ever on an idle port.
//!
//! One test for both backends, in turn (the monitor is process-wide: two
//! tests at once would keep each other's monitor awake), then again in a
//! child process with switch events.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, WAIT};
use completion_port::{Backend, BlockingDetection, Port};

/// How many fds of this process are open on `/proc/<pid>/task/<tid>/stat`.
fn stat_fds_of(tid: i32) -> usize {
    let target = format!("/proc/{}/task/{tid}/stat", std::process::id());
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_str() == Some(target.as_str()))
        .count()
}

/// How many perf event fds (switch events) this process has open.
fn perf_fds() -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_str() == Some("anon_inode:[perf_event]"))
        .count()
}

/// The monitor thread's `schedstat` (CPU time, wait time, time slices).
fn monitor_schedstat() -> Option<String> {
    for task in fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        if fs::read_to_string(dir.join("comm")).ok()?.trim() == "cport-monitor" {
            return fs::read_to_string(dir.join("schedstat")).ok();
        }
    }
    None
}

/// Waits (bounded) until the monitor sleeps: it ran for no time slice in
/// 100 ms (awake, it ticks every millisecond).
fn wait_monitor_asleep() {
    let end = Instant::now() + WAIT;
    loop {
        let before = monitor_schedstat();
        thread::sleep(Duration::from_millis(100));
        if before.is_some() && monitor_schedstat() == before {
            return;
        }
        assert!(Instant::now() < end, "the monitor never went to sleep");
    }
}

/// Worker A takes a packet, then blocks in a `read` while B waits with a
/// packet queued: the monitor looks at A (opening its stat file) and
/// counts it out, B gets the packet. Then everybody goes idle, the monitor
/// sleeps, and A exits: its stat fd must be closed (bounded wait).
fn exited_thread_leaves_no_stat_fd(backend: Backend) {
    let port: Port<u32> = Port::builder()
        .backend(backend)
        .concurrency(1)
        .blocking_detection(true)
        .build()
        .unwrap();
    let (mut read_end, mut write_end) = UnixStream::pair().unwrap();
    let (tid_tx, tid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    port.post(0, 0, 1).unwrap();
    let a = {
        let port = port.clone();
        thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            assert_eq!(port.get(Some(WAIT)).unwrap().context, 1);
            let mut b = [0u8; 1];
            read_end.read_exact(&mut b).unwrap(); // blocked, counted
                                                  // Idle: a get that finds nothing, then a wait for the end.
            assert!(port.get(Some(Duration::from_millis(10))).is_err());
            exit_rx.recv_timeout(WAIT).unwrap();
        })
    };
    let a_tid = tid_rx.recv_timeout(WAIT).unwrap();
    wait_until("A runs for the port", || port.stats().running == 1);
    let b = {
        let port = port.clone();
        thread::spawn(move || {
            assert_eq!(port.get(Some(WAIT)).unwrap().context, 2);
            assert!(port.get(Some(Duration::from_millis(10))).is_err());
        })
    };
    port.post(0, 0, 2).unwrap();
    b.join().expect("B gets packet 2 once A is counted out");
    assert!(
        port.stats().blocked_total >= 1,
        "{backend}: A was not counted out"
    );
    assert_eq!(
        stat_fds_of(a_tid),
        1,
        "{backend}: the monitor looked at A without its stat file (the test proves nothing)"
    );
    write_end.write_all(b"x").unwrap();
    wait_until("A idle", || {
        let s = port.stats();
        s.running == 0 && s.blocked == 0
    });
    wait_monitor_asleep();
    let events = perf_fds();
    exit_tx.send(()).unwrap();
    a.join().unwrap();
    // With switch events, A's perf event is open too (B's closed when B
    // exited, the monitor awake).
    let switch = port.blocking_detection() == BlockingDetection::SwitchEvents;
    assert!(!switch || events >= 1, "{backend}: no switch event open");
    let end = Instant::now() + Duration::from_secs(2);
    while stat_fds_of(a_tid) > 0 || (switch && perf_fds() >= events) {
        assert!(
            Instant::now() < end,
            "{backend}: thread {a_tid} exited 2 s ago; the monitor (asleep when it exited) still \
             has {} fd(s) open on its /proc/self/task/{a_tid}/stat, and {} switch event(s) of {events}",
            stat_fds_of(a_tid),
            perf_fds()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn exited_threads_leave_no_stat_fd_on_both_backends() {
    exited_thread_leaves_no_stat_fd(Backend::IoUring);
    exited_thread_leaves_no_stat_fd(Backend::Epoll);
}

/// The same in a child process with switch events (the mechanism is chosen
/// once per process; where the kernel refuses them, the child samples).
#[test]
fn exited_threads_leave_no_stat_fd_with_switch_events() {
    if std::env::var_os("CPORT_DETECT").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("CPORT_DETECT", "switch")
        .args([
            "--exact",
            "exited_threads_leave_no_stat_fd_on_both_backends",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "with CPORT_DETECT=switch:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
