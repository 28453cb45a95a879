//! The BSD socket calls as Winsock has them: `socket`, `bind`, `listen`,
//! `connect`, `accept`, `send`, `recv`, `sendto`, `recvfrom`,
//! `getsockopt`, `setsockopt`, `shutdown`, `getsockname`, `getpeername`,
//! `getaddrinfo`, plus `ioctlsocket` and `WSAAccept`.
//!
//! # How a Windows program reaches them
//! `cport.h` defines each BSD name as a macro for its `cport_` wrapper
//! here (`#define recv(...) cport_recv(__VA_ARGS__)`), unless
//! `CPORT_NO_BSD_WRAPPERS` is defined before it is included. A wrapper
//! calls the system's function and, on failure, sets the thread's last
//! error to Winsock's code (`WSAGetLastError()`), as Winsock does; `errno`
//! is left as the system set it. Success leaves the last error alone, as on
//! Windows. The Windows signatures are used (`SOCKET`, `int` lengths, `int`
//! results), with `void *` for buffers and length pointers so that both
//! Windows code (`char *`, `int *`) and Linux code (`void *`, `socklen_t *`)
//! compile. `send` and `sendto` never raise `SIGPIPE` (`MSG_NOSIGNAL`),
//! since Windows has no such signal. New sockets are close-on-exec.
//!
//! # closesocket and blocked calls
//! A wrapped blocking call that was asleep on a socket another thread
//! closed reports `WSAEINTR`, as Winsock does: see `blocked.rs`.

use std::ffi::{c_char, c_int, c_long, c_ulong, c_void};
use std::os::fd::RawFd;

use crate::blocked::{no_error, watched, watched_int};
use crate::error::{errno, fail_wsa, set_last_error, wsa_from_errno};
use crate::extension::sockaddr;
use crate::names::*;
use crate::types::*;

/// A socket value as an fd; `None` for values no fd can have.
fn fd_of(s: SOCKET) -> Option<RawFd> {
    (s <= i32::MAX as usize).then_some(s as RawFd)
}

/// `s` as an fd and the length `n` as a `T`; otherwise sets the Winsock
/// error (`WSAENOTSOCK`, or `bad_len` for a negative length) and fails.
fn args<T: TryFrom<c_int>>(s: SOCKET, n: c_int, bad_len: DWORD) -> Result<(RawFd, T), ()> {
    let Some(fd) = fd_of(s) else {
        fail_wsa(WSAENOTSOCK);
        return Err(());
    };
    let n = T::try_from(n).map_err(|_| {
        fail_wsa(bad_len);
    })?;
    Ok((fd, n))
}

/// Sets the last error from `errno` and returns `SOCKET_ERROR`.
fn fail_errno() -> i32 {
    fail_wsa(wsa_from_errno(errno().raw_os_error().unwrap_or(libc::EIO)))
}

/// `r` as an `int` result: `SOCKET_ERROR` with the Winsock error when it is
/// negative.
fn int_result(r: isize) -> i32 {
    if r < 0 {
        fail_errno()
    } else {
        r.min(i32::MAX as isize) as i32
    }
}

/// Reads a C length (`int` or `socklen_t`) through `p`; `None` when `p` is
/// null (allowed by the caller) or the length is negative.
///
/// # Safety
/// `p` must be null or valid for a 4-byte read.
unsafe fn read_len(p: *mut c_void) -> Option<libc::socklen_t> {
    if p.is_null() {
        return Some(0);
    }
    // SAFETY: non-null and readable (caller); `int` and `socklen_t` are
    // both 4 bytes.
    let v = unsafe { p.cast::<i32>().read_unaligned() };
    (v >= 0).then_some(v as libc::socklen_t)
}

// ---- The calls ------------------------------------------------------------

/// `socket`: a close-on-exec socket, or `INVALID_SOCKET` with the Winsock
/// error.
#[no_mangle]
pub extern "C" fn cport_socket(af: c_int, r#type: c_int, protocol: c_int) -> SOCKET {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::socket(af, r#type | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        fail_errno();
        return INVALID_SOCKET;
    }
    fd as SOCKET
}

/// `bind`, with Winsock errors (`WSAEADDRINUSE`, …).
///
/// # Safety
/// `name` must hold `namelen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_bind(s: SOCKET, name: *const sockaddr, namelen: c_int) -> c_int {
    let Ok((fd, len)) = args::<libc::socklen_t>(s, namelen, WSAEFAULT) else {
        return SOCKET_ERROR;
    };
    // SAFETY: forwarded (caller).
    int_result(unsafe { libc::bind(fd, name.cast(), len) } as isize)
}

