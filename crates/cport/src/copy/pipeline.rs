//! The copy's pipeline: the blocks in flight ([`Block`]), the context each
//! operation carries through the port ([`Op`]), and [`copy`], which keeps
//! up to the queue depth of blocks in flight and dequeues their completions
//! on one thread until every block is written or the copy fails.

use std::io;
use std::path::Path;

use completion_port::{Backend, Buf, GetError, Handle, Port};
use indicatif::ProgressBar;

use super::dest::explain_dst_error;
use super::{err, ALIGN};
use crate::echo::signal_name;

/// Times a block may be restarted after an unaligned short transfer under
/// `O_DIRECT` before the copy gives up.
const MAX_RETRIES: u32 = 8;
/// Completion keys.
pub(super) const SRC_KEY: usize = 1;
pub(super) const DST_KEY: usize = 2;
pub(super) const CANCEL_KEY: usize = usize::MAX;

/// What to copy and how: what stays the same through one copy.
pub(super) struct Plan<'a> {
    /// The source's size at the start: the bytes to copy.
    pub size: u64,
    /// Bytes per block.
    pub bs: usize,
    /// `O_DIRECT` on both files: aligned buffers, the tail padded.
    pub direct: bool,
    /// Most blocks in flight.
    pub queue_depth: usize,
    /// For messages: the source, and the destination's directory.
    pub src_path: &'a Path,
    pub dir: &'a Path,
}

impl Plan<'_> {
    /// Blocks in the copy, the last one possibly short.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(self.bs as u64)
    }
}

/// Creates the copy's port (one thread dequeues) on `backend`; says on
/// stderr when io_uring was asked for but is unavailable.
pub(super) fn open_port(backend: Backend) -> io::Result<Port<Op>> {
    let port = Port::<Op>::builder()
        .concurrency(1)
        .backend(backend)
        .build()
        .map_err(|e| {
            err(
                e.kind(),
                format!("cannot create a completion port (backend {backend}): {e}"),
            )
        })?;
    if let Some(why) = port.fallback_reason() {
        eprintln!(
            "cport copy: io_uring unavailable ({why}); using {}",
            port.backend()
        );
    }
    Ok(port)
}

/// Copies `plan.size` bytes from `src` to `dst` (both associated with
/// `port`), moving `bar` along; returns the bytes written. Closes `port`
/// before it returns, so nothing is in flight any more.
pub(super) fn copy(
    port: &Port<Op>,
    src: Handle<Op>,
    dst: Handle<Op>,
    plan: &Plan<'_>,
    bar: &ProgressBar,
) -> io::Result<u64> {
    let mut p = Pipeline {
        src,
        dst,
        plan,
        blocks: plan.blocks(),
        next: 0,
        in_flight: 0,
        copied: 0,
        failure: None,
        bar,
    };
    p.start();
    p.dequeue(port);
    // Cancels whatever is still in flight after a failure; returns once
    // nothing is (every buffer dropped).
    port.close();
    let (copied, failure) = (p.copied, p.failure.take());
    drop(p);
    match failure {
        Some(e) => Err(e),
        None => Ok(copied),
    }
}

/// One block on its way through: read, then written.
pub(super) struct Block {
    /// Where the block starts in both files.
    offset: u64,
    /// Bytes of the source in this block (`bs`, or less for the last).
    want: usize,
    /// Bytes of the block already written (short writes).
    written: usize,
    /// Restarts after an unaligned short transfer under `O_DIRECT`.
    retries: u32,
}

/// The per-operation context.
pub(super) enum Op {
    Read(Block),
    Write(Block),
    /// Posted by the signal thread: stop, clean up.
    Cancel(libc::c_int),
}

/// One copy in progress: the plan, the blocks started and the bytes done.
struct Pipeline<'a> {
    src: Handle<Op>,
    dst: Handle<Op>,
    plan: &'a Plan<'a>,
    blocks: u64,
    /// The next block to read.
    next: u64,
    in_flight: usize,
    /// Bytes written in completed blocks.
    copied: u64,
    failure: Option<io::Error>,
    bar: &'a ProgressBar,
}

static ZEROS: [u8; ALIGN] = [0; ALIGN];

