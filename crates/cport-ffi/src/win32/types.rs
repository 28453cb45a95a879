//! Types and constants of the Win32 companion, with Windows' names and
//! values. `SYSTEM_INFO` (an anonymous union), the
//! scalar type names (`LONG`, `LONG64`, `CHAR`, …), the `Interlocked*`
//! functions and the memory macros are written by hand in
//! `include/cport/win32.h`; the twins here have the same layout (tested
//! from C).

#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::c_void;

use crate::types::*;

pub use crate::names::LONG;
/// Win32 `LONG64` / `LONGLONG`.
pub type LONG64 = i64;
/// Win32 `SIZE_T`.
pub type SIZE_T = usize;
/// A Winsock event: an event handle.
pub type WSAEVENT = HANDLE;

/// A thread's start function: `DWORD WINAPI ThreadProc(LPVOID)`.
pub type LPTHREAD_START_ROUTINE = Option<unsafe extern "C" fn(LPVOID) -> DWORD>;
/// A console control handler: `BOOL WINAPI HandlerRoutine(DWORD)`.
pub type PHANDLER_ROUTINE = Option<unsafe extern "C" fn(DWORD) -> BOOL>;

/// Security attributes: accepted and ignored (no Windows security model
/// on Linux; handles are never inherited by child processes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SECURITY_ATTRIBUTES {
    /// Size of the structure.
    pub nLength: DWORD,
    /// Ignored.
    pub lpSecurityDescriptor: LPVOID,
    /// Ignored.
    pub bInheritHandle: BOOL,
}
/// Pointer to [`SECURITY_ATTRIBUTES`].
pub type LPSECURITY_ATTRIBUTES = *mut SECURITY_ATTRIBUTES;

/// A recursive lock, laid out as on 64-bit Windows (40 bytes). Initialise
/// it with `InitializeCriticalSection` (an all-zero one works too) and do
/// not move it while in use. `OwningThread` holds the owner's thread id
/// (as from `GetCurrentThreadId`) and `RecursionCount` how often it
/// entered; the lock word lives in `LockSemaphore`; `DebugInfo` and
/// `LockCount` are not used.
#[repr(C)]
#[derive(Debug)]
pub struct CRITICAL_SECTION {
    /// Not used (NULL).
    pub DebugInfo: *mut c_void,
    /// Not used (0).
    pub LockCount: LONG,
    /// How many times the owner entered.
    pub RecursionCount: LONG,
    /// The owner's thread id (0: none).
    pub OwningThread: HANDLE,
    /// The lock word (opaque).
    pub LockSemaphore: HANDLE,
    /// The spin count given at initialisation (the lock spins adaptively).
    pub SpinCount: ULONG_PTR,
}
/// Pointer to a [`CRITICAL_SECTION`].
pub type LPCRITICAL_SECTION = *mut CRITICAL_SECTION;

/// A slim reader/writer lock (pointer-sized; `SRWLOCK_INIT` or all-zero
/// is unlocked; nothing to delete).
#[repr(C)]
#[derive(Debug)]
pub struct SRWLOCK {
    /// The lock word (opaque).
    pub Ptr: *mut c_void,
}
/// Pointer to an [`SRWLOCK`].
pub type PSRWLOCK = *mut SRWLOCK;

/// A condition variable (pointer-sized; `CONDITION_VARIABLE_INIT` or
/// all-zero; nothing to delete). Waiters are kept by its address.
#[repr(C)]
#[derive(Debug)]
pub struct CONDITION_VARIABLE {
    /// Not used (opaque).
    pub Ptr: *mut c_void,
}
/// Pointer to a [`CONDITION_VARIABLE`].
pub type PCONDITION_VARIABLE = *mut CONDITION_VARIABLE;

