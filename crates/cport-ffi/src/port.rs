//! `CreateIoCompletionPort`, `GetQueuedCompletionStatus(Ex)`,
//! `PostQueuedCompletionStatus`: the port, and where a packet of the Rust
//! port becomes what a Windows caller expects ([`deliver`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use completion_port::{Delivery, GetError, Packet, Port};

use crate::error::{fail, ntstatus_from_win32, set_last_error, win32_from_io};
use crate::object::{self, FfiPort, Object};
use crate::overlapped::{FfiOp, Stage};
use crate::types::*;

/// A packet as the caller sees it.
pub(crate) struct Delivered {
    pub(crate) key: ULONG_PTR,
    pub(crate) ov: LPOVERLAPPED,
    pub(crate) bytes: DWORD,
    /// Windows error; 0 for success.
    pub(crate) error: DWORD,
}

/// Creates a port (`FileHandle == INVALID_HANDLE_VALUE`) or associates a
/// file, socket or pipe with one (windows-semantics §1.1, §2.6–8).
///
/// `NumberOfConcurrentThreads` is the concurrency value (0: the number of
/// CPUs); it is ignored when associating with an existing port. Returns
/// the port, or `NULL` with `GetLastError()`: `ERROR_INVALID_HANDLE` (bad
/// handle or port), `ERROR_INVALID_PARAMETER` (already associated, a port
/// given as the file).
///
/// # Safety
/// Handle values are checked; no pointer is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn CreateIoCompletionPort(
    FileHandle: HANDLE,
    ExistingCompletionPort: HANDLE,
    CompletionKey: ULONG_PTR,
    NumberOfConcurrentThreads: DWORD,
) -> HANDLE {
    let null = std::ptr::null_mut();
    if FileHandle == INVALID_HANDLE_VALUE {
        if !ExistingCompletionPort.is_null() {
            set_last_error(ERROR_INVALID_PARAMETER);
            return null;
        }
        return new_port(NumberOfConcurrentThreads).map_or_else(
            |e| {
                set_last_error(e);
                null
            },
            |(h, _)| h,
        );
    }
    // A port given as the file: ERROR_INVALID_PARAMETER, as documented
    // above (`any_target` alone would report ERROR_INVALID_HANDLE).
    if object::port(FileHandle).is_ok() {
        set_last_error(ERROR_INVALID_PARAMETER);
        return null;
    }
    let target = match object::any_target(FileHandle) {
        Ok(t) => t,
        Err(e) => {
            set_last_error(e);
            return null;
        }
    };
    let (port_handle, port, created) = if ExistingCompletionPort.is_null() {
        match new_port(NumberOfConcurrentThreads) {
            Ok((h, p)) => (h, p, true),
            Err(e) => {
                set_last_error(e);
                return null;
            }
        }
    } else {
        match object::port(ExistingCompletionPort) {
            Ok(p) => (ExistingCompletionPort, p, false),
            Err(e) => {
                set_last_error(e);
                return null;
            }
        }
    };
    match target.associate(&port, CompletionKey) {
        Ok(()) => port_handle,
        Err(e) => {
            if created {
                drop(object::remove(port_handle));
                port.port.close();
            }
            set_last_error(e);
            null
        }
    }
}

fn new_port(concurrency: DWORD) -> Result<(HANDLE, Arc<FfiPort>), DWORD> {
    let port = Port::<FfiOp>::builder()
        .concurrency(concurrency as usize)
        .on_completion(completion_hook)
        .build()
        .map_err(|e| win32_from_io(&e))?;
    let p = Arc::new(FfiPort { port });
    match object::insert(Object::Port(p.clone())) {
        Some(h) => Ok((h, p)),
        None => {
            p.port.close();
            Err(ERROR_NOT_ENOUGH_MEMORY)
        }
    }
}

