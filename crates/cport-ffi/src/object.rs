//! What a `HANDLE` names, and the association of an fd with a port.
//!
//! # Handle values
//! Ports and files opened with `CreateFileA` live in a table and are named
//! by **generation-tagged** values: `0x4350 << 48 | generation << 24 |
//! slot << 2`. Closing one bumps its slot's generation, so a closed or stale
//! value — even after the slot is reused — and a made-up one are refused
//! with `ERROR_INVALID_HANDLE`, never mistaken for another object. The two
//! low bits are clear and ignored when a value is resolved, as Windows does
//! with its handle values (programs tag them: `OVERLAPPED.hEvent | 1`).
//!
//! Any other value from 1 to `INT_MAX` is a plain Linux fd, as Windows code
//! casts a `SOCKET` to `HANDLE`: sockets stay ordinary fds so they work with
//! `bind`, `listen`, `setsockopt`. `NULL` and `INVALID_HANDLE_VALUE` name
//! nothing. An fd closed behind the library's back (with `close` rather
//! than `closesocket`/`CloseHandle`) is noticed when the number is
//! associated again (its inode changed); in between, the number still
//! names the old association — close sockets with `closesocket`.
//!
//! # Association
//! A [`Target`] is one file, socket or pipe the library knows. Associating
//! it gives the port a *duplicate* of its fd (`F_DUPFD_CLOEXEC`), owned by
//! the port's handle: the port closes the duplicate after the last packet,
//! while the caller keeps its own fd. `closesocket`/`CloseHandle` first
//! cancels the operations in flight (each still queues its packet, with
//! `ERROR_OPERATION_ABORTED`), then closes the caller's fd.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use completion_port::{Handle, Port};
use parking_lot::RwLock;

use crate::overlapped::FfiOp;
use crate::types::*;

/// A port, as the C ABI holds it.
pub(crate) struct FfiPort {
    pub(crate) port: Port<FfiOp>,
}

/// How reads and writes on an fd are done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdKind {
    /// Regular file or block device: positioned I/O at the OVERLAPPED's
    /// offset.
    Seekable,
    /// Pipe, FIFO, character device: the offset is ignored.
    Stream,
    /// Socket.
    Socket,
}

/// An fd the library knows: a file from `CreateFileA`, or a plain fd that
/// was associated.
pub(crate) struct Target {
    /// The caller's fd.
    pub(crate) fd: RawFd,
    /// Files from `CreateFileA` own their fd here (closed when the last
    /// reference goes: `CloseHandle` and the operations in flight); plain
    /// fds belong to the caller.
    _owned: Option<OwnedFd>,
    pub(crate) kind: FdKind,
    /// Opened with `FILE_FLAG_OVERLAPPED` (plain fds: always).
    pub(crate) overlapped: bool,
    /// `(st_dev, st_ino)` when the target was made, to notice fd reuse.
    ident: (u64, u64),
    /// The association, once made (at most one, for the target's life).
    pub(crate) assoc: OnceLock<Assoc>,
    /// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` was set.
    pub(crate) skip_on_success: AtomicBool,
    /// `O_ACCMODE` of the fd, so that a read of a write-only file (or the
    /// reverse) fails at the call, as on Windows (windows-semantics §3.13), instead of
    /// in a packet.
    access: i32,
    /// Seen connected once (or not a connection-oriented socket): the
    /// not-connected check of `WSARecv`/`WSASend` is skipped from then on.
    connected: AtomicBool,
}

/// A target's association with a port.
pub(crate) struct Assoc {
    pub(crate) port: Arc<FfiPort>,
    pub(crate) handle: Handle<FfiOp>,
}

