//! System information and time: `GetSystemInfo`, `GetNativeSystemInfo`,
//! `GetTickCount`, `GetTickCount64`, `QueryPerformanceCounter`,
//! `QueryPerformanceFrequency`.

use super::types::*;
use crate::error::fail;
use crate::names::LARGE_INTEGER;
use crate::types::*;

/// The page size (`sysconf(_SC_PAGESIZE)`).
pub(crate) fn page_size() -> usize {
    // SAFETY: no memory arguments.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// The CPUs this process may run on: (count, mask of the first 64).
fn affinity() -> (u32, usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable for its size.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mask = if n >= 64 {
            usize::MAX
        } else {
            (1usize << n) - 1
        };
        return (n as u32, mask);
    }
    let mut mask = 0usize;
    for cpu in 0..usize::BITS as usize {
        // SAFETY: `cpu` is below CPU_SETSIZE; `set` is initialised.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            mask |= 1 << cpu;
        }
    }
    // SAFETY: `set` is initialised.
    let n = unsafe { libc::CPU_COUNT(&set) };
    (n.max(1) as u32, mask)
}

/// Fills `*lpSystemInfo`: the number of CPUs the process may run on
/// (from its affinity mask, as on Windows) and their mask, the page size,
/// the architecture. `dwAllocationGranularity` is the page size
/// (`VirtualAlloc` here aligns to pages, not to Windows' 64 KiB);
/// `wProcessorLevel` and `wProcessorRevision` are 0.
///
/// # Safety
/// `lpSystemInfo` is null (ignored) or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn GetSystemInfo(lpSystemInfo: LPSYSTEM_INFO) {
    if lpSystemInfo.is_null() {
        return;
    }
    let (cpus, mask) = affinity();
    let page = page_size() as DWORD;
    let (arch, kind) = if cfg!(target_arch = "x86_64") {
        (PROCESSOR_ARCHITECTURE_AMD64, PROCESSOR_AMD_X8664)
    } else if cfg!(target_arch = "aarch64") {
        (PROCESSOR_ARCHITECTURE_ARM64, 0)
    } else {
        (PROCESSOR_ARCHITECTURE_UNKNOWN, 0)
    };
    let info = SYSTEM_INFO {
        wProcessorArchitecture: arch,
        wReserved: 0,
        dwPageSize: page,
        lpMinimumApplicationAddress: page as usize as LPVOID,
        // The top of the 47-bit user address space, less a guard page.
        lpMaximumApplicationAddress: ((1usize << 47) - page as usize - 1) as LPVOID,
        dwActiveProcessorMask: mask,
        dwNumberOfProcessors: cpus,
        dwProcessorType: kind,
        dwAllocationGranularity: page,
        wProcessorLevel: 0,
        wProcessorRevision: 0,
    };
    // SAFETY: valid for a write (caller).
    unsafe { lpSystemInfo.write(info) };
}

/// [`GetSystemInfo`] (there is no emulation layer to see through).
///
/// # Safety
/// As [`GetSystemInfo`].
#[no_mangle]
pub unsafe extern "C" fn GetNativeSystemInfo(lpSystemInfo: LPSYSTEM_INFO) {
    // SAFETY: forwarded.
    unsafe { GetSystemInfo(lpSystemInfo) }
}

/// Nanoseconds on `clock`.
fn nanos(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is writable.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds since the system started, including time suspended
/// (`CLOCK_BOOTTIME`), as on Windows.
#[no_mangle]
pub extern "C" fn GetTickCount64() -> u64 {
    nanos(libc::CLOCK_BOOTTIME) / 1_000_000
}

/// [`GetTickCount64`] in 32 bits: wraps after 49.7 days, as on Windows.
#[no_mangle]
pub extern "C" fn GetTickCount() -> DWORD {
    GetTickCount64() as DWORD
}

/// Ticks per second of the performance counter: 10 MHz (100 ns ticks),
/// as on current Windows, so `count * 1000000 / frequency` does not
/// overflow sooner than there.
const PERFORMANCE_FREQUENCY: i64 = 10_000_000;

/// The performance counter: `CLOCK_MONOTONIC` in 100 ns ticks.
///
/// # Safety
/// `lpPerformanceCount` is null (`ERROR_INVALID_PARAMETER`) or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn QueryPerformanceCounter(lpPerformanceCount: *mut LARGE_INTEGER) -> BOOL {
    if lpPerformanceCount.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    let ticks = nanos(libc::CLOCK_MONOTONIC) / (1_000_000_000 / PERFORMANCE_FREQUENCY as u64);
    // SAFETY: valid for a write (caller).
    unsafe {
        lpPerformanceCount.write(LARGE_INTEGER {
            QuadPart: ticks as i64,
        })
    };
    TRUE
}

/// The performance counter's frequency: [`PERFORMANCE_FREQUENCY`].
///
/// # Safety
/// As [`QueryPerformanceCounter`].
#[no_mangle]
pub unsafe extern "C" fn QueryPerformanceFrequency(lpFrequency: *mut LARGE_INTEGER) -> BOOL {
    if lpFrequency.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    // SAFETY: valid for a write (caller).
    unsafe {
        lpFrequency.write(LARGE_INTEGER {
            QuadPart: PERFORMANCE_FREQUENCY,
        })
    };
    TRUE
}
