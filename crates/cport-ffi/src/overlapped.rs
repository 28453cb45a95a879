//! OVERLAPPED bookkeeping: the per-operation context the port carries
//! ([`FfiOp`]), the registry of OVERLAPPEDs in flight, and the misuse
//! checks Windows does not make.
//!
//! # The registry
//! Every operation issued with an OVERLAPPED registers its address here
//! until it ends. It answers:
//! - reuse of a pending OVERLAPPED: the second issue is refused with
//!   `ERROR_INVALID_PARAMETER` instead of corrupting the first;
//! - `CancelIoEx(h, ov)`: which token, on which association;
//! - `CancelIo(h)`: which operations the calling thread issued;
//! - `GetOverlappedResult`: which port keeps a packet-less result.
//!
//! Invariant: an entry is removed only by the [`FfiOp`] that owns it (its
//! `id` matches): by [`FfiOp::end`], in the same lock hold as it writes
//! the state into the OVERLAPPED (so no lookup sees it gone yet still
//! pending), or when the context is dropped without ending (its port
//! closed). So the OVERLAPPED is the program's again exactly when
//! `HasOverlappedIoCompleted` says so, as on Windows — even if its packet
//! is still queued (a program that reuses it then gets the pointer back in
//! two packets, as it would on Windows) — and a cancel no longer finds an
//! operation whose state is written. A chained stage (`AcceptEx` with
//! receive data, `ConnectEx` with send data) moves the `id` to the next
//! stage's context, keeping the entry.
//!
//! # Writing into the caller's OVERLAPPED
//! `Internal` and `InternalHigh` are written with atomic stores (the
//! structure is checked to be pointer-aligned at issue), because
//! `GetOverlappedResult` and `HasOverlappedIoCompleted` may read them from
//! other threads while the operation ends.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant};

use completion_port::{Handle, Token};
use parking_lot::{Condvar, Mutex};

use crate::error::ntstatus_from_win32;
use crate::object::Target;
use crate::types::*;

/// The context of one operation: the OVERLAPPED it reports to, and what
/// its completion still needs.
pub(crate) struct FfiOp {
    /// The caller's OVERLAPPED (or, for posts, any value).
    pub(crate) ov: usize,
    /// Registry entry owned by this context (0: none).
    pub(crate) id: u64,
    pub(crate) stage: Stage,
    /// `hEvent`'s low bit was set: no packet; the OVERLAPPED is free once
    /// the operation ends (its context is dropped by the completion hook).
    pub(crate) no_packet: bool,
    /// `(Windows error, bytes)`, once the completion hook wrote them into
    /// the OVERLAPPED (`port::completion_hook`).
    pub(crate) done: Option<(DWORD, DWORD)>,
}

/// What the completion of an operation means.
pub(crate) enum Stage {
    /// `PostQueuedCompletionStatus`: values are passed through untouched.
    Posted,
    /// A read, write, receive, send or connect. `zero` is the error a
    /// 0-byte success stands for (end of file, broken pipe), if any.
    Io { zero: Option<DWORD> },
    /// `AcceptEx`, waiting for the connection.
    Accept(Box<crate::extension::AcceptState>),
    /// `AcceptEx` with receive data, waiting for the first bytes; the
    /// association of the accepted socket's duplicate lives in the
    /// registry entry until then.
    AcceptRecv(crate::accept_live::Ticket),
    /// `ConnectEx` with send data, waiting for the connection.
    Connect(Box<crate::extension::ConnectSend>),
}

impl FfiOp {
    pub(crate) fn posted(ov: LPOVERLAPPED) -> FfiOp {
        FfiOp {
            ov: ov as usize,
            id: 0,
            stage: Stage::Posted,
            no_packet: false,
            done: None,
        }
    }

    pub(crate) fn ov(&self) -> LPOVERLAPPED {
        self.ov as LPOVERLAPPED
    }

    /// **The operation ended for good** (not a stage that goes on): writes
    /// `(error, bytes)` into its OVERLAPPED and signals its event
    /// ([`mark_done`]) — after taking the OVERLAPPED out of the registry
    /// and an `AcceptEx` out of the accepts in flight. On Windows the
    /// OVERLAPPED is the program's again once its state says so: it may be
    /// reused at once (even before the packet is dequeued), and a cancel
    /// that names it finds nothing (`ERROR_NOT_FOUND`).
    ///
    /// # Safety
    /// As [`mark_done`]: the OVERLAPPED is live (it was registered at
    /// issue and is the system's until this returns).
    pub(crate) unsafe fn end(&mut self, error: DWORD, bytes: DWORD) {
        if let Stage::AcceptRecv(_) = self.stage {
            // Drops its ticket: the entry among the accepts in flight.
            self.stage = Stage::Io { zero: None };
        }
        // SAFETY: forwarded.
        unsafe { mark_done_leaving(self.ov(), error, bytes, std::mem::take(&mut self.id)) };
        self.done = Some((error, bytes));
    }
}

