//! `cport demo`: the seed article's scenario, for real.
//!
//! An echo server on `127.0.0.1:0` served by a pool of worker threads that
//! all loop on **one** port's `get` (the server of `cport echo`, in
//! [`crate::server`]):
//! - the listener is associated with key 0 and always keeps one `accept`
//!   pending (its context carries the listener's handle, to re-arm it);
//! - each accepted socket is associated with its own key (the connection
//!   id) and gets a heap [`Connection`](crate::server::Connection) that
//!   travels as the context of its one operation in flight, like the
//!   article's `Connection` that derives from `OVERLAPPED`; its single
//!   buffer travels with the operation;
//! - a worker that dequeues a receive sends back exactly the bytes received
//!   (the rest again after a short send), then receives again; on `Ok(0)`
//!   or an error the connection is dropped.
//!
//! A built-in client (plain threads, blocking sockets with time-outs) opens
//! `--connections` connections; each sends `--message-size`-byte messages
//! with a pattern derived from its id and sequence number in a closed loop
//! for `--seconds`, and checks every echoed byte. Shutdown posts one stop
//! packet per worker and joins them.
//!
//! Every wait is bounded: client sockets have read/write time-outs, workers
//! call `get` with a time-out and give up after a hard deadline.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use completion_port::Backend;

use crate::server::{ensure_fd_limit, worker, Ctx, Server, LISTENER_KEY, MAX_MESSAGES, STOP_KEY};

/// Most bytes a client has sent and not yet read back: keeps both ends'
/// socket buffers from filling up, so large messages cannot deadlock.
const CLIENT_WINDOW: usize = 32 * 1024;
/// Time-out of every client socket operation (connect, read, write).
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Extra time, after `--seconds`, before workers give up waiting for their
/// stop packet.
const WORKER_GRACE: Duration = Duration::from_secs(60);

/// Arguments of `cport demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Worker threads dequeuing from the one port.
    #[arg(long, default_value = "4", value_parser = parse_threads)]
    threads: usize,
    /// The port's concurrency value: how many workers may run completions
    /// at once (0: one per CPU).
    #[arg(long, default_value = "0", value_parser = parse_concurrency)]
    concurrency: usize,
    /// Client connections, each running a closed send/verify loop.
    #[arg(long, default_value = "50", value_parser = parse_connections)]
    connections: usize,
    /// Bytes per message.
    #[arg(long, default_value = "512", value_parser = parse_message_size)]
    message_size: usize,
    /// How long the clients run, in seconds (fractions allowed: 0.5).
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    seconds: Duration,
    /// I/O backend: auto, io_uring or epoll (auto honours CPORT_BACKEND).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
}

pub(crate) fn parse_range(s: &str, lo: usize, hi: usize, what: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{what} must be a whole number, got {s:?}"))?;
    if !(lo..=hi).contains(&n) {
        return Err(format!("{what} must be between {lo} and {hi}, got {n}"));
    }
    Ok(n)
}

pub(crate) fn parse_threads(s: &str) -> Result<usize, String> {
    parse_range(s, 1, 1024, "the number of worker threads")
}

pub(crate) fn parse_concurrency(s: &str) -> Result<usize, String> {
    parse_range(s, 0, 1024, "the concurrency value")
}

fn parse_connections(s: &str) -> Result<usize, String> {
    parse_range(s, 1, 10_000, "the number of connections")
}

