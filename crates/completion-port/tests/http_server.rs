//! The HTTP example (`examples/http_server`) end to end, on both backends:
//! files fetched over one keep-alive connection and over several, bytes
//! compared; HEAD, 404, 405, 400 (a `..` that would leave the root),
//! pipelining, `Connection: close`; an idle connection closed by the
//! server after its time-out; shutdown closing every connection; and the
//! built example stopping cleanly on SIGTERM. Every wait is bounded.

mod common;

#[allow(dead_code)]
#[path = "../examples/http_server/main.rs"]
mod http_server;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use completion_port::Backend;
use http_server::{Config, Server};

/// A response as the client saw it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A blocking HTTP/1.1 client on one connection; every read bounded by
/// [`WAIT`].
struct Client {
    stream: TcpStream,
    /// Bytes received and not yet parsed.
    pending: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the server");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, raw: &str) {
        self.stream
            .write_all(raw.as_bytes())
            .expect("send a request");
    }

    /// Reads one more chunk into `pending`; false at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) => panic!("reading a response: {e} (no answer within {WAIT:?}?)"),
        }
    }

    /// Reads one response; `head_only` for the answer to a HEAD (no body
    /// whatever its Content-Length says).
    fn response(&mut self, head_only: bool) -> Response {
        let end = loop {
            if let Some(i) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(
                self.fill(),
                "the server closed the connection before a whole head"
            );
        };
        let head = String::from_utf8(self.pending[..end].to_vec()).expect("an ASCII head");
        self.pending.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("a header line");
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let len: usize = r
            .header("content-length")
            .expect("every response has a Content-Length")
            .parse()
            .unwrap();
        if !head_only {
            while self.pending.len() < len {
                assert!(self.fill(), "the server closed the connection mid-body");
            }
            r.body = self.pending.drain(..len).collect();
        }
        r
    }

    fn get(&mut self, path: &str) -> Response {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"));
        self.response(false)
    }

    /// Waits for the server to close the connection: true when it did
    /// (end of stream, or a reset), false when nothing came within `wait`.
    fn closed_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 1];
        let closed = match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => panic!("unexpected bytes from the server"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true, // reset
        };
        self.stream.set_read_timeout(Some(WAIT)).unwrap();
        closed
    }
}

/// `n` patterned bytes (every offset distinguishable).
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
        .collect()
}

/// A temporary directory with `root/` (the served files) and a `secret`
/// beside it that no request may reach.
struct Site {
    dir: tempfile::TempDir,
    small: Vec<u8>,
    four_k: Vec<u8>,
    one_mib: Vec<u8>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub dir")).unwrap();
        let site = Site {
            dir,
            small: b"hello, port\n".to_vec(),
            four_k: pattern(4096, 1),
            one_mib: pattern(1 << 20, 2),
        };
        std::fs::write(root.join("small.txt"), &site.small).unwrap();
        std::fs::write(root.join("4k.bin"), &site.four_k).unwrap();
        std::fs::write(root.join("1m.bin"), &site.one_mib).unwrap();
        std::fs::write(root.join("index.html"), b"<p>index</p>").unwrap();
        std::fs::write(root.join("sub dir").join("index.html"), b"<p>sub</p>").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        std::fs::write(site.dir.path().join("secret"), b"do not serve").unwrap();
        site
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn start(&self, backend: Backend, tune: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config::new(self.root());
        config.addr = "127.0.0.1:0".parse().unwrap();
        config.backend = backend;
        config.workers = 2;
        tune(&mut config);
        let server = Server::start(config).expect("start the server");
        assert_eq!(server.backend(), backend);
        server
    }
}

/// Shuts the server down, bounded by [`WAIT`].
fn stop(server: Server) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(server.shutdown()));
    rx.recv_timeout(WAIT)
        .expect("shutdown finished in time")
        .expect("no worker failed");
}

