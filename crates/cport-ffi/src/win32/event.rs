//! Events and semaphores: `CreateEventA/W`, `SetEvent`, `ResetEvent`,
//! `CreateSemaphoreA/W`, `ReleaseSemaphore`, the Winsock event family
//! (`WSACreateEvent`, `WSASetEvent`, `WSAResetEvent`, `WSACloseEvent`),
//! and the `OVERLAPPED.hEvent` an operation resets when it starts and
//! signals when it ends.
//!
//! A named object is shared within the process: a second `CreateEvent`
//! with the same name returns a new handle to the same event and sets
//! `ERROR_ALREADY_EXISTS`, as on Windows. Names are not shared between
//! processes (Linux has no kernel namespace of such objects).

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;

use super::types::*;
use super::waitable::{Kind, Waitable};
use super::{bool_result, handle_or_null, insert, waitable};
use crate::error::set_last_error;
use crate::types::*;

/// Named objects of this process.
static NAMES: LazyLock<Mutex<HashMap<String, Weak<Waitable>>>> = LazyLock::new(Default::default);

/// Makes a new object, or opens the one named `name` (which must be of
/// kind `kind`, else `ERROR_INVALID_HANDLE`). Sets the last error to
/// `ERROR_ALREADY_EXISTS` or `ERROR_SUCCESS` on success.
fn create(name: Option<String>, kind: Kind, count: u32) -> Result<HANDLE, DWORD> {
    let Some(name) = name else {
        let h = insert(Waitable::new(kind, count))?;
        set_last_error(ERROR_SUCCESS);
        return Ok(h);
    };
    let mut names = NAMES.lock();
    if let Some(existing) = names.get(&name).and_then(Weak::upgrade) {
        if existing.kind() != kind && !same_family(existing.kind(), kind) {
            return Err(ERROR_INVALID_HANDLE);
        }
        let h = insert(existing)?;
        set_last_error(ERROR_ALREADY_EXISTS);
        return Ok(h);
    }
    let w = Waitable::new(kind, count);
    names.retain(|_, v| v.strong_count() > 0);
    names.insert(name, Arc::downgrade(&w));
    drop(names);
    let h = insert(w)?;
    set_last_error(ERROR_SUCCESS);
    Ok(h)
}

/// Opening an existing event or semaphore ignores the reset mode and
/// maximum asked for, as on Windows.
fn same_family(a: Kind, b: Kind) -> bool {
    matches!(
        (a, b),
        (Kind::Event { .. }, Kind::Event { .. }) | (Kind::Semaphore { .. }, Kind::Semaphore { .. })
    )
}

/// A narrow name (`NULL`: unnamed).
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn narrow(name: LPCSTR) -> Option<String> {
    (!name.is_null()).then(|| {
        // SAFETY: non-null and NUL-terminated (caller).
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    })
}

