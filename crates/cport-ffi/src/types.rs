//! Win32 types and constants, with Windows' names, values and 64-bit
//! layout, so code written for `<windows.h>` / `<winsock2.h>` /
//! `<mswsock.h>` compiles against `cport.h` unchanged.
//!
//! `OVERLAPPED` (with its anonymous union) and the pointer-valued constants
//! (`INVALID_HANDLE_VALUE`, `INVALID_SOCKET`) are written by hand in the
//! header's prelude (`cbindgen.toml`), since C's anonymous members cannot be
//! generated; [`OVERLAPPED`] here has the same layout, checked by the tests
//! on both sides.

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::c_void;

/// A kernel object: a port or a file from `CreateFileA` (tagged values), or
/// a plain Linux fd cast to `HANDLE`, as Windows code casts a `SOCKET`.
pub type HANDLE = *mut c_void;
/// Win32 `BOOL`: `TRUE` (1) or `FALSE` (0).
pub type BOOL = i32;
/// Win32 `DWORD`: 32 bits on every platform (not C's `unsigned long`).
pub type DWORD = u32;
/// Win32 `ULONG`: 32 bits.
pub type ULONG = u32;
/// Win32 `WORD`.
pub type WORD = u16;
/// Pointer-sized unsigned integer (completion keys).
pub type ULONG_PTR = usize;
/// Pointer to a completion key.
pub type PULONG_PTR = *mut ULONG_PTR;
/// Pointer to a `DWORD`.
pub type LPDWORD = *mut DWORD;
/// Untyped pointer.
pub type LPVOID = *mut c_void;
/// Untyped pointer to constant data.
pub type LPCVOID = *const c_void;
/// Pointer to a NUL-terminated narrow string.
pub type LPCSTR = *const std::ffi::c_char;
/// Pointer to a NUL-terminated wide string (UTF-16).
pub type LPCWSTR = *const u16;
/// A socket: the Linux fd, as an unsigned pointer-sized integer.
pub type SOCKET = usize;
/// Pointer to an [`OVERLAPPED`].
pub type LPOVERLAPPED = *mut OVERLAPPED;
/// `WSAOVERLAPPED` is the same structure.
pub type LPWSAOVERLAPPED = *mut OVERLAPPED;
/// Pointer to an [`OVERLAPPED_ENTRY`].
pub type LPOVERLAPPED_ENTRY = *mut OVERLAPPED_ENTRY;
/// Pointer to a [`WSABUF`].
pub type LPWSABUF = *mut WSABUF;
/// Completion routines are not supported: pass `NULL`.
pub type LPWSAOVERLAPPED_COMPLETION_ROUTINE = *mut c_void;

/// `OffsetHigh:Offset`, the file position of an operation (its first
/// member in the header's anonymous union, beside `Pointer`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OVERLAPPED_OFFSET {
    /// Low 32 bits of the file position.
    pub Offset: DWORD,
    /// High 32 bits of the file position.
    pub OffsetHigh: DWORD,
}

/// The per-operation structure (32 bytes). The header declares it with
/// Windows' anonymous union, so `ov.Offset` / `ov.OffsetHigh` /
/// `ov.Pointer` work as in Windows code; this Rust twin names the union
/// `u` and has the same layout.
///
/// `Internal` holds the status (`STATUS_PENDING` while in flight, 0 on
/// success, an NTSTATUS on failure) and `InternalHigh` the bytes
/// transferred, as on Windows; read them with `GetOverlappedResult` or
/// `HasOverlappedIoCompleted`. `hEvent` may name an event (`CreateEvent`):
/// the operation resets it when it starts and signals it when it ends
/// (`crate::win32::event`); with its low bit set, the operation queues no
/// packet (windows-semantics §3.14).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OVERLAPPED {
    /// Status of the operation (an NTSTATUS).
    pub Internal: ULONG_PTR,
    /// Bytes transferred.
    pub InternalHigh: ULONG_PTR,
    /// File position, or a user pointer.
    pub u: OVERLAPPED_U,
    /// An event signalled when the operation ends; low bit set: no
    /// completion packet.
    pub hEvent: HANDLE,
}

/// The union inside [`OVERLAPPED`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union OVERLAPPED_U {
    /// File position.
    pub s: OVERLAPPED_OFFSET,
    /// User pointer (not used by the system).
    pub Pointer: *mut c_void,
}