/// The requests of one keep-alive connection, with the server tuned by
/// `tune` (cache and inline size: both ways of sending a file).
fn one_connection(backend: Backend, tune: impl FnOnce(&mut Config)) {
    let site = Site::new();
    let server = site.start(backend, tune);
    let mut c = Client::connect(server.local_addr());

    let r = c.get("/small.txt");
    assert_eq!((r.status, &r.body), (200, &site.small));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(r.header("date").is_some_and(|d| d.ends_with(" GMT")));
    for _ in 0..2 {
        // Twice: the second time from the cache, when there is one.
        let r = c.get("/1m.bin");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), site.one_mib.len());
        assert!(r.body == site.one_mib, "1 MiB body differs");
        assert_eq!(c.get("/4k.bin").body, site.four_k);
    }
    assert_eq!(c.get("/").body, b"<p>index</p>");
    assert_eq!(c.get("/sub%20dir/").body, b"<p>sub</p>");
    assert_eq!(c.get("/small.txt?v=1#top").body, site.small);
    let r = c.get("/empty");
    assert_eq!((r.status, r.body.len()), (200, 0));

    // HEAD: the head of the GET, no body (the next response parses).
    c.send("HEAD /1m.bin HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1048576"));

    // Missing files, directories, methods.
    let r = c.get("/missing.txt");
    assert_eq!((r.status, &r.body[..]), (404, &b"404 Not Found\n"[..]));
    assert_eq!(c.get("/small.txt/x").status, 404);
    assert_eq!(c.get("/sub%20dir").status, 404);
    c.send("DELETE /small.txt HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(false);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));

    // No way out of the root, however spelled; the connection stays.
    for target in [
        "/../secret",
        "/sub%20dir/../../secret",
        "/%2e%2e/secret",
        "/.%2E/secret",
    ] {
        let r = c.get(target);
        assert_eq!(r.status, 400, "{target}");
        assert!(!r.body.windows(6).any(|w| w == b"do not"), "{target}");
    }
    c.send("HEAD /%2e%2e/secret HTTP/1.1\r\n\r\n");
    assert_eq!(c.response(true).status, 400);

    // Pipelined: three requests in one write, three responses in order.
    c.send(
        "GET /small.txt HTTP/1.1\r\n\r\nGET /4k.bin HTTP/1.1\r\n\r\nHEAD /small.txt HTTP/1.1\r\n\r\n",
    );
    assert_eq!(c.response(false).body, site.small);
    assert_eq!(c.response(false).body, site.four_k);
    assert_eq!(c.response(true).header("content-length"), Some("12"));

    // Connection: close: the answer says so, then the server closes.
    c.send("GET /4k.bin HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = c.response(false);
    assert_eq!(
        (r.header("connection"), &r.body),
        (Some("close"), &site.four_k)
    );
    assert!(
        c.closed_within(WAIT),
        "the server kept a Connection: close open"
    );

    // HTTP/1.0 closes by default; garbage gets a 400 and a close.
    let mut c = Client::connect(server.local_addr());
    c.send("GET /small.txt HTTP/1.0\r\n\r\n");
    assert_eq!(c.response(false).header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
    let mut c = Client::connect(server.local_addr());
    c.send("NOT HTTP\r\n\r\n");
    assert_eq!(c.response(false).status, 400);
    assert!(c.closed_within(WAIT));
    stop(server);
}

fn one_keep_alive_connection(backend: Backend) {
    one_connection(backend, |_| {});
}

/// No cache (`Port::open` per request) and every file with `send_file`.
fn one_connection_open_per_request_send_file_only(backend: Backend) {
    one_connection(backend, |c| {
        c.cache = 0;
        c.inline_max = 0;
    });
}

/// Eight connections at once, each fetching every file several times.
fn several_connections(backend: Backend) {
    let site = Site::new();
    let server = site.start(backend, |_| {});
    let addr = server.local_addr();
    let (tx, rx) = mpsc::channel();
    for i in 0..8 {
        let (tx, small, four_k, one_mib) = (
            tx.clone(),
            site.small.clone(),
            site.four_k.clone(),
            site.one_mib.clone(),
        );
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            let mut ok = 0;
            for round in 0..5 {
                let (path, want) = match (i + round) % 3 {
                    0 => ("/small.txt", &small),
                    1 => ("/4k.bin", &four_k),
                    _ => ("/1m.bin", &one_mib),
                };
                let r = c.get(path);
                ok += usize::from(r.status == 200 && r.body == *want);
            }
            let _ = tx.send(ok);
        });
    }
    let ok: usize = (0..8)
        .map(|_| {
            rx.recv_timeout(WAIT * 3)
                .expect("a client finished in time")
        })
        .sum();
    assert_eq!(ok, 40, "responses with the right bytes");
    stop(server);
}

