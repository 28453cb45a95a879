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
//!    comes back in every packet.
//! 3. **Issue overlapped operations** on the handle: [`Handle::read_at`],
//!    [`Handle::write_at`], [`Handle::recv`], [`Handle::send`], their
//!    vectored forms, [`Handle::accept`], [`Handle::connect`]. Each one owns
//!    its buffers ([`Buf`]) and a per-operation context `C` (the typed
//!    "OVERLAPPED") until its packet is dequeued; borrowed buffers and
//!    non-`'static` contexts do not compile.
//! 4. **Dequeue** packets from any number of threads: [`Port::get`],
//!    [`Port::get_many`]. Each [`Packet`] carries the key, the result
//!    (`io::Result<usize>`), the context and the buffers.
//!
//! [`Port::post`] queues packets of your own (work items, stop signals).
//! [`Handle::cancel`], [`Handle::cancel_all`] and [`Handle::close`] end
//! operations early (each still yields its one packet);
//! [`Handle::without_packets`] and [`Handle::set_skip_packet_on_success`]
//! trade packets for results taken by token ([`Port::take_result`],
//! [`Port::wait_result`]).
//!
//! ```no_run
//! use completion_port::{Buf, Port};
//! use std::net::TcpListener;
//!
//! enum Op { Accept, Recv(u64), Send(u64) }
//!
//! # fn main() -> std::io::Result<()> {
//! let port = Port::<Op>::new(0)?;
//! let listener = port.associate(TcpListener::bind("127.0.0.1:0")?, 0)?;
//! listener.accept(Op::Accept)?;
//! loop {
//!     let mut packet = port.get(None)?;
//!     match packet.context {
//!         Op::Accept => {
//!             let conn = packet.take_accepted().expect("accepted socket");
//!             let id = 1; // your connection table
//!             let conn = port.associate(conn.socket, id)?;
//!             conn.recv(Buf::with_capacity(4096), Op::Recv(1))?;
//!             listener.accept(Op::Accept)?;
//!         }
//!         Op::Recv(_) | Op::Send(_) => { /* … */ }
//!     }
//! }
//! # }
//! ```
//!
//! See [`port`] for the concurrency model and the documented differences
//! from Windows, and [`buf`] for the buffer rules.

#![deny(unsafe_op_in_unsafe_fn)]
// Under loom the real engines and the monitor thread are compiled but not
// used: the models run the core over `driver/model.rs`.
#![cfg_attr(loom, allow(dead_code, unused_imports))]
#![warn(missing_docs)]

pub mod buf;
mod core;
mod driver;
mod error;
mod handle;
pub mod op;
pub mod port;
mod sync;

pub use buf::Buf;
pub use driver::Backend;
pub use error::{is_aborted, is_port_closed, is_port_forked, GetError, Rejected};
pub use handle::{AssociateError, Handle};
pub use op::net::MAX_IOVECS;
pub use op::{Accepted, FileStat, OpenOptions, PacketKind, Token};
pub use port::{BlockingDetection, BlockingGuard, Delivery, Packet, Port, PortBuilder, PortStats};

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
