//! [`Buf`]: the one buffer type every operation owns while it is in flight.
//!
//! # Why one concrete type
//!
//! An operation must own its memory until its packet is dequeued, and the
//! packet must hand that memory back. With one concrete type the packet
//! returns it typed ([`Packet::take_buf`](crate::Packet::take_buf)), with no
//! downcast and no extra allocation. [`Buf`] converts from and into
//! `Vec<u8>` without copying (`Box<[u8]>` goes through `Vec`), and it can
//! also hold memory aligned for `O_DIRECT` ([`Buf::aligned`]), which a
//! `Vec<u8>` cannot soundly do (a `Vec` must be freed with the alignment it
//! was allocated with).
//!
//! # Filled part and spare capacity
//!
//! Like a `Vec<u8>`, a `Buf` has a length (the filled bytes, `0..len`) and a
//! capacity. Operations that **send** (`write_at`, `send`, …) transfer the
//! filled bytes. Operations that **receive** (`read_at`, `recv`, …) fill the
//! spare capacity (`len..capacity`) and advance the length by the bytes
//! received, exactly as `Read::read_to_end` appends. To receive into a
//! whole buffer, start from [`Buf::with_capacity`] or call [`Buf::clear`].
//!
//! # Windows into a buffer, without copying
//!
//! - [`Buf::consume`] drops bytes from the front of the filled part in
//!   O(1): after a short send of `n` bytes, `buf.consume(n)` and send `buf`
//!   again — the rest goes, nothing is copied ([`Buf::consume_vectored`]
//!   does the same across the buffers of a vectored send). [`Buf::clear`]
//!   makes the whole allocation usable again.
//! - [`Buf::set_spare_limit`] caps how much of the spare capacity a receive
//!   fills, so one large buffer can take a small read.
//!
//! ```
//! use completion_port::Buf;
//! let mut b = Buf::copy_from(b"hello, world");
//! b.consume(7); // say `send` took 7 bytes
//! assert_eq!(&b[..], b"world");
//! let mut big = Buf::with_capacity(64 * 1024);
//! big.set_spare_limit(Some(512)); // a receive fills at most 512 bytes
//! assert_eq!(big.spare_capacity(), 512);
//! ```

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// An owned byte buffer with a stable address, optionally aligned.
///
/// See the [module docs](self) for how operations use its length and
/// capacity.
pub struct Buf {
    /// Start of the allocation; dangling (but aligned) when `cap == 0`.
    ptr: NonNull<u8>,
    /// Bytes `0..len` are initialised and belong to the buffer's contents.
    len: usize,
    /// Size of the allocation in bytes.
    cap: usize,
    /// Alignment the allocation was made with (1 for buffers from a `Vec`).
    align: usize,
    /// The memory belongs to someone else ([`Buf::from_raw_parts`]): never
    /// freed or reallocated in place by this `Buf`.
    foreign: bool,
    /// Bytes consumed from the front ([`Buf::consume`]): the contents are
    /// `head..len`. `head <= len`.
    head: usize,
    /// At most this much of the spare capacity is offered to a receive
    /// ([`Buf::set_spare_limit`]; `usize::MAX`: no limit).
    limit: usize,
}

// SAFETY: `Buf` owns its allocation exclusively, like `Vec<u8>`.
unsafe impl Send for Buf {}
// SAFETY: shared access only reads the bytes, like `&Vec<u8>`.
unsafe impl Sync for Buf {}

impl Buf {
    /// An empty buffer with room for `capacity` bytes (no bytes filled).
    pub fn with_capacity(capacity: usize) -> Buf {
        Buf::from(Vec::with_capacity(capacity))
    }

