//! The temporary file, from its creation next to DST to its placing as
//! DST: unnamed (`O_TMPFILE`) where the filesystem allows, else hidden and
//! named; [`TempFile`] removes a named one on every path but success;
//! [`reserve`] preallocates it, [`open_for_io`] gives the fd the port
//! writes through, and [`finish`] trims, flushes and checks it, then links
//! or renames it into place.

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

/// The temporary copy: unnamed, or named and removed when dropped unless
/// [`keep`](Self::keep) was called (after the rename, when its name no
/// longer exists).
pub(super) struct TempFile {
    /// Its hidden name; `None` for an unnamed (`O_TMPFILE`) file.
    pub named: Option<PathBuf>,
    keep: bool,
}

impl TempFile {
    fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let (Some(path), false) = (&self.named, self.keep) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Creates the temporary file in `dir`, for DST's `name` (with `O_DIRECT`
/// when unnamed and `direct`); an error says why `dir` refused it.
pub(super) fn create_temp_in(
    dir: &Path,
    name: &OsStr,
    direct: bool,
) -> io::Result<(File, TempFile)> {
    let base = base_name(name);
    remove_stale(dir, &base);
    let unnamed = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | if direct { libc::O_DIRECT } else { 0 })
        .open(dir);
    let made = match unnamed {
        Ok(f) => Ok((
            f,
            TempFile {
                named: None,
                keep: false,
            },
        )),
        // No O_TMPFILE here (EOPNOTSUPP; EISDIR from kernels before 3.11),
        // or no O_DIRECT with it (EINVAL): a named file, which
        // `open_for_io` reopens with O_DIRECT (or says why it cannot).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            create_named(dir, &base)
        }
        Err(e) => Err(e),
    };
    made.map_err(|e| {
        let why = explain_dst_error(&e, dir);
        err(
            e.kind(),
            format!("cannot create a file in {}: {why}", dir.display()),
        )
    })
}

/// DST's name as the temporary names use it: under NAME_MAX (255 bytes)
/// whatever DST's name is.
fn base_name(name: &OsStr) -> String {
    name.to_string_lossy().chars().take(100).collect()
}

/// Creates `.NAME.cport-PID-N.tmp` in `dir` (exclusively, mode 0600).
fn create_named(dir: &Path, base: &str) -> io::Result<(File, TempFile)> {
    let mut last = None;
    for attempt in 0..16u64 {
        let path = hidden_name(dir, base, attempt);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                let named = Some(path);
                return Ok((f, TempFile { named, keep: false }));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary file name")))
}

/// A hidden name in `dir` for DST's `base`: `.NAME.cport-PID-N.tmp`.
fn hidden_name(dir: &Path, base: &str, attempt: u64) -> PathBuf {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    dir.join(format!(
        ".{base}.cport-{}-{:x}.tmp",
        std::process::id(),
        seed.wrapping_add(attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) & 0xffff_ffff
    ))
}

/// Removes the hidden temporary files of copies to DST (`base`) whose
/// process is gone — killed before they could clean up — and that belong
/// to this user. Best effort.
fn remove_stale(dir: &Path, base: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{base}.cport-");
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((pid, n)) = rest.strip_suffix(".tmp").and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<libc::pid_t>(), u64::from_str_radix(n, 16)) else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        let mine = fs::symlink_metadata(e.path()).is_ok_and(|m| m.uid() == me && m.is_file());
        if gone && mine {
            let _ = fs::remove_file(e.path());
        }
    }
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

/// The fd the port writes the temporary file `tmp_file` (in `dir`)
/// through: a duplicate, or for a named file and `direct` a second fd
/// opened with `O_DIRECT` (an unnamed one was made with it).
pub(super) fn open_for_io(
    tmp_file: &File,
    tmp: &TempFile,
    direct: bool,
    dir: &Path,
) -> io::Result<File> {
    let Some(path) = tmp.named.as_ref().filter(|_| direct) else {
        return tmp_file.try_clone();
    };
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
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
    place(file, tmp, f)?;
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

/// Puts the temporary file `file` in place as DST: links an unnamed one,
/// renames a named one; an error says whether DST appeared meanwhile.
fn place(file: &File, tmp: &TempFile, f: &Finish<'_>) -> io::Result<()> {
    let dst_path = f.dst_path;
    let placed = match &tmp.named {
        Some(path) => rename_into_place(path, dst_path, f.force),
        None if !f.force => link_unnamed(file, dst_path),
        None => {
            // Replace: link under a hidden name, then rename that over DST.
            let base = base_name(dst_path.file_name().unwrap_or_default());
            let hidden = hidden_name(f.dir, &base, 0);
            link_unnamed(file, &hidden).and_then(|()| {
                fs::rename(&hidden, dst_path).inspect_err(|_| {
                    let _ = fs::remove_file(&hidden);
                })
            })
        }
    };
    placed.map_err(|e| {
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

/// Gives the unnamed file `file` the name `dst` (`EEXIST` if it exists):
/// `linkat(AT_EMPTY_PATH)`, which needs `CAP_DAC_READ_SEARCH`, else through
/// `/proc/self/fd`, which does not.
fn link_unnamed(file: &File, dst: &Path) -> io::Result<()> {
    let d = CString::new(dst.as_os_str().as_bytes())?;
    let empty = CString::default();
    // SAFETY: `file` is open; both strings are NUL-terminated and live
    // across the call.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(
        e.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::ENOENT)
    ) {
        return Err(e);
    }
    let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    // SAFETY: as above.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc.as_ptr(),
            libc::AT_FDCWD,
            d.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
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
