//! `AcceptEx` operations in flight, as closing and cancelling see them.
//!
//! An `AcceptEx` runs in two stages that the port sees as two operations:
//! the accept, on the listener's association, then — with a receive
//! length — a receive on an association of its own (a duplicate of the
//! accepted socket), waiting for the client's first bytes. Closing or
//! cancelling through the handles the program knows must end whichever
//! stage is running, as on Windows:
//! - `closesocket`/`CloseHandle` on the **listener**, or
//!   `CancelIoEx(listener, …)` / `CancelIo(listener)`: the operation ends
//!   with `ERROR_OPERATION_ABORTED`, unless it already completed (an
//!   accept without receive length that the kernel finished before the
//!   cancel: its real result stands);
//! - `closesocket` on the **accept socket**: it ends with
//!   `ERROR_OPERATION_ABORTED` in any stage, and the connection, if one was
//!   accepted, is never installed under the closed number.
//!
//! The kernel's own cancel misses two windows, which the flags here close:
//! the accept completed but its completion was not yet reaped (io_uring:
//! the cancel finds nothing, and the receive stage would be issued later);
//! and the receive stage being issued while the close runs. Each
//! [`Live`] entry records what happened; the completion path asks it
//! before installing the connection ([`install`]) and before issuing the
//! receive ([`set_recv`]), and [`recv_result`] turns the receive's end
//! into the abort when the entry says so.
//!
//! Invariant: the connection is installed (`dup3` onto the accept socket's
//! number) only under the lock and only while the accept socket is not
//! marked closed; `closesocket` marks it under the same lock before it
//! closes the fd, so the number `dup3` targets is never a closed or reused
//! one.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use completion_port::Handle;
use parking_lot::Mutex;

use crate::object::Target;
use crate::overlapped::{FfiOp, REGISTRY};
use crate::types::*;

/// One `AcceptEx` in flight.
struct Live {
    /// Its OVERLAPPED.
    ov: usize,
    listener: Arc<Target>,
    accept_fd: RawFd,
    /// The issuing thread (`CancelIo`).
    thread: u64,
    /// The accept socket was closed: abort in any stage.
    accept_closed: bool,
    /// The listener was closed, or the operation cancelled: abort unless
    /// it completed.
    ended: bool,
    /// The receive stage's association, once issued.
    recv: Option<Handle<FfiOp>>,
}

static LIVE: LazyLock<Mutex<HashMap<u64, Live>>> = LazyLock::new(Default::default);

/// The entry of one `AcceptEx`; dropping it (with the operation's context)
/// removes the entry.
pub(crate) struct Ticket(u64);

impl Drop for Ticket {
    fn drop(&mut self) {
        let gone = LIVE.lock().remove(&self.0);
        drop(gone); // unlocked: it may hold the last clone of a handle
    }
}

/// Registers an `AcceptEx` about to be issued; `WSAEINVAL` when the accept
/// socket already serves another one in flight (as Windows refuses it).
pub(crate) fn register(
    ov: LPOVERLAPPED,
    listener: &Arc<Target>,
    accept_fd: RawFd,
) -> Result<Ticket, DWORD> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut live = LIVE.lock();
    if live
        .values()
        .any(|l| l.accept_fd == accept_fd && !l.accept_closed)
    {
        return Err(WSAEINVAL);
    }
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    live.insert(
        id,
        Live {
            ov: ov as usize,
            listener: listener.clone(),
            accept_fd,
            thread: crate::overlapped::thread_id(),
            accept_closed: false,
            ended: false,
            recv: None,
        },
    );
    Ok(Ticket(id))
}

/// Marks the entries `pick` selects (`accept_closed` or `ended`), closes
/// their receive stages, and returns how many there were; `cancel_accept`
/// also cancels a first stage still in flight (the listener's own close
/// cancels it otherwise).
fn mark(pick: impl Fn(&Live) -> Option<bool>, cancel_accept: bool) -> usize {
    let mut recvs = Vec::new();
    let mut firsts = Vec::new();
    let mut n = 0;
    for l in LIVE.lock().values_mut() {
        let Some(accept_closed) = pick(l) else {
            continue;
        };
        n += 1;
        l.ended = true;
        l.accept_closed |= accept_closed;
        match &l.recv {
            Some(h) => recvs.push(h.clone()),
            None if cancel_accept => firsts.push(l.ov),
            None => {}
        }
    }
    for h in recvs {
        h.close();
    }
    for ov in firsts {
        if let Some((h, Some(t))) = REGISTRY.with(ov, |p| (p.handle.clone(), p.token)) {
            let _ = h.cancel(t);
        }
    }
    n
}

/// `closesocket`/`CloseHandle` on `fd`, before the fd is closed: ends the
/// `AcceptEx` operations whose listener or accept socket it is.
pub(crate) fn closing(fd: RawFd) {
    mark(
        |l| {
            if l.accept_fd == fd {
                Some(true)
            } else {
                (l.listener.fd == fd).then_some(false)
            }
        },
        true,
    );
}

/// `CancelIoEx(listener, ov)` (`ov` null: all) or `CancelIo(listener)`
/// (`thread`: the caller's): ends the matching `AcceptEx` operations.
/// Returns how many there were.
pub(crate) fn cancel(listener: &Arc<Target>, ov: LPOVERLAPPED, thread: Option<u64>) -> usize {
    mark(
        |l| {
            (Arc::ptr_eq(&l.listener, listener)
                && (ov.is_null() || l.ov == ov as usize)
                && thread.is_none_or(|t| l.thread == t))
            .then_some(false)
        },
        false,
    )
}

/// Installs the accepted connection `conn` under the accept socket's
/// number, unless the accept socket was closed (`ERROR_OPERATION_ABORTED`).
/// `Ok(true)`: installed and the receive stage may follow; `Ok(false)`:
/// installed, but the operation was ended meanwhile, so no receive stage.
pub(crate) fn install(ticket: &Ticket, conn: RawFd, accept_fd: RawFd) -> Result<bool, DWORD> {
    let live = LIVE.lock();
    let Some(l) = live.get(&ticket.0) else {
        return Err(ERROR_OPERATION_ABORTED);
    };
    if l.accept_closed {
        return Err(ERROR_OPERATION_ABORTED);
    }
    // SAFETY: both fds are open (the accept socket's closing would have
    // marked the entry first, under this lock); `dup3` replaces the accept
    // socket's socket with the connection under the same number.
    if unsafe { libc::dup3(conn, accept_fd, libc::O_CLOEXEC) } < 0 {
        return Err(crate::error::win32_from_io(&crate::error::errno()));
    }
    Ok(!l.ended)
}

/// Records the receive stage's association, about to be used, so that a
/// close or cancel from now on closes it; false when the operation was
/// ended meanwhile (then the receive must not be issued).
pub(crate) fn set_recv(ticket: &Ticket, handle: &Handle<FfiOp>) -> bool {
    match LIVE.lock().get_mut(&ticket.0) {
        Some(l) if !l.ended => {
            l.recv = Some(handle.clone());
            true
        }
        _ => false,
    }
}

/// The result of the receive stage: `ERROR_OPERATION_ABORTED` when the
/// operation was ended and the receive got no data.
pub(crate) fn recv_result(ticket: &Ticket, error: DWORD, bytes: DWORD) -> (DWORD, DWORD) {
    if bytes == 0 && LIVE.lock().get(&ticket.0).is_some_and(|l| l.ended) {
        (ERROR_OPERATION_ABORTED, 0)
    } else {
        (error, bytes)
    }
}
