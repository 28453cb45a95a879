//! The Microsoft extensions of Winsock (`<mswsock.h>`): `AcceptEx`,
//! `GetAcceptExSockaddrs`, `ConnectEx` (windows-semantics §7.28–29), `WSAIoctl`'s
//! `SIO_GET_EXTENSION_FUNCTION_POINTER` that hands out their addresses, and their
//! completions, which may issue a second stage (the first receive of an
//! `AcceptEx`, the data of a `ConnectEx`) before the caller sees a packet.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use completion_port::{Buf, Packet};

use crate::accept_live::{self, Ticket};
use crate::error::{errno, fail, fail_wsa, win32_from_io, wsa_from_io};
use crate::issue::{check_overlapped, finish_bool, next_stage, start};
use crate::object::{Io, Target};
use crate::overlapped::{FfiOp, Stage, REGISTRY};
use crate::socket::{socket_target, Fd};
use crate::types::*;

/// What an `AcceptEx` needs when its connection arrives.
pub(crate) struct AcceptState {
    /// Its entry among the `AcceptEx` operations in flight (moves to the
    /// receive stage).
    ticket: Option<Ticket>,
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
/// (windows-semantics §7.28): the packet arrives on the **listening** socket's port and
/// key. When the connection arrives, it replaces `sAcceptSocket`'s socket
/// (the fd number stays; `dup3`), its local and remote addresses are
/// written after the receive area of `lpOutputBuffer` (read them with
/// `GetAcceptExSockaddrs`), and, if `dwReceiveDataLength > 0`, the first
/// data is received before the packet is queued (its bytes are the
/// packet's). The accepted socket is not associated with any port.
///
/// Needs a **listening** socket associated with a port, an unassociated
/// accept socket that no other `AcceptEx` in flight uses, and address
/// lengths of at least the family's largest address + 16 (`WSAEINVAL`
/// otherwise, queuing nothing); a null output buffer is `WSAEFAULT`.
/// Returns `FALSE` with `ERROR_IO_PENDING`. Options set on the accept
/// socket before the call are those of the accepted connection
/// (`sockopt.rs`); closing the listener or the accept socket, or
/// cancelling on the listener, ends the operation in either stage
/// (`accept_live.rs`).
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
    let borrowed = Fd(listener.fd);
    let sock = socket2::SockRef::from(&borrowed);
    // Not listening: refused at the call, as Windows does (the backends
    // would fail it in a packet).
    match sock.is_listener() {
        Ok(true) => {}
        Ok(false) => return fail(WSAEINVAL),
        Err(e) => return fail(wsa_from_io(&e)),
    }
    if lpOutputBuffer.is_null() {
        return fail(WSAEFAULT);
    }
    let room = match sock.local_addr() {
        Ok(a) => addr_room(a.family() as i32),
        Err(e) => return fail(wsa_from_io(&e)),
    };
    if (dwLocalAddressLength as usize) < room || (dwRemoteAddressLength as usize) < room {
        return fail(WSAEINVAL);
    }
    if let Err(e) = check_overlapped(lpOverlapped) {
        return fail(e);
    }
    let ticket = match accept_live::register(lpOverlapped, &listener, sAcceptSocket as RawFd) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let state = AcceptState {
        ticket: Some(ticket),
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

/// The first stage of an `AcceptEx` ended: carries the accept socket's
/// options over, installs the connection in the accept socket and writes
/// the addresses; issues the receive when data was asked for (`None`: the
/// packet is not the caller's yet).
pub(crate) fn accepted(packet: &mut Packet<FfiOp>) -> Option<(DWORD, DWORD)> {
    let Stage::Accept(st) = &mut packet.context.stage else {
        unreachable!("accepted() is only called for Stage::Accept")
    };
    let Some(ticket) = st.ticket.take() else {
        return Some((ERROR_INVALID_PARAMETER, 0));
    };
    let (out, recv_len, accept_fd) = (st.out as *mut u8, st.recv_len, st.accept_fd);
    let (local_len, remote_len, listener) = (st.local_len, st.remote_len, st.listener.clone());
    if let Err(e) = &packet.result {
        return Some((win32_from_io(e), 0));
    }
    let Some(conn) = packet.take_accepted() else {
        return Some((ERROR_INVALID_PARAMETER, 0));
    };
    crate::sockopt::carry_over(accept_fd, conn.socket.as_raw_fd());
    let go_on = match accept_live::install(&ticket, conn.socket.as_raw_fd(), accept_fd) {
        Ok(go_on) => go_on,
        Err(e) => return Some((e, 0)),
    };
    drop(conn.socket);
    let local = socket2::SockRef::from(&Fd(accept_fd)).local_addr();
    // SAFETY: the caller lent `recv_len + local_len + remote_len` bytes at
    // `out` until the packet is dequeued (AcceptEx's contract).
    let fits = unsafe {
        let at_local = out.add(recv_len as usize);
        let at_remote = at_local.add(local_len as usize);
        local.is_ok_and(|a| put_addr(at_local, local_len as usize, &a))
            && put_addr(at_remote, remote_len as usize, &conn.peer)
    };
    if !fits {
        return Some((ERROR_INVALID_PARAMETER, 0));
    }
    if recv_len == 0 {
        return Some((0, 0));
    }
    if !go_on {
        return Some((ERROR_OPERATION_ABORTED, 0));
    }
    // Second stage: receive the first data on a duplicate of the accepted
    // socket, associated with the listener's port under its key.
    let ov = packet.context.ov;
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
    if !accept_live::set_recv(&ticket, &handle) {
        return Some((ERROR_OPERATION_ABORTED, 0));
    }
    let issued = next_stage(
        packet,
        &handle,
        Stage::AcceptRecv(ticket),
        true,
        |h, ctx| {
            // SAFETY: the receive area is the first `recv_len` bytes at
            // `out`, lent as above.
            let buf = unsafe { Buf::from_raw_parts(out, 0, recv_len as usize) };
            h.recv(buf, ctx)
        },
    );
    match issued {
        // Closed by a close or cancel that raced with the issue.
        Some(_) if handle.is_closed() => Some((ERROR_OPERATION_ABORTED, 0)),
        issued => issued,
    }
}

/// Finds the addresses `AcceptEx` wrote (windows-semantics §7.28). Each pointer points
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

/// Connects a **bound** socket associated with a port (windows-semantics §7.29): the
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
    let (buf, len) = (st.buf, st.len);
    let handle = REGISTRY.with(packet.context.ov, |p| p.handle.clone())?;
    next_stage(
        packet,
        &handle,
        Stage::Io { zero: None },
        false,
        |h, ctx| {
            // SAFETY: the caller lent `len` bytes at `buf` until the packet is
            // dequeued (ConnectEx's contract).
            let b = unsafe { Buf::from_raw_parts(buf as *mut u8, len as usize, len as usize) };
            h.send(b, ctx)
        },
    )
}

/// `WSAIoctl`, for the one request Windows IOCP servers make of it:
/// `SIO_GET_EXTENSION_FUNCTION_POINTER` with `WSAID_ACCEPTEX`,
/// `WSAID_CONNECTEX` or `WSAID_GETACCEPTEXSOCKADDRS`, which writes the
/// function's address to `lpvOutBuffer` (and its size to
/// `lpcbBytesReturned`) and returns 0. The functions are also exported
/// directly, so both ways of calling them work.
///
/// `SOCKET_ERROR` with: `WSAENOTSOCK` for a socket that is not one;
/// `WSAEFAULT` for an input that is not one GUID or an output smaller than
/// a pointer; `WSAEINVAL` for an unknown GUID, an OVERLAPPED or a
/// completion routine (the request is synchronous); `WSAEOPNOTSUPP` for
/// any other control code.
///
/// # Safety
/// `lpvInBuffer` must hold `cbInBuffer` bytes, `lpvOutBuffer`
/// `cbOutBuffer` writable bytes; `lpcbBytesReturned` null or writable.
#[no_mangle]
pub unsafe extern "C" fn WSAIoctl(
    s: SOCKET,
    dwIoControlCode: DWORD,
    lpvInBuffer: LPVOID,
    cbInBuffer: DWORD,
    lpvOutBuffer: LPVOID,
    cbOutBuffer: DWORD,
    lpcbBytesReturned: LPDWORD,
    lpOverlapped: LPWSAOVERLAPPED,
    lpCompletionRoutine: LPWSAOVERLAPPED_COMPLETION_ROUTINE,
) -> i32 {
    if let Err(e) = socket_target(s) {
        return fail_wsa(e);
    }
    if dwIoControlCode != SIO_GET_EXTENSION_FUNCTION_POINTER {
        return fail_wsa(WSAEOPNOTSUPP);
    }
    if !lpOverlapped.is_null() || !lpCompletionRoutine.is_null() {
        return fail_wsa(WSAEINVAL);
    }
    let size = std::mem::size_of::<usize>();
    if lpvInBuffer.is_null()
        || cbInBuffer as usize != std::mem::size_of::<GUID>()
        || lpvOutBuffer.is_null()
        || (cbOutBuffer as usize) < size
    {
        return fail_wsa(WSAEFAULT);
    }
    // SAFETY: `lpvInBuffer` holds one GUID (checked size; caller); read
    // unaligned since the caller's buffer may be any bytes.
    let guid = unsafe { std::ptr::read_unaligned(lpvInBuffer.cast::<GUID>()) };
    let address = if guid == WSAID_ACCEPTEX_GUID {
        AcceptEx as *const () as usize
    } else if guid == WSAID_CONNECTEX_GUID {
        ConnectEx as *const () as usize
    } else if guid == WSAID_GETACCEPTEXSOCKADDRS_GUID {
        GetAcceptExSockaddrs as *const () as usize
    } else {
        return fail_wsa(WSAEINVAL);
    };
    // SAFETY: `lpvOutBuffer` has room for a pointer (checked; caller);
    // written unaligned for the same reason as above.
    unsafe { std::ptr::write_unaligned(lpvOutBuffer.cast::<usize>(), address) };
    if !lpcbBytesReturned.is_null() {
        // SAFETY: writable (caller).
        unsafe { *lpcbBytesReturned = size as DWORD };
    }
    0
}
