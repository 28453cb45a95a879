//! The IOCP echo server that `cport demo` and `cport echo` both run.
//!
//! A pool of worker threads all loop on **one** port's `get`:
//! - the listener is associated with key 0 and keeps accepts pending (each
//!   one's context carries the listener's handle, to re-arm it);
//! - each accepted socket is associated with its own key (the connection
//!   id) and gets a heap [`Connection`] that travels as the context of its
//!   one operation in flight, like the classic IOCP server's `Connection` that derives
//!   from `OVERLAPPED`; its single buffer travels with the operation;
//! - a worker that dequeues a receive sends back exactly the bytes received
//!   (the rest again after a short send), then receives again; on `Ok(0)`
//!   or an error the connection is dropped, which closes the socket;
//! - a [`Ctx::Stop`] packet (posted, one per worker) makes the worker that
//!   dequeues it return;
//! - an accept that fails for lack of file descriptors (or memory) is not
//!   re-armed at once — it would fail again at once, and on the epoll
//!   backend a queue never empty of such failures keeps the port from
//!   polling the sockets it waits on (issue 17.2) — but *parked*: it is
//!   re-armed when a connection closes (freeing a descriptor), or by the
//!   [`Rearm`] thread after a back-off that doubles from 10 ms to 1 s while
//!   the failures go on. Such failures are counted in
//!   [`Server::out_of_fds`], not as errors.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use completion_port::{Backend, Buf, GetError, Handle, Packet, Port};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// Completion key of the listening socket.
pub const LISTENER_KEY: usize = 0;
/// Completion key of the stop packets posted at shutdown.
pub const STOP_KEY: usize = usize::MAX;
/// Capacity of each connection's server-side buffer.
pub const SERVER_BUF: usize = 16 * 1024;
/// How long a worker with a deadline waits in one `get` before checking it.
const GET_SLICE: Duration = Duration::from_millis(250);
/// First and longest pause before re-arming an accept parked after it
/// failed for lack of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`).
const BACKOFF_MIN_MS: u64 = 10;
const BACKOFF_MAX_MS: u64 = 1000;
/// Error messages kept for printing.
pub const MAX_MESSAGES: usize = 10;

/// The per-operation context: what a worker needs when the packet comes
/// back. Connections own themselves through it, like the classic IOCP server's
/// heap-allocated `Connection` passed as the `OVERLAPPED` pointer.
pub enum Ctx {
    /// A pending accept; carries the listener, to re-arm it.
    Accept(Handle<Ctx>),
    /// A receive on this connection.
    Recv(Box<Connection>),
    /// A send on this connection.
    Send(Box<Connection>),
    /// Shutdown: the worker that dequeues this exits.
    Stop,
}

/// One accepted connection. Exactly one operation is in flight per
/// connection, and it owns this record as its context: nothing else points
/// at it, so it cannot be freed under the kernel or leaked.
pub struct Connection {
    /// Its completion key.
    id: usize,
    handle: Handle<Ctx>,
    /// Bytes echoed on this connection.
    echoed: u64,
    server: Arc<Server>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.server.live.fetch_sub(1, Ordering::AcqRel);
        self.server.parked.closed.fetch_add(1, Ordering::AcqRel);
        self.server
            .echoed_bytes
            .fetch_add(self.echoed, Ordering::Relaxed);
    }
}

/// Counters shared by the workers.
#[derive(Default)]
pub struct Server {
    next_id: AtomicUsize,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections alive (accepted, not yet dropped).
    pub live: AtomicU64,
    /// Connections the peer closed gracefully (`recv` gave `Ok(0)`).
    pub closed_by_peer: AtomicU64,
    /// Bytes echoed by connections already closed (a connection adds its
    /// count when it is dropped).
    pub echoed_bytes: AtomicU64,
    /// Receives that completed with data (the echo server's requests).
    pub requests: AtomicU64,
    /// Bytes received, counted as each receive completes.
    pub bytes_received: AtomicU64,
    /// Sends that transferred fewer bytes than asked (the rest is resent).
    pub short_sends: AtomicU64,
    /// Failures of any kind (accept, receive, send, issue, get), except:
    pub errors: AtomicU64,
    /// Accepts that failed for lack of file descriptors (or memory), and
    /// were parked (see the module docs).
    pub out_of_fds: AtomicU64,
    parked: Parked,
    /// The first [`MAX_MESSAGES`] failures, described.
    pub messages: Mutex<Vec<String>>,
}

impl Server {
    /// Counts a failure and keeps its description if there is room.
    pub fn error(&self, msg: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.messages.lock() {
            if m.len() < MAX_MESSAGES {
                m.push(msg);
            }
        }
    }
}

/// Accepts waiting to be re-armed, and the back-off before the next one.
struct Parked {
    tx: Sender<Handle<Ctx>>,
    rx: Receiver<Handle<Ctx>>,
    /// The pause before the [`Rearm`] thread re-arms a parked accept.
    delay_ms: AtomicU64,
    /// Connections closed and not yet answered by re-arming a parked accept.
    closed: AtomicU64,
}

