//! Pooled receives (`BufPool`, `Handle::recv_pooled`) on both backends:
//! bytes, the empty pool, buffers coming back from any thread, cancel,
//! close, port drop, thread exit, more sockets than buffers.

mod common;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use completion_port::{is_aborted, is_pool_exhausted, Backend, BufPool, Handle, PacketKind, Port};

/// A connected TCP pair over 127.0.0.1: ours associated under `key`, the
/// peer a plain blocking socket.
fn pair<C: Send + 'static>(port: &Port<C>, key: usize) -> (Handle<C>, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (peer, _) = l.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    (port.associate(ours, key).unwrap(), peer)
}

/// Echo through pooled receives: every byte comes back, a message larger
/// than a buffer arrives in buffer-sized pieces, and every buffer is back
/// in the pool at the end.
fn echo_through_pooled_receives(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let pool = port.buf_pool(4, 64).unwrap();
    assert_eq!((pool.count(), pool.buf_size(), pool.in_use()), (4, 64, 0));
    let (h, mut peer) = pair(&port, 9);
    for round in 0..50u32 {
        let len = 1 + (round as usize * 7) % 64;
        let msg: Vec<u8> = (0..len).map(|i| (i as u32 + round) as u8).collect();
        h.recv_pooled(&pool, round).unwrap();
        peer.write_all(&msg).unwrap();
        let mut p = port.get(Some(WAIT)).unwrap();
        assert_eq!((p.key, p.context, p.kind()), (9, round, PacketKind::Recv));
        let n = *p.result.as_ref().unwrap();
        let buf = p
            .take_pooled()
            .expect("a receive with bytes hands a buffer");
        assert_eq!((n, &buf[..]), (len, &msg[..]), "round {round}");
        assert!(buf.index() < 4);
        assert_eq!(pool.in_use(), 1);
        h.send_all(buf.to_buf(), round).unwrap();
        drop(buf);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(port.get(Some(WAIT)).unwrap().result.unwrap(), len);
        let mut back = vec![0; len];
        peer.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    // 150 bytes through 64-byte buffers: 64 + 64 + 22, in order.
    let big: Vec<u8> = (0..150u8).collect();
    peer.write_all(&big).unwrap();
    let mut got = Vec::new();
    while got.len() < big.len() {
        h.recv_pooled(&pool, 0).unwrap();
        let p = port.get(Some(WAIT)).unwrap().into_parts();
        let n = p.result.unwrap();
        assert!((1..=64).contains(&n), "{n} bytes");
        got.extend_from_slice(&p.pooled.unwrap());
    }
    assert_eq!(got, big);
    // End of stream: Ok(0), no buffer.
    drop(peer);
    h.recv_pooled(&pool, 0).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.result.as_ref().unwrap(), &0);
    assert!(p.take_pooled().is_none());
    assert_eq!(pool.in_use(), 0);
}

/// Data arriving while every buffer is out ends the receive with the pool
/// error (the data stays in the socket); a receive on an idle socket waits
/// without a buffer.
fn empty_pool(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let pool = port.buf_pool(1, 32).unwrap();
    let (a, mut pa) = pair(&port, 1);
    let (b, mut pb) = pair(&port, 2);
    a.recv_pooled(&pool, 1).unwrap();
    pa.write_all(b"first").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    let held = p.take_pooled().unwrap();
    assert_eq!(&held[..], b"first");
    drop(p);
    assert_eq!(pool.in_use(), 1);

    // Idle socket, empty pool: waits.
    b.recv_pooled(&pool, 2).unwrap();
    assert!(
        port.get(Some(QUIET)).is_err(),
        "an idle pooled receive completed"
    );
    // Data while empty: the pool error, naming the operation and the pool.
    pa.write_all(b"second").unwrap();
    a.recv_pooled(&pool, 3).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 3);
    let e = p.result.unwrap_err();
    assert!(is_pool_exhausted(&e), "{e}");
    assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
    let msg = e.to_string();
    assert!(
        msg.contains("recv_pooled")
            && msg.contains("ENOBUFS")
            && msg.contains("1 buffers of 32 bytes"),
        "{msg}"
    );
    // The buffer comes back: the data left in the socket is received.
    drop(held);
    a.recv_pooled(&pool, 4).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 4);
    assert_eq!(&p.take_pooled().unwrap()[..], b"second");
    drop(p);
    // And the idle one, still waiting, takes it once its data comes.
    pb.write_all(b"late").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.context, 2);
    assert_eq!(&p.take_pooled().unwrap()[..], b"late");
    drop(p);
    assert_eq!(pool.in_use(), 0);
}

