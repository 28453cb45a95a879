//! Files and handles: `ReadFile`, `WriteFile`,
//! `GetOverlappedResult`, `CancelIo`, `CancelIoEx`,
//! `SetFileCompletionNotificationModes`, `CloseHandle`, `GetLastError`,
//! `SetLastError`, `Sleep`.
//!
//! An operation with an OVERLAPPED on a handle associated with a port is
//! overlapped: it returns `FALSE` / `ERROR_IO_PENDING` and its packet comes
//! through the port. Without an OVERLAPPED, on a handle not associated with
//! any port, or on a file opened without `FILE_FLAG_OVERLAPPED`, it runs
//! synchronously in the call (Windows would signal an event for the
//! unassociated overlapped case; events are not supported).

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use completion_port::Buf;

use crate::error::{errno, fail, set_last_error, win32_from_io, win32_from_ntstatus};
use crate::issue::{finish_bool, start};
use crate::object::{self, FdKind, Io, Object, Target};
use crate::overlapped::{self, thread_id, FfiOp, Stage, REGISTRY, RESULTS_CHANGED};
use crate::types::*;

/// Direction of a transfer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// Reads from a file, pipe or socket (windows-semantics §3.11, §5.24): at the
/// OVERLAPPED's offset for files. Overlapped: `FALSE` with
/// `ERROR_IO_PENDING` (or `TRUE` in skip-on-success mode when it completed
/// in the call). Reading at or past the end of a file fails with
/// `ERROR_HANDLE_EOF` (in the packet, or at the call); a pipe whose
/// writers closed with `ERROR_BROKEN_PIPE`.
///
/// # Safety
/// `lpBuffer` must be valid for `nNumberOfBytesToRead` bytes and, with an
/// OVERLAPPED on an associated handle, stay so (with the OVERLAPPED) until
/// the operation's packet is dequeued.
#[no_mangle]
pub unsafe extern "C" fn ReadFile(
    hFile: HANDLE,
    lpBuffer: LPVOID,
    nNumberOfBytesToRead: DWORD,
    lpNumberOfBytesRead: LPDWORD,
    lpOverlapped: LPOVERLAPPED,
) -> BOOL {
    // SAFETY: forwarded.
    unsafe {
        transfer(
            Dir::Read,
            hFile,
            lpBuffer.cast(),
            nNumberOfBytesToRead,
            lpNumberOfBytesRead,
            lpOverlapped,
        )
    }
}

/// Writes to a file, pipe or socket; like [`ReadFile`].
///
/// # Safety
/// As [`ReadFile`], for reads of the buffer.
#[no_mangle]
pub unsafe extern "C" fn WriteFile(
    hFile: HANDLE,
    lpBuffer: LPCVOID,
    nNumberOfBytesToWrite: DWORD,
    lpNumberOfBytesWritten: LPDWORD,
    lpOverlapped: LPOVERLAPPED,
) -> BOOL {
    // SAFETY: forwarded.
    unsafe {
        transfer(
            Dir::Write,
            hFile,
            lpBuffer as *mut u8,
            nNumberOfBytesToWrite,
            lpNumberOfBytesWritten,
            lpOverlapped,
        )
    }
}

/// What a 0-byte success of a read means on a target of this kind.
fn zero_means(kind: FdKind, dir: Dir, n: DWORD) -> Option<DWORD> {
    match (dir, kind) {
        (Dir::Read, FdKind::Seekable) if n > 0 => Some(ERROR_HANDLE_EOF),
        (Dir::Read, FdKind::Stream) if n > 0 => Some(ERROR_BROKEN_PIPE),
        _ => None,
    }
}