/// One dequeued packet, as `GetQueuedCompletionStatusEx` returns it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OVERLAPPED_ENTRY {
    /// Completion key of the handle (or of the post).
    pub lpCompletionKey: ULONG_PTR,
    /// The operation's OVERLAPPED (or the value posted).
    pub lpOverlapped: LPOVERLAPPED,
    /// Status of the operation (an NTSTATUS: 0 on success).
    pub Internal: ULONG_PTR,
    /// Bytes transferred.
    pub dwNumberOfBytesTransferred: DWORD,
}

/// One buffer of a scatter/gather socket operation.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WSABUF {
    /// Length of the buffer in bytes.
    pub len: ULONG,
    /// The buffer.
    pub buf: *mut std::ffi::c_char,
}

/// What `WSAStartup` reports (64-bit Windows layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WSADATA {
    /// Version the caller will use.
    pub wVersion: WORD,
    /// Highest version supported.
    pub wHighVersion: WORD,
    /// Obsolete; 0.
    pub iMaxSockets: u16,
    /// Obsolete; 0.
    pub iMaxUdpDg: u16,
    /// Obsolete; NULL.
    pub lpVendorInfo: *mut std::ffi::c_char,
    /// "cport".
    pub szDescription: [std::ffi::c_char; 257],
    /// "Running".
    pub szSystemStatus: [std::ffi::c_char; 129],
}
/// Pointer to a [`WSADATA`].
pub type LPWSADATA = *mut WSADATA;

/// The "no handle" value `CreateFileA` returns on failure, and the first
/// argument of `CreateIoCompletionPort` that creates a port.
pub const INVALID_HANDLE_VALUE: HANDLE = usize::MAX as HANDLE;
/// The "no socket" value `WSASocket` returns on failure.
pub const INVALID_SOCKET: SOCKET = usize::MAX;

// ---- Booleans, timeouts -------------------------------------------------

/// Win32 `TRUE`.
pub const TRUE: BOOL = 1;
/// Win32 `FALSE`.
pub const FALSE: BOOL = 0;
/// Wait forever.
pub const INFINITE: DWORD = 0xFFFF_FFFF;
/// Returned by Winsock calls that fail; the error is in `WSAGetLastError()`.
pub const SOCKET_ERROR: i32 = -1;

// ---- Error numbers (Windows' values) ------------------------------------

/// The operation completed successfully.
pub const ERROR_SUCCESS: DWORD = 0;
/// `open`: `ENOENT`.
pub const ERROR_FILE_NOT_FOUND: DWORD = 2;
/// `open`: `ENOTDIR`, or a missing directory in the path.
pub const ERROR_PATH_NOT_FOUND: DWORD = 3;
/// `EMFILE` / `ENFILE`.
pub const ERROR_TOO_MANY_OPEN_FILES: DWORD = 4;
/// `EACCES`, `EPERM`, `EISDIR`.
pub const ERROR_ACCESS_DENIED: DWORD = 5;
/// Not a handle this library knows (closed, stale or made up), or `EBADF`.
pub const ERROR_INVALID_HANDLE: DWORD = 6;
/// `ENOMEM`.
pub const ERROR_NOT_ENOUGH_MEMORY: DWORD = 8;
/// `EROFS`.
pub const ERROR_WRITE_PROTECT: DWORD = 19;
/// Read at or past the end of a file.
pub const ERROR_HANDLE_EOF: DWORD = 38;
/// `ENOTSUP` / `EOPNOTSUPP` outside sockets.
pub const ERROR_NOT_SUPPORTED: DWORD = 50;
/// A socket reset by its peer, seen in a packet (`ECONNRESET`, `EPIPE`).
pub const ERROR_NETNAME_DELETED: DWORD = 64;
/// `CreateFileA(CREATE_NEW)` on an existing file (`EEXIST`).
pub const ERROR_FILE_EXISTS: DWORD = 80;
/// Bad argument (`EINVAL`), double association, a pending OVERLAPPED
/// reused, `alertable = TRUE`.
pub const ERROR_INVALID_PARAMETER: DWORD = 87;
/// A pipe read whose writers all closed.
pub const ERROR_BROKEN_PIPE: DWORD = 109;
/// `ENOSPC`.
pub const ERROR_DISK_FULL: DWORD = 112;
/// `ETIMEDOUT` outside Winsock calls.
pub const ERROR_SEM_TIMEOUT: DWORD = 121;
/// `ENAMETOOLONG`.
pub const ERROR_FILENAME_EXCED_RANGE: DWORD = 206;
/// Set (with success) by `CreateFileA` with `CREATE_ALWAYS`/`OPEN_ALWAYS`
/// when the file existed.
pub const ERROR_ALREADY_EXISTS: DWORD = 183;
/// `GetQueuedCompletionStatus`: no packet before the timeout.
pub const WAIT_TIMEOUT: DWORD = 258;
/// `EAGAIN` where no wait is possible.
pub const ERROR_MORE_DATA: DWORD = 234;
/// `GetQueuedCompletionStatus`: the port was closed while waiting.
pub const ERROR_ABANDONED_WAIT_0: DWORD = 735;
/// The operation was cancelled (`CancelIoEx`, `CloseHandle`,
/// `closesocket`).
pub const ERROR_OPERATION_ABORTED: DWORD = 995;
/// `GetOverlappedResult(bWait = FALSE)` on an operation still in flight.
pub const ERROR_IO_INCOMPLETE: DWORD = 996;
/// The operation was started and will complete later.
pub const ERROR_IO_PENDING: DWORD = 997;
/// `EIO`.
pub const ERROR_IO_DEVICE: DWORD = 1117;
/// `CancelIoEx`: nothing to cancel.
pub const ERROR_NOT_FOUND: DWORD = 1168;
/// `ECONNREFUSED` in a packet.
pub const ERROR_CONNECTION_REFUSED: DWORD = 1225;
/// `ENETUNREACH` in a packet.
pub const ERROR_NETWORK_UNREACHABLE: DWORD = 1231;
/// `EHOSTUNREACH` in a packet.
pub const ERROR_HOST_UNREACHABLE: DWORD = 1232;
/// `ECONNABORTED` in a packet.
pub const ERROR_CONNECTION_ABORTED: DWORD = 1236;

