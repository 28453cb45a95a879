//! [`Packet`]: one completion, as dequeued from a port.
//!
//! Packets are born in two places: [`Port::post`](crate::Port::post)
//! ([`Packet::posted`]) and the completion of an operation
//! ([`Packet::completed`], called by the port when a backend reports it).
//! They wait in the port's FIFO queue (`core/mod.rs`) until a `get` takes
//! them.

use std::fmt;
use std::io;

use super::record::{Notify, RecordBox};
use super::token::Token;
use crate::buf::Buf;
use crate::driver::OpKind;

/// What a packet reports: which call produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketKind {
    /// A packet queued by [`Port::post`](crate::Port::post).
    Posted,
    /// [`Handle::nop`](crate::Handle::nop).
    Nop,
    /// `read_at` / `read`.
    Read,
    /// `write_at` / `write`.
    Write,
    /// `recv` / `recv_vectored` / `recv_pooled`.
    Recv,
    /// `wait_readable`.
    Readable,
    /// A timer packet ([`Port::post_after`](crate::Port::post_after)).
    Timer,
    /// `fsync` / `fdatasync`.
    Fsync,
    /// `fallocate`.
    Fallocate,
    /// `stat`: see [`Packet::stat`].
    Stat,
    /// `shutdown`.
    Shutdown,
    /// [`Port::open`](crate::Port::open): see [`Packet::take_opened`].
    Open,
    /// `send_file`.
    SendFile,
    /// `send` / `send_vectored`.
    Send,
    /// `accept`: see [`Packet::take_accepted`].
    Accept,
    /// `connect`.
    Connect,
}

impl PacketKind {
    fn of(kind: OpKind) -> PacketKind {
        match kind {
            OpKind::Nop => PacketKind::Nop,
            OpKind::Read => PacketKind::Read,
            OpKind::Write => PacketKind::Write,
            OpKind::Recv | OpKind::RecvVectored | OpKind::RecvPooled => PacketKind::Recv,
            OpKind::Readable => PacketKind::Readable,
            OpKind::Timer => PacketKind::Timer,
            OpKind::Fsync { .. } => PacketKind::Fsync,
            OpKind::Fallocate { .. } => PacketKind::Fallocate,
            OpKind::Stat => PacketKind::Stat,
            OpKind::Shutdown { .. } => PacketKind::Shutdown,
            OpKind::Open { .. } => PacketKind::Open,
            OpKind::SendFile => PacketKind::SendFile,
            OpKind::Send | OpKind::SendVectored => PacketKind::Send,
            OpKind::Accept => PacketKind::Accept,
            OpKind::Connect => PacketKind::Connect,
        }
    }
}

/// A socket accepted by [`Handle::accept`](crate::Handle::accept): not yet
/// associated with any port.
#[derive(Debug)]
pub struct Accepted {
    /// The new connection.
    pub socket: socket2::Socket,
    /// The peer's address.
    pub peer: socket2::SockAddr,
}

/// A completion packet: the key of the handle (or of the post), the
/// result, the context given when the operation was issued, and the
/// operation's buffers, handed back.
///
/// `key`, `result` and `context` are public fields; the buffers and the
/// accepted socket are taken out with [`take_buf`](Self::take_buf),
/// [`take_bufs`](Self::take_bufs) and [`take_accepted`](Self::take_accepted)
/// (take them before moving `context` out of the packet).
pub struct Packet<C> {
    /// The completion key of the handle the operation was issued on, or the
    /// key given to `post`.
    pub key: usize,
    /// Bytes transferred, or the OS error the operation failed with
    /// (`raw_os_error()` holds the errno). For posts, the `bytes` given.
    pub result: io::Result<usize>,
    /// The per-operation context (the "OVERLAPPED"), or the one given to
    /// `post`.
    pub context: C,
    kind: PacketKind,
    /// `None` for posted packets; for operations the record, kept for its
    /// buffers (its own context slot is empty: it moved to `context`).
    op: Option<RecordBox<C>>,
}

impl<C> Packet<C> {
    pub(crate) fn posted(key: usize, bytes: usize, context: C) -> Self {
        Packet {
            key,
            result: Ok(bytes),
            context,
            kind: PacketKind::Posted,
            op: None,
        }
    }

    /// Builds the packet of an operation whose record came back from the
    /// backend with the raw result `res` (already out of its fd's in-flight
    /// registry: `Core::complete`).
    pub(crate) fn completed(mut rec: RecordBox<C>, res: i32) -> Self {
        let result = rec.io.complete(res);
        let context = rec
            .ctx
            .take()
            .expect("an op record holds its context until completion");
        Packet {
            key: rec.key,
            result,
            context,
            kind: PacketKind::of(rec.io.kind),
            op: Some(rec),
        }
    }

    /// Where this completion goes (a posted packet always to the queue).
    pub(crate) fn notify(&self) -> Notify {
        self.op.as_ref().map_or(Notify::Packet, |r| r.notify)
    }

    /// Which call produced this packet.
    pub fn kind(&self) -> PacketKind {
        self.kind
    }

