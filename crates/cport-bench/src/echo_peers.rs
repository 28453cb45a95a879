//! The echo peers: a hand-written single-thread level-triggered epoll
//! loop, a hand-written single-thread io_uring loop, a tokio multi-thread
//! runtime with 2 workers and compio thread-per-core runtimes. All pin
//! their threads to the server CPU and report their own threads' CPU use,
//! like our server; tokio and compio burn the CPU a request asks for when
//! `burn` is set (the `mixed` workload).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::super::loadgen::{self, BurnParser};
use super::super::{pin, thread_use, ThreadUse};
use super::Running;

// ----- raw epoll --------------------------------------------------------------

pub(super) fn raw_epoll(
    listener: TcpListener,
    size: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
) -> io::Result<Running> {
    listener.set_nonblocking(true)?;
    let t = thread::spawn(move || {
        pin(cpu);
        raw_loop(listener, size, &stop)?;
        Ok(thread_use())
    });
    Ok(Running {
        threads: vec![t],
        port: None,
    })
}

fn raw_loop(listener: TcpListener, size: usize, stop: &AtomicBool) -> io::Result<()> {
    // SAFETY: plain syscall; closed below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let add = |fd: i32, token: u64| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd, open fd, valid event.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }
    };
    add(listener.as_raw_fd(), u64::MAX);
    let mut conns: Vec<Option<TcpStream>> = Vec::new();
    let mut buf = vec![0u8; size];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let result = 'serve: loop {
        if stop.load(Ordering::Acquire) {
            break Ok(());
        }
        // SAFETY: `events` has room for 256 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, 50) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break Err(e);
        }
        for ev in &events[..n as usize] {
            if ev.u64 == u64::MAX {
                while let Ok((s, _)) = listener.accept() {
                    if let Err(e) = s.set_nodelay(true).and_then(|()| s.set_nonblocking(true)) {
                        break 'serve Err(e);
                    }
                    add(s.as_raw_fd(), conns.len() as u64);
                    conns.push(Some(s));
                }
                continue;
            }
            let i = ev.u64 as usize;
            let Some(s) = conns[i].as_mut() else { continue };
            match s.read(&mut buf) {
                Ok(0) => conns[i] = None,
                Ok(k) => {
                    // 512-byte echoes fit the socket buffer; a full buffer
                    // would be a bug of the benchmark, not a slow path.
                    if let Err(e) = write_all_nonblocking(s, &buf[..k]) {
                        break 'serve Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => conns[i] = None,
            }
        }
    };
    // SAFETY: `ep` is ours and closed once.
    unsafe { libc::close(ep) };
    result
}

