//! Locks that live in the caller's memory: `CRITICAL_SECTION` (recursive),
//! `SRWLOCK` (reader/writer, not recursive) and `CONDITION_VARIABLE`.
//!
//! They are `parking_lot`'s raw locks placed in the Windows structures
//! (checked at compile time to fit, with an all-zero unlocked state), so
//! nothing is allocated, nothing leaks when `DeleteCriticalSection` is
//! never called, and an uncontended enter/leave is one atomic operation
//! each way. A thread that has to wait for a lock, or sleeps on a
//! condition variable, does so in a blocking scope of the port it last
//! dequeued from, as a Windows kernel wait does.
//!
//! Releasing a lock the thread does not hold is undefined on Windows;
//! here `LeaveCriticalSection` by a non-owner does nothing, and a release
//! of an SRW lock that is not held in that mode does nothing.

use std::ptr::addr_of_mut;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use parking_lot::lock_api::{RawMutex as _, RawRwLock as _};
use parking_lot::{RawMutex, RawRwLock};
use parking_lot_core::{ParkResult, DEFAULT_PARK_TOKEN, DEFAULT_UNPARK_TOKEN};

use super::types::*;
use super::wait::deadline;
use crate::error::fail;
use crate::types::*;

/// Win32 `BOOLEAN` (what `TryAcquireSRWLock*` return).
pub type BOOLEAN = u8;

// The raw locks fit their Windows homes, and all-zero memory is unlocked.
const _: () = {
    assert!(std::mem::size_of::<RawMutex>() <= std::mem::size_of::<HANDLE>());
    assert!(std::mem::align_of::<RawMutex>() <= std::mem::align_of::<HANDLE>());
    assert!(std::mem::align_of::<RawRwLock>() <= std::mem::align_of::<SRWLOCK>());
    // SAFETY: `transmute` checks the sizes are equal; both types are plain
    // integers inside.
    assert!(unsafe { std::mem::transmute::<RawMutex, u8>(RawMutex::INIT) } == 0);
    // SAFETY: as above.
    assert!(unsafe { std::mem::transmute::<RawRwLock, usize>(RawRwLock::INIT) } == 0);
};

/// The parts of a critical section, viewed in place.
struct Crit<'a> {
    lock: &'a RawMutex,
    owner: &'a AtomicUsize,
    count: &'a AtomicI32,
}

/// Views `cs` in place; `None` for `NULL`.
///
/// # Safety
/// `cs` is null or points to a live `CRITICAL_SECTION` (initialised, or
/// all-zero) that does not move while in use.
unsafe fn crit<'a>(cs: LPCRITICAL_SECTION) -> Option<Crit<'a>> {
    if cs.is_null() {
        return None;
    }
    // SAFETY: live and aligned (caller); `RawMutex` fits `LockSemaphore`
    // (checked above) and every bit pattern the lock writes is valid;
    // `OwningThread` and `RecursionCount` have the size and alignment of
    // the atomics viewing them; all our accesses are atomic.
    unsafe {
        Some(Crit {
            lock: &*(addr_of_mut!((*cs).LockSemaphore) as *const RawMutex),
            owner: &*(addr_of_mut!((*cs).OwningThread) as *const AtomicUsize),
            count: &*(addr_of_mut!((*cs).RecursionCount) as *const AtomicI32),
        })
    }
}

impl Crit<'_> {
    fn owned_here(&self, me: usize) -> bool {
        // Only this thread ever stores its own id here.
        self.owner.load(Ordering::Relaxed) == me
    }

    /// Takes the lock (not recursively), waiting in a blocking scope.
    fn acquire(&self, me: usize, count: i32) {
        if !self.lock.try_lock() {
            crate::port::blocking(|| self.lock.lock());
        }
        self.owner.store(me, Ordering::Relaxed);
        self.count.store(count, Ordering::Relaxed);
    }

    /// Gives the lock up entirely, however often it was entered.
    fn release_all(&self) {
        self.count.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Relaxed);
        // SAFETY: this thread holds the lock (checked by the callers).
        unsafe { self.lock.unlock() };
    }
}

fn me() -> usize {
    super::thread::current_id() as usize
}

/// Initialises a critical section, unlocked.
///
/// # Safety
/// `lpCriticalSection` is null or valid for writes, and not in use.
#[no_mangle]
pub unsafe extern "C" fn InitializeCriticalSection(lpCriticalSection: LPCRITICAL_SECTION) {
    // SAFETY: forwarded.
    unsafe { InitializeCriticalSectionAndSpinCount(lpCriticalSection, 0) };
}

