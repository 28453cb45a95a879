//! Socket operations: `recv`/`send` (and vectored), `accept`, `connect`.

use socket2::SockAddr;

use crate::buf::{Buf, Buffers};
use crate::buf_pool::BufPool;
use crate::core::Token;
use crate::driver::OpKind;
use crate::error::{invalid_input, Rejected};
use crate::op::file::{check_len, filled, spare};
use crate::Handle;

/// Most buffers one vectored call takes (the kernel's `UIO_MAXIOV`).
pub const MAX_IOVECS: usize = 1024;

/// A receive into no spare capacity would complete with 0 bytes, which reads
/// as the peer closing: refused at the call.
fn check_recv_room(spare: usize) -> Option<String> {
    (spare == 0).then(|| {
        "a receive needs spare capacity in its buffer (its length equals its capacity): it would \
         complete with 0 bytes, which looks like the peer closing; use Buf::with_capacity, clear() \
         the buffer, or wait_readable to wait for data without a buffer"
            .to_string()
    })
}

fn check_vectored(bufs: &Buffers, measure: impl Fn(&Buf) -> usize) -> Option<String> {
    let Buffers::Many(v) = bufs else { return None };
    if v.is_empty() {
        return Some("a vectored operation needs at least one buffer".into());
    }
    if v.len() > MAX_IOVECS {
        return Some(format!(
            "{} buffers exceed the limit of {MAX_IOVECS} per vectored operation",
            v.len()
        ));
    }
    let total = v.iter().map(&measure).fold(0usize, usize::saturating_add);
    check_len("vectored transfer", total)
}

