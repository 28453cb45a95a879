//! Multishot accept behind [`Handle::accept`](crate::Handle::accept)
//! (io_uring only; opt-in, see `PortBuilder::multishot_accept`).
//!
//! Without it every accept operation is one `IORING_OP_ACCEPT` request,
//! armed on the listener's wait queue, woken by one connection. With it,
//! a listener keeps one `IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT`
//! (Linux 5.19) armed while accepts wait, and each of its CQEs carries a
//! new connection: the kernel arms one request for many connections.
//! The accept operations themselves stay in user space:
//!
//! - an accept op that finds a connection in the listener's queue takes it
//!   at once ([`Submitted::Done`]: its packet is built by the core);
//! - otherwise it waits in the listener's `waiting` list (FIFO), and the
//!   multishot is armed if none is;
//! - a connection from a multishot CQE goes to the oldest waiting op
//!   (reported as that op's [`Completion`] with the fd as its result), or,
//!   with no op waiting, into the queue — at most [`QUEUE_MAX`] of them:
//!   the queue reaching that cancels the multishot and the kernel's backlog
//!   holds the rest until an accept empties the queue and arms it again.
//!
//! The kernel's multishot accept takes no address buffer, so the peer's
//! address ([`Accepted::peer`](crate::Accepted)) is read with
//! `getpeername(2)` when a connection is handed to its op (a peer that has
//! already reset the connection leaves it empty: family `AF_UNSPEC`).
//!
//! An accept with a time-out (`Handle::with_timeout`) takes a queued
//! connection if there is one (the CQ is drained first, so one the
//! multishot already took counts), and otherwise is submitted as a plain
//! single-shot accept with its linked time-out (`op.rs`): the kernel ends
//! it at its deadline. Both kinds may be armed on one listener; each
//! connection still reaches exactly one of them. The one difference from
//! the single-shot path: a connection that arrives while a multishot is
//! armed and no plain accept waits is queued for the next accept, so a
//! timed accept pending then may still time out — the connection is not
//! lost, the next accept takes it.
//!
//! The epoll backend accepts on readiness (`epoll/fd.rs`): `accept4(2)`
//! once the listener is readable, one connection per accept op; this knob
//! does not change it.
//!
//! # Invariants
//! - An accept op in `waiting` is owned by this module: it leaves it
//!   exactly once — handed a connection or a real error by a CQE
//!   ([`Ring::accept_cqe`]), or ended with `-ECANCELED` by a cancel, the
//!   handle's close or the port's shutdown — and is reported then.
//! - Every connection fd a multishot CQE carries is owned from that CQE
//!   on: given to one op, kept in `ready`, or closed (listener closed).
//!   `ready` is closed when the handle closes, the port shuts down, or
//!   the listener's state is dropped.
//! - `armed` names the multishot whose final CQE (no `IORING_CQE_F_MORE`)
//!   has not come; while it has not, `live` holds the listener under that
//!   id (its `user_data` is [`TAG`] plus the id, never an op's address), so
//!   the state outlives the fd's own (`FdState`), which may be dropped
//!   first.
//! - While `waiting` is not empty, a multishot is armed or the listener is
//!   in `todo` to be re-armed: a multishot that ends (an error, a cancel,
//!   or the exit of the thread that submitted it: io_uring cancels a
//!   thread's requests when it exits) is re-armed by the next drain of the
//!   CQ ([`Ring::settle_accepts`]). A real error (`EMFILE`, `EINVAL`, …)
//!   first ends the oldest waiting op with it, as a single-shot accept
//!   would have ended.
//! - A multishot is armed (its SQE pushed) only under the SQ lock with
//!   `closed` false: `close_fd` sets `closed` under the SQ lock before the
//!   handle's fd can be closed, so the fd number in the SQE is the
//!   listener's.
//! - Locks: the SQ lock, then the CQ lock, then one listener's `st`;
//!   `live` and `todo` are taken last and alone. Nothing is pushed to the
//!   SQ while `st` is held (a full SQ drains the CQ, which takes `st`).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types};
use parking_lot::Mutex;

