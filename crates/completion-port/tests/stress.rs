//! Seeded exactly-once stress (windows-semantics §3.16): several threads issue a random
//! mix of nops, posts, file writes and reads, and socket sends and receives
//! over a few loopback connections, and dequeue concurrently. Every issued
//! operation's packet must be seen exactly once, with the right key, kind,
//! token, result and buffer; every buffer must come back.
//!
//! `CPORT_STRESS_SEED` (default fixed) picks the per-thread operation
//! sequences; `CPORT_STRESS_OPS` (default 200 000) the number of random
//! operations (receives re-issued to drain the sockets come on top).

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use completion_port::{Backend, Buf, Handle, Packet, PacketKind, Port, Token};

use common::{env_or, port, Rng, WAIT};

const DEFAULT_SEED: u64 = 0x5eed_c0de_2024_0001;
const DEFAULT_OPS: usize = 200_000;
const THREADS: usize = 4;
/// Fewer than the threads, so that the concurrency limit parks some.
const CONCURRENCY: usize = 3;
const PAIRS: usize = 3;
/// Most operations in flight at once (across threads, roughly).
const MAX_IN_FLIGHT: usize = 256;
const READ_AREA: usize = 64 * 1024;
const FILE_KEY: usize = 1;
const POST_KEY: usize = 2;
const SEND_KEY: usize = 10; // + pair
const RECV_KEY: usize = 20; // + pair