/// # Safety
/// As [`ReadFile`].
unsafe fn transfer(
    dir: Dir,
    h: HANDLE,
    buf: *mut u8,
    n: DWORD,
    done: LPDWORD,
    ov: LPOVERLAPPED,
) -> BOOL {
    if buf.is_null() && n > 0 {
        return fail(ERROR_INVALID_PARAMETER);
    }
    let target = match object::io_target(h) {
        // A read of a write-only file (or the reverse) fails at the call,
        // queuing nothing (windows-semantics §3.13), as on Windows.
        Ok(Io::Known(t)) if !t.allows(dir == Dir::Read) => return fail(ERROR_ACCESS_DENIED),
        Ok(Io::Known(t)) => t,
        Ok(Io::Plain(fd)) => {
            return match object::kind_of(fd) {
                // SAFETY: forwarded.
                Ok(kind) => unsafe { transfer_sync(dir, fd, kind, buf, n, done, ov) },
                Err(e) => fail(e),
            };
        }
        Err(e) => return fail(e),
    };
    let assoc = match target.assoc.get() {
        Some(a) if !ov.is_null() && target.overlapped => a,
        // SAFETY: forwarded.
        _ => return unsafe { transfer_sync(dir, target.fd, target.kind, buf, n, done, ov) },
    };
    if n == 0 && target.kind != FdKind::Socket {
        // SAFETY: forwarded.
        if let Some(r) = unsafe { zero_length_inline(&target, ov, done) } {
            return r;
        }
    }
    let zero = zero_means(target.kind, dir, n);
    let started = start(
        &target,
        assoc,
        ov,
        Stage::Io { zero },
        zero,
        |handle, ctx| {
            if n == 0 && target.kind != FdKind::Socket {
                // Nothing to transfer: it ends in its call, its state
                // written, and queues one success packet, as on Windows.
                let mut ctx = ctx;
                // SAFETY: `ov` was checked usable by `start`, and is the
                // system's until its state is written.
                unsafe { ctx.end(0, 0) };
                return assoc.port.port.post(handle.key(), 0, ctx).map(|()| None);
            }
            // SAFETY: the caller lends `n` bytes at `buf` until the packet is
            // dequeued (windows-semantics §3.12); reads fill them, writes send them.
            let b = unsafe {
                match dir {
                    Dir::Read => Buf::from_raw_parts(buf, 0, n as usize),
                    Dir::Write => Buf::from_raw_parts(buf, n as usize, n as usize),
                }
            };
            // SAFETY: `ov` was checked usable by `start` before `op` runs.
            let offset = unsafe { overlapped::offset(ctx.ov()) };
            // Writes complete whole, as on Windows (the port writes the
            // rest of a short write itself); a zero-length read of a socket
            // is the zero-byte receive.
            match (dir, target.kind) {
                (Dir::Read, FdKind::Seekable) => handle.read_at(b, offset, ctx),
                (Dir::Write, FdKind::Seekable) => handle.write_all_at(b, offset, ctx),
                (Dir::Read, FdKind::Stream) => handle.read(b, ctx),
                (Dir::Write, FdKind::Stream) => handle.write_all(b, ctx),
                (Dir::Read, FdKind::Socket) if n == 0 => handle.wait_readable(ctx),
                (Dir::Read, FdKind::Socket) => handle.recv(b, ctx),
                (Dir::Write, FdKind::Socket) => handle.send_all(b, ctx),
            }
            .map(Some)
        },
    );
    // SAFETY: `done` is null or writable (caller).
    unsafe { finish_bool(started, done) }
}

/// A zero-length read or write on a file or pipe completes in its call.
/// When no packet may be queued for it (`hEvent`'s low bit, or
/// skip-on-success mode), it ends here: `TRUE`, 0 bytes, its OVERLAPPED
/// written, nothing queued. `None`: it queues a packet (the caller posts
/// one).
///
/// # Safety
/// `ov` null or valid; `done` null or writable.
unsafe fn zero_length_inline(target: &Target, ov: LPOVERLAPPED, done: LPDWORD) -> Option<BOOL> {
    if let Err(e) = crate::issue::check_overlapped(ov) {
        return Some(fail(e));
    }
    // SAFETY: usable (checked) and valid (caller).
    let no_packet = unsafe { overlapped::wants_no_packet(ov) };
    let skip = target
        .skip_on_success
        .load(std::sync::atomic::Ordering::Relaxed);
    if !no_packet && !skip {
        return None;
    }
    if REGISTRY.with(ov as usize, |_| ()).is_some() {
        return Some(fail(ERROR_INVALID_PARAMETER)); // in flight: reused
    }
    // SAFETY: usable, not used by any operation of ours (checked).
    unsafe { overlapped::mark_done(ov, 0, 0) };
    if !done.is_null() {
        // SAFETY: writable (caller).
        unsafe { *done = 0 };
    }
    set_last_error(ERROR_SUCCESS);
    Some(TRUE)
}