    /// A zero-filled buffer of `capacity` bytes whose address is a multiple
    /// of `align`, for `O_DIRECT` I/O (use the device's logical block size,
    /// usually 512 or 4096, for both). Its length starts at 0.
    ///
    /// Fails with `InvalidInput` when `align` is not a power of two or the
    /// size overflows.
    pub fn aligned(capacity: usize, align: usize) -> io::Result<Buf> {
        let layout = Layout::from_size_align(capacity, align).map_err(|_| {
            let why = if align.is_power_of_two() {
                format!("{capacity} bytes aligned to {align} exceed the largest allocation (isize::MAX)")
            } else {
                format!("invalid buffer alignment {align} (alignment must be a power of two)")
            };
            io::Error::new(io::ErrorKind::InvalidInput, why)
        })?;
        if capacity == 0 {
            return Ok(Buf {
                ptr: dangling(align),
                len: 0,
                cap: 0,
                align,
                foreign: false,
                head: 0,
                limit: usize::MAX,
            });
        }
        // SAFETY: `layout` has a non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Ok(Buf {
            ptr,
            len: 0,
            cap: capacity,
            align,
            foreign: false,
            head: 0,
            limit: usize::MAX,
        })
    }

    /// A buffer over memory the caller owns, for foreign-function
    /// interfaces (the C ABI hands its callers' buffers to operations this
    /// way): `len` bytes at `ptr` are filled, `cap` bytes are usable. The
    /// `Buf` never frees this memory; growing it ([`Buf::reserve`],
    /// [`Buf::extend_from_slice`] past `cap`) moves the contents into a new
    /// allocation of its own, and [`Buf::into_vec`] copies.
    ///
    /// # Safety
    /// Until this `Buf` (and any operation it is given to) is dropped, the
    /// `cap` bytes at `ptr` must stay valid for reads and writes and must not
    /// be accessed by anyone else; the first `len` of them must be
    /// initialised, and `len <= cap`. `ptr` may be null only when `cap` is 0.
    pub unsafe fn from_raw_parts(ptr: *mut u8, len: usize, cap: usize) -> Buf {
        debug_assert!(len <= cap);
        Buf {
            ptr: NonNull::new(ptr).unwrap_or(NonNull::dangling()),
            len: len.min(cap),
            cap,
            align: 1,
            foreign: true,
            head: 0,
            limit: usize::MAX,
        }
    }

    /// Whether this buffer lies over memory it does not own
    /// ([`Buf::from_raw_parts`]).
    pub fn is_foreign(&self) -> bool {
        self.foreign
    }

    /// A buffer holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> Buf {
        Buf::from(bytes.to_vec())
    }

    /// Number of filled bytes (after those consumed).
    pub fn len(&self) -> usize {
        self.len - self.head
    }

    /// Whether no byte is filled.
    pub fn is_empty(&self) -> bool {
        self.len == self.head
    }

    /// Size of the allocation.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Room left after the filled bytes that a receiving operation fills:
    /// up to the end of the allocation, and no more than the spare limit
    /// ([`set_spare_limit`](Self::set_spare_limit)).
    pub fn spare_capacity(&self) -> usize {
        (self.cap - self.len).min(self.limit)
    }

    /// Drops the first `n` filled bytes (all of them if fewer are filled)
    /// without moving the rest: a send issued next transfers what follows.
    /// O(1); the space is reused once the buffer is cleared.
    pub fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
    }

    /// Consumes `n` bytes across `bufs`, in order, as a vectored send of
    /// them transferred `n` bytes: fully sent buffers end empty, the first
    /// partly sent one keeps its rest. Returns what is left of `n` beyond
    /// the buffers' filled bytes (0 when they held `n` or more).
    ///
    /// ```
    /// use completion_port::Buf;
    /// let mut v = vec![Buf::copy_from(b"abc"), Buf::copy_from(b"defg")];
    /// assert_eq!(Buf::consume_vectored(&mut v, 5), 0);
    /// assert_eq!((&v[0][..], &v[1][..]), (&b""[..], &b"fg"[..]));
    /// ```
    pub fn consume_vectored(bufs: &mut [Buf], mut n: usize) -> usize {
        for b in bufs {
            let take = n.min(b.len());
            b.consume(take);
            n -= take;
        }
        n
    }

    /// Caps the spare capacity a receive fills at `limit` bytes (`None`:
    /// the rest of the allocation), so a large buffer can take a small
    /// read without another allocation. Kept until changed, across
    /// receives and [`clear`](Self::clear).
    pub fn set_spare_limit(&mut self, limit: Option<usize>) {
        self.limit = limit.unwrap_or(usize::MAX);
    }

    /// Alignment of the allocation (1 for buffers made from a `Vec`).
    pub fn alignment(&self) -> usize {
        self.align
    }

    /// Forgets the filled (and consumed) bytes, keeping the allocation.
    pub fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
    }

    /// Shortens the filled part to `len` bytes; no effect if it is shorter.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.head + self.len().min(len);
    }

    /// Appends `bytes`, growing the allocation (keeping its alignment) when
    /// needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        // SAFETY: `reserve` made room for `bytes.len()` bytes after `len`;
        // source and destination cannot overlap (`bytes` is borrowed shared
        // while `self` is borrowed exclusively).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    /// Makes room for at least `additional` more bytes after the filled part.
    pub fn reserve(&mut self, additional: usize) {
        let need = self
            .len
            .checked_add(additional)
            .expect("buffer size overflows usize");
        if need <= self.cap {
            return;
        }
        let new_cap = need.max(self.cap.saturating_mul(2)).max(64);
        let mut grown = if self.align == 1 {
            Buf::with_capacity(new_cap)
        } else {
            Buf::aligned(new_cap, self.align).expect("buffer size overflows isize::MAX")
        };
        // Only the contents move (what was consumed stays behind).
        let n = self.len();
        // SAFETY: `grown` has room for `new_cap >= len >= n` bytes; the two
        // allocations are distinct; `head..len` is initialised.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr(), grown.ptr.as_ptr(), n) };
        grown.len = n;
        grown.limit = self.limit;
        *self = grown;
    }

    /// The filled bytes as a `Vec<u8>`: free for buffers made from a `Vec`
    /// or with [`Buf::with_capacity`]; a copy for aligned buffers.
    pub fn into_vec(mut self) -> Vec<u8> {
        if self.align != 1 || self.foreign {
            return self.as_ref().to_vec();
        }
        if self.head > 0 {
            // A `Vec` starts at its allocation: move the contents there.
            let n = self.len();
            // SAFETY: `head..len` is initialised and within the allocation;
            // `copy` handles the overlap.
            unsafe { std::ptr::copy(self.as_ptr(), self.ptr.as_ptr(), n) };
            self.len = n;
            self.head = 0;
        }
        let me = std::mem::ManuallyDrop::new(self);
        if me.cap == 0 {
            return Vec::new();
        }
        // SAFETY: owned `align == 1` buffers with a capacity came from a `Vec<u8>`
        // (see `From<Vec<u8>>`), allocated with `Layout::array::<u8>(cap)`;
        // `len <= cap` bytes are initialised; `me` is never dropped, so the
        // allocation has exactly one owner again.
        unsafe { Vec::from_raw_parts(me.ptr.as_ptr(), me.len, me.cap) }
    }

    /// Pointer to the first filled byte (after those consumed): where a
    /// send starts.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        // SAFETY: `head <= len <= cap`: within (or one past) the allocation.
        unsafe { self.ptr.as_ptr().add(self.head) }
    }

    /// Pointer to the first spare byte (`len`), where a receive writes.
    pub(crate) fn spare_ptr(&mut self) -> *mut u8 {
        // SAFETY: `len <= cap`, so the result is within (or one past) the
        // allocation.
        unsafe { self.ptr.as_ptr().add(self.len) }
    }

    /// Records that `n` more bytes after `len` were written by the kernel.
    ///
    /// # Safety
    /// The bytes `len..len + n` must have been initialised (the kernel
    /// reported writing them), and `len + n <= cap`.
    pub(crate) unsafe fn advance(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.cap);
        self.len += n;
    }
}