/// Winsock: same value as `ERROR_IO_PENDING`.
pub const WSA_IO_PENDING: DWORD = 997;
/// Winsock: same value as `ERROR_IO_INCOMPLETE`.
pub const WSA_IO_INCOMPLETE: DWORD = 996;
/// Winsock: same value as `ERROR_OPERATION_ABORTED`.
pub const WSA_OPERATION_ABORTED: DWORD = 995;
/// Winsock: same value as `ERROR_INVALID_HANDLE`.
pub const WSA_INVALID_HANDLE: DWORD = 6;
/// Winsock: same value as `ERROR_INVALID_PARAMETER`.
pub const WSA_INVALID_PARAMETER: DWORD = 87;
/// `EINTR`.
pub const WSAEINTR: DWORD = 10004;
/// `EBADF` on a socket call.
pub const WSAEBADF: DWORD = 10009;
/// `EACCES`.
pub const WSAEACCES: DWORD = 10013;
/// `EFAULT`: a bad pointer.
pub const WSAEFAULT: DWORD = 10014;
/// `EINVAL`.
pub const WSAEINVAL: DWORD = 10022;
/// `EMFILE`.
pub const WSAEMFILE: DWORD = 10024;
/// `EAGAIN` / `EWOULDBLOCK`.
pub const WSAEWOULDBLOCK: DWORD = 10035;
/// `EINPROGRESS`.
pub const WSAEINPROGRESS: DWORD = 10036;
/// `EALREADY`.
pub const WSAEALREADY: DWORD = 10037;
/// `ENOTSOCK`: not a socket.
pub const WSAENOTSOCK: DWORD = 10038;
/// `EDESTADDRREQ`.
pub const WSAEDESTADDRREQ: DWORD = 10039;
/// `EMSGSIZE`.
pub const WSAEMSGSIZE: DWORD = 10040;
/// `EPROTOTYPE`.
pub const WSAEPROTOTYPE: DWORD = 10041;
/// `ENOPROTOOPT`.
pub const WSAENOPROTOOPT: DWORD = 10042;
/// `EPROTONOSUPPORT`.
pub const WSAEPROTONOSUPPORT: DWORD = 10043;
/// `ESOCKTNOSUPPORT`.
pub const WSAESOCKTNOSUPPORT: DWORD = 10044;
/// `EOPNOTSUPP`.
pub const WSAEOPNOTSUPP: DWORD = 10045;
/// `EAFNOSUPPORT`.
pub const WSAEAFNOSUPPORT: DWORD = 10047;
/// `EADDRINUSE`.
pub const WSAEADDRINUSE: DWORD = 10048;
/// `EADDRNOTAVAIL`.
pub const WSAEADDRNOTAVAIL: DWORD = 10049;
/// `ENETDOWN`.
pub const WSAENETDOWN: DWORD = 10050;
/// `ENETUNREACH`.
pub const WSAENETUNREACH: DWORD = 10051;
/// `ENETRESET`.
pub const WSAENETRESET: DWORD = 10052;
/// `ECONNABORTED`.
pub const WSAECONNABORTED: DWORD = 10053;
/// `ECONNRESET`, `EPIPE`.
pub const WSAECONNRESET: DWORD = 10054;
/// `ENOBUFS`.
pub const WSAENOBUFS: DWORD = 10055;
/// `EISCONN`.
pub const WSAEISCONN: DWORD = 10056;
/// `ENOTCONN`.
pub const WSAENOTCONN: DWORD = 10057;
/// `ESHUTDOWN`.
pub const WSAESHUTDOWN: DWORD = 10058;
/// `ETIMEDOUT`.
pub const WSAETIMEDOUT: DWORD = 10060;
/// `ECONNREFUSED`.
pub const WSAECONNREFUSED: DWORD = 10061;
/// `ENAMETOOLONG`.
pub const WSAENAMETOOLONG: DWORD = 10063;
/// `EHOSTDOWN`.
pub const WSAEHOSTDOWN: DWORD = 10064;
/// `EHOSTUNREACH`.
pub const WSAEHOSTUNREACH: DWORD = 10065;
/// `WSAStartup` was not called (never reported: startup is optional here).
pub const WSANOTINITIALISED: DWORD = 10093;
/// Errors with no Windows equivalent: `APPLICATION_ERROR_BIT | errno`
/// (bit 29 is the bit Windows reserves for application-defined codes).
pub const APPLICATION_ERROR_BIT: DWORD = 0x2000_0000;

