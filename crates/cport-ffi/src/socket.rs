//! Winsock: `WSAStartup`, `WSACleanup`, `WSASocketA/W`, `WSARecv`,
//! `WSASend`, `WSAGetOverlappedResult`, `AcceptEx`,
//! `GetAcceptExSockaddrs`, `ConnectEx`, `closesocket`, `WSAGetLastError`,
//! `WSASetLastError` (spec §7).
//!
//! A `SOCKET` is the Linux fd: `bind`, `listen`, `setsockopt`,
//! `getsockname` are the system's own. Winsock calls report `WSAE*`
//! numbers; packets report `ERROR_*` numbers, as on Windows.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use completion_port::{Buf, Packet};

use crate::error::{errno, fail, set_last_error, win32_from_io, wsa_from_errno, wsa_from_io};
use crate::issue::{check_overlapped, finish_bool, finish_wsa, start};
use crate::object::{self, FdKind, Io, Target};
use crate::overlapped::{FfiOp, Stage, REGISTRY};
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
/// packet with `ERROR_OPERATION_ABORTED`, spec §5.22), ends its
/// association, closes the fd. 0, or `SOCKET_ERROR` with `WSAENOTSOCK`.
#[no_mangle]
pub extern "C" fn closesocket(s: SOCKET) -> i32 {
    if s > i32::MAX as usize || !close_fd(s as RawFd) {
        set_last_error(WSAENOTSOCK);
        return SOCKET_ERROR;
    }
    0
}

/// Forgets and closes plain fd `fd`; false when it was not open.
pub(crate) fn close_fd(fd: RawFd) -> bool {
    object::forget_fd(fd);
    // SAFETY: closing an fd number the caller gave us to close.
    unsafe { libc::close(fd) == 0 }
}

