//! The first week's questions, answered with code. Every recipe here is a
//! test: it compiles and runs with the crate's doc tests, on the backend
//! `CPORT_BACKEND` selects.
//!
//! - [A server's loop](#a-servers-loop)
//! - [Per-connection state](#per-connection-state)
//! - [A client: connect, then send](#a-client-connect-then-send)
//! - [Short sends](#short-sends)
//! - [Idle connections and time-outs](#idle-connections-and-time-outs)
//! - [Timers](#timers)
//! - [Shutting down cleanly](#shutting-down-cleanly)
//! - [Reusing buffers](#reusing-buffers)
//! - [Many idle connections: pooled receives](#many-idle-connections-pooled-receives)
//! - [Files](#files)
//! - [Sending a file over a socket](#sending-a-file-over-a-socket)
//! - [Blocking inside a handler](#blocking-inside-a-handler)
//! - [Errors: what comes back, and where](#errors-what-comes-back-and-where)
//! - [Choosing and checking the backend](#choosing-and-checking-the-backend)
//!
//! # A server's loop
//! Associate the listener, keep one `accept` in flight, and give every
//! connection one receive at a time. `Ok(0)` from a receive means the peer
//! closed (a receive into no room is refused at the call, so it cannot mean
//! anything else); dropping the connection's last [`Handle`] then closes
//! the socket.
//!
//! ```
//! use completion_port::{Buf, Handle, Port};
//! use std::io::{Read, Write};
//! use std::net::{TcpListener, TcpStream};
//! use std::time::Duration;
//!
//! enum Op { Accept, Recv(Handle<Op>), Sent(Handle<Op>) }
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<Op>::new(0)?;
//! let listener = TcpListener::bind("127.0.0.1:0")?;
//! let addr = listener.local_addr()?;
//! let listener = port.associate(listener, 0)?;
//! listener.accept(Op::Accept)?;
//!
//! let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
//!     let mut s = TcpStream::connect(addr)?;
//!     s.write_all(b"ping")?;
//!     let mut got = [0; 4];
//!     s.read_exact(&mut got)?;
//!     Ok(got.to_vec()) // `s` drops: the server's next receive gets Ok(0)
//! });
//!
//! let mut closed = false;
//! while !closed {
//!     let mut p = port.get(Some(Duration::from_secs(10)))?;
//!     let buf = p.take_buf();
//!     match p.context {
//!         Op::Accept => {
//!             let a = p.take_accepted().expect("an accept's packet brings the socket");
//!             let conn = port.associate(a.socket, 1)?;
//!             conn.recv(Buf::with_capacity(4096), Op::Recv(conn.clone()))?;
//!             // (a real server issues the next accept here)
//!         }
//!         Op::Recv(conn) => match p.result {
//!             Ok(0) => closed = true, // peer closed: `conn` drops, the socket closes
//!             Ok(_) => { conn.send_all(buf.unwrap(), Op::Sent(conn.clone()))?; }
//!             Err(e) => { eprintln!("recv: {e}"); closed = true; }
//!         },
//!         Op::Sent(conn) => {
//!             let mut b = buf.unwrap();
//!             b.clear();
//!             conn.recv(b, Op::Recv(conn.clone()))?;
//!         }
//!     }
//! }
//! assert_eq!(client.join().unwrap()?, b"ping");
//! # Ok(()) }
//! ```
//!
//! Many workers run the same loop on clones of the port: see the README's
//! example and `crates/cport/src/server.rs`.
//!
//! # Per-connection state
//! The context is the typed `OVERLAPPED`: whatever the handler needs when
//! the packet comes back. A `Box` per connection that travels with its one
//! operation in flight needs no lock and no table; an `Arc` suits state
//! that several operations (a receive and a send at once) share.
//!
//! ```
//! use completion_port::{Buf, Handle, Port};
//! use std::io::Write;
//!
//! struct Connection { id: u64, handle: Handle<Box<Connection>>, received: usize }
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<Box<Connection>>::new(0)?;
//! let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
//! let handle = port.associate(ours, 0)?;
//! let conn = Box::new(Connection { id: 42, handle: handle.clone(), received: 0 });
//! handle.recv(Buf::with_capacity(64), conn)?;
//! peer.write_all(b"abc")?;
//!
//! let p = port.get(None)?;
//! let mut conn = p.context; // the state comes back with its packet
//! conn.received += p.result?;
//! assert_eq!((conn.id, conn.received), (42, 3));
//! # drop(conn.handle);
//! # Ok(()) }
//! ```
//!
//! # A client: connect, then send
//! Associate an unconnected socket (`socket2` builds one), `connect` it,
//! and issue the first send from the connect's packet.
//!
//! ```
//! use completion_port::{Buf, Port};
//! use socket2::{Domain, Socket, Type};
//! use std::io::Read;
//! use std::net::TcpListener;
//!
//! # fn main() -> std::io::Result<()> {
//! let server = TcpListener::bind("127.0.0.1:0")?;
//! let port = Port::<&str>::new(0)?;
//! let sock = port.associate(Socket::new(Domain::IPV4, Type::STREAM, None)?, 0)?;
//! sock.connect(server.local_addr()?, "connect")?;
//! let (mut accepted, _) = server.accept()?;
//!
//! let p = port.get(None)?;
//! assert_eq!((p.context, p.result?), ("connect", 0));
//! sock.send_all(Buf::copy_from(b"GET / HTTP/1.0\r\n\r\n"), "request")?;
//! assert_eq!(port.get(None)?.result?, 18);
//! let mut got = [0; 18];
//! accepted.read_exact(&mut got)?;
//! # Ok(()) }
//! ```
//!
//! A refused connection comes in the packet as `ConnectionRefused`.
//!
//! # Short sends
//! [`send`](Handle::send) is one `send(2)`: it may take fewer bytes than the
//! buffer holds when the socket buffer is full. [`send_all`](Handle::send_all)
//! (and [`send_all_vectored`](Handle::send_all_vectored),
//! [`write_all_at`](Handle::write_all_at)) finishes the rest inside the
//! port and completes once, with every byte sent or with the error that
//! stopped it — what a stream `WSASend` does on Windows. Use `send_all`
//! unless you want to see each partial step; then resend the rest with
//! [`Buf::consume`], which moves nothing:
//!
//! ```
//! use completion_port::{Buf, Port};
//! use std::io::Read;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<()>::new(0)?;
//! let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
//! let sock = port.associate(ours, 0)?;
//! let total = 1 << 20; // more than a socket buffer
//! let reader = std::thread::spawn(move || {
//!     let mut all = vec![0; total];
//!     peer.read_exact(&mut all).map(|_| all)
//! });
//! let mut buf = Buf::from(vec![9u8; total]);
//! let mut sent = 0;
//! while sent < total {
//!     sock.send(buf, ())?;
//!     let mut p = port.get(None)?;
//!     buf = p.take_buf().unwrap();
//!     let n = p.result?;
//!     sent += n;
//!     buf.consume(n); // the rest, in place
//! }
//! assert!(reader.join().unwrap()?.iter().all(|&b| b == 9));
//! # Ok(()) }
//! ```
//!
//! Sends on one stream socket reach the wire in the order they were
//! issued, whole ones included, on both backends.
//!
//! # Idle connections and time-outs
//! [`Handle::with_timeout`] gives a clone whose operations end with
//! `TimedOut` when not done in time; nothing else changes, so closing an
//! idle connection is the handler's choice.
//!
//! ```
//! use completion_port::{Buf, Port};
//! use std::io::ErrorKind;
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<()>::new(0)?;
//! let (ours, _silent_peer) = std::os::unix::net::UnixStream::pair()?;
//! let conn = port.associate(ours, 0)?;
//! conn.with_timeout(Duration::from_millis(50)).recv(Buf::with_capacity(512), ())?;
//! let p = port.get(Some(Duration::from_secs(10)))?;
//! match p.result {
//!     Err(e) if e.kind() == ErrorKind::TimedOut => conn.close(), // idle: hang up
//!     other => panic!("the peer never writes: {other:?}"),
//! };
//! assert!(conn.is_closed());
//! # Ok(()) }
//! ```
//!
//! A whole operation that times out may have transferred part of its
//! bytes; the error says so by its kind only, so treat the stream as
//! broken.
//!
//! # Timers
//! [`Port::post_after`] queues a packet after a delay, through the same
//! queue as everything else — a worker sees it like any other packet. Cancel
//! it with [`Port::cancel_timer`]; its packet then comes at once with
//! `ECANCELED` ([`is_aborted`](crate::is_aborted)). A periodic tick
//! re-arms itself from its own packet.
//!
//! ```
//! use completion_port::{Port, PacketKind};
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<&str>::new(0)?;
//! let tick = Duration::from_millis(5);
//! port.post_after(tick, 0, "tick")?;
//! let mut ticks = 0;
//! while ticks < 3 {
//!     let p = port.get(Some(Duration::from_secs(10)))?;
//!     assert_eq!((p.kind(), p.context), (PacketKind::Timer, "tick"));
//!     ticks += 1;
//!     if ticks < 3 {
//!         port.post_after(tick, 0, "tick")?; // re-arm
//!     }
//! }
//! // No tick is pending now: the next packet is the cancelled timer's.
//! let last = port.post_after(Duration::from_secs(3600), 0, "tick")?;
//! port.cancel_timer(last)?;
//! let p = port.get(Some(Duration::from_secs(10)))?;
//! assert!(completion_port::is_aborted(p.result.as_ref().unwrap_err()));
//! # Ok(()) }
//! ```
//!
//! A timer costs no thread and no file descriptor of its own: pending
//! timers wait in one ordered map per port, and the kernel is asked to
//! wake the port only for the earliest (io_uring: one kernel time-out;
//! epoll: a timerfd). What 100 000 pending timers cost: BENCHMARKS.md.
//!
//! # Shutting down cleanly
//! Two ways, both bounded:
//! - **Drain, then stop**: post one stop packet per worker. Packets are
//!   dequeued in order, so each worker finishes what was queued before
//!   its stop.
//! - **Stop now**: [`Port::close`]. Every waiter gets
//!   [`GetError::Closed`](crate::GetError::Closed), queued packets are
//!   dropped, operations in flight are cancelled, and `close` returns once
//!   all of their buffers and contexts have been dropped.
//!
//! ```
//! use completion_port::{Buf, GetError, Port};
//! use std::sync::Arc;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<Arc<()>>::new(2)?;
//! let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
//! let conn = port.associate(ours, 0)?;
//! let alive = Arc::new(()); // counts the contexts still held somewhere
//! conn.recv(Buf::with_capacity(64), alive.clone())?; // never completes by itself
//!
//! let workers: Vec<_> = (0..2)
//!     .map(|_| {
//!         let port = port.clone();
//!         std::thread::spawn(move || loop {
//!             match port.get(None) {
//!                 Ok(_packet) => {} // handle it
//!                 Err(GetError::Closed) => return,
//!                 Err(e) => panic!("{e}"),
//!             }
//!         })
//!     })
//!     .collect();
//! port.close(); // the receive is cancelled; its context is dropped before close returns
//! assert_eq!(Arc::strong_count(&alive), 1);
//! for w in workers { w.join().unwrap(); }
//! # Ok(()) }
//! ```
//!
//! To let one connection finish while closing another, use
//! [`Handle::cancel_all`] or [`Handle::close`] on it: each of its operations
//! still yields its one packet, with `ECANCELED` or its real result.
//!
//! # Reusing buffers
//! A packet hands its buffer back ([`Packet::take_buf`](crate::Packet::take_buf));
//! [`Buf::clear`] makes it ready for the next receive without a new
//! allocation. [`Buf::set_spare_limit`] lets one large buffer take small
//! reads; a free list of `Buf`s is a plain `Vec<Buf>`.
//!
//! ```
//! use completion_port::{Buf, Port};
//! use std::io::Write;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<()>::new(0)?;
//! let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
//! let conn = port.associate(ours, 0)?;
//! let mut pool: Vec<Buf> = (0..4).map(|_| Buf::with_capacity(16 << 10)).collect();
//!
//! let mut buf = pool.pop().unwrap();
//! buf.set_spare_limit(Some(4)); // read at most 4 bytes this time
//! conn.recv(buf, ())?;
//! peer.write_all(b"headerbody")?;
//! let mut buf = port.get(None)?.take_buf().unwrap();
//! assert_eq!(&buf[..], b"head");
//! buf.clear();
//! buf.set_spare_limit(None);
//! pool.push(buf); // back to the pool, allocation kept
//! assert!(pool.iter().all(|b| b.capacity() == 16 << 10));
//! # Ok(()) }
//! ```
//!
//! # Many idle connections: pooled receives
//! A receive that owns its buffer holds it while the connection is idle.
//! A [`BufPool`](crate::BufPool) shared by every connection lends a buffer
//! only once data is there ([`Handle::recv_pooled`]); the packet hands it
//! over as a [`PooledBuf`](crate::PooledBuf), which returns to the pool when
//! dropped — so drop it (or copy out of it) soon. Data that finds every
//! buffer out ends the receive with
//! [`is_pool_exhausted`](crate::is_pool_exhausted) and stays in the socket.
//! Do not issue that receive again at once (under load it would only fail
//! again, and spin): park the connection, and issue one parked receive each
//! time you drop a buffer. [`buf_pool`](crate::buf_pool) has the details.
//!
//! ```
//! use completion_port::{is_pool_exhausted, Handle, Port};
//! use std::io::Write;
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<usize>::new(0)?;
//! let pool = port.buf_pool(2, 4096)?; // 2 buffers for 8 connections
//! let mut peers = Vec::new();
//! let mut conns: Vec<Handle<usize>> = Vec::new();
//! for i in 0..8 {
//!     let (ours, peer) = std::os::unix::net::UnixStream::pair()?;
//!     let conn = port.associate(ours, i)?;
//!     conn.recv_pooled(&pool, i)?; // waits without a buffer
//!     conns.push(conn);
//!     peers.push(peer);
//! }
//! for (i, p) in peers.iter_mut().enumerate() {
//!     p.write_all(format!("hello from {i}").as_bytes())?;
//! }
//! let mut parked: Vec<usize> = Vec::new(); // connections waiting for a buffer
//! let mut served = 0;
//! while served < 8 {
//!     let mut p = port.get(Some(Duration::from_secs(10)))?;
//!     let i = p.context;
//!     match p.result {
//!         Ok(n) => {
//!             let buf = p.take_pooled().expect("bytes come in a pooled buffer");
//!             assert_eq!(&buf[..n], format!("hello from {i}").as_bytes());
//!             served += 1;
//!             drop(buf); // back to the pool: one parked connection may use it
//!             if let Some(j) = parked.pop() {
//!                 conns[j].recv_pooled(&pool, j)?;
//!             }
//!         }
//!         Err(e) if is_pool_exhausted(&e) => {
//!             parked.push(i);
//!             if pool.in_use() == 0 {
//!                 // Every buffer came back already: nobody will drop one.
//!                 let j = parked.pop().unwrap();
//!                 conns[j].recv_pooled(&pool, j)?;
//!             }
//!         }
//!         Err(e) => return Err(e),
//!     }
//! }
//! assert_eq!(pool.in_use(), 0);
//! # Ok(()) }
//! ```
//!
//! # Files
//! Open without blocking ([`Port::open`]), then keep many reads or writes
//! in flight at their own offsets; the packets may come in any order, so
//! the context says which piece each is. [`write_all_at`](Handle::write_all_at)
//! completes once every byte is written; [`fsync`](Handle::fsync) and
//! [`stat`](Handle::stat) are operations too.
//!
//! ```
//! use completion_port::{Buf, OpenOptions, Port};
//!
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("out.bin");
//! let port = Port::<u64>::new(0)?;
//! port.open(&path, OpenOptions::write().create(true), 0, 0)?;
//! let file = port.get(None)?.take_opened().expect("opened");
//! let file = port.associate(file, 1)?;
//!
//! let piece = 64 << 10;
//! for i in 0..8u64 {
//!     file.write_all_at(Buf::from(vec![i as u8; piece]), i * piece as u64, i)?;
//! }
//! let mut done = [false; 8];
//! for _ in 0..8 {
//!     let p = port.get(None)?;
//!     assert_eq!(p.result?, piece);
//!     done[p.context as usize] = true; // which piece, in any order
//! }
//! assert!(done.iter().all(|&d| d));
//! file.fsync(100)?;
//! port.get(None)?.result?;
//! file.stat(101)?;
//! assert_eq!(port.get(None)?.stat().unwrap().size, 8 * piece as u64);
//! # Ok(()) }
//! ```
//!
//! A read at or past the end of the file completes with `Ok(0)`.
//!
//! # Sending a file over a socket
//! [`Handle::send_file`] moves a file's range to a socket without copying
//! it through user space (`splice` through a pipe), and completes once the
//! whole range is sent — `TransmitFile` on Windows.
//!
//! ```
//! use completion_port::Port;
//! use std::io::Read;
//!
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("page.html"), vec![b'x'; 100_000])?;
//! let port = Port::<()>::new(0)?;
//! let file = port.associate(std::fs::File::open(dir.path().join("page.html"))?, 1)?;
//! let (ours, mut peer) = std::os::unix::net::UnixStream::pair()?;
//! let sock = port.associate(ours, 2)?;
//! sock.send_file(&file, 0, 100_000, ())?;
//! let reader = std::thread::spawn(move || {
//!     let mut got = vec![0; 100_000];
//!     peer.read_exact(&mut got).map(|_| got)
//! });
//! assert_eq!(port.get(None)?.bytes(), 100_000);
//! assert!(reader.join().unwrap()?.iter().all(|&b| b == b'x'));
//! # Ok(()) }
//! ```
//!
//! # Blocking inside a handler
//! A handler that blocks (a synchronous read, a lock, a database call)
//! holds one of the port's `concurrency` slots while it blocks. Wrap the
//! call in [`Port::blocking`]: the slot goes to another worker at once, and
//! on io_uring the operations the handler issued so far are submitted
//! first. Without the wrapper, the port's blocked-thread detection notices
//! within about half a millisecond (see [`port`](crate::port#blocked-thread-detection)).
//!
//! ```
//! use completion_port::Port;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<&str>::new(1)?;
//! port.post(0, 0, "work")?;
//! let _p = port.get(None)?; // this thread now runs for the port
//! assert!(port.is_running_here());
//! let config = port.blocking(|| {
//!     assert!(!port.is_running_here()); // the slot is free meanwhile
//!     std::fs::read_to_string("/proc/self/status") // any blocking call
//! })?;
//! assert!(config.contains("Threads"));
//! assert!(port.is_running_here()); // counted again
//! # Ok(()) }
//! ```
//!
//! The same goes for waiting on something outside the port (a channel, a
//! `join`) after issuing an operation: on io_uring, a running thread's
//! operations reach the kernel at its next `get` or blocking scope, so wrap
//! the wait in `blocking` (the monitor submits them otherwise, about a
//! millisecond late).
//!
//! # Errors: what comes back, and where
//! - **At the call**: bad arguments and state (closed port or handle,
//!   oversized buffer, a receive with no room) refuse the operation with a
//!   [`Rejected`](crate::Rejected) that hands back the buffers and the
//!   context; no packet will come. Every refusal: `docs/bad-input.md`.
//! - **In the packet**: what the kernel reports (`ConnectionReset`,
//!   `BrokenPipe`, `ECANCELED`, …), as `io::Error` with the OS code.
//! - **From `get`**: [`GetError::Timeout`](crate::GetError::Timeout) (no
//!   packet consumed) and [`GetError::Closed`](crate::GetError::Closed);
//!   both convert to `io::Error` for `?`.
//!
//! ```
//! use completion_port::{Buf, GetError, Port};
//! use std::io::ErrorKind;
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<&str>::new(0)?;
//! let (ours, _peer) = std::os::unix::net::UnixStream::pair()?;
//! let conn = port.associate(ours, 0)?;
//!
//! let mut full = Buf::with_capacity(8);
//! full.extend_from_slice(b"12345678");
//! let mut refused = conn.recv(full, "recv").unwrap_err(); // no room to receive into
//! assert_eq!(refused.error.kind(), ErrorKind::InvalidInput);
//! assert_eq!(refused.context, "recv");
//! assert_eq!(&refused.take_buf().unwrap()[..], b"12345678"); // nothing lost
//!
//! assert!(matches!(port.get(Some(Duration::ZERO)), Err(GetError::Timeout)));
//! # Ok(()) }
//! ```
//!
//! # Choosing and checking the backend
//! [`Backend::Auto`](crate::Backend::Auto) (the default) runs io_uring and
//! falls back to epoll where io_uring is denied;
//! [`Port::fallback_reason`] says why it fell back. Ask for one backend
//! explicitly to make a missing io_uring an error instead. The environment
//! variable `CPORT_BACKEND=auto|io_uring|epoll` forces the backend of
//! automatic ports, which is how a test suite runs on both.
//!
//! ```
//! use completion_port::{Backend, Port};
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<()>::builder().backend(Backend::Epoll).concurrency(4).build()?;
//! assert_eq!((port.backend(), port.concurrency()), (Backend::Epoll, 4));
//! let auto = Port::<()>::new(0)?;
//! if let Some(why) = auto.fallback_reason() {
//!     eprintln!("running on epoll: {why}");
//! }
//! # Ok(()) }
//! ```

#[allow(unused_imports)] // for the intra-doc links above
use crate::{Buf, Handle, Port};
