//! Sockets over 127.0.0.1: accept/connect, send/recv (plain and vectored),
//! end of stream, reset, refused connection, the zero-byte receive.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use completion_port::{Backend, Buf, GetError, Handle, PacketKind, Port};
use socket2::{Domain, Socket, Type};

use common::{port, take, QUIET, WAIT};

fn localhost() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A connected pair: `ours` associated with `port` under `key`, the peer a
/// plain blocking socket.
fn pair<C: Send + 'static>(port: &Port<C>, key: usize) -> (Handle<C>, TcpStream) {
    let l = localhost();
    let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (peer, _) = l.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    (port.associate(ours, key).unwrap(), peer)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ctx {
    Accept,
    Connect,
    Send,
    Recv,
}

/// The accept packet comes with the listener's key and yields the
/// connection (not associated); the connect packet with the connecting
/// socket's key.
fn accept_and_connect(backend: Backend) {
    let port = port::<Ctx>(backend, 2);
    let l = localhost();
    let addr = l.local_addr().unwrap();
    let listener = port.associate(l, 100).unwrap();
    let client = port
        .associate(Socket::new(Domain::IPV4, Type::STREAM, None).unwrap(), 200)
        .unwrap();
    let accept_token = listener.accept(Ctx::Accept).unwrap();
    assert_eq!(port.stats().in_flight, 1);
    assert!(port.get(Some(QUIET)).is_err(), "accept completed alone");
    let connect_token = client.connect(addr, Ctx::Connect).unwrap();
    assert_ne!(accept_token, connect_token);

    let mut ps = take(&port, 2);
    ps.sort_by_key(|p| p.context);
    let [a, c] = &mut ps[..] else { unreachable!() };
    assert_eq!(
        (a.key, a.kind(), a.token()),
        (100, PacketKind::Accept, Some(accept_token))
    );
    assert_eq!(*a.result.as_ref().unwrap(), 0);
    assert_eq!(
        (c.key, c.kind(), c.token()),
        (200, PacketKind::Connect, Some(connect_token))
    );
    assert_eq!(*c.result.as_ref().unwrap(), 0);
    assert!(c.take_accepted().is_none());

    let accepted = a.take_accepted().expect("the accepted socket");
    assert!(a.take_accepted().is_none(), "taken once");
    let client_local = socket2::SockRef::from(&client).local_addr().unwrap();
    assert_eq!(accepted.peer.as_socket(), client_local.as_socket());
    assert_eq!(
        accepted.socket.peer_addr().unwrap().as_socket(),
        client_local.as_socket()
    );
    // Not associated yet: it can be associated now, under its own key.
    let server = port.associate(accepted.socket, 300).unwrap();
    client.send(Buf::copy_from(b"hi"), Ctx::Send).unwrap();
    server.recv(Buf::with_capacity(8), Ctx::Recv).unwrap();
    let mut ps = take(&port, 2);
    ps.sort_by_key(|p| p.context);
    assert_eq!((ps[0].key, *ps[0].result.as_ref().unwrap()), (200, 2));
    assert_eq!((ps[1].key, ps[1].kind()), (300, PacketKind::Recv));
    assert_eq!(&ps[1].take_buf().unwrap()[..], b"hi");
}

/// Several accepts pending on one listener: each connection completes
/// exactly one of them.
fn several_pending_accepts(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let l = localhost();
    let addr = l.local_addr().unwrap();
    let listener = port.associate(l, 1).unwrap();
    for i in 0..3 {
        listener.accept(i).unwrap();
    }
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut ps = take(&port, 3);
    ps.sort_by_key(|p| p.context);
    let mut peers = Vec::new();
    for (i, p) in ps.iter_mut().enumerate() {
        assert_eq!((p.key, p.context), (1, i as u32));
        peers.push(p.take_accepted().unwrap().peer.as_socket().unwrap());
    }
    peers.sort();
    let mut want: Vec<SocketAddr> = clients.iter().map(|c| c.local_addr().unwrap()).collect();
    want.sort();
    assert_eq!(peers, want);
}

