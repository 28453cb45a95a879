//! `Backend::Auto` falls back to epoll where io_uring is denied.
//!
//! The test re-runs itself in a child process that installs a seccomp
//! filter making `io_uring_setup` fail with `EPERM` (as Docker's default
//! profile does), then checks that an automatic port runs on epoll, says
//! why, serves a file read and a socket echo, and that an explicit io_uring
//! request is an error naming the cause.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use completion_port::{Backend, Buf, Port};

const CHILD_ENV: &str = "CPORT_SECCOMP_CHILD";
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Installs a filter: `io_uring_setup` → EPERM, everything else allowed.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn deny_io_uring_setup() {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut filter = [
        ins(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(JEQ_K, 0, 3, AUDIT_ARCH),
        ins(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        ins(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        ins(RET_K, 0, 0, RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; it lets an
    // unprivileged process install a filter.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(r, 0);
    // SAFETY: `prog` points at a valid filter that outlives the call; TSYNC
    // applies it to every thread of this (child) process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog,
        )
    };
    assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
}

fn child() {
    deny_io_uring_setup();

    // Forcing io_uring is an error that names the cause, never a fallback.
    let e = Port::<()>::builder()
        .backend(Backend::IoUring)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("denied"), "unclear error: {e}");

    let port = Port::<u32>::builder()
        .backend(Backend::Auto)
        .concurrency(2)
        .build()
        .unwrap();
    assert_eq!(port.backend(), Backend::Epoll);
    let reason = port.fallback_reason().expect("a fallback reason");
    assert!(reason.contains("denied"), "reason: {reason}");

    // A file read through the blocking pool.
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"through epoll").unwrap();
    let file = port.associate(f, 1).unwrap();
    file.read_at(Buf::with_capacity(64), 8, 10).unwrap();
    let mut p = port.get(WAIT).unwrap();
    assert_eq!((p.key, p.context, p.bytes()), (1, 10, 5));
    assert_eq!(&p.take_buf().unwrap()[..], b"epoll");

    // A socket echo: the peer echoes what we send.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        s.write_all(&b).unwrap();
    });
    let sock = port
        .associate(TcpStream::connect(addr).unwrap(), 2)
        .unwrap();
    sock.send(Buf::copy_from(b"hello"), 20).unwrap();
    let p = port.get(WAIT).unwrap();
    assert_eq!((p.key, p.context, p.bytes()), (2, 20, 5));
    let mut got = Vec::new();
    while got.len() < 5 {
        sock.recv(Buf::with_capacity(5 - got.len()), 30).unwrap();
        let mut p = port.get(WAIT).unwrap();
        assert_eq!(p.context, 30);
        let b = p.take_buf().unwrap();
        assert!(!b.is_empty(), "peer closed early");
        got.extend_from_slice(&b);
    }
    assert_eq!(got, b"hello");
    echo.join().unwrap();
}

#[test]
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn auto_falls_back_to_epoll_when_io_uring_is_denied() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "auto_falls_back_to_epoll_when_io_uring_is_denied",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env_remove("CPORT_BACKEND")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}
