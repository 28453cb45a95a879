//! Telling valgrind's memcheck about memory the kernel writes behind its
//! back.
//!
//! memcheck tracks every byte a system call writes, but io_uring writes
//! receive buffers (and accepted peer addresses) asynchronously, through
//! shared memory memcheck cannot follow: those bytes would stay
//! "undefined" and every read of received data would be reported. So when
//! an operation completes, the bytes the kernel reported writing are
//! declared defined with memcheck's client request
//! `VALGRIND_MAKE_MEM_DEFINED`. Outside valgrind the request is a handful
//! of no-op instructions.

/// `VG_USERREQ__MAKE_MEM_DEFINED`: `VG_USERREQ_TOOL_BASE('M','C') + 2`.
#[cfg(target_arch = "x86_64")]
const MAKE_MEM_DEFINED: usize = ((b'M' as usize) << 24 | (b'C' as usize) << 16) + 2;

/// Declares `len` bytes at `ptr` defined (they were written by the kernel).
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn mark_defined(ptr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let args: [usize; 6] = [MAKE_MEM_DEFINED, ptr as usize, len, 0, 0, 0];
    let mut _result: usize = 0;
    // SAFETY: valgrind's client-request sequence for amd64 (valgrind.h):
    // the four rotations of rdi total 128 bits and leave it unchanged, and
    // `xchg rbx, rbx` changes nothing, so natively this is a no-op. Under
    // valgrind the sequence is recognised; it reads `args` (valid for its
    // whole length, kept alive by the borrow) and writes rdx. rdi and rdx
    // are declared clobbered; no stack is used.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") _result,
            in("rax") args.as_ptr(),
            out("rdi") _,
            options(nostack, preserves_flags),
        );
    }
}

/// Other architectures: nothing (memcheck runs are done on x86_64).
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(crate) fn mark_defined(_ptr: *const u8, _len: usize) {}
