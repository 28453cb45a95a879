//! Starting an overlapped operation on an associated handle: the steps
//! every `ReadFile`, `WriteFile`, `WSARecv`, `WSASend`, `AcceptEx` and
//! `ConnectEx` share (windows-semantics §3.11–14).

use std::sync::Arc;

use completion_port::{Handle, Packet, Rejected, Token};

use crate::error::win32_from_io;
use crate::object::{Assoc, Target};
use crate::overlapped::{self, FfiOp, Stage, REGISTRY};
use crate::port::outcome;
use crate::types::*;

/// How an issue call ended.
pub(crate) enum Started {
    /// In flight: its packet (or packet-less result) comes later.
    Pending,
    /// Completed during the call in skip-on-success mode: no packet; the
    /// bytes transferred.
    Done(DWORD),
}

/// Checks an OVERLAPPED passed to an issue call: non-null, aligned, and on
/// the caller's stack only with a warning (refused with `CPORT_STRICT=1`).
pub(crate) fn check_overlapped(ov: LPOVERLAPPED) -> Result<(), DWORD> {
    if !overlapped::is_usable(ov) {
        return Err(ERROR_INVALID_PARAMETER);
    }
    overlapped::check_stack(ov).map_err(|()| ERROR_INVALID_PARAMETER)
}

/// Starts one operation on `target`'s association.
///
/// `op` issues it on the handle it is given (the packet-less clone when
/// `hEvent`'s low bit is set) with the context it is given; it returns the
/// token, or `None` when the "operation" is a post (zero-length transfers).
///
/// Errors are Windows errors for the call to report (nothing was queued).
pub(crate) fn start(
    target: &Arc<Target>,
    assoc: &Assoc,
    ov: LPOVERLAPPED,
    stage: Stage,
    zero: Option<DWORD>,
    op: impl FnOnce(&Handle<FfiOp>, FfiOp) -> Result<Option<Token>, Rejected<FfiOp>>,
) -> Result<Started, DWORD> {
    check_overlapped(ov)?;
    // SAFETY: `ov` is non-null and aligned (checked); the caller hands it
    // to the system for the duration of the operation (windows-semantics §3.12).
    let no_packet = unsafe { overlapped::wants_no_packet(ov) };
    let handle = if no_packet {
        assoc.handle.without_packets()
    } else {
        assoc.handle.clone()
    };
    let id = REGISTRY
        .insert(ov, &handle, target, &assoc.port.port, no_packet)
        .ok_or(ERROR_INVALID_PARAMETER)?;
    // SAFETY: as above.
    unsafe {
        overlapped::reset_event(ov);
        overlapped::mark_pending(ov);
    }
    let ctx = FfiOp {
        ov: ov as usize,
        id,
        stage,
        no_packet,
        done: None,
    };
    let token = match op(&handle, ctx) {
        Ok(t) => t,
        Err(rejected) => {
            let error = win32_from_io(&rejected.error);
            // SAFETY: as above; the operation never started.
            unsafe { overlapped::mark_refused(ov, error) };
            return Err(error); // dropping `rejected` unregisters `ov`
        }
    };
    let Some(token) = token else {
        return Ok(Started::Pending);
    };
    REGISTRY.set_token(ov as usize, id, token, None);
    if no_packet
        || !target
            .skip_on_success
            .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Ok(Started::Pending);
    }
    match assoc.port.port.take_result(token) {
        None => Ok(Started::Pending),
        Some(packet) => {
            // The completion hook wrote the state already.
            let (error, bytes) = packet
                .context
                .done
                .unwrap_or_else(|| outcome(&packet.result, zero));
            drop(packet); // unregisters `ov`
            if error != 0 {
                Err(error)
            } else {
                Ok(Started::Done(bytes))
            }
        }
    }
}

/// The `BOOL` tail of `ReadFile`/`WriteFile`/`AcceptEx`/`ConnectEx` after
/// [`start`]: `TRUE` with the bytes written to `out` when completed
/// inline, `FALSE` with `ERROR_IO_PENDING` or the error otherwise.
///
/// # Safety
/// `out` must be null or valid for a write.
pub(crate) unsafe fn finish_bool(started: Result<Started, DWORD>, out: LPDWORD) -> BOOL {
    match started {
        Ok(Started::Done(n)) => {
            if !out.is_null() {
                // SAFETY: non-null and writable (caller).
                unsafe { *out = n };
            }
            crate::error::set_last_error(ERROR_SUCCESS);
            TRUE
        }
        Ok(Started::Pending) => crate::error::fail(ERROR_IO_PENDING),
        Err(e) => crate::error::fail(e),
    }
}

/// The `int` tail of `WSARecv`/`WSASend`: 0 when completed inline,
/// `SOCKET_ERROR` with `WSA_IO_PENDING` or the error otherwise.
///
/// # Safety
/// As [`finish_bool`].
pub(crate) unsafe fn finish_wsa(started: Result<Started, DWORD>, out: LPDWORD) -> i32 {
    // SAFETY: forwarded.
    if unsafe { finish_bool(started, out) } == TRUE {
        0
    } else {
        SOCKET_ERROR
    }
}

/// Issues the next stage of a chained operation (`AcceptEx` with receive
/// data, `ConnectEx` with send data) on `handle`, under the same
/// OVERLAPPED and registry entry, which move from `packet`'s context to the
/// new one (`new_handle`: the registry entry now names `handle` for
/// `CancelIoEx`). `None`: issued, the packet is not the caller's yet;
/// `Some((error, 0))`: it could not be issued, and that is the result of
/// the whole operation (the entry stays with `packet`).
pub(crate) fn next_stage(
    packet: &mut Packet<FfiOp>,
    handle: &Handle<FfiOp>,
    stage: Stage,
    new_handle: bool,
    op: impl FnOnce(&Handle<FfiOp>, FfiOp) -> Result<Token, Rejected<FfiOp>>,
) -> Option<(DWORD, DWORD)> {
    let ov = packet.context.ov;
    let no_packet = packet.context.no_packet;
    let id = std::mem::take(&mut packet.context.id);
    let ctx = FfiOp {
        ov,
        id,
        stage,
        no_packet,
        done: None,
    };
    match op(handle, ctx) {
        Ok(token) => {
            REGISTRY.set_token(ov, id, token, new_handle.then(|| handle.clone()));
            None
        }
        Err(mut rejected) => {
            packet.context.id = std::mem::take(&mut rejected.context.id);
            Some((win32_from_io(&rejected.error), 0))
        }
    }
}
