//! Overlapped operations: the calls that start one on a
//! [`Handle`](crate::Handle), and what its packet hands back.
//!
//! # Life of an operation
//! 1. A [`Handle`](crate::Handle) method (`read_at`, `recv`, …; see
//!    [`file`](mod@file) and [`net`]) validates its arguments and allocates
//!    an operation record (`core/record.rs`): the driver's description of
//!    the I/O (`driver/op.rs`: fd, buffers, offset), then the core's part
//!    (the fd's owner, the key, the [`Token`], where the completion goes)
//!    and the caller's context.
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
