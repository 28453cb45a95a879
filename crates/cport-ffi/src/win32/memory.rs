//! Memory: the process heap (`GetProcessHeap`, `HeapAlloc`, `HeapReAlloc`,
//! `HeapFree`, `HeapSize`), fixed `GlobalAlloc`/`LocalAlloc`, and
//! `VirtualAlloc`/`VirtualFree` (page-aligned memory, as unbuffered I/O
//! needs).
//!
//! # Heap blocks
//! A heap block is a `malloc` block with a 16-byte header holding the
//! size asked for, so `HeapSize` and `HeapReAlloc(HEAP_ZERO_MEMORY)` are
//! exact and blocks stay 16-byte aligned, as on 64-bit Windows. Free them
//! with `HeapFree`/`GlobalFree`/`LocalFree`, never `free` (nor the other
//! way round), as on Windows.
//!
//! # Virtual memory
//! `VirtualAlloc` maps anonymous memory (zeroed, page-aligned; Windows
//! aligns reservations to 64 KiB). The library remembers each reservation
//! so that `VirtualFree(MEM_RELEASE)` can release it whole.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use super::types::*;
use crate::error::{fail, set_last_error};
use crate::types::*;

/// The value `GetProcessHeap` returns: the address of this static, so it
/// is never a valid handle-table value or fd.
static PROCESS_HEAP: u8 = 0;

const HEADER: usize = 16;

/// The process heap's handle.
#[no_mangle]
pub extern "C" fn GetProcessHeap() -> HANDLE {
    std::ptr::addr_of!(PROCESS_HEAP) as HANDLE
}

fn is_heap(h: HANDLE) -> bool {
    h == GetProcessHeap()
}

/// A block of `n` bytes (zeroed when `zero`); null when out of memory.
fn alloc(n: usize, zero: bool) -> LPVOID {
    let Some(total) = n.checked_add(HEADER) else {
        return std::ptr::null_mut();
    };
    // SAFETY: plain allocation calls; the result is checked for null.
    let p = unsafe {
        if zero {
            libc::calloc(1, total)
        } else {
            libc::malloc(total)
        }
    };
    if p.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `p` holds at least `HEADER` bytes, and malloc aligns to 16.
    unsafe {
        p.cast::<usize>().write(n);
        p.cast::<u8>().add(HEADER).cast()
    }
}

/// The `malloc` block and size of heap block `mem`.
///
/// # Safety
/// `mem` came from [`alloc`] (or `realloc` here) and is not freed.
unsafe fn block(mem: LPCVOID) -> (*mut libc::c_void, usize) {
    // SAFETY: `mem` is `HEADER` bytes into a block whose header holds
    // its size (caller).
    unsafe {
        let base = mem.cast::<u8>().sub(HEADER) as *mut libc::c_void;
        (base, base.cast::<usize>().read())
    }
}

/// Allocates `dwBytes` from the process heap (16-byte aligned;
/// `HEAP_ZERO_MEMORY`: zeroed). Returns `NULL` when out of memory, or
/// with `ERROR_INVALID_HANDLE` for a heap other than the process heap
/// (`HeapCreate` is not provided).
#[no_mangle]
pub extern "C" fn HeapAlloc(hHeap: HANDLE, dwFlags: DWORD, dwBytes: SIZE_T) -> LPVOID {
    if !is_heap(hHeap) {
        set_last_error(ERROR_INVALID_HANDLE);
        return std::ptr::null_mut();
    }
    alloc(dwBytes, dwFlags & HEAP_ZERO_MEMORY != 0)
}

/// Resizes a heap block, moving it unless `HEAP_REALLOC_IN_PLACE_ONLY`
/// (then only a shrink, or growth within the block, succeeds). With
/// `HEAP_ZERO_MEMORY` the added bytes are zeroed. `NULL` on failure (the
/// block is unchanged).
///
/// # Safety
/// `lpMem` came from `HeapAlloc`/`HeapReAlloc` and is not freed.
#[no_mangle]
pub unsafe extern "C" fn HeapReAlloc(
    hHeap: HANDLE,
    dwFlags: DWORD,
    lpMem: LPVOID,
    dwBytes: SIZE_T,
) -> LPVOID {
    if !is_heap(hHeap) || lpMem.is_null() {
        set_last_error(if lpMem.is_null() {
            ERROR_INVALID_PARAMETER
        } else {
            ERROR_INVALID_HANDLE
        });
        return std::ptr::null_mut();
    }
    // SAFETY: a live heap block (caller).
    let (base, old) = unsafe { block(lpMem) };
    let Some(total) = dwBytes.checked_add(HEADER) else {
        return std::ptr::null_mut();
    };
    let new = if dwFlags & HEAP_REALLOC_IN_PLACE_ONLY != 0 {
        // SAFETY: `base` is a live malloc block.
        if total > unsafe { libc::malloc_usable_size(base) } {
            set_last_error(ERROR_NOT_ENOUGH_MEMORY);
            return std::ptr::null_mut();
        }
        base
    } else {
        // SAFETY: `base` is a live malloc block; on failure it is untouched.
        unsafe { libc::realloc(base, total) }
    };
    if new.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `new` holds `total` bytes: the header, then `dwBytes`.
    unsafe {
        new.cast::<usize>().write(dwBytes);
        let mem = new.cast::<u8>().add(HEADER);
        if dwFlags & HEAP_ZERO_MEMORY != 0 && dwBytes > old {
            std::ptr::write_bytes(mem.add(old), 0, dwBytes - old);
        }
        mem.cast()
    }
}

