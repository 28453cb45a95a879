//! An HTTP/1.1 static-file server on one completion port.
//!
//! ```sh
//! cargo run --release -p completion-port --example http_server -- ./public
//! curl -v http://127.0.0.1:8080/index.html
//! ```
//!
//! `http_server [--addr ADDR] [--workers N] [--idle-timeout SECONDS]
//! [--cache N] [--inline-max BYTES] [--backend auto|io_uring|epoll] DIR`
//! serves the files under `DIR`: `GET` and `HEAD`, keep-alive (and
//! pipelined requests), `Connection: close`, 400/403/404/405/431 answers,
//! no way out of `DIR` (`..` is refused). It stops cleanly on Ctrl-C
//! (SIGINT) or SIGTERM.
//!
//! How it uses the IOCP model, from the top:
//! - **One port, a pool of workers** (`--workers`, default one per CPU)
//!   all dequeuing from it: whichever worker is free takes the next
//!   packet, whatever connection it belongs to.
//! - **Every operation carries its connection** as its context (`Op`): a
//!   connection's state lives in a `Box<Conn>` that travels with its one
//!   operation in flight and comes back in that operation's packet — the
//!   `Connection : OVERLAPPED` of the classic Windows servers. No
//!   connection table, and no lock but the file cache's.
//! - **Several accepts in flight** on the listener (as servers post several
//!   `AcceptEx`), each re-issued as its packet comes back.
//! - **Idle time-out without a reaper thread**: each receive is issued
//!   through `Handle::with_timeout`; an idle connection's receive comes
//!   back `TimedOut`, and dropping the connection closes it.
//! - **Files are opened without blocking** (`Port::open`: the open is an
//!   operation whose packet brings the file), and kept open in a small cache
//!   of handles (`--cache N`, default 256; 0 opens every file per request:
//!   1.4× fewer requests per second for small files, BENCHMARKS.md, "HTTP").
//! - **Files are sent with `Handle::send_file`** (zero-copy, the
//!   `TransmitFile` of this API) right behind their head, sent with
//!   `send_all`: sends on one socket go out in the order they were issued,
//!   so the body needs no wait for the head's packet. Files up to
//!   `--inline-max` bytes (default 16 KiB) are read into the spare
//!   capacity of the buffer that holds their head, and both go out in one
//!   `send_all`: for small files that beats `send_file`, whose two splices
//!   through a pipe cost more than copying a few pages. A cached file is
//!   read in place (a page-cache hit costs less than an operation and its
//!   packet; a read that waits for the disk is a block the port's
//!   blocked-thread detection sees); a file opened for one request is read
//!   with `read_at`, an operation.
//! - **Shutdown**: the listener is closed (its accepts come back
//!   cancelled), each worker gets a stop packet (`Port::post`), and closing
//!   the port cancels what is still in flight and drops every context —
//!   every connection closes, nothing leaks.
//!
//! The [`http`] module (parsing, paths, response heads) knows nothing of
//! the port; `crates/cport-bench` serves the same files with the same
//! module over tokio, to compare the two.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use completion_port::{Backend, Buf, GetError, Handle, OpenOptions, Packet, Port};

pub mod http;

/// What the server serves, and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// The directory served.
    pub root: PathBuf,
    /// Where to listen (port 0: any free port; see [`Server::local_addr`]).
    pub addr: SocketAddr,
    /// Worker threads dequeuing from the port (0: one per CPU).
    pub workers: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Open files kept for reuse (0: open every file per request).
    pub cache: usize,
    /// Files up to this size are read into the response's buffer and sent
    /// with their head in one send, instead of with `send_file`.
    pub inline_max: u64,
    /// The port's backend.
    pub backend: Backend,
}

impl Config {
    /// Defaults: 127.0.0.1:8080, one worker per CPU, 10 s idle time-out,
    /// 256 cached files, files up to 16 KiB sent inline, automatic backend.
    pub fn new(root: impl Into<PathBuf>) -> Config {
        Config {
            root: root.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 0,
            idle_timeout: Duration::from_secs(10),
            cache: 256,
            inline_max: 16 * 1024,
            backend: Backend::Auto,
        }
    }
}

