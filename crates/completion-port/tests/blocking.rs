//! Blocked-thread detection (windows-semantics §1.4, README "The concurrency value"): a
//! thread that runs for a port and blocks in the kernel without a blocking
//! scope stops counting as running, so another waiter is released; when it
//! runs again it counts again (the count may exceed the concurrency value),
//! and nobody gets a packet until the count falls below the value.
//!
//! Every wait is bounded (`WAIT`, `BLOCK_LIMIT`); nothing asserts a speed.
//! "Nothing happened" checks watch for a fixed time and can only pass
//! more easily on a slow machine.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{wait_until, WAIT};
use completion_port::{Backend, BlockingDetection, GetError, PacketKind, Port};
use crossbeam_channel::{unbounded, Receiver, Sender};

/// Upper bound on how long a worker stays blocked or spinning: a bug fails
/// the test instead of hanging it.
const BLOCK_LIMIT: Duration = Duration::from_secs(20);

fn detecting_port(backend: Backend, concurrency: usize) -> Port<u32> {
    Port::builder()
        .backend(backend)
        .concurrency(concurrency)
        .blocking_detection(true)
        .build()
        .unwrap_or_else(|e| panic!("cannot open a {backend} port: {e}"))
}

/// Spins (stays runnable, never blocks) until `flag` is set.
fn spin_until(flag: &AtomicBool) {
    let end = Instant::now() + BLOCK_LIMIT;
    while !flag.load(Ordering::Acquire) {
        assert!(Instant::now() < end, "spun too long");
        std::hint::spin_loop();
    }
}

/// How worker A blocks, without a blocking scope.
#[derive(Clone, Copy, Debug)]
enum Block {
    /// `read` on a socket pair (a pipe), until the test writes a byte.
    Read,
    /// `thread::sleep` in 20 ms pieces until the test says stop.
    Sleep,
    /// `Mutex::lock` on a mutex the test holds.
    Mutex,
}

/// What the test uses to unblock A.
struct Unblock {
    write_end: UnixStream,
    stop_sleeping: Arc<AtomicBool>,
    held: Option<std::sync::MutexGuard<'static, ()>>,
}

static LOCK: Mutex<()> = Mutex::new(());

/// Events the workers report.
#[derive(Debug, PartialEq)]
enum Ev {
    Got(&'static str, u32),
    Unblocked,
    AskedAgain(&'static str, Result<u32, String>),
}

fn ctx(r: Result<completion_port::Packet<u32>, GetError>) -> Result<u32, String> {
    r.map(|p| p.context).map_err(|e| format!("{e:?}"))
}

fn recv(rx: &Receiver<Ev>, what: &str) -> Ev {
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Concurrency 1, workers A and B. A takes packet 1 and blocks (`how`)
/// without a scope; packet 2 must reach B while A is still blocked. Then
/// A is unblocked and spins: the running count goes to 2 (A counted
/// again, B still running), a third packet stays queued; B asks again and
/// gets nothing (the count, B out, is still 1); A asks again and gets it.
fn blocked_worker_lets_another_run(backend: Backend, how: Block) {
    // The mutex is process-wide: tests of the Mutex kind take turns.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());

    let port = detecting_port(backend, 1);
    let (tx, rx) = unbounded::<Ev>();
    let (mut read_end, write_end) = UnixStream::pair().unwrap();
    let stop_sleeping = Arc::new(AtomicBool::new(false));
    let held = match how {
        Block::Mutex => Some(LOCK.lock().unwrap_or_else(|e| e.into_inner())),
        _ => None,
    };
    let mut unblock = Unblock {
        write_end,
        stop_sleeping: stop_sleeping.clone(),
        held,
    };
    let a_spin = Arc::new(AtomicBool::new(false));
    let b_spin = Arc::new(AtomicBool::new(false));
    let a_ask = Arc::new(AtomicBool::new(false));

    port.post(0, 0, 1).unwrap();
    let a = {
        let (port, tx, a_spin, a_ask) = (port.clone(), tx.clone(), a_spin.clone(), a_ask.clone());
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).expect("A gets packet 1");
            tx.send(Ev::Got("A", p.context)).unwrap();
            match how {
                Block::Read => {
                    let mut b = [0u8; 1];
                    read_end.read_exact(&mut b).unwrap();
                }
                Block::Sleep => {
                    let end = Instant::now() + BLOCK_LIMIT;
                    while !stop_sleeping.load(Ordering::Acquire) && Instant::now() < end {
                        thread::sleep(Duration::from_millis(20));
                    }
                }
                Block::Mutex => drop(LOCK.lock().unwrap_or_else(|e| e.into_inner())),
            }
            tx.send(Ev::Unblocked).unwrap();
            // Running again: stay runnable until told to ask again.
            spin_until(&a_spin);
            spin_until(&a_ask);
            tx.send(Ev::AskedAgain("A", ctx(port.get(Some(WAIT)))))
                .unwrap();
        })
    };
    assert_eq!(recv(&rx, "A's packet"), Ev::Got("A", 1));