/// A large transfer both ways, byte-exact, through partial sends and
/// receives.
fn send_recv_byte_exact(backend: Backend) {
    const LEN: usize = 1 << 20;
    let port = port::<Ctx>(backend, 2);
    let l = localhost();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    let a = port.associate(a, 1).unwrap();
    let b = port.associate(b, 2).unwrap();
    let data: Vec<u8> = (0..LEN).map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8).collect();

    // a → b and b → a at the same time.
    let mut sent = [0usize; 2];
    let mut got: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let sock = |k: usize| if k == 1 { &a } else { &b };
    for k in [1, 2] {
        sock(k)
            .send(Buf::copy_from(&data[..64 * 1024]), Ctx::Send)
            .unwrap();
        sock(k).recv(Buf::with_capacity(10_000), Ctx::Recv).unwrap();
    }
    let mut pending = 4;
    while pending > 0 {
        let mut p = port.get(Some(WAIT)).expect("transfer stalled");
        pending -= 1;
        let k = p.key;
        let i = k - 1;
        let n = *p.result.as_ref().unwrap();
        let mut buf = p.take_buf().unwrap();
        match p.context {
            Ctx::Send => {
                assert!(n >= 1 && n <= buf.len());
                assert_eq!(&buf[..], &data[sent[i]..sent[i] + buf.len()]);
                sent[i] += n;
                if sent[i] < LEN {
                    let end = (sent[i] + 64 * 1024).min(LEN);
                    sock(k)
                        .send(Buf::copy_from(&data[sent[i]..end]), Ctx::Send)
                        .unwrap();
                    pending += 1;
                }
            }
            Ctx::Recv => {
                assert!(n >= 1, "unexpected end of stream");
                assert_eq!(buf.len(), n);
                got[i].extend_from_slice(&buf);
                if got[i].len() < LEN {
                    buf.clear();
                    sock(k).recv(buf, Ctx::Recv).unwrap();
                    pending += 1;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(sent, [LEN, LEN]);
    assert!(got[0] == data, "b → a corrupted");
    assert!(got[1] == data, "a → b corrupted");
    assert_eq!(port.stats().in_flight, 0);
}

/// Gather and scatter: the total is reported, buffers are filled in
/// order, each only in its spare capacity.
fn vectored_byte_exact(backend: Backend) {
    let port = port::<Ctx>(backend, 1);
    let (h, mut peer) = pair(&port, 5);

    let bufs = vec![
        Buf::copy_from(b"abc"),
        Buf::with_capacity(16), // empty: contributes nothing
        Buf::copy_from(b"defgh"),
    ];
    h.send_vectored(bufs, Ctx::Send).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.kind()), (5, PacketKind::Send));
    assert_eq!(*p.result.as_ref().unwrap(), 8);
    let back = p.take_bufs();
    assert_eq!(back.len(), 3);
    assert_eq!(&back[0][..], b"abc");
    assert!(back[1].is_empty());
    assert_eq!(&back[2][..], b"defgh");
    assert!(p.take_buf().is_none(), "a vectored op has no single buffer");
    let mut got = [0; 8];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abcdefgh");

    peer.write_all(b"0123456789").unwrap();
    let mut first = Buf::with_capacity(4);
    first.extend_from_slice(b"XY"); // 2 spare bytes
    let bufs = vec![first, Buf::with_capacity(3), Buf::with_capacity(100)];
    h.recv_vectored(bufs, Ctx::Recv).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.kind()), (5, PacketKind::Recv));
    assert_eq!(*p.result.as_ref().unwrap(), 10);
    let back = p.take_bufs();
    assert_eq!(&back[0][..], b"XY01");
    assert_eq!(&back[1][..], b"234");
    assert_eq!(&back[2][..], b"56789");
    assert_eq!(back[2].capacity(), 100);
    assert!(p.take_bufs().is_empty(), "taken once");
}

/// Spec §5.23: a graceful close by the peer completes a pending receive
/// with success and 0 bytes (also a vectored one).
fn peer_close_gives_zero(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let (h, peer) = pair(&port, 1);
    h.recv(Buf::with_capacity(64), 1).unwrap();
    assert!(port.get(Some(QUIET)).is_err());
    peer.shutdown(Shutdown::Write).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.context, p.kind()), (1, PacketKind::Recv));
    assert_eq!(*p.result.as_ref().unwrap(), 0);
    assert!(p.take_buf().unwrap().is_empty());

    let (h, peer) = pair(&port, 2);
    h.recv_vectored(vec![Buf::with_capacity(4), Buf::with_capacity(4)], 2)
        .unwrap();
    drop(peer);
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.context), (2, 2));
    assert_eq!(*p.result.as_ref().unwrap(), 0);
}