use super::{Ring, CANCEL};
use crate::driver::{Completion, FdRef, OpIo, OpKind, OpPtr, Submitted};

/// Tag of a multishot accept's `user_data`: bit 62, plus the multishot's id
/// (below 2^40). Never a record's address (user-space addresses are below
/// 2^57), a timer tick's (bit 63) or one of the ring's reserved values.
pub(super) const TAG: u64 = 1 << 62;
const ID_MASK: u64 = (1 << 40) - 1;

/// Most connections a listener keeps accepted ahead of its accept ops.
pub(crate) const QUEUE_MAX: usize = 32;

/// Whether `user_data` is a multishot accept's.
pub(super) fn is_accept(user_data: u64) -> bool {
    user_data & !ID_MASK == TAG
}

/// One listener's multishot state (`FdState::uring`, and `live` while a
/// multishot is armed).
pub(crate) struct Listener {
    fd: RawFd,
    st: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Accept ops waiting for a connection, oldest first.
    waiting: VecDeque<OpPtr>,
    /// Connections accepted before any op asked, oldest first.
    ready: VecDeque<OwnedFd>,
    /// The armed multishot's id (its final CQE not seen yet).
    armed: Option<u64>,
    /// A cancel was requested for `armed`.
    cancelling: bool,
    /// The handle closed (or the port shut down): no more arming; new
    /// connections are closed.
    closed: bool,
}

/// The ring's multishot accepts.
pub(super) struct Accepts {
    /// `PortBuilder::multishot_accept`.
    enabled: bool,
    /// Armed multishots by id (module docs).
    live: Mutex<HashMap<u64, Arc<Listener>>>,
    next: AtomicU64,
    /// Listeners to re-arm or whose multishot to cancel.
    todo: Mutex<Vec<Arc<Listener>>>,
    /// `todo` is not empty.
    pending: AtomicBool,
}

impl Accepts {
    pub(super) fn new(enabled: bool) -> Accepts {
        Accepts {
            enabled,
            live: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            todo: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
        }
    }