/// Frees a heap block (`NULL`: nothing to do). `TRUE`.
///
/// # Safety
/// `lpMem` is null or came from `HeapAlloc`/`HeapReAlloc` and is not
/// freed.
#[no_mangle]
pub unsafe extern "C" fn HeapFree(hHeap: HANDLE, dwFlags: DWORD, lpMem: LPVOID) -> BOOL {
    let _ = dwFlags;
    if !is_heap(hHeap) {
        return fail(ERROR_INVALID_HANDLE);
    }
    if !lpMem.is_null() {
        // SAFETY: a live heap block (caller), freed once.
        unsafe { libc::free(block(lpMem).0) };
    }
    TRUE
}

/// The size asked for when the block was (re)allocated; `(SIZE_T)-1`
/// for another heap.
///
/// # Safety
/// As [`HeapReAlloc`].
#[no_mangle]
pub unsafe extern "C" fn HeapSize(hHeap: HANDLE, dwFlags: DWORD, lpMem: LPCVOID) -> SIZE_T {
    let _ = dwFlags;
    if !is_heap(hHeap) || lpMem.is_null() {
        set_last_error(ERROR_INVALID_PARAMETER);
        return usize::MAX;
    }
    // SAFETY: a live heap block (caller).
    unsafe { block(lpMem) }.1
}

/// Fixed memory (`GMEM_FIXED`, optionally `GMEM_ZEROINIT`; `GPTR` is
/// both): a heap block whose "handle" is its address. Movable memory
/// (`GMEM_MOVEABLE`) is not provided: `NULL` with
/// `ERROR_INVALID_PARAMETER`. The obsolete flags Windows ignores
/// (`GMEM_SHARE`, `GMEM_NODISCARD`, …) are ignored.
#[no_mangle]
pub extern "C" fn GlobalAlloc(uFlags: u32, dwBytes: SIZE_T) -> HANDLE {
    if uFlags & GMEM_MOVEABLE != 0 {
        set_last_error(ERROR_INVALID_PARAMETER);
        return std::ptr::null_mut();
    }
    let p = alloc(dwBytes, uFlags & GMEM_ZEROINIT != 0);
    if p.is_null() {
        set_last_error(ERROR_NOT_ENOUGH_MEMORY);
    }
    p
}

/// Frees `GlobalAlloc` memory; `NULL` on success, as on Windows.
///
/// # Safety
/// `hMem` is null or came from `GlobalAlloc`/`LocalAlloc` and is not
/// freed.
#[no_mangle]
pub unsafe extern "C" fn GlobalFree(hMem: HANDLE) -> HANDLE {
    if !hMem.is_null() {
        // SAFETY: a live block (caller), freed once.
        unsafe { libc::free(block(hMem).0) };
    }
    std::ptr::null_mut()
}

/// [`GlobalAlloc`] (`LMEM_FIXED`, `LMEM_ZEROINIT`, `LPTR`).
#[no_mangle]
pub extern "C" fn LocalAlloc(uFlags: u32, uBytes: SIZE_T) -> HANDLE {
    GlobalAlloc(uFlags, uBytes)
}

/// [`GlobalFree`].
///
/// # Safety
/// As [`GlobalFree`].
#[no_mangle]
pub unsafe extern "C" fn LocalFree(hMem: HANDLE) -> HANDLE {
    // SAFETY: forwarded.
    unsafe { GlobalFree(hMem) }
}

/// `GlobalAlloc`/`LocalAlloc`: movable memory (not provided).
const GMEM_MOVEABLE: u32 = 0x2;
/// `VirtualAlloc`: prefer high addresses (accepted and ignored).
const MEM_TOP_DOWN: DWORD = 0x0010_0000;

/// Reservations made by `VirtualAlloc`: base → length.
static RESERVED: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

fn prot(protect: DWORD) -> Option<i32> {
    Some(match protect {
        PAGE_NOACCESS => libc::PROT_NONE,
        PAGE_READONLY => libc::PROT_READ,
        PAGE_READWRITE => libc::PROT_READ | libc::PROT_WRITE,
        PAGE_EXECUTE => libc::PROT_EXEC,
        PAGE_EXECUTE_READ => libc::PROT_EXEC | libc::PROT_READ,
        PAGE_EXECUTE_READWRITE => libc::PROT_EXEC | libc::PROT_READ | libc::PROT_WRITE,
        _ => return None,
    })
}