    /// The token the operation's issue call returned (`None` for posts).
    pub fn token(&self) -> Option<Token> {
        self.op.as_ref().map(|r| r.token)
    }

    /// Bytes transferred, or 0 for a failed operation.
    pub fn bytes(&self) -> usize {
        *self.result.as_ref().unwrap_or(&0)
    }

    /// The buffer of a single-buffer operation (`read_at`, `recv`, …): for
    /// receives, its length grew by the bytes received. `None` for posts,
    /// vectored ops, or once taken.
    pub fn take_buf(&mut self) -> Option<Buf> {
        self.op.as_mut()?.io.bufs.take_one()
    }

    /// The buffers of a vectored operation, in the order given (empty for
    /// other packets, or once taken).
    pub fn take_bufs(&mut self) -> Vec<Buf> {
        match self.op.as_mut() {
            Some(r) => r.io.bufs.take_many(),
            None => Vec::new(),
        }
    }

    /// The buffer a [`recv_pooled`](crate::Handle::recv_pooled) received
    /// into (once): `None` for other packets, or when it received nothing
    /// (end of stream, an error). Dropping the packet without taking it
    /// returns the buffer to its pool.
    pub fn take_pooled(&mut self) -> Option<crate::driver::PooledBuf> {
        self.op.as_mut()?.io.pool.as_mut()?.take()
    }

    /// The metadata a `stat` read (`None` for other packets, or when it
    /// failed).
    pub fn stat(&self) -> Option<super::FileStat> {
        let rec = self.op.as_ref()?;
        if rec.io.kind != OpKind::Stat || self.result.is_err() {
            return None;
        }
        let st = rec.io.extra.as_ref()?.stat.as_deref()?;
        Some(super::FileStat::from_statx(st))
    }

    /// The file a successful [`Port::open`](crate::Port::open) opened
    /// (once), not yet associated with any port.
    pub fn take_opened(&mut self) -> Option<std::fs::File> {
        let rec = self.op.as_mut()?;
        if !matches!(rec.io.kind, OpKind::Open { .. }) {
            return None;
        }
        rec.io.new_fd.take().map(std::fs::File::from)
    }

    /// The connection of a successful `accept` (once).
    pub fn take_accepted(&mut self) -> Option<Accepted> {
        let io = &mut self.op.as_mut()?.io;
        if io.kind != OpKind::Accept {
            return None;
        }
        let fd = io.new_fd.take()?;
        let io = io.extra();
        // SAFETY: the kernel wrote a sockaddr of `addr_len` bytes into `addr`
        // on a successful accept; the length is clamped to the storage size.
        let peer = unsafe {
            socket2::SockAddr::new(
                io.addr,
                io.addr_len
                    .min(std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t),
            )
        };
        Some(Accepted {
            socket: socket2::Socket::from(fd),
            peer,
        })
    }

    /// Takes the packet apart: its key, kind, token, result and context,
    /// with every buffer it hands back (one for a single-buffer operation,
    /// in order for a vectored one) and what an accept or an open brought —
    /// so the context can be moved out without taking the buffers first.
    ///
    /// ```
    /// use completion_port::{Buf, Port};
    /// # fn main() -> std::io::Result<()> {
    /// struct Conn { id: u32 }
    /// let port = Port::<Conn>::new(0)?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let a = port.associate(a, 0)?;
    /// a.recv(Buf::with_capacity(16), Conn { id: 7 })?;
    /// std::io::Write::write_all(&mut b, b"hi")?;
    /// let parts = port.get(None)?.into_parts();
    /// let conn: Conn = parts.context; // moved out
    /// assert_eq!((conn.id, &parts.bufs[0][..]), (7, &b"hi"[..]));
    /// # Ok(()) }
    /// ```
    pub fn into_parts(mut self) -> PacketParts<C> {
        let mut bufs = self.take_bufs();
        if let Some(b) = self.take_buf() {
            bufs.push(b);
        }
        let accepted = self.take_accepted();
        let opened = self.take_opened();
        let pooled = self.take_pooled();
        PacketParts {
            key: self.key,
            kind: self.kind,
            token: self.token(),
            result: self.result,
            context: self.context,
            bufs,
            accepted,
            opened,
            pooled,
        }
    }
}

/// A [`Packet`] taken apart ([`Packet::into_parts`]).
#[derive(Debug)]
#[non_exhaustive]
pub struct PacketParts<C> {
    /// The completion key.
    pub key: usize,
    /// Which call produced it.
    pub kind: PacketKind,
    /// The operation's token (`None` for posts).
    pub token: Option<Token>,
    /// Bytes transferred, or the error.
    pub result: io::Result<usize>,
    /// The context.
    pub context: C,
    /// Every buffer the operation owned, in order.
    pub bufs: Vec<Buf>,
    /// The connection of a successful accept.
    pub accepted: Option<Accepted>,
    /// The file of a successful open.
    pub opened: Option<std::fs::File>,
    /// The buffer of a pooled receive that received bytes.
    pub pooled: Option<crate::driver::PooledBuf>,
}

impl<C: fmt::Debug> fmt::Debug for Packet<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Packet")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("result", &self.result)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}