/// `listen`, with Winsock errors.
#[no_mangle]
pub extern "C" fn cport_listen(s: SOCKET, backlog: c_int) -> c_int {
    let Some(fd) = fd_of(s) else {
        return fail_wsa(WSAENOTSOCK);
    };
    // SAFETY: integer arguments.
    int_result(unsafe { libc::listen(fd, backlog) } as isize)
}

/// `connect`, with Winsock errors; `WSAEINTR` when the socket is closed
/// while it waits.
///
/// # Safety
/// `name` must hold `namelen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_connect(s: SOCKET, name: *const sockaddr, namelen: c_int) -> c_int {
    let Ok((fd, len)) = args::<libc::socklen_t>(s, namelen, WSAEFAULT) else {
        return SOCKET_ERROR;
    };
    // SAFETY: forwarded (caller).
    watched_int(watched(
        fd,
        no_error,
        || unsafe { libc::connect(fd, name.cast(), len) } as isize,
    ))
}

/// `accept` (close-on-exec), with Winsock errors; `INVALID_SOCKET` with
/// `WSAEINTR` when the listener is closed while it waits. `addrlen` points
/// to an `int` or a `socklen_t`.
///
/// # Safety
/// `addr`, when not null, must be writable for `*addrlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_accept(
    s: SOCKET,
    addr: *mut sockaddr,
    addrlen: *mut c_void,
) -> SOCKET {
    let Some(fd) = fd_of(s) else {
        fail_wsa(WSAENOTSOCK);
        return INVALID_SOCKET;
    };
    // SAFETY: null or readable (caller).
    let Some(mut len) = (unsafe { read_len(addrlen) }) else {
        fail_wsa(WSAEFAULT);
        return INVALID_SOCKET;
    };
    let lenp = if addrlen.is_null() {
        std::ptr::null_mut()
    } else {
        &mut len as *mut _
    };
    let addr = if addrlen.is_null() {
        std::ptr::null_mut()
    } else {
        addr.cast()
    };
    // SAFETY: `addr` holds `len` bytes (caller); `lenp` is ours.
    let r = watched(
        fd,
        no_error,
        || unsafe { libc::accept4(fd, addr, lenp, libc::SOCK_CLOEXEC) } as isize,
    );
    if r < 0 {
        return INVALID_SOCKET;
    }
    if !addrlen.is_null() {
        // SAFETY: writable (caller).
        unsafe { addrlen.cast::<i32>().write_unaligned(len as i32) };
    }
    r as SOCKET
}

/// `WSAAccept` with no condition function: `accept`. A condition function
/// (deferring or rejecting connections) is not supported: `WSAEOPNOTSUPP`.
///
/// # Safety
/// As [`cport_accept`].
#[no_mangle]
pub unsafe extern "C" fn WSAAccept(
    s: SOCKET,
    addr: *mut sockaddr,
    addrlen: *mut c_int,
    lpfnCondition: LPCONDITIONPROC,
    dwCallbackData: ULONG_PTR,
) -> SOCKET {
    let _ = dwCallbackData;
    if !lpfnCondition.is_null() {
        fail_wsa(WSAEOPNOTSUPP);
        return INVALID_SOCKET;
    }
    // SAFETY: forwarded.
    unsafe { cport_accept(s, addr, addrlen.cast()) }
}

/// `send` (never `SIGPIPE`), with Winsock errors; `WSAEINTR` when the
/// socket is closed while it waits.
///
/// # Safety
/// `buf` must hold `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_send(
    s: SOCKET,
    buf: *const c_void,
    len: c_int,
    flags: c_int,
) -> c_int {
    let Ok((fd, n)) = args::<usize>(s, len, WSAEINVAL) else {
        return SOCKET_ERROR;
    };
    let sent_all = |r: isize| r >= 0 && r as usize == n;
    watched_int(watched(fd, sent_all, || {
        // SAFETY: forwarded (caller): `buf` is readable for `len` bytes.
        unsafe { libc::send(fd, buf, n, flags | libc::MSG_NOSIGNAL) }
    }))
}

/// `recv`, with Winsock errors; `WSAEINTR` when the socket is closed while
/// it waits (0 still means the peer closed).
///
/// # Safety
/// `buf` must be writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_recv(
    s: SOCKET,
    buf: *mut c_void,
    len: c_int,
    flags: c_int,
) -> c_int {
    let Ok((fd, n)) = args::<usize>(s, len, WSAEINVAL) else {
        return SOCKET_ERROR;
    };
    // SAFETY: forwarded (caller).
    watched_int(watched(
        fd,
        |r| r > 0 || (r == 0 && n == 0),
        || unsafe { libc::recv(fd, buf, n, flags) },
    ))
}

