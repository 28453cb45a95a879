//! `Handle::accept` under load and at the edges, on each backend and, on
//! io_uring, with multishot accept on (`PortBuilder::multishot_accept`) and
//! off: every connection accepted exactly once, one packet per accept,
//! connections arriving with no accept pending, cancel, close, time-outs,
//! and no fd leaked when a listener or a port goes away.
//!
//! The tests of this file count the process's open fds, so they run one
//! at a time (`SERIAL`).

mod common;

use std::collections::HashSet;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use completion_port::{Backend, Handle, Port};

use common::{take, wait_until, QUIET, WAIT};

/// One test at a time: they count open fds.
static SERIAL: Mutex<()> = Mutex::new(());

/// Which engine and accept mode a test runs on.
#[derive(Clone, Copy, Debug)]
struct Mode {
    backend: Backend,
    multishot: bool,
}

macro_rules! per_mode {
    ($($name:ident),* $(,)?) => {
        mod io_uring_multishot {
            $( #[test] fn $name() { super::run(super::$name, completion_port::Backend::IoUring, true) } )*
        }
        mod io_uring_single {
            $( #[test] fn $name() { super::run(super::$name, completion_port::Backend::IoUring, false) } )*
        }
        mod epoll {
            $( #[test] fn $name() { super::run(super::$name, completion_port::Backend::Epoll, true) } )*
        }
    };
}

per_mode!(
    many_clients_few_accepts,
    many_clients_many_accepts,
    connections_before_any_accept,
    more_connections_than_the_queue,
    cancel_a_waiting_accept,
    cancel_all_then_accept_again,
    close_with_accepts_pending,
    close_with_connections_queued,
    accept_with_timeout,
    port_dropped_while_armed,
);

fn run(test: fn(Mode), backend: Backend, multishot: bool) {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    test(Mode { backend, multishot });
}

fn port<C: Send + 'static>(m: Mode) -> Port<C> {
    Port::builder()
        .backend(m.backend)
        .concurrency(2)
        .multishot_accept(m.multishot)
        .build()
        .unwrap_or_else(|e| panic!("cannot open a {m:?} port: {e}"))
}

fn listener<C: Send + 'static>(port: &Port<C>) -> (Handle<C>, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (port.associate(l, 7).unwrap(), addr)
}

/// Open sockets of this process (other fds come and go with the port's
/// blocked-thread monitor).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Waits until the process has `n` open fds again.
fn fds_back_to(n: usize) {
    let mut now = open_fds();
    let end = Instant::now() + WAIT;
    while now != n {
        assert!(Instant::now() < end, "open fds: {now}, expected {n}");
        std::thread::sleep(Duration::from_millis(2));
        now = open_fds();
    }
}

/// `clients` connections accepted with `outstanding` accepts pending at a
/// time (each packet re-issues one until all are issued): every client is
/// accepted exactly once and every accept yields one packet.
fn clients_with_accepts(m: Mode, clients: usize, outstanding: usize) {
    let port = port::<usize>(m);
    let (l, addr) = listener(&port);
    let connector = std::thread::spawn(move || {
        (0..clients)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect::<Vec<_>>()
    });
    let mut issued = 0;
    while issued < outstanding.min(clients) {
        l.accept(issued).unwrap();
        issued += 1;
    }
    let mut peers = Vec::new();
    let mut contexts = HashSet::new();
    for _ in 0..clients {
        let mut p = port.get(Some(WAIT)).expect("an accept packet");
        assert!(contexts.insert(p.context), "one packet per accept");
        let a = p.take_accepted().expect("a connection");
        assert_eq!(
            a.socket.peer_addr().unwrap().as_socket(),
            a.peer.as_socket(),
            "the packet's peer address"
        );
        peers.push(a.socket.peer_addr().unwrap().as_socket().unwrap());
        if issued < clients {
            l.accept(issued).unwrap();
            issued += 1;
        }
    }
    assert!(
        port.get(Some(QUIET)).is_err(),
        "no packet beyond the accepts"
    );
    let clients: Vec<TcpStream> = connector.join().unwrap();
    let mut want: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    want.sort();
    peers.sort();
    assert_eq!(peers, want, "every client accepted exactly once");
    assert_eq!(port.stats().in_flight, 0);
}

fn many_clients_few_accepts(m: Mode) {
    clients_with_accepts(m, 300, 1);
    clients_with_accepts(m, 300, 3);
}

fn many_clients_many_accepts(m: Mode) {
    clients_with_accepts(m, 300, 64);
}

/// Connections made with no accept pending (after one accept armed the
/// listener) are taken by the accepts issued later, oldest first.
fn connections_before_any_accept(m: Mode) {
    let port = port::<u32>(m);
    let (l, addr) = listener(&port);
    l.accept(0).unwrap();
    let first = TcpStream::connect(addr).unwrap();
    let mut p = take(&port, 1).remove(0);
    assert_eq!(
        p.take_accepted().unwrap().peer.as_socket(),
        Some(first.local_addr().unwrap())
    );
    let later: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(QUIET); // let a multishot queue them
    let mut got = Vec::new();
    for i in 1..=5 {
        l.accept(i).unwrap();
        let mut p = take(&port, 1).remove(0);
        assert_eq!(p.context, i);
        got.push(p.take_accepted().unwrap().peer.as_socket().unwrap());
    }
    let want: Vec<SocketAddr> = later.iter().map(|c| c.local_addr().unwrap()).collect();
    assert_eq!(got, want, "in the order they connected");
    assert!(port.get(Some(QUIET)).is_err());
}

/// More connections than a listener queues ahead of its accepts: the rest
/// wait in the kernel's backlog and are accepted all the same.
fn more_connections_than_the_queue(m: Mode) {
    const N: usize = 100;
    let port = port::<usize>(m);
    let (l, addr) = listener(&port);
    l.accept(usize::MAX).unwrap();
    let mut conns = vec![TcpStream::connect(addr).unwrap()];
    take(&port, 1);
    conns.extend((0..N).map(|_| TcpStream::connect(addr).unwrap()));
    std::thread::sleep(QUIET);
    let mut peers = HashSet::new();
    for i in 0..N {
        l.accept(i).unwrap();
        let mut p = take(&port, 1).remove(0);
        assert_eq!(p.context, i);
        assert!(peers.insert(p.take_accepted().unwrap().peer.as_socket().unwrap()));
    }
    let want: HashSet<SocketAddr> = conns[1..].iter().map(|c| c.local_addr().unwrap()).collect();
    assert_eq!(peers, want);
    assert!(port.get(Some(QUIET)).is_err());
}

/// A cancelled accept ends with `ECANCELED` and takes no connection: the
/// next one goes to the accept still pending.
fn cancel_a_waiting_accept(m: Mode) {
    let port = port::<u32>(m);
    let (l, addr) = listener(&port);
    let t1 = l.accept(1).unwrap();
    let t2 = l.accept(2).unwrap();
    l.cancel(t1).unwrap();
    let p = take(&port, 1).remove(0);
    assert_eq!((p.context, p.token()), (1, Some(t1)));
    let e = p.result.unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{e}");
    let c = TcpStream::connect(addr).unwrap();
    let mut p = take(&port, 1).remove(0);
    assert_eq!((p.context, p.token()), (2, Some(t2)));
    assert_eq!(
        p.take_accepted().unwrap().peer.as_socket(),
        Some(c.local_addr().unwrap())
    );
    assert!(port.get(Some(QUIET)).is_err());
}

/// `cancel_all` ends every pending accept; the listener keeps working, and
/// connections made meanwhile are not lost.
fn cancel_all_then_accept_again(m: Mode) {
    let port = port::<u32>(m);
    let (l, addr) = listener(&port);
    for i in 0..4 {
        l.accept(i).unwrap();
    }
    assert_eq!(l.cancel_all().unwrap(), 4);
    let ps = take(&port, 4);
    for p in &ps {
        let e = p.result.as_ref().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{e}");
    }
    let c = TcpStream::connect(addr).unwrap();
    std::thread::sleep(QUIET);
    l.accept(9).unwrap();
    let mut p = take(&port, 1).remove(0);
    assert_eq!(p.context, 9);
    assert_eq!(
        p.take_accepted().unwrap().peer.as_socket(),
        Some(c.local_addr().unwrap())
    );
    assert!(port.get(Some(QUIET)).is_err());
}

/// Closing a listener with accepts pending: each ends with `ECANCELED`,
/// nothing is leaked, and the port no longer listens.
fn close_with_accepts_pending(m: Mode) {
    let before = open_fds();
    {
        let port = port::<u32>(m);
        let ports_fds = open_fds();
        let (l, addr) = listener(&port);
        for i in 0..3 {
            l.accept(i).unwrap();
        }
        assert_eq!(l.close(), 3);
        let mut ctx: Vec<u32> = take(&port, 3)
            .into_iter()
            .map(|p| {
                let e = p.result.as_ref().unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ECANCELED), "{e}");
                p.context
            })
            .collect();
        ctx.sort();
        assert_eq!(ctx, [0, 1, 2]);
        drop(l);
        fds_back_to(ports_fds);
        wait_until("the listener no longer listens", || {
            TcpStream::connect(addr).is_err()
        });
    }
    fds_back_to(before);
}