/// The synchronous path: the transfer happens in the call.
///
/// # Safety
/// As [`ReadFile`]; `ov`, when non-null, must be a valid OVERLAPPED.
unsafe fn transfer_sync(
    dir: Dir,
    fd: RawFd,
    kind: FdKind,
    buf: *mut u8,
    n: DWORD,
    done: LPDWORD,
    ov: LPOVERLAPPED,
) -> BOOL {
    let usable = overlapped::is_usable(ov);
    if !ov.is_null() && !usable {
        return fail(ERROR_INVALID_PARAMETER);
    }
    // SAFETY: `ov` is usable when used (checked).
    let offset = usable.then(|| unsafe { overlapped::offset(ov) } as libc::off_t);
    let positioned = offset.filter(|_| kind == FdKind::Seekable);
    // SAFETY: `buf` holds `n` bytes (caller); the calls write at most `n`.
    let r = unsafe {
        match (dir, positioned) {
            (Dir::Read, Some(off)) => libc::pread(fd, buf.cast(), n as usize, off),
            (Dir::Read, None) => libc::read(fd, buf.cast(), n as usize),
            (Dir::Write, Some(off)) => libc::pwrite(fd, buf.cast(), n as usize, off),
            (Dir::Write, None) => libc::write(fd, buf.cast(), n as usize),
        }
    };
    let (error, bytes) = if r < 0 {
        (win32_from_io(&errno()), 0)
    } else if r == 0 && (usable || kind != FdKind::Seekable) {
        (zero_means(kind, dir, n).unwrap_or(0), 0)
    } else {
        (0, r as DWORD)
    };
    if usable {
        // SAFETY: checked usable; the call is synchronous, so no operation
        // of ours uses this OVERLAPPED.
        unsafe { overlapped::mark_done(ov, error, bytes) };
    }
    if !done.is_null() {
        // SAFETY: writable (caller).
        unsafe { *done = bytes };
    }
    if error != 0 {
        return fail(error);
    }
    set_last_error(ERROR_SUCCESS);
    TRUE
}

/// The result of an overlapped operation (`Internal`/`InternalHigh`).
///
/// Completed: `TRUE` with the bytes, or `FALSE` with its error. In flight:
/// with `bWait = FALSE`, `FALSE` / `ERROR_IO_INCOMPLETE`; with `bWait =
/// TRUE`, waits. The state is written when the operation ends (the ports'
/// completion hook), with or without a packet and whether or not anyone
/// dequeues it, as on Windows; the port's monitor collects completions
/// when no thread waits on the port.
///
/// `ERROR_INVALID_PARAMETER` for a null or misaligned OVERLAPPED, a null
/// `lpNumberOfBytesTransferred`, or an OVERLAPPED marked pending that no
/// operation uses.
///
/// # Safety
/// `lpOverlapped` must be a valid OVERLAPPED; `lpNumberOfBytesTransferred`
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn GetOverlappedResult(
    hFile: HANDLE,
    lpOverlapped: LPOVERLAPPED,
    lpNumberOfBytesTransferred: LPDWORD,
    bWait: BOOL,
) -> BOOL {
    let _ = hFile; // the OVERLAPPED alone identifies the operation
    let ov = lpOverlapped;
    if !overlapped::is_usable(ov) || lpNumberOfBytesTransferred.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    // SAFETY: usable (checked) and valid (caller).
    let done = || unsafe { overlapped::read(ov) }.0 != STATUS_PENDING as usize;
    // The state is written when the operation ends (the ports' completion
    // hook), whoever dequeues its packet, and with or without one.
    if !done() {
        let Some(port) = REGISTRY.with(ov as usize, |p| p.port.clone()) else {
            if !done() {
                return fail(ERROR_INVALID_PARAMETER);
            }
            // SAFETY: as checked above (caller's pointers).
            return unsafe { read_result(ov, lpNumberOfBytesTransferred) };
        };
        if bWait == FALSE {
            return fail(ERROR_IO_INCOMPLETE);
        }
        // A blocking scope: another thread may run for the port meanwhile.
        port.blocking(|| RESULTS_CHANGED.wait_until(done, None));
    }
    // SAFETY: as checked above (caller's pointers).
    unsafe { read_result(ov, lpNumberOfBytesTransferred) }
}

