//! The servers of the `http` workload, each run in a process of its own
//! (the hidden `cport-bench --http-serve KIND,DIR,CPU|-`), so that its CPU
//! time can be read from `/proc/PID/stat` like nginx's:
//!
//! - **ours** (`ours`, `ours-open`, `ours-sendfile`): the crate's example
//!   `examples/http_server` itself (its `run`, as a user starts it):
//!   cached handles and small files read inline (its defaults), a
//!   `Port::open` per request (`--cache 0`), or `send_file` at every size
//!   (`--inline-max 0`).
//! - **tokio**: the same server written for tokio, with the same HTTP code
//!   (the example's `http` module) and the same features (idle time-out,
//!   keep-alive, pipelining, a cache of open files, the same 16 KiB
//!   inline limit), in three ways a tokio user sends a file:
//!   - `tokio-sendfile` (the peer of the rows): files opened with
//!     `std::fs` on the worker (a page-cache hit does not block) and kept
//!     in the same kind of cache; small ones read into the head's buffer
//!     and sent with one `write_all`, larger ones sent with `sendfile(2)`
//!     on the socket's writability (`TcpStream::writable` + `try_io`) —
//!     zero-copy, as nginx does;
//!   - `tokio-read`: the same, but every file read into memory and sent
//!     with `write_all` (no `sendfile`);
//!   - `tokio-fs`: the textbook `tokio::fs::File::open` + `tokio::io::copy`
//!     (every file operation on tokio's blocking pool), no cache.
//!
//! Each prints `listening on http://ADDR …` once it serves, and serves
//! until SIGTERM (ours shuts down cleanly and exits 0; tokio's process
//! just ends). Threads: as many as the CPUs the process may run on (the
//! bench pins it to one): one worker on our port, one tokio worker.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::pin;

#[allow(dead_code)] // its `main`: the example's own entry point
#[path = "../../completion-port/examples/http_server/main.rs"]
mod example;

use example::http::{self, Parse, Status};

/// The servers by name (`--http-serve KIND,…`).
pub(crate) const KINDS: [&str; 6] = [
    "ours",
    "ours-open",
    "ours-sendfile",
    "tokio-sendfile",
    "tokio-read",
    "tokio-fs",
];

/// Files kept open by the caching servers (the example's default).
const CACHE: usize = 256;
/// Files up to this size are sent inline (the example's default).
const INLINE_MAX: u64 = 16 * 1024;
/// Idle time-out of every server (and nginx's `keepalive_timeout`).
pub(crate) const IDLE: Duration = Duration::from_secs(10);

/// Runs `--http-serve KIND,DIR,CPU|-` (module docs).
pub(crate) fn serve(spec: &str, backend: completion_port::Backend) -> io::Result<()> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "bad --http-serve {spec:?}: {why} (expected KIND,DIR,CPU|-, KIND one of {})",
                KINDS.join(", ")
            ),
        )
    };
    let [kind, dir, cpu] = spec.splitn(3, ',').collect::<Vec<_>>()[..] else {
        return Err(bad("three fields"));
    };
    let cpu = match cpu {
        "-" => None,
        c => Some(c.parse().map_err(|_| bad("bad CPU"))?),
    };
    // Before any thread starts: every thread of the server inherits it.
    pin(cpu);
    let mut args: Vec<String> = ["--addr", "127.0.0.1:0", "--backend", &backend.to_string()]
        .map(String::from)
        .to_vec();
    args.extend(["--idle-timeout".into(), IDLE.as_secs().to_string()]);
    match kind {
        "ours" => {}
        "ours-open" => args.extend(["--cache".into(), "0".into()]),
        "ours-sendfile" => args.extend(["--inline-max".into(), "0".into()]),
        "tokio-sendfile" => return tokio_server(dir.into(), Send::Sendfile),
        "tokio-read" => return tokio_server(dir.into(), Send::Read),
        "tokio-fs" => return tokio_server(dir.into(), Send::Fs),
        _ => return Err(bad("unknown server")),
    }
    args.push(dir.into());
    example::run(args)
}

/// How the tokio server sends a file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Send {
    Sendfile,
    Read,
    Fs,
}

/// A cached file: the file, its size, when it was opened.
type Entry = (Arc<File>, u64, Instant);

/// Open files by path, like the example's cache (same size, same 1 s
/// validity).
struct Cache {
    files: Mutex<HashMap<PathBuf, Entry>>,
}

impl Cache {
    const VALID: Duration = Duration::from_secs(1);

    /// The file at `path` and its size: from the cache, or opened (on the
    /// calling thread: a path in the page cache does not block).
    fn open(&self, path: &PathBuf) -> io::Result<(Arc<File>, u64)> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, size, at)) = files.get(path) {
            if at.elapsed() < Self::VALID {
                return Ok((f.clone(), *size));
            }
        }
        drop(files);
        let f = File::open(path)?;
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        let f = Arc::new(f);
        files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if files.len() >= CACHE && !files.contains_key(path) {
            files.retain(|_, (_, _, at)| at.elapsed() < Self::VALID);
            if files.len() >= CACHE {
                files.clear();
            }
        }
        files.insert(path.clone(), (f.clone(), m.len(), Instant::now()));
        Ok((f, m.len()))
    }
}