// ---- NTSTATUS values kept in OVERLAPPED.Internal ------------------------

/// The operation is in flight.
pub const STATUS_PENDING: DWORD = 0x0000_0103;
/// Success.
pub const STATUS_SUCCESS: DWORD = 0;

// ---- CreateFileA --------------------------------------------------------

/// Read access.
pub const GENERIC_READ: DWORD = 0x8000_0000;
/// Write access.
pub const GENERIC_WRITE: DWORD = 0x4000_0000;
/// Share modes are accepted and ignored (Linux has no mandatory sharing).
pub const FILE_SHARE_READ: DWORD = 0x1;
/// See [`FILE_SHARE_READ`].
pub const FILE_SHARE_WRITE: DWORD = 0x2;
/// See [`FILE_SHARE_READ`].
pub const FILE_SHARE_DELETE: DWORD = 0x4;
/// Create; fail if it exists (`O_CREAT | O_EXCL`).
pub const CREATE_NEW: DWORD = 1;
/// Create or truncate (`O_CREAT | O_TRUNC`).
pub const CREATE_ALWAYS: DWORD = 2;
/// Open; fail if missing.
pub const OPEN_EXISTING: DWORD = 3;
/// Open or create (`O_CREAT`).
pub const OPEN_ALWAYS: DWORD = 4;
/// Open and truncate; fail if missing (needs `GENERIC_WRITE`).
pub const TRUNCATE_EXISTING: DWORD = 5;
/// Accepted and ignored.
pub const FILE_ATTRIBUTE_NORMAL: DWORD = 0x80;
/// Overlapped I/O: reads and writes take their offset from the OVERLAPPED
/// and complete through the port.
pub const FILE_FLAG_OVERLAPPED: DWORD = 0x4000_0000;
/// `O_DIRECT`: buffers, offsets and sizes must be multiples of the
/// device's logical block size.
pub const FILE_FLAG_NO_BUFFERING: DWORD = 0x2000_0000;
/// `O_DSYNC`.
pub const FILE_FLAG_WRITE_THROUGH: DWORD = 0x8000_0000;

// ---- SetFileCompletionNotificationModes ---------------------------------

/// An operation that succeeds during its call queues no packet; the call
/// returns `TRUE` and the caller handles the result inline.
pub const FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: u8 = 0x1;
/// Accepted and ignored (a file handle is not an event here; the
/// OVERLAPPED's `hEvent` is still signalled).
pub const FILE_SKIP_SET_EVENT_ON_HANDLE: u8 = 0x2;

// ---- Winsock ------------------------------------------------------------

