//! The port itself (windows-semantics §1 and §4): FIFO queue, LIFO release of waiters,
//! the concurrency value, time-outs, `get_many`, `post`, `close`.
//!
//! Ports here have blocking detection off (`common::explicit_port`): these
//! tests pin down the explicit accounting, and their threads wait on
//! channels and sleeps while they count as running. Detection itself is
//! tested in `blocking.rs`.

mod common;

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use completion_port::{is_port_closed, Backend, Buf, GetError, PacketKind, Port};
use crossbeam_channel::{bounded, unbounded};

use common::{explicit_port as port, wait_until, WAIT};

/// Long enough for a wrongly released thread to show up, short enough to
/// keep the suite quick. Only ever used to check that something does *not*
/// happen, so a slow machine cannot make a correct port fail.
const QUIET: Duration = Duration::from_millis(100);

fn expect_timeout<T: std::fmt::Debug>(r: Result<T, GetError>) {
    match r {
        Err(GetError::Timeout) => {}
        other => panic!("expected GetError::Timeout, got {other:?}"),
    }
}

fn expect_closed<T: std::fmt::Debug>(r: Result<T, GetError>) {
    match r {
        Err(GetError::Closed) => {}
        other => panic!("expected GetError::Closed, got {other:?}"),
    }
}

/// Spawns a thread that waits for one packet and reports its context,
/// then exits (which counts it down if it got one).
fn spawn_waiter(
    port: &Port<u32>,
    id: usize,
    tx: crossbeam_channel::Sender<(usize, Result<u32, String>)>,
) -> thread::JoinHandle<()> {
    let port = port.clone();
    thread::spawn(move || {
        let r = port
            .get(Some(WAIT))
            .map(|p| p.context)
            .map_err(|e| format!("{e:?}"));
        tx.send((id, r)).unwrap();
    })
}

fn fifo_order(backend: Backend) {
    let port = port::<u32>(backend, 1);
    for i in 0..100u32 {
        port.post(i as usize, 2 * i as usize, i).unwrap();
    }
    assert_eq!(port.stats().queued, 100);
    for i in 0..100u32 {
        let p = port.get(Some(WAIT)).unwrap();
        assert_eq!(
            (p.key, p.bytes(), p.context),
            (i as usize, 2 * i as usize, i)
        );
    }
    let s = port.stats();
    assert_eq!((s.queued, s.dequeued), (0, 100));
    expect_timeout(port.get(Some(Duration::ZERO)));
}

/// Starts waiters one at a time (each one known to wait before the next
/// starts), then feeds them one packet at a time, posted or (`nops`)
/// completed by the kernel. The last to wait must be released first; the
/// first (the leader, waiting in the kernel) last.
fn lifo_release(backend: Backend, nops: bool) {
    const N: usize = 4;
    let port = port::<u32>(backend, 8);
    let handle = port.associate(tempfile::tempfile().unwrap(), 9).unwrap();
    let (tx, rx) = unbounded();
    let mut threads = Vec::new();
    for id in 0..N {
        threads.push(spawn_waiter(&port, id, tx.clone()));
        wait_until(&format!("waiter {id} waits"), || {
            let s = port.stats();
            s.leader && s.parked == id
        });
    }
    let mut order = Vec::new();
    for k in 0..N as u32 {
        wait_until("a leader waits in the kernel", || port.stats().leader);
        if nops {
            handle.nop(k).unwrap();
        } else {
            port.post(0, 0, k).unwrap();
        }
        let (id, r) = rx.recv_timeout(WAIT).expect("a waiter was released");
        assert_eq!(r, Ok(k), "waiter {id} got the wrong packet");
        order.push(id);
        // Exactly one thread was released per packet.
        wait_until("the others wait on", || {
            let s = port.stats();
            s.parked + usize::from(s.leader) == N - 1 - k as usize
        });
    }
    assert_eq!(order, vec![3, 2, 1, 0]);
    for t in threads {
        t.join().unwrap();
    }
    wait_until("exited threads count down", || port.stats().running == 0);
}

fn lifo_release_of_posts(backend: Backend) {
    lifo_release(backend, false);
}

fn lifo_release_of_completions(backend: Backend) {
    lifo_release(backend, true);
}