/// What `GetSystemInfo` fills (64-bit Windows layout). The header declares
/// it with Windows' anonymous union (`dwOemId` /
/// `wProcessorArchitecture`); this twin names the first member
/// `wProcessorArchitecture` + `wReserved`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SYSTEM_INFO {
    /// `PROCESSOR_ARCHITECTURE_*`.
    pub wProcessorArchitecture: WORD,
    /// 0.
    pub wReserved: WORD,
    /// The page size.
    pub dwPageSize: DWORD,
    /// Lowest address of the user's address space.
    pub lpMinimumApplicationAddress: LPVOID,
    /// Highest address of the user's address space.
    pub lpMaximumApplicationAddress: LPVOID,
    /// The CPUs this process may run on (first 64).
    pub dwActiveProcessorMask: ULONG_PTR,
    /// The number of CPUs this process may run on (affinity mask).
    pub dwNumberOfProcessors: DWORD,
    /// `PROCESSOR_AMD_X8664` (8664) on x86-64, 0 elsewhere.
    pub dwProcessorType: DWORD,
    /// Granularity of `VirtualAlloc` addresses: the page size here.
    pub dwAllocationGranularity: DWORD,
    /// 0 (not reported).
    pub wProcessorLevel: WORD,
    /// 0 (not reported).
    pub wProcessorRevision: WORD,
}
/// Pointer to a [`SYSTEM_INFO`].
pub type LPSYSTEM_INFO = *mut SYSTEM_INFO;

// ---- Waits --------------------------------------------------------------

/// The wait was satisfied by the object at index 0 (add the index).
pub const WAIT_OBJECT_0: DWORD = 0;
/// An owner of a mutex exited while holding it (never returned: mutex
/// objects are not provided).
pub const WAIT_ABANDONED_0: DWORD = 0x80;
/// An alertable wait was ended by an APC (never returned: no APCs).
pub const WAIT_IO_COMPLETION: DWORD = 0xC0;
/// The wait failed; the error is in `GetLastError()`.
pub const WAIT_FAILED: DWORD = 0xFFFF_FFFF;
/// Most handles one wait may name.
pub const MAXIMUM_WAIT_OBJECTS: DWORD = 64;
/// `WSAWaitForMultipleEvents`: satisfied by event 0 (add the index).
pub const WSA_WAIT_EVENT_0: DWORD = 0;
/// `WSAWaitForMultipleEvents`: time-out.
pub const WSA_WAIT_TIMEOUT: DWORD = 258;
/// `WSAWaitForMultipleEvents`: failed.
pub const WSA_WAIT_FAILED: DWORD = 0xFFFF_FFFF;
/// `WSAWaitForMultipleEvents`: wait forever.
pub const WSA_INFINITE: DWORD = 0xFFFF_FFFF;
/// Most events `WSAWaitForMultipleEvents` takes.
pub const WSA_MAXIMUM_WAIT_EVENTS: DWORD = 64;
/// `SleepConditionVariableSRW`: the lock is held shared.
pub const CONDITION_VARIABLE_LOCKMODE_SHARED: ULONG = 0x1;

// ---- Threads ------------------------------------------------------------

/// `CreateThread`: the thread waits for `ResumeThread` before it starts.
pub const CREATE_SUSPENDED: DWORD = 0x4;
/// `CreateThread`: `dwStackSize` is the reserved size (accepted; Linux
/// stacks are reserved and committed on use anyway).
pub const STACK_SIZE_PARAM_IS_A_RESERVATION: DWORD = 0x0001_0000;
/// `GetExitCodeThread` of a thread still running.
pub const STILL_ACTIVE: DWORD = 259;

// ---- Errors -------------------------------------------------------------

/// `LeaveCriticalSection`/`SleepConditionVariableCS` by a thread that
/// does not own the lock.
pub const ERROR_NOT_OWNER: DWORD = 288;
/// `ReleaseSemaphore` beyond the maximum count.
pub const ERROR_TOO_MANY_POSTS: DWORD = 298;
/// `SleepConditionVariable*`: the time-out passed.
pub const ERROR_TIMEOUT: DWORD = 1460;
/// `VirtualAlloc`/`VirtualFree`: an address that is not usable or not
/// one of ours.
pub const ERROR_INVALID_ADDRESS: DWORD = 487;

