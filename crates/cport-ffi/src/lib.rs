//! # cport-ffi: the Win32-named C ABI of completion-port
//!
//! `libcport.so` / `libcport.a` and `include/cport.h` let C and C++ servers
//! written for Windows I/O completion ports build on Linux with few
//! changes: the same function names, types, constants, error numbers and
//! calling pattern (`CreateIoCompletionPort`, `GetQueuedCompletionStatus`,
//! `ReadFile`, `WSARecv`, `AcceptEx`, …). `docs/porting.md` lists every
//! function with its status and what differs from Windows, and why.
//!
//! Where things live:
//! - [`types`]: Win32 types and constants (Windows' values);
//! - [`error`]: `GetLastError`, the errno → Windows error tables, the
//!   NTSTATUS kept in `OVERLAPPED.Internal`;
//! - `object`: generation-tagged handle values, plain fds, association;
//! - `overlapped`: the per-operation context, the registry of OVERLAPPEDs
//!   in flight, misuse checks (pending reuse, stack OVERLAPPED);
//! - `issue`: the steps every overlapped call shares;
//! - [`port`]: `CreateIoCompletionPort`, `GetQueuedCompletionStatus(Ex)`,
//!   `PostQueuedCompletionStatus` — where a packet becomes what a Windows
//!   caller sees;
//! - [`file`]: `ReadFile`, `WriteFile`, `GetOverlappedResult`,
//!   `CancelIo(Ex)`, `CloseHandle`, …;
//! - [`fileinfo`]: `CreateFileA`, `GetFileSize(Ex)`, `SetFilePointer(Ex)`,
//!   `SetEndOfFile`, `FlushFileBuffers`, `GetFileType`, `DeleteFileA`,
//!   `cport_fd`;
//! - [`socket`]: the Winsock calls;
//! - [`bsd`]: the BSD socket calls with Winsock errors (the header routes
//!   `bind`, `recv`, … there); `blocked`: `closesocket` waking the calls
//!   blocked on its socket;
//! - [`extension`]: `AcceptEx`, `GetAcceptExSockaddrs`, `ConnectEx`;
//!   `accept_live`: closing and cancelling an `AcceptEx` in either stage;
//!   `sockopt`: socket options across `AcceptEx`, `SO_UPDATE_*_CONTEXT`;
//! - [`names`]: the Win32/Winsock types and constants of those calls.
//! - [`win32`]: the Win32 companion — threads, events and waits, locks,
//!   system information, memory, the console control handler.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_snake_case)]

mod accept_live;
mod blocked;
pub mod bsd;
pub mod error;
pub mod extension;
pub mod file;
pub mod fileinfo;
mod issue;
pub mod names;
mod object;
mod overlapped;
pub mod port;
pub mod socket;
mod sockopt;
pub mod types;
// `cport_no_win32` is never set when building: it exists so that cbindgen
// wraps the companion's declarations in `#if !defined(CPORT_NO_WIN32)`.
#[cfg(not(cport_no_win32))]
pub mod win32;
#[cfg(cport_no_win32)]
compile_error!("cport_no_win32 is a header switch: define CPORT_NO_WIN32 in C instead");

pub use bsd::*;
pub use extension::*;
pub use file::*;
pub use fileinfo::*;
pub use names::*;
pub use port::*;
pub use socket::*;
pub use types::*;
pub use win32::{
    console::*, event::*, memory::*, message::*, sync::*, system::*, thread::*, types::*, wait::*,
};
