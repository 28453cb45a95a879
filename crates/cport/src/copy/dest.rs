//! The temporary file, from its creation next to DST to its rename over
//! DST: [`TempFile`] removes it on every path but success; [`reserve`]
//! preallocates it, [`open_for_io`] gives the fd the port writes through,
//! and [`finish`] trims, flushes and checks it, then renames it into place.

use std::ffi::{CString, OsStr};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{err, human};

/// Adds what an errno means for a destination to its message.
pub(super) fn explain_dst_error(e: &io::Error, dir: &Path) -> String {
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

/// The temporary copy: removed when dropped unless [`keep`](Self::keep) was
/// called (after the rename, when its name no longer exists).
pub(super) struct TempFile {
    pub path: PathBuf,
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

/// Creates the temporary file in `dir`, named after DST's `name`; an error
/// says why `dir` refused it.
pub(super) fn create_temp_in(dir: &Path, name: &OsStr) -> io::Result<(File, TempFile)> {
    create_temp(dir, name).map_err(|e| {
        let why = explain_dst_error(&e, dir);
        err(
            e.kind(),
            format!("cannot create a file in {}: {why}", dir.display()),
        )
    })
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

/// Reserves `size` bytes for the temporary file `f` in `dir`.
pub(super) fn reserve(f: &File, size: u64, dir: &Path) -> io::Result<()> {
    preallocate(f, size).map_err(|e| {
        let why = explain_dst_error(&e, dir);
        err(
            e.kind(),
            format!("cannot reserve {} in {}: {why}", human(size), dir.display()),
        )
    })
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

/// The fd the port writes the temporary file `tmp_file` (at `tmp_path`, in
/// `dir`) through: a second one opened with `O_DIRECT` when `direct`, else
/// a duplicate.
pub(super) fn open_for_io(
    tmp_file: &File,
    tmp_path: &Path,
    direct: bool,
    dir: &Path,
) -> io::Result<File> {
    if !direct {
        return tmp_file.try_clone();
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(tmp_path)
        .map_err(|e| {
            let why = if e.raw_os_error() == Some(libc::EINVAL) {
                format!(
                    "{e} (the filesystem of {} does not support O_DIRECT; copy without --direct)",
                    dir.display()
                )
            } else {
                e.to_string()
            };
            err(
                e.kind(),
                format!("cannot open the temporary file for O_DIRECT: {why}"),
            )
        })
}

/// What the finished temporary file is checked against, and where it goes.
pub(super) struct Finish<'a> {
    /// The source's size at the start: the copy's size.
    pub size: u64,
    /// Whether the tail was padded (`O_DIRECT`) and must be trimmed.
    pub direct: bool,
    /// The directory of both the temporary file and DST.
    pub dir: &'a Path,
    /// The source, open, and its attributes at the start: to tell whether
    /// it changed during the copy.
    pub src: &'a File,
    pub src_meta: &'a Metadata,
    pub src_path: &'a Path,
    pub dst_path: &'a Path,
    /// Replace a DST that exists.
    pub force: bool,
    /// Set by the signal thread: do not rename.
    pub interrupted: &'a AtomicBool,
}

/// Finishes the temporary file `file` (at `tmp`): trims the `O_DIRECT`
/// padding, flushes, checks its size and that the source did not change,
/// gives it the source's permission bits and renames it over DST; then
/// keeps it and makes the rename durable (best effort).
pub(super) fn finish(file: &File, tmp: &mut TempFile, f: &Finish<'_>) -> io::Result<()> {
    trim_and_flush(file, f)?;
    check(file, f)?;
    let mode = f.src_meta.permissions().mode() & 0o7777;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    if f.interrupted.load(Ordering::Acquire) {
        return Err(err(io::ErrorKind::Interrupted, "interrupted".into()));
    }
    rename(&tmp.path, f)?;
    tmp.keep();
    // Make the rename itself durable (best effort).
    if let Ok(d) = File::open(f.dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Trims the `O_DIRECT` padding, then flushes the copy to disk.
fn trim_and_flush(file: &File, f: &Finish<'_>) -> io::Result<()> {
    let size = f.size;
    if f.direct {
        file.set_len(size).map_err(|e| {
            err(
                e.kind(),
                format!("truncating the padded tail to {size} bytes: {e}"),
            )
        })?;
    }
    file.sync_all().map_err(|e| {
        let why = explain_dst_error(&e, f.dir);
        err(e.kind(), format!("flushing the copy to disk: {why}"))
    })
}

/// Checks that the copy has the source's size and that the source did not
/// change during the copy.
fn check(file: &File, f: &Finish<'_>) -> io::Result<()> {
    let size = f.size;
    let got = file.metadata()?.len();
    if got != size {
        return Err(io::Error::other(format!(
            "the copy has {got} bytes, the source {size}"
        )));
    }
    let now = f.src.metadata()?;
    if now.len() != size
        || now.mtime() != f.src_meta.mtime()
        || now.mtime_nsec() != f.src_meta.mtime_nsec()
    {
        return Err(io::Error::other(format!(
            "{} changed during the copy (size {size} → {}); copy it again when it is quiet",
            f.src_path.display(),
            now.len()
        )));
    }
    Ok(())
}

/// Renames the temporary file `tmp` over DST; an error says whether DST
/// appeared meanwhile.
fn rename(tmp: &Path, f: &Finish<'_>) -> io::Result<()> {
    let dst_path = f.dst_path;
    rename_into_place(tmp, dst_path, f.force).map_err(|e| {
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
