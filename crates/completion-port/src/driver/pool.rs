//! The pool behind [`BufPool`](crate::BufPool): its memory, its free
//! buffers (an io_uring buffer ring, `uring/buf_ring.rs`, or a free list
//! for epoll), what a pooled receive's record carries ([`PoolOp`]) and the
//! buffer a packet hands over ([`PooledBuf`]). Behaviour and invariants:
//! `buf_pool.rs` (the module docs of `completion_port::buf_pool`).

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::uring::{self, BufRing};
use crate::error::invalid_input;

/// A buffer of a [`BufPool`](crate::BufPool) holding received bytes;
/// derefs to them. Returns to its pool when dropped, from any thread.
pub struct PooledBuf {
    pool: Arc<PoolShared>,
    id: u16,
    len: u32,
}

/// Where free buffers wait.
enum Free {
    /// io_uring: the kernel picks from the ring.
    Ring(BufRing),
    /// epoll: the backend picks from this list.
    List(Mutex<Vec<u16>>),
}

/// The pool itself: its memory and its free buffers.
pub(crate) struct PoolShared {
    /// The port whose handles may use it (`Core::id`).
    port: u64,
    mem: NonNull<u8>,
    layout: Layout,
    size: usize,
    count: usize,
    /// Buffers delivered and not yet back.
    in_use: AtomicUsize,
    free: Free,
}

// SAFETY: `mem` is memory this value owns; each buffer in it is accessed by
// one holder at a time (module invariants), and the free structures are
// locked.
unsafe impl Send for PoolShared {}
// SAFETY: as above.
unsafe impl Sync for PoolShared {}

impl PoolShared {
    /// Allocates `count` buffers of `size` bytes (both checked by the
    /// caller: 1 to 32768, 1 to `i32::MAX`) for the port `port`, with a
    /// buffer ring registered on `ring` (io_uring) or a free list.
    pub(crate) fn new(
        port: u64,
        count: usize,
        size: usize,
        ring: Option<&Arc<uring::Ring>>,
    ) -> io::Result<Arc<PoolShared>> {
        let total = count.checked_mul(size).ok_or_else(|| {
            invalid_input(format!(
                "buf_pool: {count} buffers of {size} bytes overflow"
            ))
        })?;
        let layout = Layout::from_size_align(total, uring::page_size())
            .map_err(|_| invalid_input(format!("buf_pool: {total} bytes is too large")))?;
        // SAFETY: `total >= 1`.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(mem) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        let free = match ring {
            Some(ring) => match BufRing::new(ring, count) {
                Ok(r) => Free::Ring(r),
                Err(e) => {
                    // SAFETY: just allocated with this layout; never shared.
                    unsafe { alloc::dealloc(mem.as_ptr(), layout) };
                    return Err(e);
                }
            },
            None => Free::List(Mutex::new((0..count as u16).rev().collect())),
        };
        let shared = PoolShared {
            port,
            mem,
            layout,
            size,
            count,
            in_use: AtomicUsize::new(0),
            free,
        };
        if matches!(shared.free, Free::Ring(_)) {
            for id in 0..count as u16 {
                shared.put(id);
            }
        }
        Ok(Arc::new(shared))
    }

    /// The port whose handles may use the pool.
    pub(crate) fn port(&self) -> u64 {
        self.port
    }

    /// How many buffers.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The size of each.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Buffers delivered and not yet back.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }

    /// The state a receive from this pool carries.
    pub(crate) fn op(self: &Arc<Self>) -> PoolOp {
        PoolOp {
            pool: self.clone(),
            id: 0,
            len: 0,
        }
    }

    /// The start of buffer `id`.
    fn slot(&self, id: u16) -> *mut u8 {
        debug_assert!(usize::from(id) < self.count);
        // SAFETY: `id < count`, so the offset is within the allocation.
        unsafe { self.mem.as_ptr().add(usize::from(id) * self.size) }
    }

    /// Frees buffer `id` (module invariants: the caller held it).
    fn put(&self, id: u16) {
        match &self.free {
            Free::Ring(r) => r.push(self.slot(id), self.size as u32, id),
            Free::List(l) => l.lock().push(id),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} buffers of {} bytes, {} of them held by packets or PooledBufs",
            self.count,
            self.size,
            self.in_use.load(Ordering::Relaxed)
        )
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        if let Free::Ring(r) = &mut self.free {
            if !r.unregister() {
                // The kernel may still reference the buffers: keep them.
                return;
            }
        }
        // SAFETY: allocated in `BufPool::new` with this layout; nobody holds
        // a buffer (every holder keeps this value alive) and the kernel no
        // longer references the memory (unregistered above).
        unsafe { alloc::dealloc(self.mem.as_ptr(), self.layout) };
    }
}

