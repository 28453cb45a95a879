//! Our echo server: one port and a pool of worker threads ([`Pool`]: for
//! the echo rows [`WORKERS`] threads, concurrency [`WORKERS`]), the seed's
//! pattern: accept → associate → recv → send → recv …; each request's work
//! is done when asked (`mixed`: spinning; `handlers`: a blocking call,
//! unannounced or in a blocking scope), and the connections accepted and
//! armed are counted (the `scale` memory probe).

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use completion_port::{is_pool_exhausted, Backend, Buf, BufPool, GetError, Handle, Port};

use super::super::loadgen::{self, CostParser};
use super::super::{library_threads_use, pin, thread_use};
use super::{Running, WORKERS};

/// Key of the listener and of stop packets.
const LISTENER: usize = 0;
pub(super) const STOP: usize = usize::MAX;

/// The per-operation context: what the packet is about, the connection,
/// and where its byte stream is in the current message (for `mixed`).
pub(super) enum Op {
    Accept,
    Recv(Handle<Op>, CostParser),
    Send(Handle<Op>, CostParser),
    Stop,
}

/// The shape of our server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub backend: Backend,
    /// Worker threads.
    pub workers: usize,
    /// The port's concurrency value.
    pub concurrency: usize,
    /// Make the blocking calls requests ask for inside `port.blocking`
    /// (announced), rather than plainly (left to blocked-thread detection).
    pub scope: bool,
    /// Receive with `recv_pooled` from one pool of this many buffers (the
    /// `pooled` rows) instead of a buffer per connection; each reply is a
    /// copy of the pooled bytes in a fresh `Buf`, sent while the pooled
    /// buffer is already back.
    pub pooled: Option<usize>,
}

/// Pooled receives that found the pool empty (and were issued again),
/// over the whole run.
pub static POOL_EXHAUSTED: AtomicUsize = AtomicUsize::new(0);

/// A connection waiting for a pooled buffer, and its place in its stream.
type Starving = (Handle<Op>, CostParser);

/// The pooled server's pool, and the connections whose receive found it
/// empty: each waits here until a worker drops a pooled buffer, which
/// issues one of them again (so retries never outnumber returned buffers:
/// no spinning on an empty pool).
#[derive(Clone)]
struct Pooled {
    pool: BufPool,
    starving: Arc<std::sync::Mutex<Vec<Starving>>>,
}

impl Pooled {
    /// A receive of `conn` found the pool empty: wait for a buffer.
    fn starve(&self, conn: Handle<Op>, parser: CostParser) -> io::Result<()> {
        POOL_EXHAUSTED.fetch_add(1, Ordering::Relaxed);
        self.starving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((conn, parser));
        if self.pool.in_use() == 0 {
            // Every buffer came back before we parked: nobody will drop one.
            self.returned()?;
        }
        Ok(())
    }

    /// A pooled buffer went back: one waiting connection receives again.
    fn returned(&self) -> io::Result<()> {
        let next = self
            .starving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        if let Some((conn, parser)) = next {
            recv(&conn, Some(&self.pool), Buf::with_capacity(0), parser)?;
        }
        Ok(())
    }
}

impl Pool {
    /// The echo rows' server: [`WORKERS`] workers, concurrency [`WORKERS`].
    pub fn echo(backend: Backend) -> Pool {
        Pool {
            backend,
            workers: WORKERS,
            concurrency: WORKERS,
            scope: false,
            pooled: None,
        }
    }
}

/// Starts our server on `listener`: the port and its workers, pinned to
/// `cpu`; `accepted` counts the connections armed.
pub(super) fn start(
    listener: TcpListener,
    pool: Pool,
    size: usize,
    cpu: Option<usize>,
    costs: bool,
    accepted: Arc<AtomicUsize>,
) -> io::Result<Running> {
    let port = Port::<Op>::builder()
        .backend(pool.backend)
        .concurrency(pool.concurrency)
        .blocking_detection(crate::detection())
        .build()?;
    let library_before = library_threads_use();
    let bufs = match pool.pooled {
        Some(n) => Some(Pooled {
            pool: port.buf_pool(n, size)?,
            starving: Arc::new(std::sync::Mutex::new(Vec::new())),
        }),
        None => None,
    };
    let listener = port.associate(listener, LISTENER)?;
    listener.accept(Op::Accept)?;
    let mut threads = Vec::new();
    for _ in 0..pool.workers {
        let port = port.clone();
        let listener = listener.clone();
        let accepted = accepted.clone();
        let bufs = bufs.clone();
        threads.push(thread::spawn(move || {
            pin(cpu);
            worker(
                &port,
                &listener,
                bufs.as_ref(),
                size,
                costs.then_some(pool.scope),
                &accepted,
            )?;
            Ok(thread_use())
        }));
    }
    Ok(Running {
        threads,
        port: Some(port),
        library_before: Some(library_before),
    })
}

/// Issues a connection's next receive: into `buf`, or pooled.
fn recv(conn: &Handle<Op>, pool: Option<&BufPool>, buf: Buf, parser: CostParser) -> io::Result<()> {
    let op = Op::Recv(conn.clone(), parser);
    match pool {
        Some(pool) => conn.recv_pooled(pool, op)?,
        None => conn.recv(buf, op)?,
    };
    Ok(())
}

fn worker(
    port: &Port<Op>,
    listener: &Handle<Op>,
    pooled: Option<&Pooled>,
    size: usize,
    // Whether requests carry costs, and if so whether blocking calls are
    // made in a blocking scope.
    costs: Option<bool>,
    accepted: &AtomicUsize,
) -> io::Result<()> {
    let pool = pooled.map(|p| &p.pool);
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
                    let buf = match pool {
                        Some(_) => Buf::with_capacity(0),
                        None => Buf::with_capacity(size),
                    };
                    recv(&conn, pool, buf, CostParser::default())?;
                    accepted.fetch_add(1, Ordering::Release);
                }
                listener.accept(Op::Accept)?;
            }
            Op::Recv(conn, mut parser) => {
                let buf = match pool {
                    None => p.take_buf().expect("recv returns its buffer"),
                    Some(_) => match (p.take_pooled(), &p.result, pooled) {
                        (Some(b), _, Some(pooled)) => {
                            let copy = Buf::copy_from(&b);
                            drop(b);
                            pooled.returned()?;
                            copy
                        }
                        (None, Err(e), Some(pooled)) if is_pool_exhausted(e) => {
                            // The data waits in the socket: receive again
                            // once a buffer comes back.
                            pooled.starve(conn, parser)?;
                            continue;
                        }
                        _ => Buf::with_capacity(0),
                    },
                };
                if matches!(p.result, Ok(n) if n > 0) {
                    if let Some(scope) = costs {
                        let w = parser.feed(&buf, size);
                        loadgen::burn(w.spin_ns);
                        if scope && w.block_ns > 0 {
                            port.blocking(|| loadgen::block(w.block_ns));
                        } else {
                            loadgen::block(w.block_ns);
                        }
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
                    recv(&conn, pool, buf, parser)?;
                }
            }
        }
    }
}
