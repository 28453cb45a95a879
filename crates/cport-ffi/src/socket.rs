//! Winsock: `WSAStartup`, `WSACleanup`, `WSASocketA/W`, `WSARecv`,
//! `WSASend`, `WSAGetOverlappedResult`, `closesocket`, `WSAGetLastError`,
//! `WSASetLastError` (windows-semantics §7). The Microsoft extensions (`AcceptEx`,
//! `ConnectEx`, …) are in `extension.rs`.
//!
//! A `SOCKET` is the Linux fd: `bind`, `listen`, `setsockopt`,
//! `getsockname` are the system's own. Winsock calls report `WSAE*`
//! numbers; packets report `ERROR_*` numbers, as on Windows.

use std::os::fd::RawFd;

use completion_port::Buf;

use crate::error::{errno, fail_wsa, set_last_error, wsa_from_errno, wsa_from_io};
use crate::issue::{finish_wsa, start};
use crate::object::{self, FdKind, Io};
use crate::overlapped::Stage;
use crate::types::*;

/// Starts Winsock: always succeeds (nothing to start on Linux) and fills
/// `lpWSAData` with version 2.2.
///
/// # Safety
/// `lpWSAData` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn WSAStartup(wVersionRequested: WORD, lpWSAData: LPWSADATA) -> i32 {
    if lpWSAData.is_null() {
        return WSAEFAULT as i32;
    }
    let mut data = WSADATA {
        wVersion: wVersionRequested.min(0x0202),
        wHighVersion: 0x0202,
        iMaxSockets: 0,
        iMaxUdpDg: 0,
        lpVendorInfo: std::ptr::null_mut(),
        szDescription: [0; 257],
        szSystemStatus: [0; 129],
    };
    for (d, s) in data.szDescription.iter_mut().zip(b"cport") {
        *d = *s as std::ffi::c_char;
    }
    for (d, s) in data.szSystemStatus.iter_mut().zip(b"Running") {
        *d = *s as std::ffi::c_char;
    }
    // SAFETY: non-null and writable (caller).
    unsafe { lpWSAData.write(data) };
    0
}

/// Ends Winsock: nothing to do; returns 0.
#[no_mangle]
pub extern "C" fn WSACleanup() -> i32 {
    0
}

/// The calling thread's last error (the same value as `GetLastError`).
#[no_mangle]
pub extern "C" fn WSAGetLastError() -> i32 {
    crate::error::last_error() as i32
}

/// Sets the calling thread's last error.
#[no_mangle]
pub extern "C" fn WSASetLastError(iError: i32) {
    set_last_error(iError as DWORD)
}

/// Creates a socket (`socket(af, type | SOCK_CLOEXEC, protocol)`).
/// `lpProtocolInfo` must be `NULL` and `g` 0; `WSA_FLAG_OVERLAPPED` is
/// accepted (every socket can do overlapped I/O here). Returns the fd, or
/// `INVALID_SOCKET` with the error.
///
/// # Safety
/// Nothing is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn WSASocketW(
    af: i32,
    r#type: i32,
    protocol: i32,
    lpProtocolInfo: LPVOID,
    g: u32,
    dwFlags: DWORD,
) -> SOCKET {
    let _ = dwFlags;
    if !lpProtocolInfo.is_null() || g != 0 {
        set_last_error(WSAEINVAL);
        return usize::MAX;
    }
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::socket(af, r#type | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        set_last_error(wsa_from_io(&errno()));
        return usize::MAX;
    }
    fd as SOCKET
}