/// [`InitializeCriticalSection`], keeping `dwSpinCount` (the lock spins
/// adaptively whatever it is). Returns `TRUE`.
///
/// # Safety
/// As [`InitializeCriticalSection`].
#[no_mangle]
pub unsafe extern "C" fn InitializeCriticalSectionAndSpinCount(
    lpCriticalSection: LPCRITICAL_SECTION,
    dwSpinCount: DWORD,
) -> BOOL {
    if lpCriticalSection.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    // SAFETY: valid for writes and not in use (caller); all-zero with a
    // spin count is the unlocked state.
    unsafe {
        lpCriticalSection.write(CRITICAL_SECTION {
            DebugInfo: std::ptr::null_mut(),
            LockCount: 0,
            RecursionCount: 0,
            OwningThread: std::ptr::null_mut(),
            LockSemaphore: std::ptr::null_mut(),
            SpinCount: dwSpinCount as ULONG_PTR,
        })
    };
    TRUE
}

/// [`InitializeCriticalSectionAndSpinCount`]; `Flags` are ignored.
///
/// # Safety
/// As [`InitializeCriticalSection`].
#[no_mangle]
pub unsafe extern "C" fn InitializeCriticalSectionEx(
    lpCriticalSection: LPCRITICAL_SECTION,
    dwSpinCount: DWORD,
    Flags: DWORD,
) -> BOOL {
    let _ = Flags;
    // SAFETY: forwarded.
    unsafe { InitializeCriticalSectionAndSpinCount(lpCriticalSection, dwSpinCount) }
}

/// Sets the spin count; returns the previous one.
///
/// # Safety
/// As [`EnterCriticalSection`].
#[no_mangle]
pub unsafe extern "C" fn SetCriticalSectionSpinCount(
    lpCriticalSection: LPCRITICAL_SECTION,
    dwSpinCount: DWORD,
) -> DWORD {
    if lpCriticalSection.is_null() {
        return 0;
    }
    // SAFETY: live (caller); `SpinCount` is pointer-sized and aligned, and
    // viewed atomically, as other threads may set it too.
    let spin = unsafe { &*(addr_of_mut!((*lpCriticalSection).SpinCount) as *const AtomicUsize) };
    spin.swap(dwSpinCount as usize, Ordering::Relaxed) as DWORD
}

/// Enters a critical section, waiting while another thread owns it; the
/// owner may enter again (each enter needs a leave).
///
/// # Safety
/// `lpCriticalSection` is null (ignored) or a live, initialised (or
/// all-zero) critical section that does not move while in use.
#[no_mangle]
pub unsafe extern "C" fn EnterCriticalSection(lpCriticalSection: LPCRITICAL_SECTION) {
    // SAFETY: forwarded.
    let Some(c) = (unsafe { crit(lpCriticalSection) }) else {
        return;
    };
    let me = me();
    if c.owned_here(me) {
        c.count.fetch_add(1, Ordering::Relaxed);
        return;
    }
    c.acquire(me, 1);
}

/// Enters a critical section if no other thread owns it: `TRUE` if
/// entered (again, for the owner), `FALSE` otherwise.
///
/// # Safety
/// As [`EnterCriticalSection`].
#[no_mangle]
pub unsafe extern "C" fn TryEnterCriticalSection(lpCriticalSection: LPCRITICAL_SECTION) -> BOOL {
    // SAFETY: forwarded.
    let Some(c) = (unsafe { crit(lpCriticalSection) }) else {
        return FALSE;
    };
    let me = me();
    if c.owned_here(me) {
        c.count.fetch_add(1, Ordering::Relaxed);
        return TRUE;
    }
    if !c.lock.try_lock() {
        return FALSE;
    }
    c.owner.store(me, Ordering::Relaxed);
    c.count.store(1, Ordering::Relaxed);
    TRUE
}

/// Leaves a critical section once; the last leave of the owner unlocks
/// it. A thread that does not own it changes nothing.
///
/// # Safety
/// As [`EnterCriticalSection`].
#[no_mangle]
pub unsafe extern "C" fn LeaveCriticalSection(lpCriticalSection: LPCRITICAL_SECTION) {
    // SAFETY: forwarded.
    let Some(c) = (unsafe { crit(lpCriticalSection) }) else {
        return;
    };
    if !c.owned_here(me()) {
        return;
    }
    if c.count.load(Ordering::Relaxed) > 1 {
        c.count.fetch_sub(1, Ordering::Relaxed);
    } else {
        c.release_all();
    }
}

