//! Registered (fixed) files: associated fds installed in the ring's file
//! table, so their operations skip the kernel's per-operation fd lookup.
//!
//! An SQE that names a raw fd makes the kernel look the number up in the
//! process's fd table and take (then drop) a reference on the file, an
//! atomic operation on a shared counter when the process has several
//! threads. An SQE flagged `IOSQE_FIXED_FILE` names a slot of the ring's
//! own table instead, whose file reference was taken once, when the slot
//! was filled.
//!
//! # Lifecycle of a slot
//! - **Open**: the ring registers a sparse table of
//!   [`Config::fixed_files`](crate::driver::Config) slots
//!   (`IORING_REGISTER_FILES2` with `IORING_RSRC_REGISTER_SPARSE`, Linux
//!   5.19), clamped to the open-file limit (`RLIMIT_NOFILE`, which the
//!   kernel enforces). 0, or a kernel that refuses, means no table: every
//!   SQE names the raw fd, as before.
//! - **Install**: the first operation on an fd that names it
//!   ([`names_fd`]) takes a free slot and fills it with one
//!   `IORING_REGISTER_FILES_UPDATE` call, before the operation's SQE is
//!   built. When no slot is free, or the call fails, the fd keeps using its
//!   raw number for life: never an error, only the lookup saved is lost.
//! - **Release**: the slot is emptied (another `FILES_UPDATE`, to -1) and
//!   put back on the free list when the fd's [`FdState`] is dropped, which
//!   the core does when the handle's last clone *and* the last operation
//!   record naming the fd are gone, and before it closes the fd. The table
//!   holds its own reference on the file, so the release must come before
//!   the fd's close for the close to end the connection (a peer waiting for
//!   end of file sees it then, as without the table).
//!
//! # Why a released slot cannot be named by a stale SQE
//! A slot is reused only after its release, and released only when no
//! operation record of its fd exists. Every SQE that names a slot belongs
//! to such a record (the op's own SQE, pushed by `submit` or by the
//! resubmission of an orphan, which the core does while it holds the
//! record), and a record is gone only after its CQE was reaped, so after
//! the kernel consumed that SQE and resolved the slot into a file (the
//! request then holds its own reference: emptying the slot later does not
//! pull the file from under it). A deferred SQE still in the SQ, and the
//! one of an op whose CQE is still coming, keep their record, so their
//! slot, alive. A linked `LINK_TIMEOUT` names no file. The one SQE that
//! names a slot without a record is a cancel-by-fd
//! ([`Ring::cancel`](super::Ring) with `all`), pushed under the fd's
//! in-flight lock (so the fd's owner, and the slot, are alive) and
//! submitted before `cancel` returns. (Were that submission to fail, the
//! cancel could stay in the SQ past the release, as a raw-fd cancel could
//! past the fd's close and the number's reuse; the kernel matches a cancel
//! by file, so it would then cancel nothing or the new file's operations.
//! Only kernel resource errors are left at that point.)
//!
//! # Which operations use their slot
//! Those whose opcode takes the fd as the file it works on: reads, writes,
//! receives, sends (zero-copy ones too), the readiness poll, accept,
//! connect, fsync, fallocate, shutdown. Not `statx` (the kernel rejects fixed files for it: its fd is
//! a directory fd for path lookup), not open (no fd), not NOP or timers,
//! and not `send_file`: its two splices name the source file or the pipe
//! ends too, and one lookup per 64 KiB chunk is not worth a second path.
//!
//! # Cost, and why it is off by default
//! Two `io_uring_register` calls per fd (at first use and at release),
//! about 275 ns of CPU together, to save about 18 ns per operation (two
//! atomic reference-count updates and the lookup) on an operation that
//! completes at once. On the echo benchmark the saving did not show (the
//! fd lookup of an uncontended socket is cheap, and the fixed-slot lookup
//! has its own cost), so [`PortBuilder::fixed_files`] defaults to 0.
//! Installing and releasing through `IORING_OP_FILES_UPDATE` entries would
//! halve the 275 ns, but a failed install would then surface as the
//! operation's `EBADF` instead of a silent fallback, and the release must
//! still be submitted at once (the table's reference keeps the file open),
//! so it was not built. BENCHMARKS.md, "Registered files", has the
//! measurements.
//!
//! [`PortBuilder::fixed_files`]: crate::PortBuilder::fixed_files
//!
//! # The epoll backend
//! Has no such table: `epoll_ctl` takes the fd number and each operation
//! is a plain system call on it. [`FdState`]'s io_uring part stays empty.
//!
//! [`FdState`]: crate::driver::FdState

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::driver::{FdRef, OpKind};

