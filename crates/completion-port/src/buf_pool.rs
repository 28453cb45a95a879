//! [`BufPool`]: receives that take no buffer — the port picks one from a
//! pool when data arrives, and the packet hands it over as a [`PooledBuf`],
//! which goes back to the pool when dropped.
//!
//! # Why
//! A [`Handle::recv`](crate::Handle::recv) owns its [`Buf`](crate::Buf)
//! until its packet is dequeued, so a server with 10 000 idle connections,
//! each with a receive pending, lends out 10 000 buffers.
//! [`Handle::recv_pooled`](crate::Handle::recv_pooled) lends none: a buffer is taken from the pool only
//! when the socket has data, so the memory follows the data in flight, not
//! the connections (`cport-bench scale --pooled` measures it;
//! BENCHMARKS.md, "Pooled receives").
//!
//! ```
//! use completion_port::Port;
//! use std::io::Write;
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<u32>::new(0)?;
//! let pool = port.buf_pool(64, 4096)?; // 64 buffers of 4 KiB, shared by every socket
//! let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
//! let a = port.associate(a, 0)?;
//! a.recv_pooled(&pool, 1)?; // no buffer is lent while it waits
//! b.write_all(b"hello")?;
//! let mut p = port.get(None)?;
//! let buf = p.take_pooled().expect("data came");
//! assert_eq!((p.result?, &buf[..]), (5, &b"hello"[..]));
//! assert_eq!(pool.in_use(), 1);
//! drop(buf); // back to the pool, from any thread
//! assert_eq!(pool.in_use(), 0);
//! # Ok(()) }
//! ```
//!
//! # Behaviour (both backends)
//! - A pooled receive waits for data (or end of stream, or an error)
//!   *without* a buffer; then it takes one free buffer and receives at most
//!   [`BufPool::buf_size`] bytes into it. Its packet's result is the byte
//!   count, and [`Packet::take_pooled`](crate::Packet::take_pooled) (or
//!   [`PacketParts::pooled`](crate::PacketParts::pooled)) hands over the
//!   buffer, which derefs to exactly the received bytes. `Ok(0)` (the peer
//!   closed) and errors carry no buffer.
//! - **Pool empty when data arrives**: the receive ends with an error
//!   ([`is_pool_exhausted`]; kind `OutOfMemory`, the message names the
//!   operation and the pool; `ENOBUFS` in the kernel's terms). It does not
//!   wait for a buffer: the data stays in the socket, so issue the receive
//!   again once buffers came back. Why not wait: io_uring fails a
//!   buffer-select receive this way by itself, and a wait would need a
//!   user-space queue of parked receives re-armed on every buffer return —
//!   a cost on the path the pool exists to make cheap — and could leave a
//!   server stuck when every buffer is held by packets nobody dequeues.
//!   A failing receive tells the caller to drop buffers sooner or size
//!   the pool larger.
//! - **Sizing, and what to do when it runs out**: buffers are out from
//!   the moment a receive takes one until its `PooledBuf` is dropped, so
//!   under load a pool needs about as many as the receives that complete
//!   between a worker's dequeues, plus those the caller keeps. A receive
//!   that found the pool empty and is issued again at once fails again
//!   while the buffers are out, and spins: at 10 000 busy connections and
//!   256 buffers, `cport-bench pooled` counted 7.4 M such retries and a
//!   fifth of the throughput of per-connection buffers. Instead park the
//!   connection and issue one parked receive each time a buffer is dropped
//!   (the cookbook's recipe): the same pool then ran at the CPU per request
//!   of per-connection buffers with 58 % of their memory per connection
//!   (BENCHMARKS.md, "Pooled receives").
//! - A [`PooledBuf`] goes back to the pool when dropped, from any thread,
//!   and so does the buffer of a packet dropped without taking it.
//!   Cancel, time-out, handle close and port close end pooled receives as
//!   any others (one packet each); a buffer the kernel had already taken
//!   for a receive that then failed goes back at once.
//! - A pool belongs to the port it was made for: a receive on a handle of
//!   another port is refused (`InvalidInput`). The pool's memory (count ×
//!   size bytes, allocated at once) is freed when the `BufPool`, every
//!   clone, every `PooledBuf` and every receive still in flight are gone;
//!   it may outlive the port.
//!
//! # Backends
//! - **io_uring**: a provided buffer ring (`IORING_REGISTER_PBUF_RING`,
//!   Linux 5.19; `driver/uring/buf_ring.rs`) with a buffer group per pool,
//!   and `RECV` with `BUFFER_SELECT` and `RECVSEND_POLL_FIRST`: the kernel
//!   picks the buffer when data is there and names it in the completion.
//!   The pool keeps the port's ring open until the group is unregistered
//!   (when the pool's memory goes), so the ring's fd may outlive a closed
//!   port by that long.
//! - **epoll**: a free list in user space; when the socket is readable the
//!   backend takes a free buffer and `recv`s into it (nothing free: the
//!   receive fails as above if data is there, and waits if not).
//!
//! # Invariants
//! - Each buffer id is in exactly one place: free (in the ring or the
//!   list), taken by one receive in flight (io_uring: chosen by the kernel,
//!   not yet reported), or delivered — held by the op's record
//!   (`PoolOp`, `driver/pool.rs`) until the packet hands it over, then by one
//!   [`PooledBuf`]. The backend turns a taken buffer into a delivered one
//!   only with a positive byte count (`PoolOp::deliver`); with any other
//!   result it frees it at once, so an op reported `ECANCELED` and
//!   resubmitted (a thread's exit: `Engine::resubmit`) holds no buffer,
//!   and nothing is freed twice. Dropping a record or a `PooledBuf` frees
//!   what it holds: no path loses a buffer.
//! - A delivered buffer's bytes are reachable only through its one holder,
//!   so `PooledBuf` may give `&mut [u8]`.
//! - The memory lives in `PoolShared`, which every clone, every op and
//!   every `PooledBuf` keep alive by `Arc`; the io_uring registration is
//!   undone before the memory is freed (`buf_ring.rs`).

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::driver::{PoolOp, PoolShared};
use crate::error::invalid_input;
use crate::Port;