    let b = {
        let (port, tx, b_spin) = (port.clone(), tx.clone(), b_spin.clone());
        thread::spawn(move || {
            let p = port
                .get(Some(WAIT))
                .expect("B gets packet 2 while A is blocked");
            tx.send(Ev::Got("B", p.context)).unwrap();
            spin_until(&b_spin);
            // Counted out, the count is still 1 (A): nothing for B.
            let r = port.get(Some(Duration::from_millis(300)));
            tx.send(Ev::AskedAgain("B", ctx(r))).unwrap();
        })
    };
    port.post(0, 0, 2).unwrap();
    // B may wait in the kernel or park; either way it gets 2 once A is
    // seen blocked, while A stays blocked (it waits for us).
    assert_eq!(recv(&rx, "B's packet (A blocked)"), Ev::Got("B", 2));
    let s = port.stats();
    assert!(s.blocked_total >= 1, "{s:?}");

    // Unblock A: it runs (spins) again and counts again, with B running.
    match how {
        Block::Read => unblock.write_end.write_all(b"x").unwrap(),
        Block::Sleep => unblock.stop_sleeping.store(true, Ordering::Release),
        Block::Mutex => drop(unblock.held.take()),
    }
    assert_eq!(recv(&rx, "A unblocked"), Ev::Unblocked);
    wait_until("A counts again: running 2 > concurrency 1", || {
        let s = port.stats();
        s.running == 2 && s.blocked == 0
    });
    port.post(0, 0, 3).unwrap();
    // Neither asks: 3 stays queued.
    thread::sleep(common::QUIET);
    assert_eq!(port.stats().queued, 1);
    assert!(rx.try_recv().is_err());

    // B asks again: counted out, the count is 1, not below 1: nothing.
    b_spin.store(true, Ordering::Release);
    assert_eq!(
        recv(&rx, "B's second get"),
        Ev::AskedAgain("B", Err("Timeout".into()))
    );
    assert_eq!(port.stats().queued, 1);
    // A asks again: counted out, the count is 0: it takes 3 at once.
    a_spin.store(true, Ordering::Release);
    a_ask.store(true, Ordering::Release);
    assert_eq!(recv(&rx, "A's second get"), Ev::AskedAgain("A", Ok(3)));
    a.join().unwrap();
    b.join().unwrap();
    wait_until("both counted out", || port.stats().running == 0);
    assert_eq!(port.stats().blocked, 0);
}

fn blocked_on_pipe_read_lets_another_run(backend: Backend) {
    blocked_worker_lets_another_run(backend, Block::Read);
}

fn blocked_in_sleep_lets_another_run(backend: Backend) {
    blocked_worker_lets_another_run(backend, Block::Sleep);
}

fn blocked_on_mutex_lets_another_run(backend: Backend) {
    blocked_worker_lets_another_run(backend, Block::Mutex);
}