fn dangling(align: usize) -> NonNull<u8> {
    // `align` is a non-zero power of two (checked by `Layout`), so it is a
    // valid, well-aligned, non-null dangling address, the same trick
    // `NonNull::dangling` uses for alignment 1.
    NonNull::new(std::ptr::without_provenance_mut(align)).expect("alignment is non-zero")
}

impl From<Vec<u8>> for Buf {
    fn from(v: Vec<u8>) -> Buf {
        let mut v = std::mem::ManuallyDrop::new(v);
        if v.capacity() == 0 {
            return Buf {
                ptr: NonNull::dangling(),
                len: 0,
                cap: 0,
                align: 1,
                foreign: false,
                head: 0,
                limit: usize::MAX,
            };
        }
        Buf {
            // SAFETY: a `Vec` with non-zero capacity has a non-null pointer.
            ptr: unsafe { NonNull::new_unchecked(v.as_mut_ptr()) },
            len: v.len(),
            cap: v.capacity(),
            align: 1,
            foreign: false,
            head: 0,
            limit: usize::MAX,
        }
    }
}

impl From<Box<[u8]>> for Buf {
    fn from(b: Box<[u8]>) -> Buf {
        Buf::from(b.into_vec())
    }
}

impl From<&[u8]> for Buf {
    fn from(b: &[u8]) -> Buf {
        Buf::copy_from(b)
    }
}