/// Concurrency 1: A holds a packet, B waits; a queued packet stays queued
/// until A enters a blocking scope, which releases B. After the scope both
/// count (above the concurrency value), so nothing more is handed out
/// until the count falls back below it.
fn concurrency_one_blocking_scope_releases_second(backend: Backend) {
    let port = port::<u32>(backend, 1);
    port.post(0, 0, 1).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 1);
    assert!(port.is_running_here());
    assert_eq!(port.stats().running, 1);

    let (b_tx, b_rx) = bounded(1);
    let (go_tx, go_rx) = bounded::<()>(1);
    let b = {
        let port = port.clone();
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).expect("B gets a packet");
            b_tx.send(p.context).unwrap();
            // Hold the packet (stay running) until told to exit.
            go_rx.recv_timeout(WAIT).unwrap();
        })
    };
    wait_until("B is parked", || port.stats().parked == 1);
    port.post(0, 0, 2).unwrap();
    let s = port.stats();
    assert_eq!((s.queued, s.running, s.parked), (1, 1, 1));
    assert!(
        b_rx.recv_timeout(QUIET).is_err(),
        "B was released while A runs"
    );
    let s = port.stats();
    assert_eq!((s.queued, s.running, s.parked), (1, 1, 1));

    let got = port.blocking(|| {
        assert!(!port.is_running_here());
        b_rx.recv_timeout(WAIT)
    });
    assert_eq!(got, Ok(2), "the blocking scope did not release B");
    // A counts again, and so does B: 2 > concurrency 1.
    assert!(port.is_running_here());
    let s = port.stats();
    assert_eq!((s.queued, s.running, s.parked), (0, 2, 0));

    port.post(0, 0, 3).unwrap();
    assert_eq!(port.stats().queued, 1);
    go_tx.send(()).unwrap();
    b.join().unwrap();
    // B exited: 1 running (A), still not below the value: 3 stays queued.
    let s = port.stats();
    assert_eq!((s.queued, s.running), (1, 1));
    // A asks again: it stops counting and takes 3 at once.
    let p = port.get(Some(Duration::ZERO)).unwrap();
    assert_eq!(p.context, 3);
    assert_eq!(port.stats().running, 1);
}

/// A blocking guard works like `blocking`, and a thread that is not
/// running for the port is not affected by one.
fn blocking_guard_counts_down_and_up(backend: Backend) {
    let port = port::<u32>(backend, 2);
    {
        let _g = port.blocking_guard();
        assert_eq!(port.stats().running, 0);
    }
    assert_eq!(port.stats().running, 0);
    port.post(0, 0, 1).unwrap();
    port.get(Some(WAIT)).unwrap();
    assert_eq!(port.stats().running, 1);
    {
        let _g = port.blocking_guard();
        assert!(!port.is_running_here());
        assert_eq!(port.stats().running, 0);
    }
    assert!(port.is_running_here());
    assert_eq!(port.stats().running, 1);
}

/// Concurrency 1: A holds a packet and B waits. A asks the port again with
/// nothing queued: A no longer counts, so the next packet is handed out at
/// once — to B, which waited before A and is parked (A leads in the
/// kernel; the leader is served last).
fn concurrency_one_get_again_releases_second(backend: Backend) {
    let port = port::<u32>(backend, 1);
    port.post(0, 0, 1).unwrap();
    let (a_tx, a_rx) = unbounded();
    let (again_tx, again_rx) = bounded::<()>(1);
    let a = {
        let port = port.clone();
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).unwrap();
            a_tx.send(Ok(p.context)).unwrap();
            again_rx.recv_timeout(WAIT).unwrap();
            let r = port.get(Some(WAIT)).map(|p| p.context);
            a_tx.send(r.map_err(|e| format!("{e:?}"))).unwrap();
        })
    };
    assert_eq!(a_rx.recv_timeout(WAIT).unwrap(), Ok(1));
    let (b_tx, b_rx) = unbounded();
    let b = spawn_waiter(&port, 1, b_tx);
    wait_until("B is parked", || port.stats().parked == 1);
    assert_eq!(port.stats().running, 1);

    again_tx.send(()).unwrap();
    wait_until("A waits again", || {
        let s = port.stats();
        s.running == 0 && s.leader
    });
    port.post(0, 0, 2).unwrap();
    assert_eq!(b_rx.recv_timeout(WAIT).unwrap(), (1, Ok(2)));
    b.join().unwrap();
    // A is still waiting: closing the port releases it without a packet.
    assert!(a_rx.try_recv().is_err());
    port.close();
    assert_eq!(a_rx.recv_timeout(WAIT).unwrap(), Err("Closed".to_string()));
    a.join().unwrap();
}