/// A wide (UTF-16) name (`NULL`: unnamed).
///
/// # Safety
/// `name` is null or a NUL-terminated UTF-16 string.
unsafe fn wide(name: LPCWSTR) -> Option<String> {
    if name.is_null() {
        return None;
    }
    let mut len = 0;
    // SAFETY: the string is NUL-terminated (caller): we read up to the NUL.
    while unsafe { *name.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` units were just read.
    let units = unsafe { std::slice::from_raw_parts(name, len) };
    Some(String::from_utf16_lossy(units))
}

/// Creates (or opens, when named) an event: manual reset (stays signalled
/// until `ResetEvent`) or auto reset (one waiter takes each signal), in
/// the initial state given. Returns `NULL` on failure. Security
/// attributes are ignored.
///
/// # Safety
/// `lpName` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn CreateEventA(
    lpEventAttributes: LPSECURITY_ATTRIBUTES,
    bManualReset: BOOL,
    bInitialState: BOOL,
    lpName: LPCSTR,
) -> HANDLE {
    let _ = lpEventAttributes;
    let kind = Kind::Event {
        manual: bManualReset != FALSE,
    };
    // SAFETY: forwarded.
    let name = unsafe { narrow(lpName) };
    handle_or_null(create(name, kind, (bInitialState != FALSE) as u32))
}

/// [`CreateEventA`] with a UTF-16 name.
///
/// # Safety
/// `lpName` is null or a NUL-terminated UTF-16 string.
#[no_mangle]
pub unsafe extern "C" fn CreateEventW(
    lpEventAttributes: LPSECURITY_ATTRIBUTES,
    bManualReset: BOOL,
    bInitialState: BOOL,
    lpName: LPCWSTR,
) -> HANDLE {
    let _ = lpEventAttributes;
    let kind = Kind::Event {
        manual: bManualReset != FALSE,
    };
    // SAFETY: forwarded.
    let name = unsafe { wide(lpName) };
    handle_or_null(create(name, kind, (bInitialState != FALSE) as u32))
}

/// The event `h` names; `ERROR_INVALID_HANDLE` for anything else.
fn event(h: HANDLE) -> Result<Arc<Waitable>, DWORD> {
    let w = waitable(h)?;
    match w.kind() {
        Kind::Event { .. } => Ok(w),
        _ => Err(ERROR_INVALID_HANDLE),
    }
}

/// Signals an event: an auto-reset event releases one waiter (or stays
/// signalled until one comes); a manual-reset one releases every waiter
/// and stays signalled.
#[no_mangle]
pub extern "C" fn SetEvent(hEvent: HANDLE) -> BOOL {
    bool_result(event(hEvent).map(|e| e.set()))
}

/// Clears an event's signal.
#[no_mangle]
pub extern "C" fn ResetEvent(hEvent: HANDLE) -> BOOL {
    bool_result(event(hEvent).map(|e| e.reset()))
}

fn semaphore(initial: LONG, max: LONG, name: Option<String>) -> HANDLE {
    if max <= 0 || initial < 0 || initial > max {
        set_last_error(ERROR_INVALID_PARAMETER);
        return std::ptr::null_mut();
    }
    let kind = Kind::Semaphore { max: max as u32 };
    handle_or_null(create(name, kind, initial as u32))
}

/// Creates (or opens, when named) a semaphore with `lInitialCount` of
/// `lMaximumCount` signals; each satisfied wait takes one.
/// `ERROR_INVALID_PARAMETER` unless `0 <= initial <= maximum` and
/// `maximum > 0`.
///
/// # Safety
/// `lpName` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn CreateSemaphoreA(
    lpSemaphoreAttributes: LPSECURITY_ATTRIBUTES,
    lInitialCount: LONG,
    lMaximumCount: LONG,
    lpName: LPCSTR,
) -> HANDLE {
    let _ = lpSemaphoreAttributes;
    // SAFETY: forwarded.
    semaphore(lInitialCount, lMaximumCount, unsafe { narrow(lpName) })
}

/// [`CreateSemaphoreA`] with a UTF-16 name.
///
/// # Safety
/// `lpName` is null or a NUL-terminated UTF-16 string.
#[no_mangle]
pub unsafe extern "C" fn CreateSemaphoreW(
    lpSemaphoreAttributes: LPSECURITY_ATTRIBUTES,
    lInitialCount: LONG,
    lMaximumCount: LONG,
    lpName: LPCWSTR,
) -> HANDLE {
    let _ = lpSemaphoreAttributes;
    // SAFETY: forwarded.
    semaphore(lInitialCount, lMaximumCount, unsafe { wide(lpName) })
}

/// Adds `lReleaseCount` (> 0) signals to a semaphore; the previous count
/// goes to `*lpPreviousCount` when non-null. Beyond the maximum:
/// `ERROR_TOO_MANY_POSTS`, nothing changes.
///
/// # Safety
/// `lpPreviousCount` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn ReleaseSemaphore(
    hSemaphore: HANDLE,
    lReleaseCount: LONG,
    lpPreviousCount: *mut LONG,
) -> BOOL {
    let s = match waitable(hSemaphore) {
        Ok(s) if matches!(s.kind(), Kind::Semaphore { .. }) => s,
        Ok(_) => return crate::error::fail(ERROR_INVALID_HANDLE),
        Err(e) => return crate::error::fail(e),
    };
    if lReleaseCount <= 0 {
        return crate::error::fail(ERROR_INVALID_PARAMETER);
    }
    match s.release(lReleaseCount as u32) {
        Some(prev) => {
            if !lpPreviousCount.is_null() {
                // SAFETY: non-null and writable (caller).
                unsafe { *lpPreviousCount = prev as LONG };
            }
            TRUE
        }
        None => crate::error::fail(ERROR_TOO_MANY_POSTS),
    }
}

/// A manual-reset event, not signalled (`WSA_INVALID_EVENT`, i.e. `NULL`,
/// on failure).
#[no_mangle]
pub extern "C" fn WSACreateEvent() -> WSAEVENT {
    handle_or_null(create(None, Kind::Event { manual: true }, 0))
}

/// [`SetEvent`], for Winsock events.
#[no_mangle]
pub extern "C" fn WSASetEvent(hEvent: WSAEVENT) -> BOOL {
    SetEvent(hEvent)
}

/// [`ResetEvent`], for Winsock events.
#[no_mangle]
pub extern "C" fn WSAResetEvent(hEvent: WSAEVENT) -> BOOL {
    ResetEvent(hEvent)
}

/// Closes a Winsock event (`WSA_INVALID_HANDLE` for anything else).
#[no_mangle]
pub extern "C" fn WSACloseEvent(hEvent: WSAEVENT) -> BOOL {
    match event(hEvent) {
        Ok(_) => {
            drop(crate::object::remove(hEvent));
            TRUE
        }
        Err(_) => crate::error::fail(WSA_INVALID_HANDLE),
    }
}

/// The event an OVERLAPPED's `hEvent` names (its low bit, "no packet",
/// cleared); `None` when it names no event of ours — `NULL`, or a value
/// the caller keeps there for its own use.
pub(crate) fn overlapped_event(h_event: HANDLE) -> Option<Arc<Waitable>> {
    let h = (h_event as usize & !1) as HANDLE;
    if h.is_null() {
        return None;
    }
    event(h).ok()
}