/// Dropping a listener whose connections were accepted ahead of any accept
/// (multishot) closes them: no fd leaked, the clients see the end, and the
/// port no longer listens.
fn close_with_connections_queued(m: Mode) {
    let port = port::<u32>(m);
    let fds = open_fds();
    let (l, addr) = listener(&port);
    l.accept(0).unwrap();
    let first = TcpStream::connect(addr).unwrap();
    drop(take(&port, 1)); // accepted, and closed with its packet
    let mut later: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(QUIET);
    drop(l);
    drop(first);
    fds_back_to(fds + 10); // only the clients' ends remain
    for c in &mut later {
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("a client of a closed listener read {other:?}"),
        }
    }
    wait_until("the listener no longer listens", || {
        TcpStream::connect(addr).is_err()
    });
    drop(later);
    fds_back_to(fds);
    assert!(port.get(Some(QUIET)).is_err());
}

/// An accept with a time-out ends with `ETIMEDOUT` when nobody connects;
/// one issued while a connection is waiting takes it.
fn accept_with_timeout(m: Mode) {
    let port = port::<u32>(m);
    let (l, addr) = listener(&port);
    l.with_timeout(Duration::from_millis(30)).accept(1).unwrap();
    let p = take(&port, 1).remove(0);
    let e = p.result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
    // A plain accept arms the listener; a connection for it, then one
    // more, taken by an accept with a time-out.
    l.accept(2).unwrap();
    let c2 = TcpStream::connect(addr).unwrap();
    let mut p = take(&port, 1).remove(0);
    assert_eq!(
        (p.context, p.take_accepted().unwrap().peer.as_socket()),
        (2, Some(c2.local_addr().unwrap()))
    );
    let c3 = TcpStream::connect(addr).unwrap();
    std::thread::sleep(QUIET);
    l.with_timeout(WAIT).accept(3).unwrap();
    let mut p = take(&port, 1).remove(0);
    assert_eq!(
        (p.context, p.take_accepted().map(|a| a.peer.as_socket())),
        (3, Some(Some(c3.local_addr().unwrap()))),
        "{:?}",
        p.result
    );
    // Timed and plain accepts pending together: each connection completes
    // exactly one of them.
    l.with_timeout(WAIT).accept(4).unwrap();
    l.accept(5).unwrap();
    let cs: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut ps = take(&port, 2);
    ps.sort_by_key(|p| p.context);
    let mut got: Vec<SocketAddr> = ps
        .iter_mut()
        .map(|p| p.take_accepted().unwrap().peer.as_socket().unwrap())
        .collect();
    let mut want: Vec<SocketAddr> = cs.iter().map(|c| c.local_addr().unwrap()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(port.get(Some(QUIET)).is_err());
}

/// A port closed and dropped while its listener's multishot is armed, with
/// an accept pending and connections queued: the accept's packet is
/// dropped with the port, every fd is closed, and nothing listens.
fn port_dropped_while_armed(m: Mode) {
    let before = open_fds();
    let addr;
    let later: Vec<TcpStream>;
    {
        let port = port::<u32>(m);
        let (l, a) = listener(&port);
        addr = a;
        l.accept(0).unwrap();
        let first = TcpStream::connect(addr).unwrap();
        drop(take(&port, 1));
        later = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(QUIET);
        // Four take the queued connections (multishot), two wait.
        for i in 1..=6 {
            l.accept(i).unwrap();
        }
        drop(first);
        port.close();
        drop(port);
        drop(l);
    }
    wait_until("the listener no longer listens", || {
        TcpStream::connect(addr).is_err()
    });
    drop(later);
    fds_back_to(before);
}
