//! Counts the operation buffers alive in the process, so the model can
//! check that every buffer it handed to an operation was freed exactly
//! once — returned in a packet or a refusal and dropped by the test, or
//! dropped by the port when it closed.
//!
//! Every buffer the model gives an operation is a [`Buf::aligned`] buffer
//! with alignment [`BUF_ALIGN`], an alignment nothing else in this test
//! process asks for; the global allocator counts allocations and
//! deallocations made with it. A buffer freed twice would drive the count
//! below its starting value (if the allocator survived it).
//!
//! [`Buf::aligned`]: completion_port::Buf::aligned

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::SeqCst};

use completion_port::Buf;

/// The alignment that marks an operation buffer of the model.
pub const BUF_ALIGN: usize = 512;

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting [`BUF_ALIGN`]-aligned blocks.
pub struct Counting;

fn count(layout: Layout, p: *mut u8, by: isize) {
    if layout.align() == BUF_ALIGN && !p.is_null() {
        LIVE.fetch_add(by, SeqCst);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments;
// the counting only reads the layout and the returned pointer.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        count(layout, p, 1);
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        count(layout, p, 1);
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        count(layout, p, -1);
        // SAFETY: forwarded; `p` was allocated by `System` with `layout`.
        unsafe { System.dealloc(p, layout) }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded; the block keeps its alignment, so the count
        // of live blocks does not change.
        unsafe { System.realloc(p, layout, new_size) }
    }
}

/// Operation buffers alive now.
pub fn live() -> isize {
    LIVE.load(SeqCst)
}

/// An empty buffer with room for `cap` bytes (at least 1), counted.
pub fn buf(cap: usize) -> Buf {
    Buf::aligned(cap.max(1), BUF_ALIGN).expect("small aligned buffer")
}

/// A buffer of `len` bytes of `fill`, counted.
pub fn filled(len: usize, fill: u8) -> Buf {
    let mut b = buf(len);
    b.extend_from_slice(&vec![fill; len]);
    b
}