/// The socket target of `s`: `Ok(None)` when it is a socket no port knows.
fn socket_target(s: SOCKET) -> Result<Io, DWORD> {
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

/// Receives into one or more buffers (spec §7.30–31). Overlapped (an
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
    let refuse = |e| {
        set_last_error(e);
        SOCKET_ERROR
    };
    if !routine.is_null() || count as usize > completion_port::MAX_IOVECS {
        return refuse(WSAEINVAL);
    }
    if bufs.is_null() || count == 0 {
        return refuse(WSAEFAULT);
    }
    // SAFETY: `count` WSABUFs at `bufs` (caller).
    let wsabufs = unsafe { std::slice::from_raw_parts(bufs, count as usize) };
    if wsabufs.iter().any(|b| b.buf.is_null() && b.len > 0) {
        return refuse(WSAEFAULT);
    }
    let target = match socket_target(s) {
        Ok(Io::Known(t)) if t.assoc.get().is_some() && !ov.is_null() => t,
        // SAFETY: forwarded.
        Ok(_) => return unsafe { wsa_sync(dir, s as RawFd, wsabufs, done, ov) },
        Err(e) => return refuse(e),
    };
    let Some(assoc) = target.assoc.get() else {
        return refuse(WSAENOTSOCK);
    };
    // Not connected: fails at the call and queues nothing (spec §3.13), as
    // on Windows; the backends would report it in a packet.
    if !target.is_connected() {
        return refuse(WSAENOTCONN);
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
                    // dequeued (spec §3.12).
                    unsafe {
                        match dir {
                            Dir::Read => Buf::from_raw_parts(b.buf.cast(), 0, n),
                            Dir::Write => Buf::from_raw_parts(b.buf.cast(), n, n),
                        }
                    }
                })
                .collect();
            let r = match (dir, v.len()) {
                (Dir::Read, 1) => handle.recv(v.pop().expect("one buffer"), ctx),
                (Dir::Write, 1) => handle.send(v.pop().expect("one buffer"), ctx),
                (Dir::Read, _) => handle.recv_vectored(v, ctx),
                (Dir::Write, _) => handle.send_vectored(v, ctx),
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
        set_last_error(WSA_INVALID_PARAMETER);
        return SOCKET_ERROR;
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
        set_last_error(wsa_from_errno(error));
        return SOCKET_ERROR;
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

/// What an `AcceptEx` needs when its connection arrives.
pub(crate) struct AcceptState {
    accept_fd: RawFd,
    out: usize,
    recv_len: DWORD,
    local_len: DWORD,
    remote_len: DWORD,
    listener: Arc<Target>,
}

/// Room Windows requires per address in `AcceptEx`'s output buffer: the
/// largest address of the family plus 16 bytes.
fn addr_room(family: i32) -> usize {
    let max = if family == libc::AF_INET6 {
        std::mem::size_of::<libc::sockaddr_in6>()
    } else {
        std::mem::size_of::<libc::sockaddr_in>()
    };
    max + 16
}

/// Accepts a connection into the pre-created socket `sAcceptSocket`
/// (spec §7.28): the packet arrives on the **listening** socket's port and
/// key. When the connection arrives, it replaces `sAcceptSocket`'s socket
/// (the fd number stays; `dup3`), its local and remote addresses are
/// written after the receive area of `lpOutputBuffer` (read them with
/// `GetAcceptExSockaddrs`), and, if `dwReceiveDataLength > 0`, the first
/// data is received before the packet is queued (its bytes are the
/// packet's). The accepted socket is not associated with any port.
///
/// Needs the listening socket associated with a port, an unassociated
/// accept socket, and address lengths of at least the family's largest
/// address + 16 (`WSAEINVAL` otherwise). Returns `FALSE` with
/// `ERROR_IO_PENDING`.
///
/// # Safety
/// `lpOutputBuffer` must hold `dwReceiveDataLength +
/// dwLocalAddressLength + dwRemoteAddressLength` bytes and stay valid
/// (with the OVERLAPPED) until the packet is dequeued.
#[no_mangle]
pub unsafe extern "C" fn AcceptEx(
    sListenSocket: SOCKET,
    sAcceptSocket: SOCKET,
    lpOutputBuffer: LPVOID,
    dwReceiveDataLength: DWORD,
    dwLocalAddressLength: DWORD,
    dwRemoteAddressLength: DWORD,
    lpdwBytesReceived: LPDWORD,
    lpOverlapped: LPOVERLAPPED,
) -> BOOL {
    let listener = match socket_target(sListenSocket) {
        Ok(Io::Known(t)) if t.assoc.get().is_some() => t,
        Ok(_) => return fail(WSAEINVAL),
        Err(e) => return fail(e),
    };
    match socket_target(sAcceptSocket) {
        Ok(Io::Plain(_)) => {}
        Ok(Io::Known(t)) if t.assoc.get().is_none() => {}
        Ok(_) => return fail(WSAEINVAL),
        Err(e) => return fail(e),
    }
    if sAcceptSocket == sListenSocket {
        return fail(WSAEINVAL);
    }
    let room = match socket2::SockRef::from(&Fd(listener.fd)).local_addr() {
        Ok(a) => addr_room(a.family() as i32),
        Err(e) => return fail(wsa_from_io(&e)),
    };
    if (dwLocalAddressLength as usize) < room
        || (dwRemoteAddressLength as usize) < room
        || lpOutputBuffer.is_null()
    {
        return fail(WSAEINVAL);
    }
    if let Err(e) = check_overlapped(lpOverlapped) {
        return fail(e);
    }
    let state = AcceptState {
        accept_fd: sAcceptSocket as RawFd,
        out: lpOutputBuffer as usize,
        recv_len: dwReceiveDataLength,
        local_len: dwLocalAddressLength,
        remote_len: dwRemoteAddressLength,
        listener: listener.clone(),
    };
    let Some(assoc) = listener.assoc.get() else {
        return fail(WSAEINVAL);
    };
    let started = start(
        &listener,
        assoc,
        lpOverlapped,
        Stage::Accept(Box::new(state)),
        None,
        |handle, ctx| handle.accept(ctx).map(Some),
    );
    // SAFETY: `lpdwBytesReceived` is null or writable (caller).
    unsafe { finish_bool(started, lpdwBytesReceived) }
}

/// Borrowed fd for `socket2::SockRef`.
struct Fd(RawFd);

impl std::os::fd::AsFd for Fd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd is open for the duration of the borrow (the
        // caller holds the target that owns or names it).
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}

/// Writes `addr` at the start of the `room` bytes at `at`; false if it
/// does not fit.
///
/// # Safety
/// `at` must be valid for `room` bytes of writes.
unsafe fn put_addr(at: *mut u8, room: usize, addr: &socket2::SockAddr) -> bool {
    let len = addr.len() as usize;
    if len > room {
        return false;
    }
    // SAFETY: `addr` has `len` bytes; `at` has room for them (checked).
    unsafe { std::ptr::copy_nonoverlapping(addr.as_ptr().cast::<u8>(), at, len) };
    true
}

/// The first stage of an `AcceptEx` ended: installs the connection in the
/// accept socket and writes the addresses; issues the receive when data
/// was asked for (`None`: the packet is not the caller's yet).
pub(crate) fn accepted(packet: &mut Packet<FfiOp>) -> Option<(DWORD, DWORD)> {
    if let Err(e) = &packet.result {
        return Some((win32_from_io(e), 0));
    }
    let Some(conn) = packet.take_accepted() else {
        return Some((ERROR_INVALID_PARAMETER, 0));
    };
    let Stage::Accept(st) = &packet.context.stage else {
        unreachable!("accepted() is only called for Stage::Accept")
    };
    // SAFETY: both fds are open; `dup3` replaces the accept socket's
    // socket with the connection under the same number.
    if unsafe { libc::dup3(conn.socket.as_raw_fd(), st.accept_fd, libc::O_CLOEXEC) } < 0 {
        return Some((win32_from_io(&errno()), 0));
    }
    drop(conn.socket);
    let out = st.out as *mut u8;
    let local = socket2::SockRef::from(&Fd(st.accept_fd)).local_addr();
    // SAFETY: the caller lent `recv_len + local_len + remote_len` bytes at
    // `out` until the packet is dequeued (AcceptEx's contract).
    let fits = unsafe {
        let at_local = out.add(st.recv_len as usize);
        let at_remote = at_local.add(st.local_len as usize);
        local.is_ok_and(|a| put_addr(at_local, st.local_len as usize, &a))
            && put_addr(at_remote, st.remote_len as usize, &conn.peer)
    };
    if !fits {
        return Some((ERROR_INVALID_PARAMETER, 0));
    }
    if st.recv_len == 0 {
        return Some((0, 0));
    }
    // Second stage: receive the first data on a duplicate of the accepted
    // socket, associated with the listener's port under its key.
    let ov = packet.context.ov;
    let (recv_len, accept_fd, listener) = (st.recv_len, st.accept_fd, st.listener.clone());
    let Some(assoc) = listener.assoc.get() else {
        return Some((ERROR_INVALID_HANDLE, 0));
    };
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` has no memory arguments.
    let dup = unsafe { libc::fcntl(accept_fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Some((win32_from_io(&errno()), 0));
    }
    // SAFETY: `dup` is a new fd nobody else owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    let handle = match assoc.port.port.associate(dup, packet.key) {
        Ok(h) => h,
        Err(e) => return Some((win32_from_io(&e.error), 0)),
    };
    let no_packet = REGISTRY.with(ov, |p| p.no_packet).unwrap_or(false);
    let handle = if no_packet {
        handle.without_packets()
    } else {
        handle
    };
    let id = std::mem::take(&mut packet.context.id);
    let ctx = FfiOp {
        ov,
        id,
        stage: Stage::AcceptRecv,
    };
    // SAFETY: the receive area is the first `recv_len` bytes at `out`,
    // lent as above.
    let buf = unsafe { Buf::from_raw_parts(out, 0, recv_len as usize) };
    match handle.recv(buf, ctx) {
        Ok(token) => {
            REGISTRY.set_token(ov, id, token, Some(handle));
            None
        }
        Err(mut rejected) => {
            // Keep the entry until the caller sees the result.
            packet.context.id = std::mem::take(&mut rejected.context.id);
            Some((win32_from_io(&rejected.error), 0))
        }
    }
}

/// Finds the addresses `AcceptEx` wrote (spec §7.28). Each pointer points
/// into `lpOutputBuffer`; lengths are the addresses' sizes.
///
/// # Safety
/// `lpOutputBuffer` and the lengths must be those given to the completed
/// `AcceptEx`; the output pointers must be writable.
#[no_mangle]
pub unsafe extern "C" fn GetAcceptExSockaddrs(
    lpOutputBuffer: LPVOID,
    dwReceiveDataLength: DWORD,
    dwLocalAddressLength: DWORD,
    dwRemoteAddressLength: DWORD,
    LocalSockaddr: *mut *mut sockaddr,
    LocalSockaddrLength: *mut i32,
    RemoteSockaddr: *mut *mut sockaddr,
    RemoteSockaddrLength: *mut i32,
) {
    let _ = dwRemoteAddressLength;
    if lpOutputBuffer.is_null() {
        return;
    }
    // SAFETY: the buffer holds the areas AcceptEx wrote (caller).
    unsafe {
        let local = lpOutputBuffer
            .cast::<u8>()
            .add(dwReceiveDataLength as usize);
        let remote = local.add(dwLocalAddressLength as usize);
        for (at, p, l) in [
            (local, LocalSockaddr, LocalSockaddrLength),
            (remote, RemoteSockaddr, RemoteSockaddrLength),
        ] {
            let family = std::ptr::read_unaligned(at.cast::<libc::sa_family_t>()) as i32;
            let len = match family {
                libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => std::mem::size_of::<libc::sockaddr_in>(),
            };
            if !p.is_null() {
                *p = at.cast();
            }
            if !l.is_null() {
                *l = len as i32;
            }
        }
    }
}

/// The C `struct sockaddr` (opaque here).
#[repr(C)]
pub struct sockaddr {
    _opaque: [u8; 0],
}

/// What a `ConnectEx` with send data still has to send.
pub(crate) struct ConnectSend {
    buf: usize,
    len: DWORD,
}

/// Connects a **bound** socket associated with a port (spec §7.29): the
/// packet comes on the socket's port and key, after `dwSendDataLength`
/// bytes of `lpSendBuffer`, if any, were sent (the packet's bytes).
/// `WSAEINVAL` for an unbound or unassociated socket.
///
/// # Safety
/// `name` must hold `namelen` bytes of a socket address; `lpSendBuffer`
/// `dwSendDataLength` bytes that stay valid (with the OVERLAPPED) until
/// the packet is dequeued.
#[no_mangle]
pub unsafe extern "C" fn ConnectEx(
    s: SOCKET,
    name: *const sockaddr,
    namelen: i32,
    lpSendBuffer: LPVOID,
    dwSendDataLength: DWORD,
    lpdwBytesSent: LPDWORD,
    lpOverlapped: LPOVERLAPPED,
) -> BOOL {
    let target = match socket_target(s) {
        Ok(Io::Known(t)) if t.assoc.get().is_some() => t,
        Ok(_) => return fail(WSAEINVAL),
        Err(e) => return fail(e),
    };
    if name.is_null()
        || namelen <= 0
        || namelen as usize > std::mem::size_of::<libc::sockaddr_storage>()
        || (lpSendBuffer.is_null() && dwSendDataLength > 0)
    {
        return fail(WSAEFAULT);
    }
    // Windows requires a bound socket: an unbound one has port 0.
    let bound = socket2::SockRef::from(&Fd(target.fd))
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .is_some_and(|a| a.port() != 0);
    if !bound {
        return fail(WSAEINVAL);
    }
    let mut storage: libc::sockaddr_storage =
        // SAFETY: all-zero is a valid sockaddr_storage.
        unsafe { std::mem::zeroed() };
    // SAFETY: `name` holds `namelen` bytes (caller), which fit (checked).
    unsafe {
        std::ptr::copy_nonoverlapping(
            name.cast::<u8>(),
            (&mut storage as *mut libc::sockaddr_storage).cast::<u8>(),
            namelen as usize,
        )
    };
    // SAFETY: `storage` holds a socket address of `namelen` bytes.
    let addr = unsafe { socket2::SockAddr::new(storage, namelen as libc::socklen_t) };
    let Some(assoc) = target.assoc.get() else {
        return fail(WSAEINVAL);
    };
    let stage = Stage::Connect(Box::new(ConnectSend {
        buf: lpSendBuffer as usize,
        len: dwSendDataLength,
    }));
    let started = start(&target, assoc, lpOverlapped, stage, None, |handle, ctx| {
        handle.connect(addr, ctx).map(Some)
    });
    // SAFETY: null or writable (caller).
    unsafe { finish_bool(started, lpdwBytesSent) }
}

/// The connection of a `ConnectEx` is up: sends its data, if any (`None`:
/// the packet is not the caller's yet).
pub(crate) fn connected(packet: &mut Packet<FfiOp>) -> Option<(DWORD, DWORD)> {
    if let Err(e) = &packet.result {
        return Some((win32_from_io(e), 0));
    }
    let Stage::Connect(st) = &packet.context.stage else {
        unreachable!("connected() is only called for Stage::Connect")
    };
    if st.len == 0 {
        return Some((0, 0));
    }
    let (buf, len, ov) = (st.buf, st.len, packet.context.ov);
    let handle = REGISTRY.with(ov, |p| p.handle.clone())?;
    let id = std::mem::take(&mut packet.context.id);
    let ctx = FfiOp {
        ov,
        id,
        stage: Stage::Io { zero: None },
    };
    // SAFETY: the caller lent `len` bytes at `buf` until the packet is
    // dequeued (ConnectEx's contract).
    let b = unsafe { Buf::from_raw_parts(buf as *mut u8, len as usize, len as usize) };
    match handle.send(b, ctx) {
        Ok(token) => {
            REGISTRY.set_token(ov, id, token, None);
            None
        }
        Err(mut rejected) => {
            packet.context.id = std::mem::take(&mut rejected.context.id);
            Some((win32_from_io(&rejected.error), 0))
        }
    }
}
