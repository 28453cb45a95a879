//! Opening files and the calls on a file as a whole: `CreateFileA`,
//! `GetFileSize(Ex)`, `SetFilePointer(Ex)`, `SetEndOfFile`,
//! `FlushFileBuffers`, `GetFileType`, `DeleteFileA`, and `cport_fd` (the
//! Linux fd behind a handle).
//!
//! A handle has a **file pointer** as on Windows: it is the fd's offset,
//! used by reads and writes without an OVERLAPPED and moved by
//! `SetFilePointer(Ex)`; overlapped operations take their position from
//! the OVERLAPPED and leave it alone. The calls take any handle that names
//! a file: a `CreateFileA` handle or a plain fd; a port, or a closed, stale
//! or made-up handle, is `ERROR_INVALID_HANDLE`.

use std::ffi::{c_int, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::error::{errno, fail, set_last_error, win32_from_io};
use crate::names::*;
use crate::object::{self, FdKind, Named, Object, Target};
use crate::types::*;

/// Opens a file (enough of Windows' `CreateFileA` for overlapped files).
///
/// - access: `GENERIC_READ`, `GENERIC_WRITE` or both;
/// - share mode and security attributes: ignored (no mandatory sharing on
///   Linux);
/// - `hTemplateFile`: ignored when opening an existing file, as on Windows;
///   when the call may create one, it must be `NULL` or an open file
///   (`ERROR_INVALID_HANDLE` otherwise), whose attributes Windows would
///   copy — Linux files have none to copy, so it is only checked;
/// - disposition: `CREATE_NEW`, `CREATE_ALWAYS`, `OPEN_EXISTING`,
///   `OPEN_ALWAYS`, `TRUNCATE_EXISTING`; the `_ALWAYS` ones set
///   `ERROR_ALREADY_EXISTS` on success when the file existed;
/// - flags: `FILE_FLAG_OVERLAPPED`, `FILE_FLAG_NO_BUFFERING` (`O_DIRECT`),
///   `FILE_FLAG_WRITE_THROUGH` (`O_DSYNC`); attributes are ignored.
///
/// Returns a tagged handle, or `INVALID_HANDLE_VALUE` with the error
/// (`ERROR_FILE_NOT_FOUND`, `ERROR_FILE_EXISTS`, `ERROR_ACCESS_DENIED`,
/// `ERROR_INVALID_PARAMETER`, …).
///
/// # Safety
/// `lpFileName` must be a NUL-terminated string (or null).
#[no_mangle]
pub unsafe extern "C" fn CreateFileA(
    lpFileName: LPCSTR,
    dwDesiredAccess: DWORD,
    _dwShareMode: DWORD,
    _lpSecurityAttributes: LPVOID,
    dwCreationDisposition: DWORD,
    dwFlagsAndAttributes: DWORD,
    hTemplateFile: HANDLE,
) -> HANDLE {
    let bad = |e| {
        set_last_error(e);
        INVALID_HANDLE_VALUE
    };
    if lpFileName.is_null() {
        return bad(ERROR_INVALID_PARAMETER);
    }
    let creates = matches!(
        dwCreationDisposition,
        CREATE_NEW | CREATE_ALWAYS | OPEN_ALWAYS
    );
    if creates && !hTemplateFile.is_null() {
        if let Err(e) = object::any_target(hTemplateFile) {
            return bad(e);
        }
    }
    let mut flags = libc::O_CLOEXEC;
    flags |= match (
        dwDesiredAccess & GENERIC_READ != 0,
        dwDesiredAccess & GENERIC_WRITE != 0,
    ) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    };
    let may_exist = match dwCreationDisposition {
        CREATE_NEW => {
            flags |= libc::O_CREAT | libc::O_EXCL;
            false
        }
        CREATE_ALWAYS => {
            flags |= libc::O_CREAT | libc::O_TRUNC;
            true
        }
        OPEN_EXISTING => false,
        OPEN_ALWAYS => {
            flags |= libc::O_CREAT;
            true
        }
        TRUNCATE_EXISTING if dwDesiredAccess & GENERIC_WRITE != 0 => {
            flags |= libc::O_TRUNC;
            false
        }
        _ => return bad(ERROR_INVALID_PARAMETER),
    };
    if dwFlagsAndAttributes & FILE_FLAG_NO_BUFFERING != 0 {
        flags |= libc::O_DIRECT;
    }
    if dwFlagsAndAttributes & FILE_FLAG_WRITE_THROUGH != 0 {
        flags |= libc::O_DSYNC;
    }
    // SAFETY: NUL-terminated (caller).
    let path = unsafe { CStr::from_ptr(lpFileName) };
    // Whether it existed, for ERROR_ALREADY_EXISTS (a race with another
    // creator only changes that hint).
    // SAFETY: `path` is NUL-terminated; F_OK only checks existence.
    let existed = may_exist && unsafe { libc::access(path.as_ptr(), libc::F_OK) } == 0;
    // SAFETY: as above; the mode is passed for O_CREAT.
    let fd = unsafe { libc::open(path.as_ptr(), flags, 0o666 as libc::c_uint) };
    if fd < 0 {
        return bad(win32_from_io(&errno()));
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let overlapped = dwFlagsAndAttributes & FILE_FLAG_OVERLAPPED != 0;
    let target = match Target::new(owned.as_raw_fd(), Some(owned), overlapped) {
        Ok(t) => Arc::new(t),
        Err(e) => return bad(win32_from_io(&e)),
    };
    match object::insert(Object::File(target)) {
        Some(h) => {
            set_last_error(if existed {
                ERROR_ALREADY_EXISTS
            } else {
                ERROR_SUCCESS
            });
            h
        }
        None => bad(ERROR_TOO_MANY_OPEN_FILES),
    }
}

/// The fd a handle names for the calls of this module, with the
/// `CreateFileA` target that owns it (kept alive for the call).
struct FileFd {
    fd: RawFd,
    mode: libc::mode_t,
    _owner: Option<Arc<Target>>,
}

fn file_fd(h: HANDLE) -> Result<FileFd, DWORD> {
    let (fd, owner) = match object::resolve(h)? {
        Named::Object(Object::File(t)) => (t.fd, Some(t)),
        Named::Object(Object::Port(_) | Object::Waitable(_)) => return Err(ERROR_INVALID_HANDLE),
        Named::Fd(fd) => (fd, None),
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; read only when `fstat` filled it.
    let mode = unsafe {
        if libc::fstat(fd, st.as_mut_ptr()) != 0 {
            return Err(win32_from_io(&errno()));
        }
        st.assume_init().st_mode
    };
    Ok(FileFd {
        fd,
        mode,
        _owner: owner,
    })
}

impl FileFd {
    fn kind(&self) -> FdKind {
        object::kind_from_mode(self.mode)
    }

    /// The size of a regular file or block device; `ERROR_INVALID_FUNCTION`
    /// for pipes, sockets and character devices, which have none.
    fn size(&self) -> Result<u64, DWORD> {
        if self.kind() != FdKind::Seekable {
            return Err(ERROR_INVALID_FUNCTION);
        }
        if self.mode & libc::S_IFMT == libc::S_IFBLK {
            const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;
            let mut n: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64, ours.
            if unsafe { libc::ioctl(self.fd, BLKGETSIZE64, &mut n) } != 0 {
                return Err(win32_from_io(&errno()));
            }
            return Ok(n);
        }
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: as in `file_fd`.
        unsafe {
            if libc::fstat(self.fd, st.as_mut_ptr()) != 0 {
                return Err(win32_from_io(&errno()));
            }
            Ok(st.assume_init().st_size as u64)
        }
    }

    /// Whether the fd was opened for writing.
    fn writable(&self) -> bool {
        // SAFETY: `fcntl(F_GETFL)` has no memory arguments.
        let fl = unsafe { libc::fcntl(self.fd, libc::F_GETFL) };
        fl >= 0 && fl & libc::O_ACCMODE != libc::O_RDONLY
    }

    /// Moves the file pointer by `dist` from `method`'s origin, refusing
    /// positions before the start (`ERROR_NEGATIVE_SEEK`) and, with
    /// `max`, beyond it (`ERROR_INVALID_PARAMETER`); nothing moves on
    /// failure. Returns the new position.
    fn seek(&self, dist: i64, method: DWORD, max: Option<u64>) -> Result<u64, DWORD> {
        if self.kind() != FdKind::Seekable {
            return Err(ERROR_INVALID_FUNCTION);
        }
        let base = match method {
            FILE_BEGIN => 0,
            // SAFETY: integer arguments; SEEK_CUR by 0 only reads.
            FILE_CURRENT => match unsafe { libc::lseek(self.fd, 0, libc::SEEK_CUR) } {
                r if r < 0 => return Err(win32_from_io(&errno())),
                r => r as u64,
            },
            FILE_END => self.size()?,
            _ => return Err(ERROR_INVALID_PARAMETER),
        };
        let new = i64::try_from(base)
            .ok()
            .and_then(|b| b.checked_add(dist))
            .filter(|&n| n >= 0)
            .ok_or(ERROR_NEGATIVE_SEEK)?;
        if max.is_some_and(|m| new as u64 > m) {
            return Err(ERROR_INVALID_PARAMETER);
        }
        // SAFETY: integer arguments.
        if unsafe { libc::lseek(self.fd, new, libc::SEEK_SET) } < 0 {
            return Err(win32_from_io(&errno()));
        }
        Ok(new as u64)
    }
}

/// The `DWORD` tail of the size and pointer calls: the low half of `r`
/// with the error (`NO_ERROR` on success, as callers check it when the
/// low half is `0xFFFFFFFF`), or `0xFFFFFFFF` with the error.
fn low_half(r: Result<u64, DWORD>, high: Option<&mut DWORD>) -> DWORD {
    match r {
        Ok(v) => {
            if let Some(h) = high {
                *h = (v >> 32) as DWORD;
            }
            set_last_error(NO_ERROR);
            v as DWORD
        }
        Err(e) => {
            set_last_error(e);
            INVALID_FILE_SIZE
        }
    }
}

/// The size of a file (regular file or block device): the low 32 bits,
/// the high ones in `*lpFileSizeHigh` when it is not null. Failure:
/// `INVALID_FILE_SIZE` with `ERROR_INVALID_HANDLE`, or
/// `ERROR_INVALID_FUNCTION` for pipes, sockets and character devices.
/// Success sets `NO_ERROR`, so a size whose low half is `0xFFFFFFFF` can be
/// told apart.
///
/// # Safety
/// `lpFileSizeHigh` null or writable.
#[no_mangle]
pub unsafe extern "C" fn GetFileSize(hFile: HANDLE, lpFileSizeHigh: LPDWORD) -> DWORD {
    // SAFETY: null or writable (caller).
    let high = unsafe { lpFileSizeHigh.as_mut() };
    low_half(file_fd(hFile).and_then(|f| f.size()), high)
}

/// The size of a file as a 64-bit value; errors as [`GetFileSize`].
///
/// # Safety
/// `lpFileSize` writable.
#[no_mangle]
pub unsafe extern "C" fn GetFileSizeEx(hFile: HANDLE, lpFileSize: PLARGE_INTEGER) -> BOOL {
    if lpFileSize.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    match file_fd(hFile).and_then(|f| f.size()) {
        Ok(n) => {
            // SAFETY: writable (caller).
            unsafe { (*lpFileSize).QuadPart = n as i64 };
            TRUE
        }
        Err(e) => fail(e),
    }
}

/// Moves the file pointer (`FILE_BEGIN`, `FILE_CURRENT`, `FILE_END`) by
/// `lDistanceToMove`, a signed 32-bit distance, or — when
/// `lpDistanceToMoveHigh` is not null — the signed 64-bit distance
/// `*lpDistanceToMoveHigh:lDistanceToMove`. Returns the low 32 bits of the
/// new position (the high ones in `*lpDistanceToMoveHigh`), with
/// `NO_ERROR`. Failure: `INVALID_SET_FILE_POINTER` with
/// `ERROR_NEGATIVE_SEEK` (before the start), `ERROR_INVALID_PARAMETER` (a
/// bad method, or a position past 4 GiB without a high part),
/// `ERROR_INVALID_FUNCTION` (not a seekable file), `ERROR_INVALID_HANDLE`;
/// the pointer does not move.
///
/// # Safety
/// `lpDistanceToMoveHigh` null or valid for a read and a write.
#[no_mangle]
pub unsafe extern "C" fn SetFilePointer(
    hFile: HANDLE,
    lDistanceToMove: LONG,
    lpDistanceToMoveHigh: PLONG,
    dwMoveMethod: DWORD,
) -> DWORD {
    // SAFETY: null or valid (caller).
    let high = unsafe { lpDistanceToMoveHigh.as_mut() };
    let (dist, max) = match &high {
        Some(h) => ((**h as i64) << 32 | lDistanceToMove as u32 as i64, None),
        None => (lDistanceToMove as i64, Some(u32::MAX as u64)),
    };
    let r = file_fd(hFile).and_then(|f| f.seek(dist, dwMoveMethod, max));
    // The high half is written back as the LONG it was read as.
    low_half(
        r,
        high.map(|h| {
            // SAFETY: LONG and DWORD have the same size and alignment.
            unsafe { &mut *(h as *mut LONG).cast::<DWORD>() }
        }),
    )
}

/// Moves the file pointer by a 64-bit distance; the new position in
/// `*lpNewFilePointer` when it is not null. Errors as [`SetFilePointer`].
///
/// # Safety
/// `lpNewFilePointer` null or writable.
#[no_mangle]
pub unsafe extern "C" fn SetFilePointerEx(
    hFile: HANDLE,
    liDistanceToMove: LARGE_INTEGER,
    lpNewFilePointer: PLARGE_INTEGER,
    dwMoveMethod: DWORD,
) -> BOOL {
    // SAFETY: both views of the union are plain integers.
    let dist = unsafe { liDistanceToMove.QuadPart };
    match file_fd(hFile).and_then(|f| f.seek(dist, dwMoveMethod, None)) {
        Ok(n) => {
            if !lpNewFilePointer.is_null() {
                // SAFETY: writable (caller).
                unsafe { (*lpNewFilePointer).QuadPart = n as i64 };
            }
            TRUE
        }
        Err(e) => fail(e),
    }
}

/// Sets the end of the file at the file pointer (truncating or extending
/// it). `ERROR_ACCESS_DENIED` without write access.
#[no_mangle]
pub extern "C" fn SetEndOfFile(hFile: HANDLE) -> BOOL {
    let f = match file_fd(hFile) {
        Ok(f) if f.kind() != FdKind::Seekable => return fail(ERROR_INVALID_FUNCTION),
        Ok(f) if !f.writable() => return fail(ERROR_ACCESS_DENIED),
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    // SAFETY: integer arguments.
    let ok = unsafe {
        let pos = libc::lseek(f.fd, 0, libc::SEEK_CUR);
        pos >= 0 && libc::ftruncate(f.fd, pos) == 0
    };
    if ok {
        TRUE
    } else {
        fail(win32_from_io(&errno()))
    }
}

/// Writes the file's data and metadata to its device (`fsync`).
/// `ERROR_ACCESS_DENIED` without write access, as on Windows. On pipes and
/// sockets it returns `TRUE` at once (Windows waits until the reader has
/// read everything; Linux cannot tell).
#[no_mangle]
pub extern "C" fn FlushFileBuffers(hFile: HANDLE) -> BOOL {
    let f = match file_fd(hFile) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if f.kind() != FdKind::Seekable {
        return TRUE;
    }
    if !f.writable() {
        return fail(ERROR_ACCESS_DENIED);
    }
    // SAFETY: plain system call on an open fd.
    if unsafe { libc::fsync(f.fd) } != 0 {
        return fail(win32_from_io(&errno()));
    }
    TRUE
}

/// What a handle names: `FILE_TYPE_DISK` (regular file, block device,
/// directory), `FILE_TYPE_CHAR` (terminal, `/dev/null`), `FILE_TYPE_PIPE`
/// (pipe, FIFO, socket — Windows reports sockets as pipes), with
/// `NO_ERROR`; `FILE_TYPE_UNKNOWN` with `ERROR_INVALID_HANDLE` for a port
/// or a closed, stale or made-up handle.
#[no_mangle]
pub extern "C" fn GetFileType(hFile: HANDLE) -> DWORD {
    let f = match file_fd(hFile) {
        Ok(f) => f,
        Err(e) => {
            set_last_error(e);
            return FILE_TYPE_UNKNOWN;
        }
    };
    set_last_error(NO_ERROR);
    match f.mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFBLK | libc::S_IFDIR => FILE_TYPE_DISK,
        libc::S_IFCHR => FILE_TYPE_CHAR,
        libc::S_IFIFO | libc::S_IFSOCK => FILE_TYPE_PIPE,
        _ => FILE_TYPE_UNKNOWN,
    }
}

/// Deletes a file (`unlink`). `ERROR_FILE_NOT_FOUND`,
/// `ERROR_PATH_NOT_FOUND`, `ERROR_ACCESS_DENIED` (also for a directory),
/// `ERROR_INVALID_PARAMETER` for a null name. A file still open elsewhere
/// is deleted at once (its name goes; open handles keep working), where
/// Windows refuses unless it was opened with `FILE_SHARE_DELETE`.
///
/// # Safety
/// `lpFileName` null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn DeleteFileA(lpFileName: LPCSTR) -> BOOL {
    if lpFileName.is_null() {
        return fail(ERROR_INVALID_PARAMETER);
    }
    // SAFETY: NUL-terminated (caller).
    if unsafe { libc::unlink(lpFileName) } != 0 {
        return fail(win32_from_io(&errno()));
    }
    TRUE
}

/// The Linux fd behind a handle, for code that must reach it (`fstat`,
/// `posix_fadvise`, `sendfile`, …): the fd a `CreateFileA` handle owns, or
/// the fd a plain handle is. -1 with `ERROR_INVALID_HANDLE` for a port or
/// a closed, stale or made-up handle. The fd stays the handle's: do not
/// close it (close the handle), and do not use it after `CloseHandle`.
#[no_mangle]
pub extern "C" fn cport_fd(h: HANDLE) -> c_int {
    match file_fd(h) {
        Ok(f) => f.fd,
        Err(e) => {
            set_last_error(e);
            -1
        }
    }
}