/// A thread belongs to one port: a `get` on another port counts it down
/// on the first, which releases a waiter there.
fn get_on_other_port_releases_waiter(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let other = common::explicit_port::<u32>(backend, 1);
    port.post(0, 0, 1).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().context, 1);
    let (b_tx, b_rx) = unbounded();
    let b = spawn_waiter(&port, 1, b_tx);
    wait_until("B is parked", || port.stats().parked == 1);
    port.post(0, 0, 2).unwrap();
    assert!(b_rx.recv_timeout(QUIET).is_err());
    assert_eq!(port.stats().queued, 1);

    expect_timeout(other.get(Some(Duration::ZERO)));
    assert!(!port.is_running_here());
    assert_eq!(b_rx.recv_timeout(WAIT).unwrap(), (1, Ok(2)));
    b.join().unwrap();
    wait_until("B counted down", || port.stats().running == 0);
}

/// Spec §1.5: a running thread that asks again while packets are queued
/// gets one at once (a zero time-out proves no sleep), even with another
/// thread parked.
fn running_thread_asking_again_gets_next_at_once(backend: Backend) {
    let port = port::<u32>(backend, 1);
    port.post(0, 0, 1).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().context, 1);
    let (b_tx, b_rx) = unbounded();
    let b = spawn_waiter(&port, 1, b_tx);
    wait_until("B is parked", || port.stats().parked == 1);
    port.post(0, 0, 2).unwrap();
    port.post(0, 0, 3).unwrap();
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().context, 2);
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().context, 3);
    let s = port.stats();
    assert_eq!((s.queued, s.running, s.parked), (0, 1, 1));
    assert!(b_rx.try_recv().is_err());
    port.close();
    assert_eq!(b_rx.recv_timeout(WAIT).unwrap(), (1, Err("Closed".into())));
    b.join().unwrap();
}

/// A time-out returns `Timeout` and consumes nothing, also when a packet
/// is queued but held back by the concurrency value.
fn timeout_consumes_nothing(backend: Backend) {
    let port = port::<u32>(backend, 1);
    expect_timeout(port.get(Some(Duration::from_millis(20))));
    assert_eq!(port.stats().dequeued, 0);
    assert!(!port.is_running_here());

    port.post(0, 0, 1).unwrap();
    port.post(0, 0, 2).unwrap();
    assert_eq!(port.get(Some(WAIT)).unwrap().context, 1);
    // Another thread may not take 2 while this one runs: it times out.
    let other = port.clone();
    let r = thread::spawn(move || {
        let r = other
            .get(Some(Duration::from_millis(50)))
            .map(|p| p.context);
        (r.map_err(|e| format!("{e:?}")), other.is_running_here())
    })
    .join()
    .unwrap();
    assert_eq!(r, (Err("Timeout".into()), false));
    let s = port.stats();
    assert_eq!((s.queued, s.dequeued, s.parked), (1, 1, 0));
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().context, 2);
}

/// `get(Some(ZERO))` polls: `Timeout` on an empty port, the packet when
/// one is queued. Same for `get_many`.
fn zero_timeout_polls(backend: Backend) {
    let port = port::<u32>(backend, 2);
    expect_timeout(port.get(Some(Duration::ZERO)));
    let mut out = Vec::new();
    expect_timeout(port.get_many(&mut out, 4, Some(Duration::ZERO)));
    assert!(out.is_empty());
    port.post(1, 0, 7).unwrap();
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().context, 7);
    port.post(1, 0, 8).unwrap();
    assert_eq!(port.get_many(&mut out, 4, Some(Duration::ZERO)).unwrap(), 1);
    assert_eq!(out[0].context, 8);
    // A nop through the kernel is found by a poll once it completed.
    let h = port.associate(tempfile::tempfile().unwrap(), 3).unwrap();
    h.nop(9).unwrap();
    wait_until("the nop completed", || {
        match port.get(Some(Duration::ZERO)) {
            Ok(p) => {
                assert_eq!((p.key, p.context, p.kind()), (3, 9, PacketKind::Nop));
                true
            }
            Err(GetError::Timeout) => false,
            Err(e) => panic!("{e:?}"),
        }
    });
}