impl Target {
    /// Describes `fd` (which must be open).
    pub(crate) fn new(
        fd: RawFd,
        owned: Option<OwnedFd>,
        overlapped: bool,
    ) -> std::io::Result<Target> {
        let st = fstat(fd)?;
        let kind = kind_from_mode(st.st_mode);
        // SAFETY: `fcntl(F_GETFL)` has no memory arguments.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        let access = if flags < 0 {
            libc::O_RDWR
        } else {
            flags & libc::O_ACCMODE
        };
        Ok(Target {
            fd,
            _owned: owned,
            kind,
            overlapped,
            ident: (st.st_dev, st.st_ino),
            assoc: OnceLock::new(),
            skip_on_success: AtomicBool::new(false),
            access,
            connected: AtomicBool::new(kind != FdKind::Socket),
        })
    }

    /// Whether the fd's access mode allows a read (`read`) or a write.
    pub(crate) fn allows(&self, read: bool) -> bool {
        match self.access {
            libc::O_RDONLY => read,
            libc::O_WRONLY => !read,
            _ => true,
        }
    }

    /// False for a stream (or seqpacket) socket that is not connected: a
    /// transfer on it fails at the call with `WSAENOTCONN`, as on Windows
    /// (windows-semantics §3.13), instead of in a packet. Once seen connected, the
    /// answer is cached (later failures, such as a reset, come in packets).
    pub(crate) fn is_connected(&self) -> bool {
        if self.connected.load(Ordering::Relaxed) {
            return true;
        }
        let mut ty: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `ty` and `len` are valid for writes and `len` holds the
        // size of `ty`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut ty as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 && (ty == libc::SOCK_STREAM || ty == libc::SOCK_SEQPACKET) {
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut alen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: `addr` is writable for `alen` bytes.
            let rc = unsafe {
                libc::getpeername(
                    self.fd,
                    (&mut addr as *mut libc::sockaddr_storage).cast(),
                    &mut alen,
                )
            };
            if rc != 0 {
                return crate::error::errno().raw_os_error() != Some(libc::ENOTCONN);
            }
        }
        self.connected.store(true, Ordering::Relaxed);
        true
    }

    /// Associates with `port` under `key`; `ERROR_INVALID_PARAMETER` when
    /// already associated (windows-semantics §2.8).
    pub(crate) fn associate(&self, port: &Arc<FfiPort>, key: usize) -> Result<(), DWORD> {
        if self.assoc.get().is_some() {
            return Err(ERROR_INVALID_PARAMETER);
        }
        // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` has no memory arguments.
        let dup = unsafe { libc::fcntl(self.fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(crate::error::win32_from_io(&crate::error::errno()));
        }
        // SAFETY: `dup` is a new fd nobody else owns.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        let handle = port
            .port
            .associate(dup, key)
            .map_err(|e| crate::error::win32_from_io(&e.error))?;
        if self.skip_on_success.load(Ordering::Relaxed) {
            handle.set_skip_packet_on_success(true);
        }
        let assoc = Assoc {
            port: port.clone(),
            handle,
        };
        // Two racing associations: the loser's handle is closed unused.
        self.assoc.set(assoc).map_err(|lost| {
            lost.handle.close();
            ERROR_INVALID_PARAMETER
        })
    }

    /// Cancels everything in flight and ends the association (the port
    /// closes its duplicate after the last packet); the caller's fd is
    /// closed when the target is dropped (`CreateFileA` files) or by the
    /// caller (`closesocket` closes plain fds itself).
    pub(crate) fn shut(&self) {
        if let Some(a) = self.assoc.get() {
            a.handle.close();
        }
    }

    /// Whether `fd` still names the file this target was made for.
    fn same_file(&self) -> bool {
        fstat(self.fd).is_ok_and(|st| (st.st_dev, st.st_ino) == self.ident)
    }
}

pub(crate) fn kind_from_mode(mode: libc::mode_t) -> FdKind {
    match mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFBLK => FdKind::Seekable,
        libc::S_IFSOCK => FdKind::Socket,
        _ => FdKind::Stream,
    }
}

/// The kind of plain fd `fd`; `ERROR_INVALID_HANDLE` when it is not open.
pub(crate) fn kind_of(fd: RawFd) -> Result<FdKind, DWORD> {
    fstat(fd)
        .map(|st| kind_from_mode(st.st_mode))
        .map_err(|e| crate::error::win32_from_io(&e))
}

fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the right size; read only on
    // success, when the kernel filled it.
    unsafe {
        if libc::fstat(fd, st.as_mut_ptr()) != 0 {
            return Err(crate::error::errno());
        }
        Ok(st.assume_init())
    }
}

/// An object in the handle table.
#[derive(Clone)]
pub(crate) enum Object {
    Port(Arc<FfiPort>),
    File(Arc<Target>),
    /// An event, semaphore or thread of the Win32 companion
    /// (`crate::win32`); closing its handle just drops this reference.
    Waitable(Arc<crate::win32::waitable::Waitable>),
}

const MAGIC: u64 = 0x4350 << 48;
const MAGIC_MASK: u64 = 0xFFFF << 48;
const SLOT_BITS: u32 = 24;
const GEN_MASK: u64 = (1 << 24) - 1;
/// Slot numbers sit above the two low bits, which stay clear, as in
/// Windows' handle values: programs may tag them (`OVERLAPPED.hEvent`'s low
/// bit means "no packet"). So 22 bits of slot number: 4 M objects.
const SLOT_SHIFT: u32 = 2;

struct Slot {
    generation: u64,
    object: Option<Object>,
}

#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

static TABLE: RwLock<Table> = RwLock::new(Table {
    slots: Vec::new(),
    free: Vec::new(),
});

/// Plain fds that were associated (or given a notification mode).
static FDS: OnceLock<RwLock<HashMap<RawFd, Arc<Target>>>> = OnceLock::new();

fn fds() -> &'static RwLock<HashMap<RawFd, Arc<Target>>> {
    FDS.get_or_init(Default::default)
}