impl Default for Parked {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Parked {
            tx,
            rx,
            delay_ms: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }
}

impl Server {
    /// Parks the accept of `listener` that just failed for lack of
    /// resources, and doubles the back-off.
    fn park(&self, listener: Handle<Ctx>) {
        self.out_of_fds.fetch_add(1, Ordering::Relaxed);
        let d = self.parked.delay_ms.load(Ordering::Relaxed);
        let next = (d * 2).clamp(BACKOFF_MIN_MS, BACKOFF_MAX_MS);
        self.parked.delay_ms.store(next, Ordering::Relaxed);
        let _ = self.parked.tx.send(listener);
    }

    /// Re-arms one parked accept per connection closed since the last call
    /// (each freed a descriptor). Called between packets, once the packet
    /// (which keeps its fd open) is gone.
    fn rearm_after_closes(&self) {
        let closed = self.parked.closed.swap(0, Ordering::AcqRel);
        for _ in 0..closed {
            match self.parked.rx.try_recv() {
                Ok(listener) => rearm(self, &listener),
                Err(_) => break,
            }
        }
    }
}

/// Issues an accept on `listener`, carrying it.
fn rearm(server: &Server, listener: &Handle<Ctx>) {
    if let Err(r) = listener.accept(Ctx::Accept(listener.clone())) {
        if !completion_port::is_port_closed(&r.error) {
            server.error(format!("re-arming accept failed: {}", r.error));
        }
    }
}