/// `IORING_REGISTER_FILES_UPDATE`.
const REGISTER_FILES_UPDATE: libc::c_uint = 6;

/// `struct io_uring_files_update`.
#[repr(C)]
struct FilesUpdate {
    offset: u32,
    resv: u32,
    fds: u64,
}

/// A ring's fixed-file table: which slots are free.
pub(super) struct Table {
    /// The ring's fd, valid while `inner.dead` is false (see [`Ring`]'s
    /// `Drop`, which sets it under the lock before the ring is closed).
    ///
    /// [`Ring`]: super::Ring
    ring_fd: RawFd,
    /// The process that opened the ring: a forked child's copy of a slot
    /// must not empty the parent's table (`core/fork.rs`).
    pid: u32,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Released slots, reused first.
    free: Vec<u32>,
    /// Slots `next..size` were never used.
    next: u32,
    size: u32,
    /// The ring is being closed: no more register calls.
    dead: bool,
}

/// The io_uring part of an fd's [`FdState`](crate::driver::FdState): its
/// slot, or `None` if it uses its raw number (no table, table full, or
/// the install failed).
pub(crate) struct FixedFile(Option<Slot>);

struct Slot {
    index: u32,
    table: Weak<Table>,
}

impl Table {
    /// Registers a sparse table of up to `size` slots on the ring `ring_fd`;
    /// `None` when `size` is 0 or the kernel refuses (then every SQE names
    /// the raw fd).
    pub(super) fn open(ring: &io_uring::IoUring, size: u32) -> Option<Arc<Table>> {
        let size = size.min(nofile_limit());
        if size == 0 {
            return None;
        }
        if let Err(e) = ring.submitter().register_files_sparse(size) {
            tracing::debug!("io_uring: no fixed-file table of {size} slots ({e}); using raw fds");
            return None;
        }
        Some(Arc::new(Table {
            ring_fd: std::os::fd::AsRawFd::as_raw_fd(ring),
            pid: std::process::id(),
            inner: Mutex::new(Inner {
                free: Vec::new(),
                next: 0,
                size,
                dead: false,
            }),
        }))
    }

    /// The slot `fd`'s operations name, installing the fd on its first use.
    pub(super) fn slot(self: &Arc<Table>, fd: &FdRef) -> Option<u32> {
        fd.state()
            .uring
            .get_or_init(|| FixedFile(self.install(fd.raw)))
            .0
            .as_ref()
            .map(|s| s.index)
    }

    fn install(self: &Arc<Table>, raw: RawFd) -> Option<Slot> {
        let mut inner = self.inner.lock();
        if inner.dead {
            return None;
        }
        let index = match inner.free.pop() {
            Some(i) => i,
            None if inner.next < inner.size => {
                inner.next += 1;
                inner.next - 1
            }
            None => return None, // full: this fd uses its raw number
        };
        // The lock is held across the call: `ring_fd` is valid while it is
        // and `dead` is false.
        match self.update(index, raw) {
            Ok(()) => Some(Slot {
                index,
                table: Arc::downgrade(self),
            }),
            Err(e) => {
                inner.free.push(index);
                tracing::debug!("io_uring: installing fd {raw} in fixed slot {index}: {e}");
                None
            }
        }
    }

    /// Sets slot `index` to `fd` (-1: empties it). The caller holds the
    /// lock and saw `dead` false.
    fn update(&self, index: u32, fd: RawFd) -> io::Result<()> {
        let fds = [fd];
        let up = FilesUpdate {
            offset: index,
            resv: 0,
            fds: fds.as_ptr() as u64,
        };
        loop {
            // SAFETY: `ring_fd` is an open io_uring (the caller holds the lock
            // with `dead` false); `up` and `fds` outlive the call, which reads
            // one fd from `fds`.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    self.ring_fd,
                    REGISTER_FILES_UPDATE,
                    &up as *const FilesUpdate,
                    1 as libc::c_uint,
                )
            };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// The ring is about to be closed (its table goes with it): no call on
    /// its fd from now on.
    pub(super) fn close(&self) {
        self.inner.lock().dead = true;
    }
}

impl Drop for Slot {
    /// Empties the slot (see the module docs for why no SQE can still name
    /// it) and frees it for another fd.
    fn drop(&mut self) {
        let Some(table) = self.table.upgrade() else {
            return;
        };
        if table.pid != std::process::id() {
            return; // a forked child: the table is the parent's
        }
        let mut inner = table.inner.lock();
        if inner.dead {
            return;
        }
        match table.update(self.index, -1) {
            Ok(()) => inner.free.push(self.index),
            // Lost for reuse (it still holds the file until the ring closes);
            // only kernel resource errors get here.
            Err(e) => tracing::warn!("io_uring: emptying fixed slot {}: {e}", self.index),
        }
    }
}