/// Drops `peer` with an abortive close (RST).
fn reset(peer: TcpStream) {
    let s = Socket::from(peer);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// A reset by the peer fails a pending receive with `ConnectionReset`
/// (Windows: `ERROR_NETNAME_DELETED`).
fn peer_reset_gives_connection_reset(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let (h, peer) = pair(&port, 1);
    h.recv(Buf::with_capacity(64), 1).unwrap();
    assert!(port.get(Some(QUIET)).is_err());
    reset(peer);
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.context), (1, 1));
    let e = p.result.as_ref().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e:?}");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    assert_eq!(p.bytes(), 0);
    assert!(p.take_buf().unwrap().is_empty());

    // A send on a reset connection fails in its packet, too.
    h.send(Buf::copy_from(b"x"), 2).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    let e = p.result.as_ref().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{e:?}"
    );
}

/// Connecting to a port nobody listens on fails with `ConnectionRefused`
/// in the packet.
fn connect_refused(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let addr = {
        let l = localhost();
        l.local_addr().unwrap()
    }; // closed again
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let h = port.associate(s, 7).unwrap();
    let token = h.connect(addr, 1).unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.key, p.context, p.kind()), (7, 1, PacketKind::Connect));
    assert_eq!(p.token(), Some(token));
    let e = p.result.as_ref().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e:?}");
}

/// Operations a socket is not in a state for fail in the packet
/// (`ENOTCONN`), not at the call.
fn recv_on_unconnected_socket_fails_in_packet(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let h = port.associate(s, 3).unwrap();
    h.recv(Buf::with_capacity(8), 1).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(
        p.result.as_ref().unwrap_err().raw_os_error(),
        Some(libc::ENOTCONN)
    );
    assert_eq!(p.take_buf().unwrap().capacity(), 8);
}

/// A receive with no spare capacity is refused at the call (it would
/// complete with `Ok(0)`, which reads as the peer closing), handing its
/// buffer back; `wait_readable` is the zero-byte receive: it waits for
/// data, completes with `Ok(0)` and consumes none — the data is still there
/// for the next receive.
fn zero_byte_recv_is_wait_readable(backend: Backend) {
    let port = port::<u32>(backend, 1);
    let (h, mut peer) = pair(&port, 1);
    for buf in [Buf::with_capacity(0), Buf::from(b"abc".to_vec())] {
        let mut r = h.recv(buf, 1).unwrap_err();
        assert_eq!(r.error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(r.error.to_string().contains("wait_readable"), "{}", r.error);
        assert!(r.take_buf().is_some(), "the buffer comes back");
    }
    let r = h
        .recv_vectored(vec![Buf::with_capacity(0), Buf::with_capacity(0)], 1)
        .unwrap_err();
    assert_eq!(r.error.kind(), std::io::ErrorKind::InvalidInput);
    h.wait_readable(2).unwrap();
    match port.get(Some(QUIET)) {
        Err(GetError::Timeout) => {}
        other => panic!("wait_readable completed without data: {other:?}"),
    }
    peer.write_all(b"data!").unwrap();
    let p = port.get(Some(WAIT)).unwrap();
    assert_eq!((p.kind(), p.context), (PacketKind::Readable, 2));
    assert_eq!(*p.result.as_ref().unwrap(), 0);
    h.recv(Buf::with_capacity(16), 3).unwrap();
    let mut p = port.get(Some(WAIT)).unwrap();
    assert_eq!(&p.take_buf().unwrap()[..], b"data!");
}

per_backend! {
    accept_and_connect,
    several_pending_accepts,
    send_recv_byte_exact,
    vectored_byte_exact,
    peer_close_gives_zero,
    peer_reset_gives_connection_reset,
    connect_refused,
    recv_on_unconnected_socket_fails_in_packet,
    zero_byte_recv_is_wait_readable,
}