/// Concurrency 1: A takes a packet and spins for 300 ms (never blocks,
/// whoever else wants the CPUs); B, waiting, gets nothing meanwhile.
fn spinning_worker_is_never_counted_out(backend: Backend) {
    let port = detecting_port(backend, 1);
    let (tx, rx) = unbounded::<Ev>();
    let stop = Arc::new(AtomicBool::new(false));
    port.post(0, 0, 1).unwrap();
    let a = {
        let (port, tx, stop) = (port.clone(), tx.clone(), stop.clone());
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).unwrap();
            tx.send(Ev::Got("A", p.context)).unwrap();
            spin_until(&stop);
            // Asks again: takes 2 itself (it still runs).
            tx.send(Ev::AskedAgain("A", ctx(port.get(Some(WAIT)))))
                .unwrap();
        })
    };
    assert_eq!(recv(&rx, "A's packet"), Ev::Got("A", 1));
    let b = {
        let (port, tx) = (port.clone(), tx.clone());
        thread::spawn(move || {
            let r = port.get(Some(WAIT));
            tx.send(Ev::AskedAgain("B", ctx(r))).unwrap();
        })
    };
    wait_until("B waits", || {
        let s = port.stats();
        s.parked == 1 || s.leader
    });
    port.post(0, 0, 2).unwrap();
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        let s = port.stats();
        assert_eq!((s.queued, s.running, s.blocked_total), (1, 1, 0), "{s:?}");
        assert!(rx.try_recv().is_err(), "B got a packet while A spins");
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    assert_eq!(recv(&rx, "A's second get"), Ev::AskedAgain("A", Ok(2)));
    a.join().unwrap();
    // A exited (counted out): B takes the next one.
    port.post(0, 0, 3).unwrap();
    assert_eq!(recv(&rx, "B's packet"), Ev::AskedAgain("B", Ok(3)));
    b.join().unwrap();
}

/// With detection off, a blocked worker holds its slot: B gets nothing
/// while A sleeps; A asks again and takes the packet itself.
fn without_detection_a_blocked_worker_holds_the_slot(backend: Backend) {
    let port = common::explicit_port::<u32>(backend, 1);
    let (tx, rx) = unbounded::<Ev>();
    let stop = Arc::new(AtomicBool::new(false));
    port.post(0, 0, 1).unwrap();
    let a = {
        let (port, tx, stop) = (port.clone(), tx.clone(), stop.clone());
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).unwrap();
            tx.send(Ev::Got("A", p.context)).unwrap();
            let end = Instant::now() + BLOCK_LIMIT;
            while !stop.load(Ordering::Acquire) && Instant::now() < end {
                thread::sleep(Duration::from_millis(10));
            }
            tx.send(Ev::AskedAgain("A", ctx(port.get(Some(WAIT)))))
                .unwrap();
        })
    };
    assert_eq!(recv(&rx, "A's packet"), Ev::Got("A", 1));
    port.post(0, 0, 2).unwrap();
    let b = {
        let (port, tx) = (port.clone(), tx.clone());
        thread::spawn(move || {
            let r = port.get(Some(Duration::from_millis(300)));
            tx.send(Ev::AskedAgain("B", ctx(r))).unwrap();
        })
    };
    assert_eq!(
        recv(&rx, "B's get"),
        Ev::AskedAgain("B", Err("Timeout".into()))
    );
    b.join().unwrap();
    let s = port.stats();
    assert_eq!((s.queued, s.running, s.blocked_total), (1, 1, 0), "{s:?}");
    stop.store(true, Ordering::Release);
    assert_eq!(recv(&rx, "A's second get"), Ev::AskedAgain("A", Ok(2)));
    a.join().unwrap();
}

/// A running thread issues an operation (deferred on io_uring: it would be
/// submitted at its next `get`) and then blocks without a scope until the
/// operation's packet has been received — by another worker, which already
/// waits in the kernel (concurrency 2), so no kernel entry of a waiter
/// would submit it either. Only the monitor's flush at detection can.
fn detection_submits_deferred_operations(backend: Backend) {
    let port = detecting_port(backend, 2);
    let h = port.associate(File::open("/dev/null").unwrap(), 7).unwrap();
    let (tx, rx) = unbounded::<Ev>();
    let (nop_tx, nop_rx) = unbounded::<u32>();
    let go = Arc::new(AtomicBool::new(false));
    port.post(0, 0, 1).unwrap();
    let a = {
        let (port, tx, go) = (port.clone(), tx.clone(), go.clone());
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).unwrap();
            tx.send(Ev::Got("A", p.context)).unwrap();
            spin_until(&go);
            h.nop(42).unwrap();
            // Blocks (channel) until B received the no-op's packet.
            let got = nop_rx.recv_timeout(BLOCK_LIMIT);
            tx.send(Ev::AskedAgain("A", got.map_err(|e| e.to_string())))
                .unwrap();
        })
    };
    assert_eq!(recv(&rx, "A's packet"), Ev::Got("A", 1));
    let b = {
        let port = port.clone();
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).expect("B gets the no-op's packet");
            assert_eq!((p.kind(), p.key), (PacketKind::Nop, 7));
            nop_tx.send(p.context).unwrap();
        })
    };
    wait_until("B waits in the kernel", || port.stats().leader);
    go.store(true, Ordering::Release);
    assert_eq!(recv(&rx, "A unblocked"), Ev::AskedAgain("A", Ok(42)));
    a.join().unwrap();
    b.join().unwrap();
}

