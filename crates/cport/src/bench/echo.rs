//! TCP echo over loopback: `connections` × `size`-byte messages in closed
//! loops (the shared [`loadgen`](super::loadgen)), against
//! - **ours**: one port, 2 worker threads (concurrency 2), the seed's
//!   pattern: accept → associate → recv → send → recv …;
//! - **raw epoll**: a hand-written single-thread level-triggered epoll loop;
//! - **raw io_uring**: a hand-written single-thread io_uring loop
//!   (`echo_peers.rs`);
//! - **tokio**: a tokio multi-thread runtime with 2 workers (`echo_peers.rs`);
//! - **compio**: compio's thread-per-core runtime, one runtime per thread,
//!   each accepting on the same listener (`echo_peers.rs`).
//!
//! Every server can also burn the CPU each request asks for (the `mixed`
//! workload, see `loadgen::BurnParser`), and ours counts the connections it
//! has accepted and armed (the `scale` workload's memory probe).
//!
//! Server threads are pinned to one CPU and the load generator to another
//! (when pinning is on), so both sides of every pair get the same budget.
//! Each server reports the CPU time its own threads used.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use completion_port::{Backend, Buf, GetError, Handle, Port};

use super::loadgen::{self, BurnParser, Load};
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
    /// compio with this many thread-per-core runtimes.
    Compio(usize),
}

/// One trial's measurements.
#[derive(Debug, Clone)]
pub struct EchoRun {
    pub load: Load,
    /// What the server's own threads used.
    pub server: ThreadUse,
    /// Resident memory added per connection once all were established
    /// (when asked for).
    pub rss_per_conn: Option<f64>,
}

/// How to run a trial.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    pub connections: usize,
    pub size: usize,
    pub duration: Duration,
    pub server_cpu: Option<usize>,
    pub client_cpu: Option<usize>,
    /// Requests carry a CPU cost the server burns (`mixed`).
    pub burn_seed: Option<u64>,
    /// Time every round trip.
    pub latency: bool,
    /// Run the load generator in a child process (this program, hidden
    /// `--loadgen-child`), so the server's process holds only the server's
    /// ends of the connections (half the descriptors) and its VmRSS is
    /// measured before and after they are established: ours only, as it
    /// waits until the server has armed every one. The child closes with
    /// a reset (no TIME_WAIT) and starts the clock after a first round
    /// trip per connection (see `loadgen::Opts::ramp`). No latency, no burn.
    pub measure_rss: bool,
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
#[cfg(test)]
pub fn trial(
    server: Server,
    connections: usize,
    size: usize,
    duration: Duration,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
) -> io::Result<EchoRun> {
    trial_with(
        server,
        Opts {
            connections,
            size,
            duration,
            server_cpu,
            client_cpu,
            burn_seed: None,
            latency: false,
            measure_rss: false,
        },
    )
}

/// A loopback listener with a backlog deep enough for thousands of
/// connections made in a burst.
fn listen() -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    sock.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// VmRSS of this process, in bytes.
pub fn vm_rss() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| io::Error::other("no VmRSS line in /proc/self/status"))
}

/// Hands freed heap memory back to the kernel, so RSS growth that
/// follows is new memory, not reuse of a previous trial's.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs one trial with options: start the server, drive it, stop it.
pub fn trial_with(server: Server, o: Opts) -> io::Result<EchoRun> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let burn = o.burn_seed.is_some();
    let size = o.size;
    if o.measure_rss && !matches!(server, Server::Ours(_)) {
        return Err(io::Error::other(
            "echo: the memory probe needs our server (it counts armed connections)",
        ));
    }
    let running = match server {
        Server::Ours(b) => ours(listener, b, size, o.server_cpu, burn, accepted.clone())?,
        Server::RawEpoll => raw_epoll(listener, size, stop.clone(), o.server_cpu)?,
        Server::RawUring => peers::raw_uring(listener, size, stop.clone(), o.server_cpu)?,
        Server::Tokio => peers::tokio(listener, size, stop.clone(), o.server_cpu, burn)?,
        Server::Compio(n) => {
            peers::compio(listener, size, stop.clone(), o.server_cpu, n.max(1), burn)?
        }
    };
    if o.measure_rss {
        let r = child_load(addr, o, &accepted);
        stop.store(true, Ordering::Release);
        running.stop()?;
        // The server's CPU during the timed part only (the process holds
        // nothing else that runs): accepting and closing thousands of
        // connections is not part of the measured work.
        let (load, rss, server) = r?;
        return Ok(EchoRun {
            load,
            server,
            rss_per_conn: Some(rss),
        });
    }
    let load = thread::scope(|s| {
        s.spawn(|| {
            pin(o.client_cpu);
            let opts = loadgen::Opts {
                latency: o.latency,
                burn_seed: o.burn_seed,
                ..Default::default()
            };
            loadgen::run_with(addr, o.connections, size, o.duration, opts)
        })
        .join()
        .map_err(|_| io::Error::other("load generator panicked"))?
    });
    stop.store(true, Ordering::Release);
    let server = running.stop()?;
    Ok(EchoRun {
        load: load?,
        server,
        rss_per_conn: None,
    })
}