/// `get_many` waits for one packet, then takes what is queued, up to
/// `max`, in FIFO order, appending to `out`.
fn get_many_takes_what_is_queued(backend: Backend) {
    let port = port::<u32>(backend, 2);
    for i in 0..5 {
        port.post(i, 0, i as u32).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(port.get_many(&mut out, 3, Some(WAIT)).unwrap(), 3);
    assert_eq!(out.iter().map(|p| p.context).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(port.stats().queued, 2);
    // Appends; takes only what is there (2 < 10) without waiting for more.
    assert_eq!(port.get_many(&mut out, 10, Some(WAIT)).unwrap(), 2);
    assert_eq!(
        out.iter().map(|p| p.context).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(port.stats().dequeued, 5);
    expect_timeout(port.get_many(&mut out, 10, Some(Duration::from_millis(20))));
    assert_eq!(out.len(), 5);

    // It waits for the first packet.
    let waiter = {
        let port = port.clone();
        thread::spawn(move || {
            let mut out = Vec::new();
            let n = port.get_many(&mut out, 10, Some(WAIT)).unwrap();
            (n, out.iter().map(|p| p.context).collect::<Vec<_>>())
        })
    };
    wait_until("get_many waits", || port.stats().leader);
    port.post(0, 0, 42).unwrap();
    assert_eq!(waiter.join().unwrap(), (1, vec![42]));
}

/// `post` round-trips key, bytes and context exactly; a posted packet has
/// no token, buffers or accepted socket.
fn post_round_trips(backend: Backend) {
    let port = port::<String>(backend, 1);
    let cases = [
        (0usize, 0usize, String::new()),
        (usize::MAX, usize::MAX, "max".to_string()),
        (0xdead_beef, u32::MAX as usize + 1, "big".to_string()),
        (17, 3, "x".repeat(1000)),
    ];
    for (k, b, c) in &cases {
        port.post(*k, *b, c.clone()).unwrap();
    }
    for (k, b, c) in cases {
        let mut p = port.get(Some(WAIT)).unwrap();
        assert_eq!(p.key, k);
        assert_eq!(*p.result.as_ref().unwrap(), b);
        assert_eq!(p.bytes(), b);
        assert_eq!(p.kind(), PacketKind::Posted);
        assert_eq!(p.token(), None);
        assert!(p.take_buf().is_none());
        assert!(p.take_bufs().is_empty());
        assert!(p.take_accepted().is_none());
        assert_eq!(p.context, c);
    }
}

/// `close` releases every waiting thread with `Closed`; later gets return
/// `Closed` at once.
fn close_releases_all_waiters(backend: Backend) {
    const N: usize = 4;
    let port = port::<u32>(backend, N);
    let (tx, rx) = unbounded();
    let threads: Vec<_> = (0..N)
        .map(|id| spawn_waiter(&port, id, tx.clone()))
        .collect();
    wait_until("all wait", || {
        let s = port.stats();
        s.leader && s.parked == N - 1
    });
    port.close();
    assert!(port.is_closed());
    let mut ids: Vec<usize> = (0..N)
        .map(|_| {
            let (id, r) = rx.recv_timeout(WAIT).expect("a waiter was released");
            assert_eq!(r, Err("Closed".to_string()), "waiter {id}");
            id
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2, 3]);
    for t in threads {
        t.join().unwrap();
    }
    expect_closed(port.get(Some(WAIT)));
    let mut out = Vec::new();
    expect_closed(port.get_many(&mut out, 3, Some(WAIT)));
    port.close(); // twice is harmless
    expect_closed(port.get(Some(Duration::ZERO)));
}

/// A context type that counts how many are alive.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(live: &Arc<AtomicUsize>) -> Counted {
        live.fetch_add(1, Ordering::SeqCst);
        Counted(live.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `close` drops queued packets and cancels operations in flight, and
/// returns only when their contexts are dropped.
fn close_drops_queued_and_in_flight(backend: Backend) {
    let live = Arc::new(AtomicUsize::new(0));
    let port = port::<Counted>(backend, 2);
    for i in 0..3 {
        port.post(i, 0, Counted::new(&live)).unwrap();
    }
    // A receive that never completes on its own.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let h = port.associate(a, 1).unwrap();
    h.recv(Buf::with_capacity(64), Counted::new(&live)).unwrap();
    assert_eq!(live.load(Ordering::SeqCst), 4);
    assert_eq!(port.stats().in_flight, 1);
    port.close();
    assert_eq!(live.load(Ordering::SeqCst), 0);
    let s = port.stats();
    assert_eq!((s.queued, s.in_flight), (0, 0));
}

/// After `close`, `post`, operations and association are refused with the
/// port-closed error, and what they were given is handed back.
fn refused_after_close(backend: Backend) {
    let port = port::<String>(backend, 1);
    let h = port.associate(tempfile::tempfile().unwrap(), 5).unwrap();
    port.close();
    let r = port.post(1, 2, "posted".into()).unwrap_err();
    assert!(is_port_closed(&r.error), "{:?}", r.error);
    assert_eq!(r.context, "posted");
    let r = h.nop("nop".into()).unwrap_err();
    assert!(is_port_closed(&r.error), "{:?}", r.error);
    assert_eq!(r.context, "nop");
    let io_err: std::io::Error = h.nop("x".into()).unwrap_err().into();
    assert!(is_port_closed(&io_err));
    assert_eq!(io_err.kind(), std::io::ErrorKind::BrokenPipe);
    let f = tempfile::tempfile().unwrap();
    let e = port.associate(f, 6).unwrap_err();
    assert!(is_port_closed(&e.error), "{:?}", e.error);
    // The fd comes back open.
    let mut f = File::from(e.fd);
    std::io::Write::write_all(&mut f, b"still open").unwrap();
    expect_closed(port.get(Some(WAIT)));
    assert!(!is_port_closed(&std::io::Error::from(
        std::io::ErrorKind::BrokenPipe
    )));
}

/// The port closes when its last clone is dropped; handles then refuse
/// new operations.
fn last_clone_dropped_closes(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let clone = port.clone();
    let h = port.associate(tempfile::tempfile().unwrap(), 5).unwrap();
    drop(port);
    assert!(!clone.is_closed());
    h.nop(1).unwrap();
    assert_eq!(clone.get(Some(WAIT)).unwrap().context, 1);
    drop(clone);
    let r = h.nop(2).unwrap_err();
    assert!(is_port_closed(&r.error));
    assert_eq!(r.context, 2);
}

/// A thread that exits while running counts down, which lets a held-back
/// packet go.
fn thread_exit_counts_down(backend: Backend) {
    let port = port::<u32>(backend, 1);
    port.post(0, 0, 1).unwrap();
    let (tx, rx) = bounded(1);
    let (go_tx, go_rx) = bounded::<()>(1);
    let t = {
        let port = port.clone();
        thread::spawn(move || {
            let p = port.get(Some(WAIT)).unwrap();
            tx.send((p.context, port.is_running_here())).unwrap();
            go_rx.recv_timeout(WAIT).unwrap();
        })
    };
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), (1, true));
    assert!(!port.is_running_here());
    assert_eq!(port.stats().running, 1);
    port.post(0, 0, 2).unwrap();
    // Held back: this thread may not take it while the other runs.
    expect_timeout(port.get(Some(Duration::ZERO)));
    go_tx.send(()).unwrap();
    t.join().unwrap();
    assert_eq!(port.stats().running, 0);
    assert_eq!(port.get(Some(Duration::ZERO)).unwrap().context, 2);
    assert_eq!(port.stats().running, 1);
}

/// Posts from many threads to many dequeuing threads: each packet is
/// dequeued exactly once, and the concurrency value bounds how many
/// threads hold one at a time.
fn concurrency_value_bounds_running_threads(backend: Backend) {
    const THREADS: usize = 6;
    const LIMIT: usize = 2;
    const PACKETS: u32 = 2000;
    let port = port::<u32>(backend, LIMIT);
    let holding = Arc::new(AtomicUsize::new(0));
    let max_holding = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let port = port.clone();
            let holding = holding.clone();
            let max_holding = max_holding.clone();
            thread::spawn(move || {
                let mut seen = Vec::new();
                loop {
                    let p = port.get(Some(WAIT)).expect("a packet");
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    max_holding.fetch_max(now, Ordering::SeqCst);
                    thread::yield_now();
                    holding.fetch_sub(1, Ordering::SeqCst);
                    if p.key == 1 {
                        return seen;
                    }
                    seen.push(p.context);
                }
            })
        })
        .collect();
    let posters: Vec<_> = (0..2u32)
        .map(|t| {
            let port = port.clone();
            thread::spawn(move || {
                for i in 0..PACKETS / 2 {
                    port.post(0, 0, t * PACKETS / 2 + i).unwrap();
                }
            })
        })
        .collect();
    for p in posters {
        p.join().unwrap();
    }
    for _ in 0..THREADS {
        port.post(1, 0, u32::MAX).unwrap();
    }
    let mut all: Vec<u32> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..PACKETS).collect::<Vec<_>>());
    let max = max_holding.load(Ordering::SeqCst);
    assert!(
        (1..=LIMIT).contains(&max),
        "{max} threads held packets at once with concurrency {LIMIT}"
    );
    assert_eq!(port.stats().running, 0);
}