/// Small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Seeded stress: 6 workers, concurrency 2; each handler, chosen by a
/// seeded generator per packet, returns at once, spins, sleeps, contends
/// for a mutex, sleeps inside a blocking scope, or issues a no-op and then
/// sleeps (its packet must come back too). Every packet is delivered
/// exactly once; once every worker waits in `get`, the running count is
/// back to 0 and no thread is left counted out as blocked.
fn stress_exactly_once_and_counts_return_to_zero(backend: Backend) {
    const WORKERS: usize = 6;
    const POSTED: u32 = 1500;
    const STOP: u32 = u32::MAX;
    let seed = std::env::var("CPORT_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_b10c_u64);
    eprintln!("stress seed {seed:#x} (CPORT_STRESS_SEED)");
    let port = detecting_port(backend, 2);
    let h = port.associate(File::open("/dev/null").unwrap(), 7).unwrap();
    // Contexts: 0..POSTED posted; POSTED.. no-ops issued by handlers.
    let seen: Arc<Vec<AtomicU32>> = Arc::new((0..POSTED * 2).map(|_| AtomicU32::new(0)).collect());
    let next_nop = Arc::new(AtomicU32::new(POSTED));
    let handled = Arc::new(AtomicUsize::new(0));
    let mutex = Arc::new(Mutex::new(0u64));
    let (done_tx, done_rx): (Sender<()>, Receiver<()>) = unbounded();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (port, h, seen, next_nop, handled, mutex, done_tx) = (
                port.clone(),
                h.clone(),
                seen.clone(),
                next_nop.clone(),
                handled.clone(),
                mutex.clone(),
                done_tx.clone(),
            );
            thread::spawn(move || {
                let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                loop {
                    let p = port.get(Some(WAIT)).expect("a packet within WAIT");
                    if p.context == STOP {
                        let _ = done_tx.send(());
                        return;
                    }
                    seen[p.context as usize].fetch_add(1, Ordering::Relaxed);
                    handled.fetch_add(1, Ordering::Relaxed);
                    match rng.next() % 100 {
                        0..=59 => {}
                        60..=69 => {
                            let t = Instant::now();
                            while t.elapsed() < Duration::from_micros(200) {
                                std::hint::spin_loop();
                            }
                        }
                        70..=79 => thread::sleep(Duration::from_millis(2)),
                        80..=87 => {
                            let mut g = mutex.lock().unwrap();
                            *g += 1;
                            thread::sleep(Duration::from_micros(500));
                        }
                        88..=93 => port.blocking(|| thread::sleep(Duration::from_millis(1))),
                        _ => {
                            let c = next_nop.fetch_add(1, Ordering::Relaxed);
                            if c < POSTED * 2 {
                                h.nop(c).unwrap();
                            }
                            thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
            })
        })
        .collect();
    for c in 0..POSTED {
        port.post(0, 0, c).unwrap();
    }
    let expected = || POSTED as usize + (next_nop.load(Ordering::Relaxed) - POSTED) as usize;
    wait_until("every packet handled", || {
        handled.load(Ordering::Relaxed) == expected()
    });
    wait_until("every worker waits, none counted", || {
        let s = port.stats();
        s.running == 0
            && s.blocked == 0
            && s.queued == 0
            && s.in_flight == 0
            && s.parked + usize::from(s.leader) == WORKERS
    });
    for _ in 0..WORKERS {
        port.post(0, 0, STOP).unwrap();
    }
    for _ in 0..WORKERS {
        done_rx.recv_timeout(WAIT).expect("a worker stopped");
    }
    for w in workers {
        w.join().unwrap();
    }
    let n = expected();
    for (c, s) in seen.iter().enumerate().take(n) {
        assert_eq!(s.load(Ordering::Relaxed), 1, "context {c} delivered once");
    }
    wait_until("running back to 0", || port.stats().running == 0);
    let s = port.stats();
    assert_eq!((s.blocked, s.queued), (0, 0), "{s:?}");
    eprintln!("stress: {n} packets, {} detections", s.blocked_total);
}

/// The monitor looks only when a packet waits for a slot (README "The
/// concurrency value"): a worker that blocks while nothing is queued keeps
/// its slot — nobody needs it — and is counted out as soon as a packet is
/// posted for the full port, however long it has been blocked already.
fn blocked_worker_is_counted_out_only_when_a_packet_waits(backend: Backend) {
    let port = detecting_port(backend, 1);
    let (tx, rx) = unbounded::<Ev>();
    let (mut read_end, mut write_end) = UnixStream::pair().unwrap();
    port.post(0, 0, 1).unwrap();
    let a = {
        let (port, tx) = (port.clone(), tx.clone());
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).expect("A gets packet 1");
            tx.send(Ev::Got("A", p.context)).unwrap();
            let mut b = [0u8; 1];
            read_end.read_exact(&mut b).unwrap();
            tx.send(Ev::Unblocked).unwrap();
        })
    };
    assert_eq!(recv(&rx, "A's packet"), Ev::Got("A", 1));
    let b = {
        let (port, tx) = (port.clone(), tx.clone());
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).expect("B gets packet 2");
            tx.send(Ev::Got("B", p.context)).unwrap();
        })
    };
    wait_until("B waits", || {
        let s = port.stats();
        s.parked + usize::from(s.leader) == 1
    });
    // A blocks with nothing queued: it keeps its slot.
    thread::sleep(common::QUIET);
    let s = port.stats();
    assert_eq!((s.running, s.blocked, s.blocked_total), (1, 0, 0), "{s:?}");
    // A packet waits for the slot: A is counted out, B gets it.
    port.post(0, 0, 2).unwrap();
    assert_eq!(recv(&rx, "B's packet (A blocked)"), Ev::Got("B", 2));
    assert!(port.stats().blocked_total >= 1, "{:?}", port.stats());
    write_end.write_all(b"x").unwrap();
    assert_eq!(recv(&rx, "A unblocked"), Ev::Unblocked);
    a.join().unwrap();
    b.join().unwrap();
    wait_until("counts back to 0", || {
        let s = port.stats();
        s.running == 0 && s.blocked == 0
    });
}

