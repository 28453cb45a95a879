//! Seeded model-based test of the public API (issue 17).
//!
//! Per seed: a port (random concurrency, blocked-thread detection on or
//! off) with slots of files, pipes, Unix and TCP socket pairs and
//! `/dev/null`; 2–4 threads take random steps — operations of every kind
//! (and arguments that must be refused), posts, cancels of single
//! operations (sometimes through the wrong handle), `cancel_all`, timers
//! (`post_after`, `cancel_timer`), receives with a time-out
//! (`Handle::with_timeout`), handle
//! closes followed by re-association of a fresh resource, `get` and
//! `get_many` with random sizes and time-outs, blocking scopes, thread
//! exits — and in a third of the seeds one thread closes the port at a
//! random step. The reference model (`model.rs`) predicts what each call
//! must return and what each packet may carry (key, token, kind, result,
//! bytes, aborted only after a cancel or close, timed out only with a
//! time-out), and at the end:
//! - every accepted operation yielded exactly one packet, unless the port
//!   was closed (then its context was dropped by the close);
//! - no packet was dequeued by a `get` that began after `close` returned;
//! - every context was dropped exactly once (counted per operation), and
//!   every buffer was freed (counted by the allocator, `alloc.rs`).
//!
//! Environment (long runs):
//! - `CPORT_MODEL_SEED` — first seed (default 1), `CPORT_MODEL_SEEDS`
//!   — how many consecutive seeds (default 5), `CPORT_MODEL_STEPS` — steps
//!   per seed, all threads together (default 6 000);
//! - `CPORT_MODEL_ISSUE_RACES=0` — issue calls hold their slot shared, so
//!   that they never race `close`, `cancel_all` and `cancel` on the same
//!   handle (for telling a race from another failure). By default they
//!   race (issue 17.1, fixed): an issue may then be refused with `EBADF`
//!   only if a close of its slot began before the call returned.
//!
//! A failure names its seed and the command that repeats it.

mod actor;
mod alloc;
mod model;
mod world;

#[path = "../common/mod.rs"]
mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use completion_port::{Backend, GetError, Port};

use actor::{life_name, Actor, Next};
use common::{env_or, Rng};
use model::{Model, CLOSED};
use world::Kind;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// One model run at a time: the allocator's count is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long the watchdog waits without a sign of progress.
const STALL: Duration = Duration::from_secs(60);

struct Setup {
    seed: u64,
    steps: usize,
    threads: usize,
    concurrency: usize,
    detection: bool,
    close_at: Option<usize>,
    kinds: Vec<Kind>,
}

impl Setup {
    fn from_seed(seed: u64, steps: usize) -> Setup {
        let mut rng = Rng::new(seed ^ 0x6d6f_6465_6c00);
        let threads = 2 + rng.below(3) as usize;
        let per_thread = steps / threads;
        let mut kinds: Vec<Kind> = Kind::ALL.to_vec();
        for _ in 0..rng.below(4) {
            kinds.push(Kind::ALL[rng.below(5) as usize]);
        }
        Setup {
            seed,
            steps,
            threads,
            concurrency: 1 + rng.below(3) as usize,
            detection: rng.below(2) == 0,
            close_at: (rng.below(3) == 0).then(|| 1 + rng.below(per_thread.max(1) as u64) as usize),
            kinds,
        }
    }
}

/// Runs the seeds the environment asks for on `backend`.
fn run_model(backend: Backend) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit();
    let first = env_or("CPORT_MODEL_SEED", 1u64);
    let seeds = env_or("CPORT_MODEL_SEEDS", 5u64);
    let steps = env_or("CPORT_MODEL_STEPS", 6_000usize);
    let races = env_or("CPORT_MODEL_ISSUE_RACES", 1u8) == 1;
    let started = Instant::now();
    let mut total = [0; 7];
    for seed in first..first + seeds {
        let t = run_seed(backend, &Setup::from_seed(seed, steps), races);
        total.iter_mut().zip(t).for_each(|(a, b)| *a += b);
    }
    let [steps, accepted, packets, aborted, refused, timeouts, timer_cancels] = total;
    println!(
        "model on {backend}: {seeds} seeds from {first}, {steps} steps, issue races {races}: \
         {accepted} ops, posts and timers accepted, {packets} packets ({aborted} aborted, \
         {timeouts} timed out, {timer_cancels} timers cancelled), {refused} refused as \
         predicted; 0 lost, 0 duplicated; \
         {:?}",
        started.elapsed()
    );
}

