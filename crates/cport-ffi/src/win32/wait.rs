//! `WaitForSingleObject(Ex)`, `WaitForMultipleObjects(Ex)`,
//! `WSAWaitForMultipleEvents`: waits on events, semaphores and threads.
//!
//! - wait-any returns `WAIT_OBJECT_0 + i` for the lowest index signalled
//!   when the call looks, or for the object whose signal ends the sleep;
//! - wait-all returns `WAIT_OBJECT_0` once every object is signalled *at
//!   the same time*, and only then takes their signals (an auto-reset event
//!   signalled meanwhile may go to another waiter); a timed-out wait-all
//!   takes nothing;
//! - `WAIT_TIMEOUT` when the time-out passes (`0`: just look), `WAIT_FAILED`
//!   with `ERROR_INVALID_PARAMETER` (no handles, more than
//!   `MAXIMUM_WAIT_OBJECTS`, a `NULL` array, a handle named twice in a
//!   wait-all) or `ERROR_INVALID_HANDLE` (a closed or unknown handle, or one
//!   that cannot be waited for here: ports, files, sockets).
//!
//! A thread blocked here does not count as running for the port it last
//! dequeued from (a blocking scope), so another thread may take a packet,
//! as on Windows. Alertable waits are accepted and behave as plain waits:
//! with no APCs on Linux, `WAIT_IO_COMPLETION` never happens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::types::*;
use super::waitable::{self, Outcome, Waitable};
use crate::error::fail;
use crate::types::*;

/// The deadline of a time-out in milliseconds (`INFINITE`: none).
pub(crate) fn deadline(ms: DWORD) -> Option<Instant> {
    (ms != INFINITE).then(|| Instant::now() + Duration::from_millis(ms as u64))
}

/// Resolves and checks the handles of a wait; the Windows error if one is
/// not waitable or the set is not allowed.
fn objects(handles: &[HANDLE], all: bool) -> Result<Vec<Arc<Waitable>>, DWORD> {
    let objects = handles
        .iter()
        .map(|&h| super::waitable(h))
        .collect::<Result<Vec<_>, _>>()?;
    if all {
        for (i, o) in objects.iter().enumerate() {
            if objects[..i].iter().any(|p| Arc::ptr_eq(p, o)) {
                return Err(ERROR_INVALID_PARAMETER);
            }
        }
    }
    Ok(objects)
}

/// The shared body of every wait: `WAIT_OBJECT_0 + i`, `WAIT_TIMEOUT`, or
/// `WAIT_FAILED` with the error set.
///
/// # Safety
/// `handles` is null or valid for `count` reads.
unsafe fn wait_many(count: DWORD, handles: *const HANDLE, all: bool, ms: DWORD) -> DWORD {
    if count == 0 || count > MAXIMUM_WAIT_OBJECTS || handles.is_null() {
        fail(ERROR_INVALID_PARAMETER);
        return WAIT_FAILED;
    }
    // SAFETY: non-null and valid for `count` reads (caller).
    let handles = unsafe { std::slice::from_raw_parts(handles, count as usize) };
    let objects = match objects(handles, all) {
        Ok(o) => o,
        Err(e) => {
            fail(e);
            return WAIT_FAILED;
        }
    };
    match waitable::wait(objects, all, deadline(ms)) {
        Outcome::Signalled(i) => WAIT_OBJECT_0 + i as DWORD,
        Outcome::TimedOut => WAIT_TIMEOUT,
    }
}

/// Waits until `hHandle` is signalled (an event, a semaphore, a thread
/// that exited) or `dwMilliseconds` pass: `WAIT_OBJECT_0`, `WAIT_TIMEOUT`
/// or `WAIT_FAILED` (module docs).
#[no_mangle]
pub extern "C" fn WaitForSingleObject(hHandle: HANDLE, dwMilliseconds: DWORD) -> DWORD {
    // SAFETY: one handle, read from a local.
    unsafe { wait_many(1, &hHandle, false, dwMilliseconds) }
}

/// [`WaitForSingleObject`]; `bAlertable` makes no difference (no APCs).
#[no_mangle]
pub extern "C" fn WaitForSingleObjectEx(
    hHandle: HANDLE,
    dwMilliseconds: DWORD,
    bAlertable: BOOL,
) -> DWORD {
    let _ = bAlertable;
    WaitForSingleObject(hHandle, dwMilliseconds)
}

/// Waits for any (`bWaitAll == FALSE`) or all of `nCount` handles (1 to
/// `MAXIMUM_WAIT_OBJECTS`); see the module docs for the results.
///
/// # Safety
/// `lpHandles` is null or valid for `nCount` reads.
#[no_mangle]
pub unsafe extern "C" fn WaitForMultipleObjects(
    nCount: DWORD,
    lpHandles: *const HANDLE,
    bWaitAll: BOOL,
    dwMilliseconds: DWORD,
) -> DWORD {
    // SAFETY: forwarded.
    unsafe { wait_many(nCount, lpHandles, bWaitAll != FALSE, dwMilliseconds) }
}

/// [`WaitForMultipleObjects`]; `bAlertable` makes no difference.
///
/// # Safety
/// As [`WaitForMultipleObjects`].
#[no_mangle]
pub unsafe extern "C" fn WaitForMultipleObjectsEx(
    nCount: DWORD,
    lpHandles: *const HANDLE,
    bWaitAll: BOOL,
    dwMilliseconds: DWORD,
    bAlertable: BOOL,
) -> DWORD {
    let _ = bAlertable;
    // SAFETY: forwarded.
    unsafe { wait_many(nCount, lpHandles, bWaitAll != FALSE, dwMilliseconds) }
}

/// The Winsock form of [`WaitForMultipleObjects`] over events:
/// `WSA_WAIT_EVENT_0 + i`, `WSA_WAIT_TIMEOUT`, or `WSA_WAIT_FAILED` with
/// `WSA_INVALID_PARAMETER` / `WSA_INVALID_HANDLE` in `WSAGetLastError()`.
/// `fAlertable` makes no difference.
///
/// # Safety
/// `lphEvents` is null or valid for `cEvents` reads.
#[no_mangle]
pub unsafe extern "C" fn WSAWaitForMultipleEvents(
    cEvents: DWORD,
    lphEvents: *const WSAEVENT,
    fWaitAll: BOOL,
    dwTimeout: DWORD,
    fAlertable: BOOL,
) -> DWORD {
    let _ = fAlertable;
    // SAFETY: forwarded. The WSA errors have the same values as the
    // Windows ones `wait_many` sets (`WSA_INVALID_HANDLE` is 6,
    // `WSA_INVALID_PARAMETER` 87).
    unsafe { wait_many(cEvents, lphEvents, fWaitAll != FALSE, dwTimeout) }
}
