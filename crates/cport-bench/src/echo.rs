//! TCP echo over loopback: `connections` × `size`-byte messages in closed
//! loops (the shared [`loadgen`](super::loadgen)), against
//! - **ours**: one port, 2 worker threads (concurrency 2), the seed's
//!   pattern: accept → associate → recv → send → recv … (`echo_ours.rs`);
//! - **raw epoll**: a hand-written single-thread level-triggered epoll loop
//!   (`echo_peers.rs`);
//! - **raw io_uring**: a hand-written single-thread io_uring loop
//!   (`echo_raw_uring.rs`);
//! - **tokio**: a tokio multi-thread runtime with 2 workers (`echo_peers.rs`);
//! - **compio**: compio's thread-per-core runtime, one runtime per thread,
//!   each accepting on the same listener (`echo_peers.rs`).
//!
//! `echo_serve.rs` runs any of them on its own (`--serve`), to be driven
//! from outside.
//!
//! Every server can also do the work each request asks for: spin (the
//! `mixed` workload) or make a blocking call (`handlers`), see
//! `loadgen::CostParser`; and ours counts the connections it
//! has accepted and armed (the `scale` workload's memory probe, whose
//! load generator runs in a child process: `echo_child.rs`).
//!
//! Server threads are pinned to one CPU and the load generator to another
//! (when pinning is on), so both sides of every pair get the same budget.
//! Each server reports the CPU time its own threads used.
//!
//! This file holds the trial (start a server, drive it, stop it), the
//! [`EchoContest`] that `echo`, `mixed` and `scale` run through the trial
//! loop, and the `echo` rows.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use completion_port::{Backend, Port};

use super::loadgen::{self, Cost, Load};
use super::{
    library_threads_use, pin, run_pairs, Contest, Lat, RatioKind, Row, Sample, Settings, Side,
    ThreadUse,
};

#[path = "echo_child.rs"]
mod child;
#[path = "echo_ours.rs"]
mod ours;
#[path = "echo_peers.rs"]
mod peers;
#[path = "echo_raw_uring.rs"]
mod raw_uring;
#[path = "echo_serve.rs"]
mod serve;

pub(super) use child::{loadgen_child, raise_nofile};
use ours::{Op, STOP};
pub use ours::{Pool, POOL_EXHAUSTED};
pub(super) use serve::serve;

/// Which server a trial runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// Our port on this backend, with 2 workers.
    Ours(Backend),
    /// Our port with a worker pool of its own shape (`handlers`).
    OursPool(ours::Pool),
    /// Our port on this backend, with 2 workers, receiving with
    /// `recv_pooled` from a pool of this many buffers (`pooled.rs`).
    OursPooled(Backend, usize),
    /// The hand-written single-thread epoll loop.
    RawEpoll,
    /// The hand-written single-thread io_uring loop, its ring set up so.
    RawUring(raw_uring::Setup),
    /// A tokio multi-thread runtime with 2 workers; the blocking calls
    /// requests ask for made inline, or with `spawn_blocking`.
    Tokio(TokioBlocking),
    /// compio with this many thread-per-core runtimes.
    Compio(usize),
}

/// The raw io_uring peer of the rows: `SINGLE_ISSUER | DEFER_TASKRUN`,
/// the fastest setup of a single-thread loop (the same CPU per request as
/// the same loop in C with liburing, and as the raw epoll loop; a plainly
/// set-up ring needs ~50 % more on Linux 6.18: BENCHMARKS.md, "The raw
/// peers").
pub const RAW_URING: Server = Server::RawUring(raw_uring::Setup::Defer);

/// How the tokio server makes a request's blocking call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokioBlocking {
    /// In the task, on the runtime's worker thread.
    Inline,
    /// `tokio::task::spawn_blocking(..).await`: on tokio's blocking pool.
    SpawnBlocking,
}

/// The tokio peer of the plain rows.
pub const TOKIO: Server = Server::Tokio(TokioBlocking::Inline);