/// Byte `i` of the read area.
fn pat(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

#[derive(Debug)]
enum Op {
    Nop,
    Post { bytes: usize },
    Write { off: u64, len: usize, fill: u8 },
    Read { off: u64, len: usize },
    Send { pair: usize, len: usize },
    Recv { pair: usize, cap: usize },
}

#[derive(Debug)]
struct Ctx {
    id: usize,
    key: usize,
    op: Op,
}

const ISSUED: u8 = 1;
const SEEN: u8 = 2;

struct Shared {
    port: Port<Ctx>,
    file: Handle<Ctx>,
    senders: Vec<Handle<Ctx>>,
    receivers: Vec<Handle<Ctx>>,
    /// Random operations still to issue.
    budget: AtomicUsize,
    /// Threads between taking budget and finishing the issue call.
    issuing: AtomicUsize,
    next_id: AtomicUsize,
    /// Next 64-byte slot past the read area for a write.
    write_slot: AtomicU64,
    /// Per operation id: 0 never issued, ISSUED, SEEN.
    state: Vec<AtomicU8>,
    /// Per operation id: its token + 1 (0: not known yet).
    token: Vec<AtomicU64>,
    issued: AtomicUsize,
    completed: AtomicUsize,
    bufs_out: AtomicUsize,
    sends_in_flight: AtomicUsize,
    sent: Vec<(AtomicU64, AtomicU64)>,
    received: Vec<(AtomicU64, AtomicU64)>,
    eof: AtomicUsize,
    writes: Mutex<Vec<(u64, usize, u8)>>,
    kinds: Mutex<HashMap<&'static str, usize>>,
    abort: AtomicBool,
}

impl Shared {
    /// Read `completed` before `issued`: both only grow and
    /// `completed <= issued` at every instant, so this never underflows,
    /// and equality means that at the first load nothing was in flight.
    fn in_flight(&self) -> usize {
        let completed = self.completed.load(SeqCst);
        self.issued.load(SeqCst) - completed
    }

    fn done(&self) -> bool {
        self.budget.load(SeqCst) == 0 && self.eof.load(SeqCst) == PAIRS && self.in_flight() == 0
    }

    /// Records the token of operation `id` (from the issue call or from
    /// its packet, whichever comes first) and checks the two agree.
    fn check_token(&self, id: usize, token: Token) {
        let t = token.as_u64() + 1;
        if let Err(old) = self.token[id].compare_exchange(0, t, SeqCst, SeqCst) {
            assert_eq!(old, t, "op {id}: packet token differs from issue token");
        }
    }

    fn issue(&self, key: usize, op: Op) {
        let id = self.next_id.fetch_add(1, SeqCst);
        assert!(
            id < self.state.len(),
            "more operations than the tracking table holds"
        );
        self.state[id].store(ISSUED, SeqCst);
        self.issued.fetch_add(1, SeqCst);
        let with_buf = !matches!(op, Op::Nop | Op::Post { .. });
        if with_buf {
            self.bufs_out.fetch_add(1, SeqCst);
        }
        let r = match op {
            Op::Nop => {
                let h = match key {
                    FILE_KEY => &self.file,
                    k if k >= RECV_KEY => &self.receivers[k - RECV_KEY],
                    k => &self.senders[k - SEND_KEY],
                };
                h.nop(Ctx { id, key, op }).map(Some)
            }
            Op::Post { bytes } => self
                .port
                .post(POST_KEY, bytes, Ctx { id, key, op })
                .map(|()| None),
            Op::Write { off, len, fill } => self
                .file
                .write_at(Buf::from(vec![fill; len]), off, Ctx { id, key, op })
                .map(Some),
            Op::Read { off, len } => self
                .file
                .read_at(Buf::with_capacity(len), off, Ctx { id, key, op })
                .map(Some),
            Op::Send { pair, len } => {
                let fill = (id % 251) as u8 + 1;
                self.sends_in_flight.fetch_add(1, SeqCst);
                self.senders[pair]
                    .send(Buf::from(vec![fill; len]), Ctx { id, key, op })
                    .map(Some)
            }
            Op::Recv { pair, cap } => self.receivers[pair]
                .recv(Buf::with_capacity(cap), Ctx { id, key, op })
                .map(Some),
        };
        match r {
            Ok(Some(token)) => self.check_token(id, token),
            Ok(None) => {}
            Err(rej) => panic!("op {id} refused: {:?}", rej.error),
        }
    }

    /// Issues one random operation.
    fn issue_random(&self, rng: &mut Rng) {
        match rng.below(20) {
            0..=4 => {
                let key = match rng.below(3) {
                    0 => FILE_KEY,
                    1 => SEND_KEY + rng.below(PAIRS as u64) as usize,
                    _ => RECV_KEY + rng.below(PAIRS as u64) as usize,
                };
                self.issue(key, Op::Nop)
            }
            5..=9 => {
                let bytes = rng.next_u64() as usize;
                self.issue(POST_KEY, Op::Post { bytes })
            }
            10..=12 => {
                // Each write goes to its own place, past the read area.
                let slot = self.write_slot.fetch_add(1, SeqCst);
                let off = READ_AREA as u64 + slot * 64 + rng.below(16);
                let len = 1 + rng.below(48) as usize;
                let fill = rng.next_u64() as u8;
                self.issue(FILE_KEY, Op::Write { off, len, fill })
            }
            13..=15 => {
                let len = 1 + rng.below(512) as usize;
                let off = rng.below((READ_AREA - len) as u64);
                self.issue(FILE_KEY, Op::Read { off, len })
            }
            _ => {
                let pair = rng.below(PAIRS as u64) as usize;
                let len = 1 + rng.below(512) as usize;
                self.issue(SEND_KEY + pair, Op::Send { pair, len })
            }
        }
    }

    fn count(&self, kind: &'static str) {
        *self.kinds.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// Checks one packet and does what it calls for.
    fn handle(&self, mut p: Packet<Ctx>) {
        let id = p.context.id;
        assert!(id < self.next_id.load(SeqCst), "packet of an unknown op");
        if let Err(s) = self.state[id].compare_exchange(ISSUED, SEEN, SeqCst, SeqCst) {
            panic!("op {id} ({:?}): packet seen in state {s}", p.context.op);
        }
        assert_eq!(p.key, p.context.key, "op {id}: wrong key");
        if let Some(t) = p.token() {
            self.check_token(id, t);
        }
        let n = match &p.result {
            Ok(n) => *n,
            Err(e) => panic!("op {id} ({:?}) failed: {e}", p.context.op),
        };
        let buf = p.take_buf();
        if buf.is_some() {
            self.bufs_out.fetch_sub(1, SeqCst);
        }
        match p.context.op {
            Op::Nop => {
                assert_eq!((p.kind(), n), (PacketKind::Nop, 0));
                assert!(buf.is_none());
                self.count("nop");
            }
            Op::Post { bytes } => {
                assert_eq!((p.kind(), n, p.token()), (PacketKind::Posted, bytes, None));
                assert!(buf.is_none());
                self.count("post");
            }
            Op::Write { off, len, fill } => {
                assert_eq!((p.kind(), n), (PacketKind::Write, len));
                let b = buf.expect("write buffer back");
                assert_eq!((b.len(), b.capacity()), (len, len));
                assert!(b.iter().all(|&x| x == fill));
                self.writes.lock().unwrap().push((off, len, fill));
                self.count("write");
            }
            Op::Read { off, len } => {
                assert_eq!((p.kind(), n), (PacketKind::Read, len));
                let b = buf.expect("read buffer back");
                assert_eq!((b.len(), b.capacity()), (len, len));
                for (j, &x) in b.iter().enumerate() {
                    assert_eq!(x, pat(off as usize + j), "op {id}: read at {off}+{j}");
                }
                self.count("read");
            }
            Op::Send { pair, len } => {
                assert_eq!(p.kind(), PacketKind::Send);
                assert!((1..=len).contains(&n), "op {id}: sent {n} of {len}");
                let b = buf.expect("send buffer back");
                assert_eq!(b.len(), len);
                let sum: u64 = b[..n].iter().map(|&x| u64::from(x)).sum();
                self.sent[pair].0.fetch_add(n as u64, SeqCst);
                self.sent[pair].1.fetch_add(sum, SeqCst);
                self.sends_in_flight.fetch_sub(1, SeqCst);
                self.count("send");
            }
            Op::Recv { pair, cap } => {
                assert_eq!(p.kind(), PacketKind::Recv);
                let b = buf.expect("receive buffer back");
                assert_eq!((b.len(), b.capacity()), (n, cap));
                if n == 0 {
                    // The sender shut down: end of this pair's stream.
                    self.eof.fetch_add(1, SeqCst);
                } else {
                    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
                    self.received[pair].0.fetch_add(n as u64, SeqCst);
                    self.received[pair].1.fetch_add(sum, SeqCst);
                    // Keep one receive pending per pair (before counting
                    // this one complete, so `done` cannot see a gap).
                    self.issue(RECV_KEY + pair, Op::Recv { pair, cap });
                }
                self.count("recv");
            }
        }
        self.completed.fetch_add(1, SeqCst);
    }

    fn worker(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut out = Vec::new();
        while !self.done() && !self.abort.load(SeqCst) {
            // Issue a random batch, unless too much is in flight.
            let batch = 1 + rng.below(8);
            for _ in 0..batch {
                if self.in_flight() >= MAX_IN_FLIGHT {
                    break;
                }
                self.issuing.fetch_add(1, SeqCst);
                let took = self
                    .budget
                    .fetch_update(SeqCst, SeqCst, |b| b.checked_sub(1))
                    .is_ok();
                if took {
                    self.issue_random(&mut rng);
                }
                self.issuing.fetch_sub(1, SeqCst);
                if !took {
                    break;
                }
            }
            // Dequeue, one or several at a time.
            let timeout = Some(Duration::from_millis(2));
            if rng.below(2) == 0 {
                match self.port.get(timeout) {
                    Ok(p) => self.handle(p),
                    Err(completion_port::GetError::Timeout) => {}
                    Err(e) => panic!("get: {e:?}"),
                }
            } else {
                let max = 1 + rng.below(16) as usize;
                match self.port.get_many(&mut out, max, timeout) {
                    Ok(n) => {
                        assert!((1..=max).contains(&n) && n == out.len());
                        for p in out.drain(..) {
                            self.handle(p);
                        }
                    }
                    Err(completion_port::GetError::Timeout) => assert!(out.is_empty()),
                    Err(e) => panic!("get_many: {e:?}"),
                }
            }
        }
    }
}

/// Sets the shared abort flag if the worker panics, so the others stop.
struct AbortOnPanic<'a>(&'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, SeqCst);
        }
    }
}