impl Drop for FfiOp {
    fn drop(&mut self) {
        if self.id != 0 {
            REGISTRY.remove(self.ov, self.id);
            RESULTS_CHANGED.notify();
        }
    }
}

/// One OVERLAPPED in flight.
pub(crate) struct Pending {
    id: u64,
    /// Token of the operation, once its issue call returned.
    pub(crate) token: Option<Token>,
    /// The handle the operation was issued on (for `AcceptEx` with receive
    /// data, the accepted socket's, once the receive is issued).
    pub(crate) handle: Handle<FfiOp>,
    /// The object the caller issued it on (what `CancelIoEx` names).
    pub(crate) target: Arc<Target>,
    /// The port that keeps its result when it queues no packet.
    pub(crate) port: completion_port::Port<FfiOp>,
    /// Issued with `hEvent`'s low bit set: no packet.
    pub(crate) no_packet: bool,
    /// The issuing thread (`CancelIo`).
    pub(crate) thread: u64,
}

const SHARDS: usize = 16;

/// OVERLAPPED address → the operation using it. Sharded to keep issuing
/// threads off each other's locks.
pub(crate) struct Registry {
    shards: [Mutex<HashMap<usize, Pending>>; SHARDS],
}

pub(crate) static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
});

impl Registry {
    fn shard(&self, ov: usize) -> &Mutex<HashMap<usize, Pending>> {
        // OVERLAPPEDs are at least 8-byte aligned and usually come from
        // heap objects: mix the middle bits.
        &self.shards[(ov >> 4 ^ ov >> 9) % SHARDS]
    }

    /// Registers `ov` for a new operation; `None` when it is already in
    /// flight. Returns the entry's id.
    pub(crate) fn insert(
        &self,
        ov: LPOVERLAPPED,
        handle: &Handle<FfiOp>,
        target: &Arc<Target>,
        port: &completion_port::Port<FfiOp>,
        no_packet: bool,
    ) -> Option<u64> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let ov = ov as usize;
        let mut g = self.shard(ov).lock();
        if g.contains_key(&ov) {
            return None;
        }
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        g.insert(
            ov,
            Pending {
                id,
                token: None,
                handle: handle.clone(),
                target: target.clone(),
                port: port.clone(),
                no_packet,
                thread: thread_id(),
            },
        );
        Some(id)
    }

    /// Records the token (and the handle) of entry `id`, if it is still
    /// registered (its operation may already be complete).
    pub(crate) fn set_token(
        &self,
        ov: usize,
        id: u64,
        token: Token,
        handle: Option<Handle<FfiOp>>,
    ) {
        let mut old = None;
        if let Some(p) = self.shard(ov).lock().get_mut(&ov) {
            if p.id == id {
                p.token = Some(token);
                if let Some(h) = handle {
                    old = Some(std::mem::replace(&mut p.handle, h));
                }
            }
        }
        drop(old); // unlocked, as in `remove`
    }

    fn remove(&self, ov: usize, id: u64) {
        self.remove_writing(ov, id, || {});
    }

    /// Removes `ov`'s entry if `id` owns it, and runs `write` (the state
    /// write of the operation ending) in the same lock hold. A caller that
    /// looks the OVERLAPPED up (`GetOverlappedResult`, a reuse, a cancel)
    /// then finds it registered and pending, or gone and ended — never gone
    /// and still pending, which `GetOverlappedResult` must take for an
    /// OVERLAPPED nobody issued (found by the C fuzzer).
    fn remove_writing(&self, ov: usize, id: u64, write: impl FnOnce()) {
        let mut g = self.shard(ov).lock();
        let gone = if g.get(&ov).is_some_and(|p| p.id == id) {
            g.remove(&ov)
        } else {
            None
        };
        write();
        drop(g);
        // Dropped unlocked: the entry may hold the last clone of its port,
        // whose closing drops contexts, which come back here.
        drop(gone);
    }

    /// Runs `f` on the entry of `ov`, if registered.
    pub(crate) fn with<R>(&self, ov: usize, f: impl FnOnce(&Pending) -> R) -> Option<R> {
        self.shard(ov).lock().get(&ov).map(f)
    }

    /// The (handle, token) of every registered operation for which `pick`
    /// is true.
    pub(crate) fn select(&self, pick: impl Fn(&Pending) -> bool) -> Vec<(Handle<FfiOp>, Token)> {
        let mut out = Vec::new();
        for s in &self.shards {
            for p in s.lock().values() {
                if let (true, Some(t)) = (pick(p), p.token) {
                    out.push((p.handle.clone(), t));
                }
            }
        }
        out
    }
}