/// `sendto` (never `SIGPIPE`), with Winsock errors.
///
/// # Safety
/// `buf` must hold `len` bytes; `to`, when not null, `tolen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_sendto(
    s: SOCKET,
    buf: *const c_void,
    len: c_int,
    flags: c_int,
    to: *const sockaddr,
    tolen: c_int,
) -> c_int {
    let (Ok((fd, n)), Ok(tl)) = (
        args::<usize>(s, len, WSAEINVAL),
        libc::socklen_t::try_from(tolen),
    ) else {
        return fail_wsa(WSAEFAULT);
    };
    let flags = flags | libc::MSG_NOSIGNAL;
    let sent_all = |r: isize| r >= 0 && r as usize == n;
    watched_int(watched(fd, sent_all, || {
        // SAFETY: forwarded (caller): `buf` is readable for `len` bytes
        // and `to` for `tolen`.
        unsafe { libc::sendto(fd, buf, n, flags, to.cast(), tl) }
    }))
}

/// `recvfrom`, with Winsock errors. `fromlen` points to an `int` or a
/// `socklen_t`.
///
/// # Safety
/// `buf` must be writable for `len` bytes; `from`, when not null, for
/// `*fromlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_recvfrom(
    s: SOCKET,
    buf: *mut c_void,
    len: c_int,
    flags: c_int,
    from: *mut sockaddr,
    fromlen: *mut c_void,
) -> c_int {
    let Ok((fd, n)) = args::<usize>(s, len, WSAEINVAL) else {
        return SOCKET_ERROR;
    };
    // SAFETY: null or readable (caller).
    let Some(mut fl) = (unsafe { read_len(fromlen) }) else {
        return fail_wsa(WSAEFAULT);
    };
    let (from, flp) = if fromlen.is_null() || from.is_null() {
        (std::ptr::null_mut(), std::ptr::null_mut())
    } else {
        (from.cast(), &mut fl as *mut libc::socklen_t)
    };
    // SAFETY: forwarded (caller); `flp` is ours.
    let r = watched(
        fd,
        |r| r > 0 || (r == 0 && n == 0),
        || unsafe { libc::recvfrom(fd, buf, n, flags, from, flp) },
    );
    if r >= 0 && !flp.is_null() {
        // SAFETY: writable (caller).
        unsafe { fromlen.cast::<i32>().write_unaligned(fl as i32) };
    }
    watched_int(r)
}

/// `getsockopt`, with Winsock errors. `optlen` points to an `int` or a
/// `socklen_t`.
///
/// # Safety
/// `optval` must be writable for `*optlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_getsockopt(
    s: SOCKET,
    level: c_int,
    optname: c_int,
    optval: *mut c_void,
    optlen: *mut c_void,
) -> c_int {
    let Some(fd) = fd_of(s) else {
        return fail_wsa(WSAENOTSOCK);
    };
    // SAFETY: null or readable (caller).
    let Some(mut len) = (unsafe { read_len(optlen) }).filter(|_| !optlen.is_null()) else {
        return fail_wsa(WSAEFAULT);
    };
    // SAFETY: forwarded (caller); `len` is ours.
    let r = unsafe { libc::getsockopt(fd, level, optname, optval, &mut len) };
    if r < 0 {
        return fail_errno();
    }
    // SAFETY: writable (caller).
    unsafe { optlen.cast::<i32>().write_unaligned(len as i32) };
    0
}

/// `setsockopt`, with Winsock errors; `SO_UPDATE_ACCEPT_CONTEXT` and
/// `SO_UPDATE_CONNECT_CONTEXT` as Windows has them (see
/// [`crate::sockopt`]).
///
/// # Safety
/// `optval` must hold `optlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_setsockopt(
    s: SOCKET,
    level: c_int,
    optname: c_int,
    optval: *const c_void,
    optlen: c_int,
) -> c_int {
    let Ok((fd, len)) = args::<libc::socklen_t>(s, optlen, WSAEFAULT) else {
        return SOCKET_ERROR;
    };
    if level == libc::SOL_SOCKET
        && (optname == SO_UPDATE_ACCEPT_CONTEXT || optname == SO_UPDATE_CONNECT_CONTEXT)
    {
        // SAFETY: forwarded (caller).
        return match unsafe { crate::sockopt::update_context(fd, optname, optval, len) } {
            Ok(()) => 0,
            Err(e) => fail_wsa(e),
        };
    }
    // SAFETY: forwarded (caller).
    int_result(unsafe { libc::setsockopt(fd, level, optname, optval, len) } as isize)
}

/// `shutdown` (`SD_RECEIVE`, `SD_SEND`, `SD_BOTH`), with Winsock errors.
#[no_mangle]
pub extern "C" fn cport_shutdown(s: SOCKET, how: c_int) -> c_int {
    let Some(fd) = fd_of(s) else {
        return fail_wsa(WSAENOTSOCK);
    };
    // SAFETY: integer arguments.
    int_result(unsafe { libc::shutdown(fd, how) } as isize)
}

