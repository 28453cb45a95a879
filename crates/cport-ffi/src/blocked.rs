//! `closesocket` and the calls blocked on the socket it closes.
//!
//! Winsock ends a call blocked on a socket that another thread closes
//! with `WSAEINTR`. Linux does not: `close` leaves `accept`/`recv`/`send`
//! asleep. So `closesocket` (and `CloseHandle` on a socket) first counts a
//! close of that fd number ([`note_close`]), then wakes the sleepers with
//! `shutdown(2)` (`connect(AF_UNSPEC)`, which resets the connection, when
//! `SO_LINGER` asks for an abortive close), then closes the fd. A wrapped
//! blocking call reads the fd's close count before and after the system
//! call: when it changed, the socket it slept on was closed under it, and
//! it reports `WSAEINTR` whatever the system call returned. The count, not
//! the fd, is compared, so a number reused by a new socket meanwhile cannot
//! make a call look normal. Unwrapped calls are still woken (they see the
//! end of the stream or `EINVAL`).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::error::{errno, set_last_error, wsa_from_errno};
use crate::types::*;

const CHUNK: usize = 1024;
const CHUNKS: usize = 4096;

/// How many times `closesocket` closed each fd number (fds below
/// `CHUNK * CHUNKS`; chunks are allocated on first use and never freed).
static CLOSES: [AtomicPtr<[AtomicU32; CHUNK]>; CHUNKS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];

fn close_counter(fd: RawFd, create: bool) -> Option<&'static AtomicU32> {
    let fd = usize::try_from(fd).ok()?;
    let slot = CLOSES.get(fd / CHUNK)?;
    let mut chunk = slot.load(Ordering::Acquire);
    if chunk.is_null() {
        if !create {
            return None;
        }
        let fresh = Box::into_raw(Box::new([const { AtomicU32::new(0) }; CHUNK]));
        match slot.compare_exchange(chunk, fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => chunk = fresh,
            Err(won) => {
                // SAFETY: `fresh` was never shared; reclaim it.
                drop(unsafe { Box::from_raw(fresh) });
                chunk = won;
            }
        }
    }
    // SAFETY: chunks are never freed once published.
    Some(unsafe { &(*chunk)[fd % CHUNK] })
}

/// The number of closes of `fd` so far.
fn closes(fd: RawFd) -> u32 {
    close_counter(fd, false).map_or(0, |c| c.load(Ordering::Acquire))
}

/// Counts a close of `fd` (before it is closed).
fn note_close(fd: RawFd) {
    if let Some(c) = close_counter(fd, true) {
        c.fetch_add(1, Ordering::AcqRel);
    }
}

/// Before `closesocket` closes socket `fd`: wakes every thread blocked on
/// it (see the module docs). Nothing for fds that are not sockets.
pub(crate) fn wake_blocked(fd: RawFd) {
    if !matches!(
        crate::object::kind_of(fd),
        Ok(crate::object::FdKind::Socket)
    ) {
        return;
    }
    note_close(fd);
    let borrowed = crate::socket::Fd(fd);
    let sock = socket2::SockRef::from(&borrowed);
    let abortive = !sock.is_listener().unwrap_or(false)
        && sock
            .linger()
            .is_ok_and(|l| l == Some(std::time::Duration::ZERO));
    if abortive {
        let unspec = libc::sockaddr {
            sa_family: libc::AF_UNSPEC as libc::sa_family_t,
            sa_data: [0; 14],
        };
        // SAFETY: `unspec` is a valid sockaddr of the size given; a TCP
        // socket disconnects (and resets the connection) on AF_UNSPEC.
        let r = unsafe {
            libc::connect(
                fd,
                &unspec,
                std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
    // SAFETY: plain system call on an open fd.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Runs the blocking system call `call` on `fd`. When `closesocket`
/// closed `fd` meanwhile and the call did not do all it was asked
/// (`done(r)` is false: a failure, an end of stream, a partial send), the
/// result is `WSAEINTR`. Otherwise a failure sets the Winsock error.
pub(crate) fn watched(
    fd: RawFd,
    done: impl Fn(isize) -> bool,
    call: impl FnOnce() -> isize,
) -> isize {
    let before = closes(fd);
    let r = call();
    if !done(r) && closes(fd) != before {
        set_last_error(WSAEINTR);
        return -1;
    }
    if r < 0 {
        let e = errno().raw_os_error().unwrap_or(libc::EIO);
        set_last_error(match e {
            // Linux: EPIPE for a stream socket never connected, which
            // Winsock reports as not connected.
            libc::EPIPE if !is_connected(fd) => WSAENOTCONN,
            e => wsa_from_errno(e),
        });
    }
    r
}

/// Whether `fd` has a peer.
fn is_connected(fd: RawFd) -> bool {
    socket2::SockRef::from(&crate::socket::Fd(fd))
        .peer_addr()
        .is_ok()
}

/// Results of calls that are done when they did not fail.
pub(crate) fn no_error(r: isize) -> bool {
    r >= 0
}

/// `int` tail of a watched call: `watched` already set the error.
pub(crate) fn watched_int(r: isize) -> i32 {
    if r < 0 {
        SOCKET_ERROR
    } else {
        r.min(i32::MAX as isize) as i32
    }
}
