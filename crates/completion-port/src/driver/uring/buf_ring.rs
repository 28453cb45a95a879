//! Provided buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19): the
//! io_uring half of a [`BufPool`](crate::BufPool) (`buf_pool.rs` has the
//! behaviour and the ownership rules).
//!
//! A ring is an array of `struct io_uring_buf` (address, length, buffer
//! id) shared with the kernel. We fill entries and publish them by moving
//! the ring's tail (the `resv` field of entry 0, a `u16` that wraps); the
//! kernel takes buffers from its head when a receive with `BUFFER_SELECT`
//! in our group has data, and names the buffer it took in the CQE's flags.
//!
//! # Invariants
//! - **Each buffer id is in at most one place**: in the ring (published,
//!   not yet taken by the kernel), taken by one receive in flight, or out
//!   in user space (one `PooledBuf`, or the op that received into it).
//!   The pool pushes an id only when it comes back from the other two, so
//!   at most `count` entries are ever published and not taken: the ring
//!   (`count` rounded up to a power of two) never overwrites an entry the
//!   kernel has not read.
//! - **One writer at a time**: every push (fill an entry, then publish the
//!   tail with release ordering, which the kernel reads with acquire) is
//!   under the `tail` lock, from whichever thread drops a buffer.
//! - **Memory outlives the registration**: the entries (here) and the
//!   buffers (in the pool) are freed only after the group is unregistered,
//!   which happens when the pool's last reference goes — and every receive
//!   in flight holds one, so none can still select a buffer. The ring (its
//!   fd) is kept open by an `Arc` until then, so the kernel never tears the
//!   registration down on its own while the memory is ours again. If the
//!   unregistration fails, both are leaked rather than freed; so they are
//!   in a child made by `fork`, whose copy of a pool must not unregister
//!   the group of the ring it shares with its parent.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::Ring;

/// `struct io_uring_buf`, as the kernel reads it (the same layout as the
/// io_uring crate's `types::BufRingEntry`, whose fields we cannot write
/// through a raw pointer).
#[repr(C)]
struct Entry {
    addr: u64,
    len: u32,
    bid: u16,
    /// Entry 0's is the ring's tail.
    resv: u16,
}

const _: () =
    assert!(std::mem::size_of::<Entry>() == std::mem::size_of::<io_uring::types::BufRingEntry>());

/// Buffer group ids in use by the pools of this process (a group id is per
/// ring, so unique per process is more than enough): the next never used,
/// and those given back.
static GROUPS: Mutex<(u32, Vec<u16>)> = Mutex::new((0, Vec::new()));

fn take_group() -> io::Result<u16> {
    let mut g = GROUPS.lock();
    if let Some(id) = g.1.pop() {
        return Ok(id);
    }
    if g.0 > u32::from(u16::MAX) {
        return Err(io::Error::other(
            "buf_pool: 65536 buffer pools already exist in this process (the io_uring buffer \
             group ids are exhausted); drop some first",
        ));
    }
    g.0 += 1;
    Ok((g.0 - 1) as u16)
}

fn give_group(id: u16) {
    GROUPS.lock().1.push(id);
}

/// One registered buffer ring (see the module docs).
pub(crate) struct BufRing {
    ring: Arc<Ring>,
    bgid: u16,
    entries: NonNull<Entry>,
    layout: Layout,
    mask: u16,
    /// The next entry to fill (our copy of the tail).
    tail: Mutex<u16>,
    /// Still registered with the kernel (its memory must not be freed).
    registered: bool,
    /// The process that registered it: a child made by `fork` shares the
    /// ring (the same io_uring instance) and must not unregister the
    /// parent's group when its copy of the pool goes.
    owner: u32,
}

// SAFETY: `entries` is memory this value owns, written only under the
// `tail` lock (and read by the kernel); the rest is `Send + Sync`.
unsafe impl Send for BufRing {}
// SAFETY: as above.
unsafe impl Sync for BufRing {}