/// Buffers dropped on other threads go back to the pool and are reused.
fn buffers_come_back_from_other_threads(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let pool = port.buf_pool(2, 16).unwrap();
    let (h, mut peer) = pair(&port, 1);
    let mut seen = HashSet::new();
    const ROUNDS: u32 = 40;
    let mut droppers = Vec::new();
    for i in 0..ROUNDS {
        // Never more than the two buffers out at once.
        wait_until("a buffer is back", || pool.in_use() < 2);
        h.recv_pooled(&pool, i).unwrap();
        peer.write_all(&i.to_le_bytes()).unwrap();
        let mut p = port.get(Some(WAIT)).unwrap();
        let buf = p.take_pooled().unwrap();
        assert_eq!(&buf[..], &i.to_le_bytes());
        seen.insert(buf.index());
        droppers.push(std::thread::spawn(move || drop(buf)));
    }
    for d in droppers {
        d.join().unwrap();
    }
    assert_eq!(pool.in_use(), 0);
    assert!(seen.iter().all(|&i| i < 2), "{seen:?}");
    // 40 receives through 2 buffers: each was reused many times.
    assert!(!seen.is_empty());
}

/// Cancel, handle close and port close with pooled receives pending: one
/// packet each, no buffer lost, the pool fully usable afterwards.
fn cancel_and_close_pending(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let pool = port.buf_pool(2, 16).unwrap();
    let (a, _pa) = pair(&port, 1);
    let (b, _pb) = pair(&port, 2);
    let (c, mut pc) = pair(&port, 3);
    let t = a.recv_pooled(&pool, 1).unwrap();
    b.recv_pooled(&pool, 2).unwrap();
    c.recv_pooled(&pool, 3).unwrap();
    a.cancel(t).unwrap();
    assert_eq!(b.close(), 1);
    let mut ps = take(&port, 2);
    ps.sort_by_key(|p| p.context);
    for p in &mut ps {
        assert!(is_aborted(p.result.as_ref().unwrap_err()), "{:?}", p.result);
        assert!(p.take_pooled().is_none());
    }
    drop(ps);
    assert!(port.get(Some(QUIET)).is_err());
    // Both buffers still serve: two receives in a row hold both.
    pc.write_all(b"x").unwrap();
    let mut p1 = port.get(Some(WAIT)).unwrap();
    let b1 = p1.take_pooled().unwrap();
    c.recv_pooled(&pool, 4).unwrap();
    pc.write_all(b"y").unwrap();
    let mut p2 = port.get(Some(WAIT)).unwrap();
    let b2 = p2.take_pooled().unwrap();
    assert_eq!((&b1[..], &b2[..]), (&b"x"[..], &b"y"[..]));
    assert_ne!(b1.index(), b2.index());
    assert_eq!(pool.in_use(), 2);
    drop((b1, b2, p1, p2));
    // Port closed with one receive pending and one packet queued (its
    // buffer not taken): both end, the queued packet's buffer comes back.
    let (d, mut pd) = pair(&port, 5);
    d.recv_pooled(&pool, 5).unwrap();
    pd.write_all(b"queued").unwrap();
    wait_until("the packet is queued", || port.stats().queued == 1);
    c.recv_pooled(&pool, 6).unwrap();
    port.close();
    assert_eq!(pool.in_use(), 0);
    // The pool outlives the port; nothing more can be issued with it.
    let r = c.recv_pooled(&pool, 7).unwrap_err();
    assert!(completion_port::is_port_closed(&r.error), "{}", r.error);
    assert_eq!(r.context, 7);
}

