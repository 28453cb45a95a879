//! `FormatMessageA` for system messages: the text of an error number, as
//! Windows programs print `GetLastError()`.
//!
//! Only `FORMAT_MESSAGE_FROM_SYSTEM` is provided (with
//! `FORMAT_MESSAGE_IGNORE_INSERTS` and `FORMAT_MESSAGE_ALLOCATE_BUFFER`);
//! messages from strings or modules are refused with
//! `ERROR_INVALID_PARAMETER`. The texts are Windows' (English, ending in
//! "\r\n") for the errors this library reports; an error carrying an errno
//! (`APPLICATION_ERROR_BIT | errno`) gets the system's `strerror` text; any
//! other number fails with `ERROR_MR_MID_NOT_FOUND`. The language is
//! ignored.

use std::ffi::CStr;

use super::types::*;
use crate::error::fail;
use crate::types::*;

/// The text of a system message, not `lpSource`.
pub const FORMAT_MESSAGE_FROM_SYSTEM: DWORD = 0x1000;
/// Leave `%1`-style inserts as they are (system texts here have none).
pub const FORMAT_MESSAGE_IGNORE_INSERTS: DWORD = 0x200;
/// `lpBuffer` is an `LPSTR *` that receives a `LocalAlloc` buffer (free it
/// with `LocalFree`).
pub const FORMAT_MESSAGE_ALLOCATE_BUFFER: DWORD = 0x100;
/// Not provided (`ERROR_INVALID_PARAMETER`).
pub const FORMAT_MESSAGE_FROM_STRING: DWORD = 0x400;
/// Not provided (`ERROR_INVALID_PARAMETER`).
pub const FORMAT_MESSAGE_FROM_HMODULE: DWORD = 0x800;
/// Insert values come as an array (accepted; system texts have none).
pub const FORMAT_MESSAGE_ARGUMENT_ARRAY: DWORD = 0x2000;
/// Line-width bits (accepted and ignored: texts are one line).
pub const FORMAT_MESSAGE_MAX_WIDTH_MASK: DWORD = 0xFF;
/// `MAKELANGID(LANG_NEUTRAL, SUBLANG_DEFAULT)` parts (the language is
/// ignored).
pub const LANG_NEUTRAL: DWORD = 0;
/// See [`LANG_NEUTRAL`].
pub const SUBLANG_DEFAULT: DWORD = 1;
/// No message for this number.
pub const ERROR_MR_MID_NOT_FOUND: DWORD = 317;
/// The buffer is too small for the message.
pub const ERROR_INSUFFICIENT_BUFFER: DWORD = 122;

const TEXTS: &[(DWORD, &str)] = &[
    (ERROR_SUCCESS, "The operation completed successfully."),
    (ERROR_FILE_NOT_FOUND, "The system cannot find the file specified."),
    (ERROR_PATH_NOT_FOUND, "The system cannot find the path specified."),
    (ERROR_TOO_MANY_OPEN_FILES, "The system cannot open the file."),
    (ERROR_ACCESS_DENIED, "Access is denied."),
    (ERROR_INVALID_HANDLE, "The handle is invalid."),
    (ERROR_NOT_ENOUGH_MEMORY, "Not enough memory resources are available to process this command."),
    (ERROR_WRITE_PROTECT, "The media is write protected."),
    (ERROR_HANDLE_EOF, "Reached the end of the file."),
    (ERROR_NOT_SUPPORTED, "The request is not supported."),
    (ERROR_NETNAME_DELETED, "The specified network name is no longer available."),
    (ERROR_FILE_EXISTS, "The file exists."),
    (ERROR_INVALID_PARAMETER, "The parameter is incorrect."),
    (ERROR_BROKEN_PIPE, "The pipe has been ended."),
    (ERROR_DISK_FULL, "There is not enough space on the disk."),
    (ERROR_SEM_TIMEOUT, "The semaphore timeout period has expired."),
    (ERROR_ALREADY_EXISTS, "Cannot create a file when that file already exists."),
    (ERROR_FILENAME_EXCED_RANGE, "The filename or extension is too long."),
    (ERROR_MORE_DATA, "More data is available."),
    (WAIT_TIMEOUT, "The wait operation timed out."),
    (ERROR_NOT_OWNER, "Attempt to release mutex not owned by caller."),
    (ERROR_TOO_MANY_POSTS, "Too many posts were made to a semaphore."),
    (ERROR_INVALID_ADDRESS, "Attempt to access invalid address."),
    (ERROR_OPERATION_ABORTED, "The I/O operation has been aborted because of either a thread exit or an application request."),
    (ERROR_IO_INCOMPLETE, "Overlapped I/O event is not in a signaled state."),
    (ERROR_IO_PENDING, "Overlapped I/O operation is in progress."),
    (ERROR_IO_DEVICE, "The request could not be performed because of an I/O device error."),
    (ERROR_NOT_FOUND, "Element not found."),
    (ERROR_CONNECTION_REFUSED, "The remote computer refused the network connection."),
    (ERROR_NETWORK_UNREACHABLE, "The network location cannot be reached."),
    (ERROR_HOST_UNREACHABLE, "The remote system is not reachable by the transport."),
    (ERROR_CONNECTION_ABORTED, "The network connection was aborted by the local system."),
    (ERROR_TIMEOUT, "This operation returned because the timeout period expired."),
    (WSAEINTR, "A blocking operation was interrupted by a call to WSACancelBlockingCall."),
    (WSAEACCES, "An attempt was made to access a socket in a way forbidden by its access permissions."),
    (WSAEFAULT, "The system detected an invalid pointer address in attempting to use a pointer argument in a call."),
    (WSAEINVAL, "An invalid argument was supplied."),
    (WSAEMFILE, "Too many open sockets."),
    (WSAEWOULDBLOCK, "A non-blocking socket operation could not be completed immediately."),
    (WSAEINPROGRESS, "A blocking operation is currently executing."),
    (WSAENOTSOCK, "An operation was attempted on something that is not a socket."),
    (WSAEADDRINUSE, "Only one usage of each socket address (protocol/network address/port) is normally permitted."),
    (WSAEADDRNOTAVAIL, "The requested address is not valid in its context."),
    (WSAENETUNREACH, "A socket operation was attempted to an unreachable network."),
    (WSAECONNABORTED, "An established connection was aborted by the software in your host machine."),
    (WSAECONNRESET, "An existing connection was forcibly closed by the remote host."),
    (WSAENOTCONN, "A request to send or receive data was disallowed because the socket is not connected."),
    (WSAETIMEDOUT, "A connection attempt failed because the connected party did not properly respond after a period of time."),
    (WSAECONNREFUSED, "No connection could be made because the target machine actively refused it."),
    (WSAEHOSTUNREACH, "A socket operation was attempted to an unreachable host."),
];