/// The tokio server: a multi-thread runtime with its default worker count
/// (the CPUs the process may run on), a task per connection.
fn tokio_server(root: PathBuf, send: Send) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("listening on http://{} (tokio)", listener.local_addr()?);
        let shared = Arc::new((
            root,
            Cache {
                files: Mutex::new(HashMap::new()),
            },
        ));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                // A connection reset before it was accepted, or no file
                // descriptor left: keep serving the others.
                Err(_) => continue,
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let _ = connection(stream, &shared.0, &shared.1, send).await;
            });
        }
    })
}

/// One connection: read a head (idle time-out), answer, repeat.
async fn connection(
    mut stream: TcpStream,
    root: &std::path::Path,
    cache: &Cache,
    send: Send,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        let (req, used) = match http::parse(&buf) {
            Parse::Incomplete if buf.len() < http::MAX_HEAD => {
                buf.reserve(4096);
                let read = tokio::time::timeout(IDLE, stream.read_buf(&mut buf)).await;
                match read {
                    Ok(Ok(0)) | Err(_) => return Ok(()), // closed, or idle
                    Ok(r) => r?,
                };
                continue;
            }
            Parse::Incomplete => return error(&mut stream, Status::HeaderTooLarge, false).await,
            Parse::Bad => return error(&mut stream, Status::BadRequest, false).await,
            Parse::Done(req, used) => (req, used),
        };
        let keep_alive = req.keep_alive && !req.has_body;
        let head_only = req.method == http::Method::Head;
        let target = match req.method {
            http::Method::Other => Err(Status::MethodNotAllowed),
            _ => http::resolve(root, req.target),
        };
        buf.drain(..used);
        let path = match target {
            Ok(p) => p,
            Err(status) => {
                let mut out = Vec::with_capacity(256);
                http::write_error(&mut out, status, head_only, keep_alive);
                stream.write_all(&out).await?;
                if keep_alive {
                    continue;
                }
                return Ok(());
            }
        };
        let sent = match send {
            Send::Fs => reply_fs(&mut stream, &path, head_only, keep_alive).await?,
            _ => reply(&mut stream, cache, &path, head_only, keep_alive, send).await?,
        };
        if !sent || !keep_alive {
            return Ok(());
        }
    }
}

/// Sends an error response, then the caller closes.
async fn error(stream: &mut TcpStream, status: Status, keep_alive: bool) -> io::Result<()> {
    let mut out = Vec::with_capacity(256);
    http::write_error(&mut out, status, false, keep_alive);
    stream.write_all(&out).await
}

/// 404 or 403 for a file that did not open.
fn open_error(e: &io::Error) -> Status {
    if e.kind() == io::ErrorKind::PermissionDenied {
        Status::Forbidden
    } else {
        Status::NotFound
    }
}

/// Answers with the file at `path` (cached, `std::fs`): false when the
/// connection must close (the file changed under its Content-Length).
async fn reply(
    stream: &mut TcpStream,
    cache: &Cache,
    path: &PathBuf,
    head_only: bool,
    keep_alive: bool,
    send: Send,
) -> io::Result<bool> {
    let mut out = Vec::with_capacity(256);
    let (file, size) = match cache.open(path) {
        Ok(f) => f,
        Err(e) => {
            http::write_error(&mut out, open_error(&e), head_only, keep_alive);
            stream.write_all(&out).await?;
            return Ok(true);
        }
    };
    let kind = http::content_type(path);
    http::write_head(&mut out, Status::Ok, size, kind, keep_alive);
    if head_only || size == 0 {
        stream.write_all(&out).await?;
        return Ok(true);
    }
    if size <= INLINE_MAX || send == Send::Read {
        // Read after the head, one write.
        let head = out.len();
        out.resize(head + size as usize, 0);
        let n = read_full(&file, &mut out[head..])?;
        if n < size as usize {
            return Ok(false);
        }
        stream.write_all(&out).await?;
        return Ok(true);
    }
    stream.write_all(&out).await?;
    sendfile(stream, &file, size).await
}

/// Reads the file from offset 0 into `buf` (a page-cache hit: no wait).
fn read_full(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// `sendfile(2)` of the whole file on the socket, driven by its
/// writability: false when the file ended early.
async fn sendfile(stream: &TcpStream, file: &File, size: u64) -> io::Result<bool> {
    let mut offset: libc::off_t = 0;
    let end = size as libc::off_t;
    while offset < end {
        stream.writable().await?;
        let r = stream.try_io(Interest::WRITABLE, || {
            let left = (end - offset) as usize;
            // SAFETY: both fds are open for the call (borrowed from live
            // objects); `offset` is a valid, writable off_t.
            let n =
                unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, left) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match r {
            Ok(0) => return Ok(false), // the file shrank
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The textbook way: `tokio::fs` (the blocking pool) and `tokio::io::copy`.
async fn reply_fs(
    stream: &mut TcpStream,
    path: &PathBuf,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<bool> {
    let mut out = Vec::with_capacity(256);
    let opened = async {
        let f = tokio::fs::File::open(path).await?;
        let m = f.metadata().await?;
        if m.is_file() {
            Ok((f, m.len()))
        } else {
            Err(io::Error::from(io::ErrorKind::NotFound))
        }
    };
    let (file, size) = match opened.await {
        Ok(f) => f,
        Err(e) => {
            http::write_error(&mut out, open_error(&e), head_only, keep_alive);
            stream.write_all(&out).await?;
            return Ok(true);
        }
    };
    http::write_head(
        &mut out,
        Status::Ok,
        size,
        http::content_type(path),
        keep_alive,
    );
    stream.write_all(&out).await?;
    if head_only {
        return Ok(true);
    }
    let copied = tokio::io::copy(&mut file.take(size), stream).await?;
    Ok(copied == size)
}