/// `WSASocketW` (the protocol-info structure, unused, is the only
/// difference).
///
/// # Safety
/// As [`WSASocketW`].
#[no_mangle]
pub unsafe extern "C" fn WSASocketA(
    af: i32,
    r#type: i32,
    protocol: i32,
    lpProtocolInfo: LPVOID,
    g: u32,
    dwFlags: DWORD,
) -> SOCKET {
    // SAFETY: forwarded.
    unsafe { WSASocketW(af, r#type, protocol, lpProtocolInfo, g, dwFlags) }
}

/// Closes a socket: cancels its operations in flight (each queues its
/// packet with `ERROR_OPERATION_ABORTED`, windows-semantics §5.22) and ends the
/// `AcceptEx` operations it is the listener or accept socket of, ends its
/// association, wakes the threads blocked on it in `accept`, `recv`,
/// `send`, … (they fail with `WSAEINTR` through the header's wrappers; see
/// `blocked.rs`), closes the fd. 0, or `SOCKET_ERROR` with `WSAENOTSOCK`.
#[no_mangle]
pub extern "C" fn closesocket(s: SOCKET) -> i32 {
    if s > i32::MAX as usize || !close_fd(s as RawFd) {
        return fail_wsa(WSAENOTSOCK);
    }
    0
}

/// Forgets and closes plain fd `fd` (`closesocket`, `CloseHandle`); false
/// when it was not open.
pub(crate) fn close_fd(fd: RawFd) -> bool {
    crate::accept_live::closing(fd);
    object::forget_fd(fd);
    crate::blocked::wake_blocked(fd);
    // SAFETY: closing an fd number the caller gave us to close.
    unsafe { libc::close(fd) == 0 }
}

/// The socket target of `s`: `Ok(None)` when it is a socket no port knows.
pub(crate) fn socket_target(s: SOCKET) -> Result<Io, DWORD> {
    if s > i32::MAX as usize {
        return Err(WSAENOTSOCK);
    }
    let io = object::io_target(s as HANDLE).map_err(|_| WSAENOTSOCK)?;
    let kind = match &io {
        Io::Known(t) => t.kind,
        Io::Plain(fd) => object::kind_of(*fd).map_err(|_| WSAENOTSOCK)?,
    };
    if kind != FdKind::Socket {
        return Err(WSAENOTSOCK);
    }
    Ok(io)
}

/// Receives into one or more buffers (windows-semantics §7.30–31). Overlapped (an
/// OVERLAPPED on an associated socket): `SOCKET_ERROR` with
/// `WSA_IO_PENDING`, and one packet with the total bytes; a zero-length
/// buffer waits for data without consuming it; 0 bytes with success means
/// the peer closed. Otherwise it is a blocking receive in the call.
/// `lpFlags` is accepted and set to 0 (no `MSG_PEEK`/`MSG_OOB`);
/// completion routines are not supported (`WSAEINVAL`).
///
/// # Safety
/// `lpBuffers` must point to `dwBufferCount` WSABUFs whose buffers stay
/// valid (with the OVERLAPPED) until the packet is dequeued; the output
/// pointers must be null or writable.
#[no_mangle]
pub unsafe extern "C" fn WSARecv(
    s: SOCKET,
    lpBuffers: LPWSABUF,
    dwBufferCount: DWORD,
    lpNumberOfBytesRecvd: LPDWORD,
    lpFlags: LPDWORD,
    lpOverlapped: LPWSAOVERLAPPED,
    lpCompletionRoutine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32 {
    if !lpFlags.is_null() {
        // SAFETY: writable (caller).
        unsafe { *lpFlags = 0 };
    }
    // SAFETY: forwarded.
    unsafe {
        wsa_transfer(
            crate::file::Dir::Read,
            s,
            lpBuffers,
            dwBufferCount,
            lpNumberOfBytesRecvd,
            lpOverlapped,
            lpCompletionRoutine,
        )
    }
}

/// Sends one or more buffers (gather); like [`WSARecv`]. The packet
/// reports the bytes the stack accepted. Never raises `SIGPIPE`.
///
/// # Safety
/// As [`WSARecv`].
#[no_mangle]
pub unsafe extern "C" fn WSASend(
    s: SOCKET,
    lpBuffers: LPWSABUF,
    dwBufferCount: DWORD,
    lpNumberOfBytesSent: LPDWORD,
    dwFlags: DWORD,
    lpOverlapped: LPWSAOVERLAPPED,
    lpCompletionRoutine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32 {
    let _ = dwFlags;
    // SAFETY: forwarded.
    unsafe {
        wsa_transfer(
            crate::file::Dir::Write,
            s,
            lpBuffers,
            dwBufferCount,
            lpNumberOfBytesSent,
            lpOverlapped,
            lpCompletionRoutine,
        )
    }
}

/// # Safety
/// As [`WSARecv`].
unsafe fn wsa_transfer(
    dir: crate::file::Dir,
    s: SOCKET,
    bufs: LPWSABUF,
    count: DWORD,
    done: LPDWORD,
    ov: LPOVERLAPPED,
    routine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32 {
    use crate::file::Dir;
    if !routine.is_null() || count as usize > completion_port::MAX_IOVECS {
        return fail_wsa(WSAEINVAL);
    }
    if bufs.is_null() || count == 0 {
        return fail_wsa(WSAEFAULT);
    }
    // SAFETY: `count` WSABUFs at `bufs` (caller).
    let wsabufs = unsafe { std::slice::from_raw_parts(bufs, count as usize) };
    if wsabufs.iter().any(|b| b.buf.is_null() && b.len > 0) {
        return fail_wsa(WSAEFAULT);
    }
    let target = match socket_target(s) {
        Ok(Io::Known(t)) if t.assoc.get().is_some() && !ov.is_null() => t,
        // SAFETY: forwarded.
        Ok(_) => return unsafe { wsa_sync(dir, s as RawFd, wsabufs, done, ov) },
        Err(e) => return fail_wsa(e),
    };
    let Some(assoc) = target.assoc.get() else {
        return fail_wsa(WSAENOTSOCK);
    };
    // Not connected: fails at the call and queues nothing (windows-semantics §3.13), as
    // on Windows; the backends would report it in a packet.
    if !target.is_connected() {
        return fail_wsa(WSAENOTCONN);
    }
    let started = start(
        &target,
        assoc,
        ov,
        Stage::Io { zero: None },
        None,
        |handle, ctx| {
            let mut v: Vec<Buf> = wsabufs
                .iter()
                .map(|b| {
                    let n = b.len as usize;
                    // SAFETY: the caller lends each buffer until the packet is
                    // dequeued (windows-semantics §3.12).
                    unsafe {
                        match dir {
                            Dir::Read => Buf::from_raw_parts(b.buf.cast(), 0, n),
                            Dir::Write => Buf::from_raw_parts(b.buf.cast(), n, n),
                        }
                    }
                })
                .collect();
            let room: usize = v.iter().map(Buf::spare_capacity).sum();
            // A stream send completes whole, as on Windows: the port sends
            // the rest of a short send itself, in order with later sends.
            let r = match (dir, v.len()) {
                // The zero-byte receive: completes once data is there.
                (Dir::Read, _) if room == 0 => handle.wait_readable(ctx),
                (Dir::Read, 1) => handle.recv(v.pop().expect("one buffer"), ctx),
                (Dir::Write, 1) => handle.send_all(v.pop().expect("one buffer"), ctx),
                (Dir::Read, _) => handle.recv_vectored(v, ctx),
                (Dir::Write, _) => handle.send_all_vectored(v, ctx),
            };
            r.map(Some)
        },
    )
    .map_err(|e| match e {
        ERROR_INVALID_PARAMETER => WSA_INVALID_PARAMETER,
        ERROR_NETNAME_DELETED => WSAECONNRESET,
        e => e,
    });
    // SAFETY: `done` is null or writable (caller).
    unsafe { finish_wsa(started, done) }
}

/// The blocking path of `WSARecv`/`WSASend`.
///
/// # Safety
/// As [`WSARecv`].
unsafe fn wsa_sync(
    dir: crate::file::Dir,
    fd: RawFd,
    bufs: &[WSABUF],
    done: LPDWORD,
    ov: LPOVERLAPPED,
) -> i32 {
    if !ov.is_null() && !crate::overlapped::is_usable(ov) {
        return fail_wsa(WSA_INVALID_PARAMETER);
    }
    let iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.buf.cast(),
            iov_len: b.len as usize,
        })
        .collect();
    // SAFETY: a zeroed msghdr is valid; we set the iovec array, which lives
    // until the call returns; the buffers are the caller's (valid).
    let r = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        match dir {
            crate::file::Dir::Read => libc::recvmsg(fd, &mut msg, 0),
            crate::file::Dir::Write => libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL),
        }
    };
    let (error, n) = if r < 0 {
        (errno().raw_os_error().unwrap_or(libc::EIO), 0)
    } else {
        (0, r as DWORD)
    };
    if !ov.is_null() {
        // SAFETY: usable (checked); synchronous, so no operation of ours
        // uses it.
        unsafe { crate::overlapped::mark_done(ov, crate::error::win32_from_errno(error), n) };
    }
    if error != 0 {
        return fail_wsa(wsa_from_errno(error));
    }
    if !done.is_null() {
        // SAFETY: writable (caller).
        unsafe { *done = n };
    }
    0
}

/// `WSAGetOverlappedResult`: [`GetOverlappedResult`](crate::file::GetOverlappedResult)
/// for sockets; `lpdwFlags` is set to 0.
///
/// # Safety
/// As `GetOverlappedResult`; `lpdwFlags` null or writable.
#[no_mangle]
pub unsafe extern "C" fn WSAGetOverlappedResult(
    s: SOCKET,
    lpOverlapped: LPWSAOVERLAPPED,
    lpcbTransfer: LPDWORD,
    fWait: BOOL,
    lpdwFlags: LPDWORD,
) -> BOOL {
    if !lpdwFlags.is_null() {
        // SAFETY: writable (caller).
        unsafe { *lpdwFlags = 0 };
    }
    // SAFETY: forwarded.
    unsafe { crate::file::GetOverlappedResult(s as HANDLE, lpOverlapped, lpcbTransfer, fWait) }
}

/// Borrowed fd for `socket2::SockRef`.
pub(crate) struct Fd(pub(crate) RawFd);

impl std::os::fd::AsFd for Fd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd is open for the duration of the borrow (the
        // caller holds the target that owns or names it).
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}