impl Pipeline<'_> {
    /// Starts the first blocks: one a buffer, up to the queue depth.
    fn start(&mut self) {
        let bs = self.plan.bs;
        for _ in 0..(self.plan.queue_depth as u64).min(self.blocks) {
            let buf = if self.plan.direct {
                match Buf::aligned(bs, ALIGN) {
                    Ok(b) => b,
                    Err(e) => {
                        self.fail(e);
                        break;
                    }
                }
            } else {
                Buf::with_capacity(bs)
            };
            self.read_next(buf);
        }
    }

    /// Dequeues completions until nothing is in flight or the copy failed
    /// (a failed operation, a closed port, a cancel from the signal thread).
    fn dequeue(&mut self, port: &Port<Op>) {
        while self.in_flight > 0 && self.failure.is_none() {
            let mut packet = match port.get(None) {
                Ok(packet) => packet,
                Err(GetError::Timeout) => continue,
                Err(GetError::Closed) => {
                    self.fail(io::Error::other(
                        "the completion port closed during the copy",
                    ));
                    break;
                }
                Err(GetError::Io(e)) => {
                    self.fail(err(e.kind(), format!("waiting for completions: {e}")));
                    break;
                }
            };
            let buf = packet.take_buf();
            match packet.context {
                Op::Cancel(sig) => self.fail(err(
                    io::ErrorKind::Interrupted,
                    format!("interrupted by {}", signal_name(sig)),
                )),
                Op::Read(b) => {
                    self.in_flight -= 1;
                    self.on_read(b, packet.result, buf);
                }
                Op::Write(b) => {
                    self.in_flight -= 1;
                    self.on_write(b, packet.result, buf);
                }
            }
        }
    }

    fn fail(&mut self, e: io::Error) {
        if self.failure.is_none() {
            self.failure = Some(e);
        }
    }

    /// Starts reading the next block into `buf` (cleared).
    fn read_next(&mut self, mut buf: Buf) {
        if self.next >= self.blocks || self.failure.is_some() {
            return;
        }
        let offset = self.next * self.plan.bs as u64;
        let want = (self.plan.size - offset).min(self.plan.bs as u64) as usize;
        self.next += 1;
        buf.clear();
        let b = Block {
            offset,
            want,
            written: 0,
            retries: 0,
        };
        self.issue_read(buf, offset, b);
    }

    fn issue_read(&mut self, buf: Buf, at: u64, b: Block) {
        match self.src.read_at(buf, at, Op::Read(b)) {
            Ok(_) => self.in_flight += 1,
            Err(r) => {
                let e = r.into_error();
                self.fail(err(
                    e.kind(),
                    format!(
                        "cannot start a read of {} at offset {at}: {e}",
                        self.plan.src_path.display()
                    ),
                ));
            }
        }
    }

    fn issue_write(&mut self, buf: Buf, b: Block) {
        let at = b.offset + b.written as u64;
        match self.dst.write_at(buf, at, Op::Write(b)) {
            Ok(_) => self.in_flight += 1,
            Err(r) => {
                let e = r.into_error();
                self.fail(err(
                    e.kind(),
                    format!("cannot start a write at offset {at}: {e}"),
                ));
            }
        }
    }

    fn on_read(&mut self, mut b: Block, result: io::Result<usize>, buf: Option<Buf>) {
        let Some(mut buf) = buf else {
            return self.fail(io::Error::other("a read completed without its buffer"));
        };
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                let at = b.offset + buf.len() as u64;
                return self.fail(err(
                    e.kind(),
                    format!(
                        "reading {} at offset {at}: {e}",
                        self.plan.src_path.display()
                    ),
                ));
            }
        };
        if buf.len() >= b.want {
            // The whole block (a source that grew meanwhile gave more: the
            // copy is of the size it had at the start; checked at the end).
            buf.truncate(b.want);
            if self.plan.direct {
                let padded = b.want.div_ceil(ALIGN) * ALIGN;
                buf.extend_from_slice(&ZEROS[..padded - b.want]);
            }
            return self.issue_write(buf, b);
        }
        if n == 0 {
            let at = b.offset + buf.len() as u64;
            return self.fail(err(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ended at byte {at} but had {} bytes when the copy started (it shrank during the copy)",
                    self.plan.src_path.display(),
                    self.plan.size
                ),
            ));
        }
        // Short read: read the rest of the block.
        if self.plan.direct && buf.len() % ALIGN != 0 {
            // The rest would start unaligned: read the block again.
            b.retries += 1;
            if b.retries > MAX_RETRIES {
                return self.fail(io::Error::other(format!(
                    "reads of {} at offset {} keep ending at unaligned positions under O_DIRECT",
                    self.plan.src_path.display(),
                    b.offset
                )));
            }
            buf.clear();
            let at = b.offset;
            return self.issue_read(buf, at, b);
        }
        let at = b.offset + buf.len() as u64;
        self.issue_read(buf, at, b);
    }

    fn on_write(&mut self, mut b: Block, result: io::Result<usize>, buf: Option<Buf>) {
        let Some(mut buf) = buf else {
            return self.fail(io::Error::other("a write completed without its buffer"));
        };
        let at = b.offset + b.written as u64;
        let n = match result {
            Ok(0) if !buf.is_empty() => {
                return self.fail(err(
                    io::ErrorKind::WriteZero,
                    format!("writing at offset {at}: the destination accepted no bytes"),
                ))
            }
            Ok(n) => n.min(buf.len()),
            Err(e) => {
                let why = explain_dst_error(&e, self.plan.dir);
                return self.fail(err(e.kind(), format!("writing at offset {at}: {why}")));
            }
        };
        if n < buf.len() {
            // Short write: write the rest.
            if self.plan.direct && n % ALIGN != 0 {
                b.retries += 1;
                if b.retries > MAX_RETRIES {
                    return self.fail(io::Error::other(format!(
                        "writes at offset {at} keep ending at unaligned positions under O_DIRECT"
                    )));
                }
                // Write the same bytes again from the same (aligned) place.
                return self.issue_write(buf, b);
            }
            let len = buf.len();
            buf.copy_within(n..len, 0);
            buf.truncate(len - n);
            b.written += n;
            return self.issue_write(buf, b);
        }
        self.copied += b.want as u64;
        self.bar.set_position(self.copied);
        self.read_next(buf);
    }
}