/// The calling thread's id (for `CancelIo`): the one `GetCurrentThreadId`
/// reports.
pub(crate) fn thread_id() -> u64 {
    crate::win32::thread::current_id() as u64
}

/// Signalled whenever an operation's result was written into its
/// OVERLAPPED, for `GetOverlappedResult(bWait = TRUE)` on operations whose
/// packet another thread dequeues.
pub(crate) struct Changed {
    epoch: Mutex<u64>,
    cv: Condvar,
    waiters: AtomicUsize,
}

pub(crate) static RESULTS_CHANGED: Changed = Changed {
    epoch: Mutex::new(0),
    cv: Condvar::new(),
    waiters: AtomicUsize::new(0),
};

impl Changed {
    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            *self.epoch.lock() += 1;
            self.cv.notify_all();
        }
    }

    /// Waits until `done()` holds or `deadline` passes; returns `done()`.
    pub(crate) fn wait_until(&self, done: impl Fn() -> bool, deadline: Option<Instant>) -> bool {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = self.epoch.lock();
        let ok = loop {
            if done() {
                break true;
            }
            // Bounded slices: a result written by a context whose drop
            // raced with our check is seen on the next slice at the latest.
            let slice = Instant::now() + Duration::from_millis(100);
            let until = deadline.map_or(slice, |d| d.min(slice));
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break done();
            }
            self.cv.wait_until(&mut g, until);
        };
        drop(g);
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        ok
    }
}

/// Views `Internal` / `InternalHigh` of `ov` as atomics.
///
/// # Safety
/// `ov` must point to a live, pointer-aligned OVERLAPPED.
unsafe fn fields<'a>(ov: LPOVERLAPPED) -> (&'a AtomicUsize, &'a AtomicUsize) {
    // SAFETY: the caller guarantees a live aligned OVERLAPPED; `Internal`
    // and `InternalHigh` are `usize`-sized and aligned, and AtomicUsize has
    // the layout of `usize`; all our accesses to them are atomic.
    unsafe {
        (
            &*(std::ptr::addr_of_mut!((*ov).Internal) as *const AtomicUsize),
            &*(std::ptr::addr_of_mut!((*ov).InternalHigh) as *const AtomicUsize),
        )
    }
}

/// Marks `ov` in flight.
///
/// # Safety
/// As [`fields`].
pub(crate) unsafe fn mark_pending(ov: LPOVERLAPPED) {
    // SAFETY: forwarded.
    let (status, bytes) = unsafe { fields(ov) };
    bytes.store(0, Ordering::Relaxed);
    status.store(STATUS_PENDING as usize, Ordering::Release);
}

/// **The operation ended**: everything Windows does to an operation's
/// OVERLAPPED when its I/O ends, in one place — writes `error` (a Windows
/// error, 0 for success) and `n` bytes into `Internal`/`InternalHigh`,
/// then signals the event `hEvent` names (low bit cleared), if it names
/// one of ours.
///
/// Called today where the completion state is written: when the packet is
/// dequeued (`port::deliver`), when a packet-less result is taken
/// (`GetOverlappedResult`), when an operation completes during its call
/// (skip-on-success mode, synchronous transfers). Written so that it can be
/// called from any thread at the moment the I/O ends (a completion hook in
/// the core), which is where Windows does it.
///
/// `hEvent` is read before the state is written: once the state says
/// "done", the caller may free or reuse the OVERLAPPED. Signalling takes
/// only the wait engine's lock (`win32::waitable`) and wakes the threads
/// waiting on the event; it never calls back into a port, so a completion
/// hook may call this under the core's locks.
///
/// # Safety
/// As [`fields`]; the OVERLAPPED is the system's until this returns.
pub(crate) unsafe fn mark_done(ov: LPOVERLAPPED, error: DWORD, n: DWORD) {
    // SAFETY: forwarded.
    unsafe { mark_done_leaving(ov, error, n, 0) }
}

/// [`mark_done`] for an operation whose registry entry is `id` (0: none):
/// the entry goes in the same lock hold as the state is written
/// ([`Registry::remove_writing`]).
///
/// # Safety
/// As [`fields`].
unsafe fn mark_done_leaving(ov: LPOVERLAPPED, error: DWORD, n: DWORD, id: u64) {
    // SAFETY: live and aligned (caller); `hEvent` is plain data the caller
    // set before issuing the operation.
    let event = crate::win32::event::overlapped_event(unsafe { (*ov).hEvent });
    // SAFETY: forwarded (the closure runs before this function returns).
    let write = || unsafe { write_state(ov, error, n) };
    if id == 0 {
        write();
    } else {
        REGISTRY.remove_writing(ov as usize, id, write);
    }
    if let Some(e) = event {
        e.set();
    }
    RESULTS_CHANGED.notify();
}