/// Puts `object` in the table and returns its tagged handle value;
/// `None` when the table is full (16 M objects).
pub(crate) fn insert(object: Object) -> Option<HANDLE> {
    let mut t = TABLE.write();
    let index = match t.free.pop() {
        Some(i) => i,
        None => {
            if t.slots.len() >= 1 << (SLOT_BITS - SLOT_SHIFT) {
                return None;
            }
            t.slots.push(Slot {
                generation: 1,
                object: None,
            });
            t.slots.len() - 1
        }
    };
    let slot = &mut t.slots[index];
    slot.object = Some(object);
    let value = MAGIC | (slot.generation & GEN_MASK) << SLOT_BITS | (index as u64) << SLOT_SHIFT;
    Some(value as usize as HANDLE)
}

/// What a `HANDLE` value names.
pub(crate) enum Named {
    Object(Object),
    /// A plain fd (not checked for being open).
    Fd(RawFd),
}

fn decode(h: HANDLE) -> Option<(usize, u64)> {
    let v = h as usize as u64;
    (v & MAGIC_MASK == MAGIC).then_some((
        ((v & ((1 << SLOT_BITS) - 1)) >> SLOT_SHIFT) as usize,
        v >> SLOT_BITS & GEN_MASK,
    ))
}

/// Resolves a handle value; `ERROR_INVALID_HANDLE` for a closed, stale or
/// made-up value.
pub(crate) fn resolve(h: HANDLE) -> Result<Named, DWORD> {
    let v = h as usize;
    if let Some((index, generation)) = decode(h) {
        let t = TABLE.read();
        return match t.slots.get(index) {
            Some(s) if s.generation & GEN_MASK == generation => s
                .object
                .clone()
                .map(Named::Object)
                .ok_or(ERROR_INVALID_HANDLE),
            _ => Err(ERROR_INVALID_HANDLE),
        };
    }
    if v == 0 || v > i32::MAX as usize {
        return Err(ERROR_INVALID_HANDLE);
    }
    Ok(Named::Fd(v as RawFd))
}

/// Removes a tagged object from the table (its handle value becomes
/// stale); `None` if `h` names none.
pub(crate) fn remove(h: HANDLE) -> Option<Object> {
    let (index, generation) = decode(h)?;
    let mut t = TABLE.write();
    let slot = t.slots.get_mut(index)?;
    if slot.generation & GEN_MASK != generation || slot.object.is_none() {
        return None;
    }
    let obj = slot.object.take();
    slot.generation += 1;
    t.free.push(index);
    obj
}

/// The port `h` names, or `ERROR_INVALID_HANDLE`.
pub(crate) fn port(h: HANDLE) -> Result<Arc<FfiPort>, DWORD> {
    match resolve(h)? {
        Named::Object(Object::Port(p)) => Ok(p),
        _ => Err(ERROR_INVALID_HANDLE),
    }
}

/// The target a handle names for I/O: a `CreateFileA` file, or a plain fd
/// (known if associated; `None` inside when it never was).
pub(crate) enum Io {
    Known(Arc<Target>),
    Plain(RawFd),
}

pub(crate) fn io_target(h: HANDLE) -> Result<Io, DWORD> {
    match resolve(h)? {
        Named::Object(Object::File(t)) => Ok(Io::Known(t)),
        Named::Object(_) => Err(ERROR_INVALID_HANDLE),
        Named::Fd(fd) => Ok(match fds().read().get(&fd) {
            Some(t) => Io::Known(t.clone()),
            None => Io::Plain(fd),
        }),
    }
}

/// The target for plain fd `fd`, made (and remembered) if needed. An entry
/// whose fd was closed and reused behind our back is replaced.
pub(crate) fn fd_target(fd: RawFd) -> Result<Arc<Target>, DWORD> {
    if let Some(t) = fds().read().get(&fd) {
        if t.same_file() {
            return Ok(t.clone());
        }
    }
    let fresh = Arc::new(Target::new(fd, None, true).map_err(|e| crate::error::win32_from_io(&e))?);
    let mut m = fds().write();
    let stale = match m.get(&fd) {
        Some(t) if t.same_file() => return Ok(t.clone()),
        _ => m.insert(fd, fresh.clone()),
    };
    drop(m);
    drop(stale);
    Ok(fresh)
}

/// The target of any handle that names a file, socket or pipe (made for
/// plain fds).
pub(crate) fn any_target(h: HANDLE) -> Result<Arc<Target>, DWORD> {
    match io_target(h)? {
        Io::Known(t) => Ok(t),
        Io::Plain(fd) => fd_target(fd),
    }
}

/// Forgets plain fd `fd`: cancels its operations and ends its association.
/// The caller closes the fd.
pub(crate) fn forget_fd(fd: RawFd) {
    let t = fds().write().remove(&fd);
    if let Some(t) = t {
        t.shut();
    }
}

impl AsRawFd for Target {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}
