//! A port inherited across `fork` is refused in the child (issue 17.7,
//! `core/fork.rs`): every call fails with the fork error (which names the
//! cause), dropping the port and its handle there touches nothing, and the
//! parent's port goes on as if nothing happened — its pending receive
//! completes with its data, its posted packet is still queued. Before the
//! refusal, the child's `get` dequeued its copy of the posted packet, and
//! dropping its handle cancelled the parent's receive (io_uring: the
//! cancel went into the shared ring) or deregistered its socket (epoll:
//! `EPOLL_CTL_DEL` on the shared instance). A buffer pool's last copy
//! dropped in the child leaves the parent's buffer ring registered (before,
//! it unregistered the parent's group: the parent's next pooled receive
//! found no buffer).
//!
//! `fork` in a test binary: the test re-runs this binary as a child process
//! (`CPORT_FORK_CHILD=<backend>`) that runs only `forking_process`, which
//! forks and checks; its forked child leaves with `_exit`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use completion_port::{
    is_port_closed, is_port_forked, Backend, Buf, GetError, Handle, Port, Token,
};

const CHILD_ENV: &str = "CPORT_FORK_CHILD";
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn inherited_port_is_refused_in_a_forked_child() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    for backend in ["io_uring", "epoll"] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, backend)
            .args(["--exact", "forking_process", "--nocapture"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > end {
                let _ = child.kill();
                panic!("{backend}: the forking process did not end in 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains(&format!("fork checks passed on {backend}")),
            "{backend} ({:?}):\n{stdout}\n{stderr}",
            out.status
        );
    }
}

/// Runs only in the child process the test above starts.
#[test]
fn forking_process() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let backend = if name == "epoll" {
        Backend::Epoll
    } else {
        Backend::IoUring
    };
    let port: Port<u32> = Port::builder().backend(backend).build().unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap();
    let recv = h.recv(Buf::with_capacity(16), 7).unwrap();
    port.post(2, 5, 8).unwrap();
    // A pool with nothing in flight: the child drops the last reference
    // to its copy, which must leave the parent's buffer ring registered.
    let pool = port.buf_pool(2, 16).unwrap();
    let (a2, mut b2) = UnixStream::pair().unwrap();
    let h2 = port.associate(a2, 3).unwrap();
    // SAFETY: the child only runs `in_child` (no lock of another thread is
    // needed on its paths: each call is refused before taking any) and
    // leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let code = match in_child_pooled(&port, &h2, pool).and_then(|()| in_child(port, h, recv)) {
            Ok(()) => 0,
            Err(why) => {
                eprintln!("forked child: {why}");
                1
            }
        };
        // SAFETY: ends the forked child without the test harness's exit.
        unsafe { libc::_exit(code) };
    }
    let status = wait_child(pid);
    assert_eq!(
        status,
        Some(0),
        "{backend}: the forked child's checks failed"
    );
    // The parent's port goes on, and so does its pool.
    h2.recv_pooled(&pool, 13).unwrap();
    b.write_all(b"ping").unwrap();
    b2.write_all(b"pooled").unwrap();
    let mut got = HashMap::new();
    for _ in 0..3 {
        let mut p = port
            .get(Some(WAIT))
            .unwrap_or_else(|e| panic!("{backend}: the parent's packets after the fork: {e:?}"));
        let bytes = p
            .take_buf()
            .map(|b| b.to_vec())
            .or_else(|| p.take_pooled().map(|b| b.to_vec()));
        got.insert(
            p.context,
            (p.key, p.result.map_err(|e| e.to_string()), bytes),
        );
    }
    assert_eq!(got[&8], (2, Ok(5), None), "{backend}: the posted packet");
    assert_eq!(
        got[&7],
        (1, Ok(4), Some(b"ping".to_vec())),
        "{backend}: the pending receive"
    );
    assert_eq!(
        got[&13],
        (3, Ok(6), Some(b"pooled".to_vec())),
        "{backend}: the pending pooled receive"
    );
    println!("fork checks passed on {name}");
}

/// Waits (bounded) for the forked child; its exit code (`None`: killed).
fn wait_child(pid: libc::pid_t) -> Option<i32> {
    let end = Instant::now() + WAIT;
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is written on success.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid: {}", io::Error::last_os_error());
        if r == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if Instant::now() > end {
            // SAFETY: kills our own child, which hangs.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child did not end in {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// In the forked child: a pooled receive and a new pool are refused with
/// the fork error; dropping the inherited pool leaves the parent's buffer
/// ring registered.
fn in_child_pooled(
    port: &Port<u32>,
    h: &Handle<u32>,
    pool: completion_port::BufPool,
) -> Result<(), String> {
    match h.recv_pooled(&pool, 14) {
        Err(r) if is_port_forked(&r.error) && r.context == 14 => {}
        Err(r) => return Err(format!("recv_pooled: not the fork error: {:?}", r.error)),
        Ok(_) => return Err("recv_pooled accepted".into()),
    }
    match port.buf_pool(1, 8) {
        Err(e) if is_port_forked(&e) => {}
        other => return Err(format!("buf_pool: {other:?}")),
    }
    drop(pool);
    Ok(())
}

/// In the forked child: every call on the inherited port fails with the
/// fork error; dropping it returns.
fn in_child(port: Port<u32>, h: Handle<u32>, recv: Token) -> Result<(), String> {
    let forked = |what: &str, e: &io::Error| {
        if is_port_forked(e) && is_port_closed(e) && e.to_string().contains("forked") {
            Ok(())
        } else {
            Err(format!("{what}: not the fork error: {e:?}"))
        }
    };
    match port.get(Some(Duration::ZERO)) {
        Err(GetError::Io(e)) => forked("get", &e)?,
        other => return Err(format!("get: {:?}", other.map(|p| p.context))),
    }
    let mut out = Vec::new();
    match port.get_many(&mut out, 4, Some(Duration::ZERO)) {
        Err(GetError::Io(e)) => forked("get_many", &e)?,
        other => return Err(format!("get_many: {other:?}")),
    }
    if port.take_result(recv).is_some() {
        return Err("take_result found the parent's receive".into());
    }
    match port.wait_result(recv, Some(Duration::ZERO)) {
        Err(GetError::Io(e)) => forked("wait_result", &e)?,
        other => return Err(format!("wait_result: {:?}", other.map(|p| p.context))),
    }
    match port.post(3, 0, 9) {
        Err(r) => forked("post", &r.error)?,
        Ok(()) => return Err("post accepted".into()),
    }
    match port.post_after(Duration::from_millis(1), 4, 10) {
        Err(r) => forked("post_after", &r.error)?,
        Ok(_) => return Err("post_after accepted".into()),
    }
    match h.recv(Buf::with_capacity(8), 11) {
        Err(mut r) => {
            forked("recv", &r.error)?;
            if r.take_buf().is_none() {
                return Err("recv refused without handing its buffer back".into());
            }
        }
        Ok(_) => return Err("recv accepted".into()),
    }
    match h.nop(12) {
        Err(r) => forked("nop", &r.error)?,
        Ok(_) => return Err("nop accepted".into()),
    }
    match h.cancel_all() {
        Err(e) => forked("cancel_all", &e)?,
        Ok(n) => return Err(format!("cancel_all cancelled {n}")),
    }
    let (c, _d) = UnixStream::pair().map_err(|e| e.to_string())?;
    match port.associate(c, 5) {
        Err(e) => forked("associate", &e.error)?,
        Ok(_) => return Err("associate accepted".into()),
    }
    // Closing touches nothing of the parent's.
    h.close();
    drop(h);
    port.close();
    drop(port);
    Ok(())
}
