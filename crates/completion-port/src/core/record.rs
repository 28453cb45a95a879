//! [`OpRecord`]: where an operation lives while it is in flight — the
//! driver's [`OpIo`] first, then what only the core knows (the fd's owner,
//! the completion key, the token, where the completion goes, the caller's
//! context) — and [`RecordBox`], its owning pointer, allocated through a
//! small per-thread cache of freed records.
//!
//! Every operation allocates a record at issue and frees it when its packet
//! is dropped. A worker typically issues and drops them in batches, which
//! overflows the allocator's per-thread fast path (glibc keeps 7 blocks per
//! size) and sends every allocation through its slow path. So a freed
//! record's memory goes to a per-thread list (up to [`CACHE_CAP`] blocks of
//! one layout, the layout of the last records freed into an empty list),
//! and the next record of that layout on this thread reuses it. Blocks come
//! from and go back to the global allocator, so a block may be allocated on
//! one thread and cached or freed on another; the list is freed when its
//! thread exits.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::ptr::{self, NonNull};

use std::sync::Arc;

use super::fd::FdOwner;
use super::lanes::Lane;
use super::token::{next_token, Token};
use crate::buf::Buffers;
use crate::driver::{OpIo, OpKind, OpPtr};

/// Where an operation's completion goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notify {
    /// A packet on the port (the default).
    Packet,
    /// A packet, unless it succeeds during the issue call: then its result
    /// is kept for [`Port::take_result`](crate::Port::take_result) (the
    /// handle is in skip-on-success mode).
    SkipOnSuccess,
    /// Never a packet: its result is kept for
    /// [`Port::take_result`](crate::Port::take_result) /
    /// [`Port::wait_result`](crate::Port::wait_result).
    Result,
}

/// An operation in flight: [`OpIo`] first (backends only ever see a
/// pointer to it), then the core's part, then the caller's context.
#[repr(C)]
pub(crate) struct OpRecord<C> {
    /// Must stay the first field: backends get an [`OpPtr`] to it and the
    /// core casts it back to `*mut OpRecord<C>`.
    pub(crate) io: OpIo,
    /// Keeps the fd open (and its number reserved) until this op is gone;
    /// `io.fd` points into it.
    pub(crate) owner: Arc<FdOwner>,
    pub(crate) key: usize,
    pub(crate) token: Token,
    pub(crate) notify: Notify,
    /// The fd lane it takes, if any (`lanes.rs`; set at submission).
    pub(crate) lane: Option<Lane>,
    /// A second fd the operation uses (the file of a `send_file`), kept
    /// open until the operation is gone.
    pub(crate) also: Option<Arc<FdOwner>>,
    /// `Some` until the packet is built.
    pub(crate) ctx: Option<C>,
}

impl<C> OpRecord<C> {
    /// A new record for an operation of `kind` on `owner`'s fd.
    pub(crate) fn boxed(
        kind: OpKind,
        owner: &Arc<FdOwner>,
        key: usize,
        notify: Notify,
        bufs: Buffers,
        ctx: C,
    ) -> RecordBox<C> {
        RecordBox::new(OpRecord {
            io: OpIo::new(kind, owner.driver_fd(), bufs),
            owner: owner.clone(),
            key,
            token: next_token(),
            notify,
            lane: None,
            also: None,
            ctx: Some(ctx),
        })
    }

    /// Takes back a record that a backend reported complete.
    ///
    /// # Safety
    /// `op` must come from [`RecordBox::into_op`] of a `RecordBox<C>` (with
    /// this same `C`) whose ownership was handed to the backend, and the
    /// backend must report it exactly once.
    pub(crate) unsafe fn from_completion(op: OpPtr) -> RecordBox<C> {
        // SAFETY: `OpRecord<C>` is `repr(C)` with `io` first, so the two
        // pointers are equal; ownership comes back exactly once per the
        // caller's contract.
        unsafe { RecordBox::from_raw(op.0.cast::<OpRecord<C>>()) }
    }

    /// The record of an operation in flight, to read the core's fields.
    ///
    /// # Safety
    /// As [`from_completion`](Self::from_completion), and the caller must
    /// own the operation (reported complete, not yet handed back) or hold
    /// the lock that keeps it alive; only shared fields are read.
    pub(crate) unsafe fn peek<'a>(op: OpPtr) -> &'a OpRecord<C> {
        // SAFETY: as above.
        unsafe { op.0.cast::<OpRecord<C>>().as_ref() }
    }
}

/// Blocks kept per thread (a few batches' worth of records).
const CACHE_CAP: usize = 64;

