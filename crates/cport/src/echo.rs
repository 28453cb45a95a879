//! `cport echo`: the IOCP echo server, for real use.
//!
//! One completion port, `--threads` worker threads looping on its `get`,
//! a listener that keeps several accepts pending, and a heap context per
//! connection that travels with its one operation in flight (the server of
//! [`crate::server`], shared with `cport demo`). Everything received is
//! sent back; short sends are completed.
//!
//! Shutdown: SIGINT and SIGTERM are blocked in every thread before any is
//! started, and one thread takes them with `sigwait`. The first one posts
//! one stop packet per worker; each worker exits on the first it dequeues;
//! the main thread joins them, closes the port (cancelling the pending
//! accepts and the receives of connections still open, which drops and
//! closes them) and exits with status 0. A second signal during shutdown
//! exits at once with status 130.
//!
//! With `--stats`, a line of counters every second:
//!
//! ```text
//! stats [   3s] open 8  req/s 41210  bytes/s 21099520  queued 0  running 1  parked 1  blocked 0  dequeued 123630  errors 0  out-of-fds 0
//! ```
//!
//! `open` connections, `req/s` receives completed with data, `bytes/s`
//! bytes received (each one is echoed back), and from `port.stats()` the
//! packets `queued`, threads `running` completions, threads `parked`
//! waiting for one, threads `blocked` (counted out by blocked-thread
//! detection right now) and packets `dequeued` since the start; `errors`,
//! and `out-of-fds`: accepts that failed for lack of file descriptors
//! (`EMFILE`, `ENFILE`) or memory, which are not re-armed at once but
//! parked until a connection closes or a back-off (10 ms, doubling up to
//! 1 s) passes (see [`crate::server`]).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use completion_port::{Backend, Port};
use crossbeam_channel::RecvTimeoutError;

use crate::demo::{parse_backend, parse_concurrency, parse_threads};
use crate::server::{self, Ctx, Server, LISTENER_KEY, MAX_MESSAGES, STOP_KEY};

/// Most accepts kept pending on the listener at once.
const MAX_PENDING_ACCEPTS: usize = 16;

/// Arguments of `cport echo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on, IP:PORT (port 0: any free port; the address
    /// actually used is printed).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: SocketAddr,
    /// Worker threads dequeuing from the one port [default: one per CPU].
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// The port's concurrency value: how many workers may run completions
    /// at once (0: one per CPU).
    #[arg(long, default_value = "0", value_parser = parse_concurrency)]
    concurrency: usize,
    /// I/O backend: auto, io_uring or epoll (auto honours CPORT_BACKEND).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
    /// Print a line of counters every second: connections open, requests/s,
    /// bytes/s, queued packets, running threads, parked waiters, threads
    /// detected as blocked, packets dequeued, errors, accepts that failed
    /// for lack of file descriptors (out-of-fds).
    #[arg(long)]
    stats: bool,
}

/// `IP:PORT` (`[v6]:PORT` for IPv6), or `localhost:PORT` (127.0.0.1). No
/// name is looked up: a listening address names this machine's interfaces.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = SocketAddr::from_str(s) {
        return Ok(a);
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if host.eq_ignore_ascii_case("localhost") {
            if let Ok(port) = port.parse::<u16>() {
                return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
            }
        }
    }
    Err(format!(
        "{s:?} is not an address to listen on; expected IP:PORT, e.g. 127.0.0.1:7000, \
         0.0.0.0:7000, [::1]:7000 (port 0: any free port)"
    ))
}

// ---------------------------------------------------------------------------
// Termination signals
// ---------------------------------------------------------------------------

/// SIGINT and SIGTERM, blocked in every thread and taken synchronously with
/// `sigwait` by one of them (no async-signal-safety concerns: the waiting
/// thread runs ordinary code when one arrives).
#[derive(Clone, Copy)]
pub(crate) struct TermSignals {
    set: libc::sigset_t,
}