/// Drives the server from a child process (see [`Opts::measure_rss`]);
/// returns the load, the server process's VmRSS growth per connection and
/// this process's CPU use during the timed part.
fn child_load(
    addr: std::net::SocketAddr,
    o: Opts,
    accepted: &AtomicUsize,
) -> io::Result<(Load, f64, ThreadUse)> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe()?;
    let spec = format!(
        "{addr},{},{},{},{}",
        o.connections,
        o.size,
        o.duration.as_millis(),
        o.client_cpu.map_or("-".to_string(), |c| c.to_string())
    );
    trim_heap();
    let before = vm_rss()?;
    let mut child = Command::new(exe)
        .args(["bench", "--loadgen-child", &spec])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start the load-generator process: {e}"),
            )
        })?;
    let r = (|| -> io::Result<(Load, f64, ThreadUse)> {
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no stdin"))?;
        let mut out = io::BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("no stdout"))?,
        );
        let mut line = String::new();
        out.read_line(&mut line)?;
        if line.trim() != "connected" {
            return Err(io::Error::other(format!(
                "load-generator process: expected \"connected\", got {:?}",
                line.trim()
            )));
        }
        // Wait until the server has accepted and armed every connection.
        let limit = Instant::now() + Duration::from_secs(60);
        while accepted.load(Ordering::Acquire) < o.connections {
            if Instant::now() > limit {
                return Err(io::Error::other(format!(
                    "echo: the server armed {} of {} connections within 60 s",
                    accepted.load(Ordering::Acquire),
                    o.connections
                )));
            }
            thread::sleep(Duration::from_millis(1));
        }
        let after = vm_rss()?;
        let meter = super::Meter::start();
        writeln!(stdin, "go")?;
        stdin.flush()?;
        line.clear();
        out.read_line(&mut line)?;
        let used = meter.stop(0);
        let mut it = line.split_whitespace().map(str::parse::<u64>);
        let (Some(Ok(requests)), Some(Ok(ns))) = (it.next(), it.next()) else {
            return Err(io::Error::other(format!(
                "load-generator process: bad result line {:?}",
                line.trim()
            )));
        };
        let per_conn = after.saturating_sub(before) as f64 / o.connections.max(1) as f64;
        Ok((
            Load {
                requests,
                elapsed: Duration::from_nanos(ns),
                latency: None,
            },
            per_conn,
            ThreadUse {
                cpu: used.cpu,
                sys: used.sys,
                csw: used.csw,
            },
        ))
    })();
    if r.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let r = r?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "the load-generator process failed ({status})"
        )));
    }
    Ok(r)
}

/// The hidden `cport bench --loadgen-child SPEC`: connects, says
/// "connected", waits for "go" on stdin, drives the server, prints
/// "REQUESTS NANOSECONDS".
pub(super) fn loadgen_child(spec: &str) -> io::Result<()> {
    use std::io::BufRead;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad --loadgen-child {spec:?}"),
        )
    };
    let f: Vec<&str> = spec.split(',').collect();
    if f.len() != 5 {
        return Err(bad());
    }
    let addr: std::net::SocketAddr = f[0].parse().map_err(|_| bad())?;
    let connections: usize = f[1].parse().map_err(|_| bad())?;
    let size: usize = f[2].parse().map_err(|_| bad())?;
    let ms: u64 = f[3].parse().map_err(|_| bad())?;
    let cpu: Option<usize> = match f[4] {
        "-" => None,
        c => Some(c.parse().map_err(|_| bad())?),
    };
    pin(cpu);
    // Room for the client ends (one descriptor each) and a few more.
    raise_nofile(connections as u64 + 256)?;
    let mut after = || -> io::Result<()> {
        let mut o = io::stdout().lock();
        writeln!(o, "connected")?;
        o.flush()?;
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        if line.trim() == "go" {
            Ok(())
        } else {
            Err(io::Error::other("load-generator process: no \"go\""))
        }
    };
    let opts = loadgen::Opts {
        zero_linger: true,
        ramp: true,
        after_connect: Some(&mut after),
        ..Default::default()
    };
    let load = loadgen::run_with(addr, connections, size, Duration::from_millis(ms), opts)?;
    let mut o = io::stdout().lock();
    writeln!(o, "{} {}", load.requests, load.elapsed.as_nanos())?;
    o.flush()
}