fn timeout_of(ms: DWORD) -> Option<Instant> {
    (ms != INFINITE).then(|| Instant::now() + Duration::from_millis(ms as u64))
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Dequeues one packet (windows-semantics §4.17).
///
/// - success packet: `TRUE`, with bytes, key and OVERLAPPED set;
/// - failed I/O: `FALSE`, `*lpOverlapped != NULL`, bytes and key set, the
///   error in `GetLastError()`;
/// - time-out: `FALSE`, `*lpOverlapped == NULL`, `WAIT_TIMEOUT`; bytes and
///   key untouched;
/// - port closed while waiting: `ERROR_ABANDONED_WAIT_0`; a closed or
///   unknown port: `ERROR_INVALID_HANDLE`.
///
/// A `NULL` output pointer is refused with `ERROR_INVALID_PARAMETER`
/// before anything is dequeued (Windows would fault).
///
/// # Safety
/// Non-null output pointers must be valid for writes.
#[no_mangle]
pub unsafe extern "C" fn GetQueuedCompletionStatus(
    CompletionPort: HANDLE,
    lpNumberOfBytesTransferred: LPDWORD,
    lpCompletionKey: PULONG_PTR,
    lpOverlapped: *mut LPOVERLAPPED,
    dwMilliseconds: DWORD,
) -> BOOL {
    if lpNumberOfBytesTransferred.is_null() || lpCompletionKey.is_null() || lpOverlapped.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    // SAFETY: `lpOverlapped` is non-null and writable (caller).
    unsafe { *lpOverlapped = std::ptr::null_mut() };
    let port = match object::port(CompletionPort) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let deadline = timeout_of(dwMilliseconds);
    loop {
        let packet = match port.port.get(remaining(deadline)) {
            Ok(p) => p,
            Err(e) => return fail(get_error(&e)),
        };
        let Some(d) = deliver(packet) else { continue };
        note_running(&port);
        // SAFETY: the three pointers are non-null and writable (caller).
        unsafe {
            *lpNumberOfBytesTransferred = d.bytes;
            *lpCompletionKey = d.key;
            *lpOverlapped = d.ov;
        }
        if d.error != 0 {
            return fail(d.error);
        }
        set_last_error(ERROR_SUCCESS);
        return TRUE;
    }
}

/// Dequeues up to `ulCount` packets: waits for at least one, then takes
/// what is queued without waiting for more (windows-semantics §4.18). Each entry's
/// `Internal` holds the operation's NTSTATUS (0 for success). Time-out:
/// `FALSE`, `WAIT_TIMEOUT`, `*ulNumEntriesRemoved = 0`.
///
/// `fAlertable` must be `FALSE`: there are no APCs on Linux, and `TRUE` is
/// refused with `ERROR_INVALID_PARAMETER` (so a port relying on alerts is
/// noticed at once). `ulCount == 0` is refused the same way.
///
/// # Safety
/// `lpCompletionPortEntries` must be valid for `ulCount` writes and
/// `ulNumEntriesRemoved` for one.
#[no_mangle]
pub unsafe extern "C" fn GetQueuedCompletionStatusEx(
    CompletionPort: HANDLE,
    lpCompletionPortEntries: LPOVERLAPPED_ENTRY,
    ulCount: ULONG,
    ulNumEntriesRemoved: *mut ULONG,
    dwMilliseconds: DWORD,
    fAlertable: BOOL,
) -> BOOL {
    if lpCompletionPortEntries.is_null()
        || ulNumEntriesRemoved.is_null()
        || ulCount == 0
        || fAlertable != FALSE
    {
        return fail(ERROR_INVALID_PARAMETER);
    }
    // SAFETY: non-null and writable (caller).
    unsafe { *ulNumEntriesRemoved = 0 };
    let port = match object::port(CompletionPort) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let deadline = timeout_of(dwMilliseconds);
    let mut packets = Vec::with_capacity(ulCount.min(1024) as usize);
    loop {
        packets.clear();
        if let Err(e) = port
            .port
            .get_many(&mut packets, ulCount as usize, remaining(deadline))
        {
            return fail(get_error(&e));
        }
        let mut n = 0usize;
        for p in packets.drain(..) {
            let Some(d) = deliver(p) else { continue };
            // SAFETY: `n < ulCount` (get_many returns at most `ulCount`
            // packets), and the array has `ulCount` entries (caller).
            unsafe {
                lpCompletionPortEntries.add(n).write(OVERLAPPED_ENTRY {
                    lpCompletionKey: d.key,
                    lpOverlapped: d.ov,
                    Internal: ntstatus_from_win32(d.error),
                    dwNumberOfBytesTransferred: d.bytes,
                })
            };
            n += 1;
        }
        if n > 0 {
            note_running(&port);
            // SAFETY: as above.
            unsafe { *ulNumEntriesRemoved = n as ULONG };
            set_last_error(ERROR_SUCCESS);
            return TRUE;
        }
    }
}

/// Queues a packet carrying exactly these values (windows-semantics §4.19); the
/// OVERLAPPED pointer is passed through untouched and may be any value.
///
/// # Safety
/// Nothing is dereferenced.
#[no_mangle]
pub unsafe extern "C" fn PostQueuedCompletionStatus(
    CompletionPort: HANDLE,
    dwNumberOfBytesTransferred: DWORD,
    dwCompletionKey: ULONG_PTR,
    lpOverlapped: LPOVERLAPPED,
) -> BOOL {
    let port = match object::port(CompletionPort) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    match port.port.post(
        dwCompletionKey,
        dwNumberOfBytesTransferred as usize,
        FfiOp::posted(lpOverlapped),
    ) {
        Ok(()) => TRUE,
        Err(_) => fail(ERROR_INVALID_HANDLE),
    }
}

thread_local! {
    /// The port this thread last dequeued a packet from (the one it may
    /// count as running for), so that `Sleep` can enter its blocking scope.
    static LAST_PORT: std::cell::RefCell<std::sync::Weak<FfiPort>> =
        const { std::cell::RefCell::new(std::sync::Weak::new()) };
}

fn note_running(port: &Arc<FfiPort>) {
    LAST_PORT.with(|p| {
        let mut p = p.borrow_mut();
        if !std::ptr::eq(p.as_ptr(), Arc::as_ptr(port)) {
            *p = Arc::downgrade(port);
        }
    });
}

/// Runs `f` as a blocked thread for the concurrency accounting of the port
/// this thread last dequeued from (windows-semantics §1.4), if that port still exists.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match LAST_PORT.with(|p| p.borrow().upgrade()) {
        Some(port) => port.port.blocking(f),
        None => f(),
    }
}

