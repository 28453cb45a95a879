//! `GetLastError` / `SetLastError` (per thread, as on Windows) and the
//! mapping from Linux `errno` values to Windows error numbers.
//!
//! Two tables, because Windows reports the same failure with two numbers
//! depending on where it is seen: a packet dequeued by
//! `GetQueuedCompletionStatus` carries `ERROR_*` values (a reset socket is
//! `ERROR_NETNAME_DELETED`), a Winsock call fails with `WSAE*` values (the
//! same reset is `WSAECONNRESET`). An `errno` with no Windows equivalent is
//! reported as `APPLICATION_ERROR_BIT | errno`, so nothing is lost.
//!
//! `OVERLAPPED.Internal` and `OVERLAPPED_ENTRY.Internal` hold an NTSTATUS
//! as on Windows: 0 for success, `STATUS_PENDING` in flight, and for a
//! failure the NTSTATUS Windows uses for the common errors
//! ([`ntstatus_from_win32`]) or `0xE000_0000 | error` for the rest;
//! [`win32_from_ntstatus`] undoes it.

use std::cell::Cell;
use std::io;

use crate::types::*;

thread_local! {
    static LAST_ERROR: Cell<DWORD> = const { Cell::new(0) };
}

/// Sets the calling thread's last error.
pub(crate) fn set_last_error(code: DWORD) {
    LAST_ERROR.with(|c| c.set(code));
}

/// The calling thread's last error.
pub(crate) fn last_error() -> DWORD {
    LAST_ERROR.with(|c| c.get())
}

/// Sets the last error and returns `FALSE`: the tail of every failing
/// `BOOL` function.
pub(crate) fn fail(code: DWORD) -> BOOL {
    set_last_error(code);
    FALSE
}

/// Sets the last error and returns `SOCKET_ERROR`: the tail of every
/// failing Winsock call that returns `int`.
pub(crate) fn fail_wsa(code: DWORD) -> i32 {
    set_last_error(code);
    SOCKET_ERROR
}

/// The Windows error a *packet* (or a file call) reports for `e`.
pub(crate) fn win32_from_io(e: &io::Error) -> DWORD {
    match e.raw_os_error() {
        Some(errno) => win32_from_errno(errno),
        None => match e.kind() {
            io::ErrorKind::InvalidInput => ERROR_INVALID_PARAMETER,
            io::ErrorKind::NotFound => ERROR_NOT_FOUND,
            io::ErrorKind::OutOfMemory => ERROR_NOT_ENOUGH_MEMORY,
            io::ErrorKind::TimedOut => WAIT_TIMEOUT,
            // The port was closed (completion_port::is_port_closed).
            _ if completion_port::is_port_closed(e) => ERROR_INVALID_HANDLE,
            _ => ERROR_INVALID_PARAMETER,
        },
    }
}

/// The Windows error for `errno` as packets and file calls report it.
pub(crate) fn win32_from_errno(errno: i32) -> DWORD {
    match errno {
        0 => ERROR_SUCCESS,
        libc::ENOENT => ERROR_FILE_NOT_FOUND,
        libc::ENOTDIR => ERROR_PATH_NOT_FOUND,
        libc::EMFILE | libc::ENFILE => ERROR_TOO_MANY_OPEN_FILES,
        libc::EACCES | libc::EPERM | libc::EISDIR => ERROR_ACCESS_DENIED,
        libc::EBADF => ERROR_INVALID_HANDLE,
        libc::ENOMEM => ERROR_NOT_ENOUGH_MEMORY,
        libc::EROFS => ERROR_WRITE_PROTECT,
        libc::EEXIST => ERROR_FILE_EXISTS,
        libc::EINVAL => ERROR_INVALID_PARAMETER,
        libc::ENOSPC | libc::EDQUOT => ERROR_DISK_FULL,
        libc::ENAMETOOLONG => ERROR_FILENAME_EXCED_RANGE,
        libc::EIO => ERROR_IO_DEVICE,
        libc::ECANCELED => ERROR_OPERATION_ABORTED,
        libc::ECONNRESET | libc::EPIPE => ERROR_NETNAME_DELETED,
        libc::ECONNABORTED => ERROR_CONNECTION_ABORTED,
        libc::ECONNREFUSED => ERROR_CONNECTION_REFUSED,
        libc::ENETUNREACH => ERROR_NETWORK_UNREACHABLE,
        libc::EHOSTUNREACH => ERROR_HOST_UNREACHABLE,
        libc::ETIMEDOUT => ERROR_SEM_TIMEOUT,
        libc::EOPNOTSUPP => ERROR_NOT_SUPPORTED,
        // Socket-only errors keep their Winsock numbers.
        e => wsa_only(e).unwrap_or(APPLICATION_ERROR_BIT | e as DWORD),
    }
}