/// `GetOverlappedResult`'s answer from a written OVERLAPPED.
///
/// # Safety
/// `ov` is usable and valid, `lpNumberOfBytesTransferred` writable (as
/// `GetOverlappedResult`'s caller promised).
unsafe fn read_result(ov: LPOVERLAPPED, lpNumberOfBytesTransferred: LPDWORD) -> BOOL {
    // SAFETY: usable and valid (caller).
    let (status, bytes) = unsafe { overlapped::read(ov) };
    // SAFETY: writable (caller).
    unsafe { *lpNumberOfBytesTransferred = bytes as DWORD };
    match win32_from_ntstatus(status) {
        0 => {
            set_last_error(ERROR_SUCCESS);
            TRUE
        }
        e => fail(e),
    }
}

/// Cancels one operation (`lpOverlapped`) or every operation on the handle
/// (`NULL`), from any thread (windows-semantics §6.25). Each cancelled operation still
/// queues its packet, with `ERROR_OPERATION_ABORTED`, unless it completed
/// first. Nothing to cancel: `ERROR_NOT_FOUND`.
///
/// # Safety
/// Nothing is dereferenced (`lpOverlapped` is only compared).
#[no_mangle]
pub unsafe extern "C" fn CancelIoEx(hFile: HANDLE, lpOverlapped: LPOVERLAPPED) -> BOOL {
    let target = match known_target(hFile) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let accepts = crate::accept_live::cancel(&target, lpOverlapped, None);
    let found = if lpOverlapped.is_null() {
        REGISTRY.select(|p| Arc::ptr_eq(&p.target, &target))
    } else {
        REGISTRY
            .with(lpOverlapped as usize, |p| {
                (Arc::ptr_eq(&p.target, &target) && p.token.is_some())
                    .then(|| (p.handle.clone(), p.token))
            })
            .flatten()
            .and_then(|(h, t)| t.map(|t| vec![(h, t)]))
            .unwrap_or_default()
    };
    cancel(found, accepts)
}

/// The target a cancel names; `ERROR_NOT_FOUND` for an open fd no port
/// knows (nothing can be in flight on it), `ERROR_INVALID_HANDLE` for a
/// closed, stale or made-up handle.
fn known_target(h: HANDLE) -> Result<Arc<Target>, DWORD> {
    match object::io_target(h)? {
        Io::Known(t) => Ok(t),
        Io::Plain(fd) => Err(object::kind_of(fd).map_or(ERROR_INVALID_HANDLE, |_| ERROR_NOT_FOUND)),
    }
}

/// Cancels the operations the calling thread issued on the handle
/// (Windows' `CancelIo`); otherwise like [`CancelIoEx`].
///
/// # Safety
/// Nothing is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn CancelIo(hFile: HANDLE) -> BOOL {
    let target = match known_target(hFile) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let me = thread_id();
    let accepts = crate::accept_live::cancel(&target, std::ptr::null_mut(), Some(me));
    cancel(
        REGISTRY.select(|p| Arc::ptr_eq(&p.target, &target) && p.thread == me),
        accepts,
    )
}