// Completion keys: which kind of handle a packet is about.
const LISTENER: usize = 0;
const CONNECTION: usize = 1;
const FILE: usize = 2;

/// Packets a worker takes at a time.
const BATCH: usize = 64;
/// Accepts kept in flight on the listener.
const ACCEPTS: usize = 16;
/// Receive buffer of a connection (a request head may grow it up to
/// `http::MAX_HEAD`).
const RECV_BUF: usize = 4096;

/// The context of every operation: what its packet is about.
enum Op {
    /// An accept on the listener finished.
    Accept,
    /// A receive on the connection finished.
    Recv(Box<Conn>),
    /// `Port::open` of the requested file finished.
    Open(Box<Conn>),
    /// A whole response (its head; no body, or a HEAD request) was sent.
    Sent(Box<Conn>),
    /// The head of a response whose body follows in a `send_file`: the
    /// connection travels with the body.
    HeadOfBody,
    /// A file's `size` bytes were sent, or fewer if it shrank meanwhile.
    Body(Box<Conn>, u64),
    /// A small file was read into the response buffer, after the `head`
    /// bytes of its head. The context holds a clone of the file's handle:
    /// an operation is cancelled when the last clone of its handle goes.
    Read {
        conn: Box<Conn>,
        file: Handle<Op>,
        head: usize,
        size: usize,
    },
    /// Stop this worker.
    Stop,
}

/// A connection between requests, or the one request it is answering.
struct Conn {
    /// The socket.
    sock: Handle<Op>,
    /// The same socket, whose receives time out after the idle time-out.
    idle: Handle<Op>,
    /// Bytes received and not yet answered (a partial or pipelined
    /// request).
    buf: Buf,
    /// The connection stays open after the response being sent.
    keep_alive: bool,
    /// The request being answered is a HEAD.
    head_only: bool,
    /// The file of the request being answered.
    path: PathBuf,
    /// The memory of the last response sent, for the next one.
    out: Vec<u8>,
}

/// What every worker shares.
struct Shared {
    config: Config,
    listener: Handle<Op>,
    /// Set at shutdown: accepts are no longer re-issued.
    stopping: AtomicBool,
    /// Open files by path, when `Config::cache` asks for it.
    cache: Option<Mutex<FileCache>>,
}

/// A running server: its port, its workers, its address.
pub struct Server {
    port: Port<Op>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<io::Result<()>>>,
    addr: SocketAddr,
}

