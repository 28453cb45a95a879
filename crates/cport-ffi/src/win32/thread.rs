//! Threads: `CreateThread` (with `CREATE_SUSPENDED` and `ResumeThread`),
//! `ExitThread`, `GetExitCodeThread`, `GetCurrentThreadId`,
//! `GetCurrentThread`, `GetThreadId`, `SwitchToThread`,
//! `GetCurrentProcessId`, `ExitProcess`.
//!
//! A thread of `CreateThread` is a detached POSIX thread; its handle is a
//! waitable object, signalled when the thread ends — by returning from its
//! start function, by `ExitThread`, or by any other thread exit
//! (`pthread_exit`): a thread-local guard marks the object when the
//! thread's thread-locals are destroyed. Closing the handle does not
//! affect the thread.
//!
//! Thread ids are small numbers given out by the library (never 0, not
//! reused), the same that `CancelIo` uses to find a thread's operations; a
//! thread not made by `CreateThread` gets one when it first asks.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::types::*;
use super::waitable::{Kind, Waitable};
use super::{handle_or_null, insert};
use crate::error::{fail, set_last_error};
use crate::types::*;

/// `GetCurrentThread()`'s pseudo-handle, as on Windows (`(HANDLE)-2`).
const CURRENT_THREAD: usize = usize::MAX - 1;

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

thread_local! {
    static ID: Cell<u32> = const { Cell::new(0) };
    /// The thread object of a thread made by `CreateThread`, marked exited
    /// (with the code set by `ExitThread` or the start function) when the
    /// thread's thread-locals are destroyed.
    static EXIT: ExitGuard = const {
        ExitGuard {
            object: RefCell::new(None),
            code: Cell::new(0),
        }
    };
}

struct ExitGuard {
    object: RefCell<Option<Arc<Waitable>>>,
    code: Cell<u32>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if let Some(o) = self.object.get_mut().take() {
            o.exit(self.code.get());
        }
    }
}

