//! `cport copy`: an overlapped file copy through one completion port.
//!
//! Both files are associated with one port. Up to `--queue-depth` blocks
//! are in flight at different offsets: block *i* is read at `i × bs`; when
//! its read completes it is written at the same offset; when that write
//! completes the buffer is reused for the next block not yet read. One
//! thread issues and dequeues everything: the overlap comes from the
//! operations in flight, not from threads. A read that comes back short is
//! continued from where it stopped (a block ends at the source's size, read
//! at the start); a short write is continued with the rest.
//!
//! Safety of the destination:
//! - DST is refused when it exists, unless `--force`, and when it is a
//!   directory or the source itself;
//! - the copy goes to a hidden temporary file in DST's directory
//!   (`.NAME.cport-PID-N.tmp`, mode 0600), preallocated to the source's size
//!   (so a full disk is usually found before any byte is copied; skip with
//!   `--no-preallocate`), then flushed (`fsync`), checked to be exactly the
//!   source's size, given the source's permission bits and renamed over DST
//!   (without `--force`, with `RENAME_NOREPLACE`, so a DST that appeared
//!   meanwhile is not overwritten). Any failure, or SIGINT/SIGTERM, removes
//!   the temporary file: DST is either the complete copy or untouched.
//!
//! `--direct` opens both files with `O_DIRECT` and uses buffers aligned to
//! 4096 bytes (`Buf::aligned`); the block size must be a multiple of 4096.
//! The source's last block, when its size is not a multiple of 4096, is
//! read short at the end of the file as usual, written **padded with zeros
//! to the next multiple of 4096**, and the temporary file is truncated to
//! the source's size before it is checked and renamed.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use completion_port::{Backend, Buf, GetError, Handle, Port};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::demo::{parse_backend, parse_range};
use crate::echo::{signal_name, TermSignals};

/// Alignment of `O_DIRECT` buffers, offsets and lengths.
const ALIGN: usize = 4096;
/// Largest block size accepted.
const MAX_BLOCK: u64 = 256 << 20;
/// Most memory all the blocks in flight may take.
const MAX_BUFFERS: u64 = 4 << 30;
/// Times a block may be restarted after an unaligned short transfer under
/// `O_DIRECT` before the copy gives up.
const MAX_RETRIES: u32 = 8;
/// Completion keys.
const SRC_KEY: usize = 1;
const DST_KEY: usize = 2;
const CANCEL_KEY: usize = usize::MAX;

/// Arguments of `cport copy`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The file to copy (a regular file).
    #[arg(value_name = "SRC")]
    src: PathBuf,
    /// The file to create; its directory must exist. An existing file is
    /// replaced only with --force.
    #[arg(value_name = "DST")]
    dst: PathBuf,
    /// Most reads and writes in flight at once.
    #[arg(long, default_value = "32", value_parser = parse_queue_depth)]
    queue_depth: usize,
    /// Bytes per read and write: a number with an optional suffix K, M or G
    /// (powers of 1024): 4K, 64K, 1M.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    block_size: usize,
    /// Bypass the page cache (O_DIRECT) on both files; the block size must
    /// be a multiple of 4K. A tail that is not a multiple of 4096 bytes is
    /// written padded with zeros, and the file truncated to size.
    #[arg(long)]
    direct: bool,
    /// Replace DST if it exists.
    #[arg(long)]
    force: bool,
    /// Do not reserve DST's space before copying (by default the space is
    /// reserved with fallocate, so a full disk is found at once).
    #[arg(long)]
    no_preallocate: bool,
    /// I/O backend: auto, io_uring or epoll (auto honours CPORT_BACKEND).
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,
}

fn parse_queue_depth(s: &str) -> Result<usize, String> {
    parse_range(s, 1, 4096, "the queue depth")
}

/// A byte count with an optional binary suffix: `512`, `4K`, `1M`, `1MiB`,
/// `2G`; between 1 byte and 256 MiB.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let bad = || {
        format!("{s:?} is not a size; expected a number with an optional suffix K, M or G, e.g. 4K, 64K, 1M")
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let v = n
        .checked_mul(mult)
        .filter(|v| (1..=MAX_BLOCK).contains(v))
        .ok_or_else(|| format!("the block size must be between 1 byte and 256M, got {s:?}"))?;
    usize::try_from(v).map_err(|_| bad())
}