/// `Port::blocking_detection` names the mechanism: sampling by default;
/// `CPORT_DETECT=switch` asks for switch events (sampling where refused).
fn mechanism_is_reported(backend: Backend) {
    let on = detecting_port(backend, 1);
    let off = Port::<u32>::builder()
        .backend(backend)
        .blocking_detection(false)
        .build()
        .unwrap();
    assert_eq!(off.blocking_detection(), BlockingDetection::Off);
    let m = on.blocking_detection();
    if !std::env::var("CPORT_DETECT").is_ok_and(|v| v.trim() == "switch") {
        assert_eq!(m, BlockingDetection::Sampling);
    } else {
        assert!(
            matches!(
                m,
                BlockingDetection::SwitchEvents | BlockingDetection::Sampling
            ),
            "{m:?}"
        );
    }
    eprintln!("blocked-thread detection: {m:?}");
}

/// Every test of this file again, in a child process with switch events
/// asked for (the mechanism is chosen once per process), so that `cargo
/// test` checks both mechanisms on both backends (where the kernel refuses
/// switch events, the child samples too).
#[test]
fn every_test_again_with_switch_events() {
    if std::env::var_os("CPORT_DETECT").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("CPORT_DETECT", "switch")
        .args(["--skip", "every_test_again_with_switch_events"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "with CPORT_DETECT=switch:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("test result: ok"), "{stdout}");
}

per_backend!(
    blocked_worker_is_counted_out_only_when_a_packet_waits,
    mechanism_is_reported,
    blocked_on_pipe_read_lets_another_run,
    blocked_in_sleep_lets_another_run,
    blocked_on_mutex_lets_another_run,
    spinning_worker_is_never_counted_out,
    without_detection_a_blocked_worker_holds_the_slot,
    detection_submits_deferred_operations,
    stress_exactly_once_and_counts_return_to_zero,
);