impl From<Buf> for Vec<u8> {
    fn from(b: Buf) -> Vec<u8> {
        b.into_vec()
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if self.cap == 0 || self.foreign {
            return;
        }
        // SAFETY: the allocation is not foreign, so it was made with exactly
        // this size and alignment (by `Vec` for align 1, by `Buf::aligned`
        // otherwise) and is owned by `self` alone.
        unsafe {
            alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.cap, self.align),
            )
        };
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: bytes `head..len` are initialised and owned by `self`.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let n = self.len();
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr().cast_mut(), n) }
    }
}

impl AsRef<[u8]> for Buf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Clone for Buf {
    /// Copies the filled bytes into a new buffer with the same capacity and
    /// alignment.
    fn clone(&self) -> Buf {
        let mut b = if self.align == 1 {
            Buf::with_capacity(self.cap)
        } else {
            Buf::aligned(self.cap, self.align)
                .expect("alignment was valid when the buffer was made")
        };
        b.extend_from_slice(self);
        b.limit = self.limit;
        b
    }
}

impl PartialEq for Buf {
    fn eq(&self, other: &Buf) -> bool {
        self[..] == other[..]
    }
}

impl fmt::Debug for Buf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.len())
            .field("consumed", &self.head)
            .field("capacity", &self.cap)
            .field("align", &self.align)
            .finish()
    }
}

/// The buffers an operation owns while it is in flight: none (no-op,
/// accept, connect), one, or several (vectored operations).
#[derive(Debug, Default)]
pub(crate) enum Buffers {
    #[default]
    None,
    One(Buf),
    Many(Vec<Buf>),
}

impl Buffers {
    pub(crate) fn take_one(&mut self) -> Option<Buf> {
        match std::mem::take(self) {
            Buffers::One(b) => Some(b),
            other => {
                *self = other;
                None
            }
        }
    }

    pub(crate) fn take_many(&mut self) -> Vec<Buf> {
        match std::mem::take(self) {
            Buffers::Many(v) => v,
            other => {
                *self = other;
                Vec::new()
            }
        }
    }

    pub(crate) fn one_mut(&mut self) -> &mut Buf {
        match self {
            Buffers::One(b) => b,
            _ => unreachable!("single-buffer op without its buffer"),
        }
    }