/// An idle connection is closed by the server after the idle time-out,
/// not before; one that keeps asking stays open.
fn idle_connection_closed(backend: Backend) {
    let site = Site::new();
    let idle = Duration::from_millis(300);
    let server = site.start(backend, |c| c.idle_timeout = idle);
    let addr = server.local_addr();

    // Never asks.
    let mut silent = Client::connect(addr);
    let t = Instant::now();
    assert!(silent.closed_within(WAIT), "an idle connection stayed open");
    assert!(
        t.elapsed() >= idle - Duration::from_millis(50),
        "closed early: {:?}",
        t.elapsed()
    );

    // Asks every 100 ms for longer than the time-out, then goes quiet.
    let mut busy = Client::connect(addr);
    for _ in 0..6 {
        assert_eq!(busy.get("/small.txt").body, site.small);
        thread::sleep(Duration::from_millis(100));
    }
    assert!(busy.closed_within(WAIT), "an idle connection stayed open");

    // A request cut in the middle of its head counts as idle too.
    let mut partial = Client::connect(addr);
    partial.send("GET /small.txt HTTP/1.1\r\nHo");
    assert!(partial.closed_within(WAIT));
    stop(server);
}

/// Shutdown closes the connections it leaves, stops accepting, and the
/// server's files and sockets are gone.
fn shutdown_closes_connections(backend: Backend) {
    let site = Site::new();
    let server = site.start(backend, |_| {});
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/4k.bin").body, site.four_k);
    stop(server);
    assert!(c.closed_within(WAIT), "a connection outlived the server");
    match TcpStream::connect(addr) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
        Ok(_) => panic!("the listener outlived the server"),
    }
}

/// The built example, run as a user runs it: it prints its address, serves,
/// and exits with status 0 on SIGTERM. `cargo test` builds the examples;
/// `cargo test --test http_server` alone does not (then build it first with
/// `cargo build -p completion-port --example http_server`).
fn binary_stops_on_sigterm(backend: Backend) {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/http_server-<hash> -> target/<profile>/examples/http_server
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/http_server");
    assert!(
        bin.exists(),
        "{} is not built: run `cargo test` (which builds the examples) or \
         `cargo build -p completion-port --example http_server` first",
        bin.display()
    );
    let site = Site::new();
    let mut child = std::process::Command::new(&bin)
        .args(["--addr", "127.0.0.1:0", "--backend", &backend.to_string()])
        .arg(site.root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while stdout.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
    });
    let line = rx
        .recv_timeout(WAIT)
        .expect("the example printed its address");
    let addr: SocketAddr = line
        .strip_prefix("listening on http://")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    assert!(line.ends_with(&format!("({backend})")), "{line}");
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/1m.bin").body, site.one_mib);
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the example did not stop within {WAIT:?} of SIGTERM");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit status {status}; stderr: {err}");
    assert!(err.contains("SIGTERM: shutting down"), "{err}");
    assert!(c.closed_within(WAIT), "a connection outlived the process");
}

per_backend!(
    one_keep_alive_connection,
    one_connection_open_per_request_send_file_only,
    several_connections,
    idle_connection_closed,
    shutdown_closes_connections,
    binary_stops_on_sigterm,
);