/// The port goes while the pool and a buffer from it are alive; then the
/// pool goes while the buffer is out. The buffer stays readable.
fn port_and_pool_dropped_with_buffers_out(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let pool = port.buf_pool(4, 16).unwrap();
    let (h, mut peer) = pair(&port, 1);
    h.recv_pooled(&pool, 1).unwrap();
    peer.write_all(b"keep me").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    let buf = p.take_pooled().unwrap();
    drop(p);
    h.recv_pooled(&pool, 2).unwrap(); // pending when the port goes
    drop((port, h));
    assert_eq!(&buf[..], b"keep me");
    let watcher = pool.clone();
    drop(pool);
    assert_eq!(watcher.in_use(), 1);
    drop(watcher);
    assert_eq!(&buf[..], b"keep me");
    drop(buf);
}

/// A receive issued by a thread that exited still completes with its data
/// (io_uring cancels it at the exit; the port resubmits it).
fn thread_exit_keeps_pooled_receive(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let pool = port.buf_pool(2, 16).unwrap();
    let (h, mut peer) = pair(&port, 1);
    {
        let (h, pool) = (h.clone(), pool.clone());
        std::thread::spawn(move || h.recv_pooled(&pool, 1).unwrap())
            .join()
            .unwrap();
    }
    std::thread::sleep(QUIET);
    peer.write_all(b"after exit").unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(p.result.as_ref().unwrap(), &10);
    assert_eq!(&p.take_pooled().unwrap()[..], b"after exit");
    assert!(port.get(Some(QUIET)).is_err());
    drop(p);
    assert_eq!(pool.in_use(), 0);
}

/// 16 sockets share 4 buffers: all wait at once, all their data arrives at
/// once; receives that find the pool empty are issued again, and every
/// byte of every socket arrives.
fn more_sockets_than_buffers(backend: Backend) {
    const SOCKETS: usize = 16;
    let port = port::<usize>(backend, 1);
    let pool = port.buf_pool(4, 8).unwrap();
    let conns: Vec<_> = (0..SOCKETS).map(|i| pair(&port, i)).collect();
    for (i, (h, _)) in conns.iter().enumerate() {
        h.recv_pooled(&pool, i).unwrap();
    }
    assert!(port.get(Some(QUIET)).is_err());
    let msgs: Vec<Vec<u8>> = (0..SOCKETS)
        .map(|i| format!("msg{i:02}!!").into_bytes())
        .collect();
    for (i, (_, peer)) in conns.iter().enumerate() {
        (&*peer).write_all(&msgs[i]).unwrap();
    }
    let mut got = vec![Vec::new(); SOCKETS];
    let (mut exhausted, mut packets) = (0, 0);
    while got.iter().zip(&msgs).any(|(g, m)| g.len() < m.len()) {
        packets += 1;
        assert!(packets < 10_000, "no progress");
        let mut p = port.get(Some(WAIT)).unwrap();
        let i = p.context;
        match p.result.as_ref().copied() {
            Ok(n) => {
                let b = p.take_pooled().unwrap();
                assert_eq!(n, b.len());
                got[i].extend_from_slice(&b);
            }
            Err(e) if is_pool_exhausted(e) => exhausted += 1,
            Err(e) => panic!("socket {i}: {e}"),
        }
        drop(p);
        if got[i].len() < msgs[i].len() {
            conns[i].0.recv_pooled(&pool, i).unwrap();
        }
    }
    assert_eq!(got, msgs);
    assert_eq!(pool.in_use(), 0);
    // However many found it empty (`exhausted`), nothing was lost.
    let _ = exhausted;
}

