//! The Win32 and Winsock names of the file and socket calls beyond the
//! port itself (`LARGE_INTEGER`, `FILE_BEGIN`, `FILE_TYPE_*`, the
//! `getaddrinfo` errors, …), with Windows' values.
//!
//! The C-only names (`SOCKADDR`, `SOCKADDR_IN`, `SOCKADDR_STORAGE`,
//! `PSOCKADDR`, `LINGER`, `DWORD_PTR`, `SD_BOTH`, the unsuffixed
//! `WSASocket` / `CreateFile` / `DeleteFile` macros, and the macros that
//! route the BSD calls through [`crate::bsd`]) are typedefs and macros of
//! the header's prelude (`cbindgen.toml`): they name the system's own types.
//! `LARGE_INTEGER` and `ULARGE_INTEGER` are written there too, with
//! Windows' anonymous member (`li.LowPart`); the Rust twins below have the
//! same layout.

#![allow(non_camel_case_types, non_snake_case)]

use crate::types::DWORD;

/// Win32 `LONG`: 32 bits.
pub type LONG = i32;
/// Pointer to a `LONG` (`SetFilePointer`'s high part).
pub type PLONG = *mut LONG;

/// The two halves of a [`LARGE_INTEGER`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LARGE_INTEGER_PARTS {
    /// Low 32 bits.
    pub LowPart: DWORD,
    /// High 32 bits (signed).
    pub HighPart: LONG,
}

/// A signed 64-bit integer as Windows passes file sizes and positions.
/// The header declares it with Windows' anonymous member, so `li.LowPart`,
/// `li.HighPart`, `li.u.LowPart` and `li.QuadPart` all work.
#[repr(C)]
#[derive(Clone, Copy)]
pub union LARGE_INTEGER {
    /// The halves.
    pub u: LARGE_INTEGER_PARTS,
    /// The whole value.
    pub QuadPart: i64,
}

/// Pointer to a [`LARGE_INTEGER`].
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;

// ---- Errors -------------------------------------------------------------

/// Same value as `ERROR_SUCCESS`.
pub const NO_ERROR: DWORD = 0;
/// The handle does not support the call (e.g. the size of a pipe).
pub const ERROR_INVALID_FUNCTION: DWORD = 1;
/// `SetFilePointer(Ex)` to a position before the start of the file.
pub const ERROR_NEGATIVE_SEEK: DWORD = 131;
/// `getaddrinfo`: `EAI_NONAME`.
pub const WSAHOST_NOT_FOUND: DWORD = 11001;
/// `getaddrinfo`: `EAI_AGAIN`.
pub const WSATRY_AGAIN: DWORD = 11002;
/// `getaddrinfo`: `EAI_FAIL`.
pub const WSANO_RECOVERY: DWORD = 11003;
/// `getaddrinfo`: `EAI_NODATA`.
pub const WSANO_DATA: DWORD = 11004;
/// `getaddrinfo`: `EAI_SERVICE`.
pub const WSATYPE_NOT_FOUND: DWORD = 10109;
/// `getaddrinfo`: `EAI_MEMORY` (same value as `ERROR_NOT_ENOUGH_MEMORY`).
pub const WSA_NOT_ENOUGH_MEMORY: DWORD = 8;

// ---- File size and pointer ----------------------------------------------

/// `GetFileSize` failed (check `GetLastError`: the size may be this value).
pub const INVALID_FILE_SIZE: DWORD = 0xFFFF_FFFF;
/// `SetFilePointer` failed (check `GetLastError`, as for sizes).
pub const INVALID_SET_FILE_POINTER: DWORD = 0xFFFF_FFFF;
/// Move relative to the start of the file.
pub const FILE_BEGIN: DWORD = 0;
/// Move relative to the current file pointer.
pub const FILE_CURRENT: DWORD = 1;
/// Move relative to the end of the file.
pub const FILE_END: DWORD = 2;

// ---- GetFileType --------------------------------------------------------

/// Unknown, or the call failed (`GetLastError` says which).
pub const FILE_TYPE_UNKNOWN: DWORD = 0;
/// A regular file or block device.
pub const FILE_TYPE_DISK: DWORD = 1;
/// A character device (terminal, `/dev/null`).
pub const FILE_TYPE_CHAR: DWORD = 2;
/// A pipe, FIFO or socket (Windows reports sockets as pipes).
pub const FILE_TYPE_PIPE: DWORD = 3;

// ---- Winsock ------------------------------------------------------------

/// `WSAAccept`'s condition function. Only `NULL` is supported.
pub type LPCONDITIONPROC = *mut std::ffi::c_void;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn large_integer_layout() {
        assert_eq!(size_of::<LARGE_INTEGER>(), 8);
        assert_eq!(offset_of!(LARGE_INTEGER_PARTS, HighPart), 4);
        let li = LARGE_INTEGER {
            QuadPart: 0x1_0000_0002,
        };
        // SAFETY: both views are plain integers of the same 8 bytes.
        let u = unsafe { li.u };
        assert_eq!((u.LowPart, u.HighPart), (2, 1));
    }
}