impl Server {
    /// Binds the address, starts the workers and the first accepts.
    pub fn start(config: Config) -> io::Result<Server> {
        let port = Port::<Op>::builder().backend(config.backend).build()?;
        let workers = match config.workers {
            0 => port.concurrency(),
            n => n,
        };
        let listener = TcpListener::bind(config.addr)?;
        let addr = listener.local_addr()?;
        let listener = port.associate(listener, LISTENER)?;
        let cache = (config.cache > 0).then(|| Mutex::new(FileCache::new(config.cache)));
        let shared = Arc::new(Shared {
            config,
            listener,
            stopping: AtomicBool::new(false),
            cache,
        });
        for _ in 0..ACCEPTS {
            shared
                .listener
                .accept(Op::Accept)
                .map_err(io::Error::from)?;
        }
        let workers = (0..workers)
            .map(|i| {
                let (port, shared) = (port.clone(), shared.clone());
                thread::Builder::new()
                    .name(format!("http-worker-{i}"))
                    .spawn(move || worker(&port, &shared))
            })
            .collect::<io::Result<_>>()?;
        Ok(Server {
            port,
            shared,
            workers,
            addr,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port's backend.
    pub fn backend(&self) -> Backend {
        self.port.backend()
    }

    /// Stops accepting, stops the workers and closes every connection
    /// (responses still being sent are cut short). Returns the first error
    /// a worker stopped with.
    pub fn shutdown(self) -> io::Result<()> {
        self.shared.stopping.store(true, Ordering::Release);
        // The accepts in flight come back cancelled; none is re-issued.
        self.shared.listener.close();
        // One stop packet per worker, queued behind what is already there.
        for _ in &self.workers {
            if self.port.post(0, 0, Op::Stop).is_err() {
                break; // the port is closed already: the workers see it
            }
        }
        let mut result = Ok(());
        for w in self.workers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a worker panicked")));
            result = result.and(r);
        }
        // Cancels every operation still in flight and drops its context:
        // each connection's last handle goes, and its socket closes.
        self.port.close();
        result
    }
}

/// A worker: dequeue packets, do what each says, issue the next
/// operations. Taking them in batches (`get_many`) lets the operations
/// issued while handling a batch reach the kernel together, in one system
/// call, at the next wait (io_uring: see the crate's docs, "When an
/// operation reaches the kernel").
fn worker(port: &Port<Op>, shared: &Shared) -> io::Result<()> {
    let mut packets = Vec::with_capacity(BATCH);
    loop {
        match port.get_many(&mut packets, BATCH, None) {
            Ok(_) => {}
            Err(GetError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let mut stops = 0;
        for packet in packets.drain(..) {
            stops += usize::from(!handle(port, shared, packet));
        }
        if stops > 0 {
            // One stop packet per worker: hand on those meant for others.
            for _ in 1..stops {
                let _ = port.post(0, 0, Op::Stop);
            }
            return Ok(());
        }
    }
}

/// Handles one packet; false for a stop packet.
fn handle(port: &Port<Op>, shared: &Shared, mut packet: Packet<Op>) -> bool {
    // The buffer and the accepted socket first: then the context can
    // be moved out of the packet.
    let buf = packet.take_buf();
    match std::mem::replace(&mut packet.context, Op::Stop) {
        Op::Accept => accepted(port, shared, &mut packet),
        // Data: answer what is complete, or receive more.
        Op::Recv(mut conn) if packet.bytes() > 0 => {
            conn.buf = buf.expect("a receive hands its buffer back");
            answer(port, shared, conn);
        }
        // Ok(0): the peer closed; TimedOut: idle for the time-out;
        // anything else: the connection failed. Dropping the
        // connection drops its handles, and the socket closes.
        Op::Recv(_) => {}
        Op::Open(conn) => opened(port, shared, conn, &mut packet),
        Op::Sent(mut conn) if packet.result.is_ok() => {
            // The response's buffer comes back: the next response reuses it.
            conn.out = buf.map(Buf::into_vec).unwrap_or_default();
            next_request(port, shared, conn)
        }
        Op::Body(conn, size) if packet.bytes() as u64 == size => next_request(port, shared, conn),
        // A failed send (the peer went away), or a file that shrank
        // under its Content-Length: drop the connection.
        Op::Sent(_) | Op::Body(..) => {}
        Op::Read {
            conn,
            file,
            head,
            size,
        } => {
            let buf = buf.expect("a read hands its buffer back");
            if buf.len() == head + size {
                let sock = conn.sock.clone();
                let _ = sock.send_all(buf, Op::Sent(conn));
            } else if packet.bytes() > 0 {
                // A short read: read the rest.
                let at = (buf.len() - head) as u64;
                let next = Op::Read {
                    conn,
                    file: file.clone(),
                    head,
                    size,
                };
                let _ = file.read_at(buf, at, next);
            }
            // Else it failed, or the file shrank: drop the connection.
        }
        // The packet of a head sent ahead of its body: nothing to do.
        Op::HeadOfBody => {}
        Op::Stop => return false,
    }
    true
}

/// An accept came back: re-issue it, and start receiving on the new
/// connection.
fn accepted(port: &Port<Op>, shared: &Shared, packet: &mut Packet<Op>) {
    if !shared.stopping.load(Ordering::Acquire) {
        // Refused only once the listener or the port is closed: shutdown.
        let _ = shared.listener.accept(Op::Accept);
    }
    // `None`: the accept failed (cancelled at shutdown, or the peer reset
    // before it was taken); nothing to do.
    let Some(accepted) = packet.take_accepted() else {
        return;
    };
    // Each response is sent whole: do not hold its last segment back.
    let _ = accepted.socket.set_nodelay(true);
    let Ok(sock) = port.associate(accepted.socket, CONNECTION) else {
        return;
    };
    let conn = Box::new(Conn {
        idle: sock.with_timeout(shared.config.idle_timeout),
        sock,
        buf: Buf::with_capacity(RECV_BUF),
        keep_alive: true,
        head_only: false,
        path: PathBuf::new(),
        out: Vec::new(),
    });
    receive(conn);
}

/// Receives more of the next request, with the idle time-out. Refused
/// only when the port is closed: then the connection is dropped.
fn receive(mut conn: Box<Conn>) {
    if conn.buf.spare_capacity() == 0 {
        // A long head: grow, up to MAX_HEAD (`answer` refuses longer).
        conn.buf.reserve(conn.buf.capacity().max(RECV_BUF));
    }
    let buf = std::mem::replace(&mut conn.buf, Buf::with_capacity(0));
    let idle = conn.idle.clone();
    let _ = idle.recv(buf, Op::Recv(conn));
}

/// A response went out: answer the next request if it was received with
/// this one (pipelined), wait for it, or close.
fn next_request(port: &Port<Op>, shared: &Shared, conn: Box<Conn>) {
    if !conn.keep_alive {
        return; // dropping the connection closes it, after what was sent
    }
    if conn.buf.is_empty() {
        receive(conn);
    } else {
        answer(port, shared, conn);
    }
}

/// Parses the request at the start of `conn.buf` and starts its answer.
fn answer(port: &Port<Op>, shared: &Shared, mut conn: Box<Conn>) {
    let (req, used) = match http::parse(&conn.buf) {
        http::Parse::Incomplete if conn.buf.len() < http::MAX_HEAD => return receive(conn),
        http::Parse::Incomplete => return reply_error(conn, http::Status::HeaderTooLarge, false),
        http::Parse::Bad => return reply_error(conn, http::Status::BadRequest, false),
        http::Parse::Done(req, used) => (req, used),
    };
    // A body we do not read would be taken for the next request: close
    // after the answer instead.
    conn.keep_alive = req.keep_alive && !req.has_body;
    conn.head_only = req.method == http::Method::Head;
    let target = match req.method {
        http::Method::Other => None,
        _ => Some(http::resolve(&shared.config.root, req.target)),
    };
    // Keep only what follows this request (the next one, pipelined).
    let len = conn.buf.len();
    conn.buf.copy_within(used..len, 0);
    conn.buf.truncate(len - used);
    let keep = conn.keep_alive;
    conn.path = match target {
        None => return reply_error(conn, http::Status::MethodNotAllowed, keep),
        Some(Err(status)) => return reply_error(conn, status, keep),
        Some(Ok(path)) => path,
    };
    if let Some(cache) = &shared.cache {
        let hit = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conn.path);
        if let Some((file, copy, size)) = hit {
            return reply_file(conn, file, Some(&copy), size, shared.config.inline_max);
        }
    }
    // The open is an operation like any other: its packet brings the file
    // (or the error) back to whichever worker is free.
    let path = conn.path.clone();
    if let Err(rejected) = port.open(path, OpenOptions::read(), FILE, Op::Open(conn)) {
        // Refused at the call: the port is closed, or the path holds a NUL
        // byte (no such file here).
        if let Op::Open(conn) = rejected.context {
            reply_error(conn, http::Status::NotFound, keep);
        }
    }
}

/// The requested file was opened, or not: associate it and send it.
fn opened(port: &Port<Op>, shared: &Shared, conn: Box<Conn>, packet: &mut Packet<Op>) {
    let keep = conn.keep_alive;
    let file = match (packet.take_opened(), &packet.result) {
        (Some(f), _) => f,
        (None, Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            return reply_error(conn, http::Status::Forbidden, keep)
        }
        // Not found, a file where a directory should be, a name too long…
        (None, _) => return reply_error(conn, http::Status::NotFound, keep),
    };
    // fstat of an open file never waits for the disk: no need for an
    // operation (`Handle::stat`) and one more packet.
    let size = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        _ => return reply_error(conn, http::Status::NotFound, keep), // a directory
    };
    // Cached files keep a second descriptor for small reads made in place
    // (`reply_file`); a failed `dup` only means no cache entry.
    let copy = shared
        .cache
        .as_ref()
        .and_then(|_| file.try_clone().ok())
        .map(Arc::new);
    let Ok(file) = port.associate(file, FILE) else {
        return;
    };
    if let (Some(cache), Some(copy)) = (&shared.cache, &copy) {
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(conn.path.clone(), file.clone(), copy.clone(), size);
    }
    reply_file(conn, file, copy.as_deref(), size, shared.config.inline_max);
}

/// Sends a 200 response: its head with `send_all` and, right behind it,
/// the file's bytes with `send_file` — or, for a small file, the file read
/// into the head's buffer and both sent with one `send_all`. A small
/// cached file (`copy`: its second descriptor) is read in place, as the
/// tokio server in `cport-bench` and most servers read small files: a
/// page-cache hit costs less than an operation and its packet, and a read
/// that does wait for the disk is a block the port's blocked-thread
/// detection sees, so another worker takes the queue meanwhile. Otherwise
/// the read is an operation (`read_at`) whose packet brings the buffer
/// back.
fn reply_file(
    mut conn: Box<Conn>,
    file: Handle<Op>,
    copy: Option<&File>,
    size: u64,
    inline_max: u64,
) {
    let inline = !conn.head_only && size <= inline_max;
    let mut head = std::mem::take(&mut conn.out);
    head.clear();
    head.reserve(256 + if inline { size as usize } else { 0 });
    let kind = http::content_type(&conn.path);
    http::write_head(&mut head, http::Status::Ok, size, kind, conn.keep_alive);
    let sock = conn.sock.clone();
    if conn.head_only || size == 0 {
        let _ = sock.send_all(Buf::from(head), Op::Sent(conn));
        return;
    }
    if let (true, Some(copy)) = (inline, copy) {
        let len = head.len();
        head.resize(len + size as usize, 0);
        if copy.read_exact_at(&mut head[len..], 0).is_err() {
            return; // a failed read, or the file shrank: drop the connection
        }
        let _ = sock.send_all(Buf::from(head), Op::Sent(conn));
        return;
    }
    if inline {
        // A read fills a buffer's spare capacity, after the head it holds.
        let (len, size) = (head.len(), size as usize);
        let next = Op::Read {
            conn,
            file: file.clone(),
            head: len,
            size,
        };
        let _ = file.read_at(Buf::from(head), 0, next);
        return;
    }
    // Two operations, one packet that matters: sends on a socket go out in
    // the order they were issued, so the body follows its head without
    // waiting for the head's packet. If the head fails, so does the body,
    // whose packet then drops the connection.
    if sock.send_all(Buf::from(head), Op::HeadOfBody).is_err() {
        return; // the port is closed
    }
    // `file` may be dropped now: `send_file` keeps it open until its packet.
    let _ = sock.send_file(&file, 0, size, Op::Body(conn, size));
}

/// Sends an error response: its head and a short text body.
fn reply_error(mut conn: Box<Conn>, status: http::Status, keep_alive: bool) {
    conn.keep_alive = keep_alive;
    let mut out = std::mem::take(&mut conn.out);
    out.clear();
    http::write_error(&mut out, status, conn.head_only, keep_alive);
    let sock = conn.sock.clone();
    let _ = sock.send_all(Buf::from(out), Op::Sent(conn));
}

/// Open files by path, at most `capacity`, each reused for a second
/// before it is opened again (so a replaced file is seen soon), like
/// nginx's `open_file_cache`.
struct FileCache {
    capacity: usize,
    files: HashMap<PathBuf, (Handle<Op>, Arc<File>, u64, Instant)>,
}

impl FileCache {
    const VALID: Duration = Duration::from_secs(1);

    fn new(capacity: usize) -> FileCache {
        FileCache {
            capacity,
            files: HashMap::new(),
        }
    }

    fn get(&self, path: &std::path::Path) -> Option<(Handle<Op>, Arc<File>, u64)> {
        let (file, copy, size, at) = self.files.get(path)?;
        (at.elapsed() < Self::VALID).then(|| (file.clone(), copy.clone(), *size))
    }

    /// Keeps `file`; when full, first forgets the stale entries, or else
    /// all of them (the files close once their sends are done).
    fn insert(&mut self, path: PathBuf, file: Handle<Op>, copy: Arc<File>, size: u64) {
        if self.files.len() >= self.capacity && !self.files.contains_key(&path) {
            self.files
                .retain(|_, (_, _, _, at)| at.elapsed() < Self::VALID);
            if self.files.len() >= self.capacity {
                self.files.clear();
            }
        }
        self.files.insert(path, (file, copy, size, Instant::now()));
    }
}

// ----- the program ----------------------------------------------------------

const USAGE: &str = "usage: http_server [--addr ADDR] [--workers N] [--idle-timeout SECONDS] \
                     [--cache N] [--inline-max BYTES] [--backend auto|io_uring|epoll] DIR";

fn main() {
    if let Err(e) = run(std::env::args().skip(1)) {
        eprintln!("http_server: {e}");
        std::process::exit(1);
    }
}

/// Serves until SIGINT or SIGTERM, then shuts down cleanly. Prints
/// `listening on http://ADDR (BACKEND)` once ready.
pub fn run(args: impl IntoIterator<Item = String>) -> io::Result<()> {
    let config = parse_args(args)?;
    // Blocked before any thread starts, so every worker inherits the mask
    // and the signals wait for this thread's `sigwait`.
    let signals = signals::block()?;
    let server = Server::start(config)?;
    println!(
        "listening on http://{} ({})",
        server.local_addr(),
        server.backend()
    );
    let sig = signals::wait(&signals)?;
    eprintln!("http_server: {sig}: shutting down");
    server.shutdown()
}

/// The command line.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> io::Result<Config> {
    let bad = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{msg}\n{USAGE}"));
    let mut args = args.into_iter();
    let mut config = Config::new("");
    let mut root = None;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| bad(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--addr" => {
                let v = value("--addr")?;
                config.addr = v.parse().map_err(|e| bad(format!("--addr {v}: {e}")))?;
            }
            "--workers" => {
                let v = value("--workers")?;
                config.workers = v.parse().map_err(|e| bad(format!("--workers {v}: {e}")))?;
            }
            "--idle-timeout" => {
                let v = value("--idle-timeout")?;
                config.idle_timeout = v
                    .parse::<f64>()
                    .ok()
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        bad(format!(
                            "--idle-timeout {v}: not a positive number of seconds"
                        ))
                    })?;
            }
            "--cache" => {
                let v = value("--cache")?;
                config.cache = v.parse().map_err(|e| bad(format!("--cache {v}: {e}")))?;
            }
            "--inline-max" => {
                let v = value("--inline-max")?;
                config.inline_max = v
                    .parse()
                    .map_err(|e| bad(format!("--inline-max {v}: {e}")))?;
            }
            "--backend" => config.backend = value("--backend")?.parse()?,
            "-h" | "--help" => return Err(bad("".into())),
            s if s.starts_with('-') => return Err(bad(format!("unknown option {s}"))),
            _ if root.is_some() => return Err(bad("one directory only".into())),
            _ => root = Some(PathBuf::from(arg)),
        }
    }
    config.root = root.ok_or_else(|| bad("which directory?".into()))?;
    if !config.root.is_dir() {
        return Err(bad(format!("{} is not a directory", config.root.display())));
    }
    Ok(config)
}

/// SIGINT and SIGTERM, taken synchronously with `sigwait` (no handler, so
/// nothing to make async-signal-safe).
mod signals {
    use std::io;

    /// Blocks SIGINT and SIGTERM in the calling thread (and the threads it
    /// starts from now on).
    pub fn block() -> io::Result<libc::sigset_t> {
        // SAFETY: a zeroed sigset_t is valid storage; sigemptyset and
        // sigaddset initialise it; pthread_sigmask reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                0 => Ok(set),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        }
    }

    /// Waits for one of the signals of `set`; returns its name.
    pub fn wait(set: &libc::sigset_t) -> io::Result<&'static str> {
        let mut sig = 0;
        // SAFETY: `set` was initialised by `block`; `sig` is writable.
        match unsafe { libc::sigwait(set, &mut sig) } {
            0 if sig == libc::SIGINT => Ok("SIGINT"),
            0 => Ok("SIGTERM"),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}
