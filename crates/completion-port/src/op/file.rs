//! Operations for files, pipes and other byte streams: positioned
//! `read_at` / `write_at` (files) and stream `read` / `write` (pipes,
//! character devices, sockets used as plain fds).

use crate::buf::{Buf, Buffers};
use crate::core::Token;
use crate::driver::{OpKind, OFFSET_CURRENT};
use crate::error::Rejected;
use crate::Handle;

/// Largest single transfer the backends accept (io_uring lengths are `u32`).
pub(crate) const MAX_LEN: usize = u32::MAX as usize;

pub(crate) fn check_len(what: &str, n: usize) -> Option<String> {
    (n > MAX_LEN)
        .then(|| format!("{what} of {n} bytes exceeds the per-operation limit of {MAX_LEN} bytes"))
}

/// A read into a buffer with no spare capacity would complete with 0 bytes,
/// which reads as end of file: refused at the call.
fn check_read_room(spare: usize) -> Option<String> {
    (spare == 0).then(|| {
        "a read needs spare capacity in its buffer (its length equals its capacity): it would complete \
         with 0 bytes, which looks like end of file; use Buf::with_capacity, or clear() the buffer"
            .to_string()
    })
}

fn check_offset(offset: u64) -> Option<String> {
    (offset > i64::MAX as u64).then(|| {
        format!(
            "file offset {offset} exceeds the largest file offset ({})",
            i64::MAX
        )
    })
}

impl<C: Send + 'static> Handle<C> {
    /// Reads at `offset` into `buf`'s spare capacity (see [`Buf`]); the
    /// packet's result is the number of bytes read, `Ok(0)` at or past the
    /// end of the file.
    ///
    /// With `O_DIRECT`, use a [`Buf::aligned`] buffer, an aligned offset
    /// and a spare capacity that is a multiple of the block size.
    ///
    /// Refused at once (no packet) with `InvalidInput` when the buffer has
    /// no spare capacity (the read would complete with 0 bytes, which looks
    /// like end of file), the spare capacity exceeds 4 GiB − 1 or `offset`
    /// exceeds `i64::MAX`; with the port-closed error when the port is
    /// closed.
    ///
    /// ```
    /// use completion_port::{Buf, Port};
    /// use std::io::Write;
    /// # fn main() -> std::io::Result<()> {
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(b"hello, port")?;
    /// let port = Port::<&'static str>::new(0)?;
    /// let handle = port.associate(file, 7)?;
    /// handle.read_at(Buf::with_capacity(64), 7, "my read")?;
    /// let mut packet = port.get(None)?;
    /// assert_eq!(packet.key, 7);
    /// assert_eq!(packet.context, "my read");
    /// assert_eq!(*packet.result.as_ref().unwrap(), 4);
    /// assert_eq!(&packet.take_buf().unwrap()[..], b"port");
    /// # Ok(()) }
    /// ```
    pub fn read_at(&self, buf: Buf, offset: u64, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(OpKind::Read, offset, Buffers::One(buf), context, |b| {
            check_offset(offset)
                .or_else(|| check_read_room(spare(b)))
                .or_else(|| check_len("read", spare(b)))
        })
    }

    /// Writes `buf`'s filled bytes at `offset`; the packet's result is the
    /// number of bytes written. Refused at once under the same conditions
    /// as [`read_at`](Self::read_at).
    pub fn write_at(&self, buf: Buf, offset: u64, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(OpKind::Write, offset, Buffers::One(buf), context, |b| {
            check_offset(offset).or_else(|| check_len("write", filled(b)))
        })
    }

    /// Writes all of `buf`'s filled bytes at `offset`: the packet comes
    /// once every byte is written (`Ok(buf.len())`), or with the error that
    /// stopped it; a short write (a full disk, a signal) is continued inside
    /// the port at the right offset. Refused at once like
    /// [`write_at`](Self::write_at).
    pub fn write_all_at(&self, buf: Buf, offset: u64, context: C) -> Result<Token, Rejected<C>> {
        self.issue_whole(OpKind::Write, offset, Buffers::One(buf), context, |b| {
            check_offset(offset).or_else(|| check_len("write", filled(b)))
        })
    }

    /// Writes all of `buf`'s filled bytes at the fd's current position
    /// (pipes, character devices): the packet comes once every byte is
    /// written, or with the error that stopped it. Writes on one pipe go
    /// out in the order they were issued.
    pub fn write_all(&self, buf: Buf, context: C) -> Result<Token, Rejected<C>> {
        self.issue_whole(
            OpKind::Write,
            OFFSET_CURRENT,
            Buffers::One(buf),
            context,
            |b| check_len("write", filled(b)),
        )
    }

    /// Reads from the fd's current position (pipes, character devices):
    /// like [`read_at`](Self::read_at) without an offset.
    pub fn read(&self, buf: Buf, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(
            OpKind::Read,
            OFFSET_CURRENT,
            Buffers::One(buf),
            context,
            |b| check_read_room(spare(b)).or_else(|| check_len("read", spare(b))),
        )
    }

    /// Writes at the fd's current position (pipes, character devices).
    pub fn write(&self, buf: Buf, context: C) -> Result<Token, Rejected<C>> {
        self.issue_checked(
            OpKind::Write,
            OFFSET_CURRENT,
            Buffers::One(buf),
            context,
            |b| check_len("write", filled(b)),
        )
    }
}

pub(crate) fn spare(b: &Buffers) -> usize {
    match b {
        Buffers::One(b) => b.spare_capacity(),
        _ => 0,
    }
}

pub(crate) fn filled(b: &Buffers) -> usize {
    match b {
        Buffers::One(b) => b.len(),
        _ => 0,
    }
}