/// The page range `[addr, addr + len)` widened to pages, if it lies in a
/// reservation.
fn reserved_range(addr: usize, len: usize) -> Option<(usize, usize)> {
    let page = super::system::page_size();
    let start = addr & !(page - 1);
    let end = addr.checked_add(len)?.checked_next_multiple_of(page)?;
    let map = RESERVED.lock();
    let (&base, &size) = map.range(..=start).next_back()?;
    (end <= base + size && end > start).then_some((start, end - start))
}

/// Reserves (`MEM_RESERVE`) and/or commits (`MEM_COMMIT`) page-aligned,
/// zeroed memory with protection `flProtect` (`PAGE_READWRITE`, …).
/// Committing inside an earlier reservation (`lpAddress` set) makes those
/// pages accessible. Returns the base, or `NULL` with
/// `ERROR_INVALID_PARAMETER` (size 0, bad flags or protection),
/// `ERROR_INVALID_ADDRESS` (an address not free, or not reserved for a
/// commit) or `ERROR_NOT_ENOUGH_MEMORY`.
#[no_mangle]
pub extern "C" fn VirtualAlloc(
    lpAddress: LPVOID,
    dwSize: SIZE_T,
    flAllocationType: DWORD,
    flProtect: DWORD,
) -> LPVOID {
    let null = std::ptr::null_mut();
    let Some(prot) = prot(flProtect) else {
        set_last_error(ERROR_INVALID_PARAMETER);
        return null;
    };
    let kind = flAllocationType & (MEM_COMMIT | MEM_RESERVE);
    if dwSize == 0
        || kind == 0
        || flAllocationType & !(MEM_COMMIT | MEM_RESERVE | MEM_TOP_DOWN) != 0
    {
        set_last_error(ERROR_INVALID_PARAMETER);
        return null;
    }
    if kind == MEM_COMMIT && !lpAddress.is_null() {
        let Some((start, len)) = reserved_range(lpAddress as usize, dwSize) else {
            set_last_error(ERROR_INVALID_ADDRESS);
            return null;
        };
        // SAFETY: the range lies in one of our reservations.
        if unsafe { libc::mprotect(start as *mut libc::c_void, len, prot) } != 0 {
            set_last_error(ERROR_NOT_ENOUGH_MEMORY);
            return null;
        }
        return start as LPVOID;
    }
    let page = super::system::page_size();
    let Some(len) = dwSize.checked_next_multiple_of(page) else {
        set_last_error(ERROR_NOT_ENOUGH_MEMORY);
        return null;
    };
    let prot = if kind == MEM_RESERVE {
        libc::PROT_NONE
    } else {
        prot
    };
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if !lpAddress.is_null() {
        flags |= libc::MAP_FIXED_NOREPLACE;
    }
    let hint = (lpAddress as usize & !(page - 1)) as *mut libc::c_void;
    // SAFETY: a new anonymous mapping; MAP_FIXED_NOREPLACE never replaces
    // an existing one.
    let p = unsafe { libc::mmap(hint, len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        set_last_error(match crate::error::errno().raw_os_error() {
            Some(libc::EEXIST) => ERROR_INVALID_ADDRESS,
            _ => ERROR_NOT_ENOUGH_MEMORY,
        });
        return null;
    }
    RESERVED.lock().insert(p as usize, len);
    p
}

/// `MEM_RELEASE` (`dwSize` 0, `lpAddress` the base `VirtualAlloc`
/// returned): unmaps the whole reservation. `MEM_DECOMMIT`: gives the
/// pages of the range back (their contents are lost; they read as zero
/// once committed again) and makes them inaccessible. `FALSE` with
/// `ERROR_INVALID_PARAMETER` or `ERROR_INVALID_ADDRESS` otherwise.
///
/// # Safety
/// Nothing uses the memory released or decommitted any more.
#[no_mangle]
pub unsafe extern "C" fn VirtualFree(lpAddress: LPVOID, dwSize: SIZE_T, dwFreeType: DWORD) -> BOOL {
    let addr = lpAddress as usize;
    match dwFreeType {
        MEM_RELEASE => {
            if dwSize != 0 {
                return fail(ERROR_INVALID_PARAMETER);
            }
            let Some(len) = RESERVED.lock().remove(&addr) else {
                return fail(ERROR_INVALID_ADDRESS);
            };
            // SAFETY: exactly one of our mappings, forgotten above, and no
            // longer used (caller).
            unsafe { libc::munmap(lpAddress, len) };
            TRUE
        }
        MEM_DECOMMIT => {
            let whole = if dwSize == 0 {
                RESERVED.lock().get(&addr).copied()
            } else {
                Some(dwSize)
            };
            let Some((start, len)) = whole.and_then(|n| reserved_range(addr, n)) else {
                return fail(ERROR_INVALID_ADDRESS);
            };
            // SAFETY: the range lies in one of our reservations.
            unsafe {
                libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
                libc::mprotect(start as *mut libc::c_void, len, libc::PROT_NONE);
            }
            TRUE
        }
        _ => fail(ERROR_INVALID_PARAMETER),
    }
}