/// Cancels `ops`; `TRUE` when they, or the `accepts` `AcceptEx`
/// operations ended by the caller, were anything.
fn cancel(
    ops: Vec<(completion_port::Handle<FfiOp>, completion_port::Token)>,
    accepts: usize,
) -> BOOL {
    let hits = accepts
        + ops
            .into_iter()
            .filter(|(h, t)| h.cancel(*t).is_ok())
            .count();
    if hits == 0 {
        return fail(ERROR_NOT_FOUND);
    }
    set_last_error(ERROR_SUCCESS);
    TRUE
}

/// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`: an operation that succeeds
/// during its call returns `TRUE` and queues no packet (windows-semantics §3.13). Such
/// completions happen on the epoll backend (data already there); io_uring
/// completes every operation after its call, so there every operation
/// still yields a packet. `FILE_SKIP_SET_EVENT_ON_HANDLE` is accepted and
/// ignored. Any other flag: `ERROR_INVALID_PARAMETER`.
///
/// # Safety
/// Nothing is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn SetFileCompletionNotificationModes(FileHandle: HANDLE, Flags: u8) -> BOOL {
    if Flags & !(FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE) != 0 {
        return fail(ERROR_INVALID_PARAMETER);
    }
    let target = match object::any_target(FileHandle) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let on = Flags & FILE_SKIP_COMPLETION_PORT_ON_SUCCESS != 0;
    target
        .skip_on_success
        .store(on, std::sync::atomic::Ordering::Relaxed);
    if let Some(a) = target.assoc.get() {
        a.handle.set_skip_packet_on_success(on);
    }
    TRUE
}

/// Closes a port, a file, or a socket/fd (windows-semantics §2.10, §6.26–27).
///
/// - port: threads waiting in `GetQueuedCompletionStatus` return `FALSE`
///   with `ERROR_ABANDONED_WAIT_0`; queued packets are discarded;
///   operations in flight on its handles are cancelled and queue nothing;
/// - file or socket: operations in flight are cancelled, each queuing its
///   packet with `ERROR_OPERATION_ABORTED`; the association ends.
///
/// The handle value is then stale: any later use gets
/// `ERROR_INVALID_HANDLE`.
///
/// # Safety
/// Nothing is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn CloseHandle(hObject: HANDLE) -> BOOL {
    match object::resolve(hObject) {
        Err(e) => fail(e),
        Ok(object::Named::Fd(fd)) => {
            if crate::socket::close_fd(fd) {
                TRUE
            } else {
                fail(ERROR_INVALID_HANDLE)
            }
        }
        Ok(object::Named::Object(_)) => match object::remove(hObject) {
            Some(Object::Port(p)) => {
                p.port.close();
                TRUE
            }
            Some(Object::File(t)) => {
                t.shut();
                TRUE
            }
            // Events, semaphores, threads: the object lives on while a
            // thread runs or waits on it (win32 companion).
            Some(Object::Waitable(_)) => TRUE,
            None => fail(ERROR_INVALID_HANDLE),
        },
    }
}

/// The calling thread's last error.
#[no_mangle]
pub extern "C" fn GetLastError() -> DWORD {
    crate::error::last_error()
}

/// Sets the calling thread's last error.
#[no_mangle]
pub extern "C" fn SetLastError(dwErrCode: DWORD) {
    set_last_error(dwErrCode)
}

/// Sleeps for `dwMilliseconds` (`INFINITE`: forever). A worker that sleeps
/// while it runs a completion is a blocked thread for its port's
/// concurrency accounting.
#[no_mangle]
pub extern "C" fn Sleep(dwMilliseconds: DWORD) {
    // The blocking scope is what makes the documented behaviour true: the
    // port cannot see a plain sleep (windows-semantics §1.4).
    crate::port::blocking(|| {
        if dwMilliseconds == INFINITE {
            loop {
                std::thread::park();
            }
        }
        std::thread::sleep(Duration::from_millis(dwMilliseconds as u64));
    })
}