/// Writes the state of an operation that failed at its call (it never
/// started, so its event is not signalled: the caller learns the error
/// from the call).
///
/// # Safety
/// As [`fields`].
pub(crate) unsafe fn mark_refused(ov: LPOVERLAPPED, error: DWORD) {
    // SAFETY: forwarded.
    unsafe { write_state(ov, error, 0) };
}

/// Resets the event `hEvent` names, if any: an operation does so when it
/// starts, as on Windows, so that the event means "this operation ended".
///
/// # Safety
/// As [`fields`].
pub(crate) unsafe fn reset_event(ov: LPOVERLAPPED) {
    // SAFETY: live and aligned (caller).
    if let Some(e) = crate::win32::event::overlapped_event(unsafe { (*ov).hEvent }) {
        e.reset();
    }
}

/// # Safety
/// As [`fields`].
unsafe fn write_state(ov: LPOVERLAPPED, error: DWORD, n: DWORD) {
    // SAFETY: forwarded.
    let (status, bytes) = unsafe { fields(ov) };
    bytes.store(n as usize, Ordering::Relaxed);
    status.store(ntstatus_from_win32(error), Ordering::Release);
}

/// `(Internal, InternalHigh)` of `ov`.
///
/// # Safety
/// As [`fields`].
pub(crate) unsafe fn read(ov: LPOVERLAPPED) -> (usize, usize) {
    // SAFETY: forwarded.
    let (status, bytes) = unsafe { fields(ov) };
    let s = status.load(Ordering::Acquire);
    (s, bytes.load(Ordering::Relaxed))
}

/// Whether `ov` can hold our atomics (pointer-aligned, non-null).
pub(crate) fn is_usable(ov: LPOVERLAPPED) -> bool {
    !ov.is_null() && (ov as usize) % std::mem::align_of::<OVERLAPPED>() == 0
}

/// Whether `hEvent`'s low bit asks for no packet (windows-semantics §3.14).
///
/// # Safety
/// As [`fields`].
pub(crate) unsafe fn wants_no_packet(ov: LPOVERLAPPED) -> bool {
    // SAFETY: `ov` is live and aligned (caller); `hEvent` is a plain read
    // of a field the caller set before the call.
    unsafe { (*ov).hEvent as usize & 1 == 1 }
}

/// The file position in `ov` (`OffsetHigh:Offset`).
///
/// # Safety
/// As [`fields`].
pub(crate) unsafe fn offset(ov: LPOVERLAPPED) -> u64 {
    // SAFETY: as `wants_no_packet`; the union's `s` view is plain data.
    let s = unsafe { (*ov).u.s };
    (s.OffsetHigh as u64) << 32 | s.Offset as u64
}

/// What to do about an OVERLAPPED on the calling thread's stack (spec
/// §3.12's classic mistake): `Err(())` to refuse it (`CPORT_STRICT=1`),
/// after a one-time warning otherwise.
pub(crate) fn check_stack(ov: LPOVERLAPPED) -> Result<(), ()> {
    if !on_my_stack(ov as usize) {
        return Ok(());
    }
    static STRICT: OnceLock<bool> = OnceLock::new();
    static WARNED: AtomicBool = AtomicBool::new(false);
    let strict = *STRICT.get_or_init(|| std::env::var("CPORT_STRICT").is_ok_and(|v| v == "1"));
    if strict {
        return Err(());
    }
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "cport: warning: OVERLAPPED at {ov:p} lies on the calling thread's stack; it must stay \
             valid until its packet is dequeued (set CPORT_STRICT=1 to refuse such operations)"
        );
    }
    Ok(())
}

/// Whether `addr` lies in the calling thread's stack.
fn on_my_stack(addr: usize) -> bool {
    thread_local!(static STACK: Cell<Option<(usize, usize)>> = const { Cell::new(None) });
    let range = STACK.with(|s| {
        if s.get().is_none() {
            s.set(stack_range());
        }
        s.get()
    });
    range.is_some_and(|(lo, hi)| (lo..hi).contains(&addr))
}

fn stack_range() -> Option<(usize, usize)> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `pthread_getattr_np` initialises `attr` on success, which we
    // then read and destroy; on failure we never read it.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut base: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut base, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        (rc == 0).then_some((base as usize, base as usize + size))
    }
}