/// `n` bytes for people: `1.5 MiB`.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// Adds what an errno means for a destination to its message.
fn explain_dst_error(e: &io::Error, dir: &Path) -> String {
    let dir = dir.display();
    match e.raw_os_error() {
        Some(libc::ENOSPC) => format!("{e}: the filesystem holding {dir} is full"),
        Some(libc::EDQUOT) => format!("{e}: the disk quota on {dir} is exhausted"),
        Some(libc::EFBIG) => format!(
            "{e}: the copy exceeds the largest file {dir} can hold or this process's file-size limit (ulimit -f)"
        ),
        Some(libc::EROFS) => format!("{e}: {dir} is on a read-only filesystem"),
        Some(libc::EACCES | libc::EPERM) => format!("{e}: no permission to create files in {dir}"),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// The temporary file
// ---------------------------------------------------------------------------

/// The temporary copy: removed when dropped unless [`keep`](Self::keep) was
/// called (after the rename, when its name no longer exists).
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl TempFile {
    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Creates `.NAME.cport-PID-N.tmp` in `dir` (exclusively, mode 0600).
fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(File, TempFile)> {
    // Keep the name under NAME_MAX (255 bytes) whatever DST's name is.
    let base: String = name.to_string_lossy().chars().take(100).collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut last = None;
    for attempt in 0..16u64 {
        let path = dir.join(format!(
            ".{base}.cport-{}-{:x}.tmp",
            std::process::id(),
            seed.wrapping_add(attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & 0xffff_ffff
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => return Ok((f, TempFile { path, keep: false })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

/// Renames `tmp` to `dst`; without `replace`, refuses (with `EEXIST`) to
/// overwrite a `dst` that exists by now.
fn rename_into_place(tmp: &Path, dst: &Path, replace: bool) -> io::Result<()> {
    if replace {
        return fs::rename(tmp, dst);
    }
    let t = CString::new(tmp.as_os_str().as_bytes())?;
    let d = CString::new(dst.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated paths that live across the call;
    // AT_FDCWD makes relative paths relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // A filesystem or kernel without RENAME_NOREPLACE: a hard link also
        // refuses an existing name, and is atomic.
        Some(libc::EINVAL | libc::ENOSYS) => match fs::hard_link(tmp, dst) {
            Ok(()) => {
                let _ = fs::remove_file(tmp);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
            // No hard links either: check, then rename (a small window).
            Err(_) => {
                if fs::symlink_metadata(dst).is_ok() {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                fs::rename(tmp, dst)
            }
        },
        _ => Err(e),
    }
}

// ---------------------------------------------------------------------------
// The pipeline
// ---------------------------------------------------------------------------

/// One block on its way through: read, then written.
struct Block {
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
enum Op {
    Read(Block),
    Write(Block),
    /// Posted by the signal thread: stop, clean up.
    Cancel(libc::c_int),
}

struct Pipeline<'a> {
    src: Handle<Op>,
    dst: Handle<Op>,
    size: u64,
    bs: usize,
    direct: bool,
    blocks: u64,
    /// The next block to read.
    next: u64,
    in_flight: usize,
    /// Bytes written in completed blocks.
    copied: u64,
    failure: Option<io::Error>,
    bar: &'a ProgressBar,
    src_path: &'a Path,
    dir: &'a Path,
}

static ZEROS: [u8; ALIGN] = [0; ALIGN];

impl Pipeline<'_> {
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
        let offset = self.next * self.bs as u64;
        let want = (self.size - offset).min(self.bs as u64) as usize;
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
                        self.src_path.display()
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
                    format!("reading {} at offset {at}: {e}", self.src_path.display()),
                ));
            }
        };
        if buf.len() >= b.want {
            // The whole block (a source that grew meanwhile gave more: the
            // copy is of the size it had at the start; checked at the end).
            buf.truncate(b.want);
            if self.direct {
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
                    self.src_path.display(),
                    self.size
                ),
            ));
        }
        // Short read: read the rest of the block.
        if self.direct && buf.len() % ALIGN != 0 {
            // The rest would start unaligned: read the block again.
            b.retries += 1;
            if b.retries > MAX_RETRIES {
                return self.fail(io::Error::other(format!(
                    "reads of {} at offset {} keep ending at unaligned positions under O_DIRECT",
                    self.src_path.display(),
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
                let why = explain_dst_error(&e, self.dir);
                return self.fail(err(e.kind(), format!("writing at offset {at}: {why}")));
            }
        };
        if n < buf.len() {
            // Short write: write the rest.
            if self.direct && n % ALIGN != 0 {
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

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// Prints a line to stdout, ignoring a closed stdout (never a panic).
macro_rules! say {
    ($($t:tt)*) => {{
        let mut out = io::stdout().lock();
        let _ = writeln!(out, $($t)*);
        let _ = out.flush();
    }};
}

/// Copies SRC to DST.
pub fn run(a: Args) -> io::Result<()> {
    let started = Instant::now();
    // Before any thread starts: SIGINT/SIGTERM are taken by our thread,
    // which cancels the copy so the temporary file is removed.
    let signals = TermSignals::block()
        .map_err(|e| err(e.kind(), format!("cannot block SIGINT/SIGTERM: {e}")))?;
    // SAFETY: setting a signal's disposition to SIG_IGN is always sound;
    // with it, a write past the file-size limit fails with EFBIG (and the
    // temporary file is cleaned up) instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };

    let (src_path, dst_path, bs) = (a.src.as_path(), a.dst.as_path(), a.block_size);
    if a.direct && bs % ALIGN != 0 {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!("--direct needs a block size that is a multiple of 4K (4096 bytes); got {bs}"),
        ));
    }
    if (a.queue_depth as u64).saturating_mul(bs as u64) > MAX_BUFFERS {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!(
                "--queue-depth {} × --block-size {} needs more than 4 GiB of buffers; use fewer or smaller blocks",
                a.queue_depth,
                human(bs as u64)
            ),
        ));
    }

    // The source.
    let direct_flag = if a.direct { libc::O_DIRECT } else { 0 };
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(direct_flag)
        .open(src_path)
        .map_err(|e| {
            let why = if a.direct && e.raw_os_error() == Some(libc::EINVAL) {
                format!("{e} (its filesystem does not support O_DIRECT; copy without --direct)")
            } else {
                e.to_string()
            };
            err(
                e.kind(),
                format!("cannot open the source {}: {why}", src_path.display()),
            )
        })?;
    let src_meta = src.metadata().map_err(|e| {
        err(
            e.kind(),
            format!("cannot read the attributes of {}: {e}", src_path.display()),
        )
    })?;
    if src_meta.is_dir() {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!(
                "the source {} is a directory; cport copy copies one file",
                src_path.display()
            ),
        ));
    }
    if !src_meta.is_file() {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!("the source {} is not a regular file", src_path.display()),
        ));
    }
    let size = src_meta.len();

    // The destination.
    let Some(dst_name) = dst_path.file_name() else {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!(
                "the destination {} does not name a file",
                dst_path.display()
            ),
        ));
    };
    let dir = match dst_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(err(
                io::ErrorKind::InvalidInput,
                format!(
                    "the destination's directory {} is not a directory",
                    dir.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(err(
                e.kind(),
                format!(
                    "the destination's directory {} does not exist",
                    dir.display()
                ),
            ))
        }
        Err(e) => {
            return Err(err(
                e.kind(),
                format!(
                    "cannot use the destination's directory {}: {e}",
                    dir.display()
                ),
            ))
        }
    }
    if let Ok(m) = fs::metadata(dst_path) {
        if m.is_dir() {
            return Err(err(
                io::ErrorKind::InvalidInput,
                format!(
                    "the destination {} is a directory; give the path of the file to create, e.g. {}",
                    dst_path.display(),
                    dst_path.join(src_path.file_name().unwrap_or(OsStr::new("FILE"))).display()
                ),
            ));
        }
        if m.dev() == src_meta.dev() && m.ino() == src_meta.ino() {
            return Err(err(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} and {} are the same file",
                    src_path.display(),
                    dst_path.display()
                ),
            ));
        }
    }
    let dst_existed = fs::symlink_metadata(dst_path).is_ok();
    if dst_existed && !a.force {
        return Err(err(
            io::ErrorKind::AlreadyExists,
            format!(
                "the destination {} exists; use --force to replace it",
                dst_path.display()
            ),
        ));
    }
    let untouched = if dst_existed {
        format!("{} was left unchanged", dst_path.display())
    } else {
        format!("{} was not created", dst_path.display())
    };

    // The temporary file, removed on every path but success.
    let (tmp_file, mut tmp) = create_temp(&dir, dst_name).map_err(|e| {
        let why = explain_dst_error(&e, &dir);
        err(
            e.kind(),
            format!("cannot create a file in {}: {why}", dir.display()),
        )
    })?;
    let fail = |e: io::Error| -> io::Error {
        err(
            e.kind(),
            format!(
                "copying {} to {} failed: {e}; {untouched}",
                src_path.display(),
                dst_path.display()
            ),
        )
    };
    if size > 0 && !a.no_preallocate {
        preallocate(&tmp_file, size).map_err(|e| {
            let why = explain_dst_error(&e, &dir);
            fail(err(
                e.kind(),
                format!("cannot reserve {} in {}: {why}", human(size), dir.display()),
            ))
        })?;
    }
    // The fd the port writes through (O_DIRECT when asked).
    let dst_io = if a.direct {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&tmp.path)
            .map_err(|e| {
                let why = if e.raw_os_error() == Some(libc::EINVAL) {
                    format!("{e} (the filesystem of {} does not support O_DIRECT; copy without --direct)", dir.display())
                } else {
                    e.to_string()
                };
                fail(err(e.kind(), format!("cannot open the temporary file for O_DIRECT: {why}")))
            })?
    } else {
        tmp_file.try_clone().map_err(fail)?
    };

    // One port, both files associated with it.
    let port = Port::<Op>::builder()
        .concurrency(1)
        .backend(a.backend)
        .build()
        .map_err(|e| {
            err(
                e.kind(),
                format!(
                    "cannot create a completion port (backend {}): {e}",
                    a.backend
                ),
            )
        })?;
    if let Some(why) = port.fallback_reason() {
        eprintln!(
            "cport copy: io_uring unavailable ({why}); using {}",
            port.backend()
        );
    }
    let src_meta_check = src.try_clone().map_err(fail)?;
    let src_h = port.associate(src, SRC_KEY).map_err(|e| fail(e.error))?;
    let dst_h = port.associate(dst_io, DST_KEY).map_err(|e| fail(e.error))?;

    // SIGINT/SIGTERM: the first cancels the copy (through the port, so the
    // loop below sees it); a second removes the temporary file and exits.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (port, interrupted, tmp_path) = (port.clone(), interrupted.clone(), tmp.path.clone());
        let spawned = thread::Builder::new()
            .name("cport-signals".into())
            .spawn(move || loop {
                let Ok(sig) = signals.wait() else { return };
                if interrupted.swap(true, Ordering::AcqRel) {
                    let _ = fs::remove_file(&tmp_path);
                    eprintln!(
                        "cport copy: {} received again, exiting now",
                        signal_name(sig)
                    );
                    std::process::exit(130);
                }
                let _ = port.post(CANCEL_KEY, 0, Op::Cancel(sig));
            });
        if let Err(e) = spawned {
            return Err(fail(err(
                e.kind(),
                format!("cannot start the signal thread: {e}"),
            )));
        }
    }

    let bar = if io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    } else {
        ProgressBar::hidden()
    };

    let blocks = size.div_ceil(bs as u64);
    let mut p = Pipeline {
        src: src_h,
        dst: dst_h,
        size,
        bs,
        direct: a.direct,
        blocks,
        next: 0,
        in_flight: 0,
        copied: 0,
        failure: None,
        bar: &bar,
        src_path,
        dir: &dir,
    };
    for _ in 0..(a.queue_depth as u64).min(blocks) {
        let buf = if a.direct {
            match Buf::aligned(bs, ALIGN) {
                Ok(b) => b,
                Err(e) => {
                    p.fail(e);
                    break;
                }
            }
        } else {
            Buf::with_capacity(bs)
        };
        p.read_next(buf);
    }
    while p.in_flight > 0 && p.failure.is_none() {
        let mut packet = match port.get(None) {
            Ok(packet) => packet,
            Err(GetError::Timeout) => continue,
            Err(GetError::Closed) => {
                p.fail(io::Error::other(
                    "the completion port closed during the copy",
                ));
                break;
            }
            Err(GetError::Io(e)) => {
                p.fail(err(e.kind(), format!("waiting for completions: {e}")));
                break;
            }
        };
        let buf = packet.take_buf();
        match packet.context {
            Op::Cancel(sig) => p.fail(err(
                io::ErrorKind::Interrupted,
                format!("interrupted by {}", signal_name(sig)),
            )),
            Op::Read(b) => {
                p.in_flight -= 1;
                p.on_read(b, packet.result, buf);
            }
            Op::Write(b) => {
                p.in_flight -= 1;
                p.on_write(b, packet.result, buf);
            }
        }
    }
    // Cancels whatever is still in flight after a failure; returns once
    // nothing is (every buffer dropped).
    port.close();
    let (copied, failure) = (p.copied, p.failure.take());
    drop(p);
    if let Some(e) = failure {
        bar.abandon();
        return Err(fail(e));
    }
    bar.finish_and_clear();
    if copied != size {
        return Err(fail(io::Error::other(format!(
            "copied {copied} bytes of {size} (internal error)"
        ))));
    }

    // Finish the temporary file: trim the O_DIRECT padding, flush, check.
    let finish = || -> io::Result<()> {
        if a.direct {
            tmp_file.set_len(size).map_err(|e| {
                err(
                    e.kind(),
                    format!("truncating the padded tail to {size} bytes: {e}"),
                )
            })?;
        }
        tmp_file.sync_all().map_err(|e| {
            let why = explain_dst_error(&e, &dir);
            err(e.kind(), format!("flushing the copy to disk: {why}"))
        })?;
        let got = tmp_file.metadata()?.len();
        if got != size {
            return Err(io::Error::other(format!(
                "the copy has {got} bytes, the source {size}"
            )));
        }
        let now = src_meta_check.metadata()?;
        if now.len() != size
            || now.mtime() != src_meta.mtime()
            || now.mtime_nsec() != src_meta.mtime_nsec()
        {
            return Err(io::Error::other(format!(
                "{} changed during the copy (size {size} → {}); copy it again when it is quiet",
                src_path.display(),
                now.len()
            )));
        }
        let mode = src_meta.permissions().mode() & 0o7777;
        tmp_file.set_permissions(fs::Permissions::from_mode(mode))?;
        if interrupted.load(Ordering::Acquire) {
            return Err(err(io::ErrorKind::Interrupted, "interrupted".into()));
        }
        rename_into_place(&tmp.path, dst_path, a.force).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                err(
                    e.kind(),
                    format!(
                        "{} appeared during the copy; use --force to replace it",
                        dst_path.display()
                    ),
                )
            } else {
                err(
                    e.kind(),
                    format!("renaming the copy to {}: {e}", dst_path.display()),
                )
            }
        })
    };
    finish().map_err(fail)?;
    tmp.keep();
    // Make the rename itself durable (best effort).
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }

    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { size as f64 / secs } else { 0.0 };
    say!(
        "copied {} → {}: {size} bytes ({}) in {:.3} s, {}/s",
        src_path.display(),
        dst_path.display(),
        human(size),
        secs,
        human(rate as u64),
    );
    say!(
        "backend {}, queue depth {}, block size {}, {} blocks, O_DIRECT {}",
        port.backend(),
        a.queue_depth,
        human(bs as u64),
        blocks,
        if a.direct {
            "on (tail padded, then truncated)"
        } else {
            "off"
        },
    );
    Ok(())
}

/// Reserves `size` bytes for `f` (fallocate); a filesystem that cannot is
/// not an error.
fn preallocate(f: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(|_| {
        err(
            io::ErrorKind::InvalidInput,
            format!("{size} bytes is too large a file"),
        )
    })?;
    loop {
        // SAFETY: `f` is an open file for the duration of the call;
        // fallocate only reads its arguments.
        let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => return Ok(()),
            _ => return Err(e),
        }
    }
}