/// The message for `id`, with Windows' line end.
fn text(id: DWORD) -> Option<String> {
    if let Some(&(_, t)) = TEXTS.iter().find(|&&(code, _)| code == id) {
        return Some(format!("{t}\r\n"));
    }
    if id & APPLICATION_ERROR_BIT != 0 && id & !APPLICATION_ERROR_BIT < 4096 {
        // SAFETY: `strerror` returns a NUL-terminated string, valid until
        // the next call in this thread, copied at once.
        let s = unsafe { CStr::from_ptr(libc::strerror((id & !APPLICATION_ERROR_BIT) as i32)) };
        return Some(format!("{}.\r\n", s.to_string_lossy()));
    }
    None
}

/// Writes the text of system message `dwMessageId` (see the module docs)
/// into `lpBuffer` (`nSize` bytes), or, with
/// `FORMAT_MESSAGE_ALLOCATE_BUFFER`, into a new `LocalAlloc` buffer (of at
/// least `nSize` bytes) whose address goes to `*(LPSTR *)lpBuffer`.
/// Returns the length without the NUL, or 0 with `ERROR_MR_MID_NOT_FOUND`,
/// `ERROR_INSUFFICIENT_BUFFER` or `ERROR_INVALID_PARAMETER`.
///
/// # Safety
/// `lpBuffer` is valid for `nSize` bytes of writes, or, with
/// `FORMAT_MESSAGE_ALLOCATE_BUFFER`, for the write of one pointer.
#[no_mangle]
pub unsafe extern "C" fn FormatMessageA(
    dwFlags: DWORD,
    lpSource: LPCVOID,
    dwMessageId: DWORD,
    dwLanguageId: DWORD,
    lpBuffer: *mut std::ffi::c_char,
    nSize: DWORD,
    Arguments: *mut std::ffi::c_void,
) -> DWORD {
    let _ = (lpSource, dwLanguageId, Arguments);
    if dwFlags & FORMAT_MESSAGE_FROM_SYSTEM == 0 || lpBuffer.is_null() {
        fail(ERROR_INVALID_PARAMETER);
        return 0;
    }
    let Some(msg) = text(dwMessageId) else {
        fail(ERROR_MR_MID_NOT_FOUND);
        return 0;
    };
    let len = msg.len();
    let dst = if dwFlags & FORMAT_MESSAGE_ALLOCATE_BUFFER != 0 {
        let p =
            super::memory::LocalAlloc(0, (len + 1).max(nSize as usize)).cast::<std::ffi::c_char>();
        if p.is_null() {
            fail(ERROR_NOT_ENOUGH_MEMORY);
            return 0;
        }
        // SAFETY: with ALLOCATE_BUFFER, `lpBuffer` is an `LPSTR *` (caller).
        unsafe { lpBuffer.cast::<*mut std::ffi::c_char>().write(p) };
        p
    } else {
        if len + 1 > nSize as usize {
            fail(ERROR_INSUFFICIENT_BUFFER);
            return 0;
        }
        lpBuffer
    };
    // SAFETY: `dst` holds at least `len + 1` bytes (checked or allocated).
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr().cast(), dst, len);
        dst.add(len).write(0);
    }
    len as DWORD
}