fn settings_are_reported(backend: Backend) {
    let port = port::<u32>(backend, 3);
    assert_eq!(port.concurrency(), 3);
    assert_eq!(port.backend(), backend);
    assert_eq!(port.stats(), completion_port::PortStats::default());
    let port = Port::<u32>::builder()
        .backend(backend)
        .concurrency(0)
        .entries(1)
        .build()
        .unwrap();
    assert!(port.concurrency() >= 1);
    // One ring entry still carries many operations (a full ring is
    // flushed, never an error).
    let h = port.associate(tempfile::tempfile().unwrap(), 1).unwrap();
    for i in 0..64 {
        h.nop(i).unwrap();
    }
    let mut seen: Vec<u32> = (0..64)
        .map(|_| port.get(Some(WAIT)).unwrap().context)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..64).collect::<Vec<_>>());
}

/// Waiters with short time-outs race with hand-offs: a packet given to a
/// waiter whose time-out passes is used, never lost or duplicated.
fn waiters_share_out_posts_exactly_once(backend: Backend) {
    const THREADS: usize = 4;
    const PACKETS: usize = 400;
    let port = port::<usize>(backend, THREADS);
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let port = port.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                // Short time-outs race with hand-offs on purpose.
                loop {
                    match port.get(Some(Duration::from_micros(50))) {
                        Ok(p) if p.key == 1 => return got,
                        Ok(p) => got.push(p.context),
                        Err(GetError::Timeout) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    for i in 0..PACKETS {
        port.post(0, 0, i).unwrap();
        if i % 16 == 0 {
            thread::yield_now();
        }
    }
    for _ in 0..THREADS {
        port.post(1, 0, 0).unwrap();
    }
    let mut all: Vec<usize> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..PACKETS).collect::<Vec<_>>());
    assert_eq!(port.stats().queued, 0);
}