/// What a pooled receive's record carries: its pool, and once the
/// receive delivered bytes, the buffer holding them (`len > 0`).
pub(crate) struct PoolOp {
    pool: Arc<PoolShared>,
    id: u16,
    /// 0: no buffer held.
    len: u32,
}

impl PoolOp {
    /// The buffer group the kernel picks from (io_uring pools only).
    pub(crate) fn group(&self) -> u16 {
        match &self.pool.free {
            Free::Ring(r) => r.group(),
            Free::List(_) => 0,
        }
    }

    /// The size of each buffer (fits in u32: checked at creation).
    pub(crate) fn buf_size(&self) -> u32 {
        self.pool.size as u32
    }

    /// epoll: takes a free buffer for an attempt: its id, start and size.
    pub(crate) fn take_free(&self) -> Option<(u16, *mut u8, usize)> {
        let Free::List(l) = &self.pool.free else {
            return None;
        };
        let id = l.lock().pop()?;
        Some((id, self.pool.slot(id), self.pool.size))
    }

    /// The backend's word on buffer `id`, taken for this receive, which
    /// ended with `res`: a positive count delivers it (the op holds it
    /// until its packet hands it over); anything else frees it at once
    /// (module invariants).
    pub(crate) fn deliver(&mut self, id: u16, res: i32) {
        if usize::from(id) >= self.pool.count {
            // Not one of ours: nothing to hold or free.
            tracing::warn!("buf_pool: the kernel reported unknown buffer id {id}");
            return;
        }
        if res <= 0 || self.len > 0 {
            debug_assert!(self.len == 0, "a pooled receive delivered twice");
            self.pool.put(id);
            return;
        }
        let len = (res as u32).min(self.buf_size());
        super::mark_defined(self.pool.slot(id), len as usize);
        self.pool.in_use.fetch_add(1, Ordering::AcqRel);
        self.id = id;
        self.len = len;
    }

    /// Whether a buffer was delivered.
    pub(crate) fn holds(&self) -> bool {
        self.len > 0
    }

    /// Hands the delivered buffer over (once).
    pub(crate) fn take(&mut self) -> Option<PooledBuf> {
        if self.len == 0 {
            return None;
        }
        let len = std::mem::take(&mut self.len);
        Some(PooledBuf {
            pool: self.pool.clone(),
            id: self.id,
            len,
        })
    }

    /// The error of a receive that found the pool empty (`ENOBUFS`).
    pub(crate) fn exhausted(&self) -> io::Error {
        crate::error::pool_exhausted(self.pool.describe())
    }
}

impl Drop for PoolOp {
    fn drop(&mut self) {
        if self.len > 0 {
            self.pool.in_use.fetch_sub(1, Ordering::AcqRel);
            self.pool.put(self.id);
        }
    }
}

impl PooledBuf {
    /// The buffer's index in its pool (`0..count`): the same buffer comes
    /// back with the same index.
    pub fn index(&self) -> usize {
        usize::from(self.id)
    }

    /// A copy of the bytes, as a [`Buf`](crate::buf::Buf) that outlives the pool.
    pub fn to_buf(&self) -> crate::buf::Buf {
        crate::buf::Buf::copy_from(self)
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the buffer holds `len` received bytes (initialised), and
        // this value is its only holder (module invariants); the memory
        // lives as long as `pool`.
        unsafe { std::slice::from_raw_parts(self.pool.slot(self.id), self.len as usize) }
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.pool.slot(self.id), self.len as usize) }
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.pool.in_use.fetch_sub(1, Ordering::AcqRel);
        self.pool.put(self.id);
    }
}

impl fmt::Debug for PooledBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledBuf")
            .field("index", &self.id)
            .field("len", &self.len)
            .finish()
    }
}