fn new_id() -> u32 {
    loop {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// The calling thread's id (given out on first use).
pub(crate) fn current_id() -> u32 {
    ID.with(|c| {
        if c.get() == 0 {
            c.set(new_id());
        }
        c.get()
    })
}

/// A start function, called with the "C-unwind" ABI: `ExitThread` ends a
/// thread by unwinding its frames (`pthread_exit`), which must pass through
/// the call (the same calling convention as "C" otherwise).
pub(crate) type Routine = unsafe extern "C-unwind" fn(LPVOID) -> DWORD;

/// What a new thread runs: plain values only, so that the frames below
/// the start function hold nothing to drop when `ExitThread` ends the
/// thread from inside it.
struct Start {
    routine: Routine,
    param: usize,
    object: Arc<Waitable>,
}

/// Sets up the new thread (id, exit guard, start gate) and returns what
/// to call.
fn enter(start: Start) -> (Routine, usize) {
    let Start {
        routine,
        param,
        object,
    } = start;
    if let Some(ctl) = object.thread() {
        ID.with(|c| c.set(ctl.id));
        ctl.wait_resumed();
    }
    EXIT.with(|e| *e.object.borrow_mut() = Some(object));
    (routine, param)
}

/// The body of every thread made here ("C-unwind": see [`Routine`]).
extern "C-unwind" fn trampoline(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the `Box<Start>` that `spawn` leaked for this thread
    // alone.
    let (routine, param) = enter(*unsafe { Box::from_raw(arg.cast::<Start>()) });
    // SAFETY: the caller of `CreateThread` gave a start function taking
    // this parameter. This frame holds nothing to drop during the call.
    let code = unsafe { routine(param as LPVOID) };
    EXIT.with(|e| e.code.set(code));
    std::ptr::null_mut()
}

/// Starts a detached thread running `start` with a stack of at least
/// `stack` bytes (0: the default).
fn spawn(stack: usize, start: Start) -> Result<(), DWORD> {
    let arg = Box::into_raw(Box::new(start));
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut tid: libc::pthread_t = 0;
    // SAFETY: `attr` is initialised by `pthread_attr_init` before any other
    // use and destroyed after `pthread_create`; `arg` goes to the new
    // thread, or is taken back below if none starts.
    let rc = unsafe {
        let rc = libc::pthread_attr_init(attr.as_mut_ptr());
        if rc != 0 {
            drop(Box::from_raw(arg));
            return Err(ERROR_NOT_ENOUGH_MEMORY);
        }
        libc::pthread_attr_setdetachstate(attr.as_mut_ptr(), libc::PTHREAD_CREATE_DETACHED);
        if stack > 0 {
            let page = libc::sysconf(libc::_SC_PAGESIZE).max(4096) as usize;
            let size = stack.div_ceil(page).saturating_mul(page);
            libc::pthread_attr_setstacksize(attr.as_mut_ptr(), size.max(libc::PTHREAD_STACK_MIN));
        }
        // The same function with the plain "C" ABI `pthread_create` names
        // (identical calling convention).
        let body: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void =
            std::mem::transmute(trampoline as extern "C-unwind" fn(_) -> _);
        let rc = libc::pthread_create(&mut tid, attr.as_ptr(), body, arg.cast());
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if rc != 0 {
            drop(Box::from_raw(arg));
        }
        rc
    };
    match rc {
        0 => Ok(()),
        libc::EAGAIN => Err(ERROR_NOT_ENOUGH_MEMORY),
        e => Err(crate::error::win32_from_errno(e)),
    }
}

/// Starts a detached thread, without a handle, running `routine(param)`
/// (the console handler threads).
pub(crate) fn spawn_detached(routine: Routine, param: LPVOID) -> Result<(), DWORD> {
    let start = Start {
        routine,
        param: param as usize,
        object: Waitable::new_thread(new_id(), false),
    };
    spawn(0, start)
}

/// Creates a thread running `lpStartAddress(lpParameter)`; its id goes to
/// `*lpThreadId` when non-null. `CREATE_SUSPENDED`: it waits for
/// `ResumeThread`. `dwStackSize` (0: the default) is rounded up to pages.
/// Returns the thread's handle (signalled when it ends; close it with
/// `CloseHandle`), or `NULL` with `ERROR_INVALID_PARAMETER` (no start
/// function) or `ERROR_NOT_ENOUGH_MEMORY` (no more threads). Security
/// attributes are ignored.
///
/// # Safety
/// `lpThreadId` is null or valid for a write; `lpStartAddress` is a
/// function of the given type.
#[no_mangle]
pub unsafe extern "C" fn CreateThread(
    lpThreadAttributes: LPSECURITY_ATTRIBUTES,
    dwStackSize: SIZE_T,
    lpStartAddress: LPTHREAD_START_ROUTINE,
    lpParameter: LPVOID,
    dwCreationFlags: DWORD,
    lpThreadId: LPDWORD,
) -> HANDLE {
    let _ = lpThreadAttributes;
    let Some(routine) = lpStartAddress else {
        set_last_error(ERROR_INVALID_PARAMETER);
        return std::ptr::null_mut();
    };
    let id = new_id();
    let object = Waitable::new_thread(id, dwCreationFlags & CREATE_SUSPENDED != 0);
    let h = match insert(object.clone()) {
        Ok(h) => h,
        Err(e) => return handle_or_null(Err(e)),
    };
    let start = Start {
        // SAFETY: "C" and "C-unwind" differ only in what unwinding out of
        // the function means (see `Routine`).
        routine: unsafe {
            std::mem::transmute::<unsafe extern "C" fn(LPVOID) -> DWORD, Routine>(routine)
        },
        param: lpParameter as usize,
        object,
    };
    if let Err(e) = spawn(dwStackSize, start) {
        drop(crate::object::remove(h));
        return handle_or_null(Err(e));
    }
    if !lpThreadId.is_null() {
        // SAFETY: non-null and writable (caller).
        unsafe { *lpThreadId = id };
    }
    h
}

/// The thread object `h` names (`None` for the current-thread
/// pseudo-handle), or `ERROR_INVALID_HANDLE`.
fn thread(h: HANDLE) -> Result<Option<Arc<Waitable>>, DWORD> {
    if h as usize == CURRENT_THREAD {
        return Ok(None);
    }
    let w = super::waitable(h)?;
    match w.kind() {
        Kind::Thread => Ok(Some(w)),
        _ => Err(ERROR_INVALID_HANDLE),
    }
}

/// Lets a thread made with `CREATE_SUSPENDED` start. Returns the previous
/// suspend count (1 the first time, then 0), or `(DWORD)-1` with
/// `ERROR_INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn ResumeThread(hThread: HANDLE) -> DWORD {
    match thread(hThread) {
        Ok(Some(t)) => t.thread().map_or(0, |c| c.resume()),
        Ok(None) => 0,
        Err(e) => {
            set_last_error(e);
            DWORD::MAX
        }
    }
}

/// The exit code of a thread, or `STILL_ACTIVE` (259) while it runs.
///
/// # Safety
/// `lpExitCode` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn GetExitCodeThread(hThread: HANDLE, lpExitCode: LPDWORD) -> BOOL {
    if lpExitCode.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    let code = match thread(hThread) {
        Ok(t) => t.and_then(|t| t.exit_code()).unwrap_or(STILL_ACTIVE),
        Err(e) => return fail(e),
    };
    // SAFETY: non-null and writable (caller).
    unsafe { *lpExitCode = code };
    TRUE
}