fn parse_message_size(s: &str) -> Result<usize, String> {
    parse_range(s, 1, 4 << 20, "the message size")
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("the duration must be a number of seconds, got {s:?}"))?;
    if !(secs > 0.0 && secs <= 3600.0) {
        return Err(format!(
            "the duration must be more than 0 and at most 3600 seconds, got {s}"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

pub(crate) fn parse_backend(s: &str) -> Result<Backend, String> {
    Backend::from_str(s).map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// Fills `out` with the bytes message `seq` of connection `conn` must hold.
fn pattern(conn: u64, seq: u64, out: &mut [u8]) {
    let mut x = (conn << 40) ^ seq ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in out.chunks_mut(8) {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

#[derive(Default)]
struct ClientResult {
    echoes: u64,
    bytes_verified: u64,
    mismatched_echoes: u64,
    /// When its last echo was verified.
    last_echo: Option<Instant>,
    /// The first mismatch, described.
    first_mismatch: Option<String>,
    error: Option<String>,
}

fn client(id: u64, mut stream: TcpStream, size: usize, deadline: Instant) -> ClientResult {
    let mut res = ClientResult::default();
    if let Err(e) = client_loop(id, &mut stream, size, deadline, &mut res) {
        res.error = Some(format!("client connection {id}: {e}"));
        return res;
    }
    // Closing our side makes the server's receive return Ok(0) and drop the
    // connection, which closes its side: we must then read end-of-stream.
    let end = stream.shutdown(Shutdown::Write).and_then(|()| {
        let mut extra = [0u8; 64];
        match stream.read(&mut extra)? {
            0 => Ok(()),
            n => Err(io::Error::other(format!(
                "server sent {n} unexpected bytes after the last echo"
            ))),
        }
    });
    if let Err(e) = end {
        res.error = Some(format!("client connection {id} at close: {e}"));
    }
    res
}

fn client_loop(
    id: u64,
    stream: &mut TcpStream,
    size: usize,
    deadline: Instant,
    res: &mut ClientResult,
) -> io::Result<()> {
    let mut expected = vec![0u8; size];
    let mut got = vec![0u8; size.min(64 * 1024)];
    let mut seq = 0u64;
    while Instant::now() < deadline {
        pattern(id, seq, &mut expected);
        let (mut sent, mut received, mut bad) = (0usize, 0usize, 0usize);
        while received < size {
            let outstanding = sent - received;
            if sent < size && outstanding < CLIENT_WINDOW {
                let n = (size - sent).min(CLIENT_WINDOW - outstanding);
                stream.write_all(&expected[sent..sent + n])?;
                sent += n;
                continue;
            }
            let want = outstanding.min(got.len());
            let n = stream.read(&mut got[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("server closed the connection after {received} of {size} bytes of message {seq}"),
                ));
            }
            let want = &expected[received..received + n];
            for (i, (g, w)) in got[..n].iter().zip(want).enumerate() {
                if g != w {
                    if bad == 0 && res.first_mismatch.is_none() {
                        res.first_mismatch = Some(format!(
                            "connection {id}, message {seq}: byte {} is {g:#04x}, expected {w:#04x}",
                            received + i
                        ));
                    }
                    bad += 1;
                }
            }
            received += n;
        }
        res.echoes += 1;
        res.bytes_verified += size as u64;
        if bad > 0 {
            res.mismatched_echoes += 1;
        }
        res.last_echo = Some(Instant::now());
        seq += 1;
    }
    Ok(())
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Runs the demo; an error when anything failed or any echoed byte was
/// wrong.
pub fn run(a: Args) -> io::Result<()> {
    if (a.connections as u64) * (a.message_size as u64) > 1 << 30 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--connections × --message-size exceeds 1 GiB of client buffers; use fewer or smaller messages",
        ));
    }
    // Two sockets per connection, the listener, the port, some slack.
    ensure_fd_limit(2 * a.connections as u64 + 64)?;

    // 1. Create the port.
    let port = crate::server::open_port(a.concurrency, a.backend)?;

    // 2. Associate the listener with key 0; 3. keep an accept pending.
    let (listener, addr) = crate::server::listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = port.associate(listener, LISTENER_KEY)?;
    listener.accept(Ctx::Accept(listener.clone()))?;

    println!("cport demo: echo server on {addr}, one completion port, a pool of workers");
    match port.fallback_reason() {
        Some(why) => println!(
            "backend:        {} (io_uring unavailable: {why})",
            port.backend()
        ),
        None => println!("backend:        {}", port.backend()),
    }
    println!("threads:        {}", a.threads);
    println!(
        "concurrency:    {}{}",
        port.concurrency(),
        if a.concurrency == 0 {
            " (0: one per CPU)"
        } else {
            ""
        }
    );
    println!("connections:    {}", a.connections);
    println!("message size:   {} bytes", a.message_size);
    println!("duration:       {:.2} s", a.seconds.as_secs_f64());

    // 4. The pool: every worker dequeues from the same port.
    let server = Arc::new(Server::default());
    let hard_deadline = Instant::now() + a.seconds + WORKER_GRACE;
    let mut workers: Vec<JoinHandle<u64>> = Vec::with_capacity(a.threads);
    let mut failure: Option<io::Error> = None;
    for i in 0..a.threads {
        let (port, server) = (port.clone(), server.clone());
        match thread::Builder::new()
            .name(format!("cport-worker-{i}"))
            .spawn(move || worker(port, server, Some(hard_deadline)))
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
    let rearm = match crate::server::Rearm::start(server.clone()) {
        Ok(r) => Some(r),
        Err(e) => {
            failure.get_or_insert(e);
            None
        }
    };
    let clients = match failure {
        None => run_clients(addr, &a),
        Some(e) => Err(e),
    };

    // Let the server see every client's close (bounded), so shutdown finds
    // no connection still open.
    let settle = Instant::now() + Duration::from_secs(5);
    while server.live.load(Ordering::Acquire) > 0 && Instant::now() < settle {
        thread::sleep(Duration::from_millis(5));
    }
    let still_open = server.live.load(Ordering::Acquire);

    // Shutdown: one stop packet per worker, then join them.
    for _ in 0..workers.len() {
        if let Err(r) = port.post(STOP_KEY, 0, Ctx::Stop) {
            server.error(format!("posting a stop packet failed: {}", r.error));
        }
    }
    let mut per_worker = Vec::with_capacity(workers.len());
    for w in workers {
        match w.join() {
            Ok(n) => per_worker.push(n),
            Err(_) => server.error("a worker thread panicked".into()),
        }
    }
    drop(rearm);
    // Cancels the pending accept; returns once nothing is in flight.
    port.close();
    drop(listener);

    let clients = clients?;
    report(&server, &clients, still_open, &per_worker)
}

/// The client side's totals.
struct ClientTotals {
    results: Vec<ClientResult>,
    start: Instant,
    /// Connections that could not be opened or whose thread failed.
    errors: Vec<String>,
}

fn run_clients(addr: SocketAddr, a: &Args) -> io::Result<ClientTotals> {
    let mut streams = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let s = connect(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "client connection {} of {} to {addr}: {e}",
                    i + 1,
                    a.connections
                ),
            )
        })?;
        streams.push(s);
    }
    let start = Instant::now();
    let deadline = start + a.seconds;
    let size = a.message_size;
    let mut errors = Vec::new();
    let mut threads = Vec::with_capacity(streams.len());
    for (i, s) in streams.into_iter().enumerate() {
        let id = i as u64 + 1;
        match thread::Builder::new()
            .name(format!("cport-client-{id}"))
            .stack_size(256 * 1024)
            .spawn(move || client(id, s, size, deadline))
        {
            Ok(t) => threads.push(t),
            // The stream was moved into the closure and is dropped: its
            // server side sees end-of-stream.
            Err(e) => errors.push(format!("cannot start client thread {id}: {e}")),
        }
    }
    let mut results = Vec::with_capacity(threads.len());
    for t in threads {
        match t.join() {
            Ok(r) => results.push(r),
            Err(_) => errors.push("a client thread panicked".into()),
        }
    }
    Ok(ClientTotals {
        results,
        start,
        errors,
    })
}

