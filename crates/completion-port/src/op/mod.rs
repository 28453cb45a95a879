//! Overlapped operations: the calls that start one on a
//! [`Handle`](crate::Handle), and what its packet hands back. This page is
//! the home of the ownership rules and of an operation's life: issue,
//! cancel, close.
//!
//! # Buffers and contexts: who owns what
//! An operation owns its [`Buf`](crate::Buf)s and its context from the
//! call until its packet is dequeued; the packet hands them back
//! ([`Packet::take_buf`](crate::Packet::take_buf),
//! [`Packet::context`](crate::Packet::context),
//! [`Packet::into_parts`](crate::Packet::into_parts)), and a refused call
//! hands them back in its [`Rejected`](crate::Rejected). So the two
//! classic IOCP bugs — an `OVERLAPPED` on the stack, a buffer freed while
//! the kernel still writes into it — do not compile. Operations take a
//! `Buf` by value, not a borrowed slice:
//!
//! ```compile_fail,E0308
//! use completion_port::Handle;
//!
//! fn read_into_stack(h: &Handle<u32>) {
//!     let mut on_stack = [0u8; 512];
//!     h.recv(&mut on_stack[..], 1).unwrap(); // error: expected `Buf`, found `&mut [u8]`
//! }
//! ```
//!
//! and the context type must be `Send + 'static`, so it cannot borrow a
//! local:
//!
//! ```compile_fail,E0597
//! use completion_port::Port;
//!
//! let port = Port::<&u64>::new(0).unwrap();
//! let overlapped = 0u64; // C's `OVERLAPPED ov;` on the stack
//! port.post(1, 0, &overlapped).unwrap(); // error: `overlapped` does not live long enough
//! ```
//!
//! Per-connection state therefore lives on the heap and travels as the
//! context (a `Box<Connection>`, an `Arc`, a [`Handle`](crate::Handle)),
//! like a C++ `Connection` that derives from `OVERLAPPED`.
//!
//! # Life of an operation
//! - **Issued**: the call returns a [`Token`], or refuses at once with a
//!   [`Rejected`](crate::Rejected) that hands back the buffers and context
//!   (closed port or handle, bad arguments: `docs/bad-input.md` lists every
//!   refusal) — then no packet will come.
//! - **In flight**: the kernel owns the buffers. Exactly one packet will
//!   come, whatever happens next.
//! - **Cancelled** ([`Handle::cancel`](crate::Handle::cancel),
//!   [`Handle::cancel_all`](crate::Handle::cancel_all), from any thread):
//!   the packet still comes, with `ECANCELED` ([`is_aborted`](crate::is_aborted)),
//!   or with the real result if the operation finished first. Nothing to
//!   cancel is [`NotFound`](std::io::ErrorKind::NotFound).
//! - **Timed out** ([`Handle::with_timeout`](crate::Handle::with_timeout)):
//!   cancelled by the port when the time is up; the packet carries
//!   [`TimedOut`](std::io::ErrorKind::TimedOut), or the real result if the
//!   operation finished first.
//! - **Handle closed** ([`Handle::close`](crate::Handle::close), or its
//!   last clone dropped): its operations are cancelled as above and new
//!   ones refused with `EBADF`; the fd itself is closed only once the last
//!   packet of its operations is gone, so a new file can never receive an
//!   old operation's completion or I/O.
//! - **Port closed** ([`Port::close`](crate::Port::close), or its last
//!   clone dropped): waiters get [`GetError::Closed`](crate::GetError::Closed),
//!   queued packets are dropped, operations in flight are cancelled and
//!   their buffers and contexts dropped, once each, before `close`
//!   returns; handles stay usable for blocking I/O.
//! - **Without a packet** (windows-semantics §3.13–3.14): operations issued
//!   through [`Handle::without_packets`](crate::Handle::without_packets)
//!   (the `hEvent` low-bit analogue) never queue a packet; their result is
//!   taken by token with [`Port::take_result`](crate::Port::take_result)
//!   or waited for with [`Port::wait_result`](crate::Port::wait_result)
//!   (`GetOverlappedResult`), which drives the backend itself when no
//!   worker does. With
//!   [`Handle::set_skip_packet_on_success`](crate::Handle::set_skip_packet_on_success)
//!   (`FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`), an operation that succeeds
//!   during its issue call queues no packet and `take_result` returns it
//!   right after the call: on the epoll backend when the first
//!   non-blocking attempt succeeds, on io_uring never (completions come
//!   after the submission returns), so there every operation yields a
//!   packet.
//! - **Thread exit**: a thread counted as running is counted out.
//!   Operations it issued keep going (io_uring cancels a thread's requests
//!   when it exits; the port resubmits those itself).
//!
//! # Where it happens in the code
//! 1. A [`Handle`](crate::Handle) method (`read_at`, `recv`, …; see
//!    [`file`](mod@file), [`net`] and [`lifecycle`]) validates its
//!    arguments and allocates an operation record (`core/record.rs`): the
//!    driver's description of the I/O (`driver/op.rs`: fd, buffers,
//!    offset), then the core's part (the fd's owner, the key, the
//!    [`Token`], where the completion goes) and the caller's context.
//! 2. The port registers it with its fd and hands it to the backend
//!    (`Core::submit` in `core/submit.rs`); from then on it belongs to the
//!    kernel and nothing in user space touches it.
//! 3. The backend reports a completion carrying the same pointer exactly
//!    once; the port takes the record back and builds the
//!    [`Packet`](crate::Packet) that hands buffers and context back
//!    (`core/packet.rs`).

pub mod file;
pub mod lifecycle;
pub mod net;

pub use crate::core::{Accepted, FileStat, PacketKind, Token};
pub use lifecycle::OpenOptions;
