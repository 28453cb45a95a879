//! The checks before a copy starts: the arguments, the source and the
//! destination. Each refusal is an error whose message says what is wrong
//! and, where there is one, what to do instead.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{err, human, Args, ALIGN};

/// Most memory all the blocks in flight may take.
const MAX_BUFFERS: u64 = 4 << 30;

/// Refuses a block size `--direct` cannot use and more buffers than
/// [`MAX_BUFFERS`].
pub(super) fn check_args(a: &Args) -> io::Result<()> {
    let bs = a.block_size;
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
    Ok(())
}

/// Opens the source (with `O_DIRECT` when `direct`) and checks that it is a
/// regular file; returns it with its attributes at the start of the copy.
/// Opened with `O_NONBLOCK`, so that a FIFO (whose `open` blocks until a
/// writer comes) is refused at once; the flag is cleared again.
pub(super) fn open_source(src_path: &Path, direct: bool) -> io::Result<(File, Metadata)> {
    let direct_flag = if direct { libc::O_DIRECT } else { 0 };
    let src = OpenOptions::new()
        .read(true)
        .custom_flags(direct_flag | libc::O_NONBLOCK)
        .open(src_path)
        .map_err(|e| {
            let why = if direct && e.raw_os_error() == Some(libc::EINVAL) {
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
    // SAFETY: F_GETFL/F_SETFL on an open fd only read and set its flags.
    let cleared = unsafe {
        let flags = libc::fcntl(src.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(src.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        let e = io::Error::last_os_error();
        return Err(err(
            e.kind(),
            format!("cannot use the source {}: {e}", src_path.display()),
        ));
    }
    Ok((src, src_meta))
}

/// A destination that passed the checks.
pub(super) struct Dest<'a> {
    /// DST as given.
    pub path: &'a Path,
    /// DST's file name, which the temporary file's name is made from.
    pub name: &'a OsStr,
    /// DST's directory, where the temporary file is made.
    pub dir: PathBuf,
    /// What became of DST when the copy fails.
    untouched: String,
}

impl Dest<'_> {
    /// `e`, said as the failure of the copy from `src_path` to this
    /// destination, with what became of it.
    pub fn failed(&self, src_path: &Path, e: io::Error) -> io::Error {
        err(
            e.kind(),
            format!(
                "copying {} to {} failed: {e}; {}",
                src_path.display(),
                self.path.display(),
                self.untouched
            ),
        )
    }
}

/// Checks that `dst_path` names a file in a directory that exists, and is
/// neither a directory, nor the source, nor (without `force`) a file that
/// exists.
pub(super) fn check_dest<'a>(
    src_path: &Path,
    src_meta: &Metadata,
    dst_path: &'a Path,
    force: bool,
) -> io::Result<Dest<'a>> {
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
    check_dir(&dir)?;
    check_not_dir_or_source(src_path, src_meta, dst_path)?;
    let dst_existed = fs::symlink_metadata(dst_path).is_ok();
    if dst_existed && !force {
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
    Ok(Dest {
        path: dst_path,
        name: dst_name,
        dir,
        untouched,
    })
}

/// Checks that the destination's directory exists and is one.
fn check_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(err(
            io::ErrorKind::InvalidInput,
            format!(
                "the destination's directory {} is not a directory",
                dir.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(err(
            e.kind(),
            format!(
                "the destination's directory {} does not exist",
                dir.display()
            ),
        )),
        Err(e) => Err(err(
            e.kind(),
            format!(
                "cannot use the destination's directory {}: {e}",
                dir.display()
            ),
        )),
    }
}

/// Refuses a destination that is a directory or the source itself.
fn check_not_dir_or_source(
    src_path: &Path,
    src_meta: &Metadata,
    dst_path: &Path,
) -> io::Result<()> {
    let Ok(m) = fs::metadata(dst_path) else {
        return Ok(());
    };
    if m.is_dir() {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!(
                "the destination {} is a directory; give the path of the file to create, e.g. {}",
                dst_path.display(),
                dst_path
                    .join(src_path.file_name().unwrap_or(OsStr::new("FILE")))
                    .display()
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
    Ok(())
}