/// Ends the use of a critical section. Nothing was allocated, so there is
/// nothing to free; it may be initialised again.
///
/// # Safety
/// As [`EnterCriticalSection`]; no thread may be using it.
#[no_mangle]
pub unsafe extern "C" fn DeleteCriticalSection(lpCriticalSection: LPCRITICAL_SECTION) {
    let _ = lpCriticalSection;
}

/// Views an SRW lock in place.
///
/// # Safety
/// `l` is null or a live SRW lock that does not move while in use.
unsafe fn srw<'a>(l: PSRWLOCK) -> Option<&'a RawRwLock> {
    // SAFETY: live and aligned (caller); `RawRwLock` has the size of the
    // structure (checked above by `transmute`), any bit pattern the lock
    // writes is valid, and all-zero is unlocked.
    (!l.is_null()).then(|| unsafe { &*(l as *const RawRwLock) })
}

/// Initialises an SRW lock, unlocked (as `SRWLOCK_INIT`).
///
/// # Safety
/// `SRWLock` is null or valid for writes, and not in use.
#[no_mangle]
pub unsafe extern "C" fn InitializeSRWLock(SRWLock: PSRWLOCK) {
    if !SRWLock.is_null() {
        // SAFETY: valid for writes (caller).
        unsafe {
            SRWLock.write(SRWLOCK {
                Ptr: std::ptr::null_mut(),
            })
        };
    }
}

/// Takes the lock exclusively (not recursive).
///
/// # Safety
/// As `srw`.
#[no_mangle]
pub unsafe extern "C" fn AcquireSRWLockExclusive(SRWLock: PSRWLOCK) {
    // SAFETY: forwarded.
    if let Some(l) = unsafe { srw(SRWLock) } {
        if !l.try_lock_exclusive() {
            crate::port::blocking(|| l.lock_exclusive());
        }
    }
}

/// Takes the lock shared.
///
/// # Safety
/// As `srw`.
#[no_mangle]
pub unsafe extern "C" fn AcquireSRWLockShared(SRWLock: PSRWLOCK) {
    // SAFETY: forwarded.
    if let Some(l) = unsafe { srw(SRWLock) } {
        if !l.try_lock_shared() {
            crate::port::blocking(|| l.lock_shared());
        }
    }
}

/// Takes the lock exclusively if free: 1 if taken, 0 otherwise.
///
/// # Safety
/// As `srw`.
#[no_mangle]
pub unsafe extern "C" fn TryAcquireSRWLockExclusive(SRWLock: PSRWLOCK) -> BOOLEAN {
    // SAFETY: forwarded.
    unsafe { srw(SRWLock) }.is_some_and(|l| l.try_lock_exclusive()) as BOOLEAN
}

/// Takes the lock shared if no writer holds it: 1 if taken, 0 otherwise.
///
/// # Safety
/// As `srw`.
#[no_mangle]
pub unsafe extern "C" fn TryAcquireSRWLockShared(SRWLock: PSRWLOCK) -> BOOLEAN {
    // SAFETY: forwarded.
    unsafe { srw(SRWLock) }.is_some_and(|l| l.try_lock_shared()) as BOOLEAN
}

/// Releases an exclusive hold (any thread may, as on Windows).
///
/// # Safety
/// As `srw`.
#[no_mangle]
pub unsafe extern "C" fn ReleaseSRWLockExclusive(SRWLock: PSRWLOCK) {
    // SAFETY: forwarded.
    if let Some(l) = unsafe { srw(SRWLock) } {
        if l.is_locked_exclusive() {
            // SAFETY: held exclusively (the caller releases its hold).
            unsafe { l.unlock_exclusive() };
        }
    }
}

/// Releases a shared hold.
///
/// # Safety
/// As `srw`.
#[no_mangle]
pub unsafe extern "C" fn ReleaseSRWLockShared(SRWLock: PSRWLOCK) {
    // SAFETY: forwarded.
    if let Some(l) = unsafe { srw(SRWLock) } {
        if l.is_locked() {
            // SAFETY: held (the caller releases its shared hold).
            unsafe { l.unlock_shared() };
        }
    }
}

/// Initialises a condition variable (as `CONDITION_VARIABLE_INIT`).
///
/// # Safety
/// `ConditionVariable` is null or valid for writes, and not in use.
#[no_mangle]
pub unsafe extern "C" fn InitializeConditionVariable(ConditionVariable: PCONDITION_VARIABLE) {
    if !ConditionVariable.is_null() {
        // SAFETY: valid for writes (caller).
        unsafe {
            ConditionVariable.write(CONDITION_VARIABLE {
                Ptr: std::ptr::null_mut(),
            })
        };
    }
}

