//! Socket options around `AcceptEx`: the options a program set on its
//! accept socket before `AcceptEx` are carried over to the accepted
//! connection ([`carry_over`]), and `setsockopt(SO_UPDATE_ACCEPT_CONTEXT /
//! SO_UPDATE_CONNECT_CONTEXT)` succeeds ([`update_context`]).
//!
//! # What the accepted socket ends up with
//! On Linux the accepted connection is a new socket that inherits the
//! *listener's* options at `accept` (buffer sizes, `TCP_NODELAY`,
//! keep-alive, linger, …); `AcceptEx` then puts it in place of the accept
//! socket (`dup3`), whose own options would be lost. So before the swap,
//! each option of [`CARRIED`] that the program changed on the accept
//! socket (its value differs from a fresh socket's) is set on the
//! connection. The result: options set on the accept socket win, the others
//! are the listener's — what a Windows program has after
//! `SO_UPDATE_ACCEPT_CONTEXT`, which on Linux has nothing left to do.
//!
//! Cost: one `getsockopt` per carried option per accepted connection, plus
//! a `setsockopt` for each changed one; a fresh socket's values are read
//! once per (family, type, protocol).

use std::collections::HashMap;
use std::ffi::c_void;
use std::os::fd::RawFd;
use std::sync::LazyLock;

use parking_lot::Mutex;

use crate::types::*;

/// An option's raw value (every carried option fits in 16 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Value {
    len: libc::socklen_t,
    bytes: [u8; 16],
}

/// The options carried from the accept socket to the connection:
/// `(level, name, kernel doubles it)`. `SO_RCVBUF`/`SO_SNDBUF` read back
/// twice what was set, so half is set again.
const CARRIED: &[(i32, i32, bool)] = &[
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, false),
    (libc::SOL_SOCKET, libc::SO_RCVBUF, true),
    (libc::SOL_SOCKET, libc::SO_SNDBUF, true),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, false),
    (libc::SOL_SOCKET, libc::SO_LINGER, false),
    (libc::SOL_SOCKET, libc::SO_REUSEADDR, false),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE, false),
    (libc::SOL_SOCKET, libc::SO_RCVTIMEO, false),
    (libc::SOL_SOCKET, libc::SO_SNDTIMEO, false),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, false),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, false),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, false),
];

fn get(fd: RawFd, level: i32, name: i32) -> Option<Value> {
    let mut v = Value {
        len: 16,
        bytes: [0; 16],
    };
    // SAFETY: `v.bytes` is writable for `v.len` bytes.
    let r = unsafe { libc::getsockopt(fd, level, name, v.bytes.as_mut_ptr().cast(), &mut v.len) };
    (r == 0).then_some(v)
}

fn get_int(fd: RawFd, level: i32, name: i32) -> Option<i32> {
    get(fd, level, name)
        .map(|v| i32::from_ne_bytes([v.bytes[0], v.bytes[1], v.bytes[2], v.bytes[3]]))
}

/// A fresh socket's values of [`CARRIED`], for sockets like `fd`.
fn defaults(fd: RawFd) -> Option<Vec<Option<Value>>> {
    type Key = (i32, i32, i32);
    static CACHE: LazyLock<Mutex<HashMap<Key, Vec<Option<Value>>>>> =
        LazyLock::new(Default::default);
    let key = (
        get_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE)?,
        get_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?,
    );
    if let Some(d) = CACHE.lock().get(&key) {
        return Some(d.clone());
    }
    // SAFETY: plain system call; the fd is closed below.
    let fresh = unsafe { libc::socket(key.0, key.1 | libc::SOCK_CLOEXEC, key.2) };
    if fresh < 0 {
        return None;
    }
    let d: Vec<_> = CARRIED.iter().map(|&(l, n, _)| get(fresh, l, n)).collect();
    // SAFETY: `fresh` is ours.
    unsafe { libc::close(fresh) };
    CACHE.lock().insert(key, d.clone());
    Some(d)
}

/// Sets on `to` every option of [`CARRIED`] that was changed on `from`
/// (see the module docs). Best effort: an option that cannot be read or
/// set is left as `to` has it.
pub(crate) fn carry_over(from: RawFd, to: RawFd) {
    let Some(fresh) = defaults(from) else {
        return;
    };
    for (&(level, name, doubled), fresh) in CARRIED.iter().zip(fresh) {
        let Some(mut v) = get(from, level, name) else {
            continue;
        };
        if Some(v) == fresh || get(to, level, name) == Some(v) {
            continue;
        }
        if doubled {
            let n = i32::from_ne_bytes([v.bytes[0], v.bytes[1], v.bytes[2], v.bytes[3]]) / 2;
            v.bytes[..4].copy_from_slice(&n.to_ne_bytes());
        }
        // SAFETY: `v.bytes` holds `v.len` bytes of the option's value.
        unsafe { libc::setsockopt(to, level, name, v.bytes.as_ptr().cast(), v.len) };
    }
}

/// `setsockopt(s, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, &listener,
/// sizeof(SOCKET))` and `SO_UPDATE_CONNECT_CONTEXT`: checked as Windows
/// checks them, then done — the accepted socket already has its listener's
/// options and the options set on it before `AcceptEx` (see the module
/// docs), and a connected socket needs no update on Linux.
///
/// Errors: `WSAENOTSOCK` when `fd` (or the listener named) is not a socket;
/// `WSAEFAULT` when the listener value is missing or shorter than a
/// `SOCKET`.
///
/// # Safety
/// `optval` must hold `optlen` bytes.
pub(crate) unsafe fn update_context(
    fd: RawFd,
    optname: i32,
    optval: *const c_void,
    optlen: libc::socklen_t,
) -> Result<(), DWORD> {
    let is_socket = |fd| {
        matches!(
            crate::object::kind_of(fd),
            Ok(crate::object::FdKind::Socket)
        )
    };
    if !is_socket(fd) {
        return Err(WSAENOTSOCK);
    }
    if optname == SO_UPDATE_CONNECT_CONTEXT {
        return Ok(());
    }
    if optval.is_null() || (optlen as usize) < std::mem::size_of::<SOCKET>() {
        return Err(WSAEFAULT);
    }
    // SAFETY: `optval` holds at least a SOCKET (checked; caller); it may be
    // unaligned.
    let listener = unsafe { optval.cast::<SOCKET>().read_unaligned() };
    match i32::try_from(listener) {
        Ok(l) if is_socket(l) => Ok(()),
        _ => Err(WSAENOTSOCK),
    }
}
