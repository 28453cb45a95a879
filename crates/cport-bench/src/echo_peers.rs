//! The echo peers: a hand-written single-thread level-triggered epoll
//! loop, a tokio multi-thread runtime with 2 workers and compio
//! thread-per-core runtimes (the raw io_uring loop is `echo_raw_uring.rs`). All pin
//! their threads to the server CPU and report their own threads' CPU use,
//! like our server; tokio and compio do the work a request asks for when
//! `costs` is set (the `mixed` and `handlers` workloads): spin inline, and
//! make a blocking call inline (compio, tokio) or on tokio's blocking pool
//! (`spawn_blocking`), as their users would write it.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::super::loadgen::{self, CostParser};
use super::super::{pin, thread_use, ThreadUse};
use super::{Running, TokioBlocking};

// ----- raw epoll --------------------------------------------------------------

/// The raw epoll loop on its own thread, pinned to `cpu`; it counts the
/// connections it has registered in `accepted` (the `scale` memory probe
/// waits for them).
pub(super) fn raw_epoll(
    listener: TcpListener,
    size: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
    accepted: Arc<AtomicUsize>,
) -> io::Result<Running> {
    listener.set_nonblocking(true)?;
    let t = thread::spawn(move || {
        pin(cpu);
        raw_loop(listener, size, &stop, &accepted)?;
        Ok(thread_use())
    });
    Ok(Running {
        threads: vec![t],
        port: None,
        library_before: None,
    })
}

fn raw_loop(
    listener: TcpListener,
    size: usize,
    stop: &AtomicBool,
    accepted: &AtomicUsize,
) -> io::Result<()> {
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
                    accepted.fetch_add(1, Ordering::Release);
                }
                continue;
            }
            let i = ev.u64 as usize;
            let Some(s) = conns[i].as_mut() else { continue };
            match s.read(&mut buf) {
                Ok(0) => conns[i] = None,
                Ok(k) => {
                    // 512-byte echoes fit the socket buffer; a full buffer
                    // would be a bug of the benchmark, not a slow path. A
                    // failed write (the client reset) ends the connection.
                    if write_all_nonblocking(s, &buf[..k]).is_err() {
                        conns[i] = None;
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

// ----- tokio ------------------------------------------------------------------

/// Worker threads of the tokio runtime.
pub(super) const TOKIO_WORKERS: usize = 2;

pub(super) fn tokio(
    listener: TcpListener,
    size: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
    costs: bool,
    blocking: TokioBlocking,
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
            tokio::spawn(tokio_conn(s, size, costs, blocking));
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
        library_before: None,
    })
}

async fn tokio_conn(
    mut s: tokio::net::TcpStream,
    size: usize,
    costs: bool,
    blocking: TokioBlocking,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; size];
    let mut parser = CostParser::default();
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if costs {
                    let w = parser.feed(&buf[..n], size);
                    loadgen::burn(w.spin_ns);
                    if w.block_ns > 0 && blocking == TokioBlocking::SpawnBlocking {
                        let ns = w.block_ns;
                        if tokio::task::spawn_blocking(move || loadgen::block(ns))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    } else {
                        loadgen::block(w.block_ns);
                    }
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
    costs: bool,
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
                        compio::runtime::spawn(compio_conn(s, size, costs)).detach();
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
        library_before: None,
    })
}

async fn compio_conn(mut s: compio::net::TcpStream, size: usize, costs: bool) {
    use compio::io::{AsyncRead, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    let mut parser = CostParser::default();
    loop {
        buf.clear();
        let compio::BufResult(r, b) = s.read(buf).await;
        buf = b;
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if costs {
            parser.feed(&buf, size).run_inline();
        }
        let compio::BufResult(r, b) = s.write_all(buf).await;
        buf = b;
        if r.is_err() {
            return;
        }
    }
}
