//! # The Win32 companion
//!
//! The rest of what a classic Windows IOCP server calls besides the port:
//! threads, events and waits, critical sections, SRW locks and condition
//! variables, system information, time, heap and virtual memory, and the
//! console control handler — with Windows' names, types, error numbers
//! and semantics, so that such a server builds on Linux with only its
//! `#include` lines changed. `include/cport/win32.h` adds what C needs
//! beyond the generated declarations (`Interlocked*`, `ZeroMemory`, …);
//! `cport.h` includes it, and everything here, unless `CPORT_NO_WIN32` is
//! defined (for programs that bring their own Win32 layer).
//!
//! Where things live:
//! - `waitable`: the objects a thread can wait for (events, semaphores,
//!   threads) and the wait engine;
//! - `event`: `CreateEvent`, `SetEvent`, `ResetEvent`, semaphores, the
//!   `WSA*Event` family, and the `OVERLAPPED.hEvent` an operation signals;
//! - `wait`: `WaitForSingleObject`, `WaitForMultipleObjects`,
//!   `WSAWaitForMultipleEvents`;
//! - `thread`: `CreateThread`, `ResumeThread`, `ExitThread`,
//!   `GetExitCodeThread`, thread ids;
//! - `sync`: `CRITICAL_SECTION`, `SRWLOCK`, `CONDITION_VARIABLE`;
//! - `system`: `GetSystemInfo`, tick counts, the performance counter;
//! - `memory`: the process heap, `GlobalAlloc`/`LocalAlloc`,
//!   `VirtualAlloc`;
//! - `console`: `SetConsoleCtrlHandler`;
//! - `message`: `FormatMessageA` for system error texts.
//!
//! Every handle made here is a generation-tagged entry of the handle
//! table (`object`), so a closed or made-up value is refused with
//! `ERROR_INVALID_HANDLE`, and `CloseHandle` closes it. Every wait is a
//! blocking scope for the concurrency value of the port the thread last
//! dequeued from, as a Windows kernel wait is.

pub mod console;
pub mod event;
pub mod memory;
pub mod message;
pub mod sync;
pub mod system;
pub mod thread;
pub mod types;
pub mod wait;
pub(crate) mod waitable;

use std::sync::Arc;

use crate::object::{self, Named, Object};
use crate::types::*;
use waitable::Waitable;

/// Puts a waitable object in the handle table.
fn insert(w: Arc<Waitable>) -> Result<HANDLE, DWORD> {
    object::insert(Object::Waitable(w)).ok_or(ERROR_NOT_ENOUGH_MEMORY)
}

/// The waitable object `h` names; `ERROR_INVALID_HANDLE` for anything
/// else (closed, made up, a port, a file, a socket).
fn waitable(h: HANDLE) -> Result<Arc<Waitable>, DWORD> {
    match object::resolve(h)? {
        Named::Object(Object::Waitable(w)) => Ok(w),
        _ => Err(ERROR_INVALID_HANDLE),
    }
}

/// A `NULL`-on-failure handle result, setting the last error.
fn handle_or_null(r: Result<HANDLE, DWORD>) -> HANDLE {
    r.unwrap_or_else(|e| {
        crate::error::set_last_error(e);
        std::ptr::null_mut()
    })
}

/// A `BOOL` result, setting the last error on failure.
fn bool_result(r: Result<(), DWORD>) -> BOOL {
    match r {
        Ok(()) => TRUE,
        Err(e) => crate::error::fail(e),
    }
}