fn get_error(e: &GetError) -> DWORD {
    match e {
        GetError::Timeout => WAIT_TIMEOUT,
        GetError::Closed => ERROR_ABANDONED_WAIT_0,
        GetError::Io(e) => win32_from_io(e),
    }
}

/// What a completed operation reports: `(Windows error, bytes)`.
pub(crate) fn outcome(result: &std::io::Result<usize>, zero: Option<DWORD>) -> (DWORD, DWORD) {
    match result {
        Ok(0) if zero.is_some() => (zero.unwrap_or(0), 0),
        Ok(n) => (0, (*n).min(DWORD::MAX as usize) as DWORD),
        Err(e) => (win32_from_io(e), 0),
    }
}

/// The ports' completion hook (`PortBuilder::on_completion`): an
/// operation ended, so its state is written into its OVERLAPPED and its
/// event signalled now ([`complete`]), as Windows' I/O manager does —
/// whether or not a thread waits on the port (the port's monitor collects
/// completions when none does). The packet is then queued, except for an
/// operation that asked for none (`hEvent`'s low bit: its OVERLAPPED is
/// free at once) and for the first stage of a chained operation (the next
/// stage's packet stands for both).
pub(crate) fn completion_hook(packet: &mut Packet<FfiOp>) -> Delivery {
    match complete(packet) {
        None => Delivery::Discard,
        Some(_) if packet.context.no_packet => Delivery::Discard,
        Some(_) => Delivery::Deliver,
    }
}

/// Turns a dequeued packet into what the caller sees: the state the
/// completion hook wrote (a post's values pass through); `None` when the
/// packet only ended the first stage of a chained operation (the next
/// stage is issued).
pub(crate) fn deliver(mut packet: Packet<FfiOp>) -> Option<Delivered> {
    let key = packet.key;
    let (error, bytes) = match packet.context.done {
        Some(state) => state,
        None => complete(&mut packet)?,
    };
    let ov = packet.context.ov();
    // Dropping the context (with the packet) unregisters the OVERLAPPED.
    drop(packet);
    Some(Delivered {
        key,
        ov,
        bytes,
        error,
    })
}

/// What a completed operation reports, `(Windows error, bytes)`, written
/// into its OVERLAPPED (`Internal`/`InternalHigh`, by [`FfiOp::end`], which
/// also frees the OVERLAPPED for reuse): the one place where an
/// operation's completion state is decided and written. `None`: the packet
/// only ended the first stage of a chained operation (`AcceptEx` with
/// receive data, `ConnectEx` with send data), whose next stage is now
/// issued; nothing is written. Posts are passed through untouched (their
/// "OVERLAPPED" is any value).
pub(crate) fn complete(packet: &mut Packet<FfiOp>) -> Option<(DWORD, DWORD)> {
    let (error, bytes) = match &packet.context.stage {
        Stage::Posted => return Some((0, *packet.result.as_ref().unwrap_or(&0) as DWORD)),
        Stage::Io { zero } => outcome(&packet.result, *zero),
        Stage::AcceptRecv(ticket) => {
            let (error, bytes) = outcome(&packet.result, None);
            crate::accept_live::recv_result(ticket, error, bytes)
        }
        Stage::Accept(_) => crate::extension::accepted(packet)?,
        Stage::Connect(_) => crate::extension::connected(packet)?,
    };
    // SAFETY: the OVERLAPPED was registered at issue (live, aligned:
    // checked there) and is the system's until its state is written.
    unsafe { packet.context.end(error, bytes) };
    Some((error, bytes))
}