/// Ends the calling thread with `dwExitCode` (what `GetExitCodeThread`
/// and waiters on its handle then see). The thread ends with
/// `pthread_exit`: C++ objects on its stack are destroyed by glibc's
/// unwinding (Windows skips them). Call it only from C or C++ code:
/// unwinding Rust frames that own values this way is undefined.
#[no_mangle]
pub extern "C-unwind" fn ExitThread(dwExitCode: DWORD) -> ! {
    // (Already gone when called from a thread-local destructor.)
    let _ = EXIT.try_with(|e| e.code.set(dwExitCode));
    // SAFETY: ends this thread by a forced unwind. The frames it passes
    // are the caller's C code and, for threads of `CreateThread`,
    // `trampoline`: all "C-unwind", and `trampoline` owns nothing to drop
    // during the start function's call. The exit guard marks the thread
    // object when the thread-locals are destroyed.
    unsafe { pthread_exit(std::ptr::null_mut()) }
}

extern "C-unwind" {
    /// `libc::pthread_exit`, declared as unwinding (it does: a forced
    /// unwind of the thread's frames).
    fn pthread_exit(value: *mut libc::c_void) -> !;
}

/// The calling thread's id.
#[no_mangle]
pub extern "C" fn GetCurrentThreadId() -> DWORD {
    current_id()
}

/// A pseudo-handle for the calling thread (`(HANDLE)-2`, as on Windows):
/// valid for `GetExitCodeThread`, `GetThreadId` and `ResumeThread`; not
/// waitable here, and not to be closed.
#[no_mangle]
pub extern "C" fn GetCurrentThread() -> HANDLE {
    CURRENT_THREAD as HANDLE
}

/// The id of the thread `Thread` names (0 with `ERROR_INVALID_HANDLE`).
#[no_mangle]
pub extern "C" fn GetThreadId(Thread: HANDLE) -> DWORD {
    match thread(Thread) {
        Ok(None) => current_id(),
        Ok(Some(t)) => t.thread().map_or(0, |c| c.id),
        Err(e) => {
            set_last_error(e);
            0
        }
    }
}

/// Offers the CPU to another ready thread (`sched_yield`). Returns `TRUE`:
/// Linux does not tell whether another thread ran.
#[no_mangle]
pub extern "C" fn SwitchToThread() -> BOOL {
    // SAFETY: no arguments.
    unsafe { libc::sched_yield() };
    TRUE
}

/// The process id (`getpid`).
#[no_mangle]
pub extern "C" fn GetCurrentProcessId() -> DWORD {
    std::process::id()
}

/// Ends the process with `uExitCode` (C `exit`: `atexit` handlers run and
/// C streams are flushed).
#[no_mangle]
pub extern "C" fn ExitProcess(uExitCode: u32) -> ! {
    std::process::exit(uExitCode as i32)
}