impl<C: Send + 'static> Handle<C> {
    /// Receives into `buf`'s spare capacity. The packet's result is the
    /// number of bytes received; `Ok(0)` only when the peer closed
    /// gracefully. A reset by the peer arrives as `ECONNRESET` (kind
    /// `ConnectionReset`).
    ///
    /// Refused at once (no packet) with `InvalidInput` when the buffer has
    /// no spare capacity — a receive into nothing would complete with 0
    /// bytes, which reads as the peer closing. To wait for data without
    /// lending a buffer (the zero-byte receive of IOCP servers), use
    /// [`wait_readable`](Self::wait_readable).
    pub fn recv(&self, buf: Buf, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(OpKind::Recv, 0, Buffers::One(buf), context, |b| {
            check_recv_room(spare(b)).or_else(|| check_len("receive", spare(b)))
        })
    }

    /// Receives into a buffer of `pool`, taken only once data is there: the
    /// packet's result is the byte count (at most
    /// [`BufPool::buf_size`]) and [`Packet::take_pooled`](crate::Packet::take_pooled)
    /// hands over the buffer, which returns to the pool when dropped.
    /// `Ok(0)` only when the peer closed (no buffer then). When data arrives
    /// and the pool has no free buffer, the packet carries the
    /// [`is_pool_exhausted`](crate::is_pool_exhausted) error and the data
    /// stays in the socket. See [`buf_pool`](crate::buf_pool) for the
    /// behaviour on both backends.
    ///
    /// Refused at once (`InvalidInput`) when `pool` was made for another
    /// port.
    pub fn recv_pooled(&self, pool: &BufPool, context: C) -> Result<Token, Rejected<C>> {
        let p = match pool.op_for(self.port_id()) {
            Ok(p) => p,
            Err(e) => return Err(Rejected::new(e, context, Buffers::None)),
        };
        let mut rec = self.new_record(OpKind::RecvPooled, Buffers::None, context);
        rec.io.pool = Some(p);
        self.issue_record(rec)
    }

    /// Completes with `Ok(0)` once the socket (or pipe) has data to read, or
    /// the peer closed, without reading anything: the zero-byte receive of
    /// IOCP servers, which keeps no buffer lent to idle connections.
    /// Receives issued after it still come in order.
    ///
    /// ```
    /// use completion_port::{Buf, PacketKind, Port};
    /// # fn main() -> std::io::Result<()> {
    /// let port = Port::<()>::new(0)?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let a = port.associate(a, 0)?;
    /// a.wait_readable(())?;
    /// std::io::Write::write_all(&mut b, b"ping")?;
    /// let p = port.get(None)?;
    /// assert_eq!((p.kind(), p.bytes()), (PacketKind::Readable, 0));
    /// // Now lend a buffer: the data is there.
    /// a.recv(Buf::with_capacity(16), ())?;
    /// assert_eq!(port.get(None)?.bytes(), 4);
    /// # Ok(()) }
    /// ```
    pub fn wait_readable(&self, context: C) -> Result<Token, Rejected<C>> {
        self.issue(OpKind::Readable, 0, Buffers::None, context)
    }

    /// Sends `buf`'s filled bytes; the packet's result is the number of
    /// bytes the stack accepted (it may be less than `buf.len()`). Never
    /// raises `SIGPIPE`: a closed peer gives `EPIPE`.
    pub fn send(&self, buf: Buf, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(OpKind::Send, 0, Buffers::One(buf), context, |b| {
            check_len("send", filled(b))
        })
    }

    /// Sends all of `buf`'s filled bytes: the packet comes once every byte
    /// was accepted by the stack (`Ok(buf.len())`), or with the error that
    /// stopped it (some bytes may have been sent then). A short send is
    /// finished inside the port, so the caller never resends a rest — the
    /// same semantics a stream `WSASend` has on Windows.
    ///
    /// Sends on one stream socket go out in the order they were issued,
    /// whole ones included: a `send_all` still finishing holds the sends
    /// issued after it.
    ///
    /// ```
    /// use completion_port::{Buf, Port};
    /// use std::io::Read;
    /// # fn main() -> std::io::Result<()> {
    /// let port = Port::<()>::new(0)?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let a = port.associate(a, 0)?;
    /// // Far more than a socket buffer holds: the port sends the rest as
    /// // the reader makes room.
    /// a.send_all(Buf::from(vec![7u8; 4 << 20]), ())?;
    /// let reader = std::thread::spawn(move || {
    ///     let mut all = Vec::new();
    ///     b.read_to_end(&mut all).map(|_| all.len())
    /// });
    /// let p = port.get(None)?;
    /// assert_eq!(p.bytes(), 4 << 20);
    /// drop((p, a)); // the last handle: the socket closes, the reader sees EOF
    /// assert_eq!(reader.join().unwrap()?, 4 << 20);
    /// # Ok(()) }
    /// ```
    pub fn send_all(&self, buf: Buf, context: C) -> Result<Token, Rejected<C>> {
        self.issue_whole(OpKind::Send, 0, Buffers::One(buf), context, |b| {
            check_len("send", filled(b))
        })
    }

    /// Like [`send_all`](Self::send_all) for the filled bytes of several
    /// buffers, in order (1 to [`MAX_IOVECS`] buffers).
    pub fn send_all_vectored(&self, bufs: Vec<Buf>, context: C) -> Result<Token, Rejected<C>> {
        self.issue_whole(OpKind::SendVectored, 0, Buffers::Many(bufs), context, |b| {
            check_vectored(b, Buf::len)
        })
    }

    /// Receives into the spare capacity of several buffers, filled in order
    /// (scatter). Get them back with
    /// [`Packet::take_bufs`](crate::Packet::take_bufs). Needs 1 to
    /// [`MAX_IOVECS`] buffers.
    pub fn recv_vectored(&self, bufs: Vec<Buf>, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(OpKind::RecvVectored, 0, Buffers::Many(bufs), context, |b| {
            check_vectored(b, Buf::spare_capacity).or_else(|| {
                let Buffers::Many(v) = b else { return None };
                check_recv_room(v.iter().map(Buf::spare_capacity).sum())
            })
        })
    }

    /// Sends the filled bytes of several buffers in order (gather). Needs 1
    /// to [`MAX_IOVECS`] buffers.
    pub fn send_vectored(&self, bufs: Vec<Buf>, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(OpKind::SendVectored, 0, Buffers::Many(bufs), context, |b| {
            check_vectored(b, Buf::len)
        })
    }

    /// Accepts one connection on this listening socket. The packet comes to
    /// this handle's port with this handle's key (as `AcceptEx` does) and
    /// yields the new socket, not associated with any port, through
    /// [`Packet::take_accepted`](crate::Packet::take_accepted). The new
    /// socket is close-on-exec.
    pub fn accept(&self, context: C) -> Result<Token, Rejected<C>> {
        let mut rec = self.new_record(OpKind::Accept, Buffers::None, context);
        rec.io.extra().addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        self.issue_record(rec)
    }

    /// Connects this socket to `addr`; the packet's result is `Ok(0)` once
    /// connected, or the connection error (`ECONNREFUSED`, …).
    pub fn connect(&self, addr: impl Into<SockAddr>, context: C) -> Result<Token, Rejected<C>> {
        let addr: SockAddr = addr.into();
        let len = addr.len() as usize;
        if len > std::mem::size_of::<libc::sockaddr_storage>() {
            return Err(Rejected::new(
                invalid_input("socket address too long"),
                context,
                Buffers::None,
            ));
        }
        let mut rec = self.new_record(OpKind::Connect, Buffers::None, context);
        let ex = rec.io.extra();
        // SAFETY: `addr` holds `len` initialised bytes of a sockaddr, and
        // `ex.addr` has room for them (checked above); distinct objects.
        unsafe {
            std::ptr::copy_nonoverlapping(
                addr.as_ptr().cast::<u8>(),
                (&mut ex.addr as *mut libc::sockaddr_storage).cast::<u8>(),
                len,
            )
        };
        ex.addr_len = addr.len();
        self.issue_record(rec)
    }
}