/// The Windows error a *Winsock call* (`WSARecv`, `closesocket`, …)
/// reports for `errno`.
pub(crate) fn wsa_from_errno(errno: i32) -> DWORD {
    match errno {
        libc::EBADF => WSAENOTSOCK,
        libc::EINVAL => WSAEINVAL,
        libc::EACCES | libc::EPERM => WSAEACCES,
        libc::EMFILE | libc::ENFILE => WSAEMFILE,
        libc::ECONNRESET | libc::EPIPE => WSAECONNRESET,
        libc::ECONNABORTED => WSAECONNABORTED,
        libc::ECONNREFUSED => WSAECONNREFUSED,
        libc::ENETUNREACH => WSAENETUNREACH,
        libc::EHOSTUNREACH => WSAEHOSTUNREACH,
        libc::ETIMEDOUT => WSAETIMEDOUT,
        libc::ECANCELED => WSA_OPERATION_ABORTED,
        libc::EOPNOTSUPP => WSAEOPNOTSUPP,
        libc::ENAMETOOLONG => WSAENAMETOOLONG,
        e => wsa_only(e).unwrap_or_else(|| win32_from_errno(e)),
    }
}

/// The Winsock number of a socket-only `errno`.
fn wsa_only(errno: i32) -> Option<DWORD> {
    Some(match errno {
        libc::EINTR => WSAEINTR,
        libc::EFAULT => WSAEFAULT,
        libc::EAGAIN => WSAEWOULDBLOCK,
        libc::EINPROGRESS => WSAEINPROGRESS,
        libc::EALREADY => WSAEALREADY,
        libc::ENOTSOCK => WSAENOTSOCK,
        libc::EDESTADDRREQ => WSAEDESTADDRREQ,
        libc::EMSGSIZE => WSAEMSGSIZE,
        libc::EPROTOTYPE => WSAEPROTOTYPE,
        libc::ENOPROTOOPT => WSAENOPROTOOPT,
        libc::EPROTONOSUPPORT => WSAEPROTONOSUPPORT,
        libc::ESOCKTNOSUPPORT => WSAESOCKTNOSUPPORT,
        libc::EAFNOSUPPORT => WSAEAFNOSUPPORT,
        libc::EADDRINUSE => WSAEADDRINUSE,
        libc::EADDRNOTAVAIL => WSAEADDRNOTAVAIL,
        libc::ENETDOWN => WSAENETDOWN,
        libc::ENETRESET => WSAENETRESET,
        libc::ENOBUFS => WSAENOBUFS,
        libc::EISCONN => WSAEISCONN,
        libc::ENOTCONN => WSAENOTCONN,
        libc::ESHUTDOWN => WSAESHUTDOWN,
        libc::EHOSTDOWN => WSAEHOSTDOWN,
        _ => return None,
    })
}

/// The Winsock error for an `io::Error` from a socket call.
pub(crate) fn wsa_from_io(e: &io::Error) -> DWORD {
    match e.raw_os_error() {
        Some(errno) => wsa_from_errno(errno),
        None => win32_from_io(e),
    }
}