fn report(
    server: &Server,
    c: &ClientTotals,
    still_open: u64,
    per_worker: &[u64],
) -> io::Result<()> {
    let echoes: u64 = c.results.iter().map(|r| r.echoes).sum();
    let bytes: u64 = c.results.iter().map(|r| r.bytes_verified).sum();
    let mismatches: u64 = c.results.iter().map(|r| r.mismatched_echoes).sum();
    let end = c.results.iter().filter_map(|r| r.last_echo).max();
    let elapsed = end.map_or(0.0, |e| e.duration_since(c.start).as_secs_f64());
    let rate = if elapsed > 0.0 {
        echoes as f64 / elapsed
    } else {
        0.0
    };
    let mut errors: Vec<String> = c.errors.clone();
    errors.extend(c.results.iter().filter_map(|r| r.error.clone()));
    let client_errors = errors.len() as u64;
    let server_errors = server.errors.load(Ordering::Relaxed);
    if let Ok(m) = server.messages.lock() {
        errors.extend(m.iter().map(|s| format!("server: {s}")));
    }

    println!("requests:       {echoes}");
    println!("requests/s:     {rate:.0}");
    println!("bytes verified: {bytes}");
    println!(
        "server:         {} connections accepted, {} closed by the client, {} bytes echoed, {} short sends",
        server.accepted.load(Ordering::Relaxed),
        server.closed_by_peer.load(Ordering::Relaxed),
        server.echoed_bytes.load(Ordering::Relaxed),
        server.short_sends.load(Ordering::Relaxed),
    );
    println!("packets/worker: {per_worker:?}");
    println!("errors:         {client_errors} client, {server_errors} server");
    println!("verified: {echoes} echoes, {mismatches} mismatches");

    for r in &c.results {
        if let Some(m) = &r.first_mismatch {
            eprintln!("mismatch: {m}");
        }
    }
    for e in errors.iter().take(MAX_MESSAGES) {
        eprintln!("error: {e}");
    }
    let mut problems = Vec::new();
    if mismatches > 0 {
        problems.push(format!("{mismatches} echoes did not match what was sent"));
    }
    if client_errors + server_errors > 0 {
        problems.push(format!(
            "{client_errors} client and {server_errors} server errors"
        ));
    }
    if still_open > 0 {
        problems.push(format!(
            "{still_open} server connections were still open at shutdown"
        ));
    }
    if echoes == 0 {
        problems.push("no echo completed".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "demo failed: {}",
            problems.join("; ")
        )))
    }
}