    pub(crate) fn many_mut(&mut self) -> &mut [Buf] {
        match self {
            Buffers::Many(v) => v,
            _ => unreachable!("vectored op without its buffers"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_round_trip_keeps_allocation() {
        let mut v = Vec::with_capacity(100);
        v.extend_from_slice(b"hello");
        let p = v.as_ptr();
        let b = Buf::from(v);
        assert_eq!(&b[..], b"hello");
        assert_eq!(b.capacity(), 100);
        let v = b.into_vec();
        assert_eq!(v.as_ptr(), p);
        assert_eq!(v, b"hello");
    }

    #[test]
    fn aligned_is_aligned_and_grows_aligned() {
        let mut b = Buf::aligned(4096, 4096).unwrap();
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        assert_eq!(b.len(), 0);
        b.extend_from_slice(&[7u8; 5000]);
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        assert_eq!(b.len(), 5000);
        assert!(b.iter().all(|&x| x == 7));
        assert_eq!(b.clone().into_vec().len(), 5000);
    }

    #[test]
    fn foreign_memory_is_never_freed_and_grows_into_its_own() {
        let mut mem = vec![1u8, 2, 3, 0, 0, 0, 0, 0];
        // SAFETY: `mem` outlives `b` and is not touched while `b` lives.
        let mut b = unsafe { Buf::from_raw_parts(mem.as_mut_ptr(), 3, 8) };
        assert!(b.is_foreign());
        assert_eq!(&b[..], &[1, 2, 3]);
        b.extend_from_slice(&[4, 5]);
        assert_eq!(b.as_ptr(), mem.as_ptr(), "fits: stays in place");
        b.extend_from_slice(&[9; 10]);
        assert!(!b.is_foreign(), "grown past cap: its own allocation");
        assert_eq!(b.len(), 15);
        assert_eq!(b.clone().into_vec()[..5], [1, 2, 3, 4, 5]);
        drop(b);
        assert_eq!(mem[..5], [1, 2, 3, 4, 5]);
    }

    #[test]
    fn consume_windows_the_filled_part_without_moving_it() {
        let mut b = Buf::copy_from(b"abcdefgh");
        let base = b.as_ptr();
        b.consume(3);
        assert_eq!(&b[..], b"defgh");
        assert_eq!(b.len(), 5);
        // SAFETY: pointer arithmetic within the allocation, for comparison.
        assert_eq!(b.as_ptr(), unsafe { base.add(3) }, "nothing moved");
        b.consume(100); // more than is filled: everything, no panic
        assert!(b.is_empty());
        b.clear();
        assert_eq!(b.len(), 0);
        assert_eq!(b.spare_capacity(), b.capacity());
        // Consumed, then grown or turned into a Vec: the contents move.
        let mut b = Buf::copy_from(b"0123456789");
        b.consume(4);
        b.truncate(3);
        assert_eq!(&b[..], b"456");
        b.extend_from_slice(&[b'x'; 200]);
        assert_eq!(&b[..4], b"456x");
        assert_eq!(b.len(), 203);
        let mut b = Buf::copy_from(b"0123456789");
        b.consume(6);
        assert_eq!(b.into_vec(), b"6789");
    }

    #[test]
    fn spare_limit_caps_what_a_receive_fills() {
        let mut b = Buf::with_capacity(1000);
        b.set_spare_limit(Some(10));
        assert_eq!(b.spare_capacity(), 10);
        b.extend_from_slice(&[1; 995]);
        assert_eq!(
            b.spare_capacity(),
            5,
            "the end of the allocation comes first"
        );
        b.clear();
        assert_eq!(b.spare_capacity(), 10, "kept across clear");
        b.set_spare_limit(None);
        assert_eq!(b.spare_capacity(), 1000);
    }

    #[test]
    fn bad_alignment_is_an_error() {
        let e = Buf::aligned(10, 3).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(Buf::aligned(0, 4096).unwrap().is_empty());
    }
}