// ---- Memory -------------------------------------------------------------

/// `HeapAlloc`/`HeapReAlloc`: zero the (new) memory.
pub const HEAP_ZERO_MEMORY: DWORD = 0x8;
/// Accepted and ignored (the heap is always thread-safe).
pub const HEAP_NO_SERIALIZE: DWORD = 0x1;
/// Accepted and ignored (failures return NULL; there are no exceptions).
pub const HEAP_GENERATE_EXCEPTIONS: DWORD = 0x4;
/// `HeapReAlloc`: fail rather than move the block.
pub const HEAP_REALLOC_IN_PLACE_ONLY: DWORD = 0x10;
/// `GlobalAlloc`/`LocalAlloc`: fixed memory (the only kind provided).
pub const GMEM_FIXED: u32 = 0x0;
/// `GlobalAlloc`/`LocalAlloc`: zero the memory.
pub const GMEM_ZEROINIT: u32 = 0x40;
/// `GMEM_FIXED | GMEM_ZEROINIT`.
pub const GPTR: u32 = 0x40;
/// `LocalAlloc` names.
pub const LMEM_FIXED: u32 = 0x0;
/// See [`GMEM_ZEROINIT`].
pub const LMEM_ZEROINIT: u32 = 0x40;
/// See [`GPTR`].
pub const LPTR: u32 = 0x40;
/// `VirtualAlloc`: back the pages with memory.
pub const MEM_COMMIT: DWORD = 0x1000;
/// `VirtualAlloc`: reserve addresses.
pub const MEM_RESERVE: DWORD = 0x2000;
/// `VirtualFree`: give the pages' memory back, keep the addresses.
pub const MEM_DECOMMIT: DWORD = 0x4000;
/// `VirtualFree`: release the whole reservation.
pub const MEM_RELEASE: DWORD = 0x8000;
/// No access.
pub const PAGE_NOACCESS: DWORD = 0x01;
/// Read only.
pub const PAGE_READONLY: DWORD = 0x02;
/// Read and write.
pub const PAGE_READWRITE: DWORD = 0x04;
/// Execute only.
pub const PAGE_EXECUTE: DWORD = 0x10;
/// Execute and read.
pub const PAGE_EXECUTE_READ: DWORD = 0x20;
/// Execute, read and write.
pub const PAGE_EXECUTE_READWRITE: DWORD = 0x40;

// ---- System -------------------------------------------------------------

/// `SYSTEM_INFO.wProcessorArchitecture` on x86-64.
pub const PROCESSOR_ARCHITECTURE_AMD64: WORD = 9;
/// `SYSTEM_INFO.wProcessorArchitecture` on 64-bit ARM.
pub const PROCESSOR_ARCHITECTURE_ARM64: WORD = 12;
/// `SYSTEM_INFO.wProcessorArchitecture` elsewhere.
pub const PROCESSOR_ARCHITECTURE_UNKNOWN: WORD = 0xFFFF;
/// `SYSTEM_INFO.dwProcessorType` on x86-64.
pub const PROCESSOR_AMD_X8664: DWORD = 8664;

// ---- Console ------------------------------------------------------------

/// `SIGINT` (Ctrl-C).
pub const CTRL_C_EVENT: DWORD = 0;
/// `SIGQUIT` (Ctrl-\), Windows' Ctrl-Break.
pub const CTRL_BREAK_EVENT: DWORD = 1;
/// `SIGTERM` and `SIGHUP`: the process is asked to end.
pub const CTRL_CLOSE_EVENT: DWORD = 2;
/// Never sent (no log-off notification on Linux).
pub const CTRL_LOGOFF_EVENT: DWORD = 5;
/// Never sent (no shutdown notification distinct from `SIGTERM`).
pub const CTRL_SHUTDOWN_EVENT: DWORD = 6;