/// The calling thread's `errno`, as an `io::Error`.
pub(crate) fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// NTSTATUS values Windows uses for the common failures.
const NT_TABLE: &[(DWORD, u32)] = &[
    (ERROR_OPERATION_ABORTED, 0xC000_0120),  // STATUS_CANCELLED
    (ERROR_HANDLE_EOF, 0xC000_0011),         // STATUS_END_OF_FILE
    (ERROR_NETNAME_DELETED, 0xC000_020D),    // STATUS_CONNECTION_RESET
    (ERROR_CONNECTION_ABORTED, 0xC000_0241), // STATUS_CONNECTION_ABORTED
    (ERROR_CONNECTION_REFUSED, 0xC000_0236), // STATUS_CONNECTION_REFUSED
    (ERROR_INVALID_HANDLE, 0xC000_0008),     // STATUS_INVALID_HANDLE
    (ERROR_INVALID_PARAMETER, 0xC000_000D),  // STATUS_INVALID_PARAMETER
    (ERROR_BROKEN_PIPE, 0xC000_014B),        // STATUS_PIPE_BROKEN
    (ERROR_ACCESS_DENIED, 0xC000_0022),      // STATUS_ACCESS_DENIED
    (ERROR_DISK_FULL, 0xC000_007F),          // STATUS_DISK_FULL
];

/// Marks an NTSTATUS that wraps a Windows error with no NTSTATUS of its own
/// (customer bit set); the error is in the low 16 bits, and
/// [`NT_APPLICATION`] stands for [`APPLICATION_ERROR_BIT`].
const NT_WRAPPED: u32 = 0xE000_0000;
const NT_APPLICATION: u32 = 0x0100_0000;

/// The NTSTATUS kept in `OVERLAPPED.Internal` for a Windows error.
pub(crate) fn ntstatus_from_win32(code: DWORD) -> ULONG_PTR {
    if code == ERROR_SUCCESS {
        return STATUS_SUCCESS as ULONG_PTR;
    }
    let nt = NT_TABLE.iter().find(|&&(w, _)| w == code).map_or_else(
        || {
            let app = if code & APPLICATION_ERROR_BIT != 0 {
                NT_APPLICATION
            } else {
                0
            };
            NT_WRAPPED | app | (code & 0xFFFF)
        },
        |&(_, nt)| nt,
    );
    nt as ULONG_PTR
}

/// The Windows error of an NTSTATUS kept in `OVERLAPPED.Internal`.
pub(crate) fn win32_from_ntstatus(status: ULONG_PTR) -> DWORD {
    let status = status as u32;
    if status == STATUS_SUCCESS {
        return ERROR_SUCCESS;
    }
    if let Some(&(w, _)) = NT_TABLE.iter().find(|&&(_, nt)| nt == status) {
        return w;
    }
    if status & 0xF000_0000 == NT_WRAPPED {
        let app = if status & NT_APPLICATION != 0 {
            APPLICATION_ERROR_BIT
        } else {
            0
        };
        return app | (status & 0xFFFF);
    }
    // Not written by us (a caller's own value): report it unchanged.
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntstatus_round_trips() {
        for code in [
            0,
            ERROR_OPERATION_ABORTED,
            ERROR_HANDLE_EOF,
            ERROR_NETNAME_DELETED,
            ERROR_FILE_NOT_FOUND,
            WSAECONNREFUSED,
            APPLICATION_ERROR_BIT | 200,
        ] {
            assert_eq!(win32_from_ntstatus(ntstatus_from_win32(code)), code);
        }
        assert_eq!(ntstatus_from_win32(ERROR_OPERATION_ABORTED), 0xC000_0120);
    }

    #[test]
    fn errno_tables() {
        assert_eq!(win32_from_errno(libc::ECANCELED), ERROR_OPERATION_ABORTED);
        assert_eq!(win32_from_errno(libc::ECONNRESET), ERROR_NETNAME_DELETED);
        assert_eq!(wsa_from_errno(libc::ECONNRESET), WSAECONNRESET);
        assert_eq!(win32_from_errno(libc::ENOTCONN), WSAENOTCONN);
        assert_eq!(
            win32_from_errno(libc::ELOOP),
            APPLICATION_ERROR_BIT | libc::ELOOP as DWORD
        );
    }
}