/// One trial's measurements.
#[derive(Debug, Clone)]
pub struct EchoRun {
    pub load: Load,
    /// What the server's own threads used (ours: its workers and the library's own threads).
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
    /// Requests carry a cost the server pays (`mixed`, `handlers`).
    pub cost: Option<Cost>,
    /// Time every round trip.
    pub latency: bool,
    /// Run the load generator in a child process (this program, hidden
    /// `--loadgen-child`), so the server's process holds only the server's
    /// ends of the connections (half the descriptors) and its VmRSS is
    /// measured before and after they are established: ours only, as it
    /// waits until the server has armed every one. The child closes with
    /// a reset (no TIME_WAIT) and starts the clock after a first round
    /// trip per connection (see `loadgen::Opts::ramp`). No latency, no cost.
    pub measure_rss: bool,
}

/// Workers of our server.
pub(super) const WORKERS: usize = 2;

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
            cost: None,
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

/// Runs one trial with options: start the server, drive it, stop it.
pub fn trial_with(server: Server, o: Opts) -> io::Result<EchoRun> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let costs = o.cost.is_some();
    let size = o.size;
    if o.measure_rss
        && !matches!(
            server,
            Server::Ours(_) | Server::OursPool(_) | Server::OursPooled(..) | Server::RawEpoll
        )
    {
        return Err(io::Error::other(
            "echo: the memory probe needs our server or the raw epoll loop (they count armed connections)",
        ));
    }
    let running = start(
        server,
        listener,
        size,
        &stop,
        o.server_cpu,
        costs,
        &accepted,
    )?;
    if o.measure_rss {
        let r = child::child_load(addr, o, &accepted);
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
                cost: o.cost,
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

/// Starts `server` on `listener`: its threads pinned to `cpu`, doing the
/// work requests ask for when `costs`, counting connections armed in
/// `accepted` (ours and the raw epoll loop); the peers stop when `stop` is set.
fn start(
    server: Server,
    listener: TcpListener,
    size: usize,
    stop: &Arc<AtomicBool>,
    cpu: Option<usize>,
    costs: bool,
    accepted: &Arc<AtomicUsize>,
) -> io::Result<Running> {
    match server {
        Server::Ours(b) => {
            let pool = ours::Pool::echo(b);
            ours::start(listener, pool, size, cpu, costs, accepted.clone())
        }
        Server::OursPool(pool) => ours::start(listener, pool, size, cpu, costs, accepted.clone()),
        Server::OursPooled(b, n) => {
            let pool = ours::Pool {
                pooled: Some(n),
                ..ours::Pool::echo(b)
            };
            ours::start(listener, pool, size, cpu, costs, accepted.clone())
        }
        Server::RawEpoll => peers::raw_epoll(listener, size, stop.clone(), cpu, accepted.clone()),
        Server::RawUring(setup) => raw_uring::raw_uring(listener, size, stop.clone(), cpu, setup),
        Server::Tokio(blocking) => peers::tokio(listener, size, stop.clone(), cpu, costs, blocking),
        Server::Compio(n) => peers::compio(listener, size, stop.clone(), cpu, n.max(1), costs),
    }
}

/// A running server: how to stop it and collect its threads' CPU time.
struct Running {
    threads: Vec<JoinHandle<io::Result<ThreadUse>>>,
    port: Option<Port<Op>>,
    /// Ours: what the library's own threads (`cport-monitor`, …) had used
    /// when the server started; their use during the trial is the
    /// server's too.
    library_before: Option<ThreadUse>,
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
        if let Some(before) = self.library_before {
            total += library_threads_use().since(before);
        }
        if let Some(port) = self.port {
            port.close();
        }
        Ok(total)
    }
}

// ----- the workload --------------------------------------------------------

/// Connections of the load generator (`echo`, `mixed`; `scale`'s small
/// count).
pub(super) const CONNECTIONS: usize = 50;
/// Bytes per message.
pub(super) const SIZE: usize = 512;
/// Pin slots: the server's threads on one CPU, the load generator on another.
const SERVER_SLOT: usize = 0;
const CLIENT_SLOT: usize = 1;

/// A contest of two echo servers, or of one at two connection counts
/// (`scale`): each trial runs its side's server with [`SIZE`]-byte
/// messages for the "ops" the trial loop passes in, as milliseconds, the
/// server and the load generator pinned to their slots.
pub(super) struct EchoContest<'a> {
    pub s: &'a Settings,
    /// Label in the progress lines.
    pub label: String,
    /// The server and the connection count of each side.
    pub ours: (Server, usize),
    pub peer: (Server, usize),
    /// See [`Opts`].
    pub cost: Option<Cost>,
    pub latency: bool,
    pub measure_rss: bool,
    /// Leave the server's threads and the load generator unpinned, so
    /// the server may use every CPU (`handlers`).
    pub unpinned: bool,
}