impl TermSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread, and so in every
    /// thread it starts afterwards (threads inherit the mask). Call it
    /// before any thread is started, so no thread can take them the
    /// default way (killing the process without cleanup).
    pub(crate) fn block() -> io::Result<TermSignals> {
        // SAFETY: an all-zero `sigset_t` is a valid value to hand to
        // `sigemptyset`, which initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed `sigset_t`; the
        // signal numbers are valid.
        let ok = unsafe {
            libc::sigemptyset(&mut set) == 0
                && libc::sigaddset(&mut set, libc::SIGINT) == 0
                && libc::sigaddset(&mut set, libc::SIGTERM) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `set` is initialised; a null old-mask pointer is allowed.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(TermSignals { set })
    }

    /// Waits until SIGINT or SIGTERM is delivered to the process; returns
    /// its number.
    pub(crate) fn wait(&self) -> io::Result<libc::c_int> {
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `self.set` is an initialised signal set and `sig` a
            // valid place for the result.
            let r = unsafe { libc::sigwait(&self.set, &mut sig) };
            match r {
                0 => return Ok(sig),
                libc::EINTR => continue,
                e => return Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
}

/// The usual name of a termination signal.
pub(crate) fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Prints a line to stdout, ignoring a closed stdout (never a panic).
macro_rules! say {
    ($($t:tt)*) => {{
        let mut out = io::stdout().lock();
        let _ = writeln!(out, $($t)*);
        let _ = out.flush();
    }};
}

fn listen_error(addr: SocketAddr, e: io::Error) -> io::Error {
    let why = match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "{e} (another program is listening there; choose another port, or port 0 for any free one)"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("{e} (that IP address does not belong to this machine)")
        }
        io::ErrorKind::PermissionDenied => format!(
            "{e} (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        ),
        _ => e.to_string(),
    };
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {why}"))
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(a: Args) -> io::Result<()> {
    // Before any thread starts (the port may start some of its own).
    let signals = TermSignals::block()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot block SIGINT/SIGTERM: {e}")))?;
    let fd_limit = server::raise_fd_limit();
    let threads = a
        .threads
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));

    // 1. Create the port.
    let port = server::open_port(a.concurrency, a.backend)?;

    // 2. Associate the listener with key 0; 3. keep accepts pending.
    let (listener, addr) = server::listen(a.listen).map_err(|e| listen_error(a.listen, e))?;
    let listener = port.associate(listener, LISTENER_KEY).map_err(|e| {
        io::Error::new(
            e.error.kind(),
            format!("cannot associate the listener: {}", e.error),
        )
    })?;
    let accepts = threads.clamp(1, MAX_PENDING_ACCEPTS);
    for _ in 0..accepts {
        listener
            .accept(Ctx::Accept(listener.clone()))
            .map_err(|r| {
                io::Error::new(
                    r.error.kind(),
                    format!("cannot start accepting: {}", r.error),
                )
            })?;
    }

    say!("cport echo: listening on {addr}");
    match port.fallback_reason() {
        Some(why) => say!(
            "backend:      {} (io_uring unavailable: {why})",
            port.backend()
        ),
        None => say!("backend:      {}", port.backend()),
    }
    say!("threads:      {threads}");
    say!(
        "concurrency:  {}{}",
        port.concurrency(),
        if a.concurrency == 0 {
            " (0: one per CPU)"
        } else {
            ""
        }
    );
    say!("accepts:      {accepts} pending");
    if let Some(n) = fd_limit {
        say!("fd limit:     {n} open files (each connection uses one)");
    }
    say!("stop with Ctrl-C or SIGTERM");

    // 4. The pool: every worker dequeues from the same port.
    let server = Arc::new(Server::default());
    let mut workers: Vec<JoinHandle<u64>> = Vec::with_capacity(threads);
    let mut failure: Option<io::Error> = None;
    for i in 0..threads {
        let (port, server) = (port.clone(), server.clone());
        match thread::Builder::new()
            .name(format!("cport-echo-{i}"))
            .spawn(move || server::worker(port, server, None))
        {
            Ok(w) => workers.push(w),
            Err(e) => {
                failure = Some(io::Error::new(
                    e.kind(),
                    format!("cannot start worker thread {i}: {e}"),
                ));
                break;
            }
        }
    }

    // Re-arms accepts parked for lack of file descriptors.
    let rearm = match server::Rearm::start(server.clone()) {
        Ok(r) => Some(r),
        Err(e) => {
            failure.get_or_insert(io::Error::new(
                e.kind(),
                format!("cannot start the accept re-arming thread: {e}"),
            ));
            None
        }
    };
    let n_workers = workers.len();
    if failure.is_none() {
        // The signal thread: the first signal stops the workers, a second
        // one ends the process at once. It is never joined: it stays in
        // `sigwait` until the process exits.
        let port = port.clone();
        let spawned = thread::Builder::new()
            .name("cport-signals".into())
            .spawn(move || signal_thread(signals, port, n_workers));
        if let Err(e) = spawned {
            failure = Some(io::Error::new(
                e.kind(),
                format!("cannot start the signal thread: {e}"),
            ));
        }
    }
    if failure.is_some() {
        stop_workers(&port, n_workers);
    }

    let (stats_stop, stats_thread) = if a.stats && failure.is_none() {
        let (tx, rx) = crossbeam_channel::bounded::<()>(1);
        let (port, server) = (port.clone(), server.clone());
        match thread::Builder::new()
            .name("cport-stats".into())
            .spawn(move || stats_loop(&port, &server, &rx))
        {
            Ok(t) => (Some(tx), Some(t)),
            Err(e) => {
                eprintln!(
                    "cport echo: cannot start the stats thread ({e}); running without --stats"
                );
                (None, None)
            }
        }
    } else {
        (None, None)
    };

    let mut panicked = 0;
    for w in workers {
        if w.join().is_err() {
            panicked += 1;
        }
    }
    drop(rearm);
    drop(stats_stop); // disconnects: the stats thread returns
    if let Some(t) = stats_thread {
        let _ = t.join();
    }
    let open_at_stop = server.live.load(Ordering::Acquire);
    // Cancels the pending accepts and the receives of open connections,
    // dropping (closing) them; returns once nothing is in flight.
    port.close();
    drop(listener);

    if let Some(e) = failure {
        return Err(e);
    }
    say!(
        "cport echo: stopped; {} connections served ({} closed at shutdown), {} requests, {} bytes received, {} bytes echoed, {} errors, {} accepts out of file descriptors",
        server.accepted.load(Ordering::Relaxed),
        open_at_stop,
        server.requests.load(Ordering::Relaxed),
        server.bytes_received.load(Ordering::Relaxed),
        server.echoed_bytes.load(Ordering::Relaxed),
        server.errors.load(Ordering::Relaxed),
        server.out_of_fds.load(Ordering::Relaxed),
    );
    if let Ok(m) = server.messages.lock() {
        for msg in m.iter().take(MAX_MESSAGES) {
            eprintln!("cport echo: error: {msg}");
        }
    }
    if panicked > 0 {
        return Err(io::Error::other(format!(
            "{panicked} worker threads panicked"
        )));
    }
    Ok(())
}