pub use crate::driver::PooledBuf;
pub use crate::error::is_pool_exhausted;

/// Most buffers one pool holds (the kernel's limit on a buffer ring).
pub const MAX_POOL_BUFFERS: usize = 1 << 15;

/// Largest buffer of a pool (the kernel's per-operation length limit).
pub const MAX_POOL_BUF_SIZE: usize = 0x7fff_f000;

/// A pool of fixed-size receive buffers made for one port, shared by any
/// number of its sockets ([module docs](self)). Cheap to clone.
#[derive(Clone)]
pub struct BufPool {
    shared: Arc<PoolShared>,
}

impl BufPool {
    /// A pool of `count` buffers (1 to [`MAX_POOL_BUFFERS`]) of `size` bytes
    /// each (1 to [`MAX_POOL_BUF_SIZE`]) for `port`'s handles, allocated at
    /// once. Same as [`Port::buf_pool`].
    ///
    /// Fails with `InvalidInput` for sizes out of range, with the port-closed
    /// error on a closed port (and the fork error on a port inherited
    /// across `fork`), and on io_uring when the kernel refuses the buffer
    /// ring (older than 5.19).
    pub fn new<C: Send + 'static>(
        port: &Port<C>,
        count: usize,
        size: usize,
    ) -> io::Result<BufPool> {
        if !(1..=MAX_POOL_BUFFERS).contains(&count) {
            return Err(invalid_input(format!(
                "buf_pool: {count} buffers is out of range (1 to {MAX_POOL_BUFFERS})"
            )));
        }
        if !(1..=MAX_POOL_BUF_SIZE).contains(&size) {
            return Err(invalid_input(format!(
                "buf_pool: a buffer size of {size} bytes is out of range (1 to {MAX_POOL_BUF_SIZE})"
            )));
        }
        let core = port.core();
        if let Some(e) = core.fork_refusal() {
            // The ring is shared with the parent: register nothing in it.
            return Err(e);
        }
        if core.is_closed() {
            return Err(crate::error::port_closed());
        }
        Ok(BufPool {
            shared: PoolShared::new(core.id(), count, size, core.driver.uring())?,
        })
    }

    /// How many buffers the pool holds.
    pub fn count(&self) -> usize {
        self.shared.count()
    }

    /// The size of each buffer: the most one pooled receive takes.
    pub fn buf_size(&self) -> usize {
        self.shared.size()
    }

    /// Buffers handed to packets and not yet back (held by a packet not yet
    /// dropped, or by a [`PooledBuf`]).
    pub fn in_use(&self) -> usize {
        self.shared.in_use()
    }

    /// The state an op of this pool carries, for a receive on a handle of
    /// port `port` (refused for another port's pool).
    pub(crate) fn op_for(&self, port: u64) -> Result<PoolOp, io::Error> {
        if self.shared.port() != port {
            return Err(invalid_input(
                "recv_pooled: the buffer pool was made for another port (a pool serves the \
                 handles of the port it was made with)",
            ));
        }
        Ok(self.shared.op())
    }
}

impl fmt::Debug for BufPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufPool")
            .field("count", &self.count())
            .field("buf_size", &self.buf_size())
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl<C: Send + 'static> Port<C> {
    /// A pool of `count` buffers of `size` bytes for this port's pooled
    /// receives ([`Handle::recv_pooled`](crate::Handle::recv_pooled)); see [`BufPool::new`].
    pub fn buf_pool(&self, count: usize, size: usize) -> io::Result<BufPool> {
        BufPool::new(self, count, size)
    }
}