impl BufRing {
    /// Registers an empty ring with room for `count` buffers (1 to 32768)
    /// under a fresh group id. Needs Linux 5.19.
    pub(crate) fn new(ring: &Arc<Ring>, count: usize) -> io::Result<BufRing> {
        debug_assert!((1..=1 << 15).contains(&count));
        let n = count.next_power_of_two();
        let page = page_size();
        let layout = Layout::from_size_align((n * std::mem::size_of::<Entry>()).max(page), page)
            .map_err(io::Error::other)?;
        // SAFETY: the size is non-zero (at least a page).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(entries) = NonNull::new(raw.cast::<Entry>()) else {
            alloc::handle_alloc_error(layout)
        };
        let mut me = BufRing {
            ring: ring.clone(),
            bgid: 0,
            entries,
            layout,
            mask: (n - 1) as u16,
            tail: Mutex::new(0),
            registered: false,
            owner: std::process::id(),
        };
        me.bgid = take_group()?;
        // SAFETY: `entries` is a zeroed, page-aligned array of `n` entries
        // that stays allocated until the group is unregistered (`Drop`,
        // which frees it only after a successful unregistration).
        let r = unsafe {
            ring.ring.submitter().register_buf_ring_with_flags(
                entries.as_ptr() as u64,
                n as u16,
                me.bgid,
                0,
            )
        };
        if let Err(e) = r {
            give_group(me.bgid);
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "buf_pool: registering a provided buffer ring of {n} entries with io_uring \
                     failed: {e} (provided buffer rings need Linux 5.19)"
                ),
            ));
        }
        me.registered = true;
        Ok(me)
    }

    /// The buffer group id receives name.
    pub(crate) fn group(&self) -> u16 {
        self.bgid
    }

    /// Publishes buffer `bid` (`len` bytes at `addr`) to the kernel. The
    /// caller guarantees the id is in none of the other places (module
    /// docs), which bounds the published entries by the ring's size.
    pub(crate) fn push(&self, addr: *mut u8, len: u32, bid: u16) {
        let mut tail = self.tail.lock();
        let i = usize::from(*tail & self.mask);
        // SAFETY: `i <= mask`, within the array. The entry is not published
        // (the kernel reads only entries before the tail, and fewer than
        // the ring's size are published: module docs), so nobody reads it;
        // we write its fields in place, leaving entry 0's `resv` (the tail)
        // alone.
        unsafe {
            let e = self.entries.as_ptr().add(i);
            ptr::addr_of_mut!((*e).addr).write(addr as u64);
            ptr::addr_of_mut!((*e).len).write(len);
            ptr::addr_of_mut!((*e).bid).write(bid);
        }
        *tail = tail.wrapping_add(1);
        // SAFETY: entry 0's `resv` is the shared tail: a properly aligned
        // u16 inside our allocation, accessed atomically by us (under the
        // lock) and by the kernel (with acquire loads).
        let shared =
            unsafe { AtomicU16::from_ptr(ptr::addr_of_mut!((*self.entries.as_ptr()).resv)) };
        shared.store(*tail, Ordering::Release);
    }

    /// Unregisters the group; `false` if the kernel refused (the memory
    /// must then stay allocated: module docs).
    pub(crate) fn unregister(&mut self) -> bool {
        if !self.registered {
            return true;
        }
        if self.owner != std::process::id() {
            // A forked child's copy: the group is the parent's. Keep the
            // memory (this process's copy of it) and leave the group alone.
            return false;
        }
        match self.ring.ring.submitter().unregister_buf_ring(self.bgid) {
            Ok(()) => {
                self.registered = false;
                give_group(self.bgid);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "io_uring: unregistering buffer group {} failed ({e}); its memory is leaked",
                    self.bgid
                );
                false
            }
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.unregister() {
            // SAFETY: allocated in `new` with this layout; the kernel no
            // longer references it (unregistered).
            unsafe { alloc::dealloc(self.entries.as_ptr().cast(), self.layout) };
        }
    }
}

/// The system's page size (the ring must be page-aligned).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}