    /// Marks a multishot armed for `l` and returns its SQE. The caller
    /// pushes it (after releasing `st`) under the SQ lock.
    fn arm(&self, l: &Arc<Listener>, st: &mut State) -> squeue::Entry {
        let id = self.next.fetch_add(1, Ordering::Relaxed) & ID_MASK;
        st.armed = Some(id);
        st.cancelling = false;
        self.live.lock().insert(id, l.clone());
        opcode::AcceptMulti::new(types::Fd(l.fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(TAG | id)
    }

    /// Undoes [`arm`](Self::arm) when its SQE could not be pushed.
    fn disarm(&self, st: &mut State, id: u64) {
        if st.armed == Some(id) {
            st.armed = None;
        }
        self.live.lock().remove(&id);
    }

    fn defer(&self, l: Arc<Listener>) {
        self.todo.lock().push(l);
        self.pending.store(true, Ordering::Release);
    }
}

/// The cancel request for multishot `id`.
fn cancel_entry(id: u64) -> squeue::Entry {
    opcode::AsyncCancel2::new(types::CancelBuilder::user_data(TAG | id))
        .build()
        .user_data(CANCEL)
}

/// Hands connection `fd` to `op`: fills in the peer's address (the
/// multishot has no address buffer) and returns the op's raw result.
fn hand_over(io: &mut OpIo, fd: OwnedFd) -> i32 {
    let fd = fd.into_raw_fd();
    let ex = io.extra();
    ex.addr_len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` has `addr_len` bytes of room; `fd` is a socket we own.
    let r = unsafe {
        libc::getpeername(
            fd,
            (&mut ex.addr as *mut libc::sockaddr_storage).cast(),
            &mut ex.addr_len,
        )
    };
    if r != 0 {
        ex.addr_len = 0;
    }
    fd
}

/// Ends every op in `waiting` with `-ECANCELED`.
fn cancel_waiting(st: &mut State, spill: &mut Vec<Completion>) {
    spill.extend(st.waiting.drain(..).map(|op| Completion {
        op,
        res: -libc::ECANCELED,
    }));
}

impl Ring {
    /// Takes an accept op when multishot accept is on: `None` sends it down
    /// the single-shot path (it has a time-out and no connection is
    /// queued). Called with the SQ lock held (`closed` false).
    pub(super) fn submit_accept(
        &self,
        op: OpPtr,
        defer: bool,
        spill: &mut Vec<Completion>,
    ) -> Option<io::Result<Submitted>> {
        if !self.accepts.enabled {
            return None;
        }
        // SAFETY: the caller hands us the op (module docs of `driver`).
        let io = unsafe { op.op() };
        let fd = io.fd;
        let l = fd
            .state()
            .uring_accept
            .get_or_init(|| Arc::new(Listener::new(fd.raw)));
        let mut st = l.st.lock();
        if st.ready.is_empty() && st.armed.is_some() && io.deadline.is_some() {
            // A connection the multishot took may wait in the CQ: collect
            // it first, so the timed accept takes it rather than waiting.
            drop(st);
            self.drain_cq_keeping_wake(spill);
            st = l.st.lock();
        }
        if let Some(c) = st.ready.pop_front() {
            drop(st);
            return Some(Ok(Submitted::Done(hand_over(io, c))));
        }
        if io.deadline.is_some() {
            return None;
        }
        st.waiting.push_back(op);
        if st.armed.is_some() {
            return Some(Ok(Submitted::Queued));
        }
        let e = self.accepts.arm(l, &mut st);
        drop(st);
        // SAFETY: the multishot references no memory; we hold the SQ lock.
        if let Err(err) = unsafe { self.push(&e, spill) } {
            let mut st = l.st.lock();
            self.accepts.disarm(&mut st, e.get_user_data() & ID_MASK);
            let at = st.waiting.iter().position(|&w| w == op);
            let mine = at.and_then(|i| st.waiting.remove(i)).is_some();
            drop(st);
            // Not found: a CQE already reported it (its result stands).
            return Some(if mine {
                Err(err)
            } else {
                Ok(Submitted::Queued)
            });
        }
        if !defer {
            if let Err(e) = self.enter_submit(spill) {
                // The SQE stays in the SQ and goes with the next submission.
                tracing::warn!("io_uring: submitting a multishot accept failed: {e}");
            }
        }
        Some(Ok(Submitted::Queued))
    }

    /// A multishot accept's CQE (under the CQ lock).
    pub(super) fn accept_cqe(
        &self,
        user_data: u64,
        res: i32,
        flags: u32,
        out: &mut Vec<Completion>,
    ) {
        let more = cqueue::more(flags);
        let id = user_data & ID_MASK;
        let l = if more {
            self.accepts.live.lock().get(&id).cloned()
        } else {
            self.accepts.live.lock().remove(&id)
        };
        let conn = (res >= 0).then(|| {
            // SAFETY: a successful accept returns a new fd nobody else owns.
            unsafe { OwnedFd::from_raw_fd(res) }
        });
        let Some(l) = l else {
            // Every armed id is in `live` until its final CQE; were one not,
            // its connection is closed rather than leaked.
            return;
        };
        let mut st = l.st.lock();
        let mut act = false;
        if let Some(conn) = conn {
            if st.closed {
                drop(conn);
            } else if let Some(op) = st.waiting.pop_front() {
                // SAFETY: ops in `waiting` are ours (module invariants).
                let res = hand_over(unsafe { op.op() }, conn);
                out.push(Completion { op, res });
            } else {
                st.ready.push_back(conn);
                act = more && st.ready.len() >= QUEUE_MAX && !st.cancelling;
            }
        } else if !more && res != -libc::ECANCELED {
            // A real error ends the oldest waiting op, as it would have
            // ended a single-shot accept.
            if let Some(op) = st.waiting.pop_front() {
                out.push(Completion { op, res });
            }
        }
        if !more {
            if st.armed == Some(id) {
                st.armed = None;
                st.cancelling = false;
            }
            act |= !st.waiting.is_empty() && !st.closed;
        }
        drop(st);
        if act {
            self.accepts.defer(l);
        }
    }

    /// Re-arms the multishots that ended while ops wait, and cancels those
    /// whose queue is full (after a drain, with none of the ring's locks).
    pub(super) fn settle_accepts(&self, spill: &mut Vec<Completion>) {
        if !self.accepts.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let closed = self.sq.lock();
        let todo = mem::take(&mut *self.accepts.todo.lock());
        if *closed {
            return; // `shutdown` ended every waiting op
        }
        let mut pushed = false;
        for l in todo {
            let e = {
                let mut st = l.st.lock();
                match st.armed {
                    _ if st.closed => None,
                    Some(id) if st.ready.len() >= QUEUE_MAX && !st.cancelling => {
                        st.cancelling = true;
                        Some(cancel_entry(id))
                    }
                    None if !st.waiting.is_empty() => Some(self.accepts.arm(&l, &mut st)),
                    _ => None,
                }
            };
            let Some(e) = e else { continue };
            // SAFETY: neither entry references memory; we hold the SQ lock.
            match unsafe { self.push(&e, spill) } {
                Ok(()) => pushed = true,
                Err(err) => {
                    tracing::warn!("io_uring: re-arming a multishot accept failed: {err}");
                    if is_accept(e.get_user_data()) {
                        self.accepts
                            .disarm(&mut l.st.lock(), e.get_user_data() & ID_MASK);
                    }
                    // Tried again at the next drain.
                    self.accepts.defer(l);
                }
            }
        }
        if pushed {
            if let Err(e) = self.enter_submit(spill) {
                tracing::warn!("io_uring: submitting a multishot accept failed: {e}");
            }
        }
    }

    /// The cancel side: ends the `targets` waiting in user space with
    /// `-ECANCELED` (into `spill`) and returns the others (in the kernel, or
    /// already reported). With `all` the multishot is cancelled too; the
    /// queued connections stay for the next accept, as the kernel's
    /// backlog would keep them. Returns whether a cancel SQE was pushed.
    /// Called with the SQ lock held (`closed` false).
    pub(super) fn cancel_accepts(
        &self,
        fd: FdRef,
        targets: &mut Vec<OpPtr>,
        all: bool,
        spill: &mut Vec<Completion>,
    ) -> io::Result<bool> {
        let Some(l) = fd.state().uring_accept.get() else {
            return Ok(false);
        };
        let cancel = {
            let mut st = l.st.lock();
            targets.retain(|&t| {
                // SAFETY: every target is alive (the caller holds its fd's
                // in-flight lock).
                if unsafe { t.kind() } != OpKind::Accept {
                    return true;
                }
                match st.waiting.iter().position(|&w| w == t) {
                    Some(i) => {
                        st.waiting.remove(i);
                        spill.push(Completion {
                            op: t,
                            res: -libc::ECANCELED,
                        });
                        false
                    }
                    None => true,
                }
            });
            if all {
                cancel_waiting(&mut st, spill);
            }
            match st.armed {
                Some(id) if all && !st.cancelling => {
                    st.cancelling = true;
                    Some(cancel_entry(id))
                }
                _ => None,
            }
        };
        let Some(e) = cancel else { return Ok(false) };
        // SAFETY: a cancel request references no memory; we hold the SQ lock.
        unsafe { self.push(&e, spill)? };
        Ok(true)
    }

    /// The handle closed: no more arming, the multishot cancelled, the
    /// queued connections closed (its ops were cancelled just before).
    pub(super) fn close_accepts(&self, fd: FdRef, spill: &mut Vec<Completion>) {
        let Some(l) = fd.state().uring_accept.get() else {
            return;
        };
        let closed = self.sq.lock();
        let (ready, cancel) = {
            let mut st = l.st.lock();
            st.closed = true;
            cancel_waiting(&mut st, spill);
            let cancel = match st.armed {
                Some(id) if !st.cancelling => {
                    st.cancelling = true;
                    Some(cancel_entry(id))
                }
                _ => None,
            };
            (mem::take(&mut st.ready), cancel)
        };
        drop(ready);
        let Some(e) = cancel.filter(|_| !*closed) else {
            return; // after `shutdown`, whose cancel-everything ends it
        };
        // SAFETY: a cancel request references no memory; we hold the SQ lock.
        let r = unsafe { self.push(&e, spill) }.and_then(|()| self.enter_submit(spill));
        if let Err(e) = r {
            tracing::warn!("io_uring: cancelling a closed listener's multishot accept failed: {e}");
        }
        // The cancel ran inside the submission: its final CQE, and any
        // connection taken before it, are in the CQ. Collected now (and
        // closed, the listener being closed), not at the next reap, which
        // may be a long way off on an idle port.
        self.drain_cq_keeping_wake(spill);
    }

    /// Drains the CQ into `spill` with the SQ lock held; a wake-up it
    /// consumes is sent again (it was meant for the leader).
    fn drain_cq_keeping_wake(&self, spill: &mut Vec<Completion>) {
        if !self.drain_cq(spill).0 {
            return;
        }
        let nop = opcode::Nop::new().build().user_data(super::WAKE);
        // SAFETY: a NOP references no memory; we hold the SQ lock.
        let r = unsafe { self.push(&nop, spill) }.and_then(|()| self.enter_submit(spill));
        if let Err(e) = r {
            tracing::warn!("io_uring: could not wake the waiting thread: {e}");
        }
    }

    /// The port shuts down (SQ lock held): every waiting accept op ends
    /// with `-ECANCELED`, queued connections are closed, and nothing is
    /// armed again. The multishots go with `shutdown`'s cancel-everything.
    pub(super) fn shutdown_accepts(&self, spill: &mut Vec<Completion>) {
        let mut all: Vec<Arc<Listener>> = self.accepts.live.lock().values().cloned().collect();
        all.append(&mut self.accepts.todo.lock());
        for l in all {
            let ready = {
                let mut st = l.st.lock();
                st.closed = true;
                cancel_waiting(&mut st, spill);
                mem::take(&mut st.ready)
            };
            drop(ready);
        }
    }

    /// The ring is being dropped: waits (briefly) for the final CQEs of the
    /// multishots still armed, so the connections they carry are closed,
    /// not leaked. `shutdown` already asked the kernel to cancel them.
    pub(super) fn finish_accepts(&self) {
        if self.accepts.live.lock().is_empty() {
            return;
        }
        {
            let _sq = self.sq.lock();
            let any = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(CANCEL);
            let mut spill = Vec::new();
            // SAFETY: a cancel request references no memory; we hold the SQ lock.
            if unsafe { self.push(&any, &mut spill) }.is_err() {
                return;
            }
        }
        let ts = types::Timespec::new().nsec(10_000_000);
        for _ in 0..100 {
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            // Operations were all reaped before the port let the ring go;
            // anything else here is a tick, a wake or a cancel's CQE.
            let mut out = Vec::new();
            self.drain_cq(&mut out);
            if self.accepts.live.lock().is_empty() {
                return;
            }
        }
        tracing::warn!("io_uring: a multishot accept did not end when its ring closed");
    }
}

impl Listener {
    fn new(fd: RawFd) -> Listener {
        Listener {
            fd,
            st: Mutex::new(State::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_do_not_collide() {
        assert!(is_accept(TAG));
        assert!(is_accept(TAG | ID_MASK));
        for other in [u64::MAX, u64::MAX - 1, u64::MAX - 2, 0x7fff_ffff_f000, 0] {
            assert!(!is_accept(other), "{other:#x}");
        }
        assert!(!super::super::timers::Timers::is_tick(TAG | ID_MASK));
    }
}