/// `PortStats::dequeued` counts every packet once, whether it came by
/// `get`, by `get_many`, straight from the leader's wait (nops reaped by
/// the getter itself: core/direct.rs), or on another thread.
fn dequeued_counts_every_packet(backend: Backend) {
    let other = port::<usize>(backend, 1);
    let port = port::<usize>(backend, 2);
    for i in 0..150 {
        port.post(0, 0, i).unwrap();
    }
    for _ in 0..100 {
        port.get(Some(WAIT)).unwrap();
    }
    let mut out = Vec::new();
    assert_eq!(port.get_many(&mut out, 50, Some(WAIT)).unwrap(), 50);
    expect_timeout(port.get(Some(Duration::ZERO)));
    assert_eq!(port.stats().dequeued, 150);
    // Straight from the wait: nops reaped by this thread as the leader.
    let h = port.associate(File::open("/dev/null").unwrap(), 1).unwrap();
    for i in 0..10 {
        h.nop(i).unwrap();
    }
    let mut got = 0;
    while got < 10 {
        out.clear();
        got += port.get_many(&mut out, 10, Some(WAIT)).unwrap();
    }
    other.post(0, 0, 0).unwrap();
    other.get(Some(WAIT)).unwrap();
    assert_eq!(port.stats().dequeued, 160);
    assert_eq!(other.stats().dequeued, 1);
    for i in 0..5 {
        port.post(0, 0, i).unwrap();
    }
    let p2 = port.clone();
    thread::spawn(move || {
        for _ in 0..5 {
            p2.get(Some(WAIT)).unwrap();
        }
    })
    .join()
    .unwrap();
    assert_eq!(port.stats().dequeued, 165);
}

per_backend! {
    dequeued_counts_every_packet,
    fifo_order,
    lifo_release_of_posts,
    lifo_release_of_completions,
    concurrency_one_blocking_scope_releases_second,
    blocking_guard_counts_down_and_up,
    concurrency_one_get_again_releases_second,
    get_on_other_port_releases_waiter,
    running_thread_asking_again_gets_next_at_once,
    timeout_consumes_nothing,
    zero_timeout_polls,
    get_many_takes_what_is_queued,
    post_round_trips,
    close_releases_all_waiters,
    close_drops_queued_and_in_flight,
    refused_after_close,
    last_clone_dropped_closes,
    thread_exit_counts_down,
    concurrency_value_bounds_running_threads,
    settings_are_reported,
    waiters_share_out_posts_exactly_once,
}