/// `WSASocket` flag: the socket is used for overlapped I/O (always true on
/// Linux; accepted).
pub const WSA_FLAG_OVERLAPPED: DWORD = 0x01;
/// `WSASocket` flag: close-on-exec (always set here).
pub const WSA_FLAG_NO_HANDLE_INHERIT: DWORD = 0x80;
/// `setsockopt` option Windows servers set after `AcceptEx`: through the
/// header's `setsockopt` it is checked and succeeds (the accepted socket
/// already has the listener's properties on Linux, and the options set on
/// the accept socket were carried over).
pub const SO_UPDATE_ACCEPT_CONTEXT: i32 = 0x700B;
/// The same, after `ConnectEx`.
pub const SO_UPDATE_CONNECT_CONTEXT: i32 = 0x7010;

// ---- Extension function pointers (WSAIoctl) -----------------------------

/// A Windows GUID (16 bytes). The header defines `WSAID_ACCEPTEX`,
/// `WSAID_CONNECTEX` and `WSAID_GETACCEPTEXSOCKADDRS` as initialisers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GUID {
    /// First 4 bytes.
    pub Data1: u32,
    /// Next 2 bytes.
    pub Data2: u16,
    /// Next 2 bytes.
    pub Data3: u16,
    /// Last 8 bytes.
    pub Data4: [u8; 8],
}

/// `WSAIoctl` code asking for an extension function's address by GUID.
pub const SIO_GET_EXTENSION_FUNCTION_POINTER: DWORD = 0xC800_0006;

/// `AcceptEx`'s GUID.
pub const WSAID_ACCEPTEX_GUID: GUID = GUID {
    Data1: 0xb536_7df1,
    Data2: 0xcbac,
    Data3: 0x11cf,
    Data4: [0x95, 0xca, 0x00, 0x80, 0x5f, 0x48, 0xa1, 0x92],
};
/// `GetAcceptExSockaddrs`'s GUID.
pub const WSAID_GETACCEPTEXSOCKADDRS_GUID: GUID = GUID {
    Data1: 0xb536_7df2,
    Data2: 0xcbac,
    Data3: 0x11cf,
    Data4: [0x95, 0xca, 0x00, 0x80, 0x5f, 0x48, 0xa1, 0x92],
};
/// `ConnectEx`'s GUID.
pub const WSAID_CONNECTEX_GUID: GUID = GUID {
    Data1: 0x25a2_07b9,
    Data2: 0xddf3,
    Data3: 0x4660,
    Data4: [0x8e, 0xe9, 0x76, 0xe5, 0x8c, 0x74, 0x06, 0x3e],
};

/// Pointer to `AcceptEx`, as `WSAIoctl` returns it.
pub type LPFN_ACCEPTEX = Option<
    unsafe extern "C" fn(
        SOCKET,
        SOCKET,
        LPVOID,
        DWORD,
        DWORD,
        DWORD,
        LPDWORD,
        LPOVERLAPPED,
    ) -> BOOL,
>;
/// Pointer to `ConnectEx`, as `WSAIoctl` returns it.
pub type LPFN_CONNECTEX = Option<
    unsafe extern "C" fn(
        SOCKET,
        *const crate::extension::sockaddr,
        i32,
        LPVOID,
        DWORD,
        LPDWORD,
        LPOVERLAPPED,
    ) -> BOOL,
>;
/// Pointer to `GetAcceptExSockaddrs`, as `WSAIoctl` returns it.
pub type LPFN_GETACCEPTEXSOCKADDRS = Option<
    unsafe extern "C" fn(
        LPVOID,
        DWORD,
        DWORD,
        DWORD,
        *mut *mut crate::extension::sockaddr,
        *mut i32,
        *mut *mut crate::extension::sockaddr,
        *mut i32,
    ),
>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The 64-bit Windows layouts the header's hand-written OVERLAPPED and
    /// the generated structures must match (the C suite checks the C side).
    #[test]
    fn layouts_match_64_bit_windows() {
        assert_eq!(size_of::<OVERLAPPED>(), 32);
        assert_eq!(offset_of!(OVERLAPPED, InternalHigh), 8);
        assert_eq!(offset_of!(OVERLAPPED, u), 16);
        assert_eq!(offset_of!(OVERLAPPED_OFFSET, OffsetHigh), 4);
        assert_eq!(offset_of!(OVERLAPPED, hEvent), 24);
        assert_eq!(size_of::<OVERLAPPED_ENTRY>(), 32);
        assert_eq!(offset_of!(OVERLAPPED_ENTRY, dwNumberOfBytesTransferred), 24);
        assert_eq!(size_of::<WSABUF>(), 16);
        assert_eq!(offset_of!(WSABUF, buf), 8);
    }
}