/// `getsockname` / `getpeername`.
///
/// # Safety
/// As [`cport_getsockname`].
unsafe fn name_of(
    s: SOCKET,
    name: *mut sockaddr,
    namelen: *mut c_void,
    call: unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> c_int,
) -> c_int {
    let Some(fd) = fd_of(s) else {
        return fail_wsa(WSAENOTSOCK);
    };
    // SAFETY: null or readable (caller).
    let Some(mut len) = (unsafe { read_len(namelen) }).filter(|_| !namelen.is_null()) else {
        return fail_wsa(WSAEFAULT);
    };
    // SAFETY: `name` is writable for `len` bytes (caller); `len` is ours.
    if unsafe { call(fd, name.cast(), &mut len) } < 0 {
        return fail_errno();
    }
    // SAFETY: writable (caller).
    unsafe { namelen.cast::<i32>().write_unaligned(len as i32) };
    0
}

/// `getsockname`, with Winsock errors. `namelen` points to an `int` or a
/// `socklen_t`.
///
/// # Safety
/// `name` must be writable for `*namelen` bytes.
#[no_mangle]
pub unsafe extern "C" fn cport_getsockname(
    s: SOCKET,
    name: *mut sockaddr,
    namelen: *mut c_void,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { name_of(s, name, namelen, libc::getsockname) }
}

/// `getpeername`, with Winsock errors; as [`cport_getsockname`].
///
/// # Safety
/// As [`cport_getsockname`].
#[no_mangle]
pub unsafe extern "C" fn cport_getpeername(
    s: SOCKET,
    name: *mut sockaddr,
    namelen: *mut c_void,
) -> c_int {
    // SAFETY: forwarded.
    unsafe { name_of(s, name, namelen, libc::getpeername) }
}

/// The C `struct addrinfo` (opaque here).
#[repr(C)]
pub struct addrinfo {
    _opaque: [u8; 0],
}

/// `getaddrinfo`: returns what the system returns (0, or an `EAI_*` value
/// of `<netdb.h>`, so `gai_strerror` and `EAI_*` comparisons work) and, on
/// failure, sets `WSAGetLastError()` to Winsock's code (`WSAHOST_NOT_FOUND`
/// for `EAI_NONAME`, …).
///
/// # Safety
/// As the system's `getaddrinfo`.
#[no_mangle]
pub unsafe extern "C" fn cport_getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    // SAFETY: forwarded (caller).
    let r = unsafe { libc::getaddrinfo(node, service, hints.cast(), res.cast()) };
    if r != 0 {
        set_last_error(match r {
            libc::EAI_NONAME => WSAHOST_NOT_FOUND,
            libc::EAI_AGAIN => WSATRY_AGAIN,
            libc::EAI_FAIL => WSANO_RECOVERY,
            libc::EAI_NODATA => WSANO_DATA,
            libc::EAI_FAMILY => WSAEAFNOSUPPORT,
            libc::EAI_SOCKTYPE => WSAESOCKTNOSUPPORT,
            libc::EAI_SERVICE => WSATYPE_NOT_FOUND,
            libc::EAI_MEMORY => WSA_NOT_ENOUGH_MEMORY,
            libc::EAI_SYSTEM => wsa_from_errno(errno().raw_os_error().unwrap_or(libc::EIO)),
            _ => WSAEINVAL,
        });
    }
    r
}

/// Linux's `SIOCATMARK` (not in the `libc` crate).
const SIOCATMARK: libc::Ioctl = 0x8905;

/// `ioctlsocket`: `FIONBIO` (non-blocking mode from `*argp`), `FIONREAD`
/// (bytes ready to read into `*argp`), `SIOCATMARK`. Any other command:
/// `WSAEINVAL`.
///
/// # Safety
/// `argp` must be valid for a read and a write.
#[no_mangle]
pub unsafe extern "C" fn ioctlsocket(s: SOCKET, cmd: c_long, argp: *mut c_ulong) -> c_int {
    let Some(fd) = fd_of(s) else {
        return fail_wsa(WSAENOTSOCK);
    };
    if argp.is_null() {
        return fail_wsa(WSAEFAULT);
    }
    let cmd = cmd as libc::Ioctl;
    if ![libc::FIONBIO, libc::FIONREAD, SIOCATMARK].contains(&cmd) {
        return fail_wsa(WSAEINVAL);
    }
    // SAFETY: readable (caller).
    let mut v: c_int = (unsafe { *argp } != 0) as c_int;
    // SAFETY: the three commands take a pointer to an int, ours.
    if unsafe { libc::ioctl(fd, cmd, &mut v) } < 0 {
        return fail_errno();
    }
    if cmd != libc::FIONBIO {
        // SAFETY: writable (caller).
        unsafe { *argp = v.max(0) as c_ulong };
    }
    0
}
