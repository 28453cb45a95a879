//! Operations on a file's or a socket's life rather than its bytes:
//! `fsync`, `fdatasync`, `fallocate`, `stat`, `shutdown`, and `send_file`
//! (a file to a socket without copying, the `TransmitFile` of this API).
//! Opening a file is [`Port::open`](crate::Port::open).
//!
//! io_uring runs each as its own opcode (`send_file` as two splices through
//! a pipe); the epoll backend runs the ones that cannot be made
//! non-blocking (`fsync`, `fdatasync`, `fallocate`, `stat`, `open`) on its
//! blocking pool, and `shutdown` and `send_file` like a send.

use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::buf::Buffers;
use crate::core::Token;
use crate::driver::{OpKind, Splice};
use crate::error::{invalid_input, Rejected};
use crate::Handle;

impl<C: Send + 'static> Handle<C> {
    /// Flushes the file's data and metadata to the device (`fsync(2)`);
    /// the packet's result is `Ok(0)`.
    pub fn fsync(&self, context: C) -> Result<Token, Rejected<C>> {
        self.issue(
            OpKind::Fsync { data_only: false },
            0,
            Buffers::None,
            context,
        )
    }

    /// Flushes the file's data, and only the metadata needed to read it
    /// back (`fdatasync(2)`).
    pub fn fdatasync(&self, context: C) -> Result<Token, Rejected<C>> {
        self.issue(OpKind::Fsync { data_only: true }, 0, Buffers::None, context)
    }

    /// Allocates (or, with a `mode` of `libc::FALLOC_FL_*` flags, punches
    /// or zeroes) `len` bytes at `offset` (`fallocate(2)`); `mode` 0
    /// reserves the space and extends the file if needed. Refused at once
    /// with `InvalidInput` for a zero `len` or a range past `i64::MAX`.
    pub fn fallocate(
        &self,
        mode: i32,
        offset: u64,
        len: u64,
        context: C,
    ) -> Result<Token, Rejected<C>> {
        if len == 0
            || offset
                .checked_add(len)
                .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(Rejected::new(
                invalid_input(format!(
                    "fallocate of {len} bytes at {offset}: an empty or out-of-range span"
                )),
                context,
                Buffers::None,
            ));
        }
        self.issue(
            OpKind::Fallocate { mode, len },
            offset,
            Buffers::None,
            context,
        )
    }

    /// Reads the fd's metadata (`statx(2)`); take it from the packet with
    /// [`Packet::stat`](crate::Packet::stat).
    ///
    /// ```
    /// use completion_port::Port;
    /// # fn main() -> std::io::Result<()> {
    /// let mut file = tempfile::tempfile()?;
    /// std::io::Write::write_all(&mut file, b"twelve bytes")?;
    /// let port = Port::<()>::new(0)?;
    /// let f = port.associate(file, 0)?;
    /// f.stat(())?;
    /// let p = port.get(None)?;
    /// let st = p.stat().expect("a stat packet");
    /// assert_eq!(st.size, 12);
    /// assert!(st.is_file());
    /// # Ok(()) }
    /// ```
    pub fn stat(&self, context: C) -> Result<Token, Rejected<C>> {
        self.issue(OpKind::Stat, 0, Buffers::None, context)
    }

    /// Shuts down the reading side, the writing side, or both, of this
    /// socket (`shutdown(2)`). A shutdown of the writing side comes after
    /// the sends issued before it: the peer reads them all, then end of
    /// file.
    pub fn shutdown(&self, how: Shutdown, context: C) -> Result<Token, Rejected<C>> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        self.issue(OpKind::Shutdown { how }, 0, Buffers::None, context)
    }

    /// Sends `len` bytes of `file` from `offset` on this socket without
    /// copying them through user space — the `TransmitFile` of this API.
    /// The packet comes once they are all sent (`Ok(len)`), or once the
    /// file ended (`Ok` with fewer), or with the error that stopped it. In
    /// order with the other sends on this socket; `file` stays open until
    /// the packet. Refused at once with `InvalidInput` for a span past
    /// `i64::MAX`, and with the OS error when no pipe can be made.
    ///
    /// It moves the bytes through a pipe with `splice(2)`: on io_uring as
    /// a chain of splices in the kernel, on epoll as non-blocking splices
    /// on writability.
    ///
    /// ```
    /// use completion_port::Port;
    /// use std::io::{Read, Write};
    /// # fn main() -> std::io::Result<()> {
    /// let mut file = tempfile::tempfile()?;
    /// file.write_all(&vec![b'x'; 300_000])?;
    /// let port = Port::<()>::new(0)?;
    /// let file = port.associate(file, 1)?;
    /// let (sock, mut peer) = std::os::unix::net::UnixStream::pair()?;
    /// let sock = port.associate(sock, 2)?;
    /// sock.send_file(&file, 1000, 200_000, ())?;
    /// let reader = std::thread::spawn(move || {
    ///     let mut got = vec![0u8; 200_000];
    ///     peer.read_exact(&mut got).map(|_| got)
    /// });
    /// assert_eq!(port.get(None)?.bytes(), 200_000);
    /// assert!(reader.join().unwrap()?.iter().all(|&b| b == b'x'));
    /// # Ok(()) }
    /// ```
    pub fn send_file(
        &self,
        file: &Handle<C>,
        offset: u64,
        len: u64,
        context: C,
    ) -> Result<Token, Rejected<C>> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(Rejected::new(
                invalid_input(format!(
                    "send_file of {len} bytes at {offset}: past the largest file offset"
                )),
                context,
                Buffers::None,
            ));
        }
        let pipe = match pipe() {
            Ok(p) => p,
            Err(e) => return Err(Rejected::new(e, context, Buffers::None)),
        };
        let mut rec = self.new_record(OpKind::SendFile, Buffers::None, context);
        rec.io.offset = offset;
        rec.io.whole = true;
        rec.io.extra().splice = Some(Splice {
            pipe,
            src: file.owner().raw(),
            len,
            in_pipe: 0,
            draining: false,
            finished: false,
        });
        rec.also = Some(file.owner().clone());
        self.issue_record(rec)
    }
}