fn exactly_once_under_load(backend: Backend) {
    let seed: u64 = env_or("CPORT_STRESS_SEED", DEFAULT_SEED);
    let ops: usize = env_or("CPORT_STRESS_OPS", DEFAULT_OPS);
    println!("stress: CPORT_STRESS_SEED={seed} CPORT_STRESS_OPS={ops} backend={backend}");
    let started = Instant::now();

    let port = port::<Ctx>(backend, CONCURRENCY);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&(0..READ_AREA).map(pat).collect::<Vec<u8>>())
        .unwrap();
    let file = port.associate(f, FILE_KEY).unwrap();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for p in 0..PAIRS {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        senders.push(port.associate(a, SEND_KEY + p).unwrap());
        receivers.push(port.associate(b, RECV_KEY + p).unwrap());
    }
    let table = 2 * ops + 4096;
    let shared = Shared {
        port: port.clone(),
        file,
        senders,
        receivers,
        budget: AtomicUsize::new(ops),
        issuing: AtomicUsize::new(0),
        next_id: AtomicUsize::new(0),
        write_slot: AtomicU64::new(0),
        state: (0..table).map(|_| AtomicU8::new(0)).collect(),
        token: (0..table).map(|_| AtomicU64::new(0)).collect(),
        issued: AtomicUsize::new(0),
        completed: AtomicUsize::new(0),
        bufs_out: AtomicUsize::new(0),
        sends_in_flight: AtomicUsize::new(0),
        sent: (0..PAIRS).map(|_| Default::default()).collect(),
        received: (0..PAIRS).map(|_| Default::default()).collect(),
        eof: AtomicUsize::new(0),
        writes: Mutex::new(Vec::new()),
        kinds: Mutex::new(HashMap::new()),
        abort: AtomicBool::new(false),
    };
    for pair in 0..PAIRS {
        shared.issue(RECV_KEY + pair, Op::Recv { pair, cap: 4096 });
    }

    thread::scope(|s| {
        let sh = &shared;
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let seed = seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                s.spawn(move || {
                    let _guard = AbortOnPanic(&sh.abort);
                    sh.worker(seed)
                })
            })
            .collect();
        // Coordinator: once every send is issued and completed, end the
        // streams so the last receives complete; fail if progress stops.
        let mut shut = false;
        let mut last = (0, Instant::now());
        while !sh.done() && !sh.abort.load(SeqCst) {
            thread::sleep(Duration::from_millis(2));
            if !shut
                && sh.budget.load(SeqCst) == 0
                && sh.issuing.load(SeqCst) == 0
                && sh.sends_in_flight.load(SeqCst) == 0
            {
                for h in &sh.senders {
                    socket2::SockRef::from(h).shutdown(Shutdown::Write).unwrap();
                }
                shut = true;
            }
            let now = sh.completed.load(SeqCst);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > WAIT {
                sh.abort.store(true, SeqCst);
                let missing: Vec<usize> = (0..sh.next_id.load(SeqCst))
                    .filter(|&i| sh.state[i].load(SeqCst) != SEEN)
                    .take(20)
                    .collect();
                panic!(
                    "no progress for {WAIT:?}: issued {}, completed {}, budget {}, eof {}, \
                     stats {:?}, first missing ids {missing:?}",
                    sh.issued.load(SeqCst),
                    sh.completed.load(SeqCst),
                    sh.budget.load(SeqCst),
                    sh.eof.load(SeqCst),
                    sh.port.stats()
                );
            }
        }
        for w in workers {
            w.join().expect("a worker failed");
        }
    });
    assert!(!shared.abort.load(SeqCst));

    let issued = shared.next_id.load(SeqCst);
    assert_eq!(shared.issued.load(SeqCst), issued);
    assert_eq!(shared.completed.load(SeqCst), issued);
    assert!(issued >= ops + PAIRS, "{issued} operations issued");
    for i in 0..issued {
        assert_eq!(shared.state[i].load(SeqCst), SEEN, "op {i} has no packet");
    }
    assert_eq!(shared.bufs_out.load(SeqCst), 0, "buffers not handed back");
    for p in 0..PAIRS {
        let sent = (shared.sent[p].0.load(SeqCst), shared.sent[p].1.load(SeqCst));
        let got = (
            shared.received[p].0.load(SeqCst),
            shared.received[p].1.load(SeqCst),
        );
        assert_eq!(sent, got, "pair {p}: (bytes, byte sum) sent vs received");
    }
    let view = File::from(shared.file.as_fd().try_clone_to_owned().unwrap());
    let writes = shared.writes.lock().unwrap();
    for &(off, len, fill) in writes.iter() {
        let mut b = vec![0; len];
        view.read_exact_at(&mut b, off).unwrap();
        assert!(b.iter().all(|&x| x == fill), "write at {off} lost");
    }
    let s = port.stats();
    assert_eq!((s.queued, s.in_flight), (0, 0));
    assert_eq!(s.dequeued, issued as u64);
    let mut kinds: Vec<_> = shared.kinds.lock().unwrap().clone().into_iter().collect();
    kinds.sort();
    println!(
        "stress: {issued} operations in {:?}: {kinds:?}",
        started.elapsed()
    );
    assert!(kinds.iter().all(|&(_, n)| n > 0) && kinds.len() == 6);
}

per_backend! {
    exactly_once_under_load,
}
