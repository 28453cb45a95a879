//! `SetConsoleCtrlHandler`: Windows' console control events, from POSIX
//! signals.
//!
//! | Signal | Event |
//! |---|---|
//! | `SIGINT` (Ctrl-C) | `CTRL_C_EVENT` |
//! | `SIGQUIT` (Ctrl-\\) | `CTRL_BREAK_EVENT` |
//! | `SIGTERM`, `SIGHUP` | `CTRL_CLOSE_EVENT` |
//!
//! The first call installs handlers for these four signals (through
//! `signal-hook`, which chains to handlers installed before). When one
//! arrives, a new thread — as on Windows — calls the registered handlers,
//! last registered first, until one returns `TRUE`. If none does, the
//! default action follows: the process ends by that signal, as it would
//! have without handlers. After `CTRL_CLOSE_EVENT` the process ends by
//! the signal whatever the handlers return, as Windows ends it after its
//! handlers return: do the cleanup inside the handler.
//!
//! `SetConsoleCtrlHandler(NULL, TRUE)` ignores Ctrl-C (no handler runs,
//! the process lives on); `(NULL, FALSE)` ends that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use parking_lot::Mutex;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use super::types::*;
use crate::error::fail;
use crate::types::*;

/// A handler, called with the "C-unwind" ABI, as thread start functions
/// are (`thread::Routine`): `ExitThread` in a handler unwinds through the
/// call.
type Handler = unsafe extern "C-unwind" fn(DWORD) -> BOOL;

/// Registered handlers, oldest first.
static HANDLERS: Mutex<Vec<Handler>> = Mutex::new(Vec::new());
static IGNORE_CTRL_C: AtomicBool = AtomicBool::new(false);
static LISTEN: Once = Once::new();
/// Whether the signal handlers could be installed.
static LISTENING: AtomicBool = AtomicBool::new(false);

/// The console event a signal stands for.
fn event_of(signal: i32) -> DWORD {
    match signal {
        SIGINT => CTRL_C_EVENT,
        SIGQUIT => CTRL_BREAK_EVENT,
        _ => CTRL_CLOSE_EVENT,
    }
}

/// Installs the signal handlers and the thread that turns signals into
/// handler threads (once per process).
fn listen() -> bool {
    LISTEN.call_once(|| {
        let Ok(mut signals) =
            signal_hook::iterator::Signals::new([SIGINT, SIGQUIT, SIGTERM, SIGHUP])
        else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("cport-console".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if super::thread::spawn_detached(dispatch, signal as usize as LPVOID).is_err() {
                        // No thread for the handlers: the default action.
                        let _ = signal_hook::low_level::emulate_default_handler(signal);
                    }
                }
            });
        LISTENING.store(spawned.is_ok(), Ordering::Release);
    });
    LISTENING.load(Ordering::Acquire)
}

/// The `i`-th handler counting from the newest, if any (a plain value, so
/// that the dispatching frame owns nothing while a handler runs).
fn newest(i: usize) -> Option<Handler> {
    let h = HANDLERS.lock();
    h.len().checked_sub(i + 1).map(|j| h[j])
}

/// The body of a handler thread: runs the handlers for one signal (module
/// docs), then the default action if due.
extern "C-unwind" fn dispatch(param: LPVOID) -> DWORD {
    let signal = param as usize as i32;
    let event = event_of(signal);
    if event == CTRL_C_EVENT && IGNORE_CTRL_C.load(Ordering::Acquire) {
        return 0;
    }
    let mut handled = false;
    let mut i = 0;
    while let Some(h) = newest(i) {
        // SAFETY: registered by the program as a handler of this type.
        if unsafe { h(event) } != FALSE {
            handled = true;
            break;
        }
        i += 1;
    }
    if !handled || event == CTRL_CLOSE_EVENT {
        let _ = signal_hook::low_level::emulate_default_handler(signal);
    }
    0
}

/// Adds (`Add == TRUE`) or removes a console control handler (see the
/// module docs for when it runs). With `HandlerRoutine == NULL`, `Add`
/// makes the process ignore Ctrl-C, or stop ignoring it. Removing a
/// handler that is not registered: `ERROR_INVALID_PARAMETER`.
#[no_mangle]
pub extern "C" fn SetConsoleCtrlHandler(HandlerRoutine: PHANDLER_ROUTINE, Add: BOOL) -> BOOL {
    if !listen() {
        return fail(ERROR_NOT_ENOUGH_MEMORY);
    }
    let Some(h) = HandlerRoutine else {
        IGNORE_CTRL_C.store(Add != FALSE, Ordering::Release);
        return TRUE;
    };
    // SAFETY: "C" and "C-unwind" differ only in what unwinding out of the
    // function means (see `Handler`).
    let h = unsafe { std::mem::transmute::<unsafe extern "C" fn(DWORD) -> BOOL, Handler>(h) };
    let mut handlers = HANDLERS.lock();
    if Add != FALSE {
        handlers.push(h);
        return TRUE;
    }
    match handlers.iter().rposition(|&x| x as usize == h as usize) {
        Some(i) => {
            handlers.remove(i);
            TRUE
        }
        None => fail(ERROR_INVALID_PARAMETER),
    }
}