/// A pipe for `send_file`: `[read end, write end]`.
fn pipe() -> std::io::Result<[OwnedFd; 2]> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are new and ours.
    Ok(unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] })
}

/// How [`Port::open`](crate::Port::open) opens a file: a small
/// `std::fs::OpenOptions` whose flags the port can read.
///
/// ```
/// use completion_port::OpenOptions;
/// let read = OpenOptions::read();
/// let log = OpenOptions::write().create(true).append(true);
/// let new = OpenOptions::write().create_new(true).mode(0o600);
/// # let _ = (read, log, new);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    flags: i32,
    mode: u32,
}

impl OpenOptions {
    /// Read only.
    pub fn read() -> OpenOptions {
        OpenOptions {
            flags: libc::O_RDONLY,
            mode: 0o666,
        }
    }

    /// Write only.
    pub fn write() -> OpenOptions {
        OpenOptions {
            flags: libc::O_WRONLY,
            mode: 0o666,
        }
    }

    /// Read and write.
    pub fn read_write() -> OpenOptions {
        OpenOptions {
            flags: libc::O_RDWR,
            mode: 0o666,
        }
    }

    fn flag(mut self, flag: i32, on: bool) -> OpenOptions {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
        self
    }

    /// Creates the file if it does not exist (`O_CREAT`).
    pub fn create(self, on: bool) -> OpenOptions {
        self.flag(libc::O_CREAT, on)
    }

    /// Creates the file, failing if it exists (`O_CREAT | O_EXCL`).
    pub fn create_new(self, on: bool) -> OpenOptions {
        self.flag(libc::O_CREAT | libc::O_EXCL, on)
    }

    /// Truncates it to 0 bytes (`O_TRUNC`).
    pub fn truncate(self, on: bool) -> OpenOptions {
        self.flag(libc::O_TRUNC, on)
    }

    /// Writes go to its end (`O_APPEND`).
    pub fn append(self, on: bool) -> OpenOptions {
        self.flag(libc::O_APPEND, on)
    }

    /// Bypasses the page cache (`O_DIRECT`: aligned buffers, offsets and
    /// lengths; see [`Buf::aligned`](crate::Buf::aligned)).
    pub fn direct(self, on: bool) -> OpenOptions {
        self.flag(libc::O_DIRECT, on)
    }

    /// Permission bits of a file it creates (before the umask; default
    /// `0o666`).
    pub fn mode(mut self, mode: u32) -> OpenOptions {
        self.mode = mode;
        self
    }

    pub(crate) fn flags(&self) -> (i32, u32) {
        (self.flags, self.mode)
    }
}
