//! # completion-port
//!
//! The Windows I/O completion port model on Linux: one queue of completion
//! packets shared by a pool of threads, over io_uring — or epoll where
//! io_uring is unavailable ([`Backend`]).
//!
//! The four steps of the model, in Rust:
//! 1. **Create a port**: [`Port::new`] or [`Port::builder`], with a
//!    *concurrency value*: how many threads may run completions at once.
//! 2. **Associate** files and sockets with it: [`Port::associate`] takes
//!    ownership of the fd and returns a [`Handle`]; its *completion key*
//!    comes back in every packet. [`Port::open`] opens a file as an
//!    operation of its own.
//! 3. **Issue overlapped operations** on the handle: reads and writes
//!    ([`Handle::read_at`], [`Handle::write_at`], [`Handle::recv`],
//!    [`Handle::send`], their vectored forms, and the whole forms
//!    [`Handle::send_all`] and [`Handle::write_all_at`]),
//!    [`Handle::accept`], [`Handle::connect`], lifecycle operations
//!    ([`Handle::fsync`], [`Handle::stat`], [`Handle::shutdown`], …) and
//!    [`Handle::send_file`]. Each one owns its buffers ([`Buf`]) and a
//!    per-operation context `C` (the typed "OVERLAPPED") until its packet is
//!    dequeued; borrowed buffers and non-`'static` contexts do not compile.
//! 4. **Dequeue** packets from any number of threads: [`Port::get`],
//!    [`Port::get_many`]. Each [`Packet`] carries the key, the result
//!    (`io::Result<usize>`), the context and the buffers.
//!
//! [`Port::post`] queues packets of your own (work items, stop signals),
//! [`Port::post_after`] does so after a delay (timers), and
//! [`Handle::with_timeout`] bounds an operation's time. [`Handle::cancel`],
//! [`Handle::cancel_all`] and [`Handle::close`] (or dropping the last clone
//! of a handle) end operations early; each still yields its one packet.
//!
//! ```
//! use completion_port::{Buf, Port};
//! use std::io::Write;
//! use std::os::unix::net::UnixStream;
//! use std::time::Duration;
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<&'static str>::new(0)?;        // 1. create
//! let (ours, mut peer) = UnixStream::pair()?;
//! let conn = port.associate(ours, 7)?;              // 2. associate, key 7
//! conn.recv(Buf::with_capacity(64), "first read")?; // 3. issue
//! peer.write_all(b"hello")?;
//! let mut packet = port.get(Some(Duration::from_secs(5)))?; // 4. dequeue
//! let buf = packet.take_buf().unwrap(); // the buffer comes back
//! assert_eq!((packet.key, packet.context, packet.result?), (7, "first read", 5));
//! assert_eq!(&buf[..], b"hello");
//! # Ok(()) }
//! ```
//!
//! Where to read on:
//! - [`port`]: the behaviour of a port — where a packet goes, the
//!   concurrency value, blocked-thread detection, when an operation reaches
//!   the kernel, and the differences from Windows.
//! - [`op`]: who owns buffers and contexts, and an operation's life
//!   (cancel, time-out, close).
//! - [`buf`]: the buffer type and its windows.
//! - [`cookbook`]: the first week's questions, answered with code.
//!
//! Citations of the form *windows-semantics §S.N* refer to
//! `docs/windows-semantics.md` in the repository: what Windows does, point
//! by point, in our words.

#![deny(unsafe_op_in_unsafe_fn)]
// Under loom the real engines and the monitor thread are compiled but not
// used: the models run the core over `driver/model.rs`.
#![cfg_attr(loom, allow(dead_code, unused_imports))]
#![warn(missing_docs)]

pub mod buf;
pub mod buf_pool;
pub mod cookbook;
mod core;
mod driver;
mod error;
mod handle;
pub mod op;
pub mod port;
mod sync;

pub use buf::Buf;
pub use buf_pool::{is_pool_exhausted, BufPool, PooledBuf};
pub use driver::Backend;
pub use error::{is_aborted, is_port_closed, is_port_forked, GetError, Rejected};
pub use handle::{AssociateError, Handle};
pub use op::net::MAX_IOVECS;
pub use op::{Accepted, FileStat, OpenOptions, PacketKind, Token};
pub use port::{
    BlockingDetection, BlockingGuard, Delivery, Packet, PacketParts, Port, PortBuilder, PortStats,
};

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