/// The thread that re-arms parked accepts after the back-off; stopped and
/// joined when dropped.
pub struct Rearm {
    stop: Option<Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Rearm {
    pub fn start(server: Arc<Server>) -> io::Result<Rearm> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let thread = thread::Builder::new()
            .name("cport-rearm".into())
            .spawn(move || loop {
                let listener = crossbeam_channel::select! {
                    recv(server.parked.rx) -> l => match l { Ok(l) => l, Err(_) => return },
                    recv(stopped) -> _ => return,
                };
                let delay = server.parked.delay_ms.load(Ordering::Relaxed);
                match stopped.recv_timeout(Duration::from_millis(delay)) {
                    Err(RecvTimeoutError::Timeout) => rearm(&server, &listener),
                    _ => return,
                }
            })?;
        Ok(Rearm {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Rearm {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a worker did with one packet.
enum Next {
    Continue,
    Stop,
}

/// Creates a TCP listener on `addr` (`SO_REUSEADDR`, backlog 1024) and
/// returns it with the address it actually got (port 0 resolved).
pub fn listen(addr: SocketAddr) -> io::Result<(socket2::Socket, SocketAddr)> {
    let domain = socket2::Domain::for_address(addr);
    let listener = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    listener.set_reuse_address(true)?;
    listener.bind(&addr.into())?;
    listener.listen(1024)?;
    let local = listener
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("the listener has no IP address"))?;
    Ok((listener, local))
}

/// Creates the server's port, with an error that names the backend.
pub fn open_port(concurrency: usize, backend: Backend) -> io::Result<Port<Ctx>> {
    Port::<Ctx>::builder()
        .concurrency(concurrency)
        .backend(backend)
        .build()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create a completion port (backend {backend}): {e}"),
            )
        })
}

/// A worker: dequeues packets from `port` and handles them until it
/// dequeues a stop packet or the port is closed. With a `hard_deadline`
/// it waits in slices and gives up (counting an error) once it passes;
/// without one it waits as long as it takes. Returns the packets handled.
pub fn worker(port: Port<Ctx>, server: Arc<Server>, hard_deadline: Option<Instant>) -> u64 {
    let slice = hard_deadline.map(|_| GET_SLICE);
    let mut handled = 0u64;
    loop {
        match port.get(slice) {
            Ok(packet) => {
                handled += 1;
                if let Next::Stop = handle_packet(&port, &server, packet) {
                    return handled;
                }
                server.rearm_after_closes();
            }
            Err(GetError::Timeout) => {
                if hard_deadline.is_some_and(|d| Instant::now() >= d) {
                    server.error("a worker gave up waiting for its stop packet".into());
                    return handled;
                }
            }
            Err(GetError::Closed) => return handled,
            Err(GetError::Io(e)) => {
                server.error(format!("get failed: {e}"));
                if hard_deadline.is_some_and(|d| Instant::now() >= d) {
                    return handled;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Whether an accept failed because the process or system ran out of a
/// resource, so retrying at once would only fail again.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn handle_packet(port: &Port<Ctx>, server: &Arc<Server>, mut packet: Packet<Ctx>) -> Next {
    // Take the buffer and the accepted socket before moving the context out.
    let buf = packet.take_buf();
    let accepted = packet.take_accepted();
    let key = packet.key;
    match packet.context {
        Ctx::Stop => Next::Stop,
        Ctx::Accept(listener) => {
            match &packet.result {
                Err(e) if out_of_resources(e) => server.park(listener),
                // Re-arm first, so the next client is accepted while we set
                // up this one.
                _ => {
                    server.parked.delay_ms.store(0, Ordering::Relaxed);
                    rearm(server, &listener)
                }
            }
            if key != LISTENER_KEY {
                server.error(format!("accept packet carried key {key}, expected 0"));
            }
            match (packet.result, accepted) {
                (Ok(_), Some(a)) => start_connection(port, server, a.socket),
                (Ok(_), None) => server.error("accept succeeded without a socket".into()),
                (Err(e), _) if out_of_resources(&e) => {}
                (Err(e), _) => server.error(format!("accept failed: {e}")),
            }
            Next::Continue
        }
        Ctx::Recv(conn) => {
            if key != conn.id {
                server.error(format!(
                    "receive packet of connection {} carried key {key}",
                    conn.id
                ));
                return Next::Continue;
            }
            match (packet.result, buf) {
                (Ok(0), _) => {
                    // Peer closed: dropping the connection closes the socket.
                    server.closed_by_peer.fetch_add(1, Ordering::Relaxed);
                }
                (Ok(n), Some(buf)) => {
                    server.requests.fetch_add(1, Ordering::Relaxed);
                    server.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                    send(server, conn, buf)
                }
                (Ok(_), None) => server.error("receive completed without its buffer".into()),
                (Err(e), _) => server.error(format!("receive on connection {}: {e}", conn.id)),
            }
            Next::Continue
        }
        Ctx::Send(mut conn) => {
            if key != conn.id {
                server.error(format!(
                    "send packet of connection {} carried key {key}",
                    conn.id
                ));
                return Next::Continue;
            }
            match (packet.result, buf) {
                (Ok(n), Some(mut buf)) if n > 0 && n <= buf.len() => {
                    conn.echoed += n as u64;
                    if n < buf.len() {
                        // Short send: move the rest to the front, send it.
                        server.short_sends.fetch_add(1, Ordering::Relaxed);
                        let len = buf.len();
                        buf.copy_within(n..len, 0);
                        buf.truncate(len - n);
                        send(server, conn, buf);
                    } else {
                        buf.clear();
                        recv(server, conn, buf);
                    }
                }
                (Ok(n), Some(buf)) => server.error(format!(
                    "send on connection {} reported {n} of {} bytes",
                    conn.id,
                    buf.len()
                )),
                (Ok(_), None) => server.error("send completed without its buffer".into()),
                (Err(e), _) => server.error(format!("send on connection {}: {e}", conn.id)),
            }
            Next::Continue
        }
    }
}

fn start_connection(port: &Port<Ctx>, server: &Arc<Server>, socket: socket2::Socket) {
    if let Err(e) = socket.set_nodelay(true) {
        server.error(format!("TCP_NODELAY on an accepted socket: {e}"));
    }
    let id = server.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let handle = match port.associate(socket, id) {
        Ok(h) => h,
        Err(e) => return server.error(e.to_string()),
    };
    server.accepted.fetch_add(1, Ordering::Relaxed);
    server.live.fetch_add(1, Ordering::AcqRel);
    let conn = Box::new(Connection {
        id,
        handle,
        echoed: 0,
        server: server.clone(),
    });
    recv(server, conn, Buf::with_capacity(SERVER_BUF));
}

/// Issues a receive owning `conn` and `buf`; on refusal both are dropped
/// (closing the connection).
fn recv(server: &Server, conn: Box<Connection>, buf: Buf) {
    let handle = conn.handle.clone();
    if let Err(r) = handle.recv(buf, Ctx::Recv(conn)) {
        if !completion_port::is_port_closed(&r.error) {
            server.error(format!("issuing a receive failed: {}", r.error));
        }
    }
}

/// Issues a send of `buf`'s filled bytes owning `conn` and `buf`.
fn send(server: &Server, conn: Box<Connection>, buf: Buf) {
    let handle = conn.handle.clone();
    if let Err(r) = handle.send(buf, Ctx::Send(conn)) {
        if !completion_port::is_port_closed(&r.error) {
            server.error(format!("issuing a send failed: {}", r.error));
        }
    }
}

/// Makes sure the process may open `needed` file descriptors, raising the
/// soft limit up to the hard one if that is enough.
pub fn ensure_fd_limit(needed: u64) -> io::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // Unknown: let the sockets report it.
    }
    if lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= needed {
        return Ok(());
    }
    if lim.rlim_max == libc::RLIM_INFINITY || lim.rlim_max >= needed {
        let raised = libc::rlimit {
            rlim_cur: needed,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(());
        }
    }
    Err(io::Error::other(format!(
        "this run needs about {needed} file descriptors but the limit is {} \
         (hard limit {}); use fewer --connections or raise it with `ulimit -n`",
        lim.rlim_cur, lim.rlim_max
    )))
}

/// Raises the soft limit on open files to the hard limit (capped at one
/// million), so a server can hold as many connections as it is allowed
/// to. Returns the soft limit in force afterwards, if known.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    let target = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(target);
        }
    }
    Some(lim.rlim_cur)
}
