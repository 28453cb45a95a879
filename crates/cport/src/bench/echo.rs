//! TCP echo over loopback: `connections` × `size`-byte messages in closed
//! loops (the shared [`loadgen`](super::loadgen)), against
//! - **ours**: one port, 2 worker threads (concurrency 2), the seed's
//!   pattern: accept → associate → recv → send → recv …;
//! - **raw epoll**: a hand-written single-thread level-triggered epoll loop;
//! - **raw io_uring**: a hand-written single-thread io_uring loop
//!   (`echo_peers.rs`);
//! - **tokio**: a tokio multi-thread runtime with 2 workers (`echo_peers.rs`).
//!
//! Server threads are pinned to one CPU and the load generator to another
//! (when pinning is on), so both sides of every pair get the same budget.
//! Each server reports the CPU time its own threads used.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use completion_port::{Backend, Buf, GetError, Handle, Port};

use super::loadgen::{self, Load};
#[path = "echo_peers.rs"]
mod peers;
use super::{pin, run_pairs, Contest, Row, Sample, Settings};

/// Which server a trial runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Our port on this backend, with 2 workers.
    Ours(Backend),
    /// The hand-written single-thread epoll loop.
    RawEpoll,
    /// The hand-written single-thread io_uring loop.
    RawUring,
    /// A tokio multi-thread runtime with 2 workers.
    Tokio,
}

/// One trial's measurements.
#[derive(Debug, Clone, Copy)]
pub struct EchoRun {
    pub load: Load,
    /// What the server's own threads used.
    pub server: ThreadUse,
}

/// CPU time, kernel CPU time and context switches of some threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadUse {
    pub cpu: Duration,
    pub sys: Duration,
    pub csw: u64,
}

impl std::ops::AddAssign for ThreadUse {
    fn add_assign(&mut self, o: ThreadUse) {
        self.cpu += o.cpu;
        self.sys += o.sys;
        self.csw += o.csw;
    }
}

/// Workers of our server.
const WORKERS: usize = 2;

/// Runs one trial: start `server`, drive it, stop it.
pub fn trial(
    server: Server,
    connections: usize,
    size: usize,
    duration: Duration,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
) -> io::Result<EchoRun> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = match server {
        Server::Ours(b) => ours(listener, b, size, server_cpu)?,
        Server::RawEpoll => raw_epoll(listener, size, stop.clone(), server_cpu)?,
        Server::RawUring => peers::raw_uring(listener, size, stop.clone(), server_cpu)?,
        Server::Tokio => peers::tokio(listener, size, stop.clone(), server_cpu)?,
    };
    let load = thread::scope(|s| {
        s.spawn(|| {
            pin(client_cpu);
            loadgen::run(addr, connections, size, duration)
        })
        .join()
        .map_err(|_| io::Error::other("load generator panicked"))?
    });
    stop.store(true, Ordering::Release);
    let server = running.stop()?;
    Ok(EchoRun {
        load: load?,
        server,
    })
}

/// A running server: how to stop it and collect its threads' CPU time.
struct Running {
    threads: Vec<JoinHandle<io::Result<ThreadUse>>>,
    port: Option<Port<Op>>,
}

impl Running {
    fn stop(self) -> io::Result<ThreadUse> {
        if let Some(port) = &self.port {
            for _ in 0..self.threads.len() {
                // A refused post means the port closed already: the worker exits anyway.
                let _ = port.post(STOP, 0, Op::Stop);
            }
        }
        let mut total = ThreadUse::default();
        for t in self.threads {
            total += t
                .join()
                .map_err(|_| io::Error::other("server thread panicked"))??;
        }
        if let Some(port) = self.port {
            port.close();
        }
        Ok(total)
    }
}

/// What the calling thread has used so far: CPU time (thread CPU clock),
/// kernel CPU time and context switches (`getrusage(RUSAGE_THREAD)`).
fn thread_use() -> ThreadUse {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable; RUSAGE_THREAD is the caller.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ThreadUse {
        cpu: Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        ),
        sys: Duration::from_secs(ru.ru_stime.tv_sec.max(0) as u64)
            + Duration::from_micros(ru.ru_stime.tv_usec.max(0) as u64),
        csw: (ru.ru_nvcsw.max(0) + ru.ru_nivcsw.max(0)) as u64,
    }
}

// ----- the workload --------------------------------------------------------

/// Connections of the load generator.
const CONNECTIONS: usize = 50;
/// Bytes per message.
const SIZE: usize = 512;
/// Pin slots: the server's threads on one CPU, the load generator on another.
const SERVER_SLOT: usize = 0;
const CLIENT_SLOT: usize = 1;

struct Echo<'a> {
    s: &'a Settings,
    backend: Backend,
    peer: Server,
    peer_name: &'static str,
}

impl Echo<'_> {
    /// One trial of `server` lasting `ms` milliseconds (the "ops" the trial
    /// loop passes in), as a sample whose CPU is the server's own.
    fn sample(&self, server: Server, ms: u64) -> io::Result<Sample> {
        let r = trial(
            server,
            CONNECTIONS,
            SIZE,
            Duration::from_millis(ms),
            self.s.cpu_for(SERVER_SLOT),
            self.s.cpu_for(CLIENT_SLOT),
        )?;
        if r.load.requests == 0 {
            return Err(io::Error::other(format!(
                "echo: {server:?} served no request"
            )));
        }
        Ok(Sample {
            ops: r.load.requests,
            wall: r.load.elapsed,
            cpu: r.server.cpu,
            sys: r.server.sys,
            csw: r.server.csw,
            stalls: 0,
        })
    }
}