/// Refusals: another port's pool, sizes out of range.
fn refusals(backend: Backend) {
    let other = port::<u32>(backend, 1);
    let port = port::<u32>(backend, 1);
    let pool = other.buf_pool(1, 16).unwrap();
    let (h, _peer) = pair(&port, 1);
    let r = h.recv_pooled(&pool, 77).unwrap_err();
    assert_eq!(
        (r.error.kind(), r.context),
        (io::ErrorKind::InvalidInput, 77)
    );
    assert!(r.error.to_string().contains("another port"));
    for (count, size) in [
        (0, 16),
        (1 << 15 | 1, 16),
        (1, 0),
        (1, completion_port::buf_pool::MAX_POOL_BUF_SIZE + 1),
    ] {
        let e = BufPool::new(&port, count, size).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{count} × {size}");
        assert!(e.to_string().starts_with("buf_pool: "), "{e}");
    }
    port.close();
    let e = port.buf_pool(1, 16).unwrap_err();
    assert!(completion_port::is_port_closed(&e), "{e}");
}

/// Many threads: two workers take packets and re-issue receives, buffers
/// are dropped on a third thread, 8 peers send 100 messages each through
/// a pool of 4; every message arrives intact and every buffer comes back.
fn hammer(backend: Backend) {
    const SOCKETS: usize = 8;
    const MSGS: usize = 100;
    let port = port::<usize>(backend, 2);
    let pool = port.buf_pool(4, 4).unwrap();
    let conns: Vec<_> = (0..SOCKETS).map(|i| pair(&port, i)).collect();
    let handles: Vec<Handle<usize>> = conns.iter().map(|(h, _)| h.clone()).collect();
    let peers: Vec<TcpStream> = conns.into_iter().map(|(_, p)| p).collect();
    for (i, h) in handles.iter().enumerate() {
        h.recv_pooled(&pool, i).unwrap();
    }
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, completion_port::PooledBuf)>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, Vec<u8>)>();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (port, pool, handles, tx) =
                (port.clone(), pool.clone(), handles.clone(), tx.clone());
            std::thread::spawn(move || loop {
                let mut p = match port.get(Some(WAIT)) {
                    Ok(p) => p,
                    Err(_) => return,
                };
                let i = p.context;
                match p.result.as_ref().copied() {
                    Ok(0) => continue, // the peer closed
                    Ok(_) => {
                        let b = p.take_pooled().unwrap();
                        tx.send((i, b)).unwrap()
                    }
                    Err(e) if is_pool_exhausted(e) => std::thread::yield_now(),
                    Err(e) if completion_port::is_port_closed(e) || is_aborted(e) => return,
                    Err(e) => panic!("{e}"),
                }
                drop(p);
                let _ = handles[i].recv_pooled(&pool, i);
            })
        })
        .collect();
    drop(tx);
    let collector = std::thread::spawn(move || {
        let mut got = vec![Vec::new(); SOCKETS];
        while let Ok((i, buf)) = rx.recv_timeout(WAIT) {
            got[i].extend_from_slice(&buf);
            drop(buf); // on this thread
            if got[i].len() == MSGS * 4 {
                done_tx.send((i, std::mem::take(&mut got[i]))).unwrap();
            }
        }
    });
    let senders: Vec<_> = peers
        .into_iter()
        .enumerate()
        .map(|(i, mut peer)| {
            std::thread::spawn(move || {
                for m in 0..MSGS {
                    peer.write_all(&((i * MSGS + m) as u32).to_le_bytes())
                        .unwrap();
                    if m % 10 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                peer
            })
        })
        .collect();
    let mut peers = Vec::new();
    for s in senders {
        peers.push(s.join().unwrap());
    }
    for _ in 0..SOCKETS {
        let (i, bytes) = done_rx
            .recv_timeout(WAIT)
            .expect("a socket's messages all came");
        let want: Vec<u8> = (0..MSGS)
            .flat_map(|m| ((i * MSGS + m) as u32).to_le_bytes())
            .collect();
        assert_eq!(bytes, want, "socket {i}");
    }
    port.close();
    for w in workers {
        w.join().unwrap();
    }
    collector.join().unwrap();
    drop((handles, peers));
    assert_eq!(pool.in_use(), 0);
}

per_backend!(
    echo_through_pooled_receives,
    empty_pool,
    buffers_come_back_from_other_threads,
    cancel_and_close_pending,
    port_and_pool_dropped_with_buffers_out,
    thread_exit_keeps_pooled_receive,
    more_sockets_than_buffers,
    refusals,
    hammer,
);