/// Closed handles keep their fds until the end of a seed (`world.rs`):
/// up to two per close.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit`; setrlimit reads one.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 16);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// One seed: returns the steps, and the operations accepted, packets,
/// aborted packets, refusals, time-outs and timers cancelled. Panics with
/// the seed on a failure.
fn run_seed(backend: Backend, s: &Setup, races: bool) -> [usize; 7] {
    let bufs_before = alloc::live();
    let port = Port::builder()
        .backend(backend)
        .concurrency(s.concurrency)
        .blocking_detection(s.detection)
        .build()
        .unwrap_or_else(|e| panic!("cannot open a {backend} port: {e}"));
    let m = Arc::new(Model::new(port, &s.kinds, 2 * s.steps + 64, races));
    let repeat = format!(
        "CPORT_MODEL_SEED={} CPORT_MODEL_SEEDS=1 CPORT_MODEL_STEPS={} CPORT_MODEL_ISSUE_RACES={} \
         cargo test -p completion-port --test model -- {backend}::model_short",
        s.seed, s.steps, races as u8
    );
    let (done, dog) = watchdog(m.clone(), repeat.clone());
    thread::scope(|scope| {
        for t in 0..s.threads {
            let m = &*m;
            let seed = s.seed ^ (t as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let close_at = if t == 0 { s.close_at } else { None };
            let steps = s.steps / s.threads;
            scope.spawn(move || logical_thread(Actor::new(m, t, seed, close_at), steps));
        }
    });
    if !m.failed() && m.life.load(SeqCst) != CLOSED {
        end_open(&m);
    } else if !m.failed() {
        // Closed during the run: `close` returned once nothing was in
        // flight, and nothing can have been accepted since.
        let st = m.port.stats();
        if st.in_flight != 0 || st.queued != 0 {
            let left = m.outstanding();
            m.fail(format!(
                "the port closed, yet {st:?}; accepted and never ended or dropped:{}",
                m.describe(&left)
            ));
        }
    }
    if !m.failed() {
        // Closing ends what the port still holds; then the handles go.
        m.port.close();
        for slot in &m.slots {
            let _ = slot.close_and_replace(&m.port);
        }
        if let Err(e) = m.final_check() {
            m.fail(e);
        }
    }
    let _ = done.send(());
    dog.join().expect("the watchdog");
    let failure = m.failure.lock().unwrap().take();
    let tally = format!("{:?}", m.tally);
    let t = &m.tally;
    let counts = [
        s.steps,
        t.accepted.load(SeqCst),
        t.packets.load(SeqCst),
        t.aborted.load(SeqCst),
        t.refused.load(SeqCst),
        t.timeouts.load(SeqCst),
        t.timer_cancels.load(SeqCst),
    ];
    drop(m);
    if let Some(why) = failure {
        panic!(
            "model seed {} on {backend} failed: {why}\n{tally}\nrepeat: {repeat}",
            s.seed
        );
    }
    let live = alloc::live() - bufs_before;
    assert_eq!(
        live, 0,
        "seed {}: {live} operation buffers never freed\nrepeat: {repeat}",
        s.seed
    );
    counts
}

/// Runs `steps` steps of one logical thread, in a new OS thread after
/// every exit step.
fn logical_thread(mut a: Actor<'_>, steps: usize) {
    while a.step < steps && !a.m.failed() {
        let (back, exited) = thread::scope(|scope| {
            scope
                .spawn(move || {
                    while a.step < steps && !a.m.failed() {
                        match a.step() {
                            Ok(Next::Go) => {}
                            Ok(Next::Exit) => return (a, true),
                            Err(why) => {
                                a.m.fail(format!("thread {} step {}: {why}", a.id, a.step));
                                break;
                            }
                        }
                    }
                    (a, false)
                })
                .join()
                .expect("a model thread panicked")
        });
        a = back;
        let _ = exited;
    }
}

/// The end of a run whose port is still open: close every slot (ending
/// what waits for data), then dequeue until every accepted operation has
/// its packet.
fn end_open(m: &Model) {
    for slot in &m.slots {
        if let Err(e) = slot.close_and_replace(&m.port) {
            return m.fail(e);
        }
    }
    let mut last = (usize::MAX, Instant::now());
    loop {
        let left = m.outstanding();
        if left.is_empty() {
            break;
        }
        if left.len() != last.0 {
            last = (left.len(), Instant::now());
        } else if last.1.elapsed() > common::WAIT {
            return m.fail(format!(
                "{} accepted operations never yielded a packet (lost); stats {:?}:{}",
                left.len(),
                m.port.stats(),
                m.describe(&left)
            ));
        }
        match m.port.get(Some(Duration::from_millis(10))) {
            Ok(mut p) => {
                if let Err(e) = m.packet(&mut p) {
                    return m.fail(e);
                }
            }
            Err(GetError::Timeout) => {}
            Err(e) => return m.fail(format!("final dequeue: {e:?}")),
        }
    }
    let s = m.port.stats();
    if s.in_flight != 0 || s.queued != 0 {
        m.fail(format!("every packet dequeued, but {s:?}"));
    }
}

/// Ends the process with a report when the run makes no progress for
/// [`STALL`] (a hang inside the library cannot be interrupted otherwise).
fn watchdog(m: Arc<Model>, repeat: String) -> (mpsc::Sender<()>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let dog = thread::spawn(move || {
        let mut last = m.progress.load(SeqCst);
        loop {
            match rx.recv_timeout(STALL) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let now = m.progress.load(SeqCst);
            if now == last {
                eprintln!(
                    "model: no progress for {STALL:?} (port {}, stats {:?}, {:?}); a call hangs\n\
                     outstanding:{}\nrepeat: {repeat}",
                    life_name(m.life.load(SeqCst)),
                    m.port.stats(),
                    m.tally,
                    m.describe(&m.outstanding()),
                );
                std::process::exit(101);
            }
            last = now;
        }
    });
    (tx, dog)
}

macro_rules! per_backend_model {
    ($($backend:ident => $b:expr),*) => {$(
        mod $backend {
            #[test]
            fn model_short() {
                super::run_model($b)
            }
        }
    )*};
}

per_backend_model!(io_uring => completion_port::Backend::IoUring, epoll => completion_port::Backend::Epoll);