fn write_all_nonblocking(s: &mut TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match s.write(data) {
            Ok(k) => data = &data[k..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ----- raw io_uring -----------------------------------------------------------

/// Operation kinds, in the low 2 bits of `user_data`; the connection index
/// is in the bits above.
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const TIMEOUT: u64 = 3;
/// `user_data` of cancel requests (their CQEs are ignored).
const CANCEL: u64 = u64::MAX;
/// How often the loop wakes up to look at the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// How long the loop waits, when stopping, for its cancelled operations.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

fn tag(index: usize, kind: u64) -> u64 {
    ((index as u64) << 2) | kind
}

/// One connection: its socket, its buffer, and its one operation in flight.
struct Conn {
    sock: TcpStream,
    /// Boxed, so it never moves while the kernel holds a pointer into it
    /// (the `Vec<Option<Conn>>` may reallocate; the box's heap block stays).
    buf: Box<[u8]>,
    /// Bytes received by the last recv.
    len: usize,
    /// Bytes of them sent so far.
    sent: usize,
    /// The op of this connection the kernel holds (`RECV` or `SEND`).
    inflight: Option<u64>,
}

pub(super) fn raw_uring(
    listener: TcpListener,
    size: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
) -> io::Result<Running> {
    let ring = IoUring::new(256)?;
    let t = thread::spawn(move || {
        pin(cpu);
        uring_loop(ring, listener, size, &stop)?;
        Ok(thread_use())
    });
    Ok(Running {
        threads: vec![t],
        port: None,
    })
}

/// Pushes one SQE, submitting first when the queue is full.
fn push(ring: &mut IoUring, e: &squeue::Entry) -> io::Result<()> {
    loop {
        // SAFETY: every entry built in this file points at memory that stays
        // valid until its CQE: a connection's buffer is boxed in `conns` and
        // the connection is only removed once its one op has completed;
        // `uring_serve` returns `Ok` only after every op completed, and on
        // an error `uring_loop` closes the ring and leaks `conns`; the
        // timeout's timespec is a `static`.
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

fn recv_entry(i: usize, c: &mut Conn) -> squeue::Entry {
    c.inflight = Some(RECV);
    opcode::Recv::new(
        types::Fd(c.sock.as_raw_fd()),
        c.buf.as_mut_ptr(),
        c.buf.len() as u32,
    )
    .build()
    .user_data(tag(i, RECV))
}

fn send_entry(i: usize, c: &mut Conn) -> squeue::Entry {
    c.inflight = Some(SEND);
    let rest = &c.buf[c.sent..c.len];
    opcode::Send::new(
        types::Fd(c.sock.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data(tag(i, SEND))
}

/// The timeout that wakes the loop up; `static`, so valid for every SQE.
static TICK_TS: types::Timespec = types::Timespec::new().nsec(TICK.as_nanos() as u32);

fn uring_loop(
    mut ring: IoUring,
    listener: TcpListener,
    size: usize,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let r = uring_serve(&mut ring, &listener, &mut conns, size, stop);
    if r.is_err() {
        // Ops may still be in flight: close the ring first, and never free
        // the buffers the kernel may still point into.
        drop(ring);
        std::mem::forget(conns);
    }
    r
}

/// Serves until `stop`, then cancels every op and returns `Ok` only once
/// every one has completed (the kernel then holds no pointer into `conns`).
fn uring_serve(
    ring: &mut IoUring,
    listener: &TcpListener,
    conns: &mut Vec<Option<Conn>>,
    size: usize,
    stop: &AtomicBool,
) -> io::Result<()> {
    let lfd = types::Fd(listener.as_raw_fd());
    let accept = || {
        opcode::Accept::new(lfd, std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag(0, ACCEPT))
    };
    let timeout = || {
        opcode::Timeout::new(&TICK_TS as *const types::Timespec)
            .build()
            .user_data(tag(0, TIMEOUT))
    };
    push(ring, &accept())?;
    push(ring, &timeout())?;
    let mut accept_inflight = true;
    let mut timeout_inflight = true;
    let mut stopping: Option<Instant> = None;
    loop {
        let busy = accept_inflight
            || timeout_inflight
            || conns.iter().flatten().any(|c| c.inflight.is_some());
        if let Some(since) = stopping {
            if !busy {
                break Ok(());
            }
            if since.elapsed() > DRAIN_LIMIT {
                break Err(io::Error::other("raw io_uring: ops did not drain"));
            }
        } else if stop.load(Ordering::Acquire) {
            // Cancel everything in flight, then drain the completions.
            stopping = Some(Instant::now());
            let mut inflight = Vec::new();
            if accept_inflight {
                inflight.push(tag(0, ACCEPT));
            }
            for (i, c) in conns.iter().enumerate() {
                if let Some(Conn {
                    inflight: Some(k), ..
                }) = c
                {
                    inflight.push(tag(i, *k));
                }
            }
            for ud in inflight {
                push(
                    ring,
                    &opcode::AsyncCancel::new(ud).build().user_data(CANCEL),
                )?;
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => break Err(e),
        }
        let cqes: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let mut failed = None;
        for (ud, res) in cqes {
            if ud == CANCEL {
                continue;
            }
            let (i, kind) = ((ud >> 2) as usize, ud & 3);
            match kind {
                TIMEOUT => {
                    timeout_inflight = false;
                    if stopping.is_none() {
                        push(ring, &timeout())?;
                        timeout_inflight = true;
                    }
                }
                ACCEPT => {
                    accept_inflight = false;
                    if res >= 0 {
                        // SAFETY: a non-negative accept result is a new fd
                        // that nothing else owns.
                        let sock = unsafe { TcpStream::from_raw_fd(res) };
                        if stopping.is_none() {
                            if let Err(e) = sock.set_nodelay(true) {
                                failed = Some(e);
                                continue;
                            }
                            let j = conns.len();
                            conns.push(Some(Conn {
                                sock,
                                buf: vec![0u8; size].into_boxed_slice(),
                                len: 0,
                                sent: 0,
                                inflight: None,
                            }));
                            let c = conns[j].as_mut().expect("just pushed");
                            push(ring, &recv_entry(j, c))?;
                        }
                    }
                    if stopping.is_none() {
                        push(ring, &accept())?;
                        accept_inflight = true;
                    }
                }
                RECV | SEND => {
                    let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                        continue;
                    };
                    c.inflight = None;
                    if res <= 0 || stopping.is_some() {
                        // End of stream, an error or a cancel: the
                        // connection ends (the kernel holds nothing of it).
                        conns[i] = None;
                        continue;
                    }
                    let n = res as usize;
                    if kind == RECV {
                        c.len = n;
                        c.sent = 0;
                        push(ring, &send_entry(i, c))?;
                    } else {
                        c.sent += n;
                        if c.sent < c.len {
                            // A short send: send the rest.
                            push(ring, &send_entry(i, c))?;
                        } else {
                            push(ring, &recv_entry(i, c))?;
                        }
                    }
                }
                _ => unreachable!("2-bit kind"),
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
    }
}

// ----- tokio ------------------------------------------------------------------

/// Worker threads of the tokio runtime.
pub(super) const TOKIO_WORKERS: usize = 2;

pub(super) fn tokio(
    listener: TcpListener,
    size: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
    burn: bool,
) -> io::Result<Running> {
    listener.set_nonblocking(true)?;
    let used = Arc::new(Mutex::new(ThreadUse::default()));
    let on_stop = used.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(TOKIO_WORKERS)
        .enable_io()
        .on_thread_start(move || pin(cpu))
        .on_thread_stop(move || {
            let u = thread_use();
            *on_stop.lock().unwrap_or_else(|e| e.into_inner()) += u;
        })
        .build()?;
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        loop {
            let (s, _) = listener.accept().await?;
            s.set_nodelay(true)?;
            tokio::spawn(tokio_conn(s, size, burn));
        }
        #[allow(unreachable_code)]
        io::Result::Ok(())
    });
    // The controller only sleeps: its CPU time is not the server's.
    let t = thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            thread::sleep(Duration::from_millis(10));
        }
        // Dropping the runtime cancels every task and joins the workers,
        // which run `on_thread_stop` first.
        drop(rt);
        let u = *used.lock().unwrap_or_else(|e| e.into_inner());
        Ok(u)
    });
    Ok(Running {
        threads: vec![t],
        port: None,
    })
}

async fn tokio_conn(mut s: tokio::net::TcpStream, size: usize, burn: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; size];
    let mut parser = BurnParser::default();
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if burn {
                    loadgen::burn(parser.feed(&buf[..n], size));
                }
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

// ----- compio -----------------------------------------------------------------

/// `runtimes` compio runtimes (its thread-per-core model: one runtime per
/// thread, tasks never migrate), each on its own thread pinned to the
/// server CPU, each accepting on a clone of the listener; a connection
/// stays on the runtime that accepted it.
pub(super) fn compio(
    listener: TcpListener,
    size: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
    runtimes: usize,
    burn: bool,
) -> io::Result<Running> {
    let mut threads = Vec::with_capacity(runtimes);
    for _ in 0..runtimes {
        let l = listener.try_clone()?;
        let stop = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        threads.push(thread::spawn(move || -> io::Result<ThreadUse> {
            pin(cpu);
            let rt = match compio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    let msg = format!("compio runtime: {e}");
                    let _ = ready_tx.send(Err(io::Error::new(e.kind(), msg.clone())));
                    return Err(io::Error::new(e.kind(), msg));
                }
            };
            let r = rt.block_on(async move {
                let listener = match compio::net::TcpListener::from_std(l) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                let _ = ready_tx.send(Ok(()));
                compio::runtime::spawn(async move {
                    loop {
                        let Ok((s, _)) = listener.accept().await else {
                            return;
                        };
                        if s.set_nodelay(true).is_err() {
                            continue;
                        }
                        compio::runtime::spawn(compio_conn(s, size, burn)).detach();
                    }
                })
                .detach();
                while !stop.load(Ordering::Acquire) {
                    compio::time::sleep(Duration::from_millis(10)).await;
                }
                io::Result::Ok(())
            });
            // Dropping the runtime drops every task (and their sockets).
            drop(rt);
            r?;
            Ok(thread_use())
        }));
        // Wait until this runtime listens: a trial never starts against a
        // server that failed to start.
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("compio runtime did not start")),
        }
    }
    drop(listener);
    Ok(Running {
        threads,
        port: None,
    })
}

async fn compio_conn(mut s: compio::net::TcpStream, size: usize, burn: bool) {
    use compio::io::{AsyncRead, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    let mut parser = BurnParser::default();
    loop {
        buf.clear();
        let compio::BufResult(r, b) = s.read(buf).await;
        buf = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if burn {
            loadgen::burn(parser.feed(&buf, size));
        }
        let compio::BufResult(r, b) = s.write_all(buf).await;
        buf = b;
        if r.is_err() {
            return;
        }
    }
}
