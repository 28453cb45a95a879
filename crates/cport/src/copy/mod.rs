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
//! - the copy goes to a temporary file in DST's directory (mode 0600),
//!   preallocated to the source's size (so a full disk is usually found
//!   before any byte is copied; skip with `--no-preallocate`), then flushed
//!   (`fsync`), checked to be exactly the source's size, given the source's
//!   permission bits and put in place as DST. Any failure, or
//!   SIGINT/SIGTERM, removes it: DST is either the complete copy or
//!   untouched;
//! - that file has no name where the filesystem allows (`O_TMPFILE`), so a
//!   copy killed with SIGKILL leaves nothing behind: it is linked as DST at
//!   the end (`linkat`, which refuses a DST that appeared meanwhile; with
//!   `--force`, linked under a hidden name and renamed over DST).
//!   Elsewhere it is a hidden file (`.NAME.cport-PID-N.tmp`) renamed over
//!   DST (without `--force`, with `RENAME_NOREPLACE`); hidden files of
//!   copies to the same DST whose process is gone (killed) are removed by
//!   the next copy;
//! - SIGINT and SIGTERM are taken from the start: before the copy runs they
//!   end the program at once; a source that is not a regular file (a FIFO,
//!   whose `open` would block until a writer comes) is refused at once.
//!
//! `--direct` opens both files with `O_DIRECT` and uses buffers aligned to
//! 4096 bytes (`Buf::aligned`); the block size must be a multiple of 4096.
//! The source's last block, when its size is not a multiple of 4096, is
//! read short at the end of the file as usual, written **padded with zeros
//! to the next multiple of 4096**, and the temporary file is truncated to
//! the source's size before it is checked and renamed.
//!
//! The files of this module: `checks` refuses what cannot be copied (the
//! arguments, the source, the destination); `dest` holds the temporary file
//! from its creation to its rename over DST; `pipeline` is the blocks in
//! flight and the loop that dequeues their completions; `progress` is the
//! progress bar and the thread that turns SIGINT/SIGTERM into a cancel.

mod checks;
mod dest;
mod pipeline;
mod progress;

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use completion_port::{Backend, Port};

use crate::demo::{parse_backend, parse_range};

use self::dest::Finish;
use self::pipeline::{Op, Plan, DST_KEY, SRC_KEY};

/// Alignment of `O_DIRECT` buffers, offsets and lengths.
const ALIGN: usize = 4096;
/// Largest block size accepted.
const MAX_BLOCK: u64 = 256 << 20;

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
    // from now on (the source's `open` may block).
    let signals = progress::Signals::watch(progress::take_signals()?)?;
    checks::check_args(&a)?;
    let (src, src_meta) = checks::open_source(&a.src, a.direct)?;
    let dst = checks::check_dest(&a.src, &src_meta, &a.dst, a.force)?;
    let size = src_meta.len();

    // The temporary file, removed on every path but success.
    let (tmp_file, mut tmp) = dest::create_temp_in(&dst.dir, dst.name, a.direct)?;
    signals.temp(tmp.named.clone());
    let fail = |e: io::Error| dst.failed(&a.src, e);
    if size > 0 && !a.no_preallocate {
        dest::reserve(&tmp_file, size, &dst.dir).map_err(fail)?;
    }
    let dst_io = dest::open_for_io(&tmp_file, &tmp, a.direct, &dst.dir).map_err(fail)?;

    // One port, both files associated with it.
    let port = pipeline::open_port(a.backend)?;
    let src_check = src.try_clone().map_err(fail)?;
    let src_h = port.associate(src, SRC_KEY).map_err(|e| fail(e.error))?;
    let dst_h = port.associate(dst_io, DST_KEY).map_err(|e| fail(e.error))?;
    signals.running(&port);
    let bar = progress::bar(size);

    let plan = Plan {
        size,
        bs: a.block_size,
        direct: a.direct,
        queue_depth: a.queue_depth,
        src_path: &a.src,
        dir: &dst.dir,
    };
    let copied = match pipeline::copy(&port, src_h, dst_h, &plan, &bar) {
        Ok(copied) => copied,
        Err(e) => {
            bar.abandon();
            return Err(fail(e));
        }
    };
    bar.finish_and_clear();
    if copied != size {
        return Err(fail(io::Error::other(format!(
            "copied {copied} bytes of {size} (internal error)"
        ))));
    }

    let finish = Finish {
        size,
        direct: a.direct,
        dir: &dst.dir,
        src: &src_check,
        src_meta: &src_meta,
        src_path: &a.src,
        dst_path: &a.dst,
        force: a.force,
        interrupted: &signals.interrupted,
    };
    dest::finish(&tmp_file, &mut tmp, &finish).map_err(fail)?;
    report(&a, &port, &plan, started.elapsed());
    Ok(())
}

/// Prints what was copied, how fast and how.
fn report(a: &Args, port: &Port<Op>, plan: &Plan<'_>, elapsed: Duration) {
    let size = plan.size;
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { size as f64 / secs } else { 0.0 };
    say!(
        "copied {} → {}: {size} bytes ({}) in {:.3} s, {}/s",
        a.src.display(),
        a.dst.display(),
        human(size),
        secs,
        human(rate as u64),
    );
    say!(
        "backend {}, queue depth {}, block size {}, {} blocks, O_DIRECT {}",
        port.backend(),
        a.queue_depth,
        human(a.block_size as u64),
        plan.blocks(),
        if a.direct {
            "on (tail padded, then truncated)"
        } else {
            "off"
        },
    );
}