/// Whether an operation's SQE names its fd as the file it works on, and so
/// may name its slot instead (module docs).
pub(super) fn names_fd(kind: OpKind) -> bool {
    !matches!(
        kind,
        OpKind::Nop | OpKind::Timer | OpKind::Open { .. } | OpKind::Stat | OpKind::SendFile
    )
}

/// The slot an operation's SQE names, if its fd has one and its kind uses
/// it. Installed by [`Table::slot`] at submission.
pub(super) fn slot_of(kind: OpKind, fd: &FdRef) -> Option<u32> {
    if !names_fd(kind) {
        return None;
    }
    installed(fd)
}

/// `fd`'s slot, if it has one.
pub(super) fn installed(fd: &FdRef) -> Option<u32> {
    fd.state().uring.get()?.0.as_ref().map(|s| s.index)
}

/// The soft open-file limit (the kernel refuses a larger table).
fn nofile_limit() -> u32 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    r.rlim_cur.min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::FdState;
    use io_uring::{opcode, types, IoUring};
    use std::os::fd::{AsRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let (r, w) = std::io::pipe().unwrap();
        (r.into(), w.into())
    }

    /// Reads from slot `slot` through the ring: the byte, or `-errno`.
    fn read_fixed(ring: &mut IoUring, slot: u32) -> i32 {
        let mut b = [0u8; 1];
        let e = opcode::Read::new(types::Fixed(slot), b.as_mut_ptr(), 1)
            .build()
            .user_data(1);
        // SAFETY: `b` outlives the wait below, which reaps the read.
        unsafe { ring.submission().push(&e).unwrap() };
        ring.submit_and_wait(1).unwrap();
        let r = ring.completion().next().unwrap().result();
        if r == 1 {
            i32::from(b[0])
        } else {
            r
        }
    }

    #[test]
    fn slots_are_installed_released_and_reused() {
        let mut ring = IoUring::new(8).unwrap();
        let table = Table::open(&ring, 2).expect("a sparse table");
        let pipes: Vec<_> = (0..3).map(|_| pipe()).collect();
        let states: Vec<Box<FdState>> = (0..3).map(|_| Box::default()).collect();
        // SAFETY: each state outlives its `FdRef`s (this test's scope).
        let fd = |i: usize| unsafe { FdRef::new(pipes[i].0.as_raw_fd(), &states[i]) };
        assert_eq!(table.slot(&fd(0)), Some(0));
        assert_eq!(table.slot(&fd(1)), Some(1));
        assert_eq!(table.slot(&fd(2)), None, "full: the raw number");
        assert_eq!(table.slot(&fd(0)), Some(0), "installed once");
        assert_eq!(slot_of(OpKind::Recv, &fd(1)), Some(1));
        assert_eq!(slot_of(OpKind::Stat, &fd(1)), None);
        assert_eq!(slot_of(OpKind::Recv, &fd(2)), None);
        // The kernel reads the installed files through their slots.
        for (i, p) in pipes.iter().enumerate() {
            write_byte(&p.1, b'a' + i as u8);
        }
        assert_eq!(read_fixed(&mut ring, 0), i32::from(b'a'));
        assert_eq!(read_fixed(&mut ring, 1), i32::from(b'b'));
        // Dropping a state empties its slot, and the next fd reuses it.
        let mut states = states;
        drop(states.remove(0));
        assert_eq!(read_fixed(&mut ring, 0), -libc::EBADF);
        let later = FdState::default();
        // SAFETY: `later` outlives the `FdRef`.
        let fd3 = unsafe { FdRef::new(pipes[2].0.as_raw_fd(), &later) };
        assert_eq!(table.slot(&fd3), Some(0));
        assert_eq!(read_fixed(&mut ring, 0), i32::from(b'c'));
        // Once the ring closes, releasing calls nothing.
        table.close();
        drop(later);
        drop(states);
    }

    fn write_byte(fd: &OwnedFd, b: u8) {
        use std::io::Write;
        std::fs::File::from(fd.try_clone().unwrap())
            .write_all(&[b])
            .unwrap();
    }

    #[test]
    fn kinds_that_name_their_fd() {
        assert!(names_fd(OpKind::Recv) && names_fd(OpKind::Accept));
        assert!(names_fd(OpKind::Fsync { data_only: true }));
        for k in [
            OpKind::Nop,
            OpKind::Timer,
            OpKind::Stat,
            OpKind::SendFile,
            OpKind::Open { flags: 0, mode: 0 },
        ] {
            assert!(!names_fd(k), "{k:?}");
        }
    }
}