impl Contest for Echo<'_> {
    fn label(&self) -> String {
        format!("echo ({}) vs {}", self.backend, self.peer_name)
    }
    fn ours(&mut self, ms: u64) -> io::Result<Sample> {
        self.sample(Server::Ours(self.backend), ms)
    }
    fn peer(&mut self, ms: u64) -> io::Result<Sample> {
        self.sample(self.peer, ms)
    }
}

/// The echo row for one of our backends against `peer`: the raw epoll
/// loop (rows `echo_io_uring`, `echo_epoll`), the raw io_uring loop
/// (`echo_vs_raw_uring`) or tokio (`echo_vs_tokio`).
pub(super) fn run(s: &Settings, backend: Backend, peer: Server) -> io::Result<Row> {
    // Trials are timed, not counted: the "ops" are milliseconds.
    let ms = s.work(2000, 500, 50, 1);
    let (id, peer_name, target) = match (peer, backend) {
        (Server::RawEpoll, Backend::Epoll) => ("echo_epoll", "raw epoll (1 thread)", 0.9),
        (Server::RawEpoll, _) => ("echo_io_uring", "raw epoll (1 thread)", 1.0),
        (Server::RawUring, _) => ("echo_vs_raw_uring", "raw io_uring (1 thread)", 0.98),
        (Server::Tokio, _) => ("echo_vs_tokio", "tokio (2 workers)", 1.0),
        (Server::Ours(_), _) => {
            return Err(io::Error::other("echo: our port is not a peer"));
        }
    };
    // The table adds "(peer: …)" to the label; the diagnostics do not, so
    // the rows against the other peers name theirs, shortly.
    let label = match peer {
        Server::RawUring => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs raw io_uring)"),
        Server::Tokio => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs tokio)"),
        _ => format!("echo {CONNECTIONS}x{SIZE} B ({backend})"),
    };
    let mut c = Echo {
        s,
        backend,
        peer,
        peer_name,
    };
    let (ours, peer) = run_pairs(
        s,
        &mut c,
        ms,
        (ms / 4).max(50),
        (
            format!("completion-port ({backend}, {WORKERS} workers)"),
            peer_name.to_string(),
        ),
    )?;
    Ok(Row {
        id,
        label,
        describe: format!(
            "TCP echo over loopback: {CONNECTIONS} connections x {SIZE}-byte messages in closed loops for {ms} ms \
             (shared epoll load generator on its own CPU); ops = verified round trips, CPU = server threads only"
        ),
        ops_per_trial: 0,
        ours,
        peer,
        target: Some(target),
    })
}

// ----- ours -----------------------------------------------------------------

/// Key of the listener and of stop packets.
const LISTENER: usize = 0;
const STOP: usize = usize::MAX;

/// The per-operation context: what the packet is about, and the connection.
enum Op {
    Accept,
    Recv(Handle<Op>),
    Send(Handle<Op>),
    Stop,
}

fn ours(
    listener: TcpListener,
    backend: Backend,
    size: usize,
    cpu: Option<usize>,
) -> io::Result<Running> {
    let port = Port::<Op>::builder()
        .backend(backend)
        .concurrency(WORKERS)
        .build()?;
    let listener = port.associate(listener, LISTENER)?;
    listener.accept(Op::Accept)?;
    let mut threads = Vec::new();
    for _ in 0..WORKERS {
        let port = port.clone();
        let listener = listener.clone();
        threads.push(thread::spawn(move || {
            pin(cpu);
            worker(&port, &listener, size)?;
            Ok(thread_use())
        }));
    }
    Ok(Running {
        threads,
        port: Some(port),
    })
}

fn worker(port: &Port<Op>, listener: &Handle<Op>, size: usize) -> io::Result<()> {
    let mut next_key = 1usize;
    loop {
        let mut p = match port.get(Some(Duration::from_secs(30))) {
            Ok(p) => p,
            Err(GetError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match std::mem::replace(&mut p.context, Op::Stop) {
            Op::Stop => return Ok(()),
            Op::Accept => {
                if let Some(acc) = p.take_accepted() {
                    acc.socket.set_nodelay(true)?;
                    next_key += 1;
                    let conn = port.associate(acc.socket, next_key)?;
                    conn.recv(Buf::with_capacity(size), Op::Recv(conn.clone()))?;
                }
                listener.accept(Op::Accept)?;
            }
            Op::Recv(conn) => {
                let buf = p.take_buf().expect("recv returns its buffer");
                if matches!(p.result, Ok(n) if n > 0) {
                    conn.send(buf, Op::Send(conn.clone()))?;
                }
                // Ok(0) or an error: the connection ends (dropping the handle).
            }
            Op::Send(conn) => {
                let mut buf = p.take_buf().expect("send returns its buffer");
                let Ok(n) = p.result else { continue };
                if n < buf.len() {
                    let rest = Buf::copy_from(&buf[n..]);
                    conn.send(rest, Op::Send(conn.clone()))?;
                } else {
                    buf.clear();
                    conn.recv(buf, Op::Recv(conn.clone()))?;
                }
            }
        }
    }
}

// ----- raw epoll --------------------------------------------------------------

fn raw_epoll(
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

#[cfg(test)]
mod tests {
    use completion_port::Backend;

    use super::*;

    #[test]
    fn every_server_echoes() {
        for s in [
            Server::Ours(Backend::IoUring),
            Server::Ours(Backend::Epoll),
            Server::RawEpoll,
            Server::RawUring,
            Server::Tokio,
        ] {
            let r = trial(s, 4, 512, Duration::from_millis(200), None, None).unwrap();
            assert!(r.load.requests > 0, "{s:?} served nothing");
        }
    }
}