struct Cache {
    /// The layout of every block in `blocks` (meaningless while empty).
    layout: Layout,
    blocks: Vec<NonNull<u8>>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        for b in self.blocks.drain(..) {
            // SAFETY: every cached block was allocated by the global
            // allocator with `self.layout` and is owned by the cache.
            unsafe { alloc::dealloc(b.as_ptr(), self.layout) };
        }
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            layout: Layout::new::<u8>(),
            blocks: Vec::new(),
        })
    };
}

/// A block for `layout` (non-zero size): a cached one, or a new one.
fn allocate(layout: Layout) -> NonNull<u8> {
    let cached = CACHE
        .try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            if c.layout == layout {
                c.blocks.pop()
            } else {
                None
            }
        })
        .ok()
        .flatten();
    if let Some(b) = cached {
        return b;
    }
    // SAFETY: callers pass the layout of an `OpRecord`, which is never
    // zero-sized.
    let p = unsafe { alloc::alloc(layout) };
    NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

/// Gives back a block from [`allocate`].
///
/// # Safety
/// `block` was allocated by the global allocator with `layout`, holds no
/// live value, and is not used afterwards.
unsafe fn release(block: NonNull<u8>, layout: Layout) {
    let kept = CACHE
        .try_with(|c| {
            let Ok(mut c) = c.try_borrow_mut() else {
                return false;
            };
            if c.blocks.is_empty() {
                c.layout = layout;
            }
            if c.layout != layout || c.blocks.len() >= CACHE_CAP {
                return false;
            }
            if c.blocks.capacity() == 0 {
                c.blocks.reserve_exact(CACHE_CAP);
            }
            c.blocks.push(block);
            true
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: forwarded from the caller.
        unsafe { alloc::dealloc(block.as_ptr(), layout) };
    }
}

/// Owns an [`OpRecord`] like a `Box` does, with its memory from the
/// per-thread cache. Its address is stable for its whole life (the
/// backends rely on it while the op is in flight).
pub(crate) struct RecordBox<C> {
    ptr: NonNull<OpRecord<C>>,
    _owns: PhantomData<OpRecord<C>>,
}

// SAFETY: a `RecordBox` owns its record exactly like `Box<OpRecord<C>>`
// does, and `OpRecord<C>` is `Send` when `C` is (`OpIo` is `Send`).
unsafe impl<C: Send> Send for RecordBox<C> {}

impl<C> RecordBox<C> {
    pub(crate) fn new(rec: OpRecord<C>) -> RecordBox<C> {
        let ptr = allocate(Layout::new::<OpRecord<C>>()).cast::<OpRecord<C>>();
        // SAFETY: the block is fresh (or recycled and empty), sized and
        // aligned for an `OpRecord<C>`.
        unsafe { ptr.as_ptr().write(rec) };
        RecordBox {
            ptr,
            _owns: PhantomData,
        }
    }

    /// Gives up ownership: the record stays alive until
    /// [`from_raw`](Self::from_raw) takes it back.
    pub(crate) fn into_raw(self) -> NonNull<OpRecord<C>> {
        ManuallyDrop::new(self).ptr
    }

    /// Gives up ownership to a backend, as the pointer it works with (the
    /// record's [`OpIo`]); [`OpRecord::from_completion`] takes it back.
    pub(crate) fn into_op(self) -> OpPtr {
        OpPtr(self.into_raw().cast::<OpIo>())
    }

    /// Takes back a record given up by [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `ptr` comes from `into_raw` of a `RecordBox<C>` (same `C`), and is
    /// taken back only once.
    pub(crate) unsafe fn from_raw(ptr: NonNull<OpRecord<C>>) -> RecordBox<C> {
        RecordBox {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<C> Deref for RecordBox<C> {
    type Target = OpRecord<C>;
    fn deref(&self) -> &OpRecord<C> {
        // SAFETY: we own a live record.
        unsafe { self.ptr.as_ref() }
    }
}

impl<C> DerefMut for RecordBox<C> {
    fn deref_mut(&mut self) -> &mut OpRecord<C> {
        // SAFETY: we own a live record, and `&mut self` is exclusive.
        unsafe { self.ptr.as_mut() }
    }
}

impl<C> Drop for RecordBox<C> {
    fn drop(&mut self) {
        // SAFETY: we own a live record; it is dropped once, then its block
        // (allocated by `allocate` with this layout) is released and never
        // used again.
        unsafe {
            ptr::drop_in_place(self.ptr.as_ptr());
            release(self.ptr.cast(), Layout::new::<OpRecord<C>>());
        }
    }
}