/// Posts one stop packet per worker.
fn stop_workers(port: &Port<Ctx>, n: usize) {
    for _ in 0..n {
        if let Err(r) = port.post(STOP_KEY, 0, Ctx::Stop) {
            eprintln!("cport echo: posting a stop packet failed: {}", r.error);
        }
    }
}

fn signal_thread(signals: TermSignals, port: Port<Ctx>, workers: usize) {
    let mut received = 0;
    loop {
        let sig = match signals.wait() {
            Ok(sig) => sig,
            Err(e) => {
                eprintln!("cport echo: waiting for signals failed: {e}; Ctrl-C will not stop the server cleanly");
                return;
            }
        };
        received += 1;
        if received == 1 {
            eprintln!(
                "cport echo: {} received, stopping {workers} workers (again to exit at once)",
                signal_name(sig)
            );
            stop_workers(&port, workers);
        } else {
            eprintln!(
                "cport echo: {} received again, exiting now",
                signal_name(sig)
            );
            std::process::exit(130);
        }
    }
}

/// Prints a line of counters every second until `stop` is disconnected.
fn stats_loop(port: &Port<Ctx>, server: &Server, stop: &crossbeam_channel::Receiver<()>) {
    let start = Instant::now();
    let mut next = start + Duration::from_secs(1);
    let mut last_requests = server.requests.load(Ordering::Relaxed);
    let mut last_bytes = server.bytes_received.load(Ordering::Relaxed);
    let mut last_at = start;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let requests = server.requests.load(Ordering::Relaxed);
        let bytes = server.bytes_received.load(Ordering::Relaxed);
        let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
        let s = port.stats();
        say!(
            "stats [{:4}s] open {}  req/s {:.0}  bytes/s {:.0}  queued {}  running {}  parked {}  blocked {}  dequeued {}  errors {}  out-of-fds {}",
            now.duration_since(start).as_secs(),
            server.live.load(Ordering::Acquire),
            (requests - last_requests) as f64 / secs,
            (bytes - last_bytes) as f64 / secs,
            s.queued,
            s.running,
            s.parked,
            s.blocked,
            s.dequeued,
            server.errors.load(Ordering::Relaxed),
            server.out_of_fds.load(Ordering::Relaxed),
        );
        last_requests = requests;
        last_bytes = bytes;
        last_at = now;
        next += Duration::from_secs(1);
        if next < now {
            // Fell behind (suspended?): realign instead of catching up.
            next = now + Duration::from_secs(1);
        }
    }
}