/// Raises RLIMIT_NOFILE to at least `need`, or says why it cannot.
pub(super) fn raise_nofile(need: u64) -> io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: need,
        rlim_max: lim.rlim_max.max(need),
    };
    // SAFETY: `new` is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    Err(io::Error::new(
        e.kind(),
        format!(
            "needs {need} open files, but RLIMIT_NOFILE is {} (hard {}) and could not be raised: {e}; \
             raise it (e.g. `ulimit -n {need}`, as root for the hard limit) and run again",
            lim.rlim_cur, lim.rlim_max
        ),
    ))
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
        sample(
            server,
            Opts {
                connections: CONNECTIONS,
                size: SIZE,
                duration: Duration::from_millis(ms),
                server_cpu: self.s.cpu_for(SERVER_SLOT),
                client_cpu: self.s.cpu_for(CLIENT_SLOT),
                burn_seed: None,
                latency: false,
                measure_rss: false,
            },
        )
    }
}

/// One trial as a sample whose CPU is the server's own (and whose latency
/// and memory are the load generator's and the probe's, when measured).
pub(super) fn sample(server: Server, o: Opts) -> io::Result<Sample> {
    let r = trial_with(server, o)?;
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
        lat: r.load.latency.as_ref().map(super::Lat::of),
        rss_per_conn: r.rss_per_conn,
    })
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
        (Server::Compio(1), _) => ("echo_vs_compio", "compio (1 runtime)", 1.1),
        (Server::Compio(_), _) => ("echo_vs_compio", "compio (2 runtimes)", 1.1),
        (Server::Ours(_), _) => {
            return Err(io::Error::other("echo: our port is not a peer"));
        }
    };
    // The table adds "(peer: …)" to the label; the diagnostics do not, so
    // the rows against the other peers name theirs, shortly.
    let label = match peer {
        Server::RawUring => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs raw io_uring)"),
        Server::Tokio => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs tokio)"),
        Server::Compio(_) => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs compio)"),
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
        kind: super::RatioKind::Rate,
        note: None,
        extra: Vec::new(),
    })
}

// ----- ours -----------------------------------------------------------------

/// Key of the listener and of stop packets.
const LISTENER: usize = 0;
const STOP: usize = usize::MAX;

/// The per-operation context: what the packet is about, the connection,
/// and where its byte stream is in the current message (for `mixed`).
enum Op {
    Accept,
    Recv(Handle<Op>, BurnParser),
    Send(Handle<Op>, BurnParser),
    Stop,
}

fn ours(
    listener: TcpListener,
    backend: Backend,
    size: usize,
    cpu: Option<usize>,
    burn: bool,
    accepted: Arc<AtomicUsize>,
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
        let accepted = accepted.clone();
        threads.push(thread::spawn(move || {
            pin(cpu);
            worker(&port, &listener, size, burn, &accepted)?;
            Ok(thread_use())
        }));
    }
    Ok(Running {
        threads,
        port: Some(port),
    })
}

fn worker(
    port: &Port<Op>,
    listener: &Handle<Op>,
    size: usize,
    burn: bool,
    accepted: &AtomicUsize,
) -> io::Result<()> {
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
                    conn.recv(
                        Buf::with_capacity(size),
                        Op::Recv(conn.clone(), BurnParser::default()),
                    )?;
                    accepted.fetch_add(1, Ordering::Release);
                }
                listener.accept(Op::Accept)?;
            }
            Op::Recv(conn, mut parser) => {
                let buf = p.take_buf().expect("recv returns its buffer");
                if matches!(p.result, Ok(n) if n > 0) {
                    if burn {
                        loadgen::burn(parser.feed(&buf, size));
                    }
                    conn.send(buf, Op::Send(conn.clone(), parser))?;
                }
                // Ok(0) or an error: the connection ends (dropping the handle).
            }
            Op::Send(conn, parser) => {
                let mut buf = p.take_buf().expect("send returns its buffer");
                let Ok(n) = p.result else { continue };
                if n < buf.len() {
                    let rest = Buf::copy_from(&buf[n..]);
                    conn.send(rest, Op::Send(conn.clone(), parser))?;
                } else {
                    buf.clear();
                    conn.recv(buf, Op::Recv(conn.clone(), parser))?;
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
            Server::Compio(1),
            Server::Compio(2),
        ] {
            let r = trial(s, 4, 512, Duration::from_millis(200), None, None).unwrap();
            assert!(r.load.requests > 0, "{s:?} served nothing");
        }
    }
}