impl<'a> EchoContest<'a> {
    /// A plain contest: no CPU cost, no latency, no memory probe.
    pub fn new(
        s: &'a Settings,
        label: String,
        ours: (Server, usize),
        peer: (Server, usize),
    ) -> Self {
        EchoContest {
            s,
            label,
            ours,
            peer,
            cost: None,
            latency: false,
            measure_rss: false,
            unpinned: false,
        }
    }

    /// Runs the contest through the trial loop: `ms`-long trials after
    /// warm-ups a quarter as long (at least 50 ms); `names` name the sides.
    pub fn run(&mut self, ms: u64, names: (String, String)) -> io::Result<(Side, Side)> {
        run_pairs(self.s, self, ms, (ms / 4).max(50), names)
    }

    fn sample(&self, (server, connections): (Server, usize), ms: u64) -> io::Result<Sample> {
        sample(
            server,
            Opts {
                connections,
                size: SIZE,
                duration: Duration::from_millis(ms),
                server_cpu: self.s.cpu_for(SERVER_SLOT).filter(|_| !self.unpinned),
                client_cpu: self.s.cpu_for(CLIENT_SLOT).filter(|_| !self.unpinned),
                cost: self.cost,
                latency: self.latency,
                measure_rss: self.measure_rss,
            },
        )
    }
}

/// One trial as a sample whose CPU is the server's own (and whose latency
/// and memory are the load generator's and the probe's, when measured).
fn sample(server: Server, o: Opts) -> io::Result<Sample> {
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
        lat: r.load.latency.as_ref().map(Lat::of),
        rss_per_conn: r.rss_per_conn,
    })
}

impl Contest for EchoContest<'_> {
    fn label(&self) -> String {
        self.label.clone()
    }
    fn ours(&mut self, ms: u64) -> io::Result<Sample> {
        self.sample(self.ours, ms)
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
        (Server::RawUring(_), _) => ("echo_vs_raw_uring", "raw io_uring (1 thread)", 0.98),
        (Server::Tokio(_), _) => ("echo_vs_tokio", "tokio (2 workers)", 1.0),
        (Server::Compio(1), _) => ("echo_vs_compio", "compio (1 runtime)", 1.1),
        (Server::Compio(_), _) => ("echo_vs_compio", "compio (2 runtimes)", 1.1),
        (Server::Ours(_) | Server::OursPool(_) | Server::OursPooled(..), _) => {
            return Err(io::Error::other("echo: our port is not a peer"));
        }
    };
    // The table adds "(peer: …)" to the label; the diagnostics do not, so
    // the rows against the other peers name theirs, shortly.
    let label = match peer {
        Server::RawUring(_) => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs raw io_uring)"),
        Server::Tokio(_) => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs tokio)"),
        Server::Compio(_) => format!("echo {CONNECTIONS}x{SIZE} B ({backend} vs compio)"),
        _ => format!("echo {CONNECTIONS}x{SIZE} B ({backend})"),
    };
    let mut c = EchoContest::new(
        s,
        format!("echo ({backend}) vs {peer_name}"),
        (Server::Ours(backend), CONNECTIONS),
        (peer, CONNECTIONS),
    );
    let (ours, peer) = c.run(
        ms,
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
             (shared epoll load generator on its own CPU); ops = verified round trips, CPU = server threads only (ours: its workers and the library's monitor thread)"
        ),
        ops_per_trial: 0,
        ours,
        peer,
        target: Some(target),
        kind: RatioKind::Rate,
        note: None,
        extra: Vec::new(),
    })
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
            Server::OursPooled(Backend::IoUring, 16),
            Server::OursPooled(Backend::Epoll, 16),
            Server::RawEpoll,
            Server::RawUring(raw_uring::Setup::Plain),
            Server::RawUring(raw_uring::Setup::Coop),
            Server::RawUring(raw_uring::Setup::Defer),
            TOKIO,
            Server::Tokio(TokioBlocking::SpawnBlocking),
            Server::Compio(1),
            Server::Compio(2),
        ] {
            let r = trial(s, 4, 512, Duration::from_millis(200), None, None).unwrap();
            assert!(r.load.requests > 0, "{s:?} served nothing");
        }
    }
}