/// Sleeps on `cv` after `release` (run once this thread is queued, so a
/// wake after the release is not lost), then runs `reacquire`; all in a
/// blocking scope. `TRUE`, or `FALSE` with `ERROR_TIMEOUT`.
fn sleep_on(
    cv: PCONDITION_VARIABLE,
    ms: DWORD,
    release: impl FnOnce(),
    reacquire: impl FnOnce(),
) -> BOOL {
    let until = deadline(ms);
    let r = crate::port::blocking(|| {
        // SAFETY: the key is the condition variable's address, which only
        // these functions park on (the locks park on their own addresses);
        // `validate` and `timed_out` do nothing; `release` may unpark
        // (allowed in `before_sleep`) and does not park.
        let r = unsafe {
            parking_lot_core::park(
                cv as usize,
                || true,
                release,
                |_, _| {},
                DEFAULT_PARK_TOKEN,
                until,
            )
        };
        reacquire();
        r
    });
    match r {
        ParkResult::TimedOut => fail(ERROR_TIMEOUT),
        ParkResult::Unparked(_) | ParkResult::Invalid => TRUE,
    }
}

/// Releases the critical section (however often it was entered), sleeps
/// until woken or `dwMilliseconds` pass, and enters it again as often.
/// `TRUE` when woken (which may be spurious: check the condition),
/// `FALSE` with `ERROR_TIMEOUT`, or with `ERROR_NOT_OWNER` when the
/// calling thread does not own the section.
///
/// # Safety
/// As [`EnterCriticalSection`]; `ConditionVariable` is null or live.
#[no_mangle]
pub unsafe extern "C" fn SleepConditionVariableCS(
    ConditionVariable: PCONDITION_VARIABLE,
    CriticalSection: LPCRITICAL_SECTION,
    dwMilliseconds: DWORD,
) -> BOOL {
    // SAFETY: forwarded.
    let Some(c) = (unsafe { crit(CriticalSection) }) else {
        return fail(ERROR_INVALID_PARAMETER);
    };
    if ConditionVariable.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    let me = me();
    if !c.owned_here(me) {
        return fail(ERROR_NOT_OWNER);
    }
    let count = c.count.load(Ordering::Relaxed);
    sleep_on(
        ConditionVariable,
        dwMilliseconds,
        || c.release_all(),
        || c.acquire(me, count),
    )
}

/// As [`SleepConditionVariableCS`] for an SRW lock held exclusively, or
/// shared with `CONDITION_VARIABLE_LOCKMODE_SHARED` in `Flags`.
///
/// # Safety
/// As `srw`; `ConditionVariable` is null or live.
#[no_mangle]
pub unsafe extern "C" fn SleepConditionVariableSRW(
    ConditionVariable: PCONDITION_VARIABLE,
    SRWLock: PSRWLOCK,
    dwMilliseconds: DWORD,
    Flags: ULONG,
) -> BOOL {
    if ConditionVariable.is_null() || SRWLock.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    let shared = Flags & CONDITION_VARIABLE_LOCKMODE_SHARED != 0;
    let (release, reacquire): (
        unsafe extern "C" fn(PSRWLOCK),
        unsafe extern "C" fn(PSRWLOCK),
    ) = if shared {
        (ReleaseSRWLockShared, AcquireSRWLockShared)
    } else {
        (ReleaseSRWLockExclusive, AcquireSRWLockExclusive)
    };
    // SAFETY: the lock is live (caller), for both calls.
    sleep_on(
        ConditionVariable,
        dwMilliseconds,
        || unsafe { release(SRWLock) },
        || unsafe { reacquire(SRWLock) },
    )
}

/// Wakes one thread sleeping on the condition variable, if any.
#[no_mangle]
pub extern "C" fn WakeConditionVariable(ConditionVariable: PCONDITION_VARIABLE) {
    // SAFETY: unparks by address only (nothing is dereferenced); see
    // `sleep_on` for who parks there.
    unsafe { parking_lot_core::unpark_one(ConditionVariable as usize, |_| DEFAULT_UNPARK_TOKEN) };
}

/// Wakes every thread sleeping on the condition variable.
#[no_mangle]
pub extern "C" fn WakeAllConditionVariable(ConditionVariable: PCONDITION_VARIABLE) {
    // SAFETY: as `WakeConditionVariable`.
    unsafe { parking_lot_core::unpark_all(ConditionVariable as usize, DEFAULT_UNPARK_TOKEN) };
}
