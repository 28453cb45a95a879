//! Waking the leader ([`Engine::wake`](crate::driver::Engine::wake))
//! without a NOP under the SQ lock: the *doorbell*.
//!
//! The leader sleeps in `io_uring_enter(GETEVENTS)` until a CQE arrives. The
//! plain way to wake it is to submit a NOP tagged [`WAKE`]: the SQ lock, a
//! push, an `io_uring_enter`. The doorbell chooses, at open, the cheapest
//! way this kernel offers to post such a CQE:
//!
//! - **`Msg`** (Linux 6.13, `IORING_REGISTER_SEND_MSG_RING`): one
//!   `io_uring_register` call posts a [`WAKE`] CQE straight into the
//!   port's CQ — `IORING_OP_MSG_RING` without a source ring. No SQ lock, no
//!   request, nothing armed. The CQE is the same as the NOP's, so reaping
//!   it is unchanged (a reaper that consumes it reports a swallowed wake).
//! - **`Futex`** (Linux 6.7, `IORING_OP_FUTEX_WAIT`): a `FUTEX_WAIT` on the
//!   doorbell's word is armed in the ring, and `wake` sets the word and
//!   calls `futex(FUTEX_WAKE)`; the kernel completes the armed wait (its
//!   CQE tagged [`FUTEX`]). See "The futex protocol" below.
//! - **`Nop`**: the NOP, on older kernels and whenever the others fail.
//!
//! The environment variable `CPORT_URING_WAKE=auto|msg|futex|nop` forces
//! one (for measuring them against each other; one the kernel lacks falls
//! back to the NOP). What each costs is in BENCHMARKS.md ("Waking the
//! leader").
//!
//! # The futex protocol
//! The word is [`IDLE`], [`RUNG`] or [`OFF`] (never armed again).
//! - `wake`: `IDLE → RUNG` then `FUTEX_WAKE`; already `RUNG`: nothing (the
//!   wake merges into one whose CQE is not yet reaped, so the wait that
//!   reaps it returns after this wake); `OFF`: the NOP.
//! - The armed wait expects `IDLE`: the kernel compares the word when it
//!   takes the entry, so a wake that rang before the entry reached the
//!   kernel fails the compare (`-EAGAIN`) and completes at once; one after
//!   is woken by its `FUTEX_WAKE`. No wake-up is lost between the two.
//! - Whoever reaps the [`FUTEX`] CQE (any thread) resets `RUNG → IDLE` at
//!   once and asks for a re-arm. The leader pushes the new wait just before
//!   it enters the kernel (so its own `io_uring_enter` carries it, and the
//!   kernel completes it on the leader's thread); a reaper that is not the
//!   leader pushes it *and submits it*, since the leader may be asleep in
//!   the kernel with nothing armed. A wake between the reset and the
//!   re-arm rings the word and fails the new wait's compare.
//! - A wait that fails for another reason than a wake, a compare or a
//!   cancel (the thread that armed it exited; the port closed) turns the
//!   doorbell `OFF` (logged once); so does a closed port. Turning it off
//!   sends the NOP if the word was `RUNG`, as that ring went nowhere.
//! - The kernel holds the word's address while a wait is armed: the word is
//!   boxed (the ring moves at open), and dropping the ring cancels the wait
//!   and waits for its CQE before the word is freed (a stale wait would
//!   otherwise steal a `FUTEX_WAKE` meant for whatever reuses the address).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring, Probe};

use super::{Ring, CANCEL, WAKE};
use crate::driver::Completion;

/// `user_data` of the armed `FUTEX_WAIT`.
pub(super) const FUTEX: u64 = u64::MAX - 3;
/// `user_data` of the message the `Msg` probe at open posts (ignored).
const PROBE: u64 = u64::MAX - 4;

/// The futex word: no wake pending.
const IDLE: u32 = 0;
/// The futex word: a wake rang and its CQE is not reaped yet.
const RUNG: u32 = 1;
/// The futex word: the doorbell is off (wakes use the NOP).
const OFF: u32 = 2;

/// `futex2` flags of the wait: a 32-bit word, private to the process.
const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX2_PRIVATE: u32 = 128;
/// Every waker's bitset matches.
const FUTEX_BITSET_MATCH_ANY: u64 = 0xffff_ffff;
/// `io_uring_register` opcode that posts a `MSG_RING` without a ring
/// (Linux 6.13).
const IORING_REGISTER_SEND_MSG_RING: libc::c_long = 31;

const NOP: u8 = 0;
const MSG: u8 = 1;
const FUTEX_BELL: u8 = 2;

/// How the port's ring wakes its leader (module docs).
pub(super) struct Doorbell {
    /// [`NOP`], [`MSG`] or [`FUTEX_BELL`]; `MSG` falls to `NOP` if a send
    /// fails for good.
    kind: AtomicU8,
    /// The ring's fd, the target of `Msg`.
    ring_fd: i32,
    /// The futex word (boxed: the kernel holds its address).
    word: Box<AtomicU32>,
    /// A [`FUTEX`] CQE was reaped: push a new wait.
    rearm: AtomicBool,
    /// A `FUTEX_WAIT` was pushed and its CQE is not reaped yet.
    armed: AtomicBool,
    /// The process that opened the ring: a forked child's drop must not
    /// cancel in the parent's ring.
    pid: u32,
}

impl Doorbell {
    /// Chooses the doorbell for `ring`: the one `CPORT_URING_WAKE` names,
    /// or the cheapest this kernel has (module docs).
    pub(super) fn open(ring: &IoUring) -> Doorbell {
        let want = std::env::var("CPORT_URING_WAKE").unwrap_or_default();
        let bell = Doorbell::with(ring, want.trim());
        tracing::debug!("io_uring: the leader is woken by {}", bell.kind());
        bell
    }

    /// The doorbell `want` (`auto`, `msg`, `futex`, `nop`; empty: auto),
    /// or the NOP when this kernel lacks it.
    pub(super) fn with(ring: &IoUring, want: &str) -> Doorbell {
        let fd = ring.as_raw_fd();
        let futex_ok = || {
            let mut probe = Probe::new();
            ring.submitter().register_probe(&mut probe).is_ok()
                && probe.is_supported(opcode::FutexWait::CODE)
        };
        let kind = match want {
            "futex" if futex_ok() => FUTEX_BELL,
            "msg" if send_msg(fd, PROBE).is_ok() => MSG,
            "" | "auto" if send_msg(fd, PROBE).is_ok() => MSG,
            "" | "auto" if futex_ok() => FUTEX_BELL,
            _ => NOP,
        };
        Doorbell {
            kind: AtomicU8::new(kind),
            ring_fd: fd,
            word: Box::new(AtomicU32::new(if kind == FUTEX_BELL { IDLE } else { OFF })),
            rearm: AtomicBool::new(kind == FUTEX_BELL),
            armed: AtomicBool::new(false),
            pid: std::process::id(),
        }
    }

    /// The doorbell in use: `msg`, `futex` or `nop`.
    pub(super) fn kind(&self) -> &'static str {
        match self.kind.load(Ordering::Relaxed) {
            MSG => "msg",
            FUTEX_BELL => "futex",
            _ => "nop",
        }
    }

    /// Whether `user_data` is the doorbell's.
    pub(super) fn owns(user_data: u64) -> bool {
        user_data == FUTEX || user_data == PROBE
    }

    /// A doorbell CQE was reaped (under the CQ lock). Returns whether it
    /// counts as a wake.
    pub(super) fn reaped(&self, user_data: u64, res: i32) -> bool {
        if user_data != FUTEX {
            return false;
        }
        self.armed.store(false, Ordering::Release);
        if res < 0 && ![libc::EAGAIN, libc::ECANCELED, libc::EINTR].contains(&-res) {
            tracing::warn!(
                "io_uring: the futex wake-up failed ({}); waking with NOPs",
                io::Error::from_raw_os_error(-res)
            );
            self.kind.store(NOP, Ordering::SeqCst);
        }
        // Reset at once: a wake from now on rings again (module docs).
        let _ = self
            .word
            .compare_exchange(RUNG, IDLE, Ordering::SeqCst, Ordering::SeqCst);
        self.rearm.store(true, Ordering::Release);
        true
    }
}

/// Posts a CQE tagged `user_data` into the ring `fd` without a ring of our
/// own (`IORING_REGISTER_SEND_MSG_RING`).
fn send_msg(fd: i32, user_data: u64) -> io::Result<()> {
    let e = opcode::MsgRingData::new(types::Fd(fd), 0, user_data, None).build();
    loop {
        // SAFETY: `e` is a valid SQE (`Entry` is `repr(C)` over it) that the
        // kernel only reads during the call; fd -1 is what this opcode takes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                -1,
                IORING_REGISTER_SEND_MSG_RING,
                (&e as *const io_uring::squeue::Entry).cast::<libc::c_void>(),
                1,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

impl Ring {
    /// Rings the doorbell; `false` when the caller must send the NOP.
    pub(super) fn ring_bell(&self) -> bool {
        match self.bell.kind.load(Ordering::Relaxed) {
            MSG => match send_msg(self.bell.ring_fd, WAKE) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("io_uring: MSG_RING wake-up failed ({e}); waking with NOPs");
                    self.bell.kind.store(NOP, Ordering::Relaxed);
                    false
                }
            },
            FUTEX_BELL => {
                let word = &*self.bell.word;
                match word.compare_exchange(IDLE, RUNG, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => {
                        // SAFETY: FUTEX_WAKE only hashes the address of a
                        // live, aligned u32; it reads and writes no memory.
                        unsafe {
                            libc::syscall(
                                libc::SYS_futex,
                                word.as_ptr(),
                                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                                1,
                            )
                        };
                        true
                    }
                    Err(RUNG) => true,
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }

    /// Futex: pushes a new wait after the last one's CQE was reaped.
    /// `submit`: also enter the kernel with it (a reaper; the leader calls
    /// this just before its own `io_uring_enter`, which carries it).
    pub(super) fn settle_bell(&self, submit: bool, spill: &mut Vec<Completion>) {
        let bell = &self.bell;
        if !bell.rearm.load(Ordering::Relaxed) || !bell.rearm.swap(false, Ordering::AcqRel) {
            return;
        }
        let closed = self.sq.lock();
        if *closed || bell.kind.load(Ordering::SeqCst) != FUTEX_BELL {
            drop(closed);
            return self.bell_off(spill);
        }
        let e = opcode::FutexWait::new(
            bell.word.as_ptr().cast_const(),
            u64::from(IDLE),
            FUTEX_BITSET_MATCH_ANY,
            FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
        )
        .build()
        .user_data(FUTEX);
        // SAFETY: the wait references only the boxed word, which outlives
        // it (`Drop` below); we hold the SQ lock.
        if let Err(e) = unsafe { self.push(&e, spill) } {
            drop(closed);
            tracing::warn!("io_uring: arming the futex wake-up failed ({e}); waking with NOPs");
            return self.bell_off(spill);
        }
        bell.armed.store(true, Ordering::Release);
        drop(closed);
        if submit {
            if let Err(e) = self.enter_submit(spill) {
                tracing::warn!("io_uring: submitting the futex wake-up failed: {e}");
            }
        }
    }

    /// Turns the futex doorbell off for good; a ring nobody will answer is
    /// sent as the NOP.
    fn bell_off(&self, spill: &mut Vec<Completion>) {
        self.bell.kind.store(NOP, Ordering::SeqCst);
        if self.bell.word.swap(OFF, Ordering::SeqCst) == RUNG {
            self.wake_nop(spill);
        }
    }
}

impl Ring {
    /// Cancels an armed futex wait and waits (up to a second) for its CQE,
    /// so the kernel forgets the word's address. Returns whether no wait is
    /// armed any more. Other CQEs reaped meanwhile are dropped: call it
    /// only when the ring is being dropped.
    fn disarm_bell(&mut self) -> bool {
        if !self.bell.armed.load(Ordering::Acquire) {
            return true;
        }
        let cancel = opcode::AsyncCancel::new(FUTEX).build().user_data(CANCEL);
        let mut spill = Vec::new();
        // SAFETY: a cancel request references no memory; `&mut self`: no
        // other thread uses the ring.
        if unsafe { self.push(&cancel, &mut spill) }.is_err() {
            return false;
        }
        let end = Instant::now() + Duration::from_secs(1);
        while self.bell.armed.load(Ordering::Acquire) && Instant::now() < end {
            let ts = types::Timespec::from(Duration::from_millis(50));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            // SAFETY: `&mut self`: this is the only `CompletionQueue`.
            for cqe in unsafe { self.ring.completion_shared() } {
                if cqe.user_data() == FUTEX {
                    self.bell.armed.store(false, Ordering::Release);
                }
            }
        }
        !self.bell.armed.load(Ordering::Acquire)
    }
}

impl Drop for Ring {
    /// A futex wait still armed is cancelled before its word is freed
    /// (module docs); should that fail, the word is leaked rather than
    /// freed under the kernel. Not in a forked child: the ring is the
    /// parent's.
    fn drop(&mut self) {
        if self.bell.pid != std::process::id() || self.disarm_bell() {
            return;
        }
        tracing::warn!("io_uring: the futex wake-up was not cancelled; leaking its word");
        let word = std::mem::replace(&mut self.bell.word, Box::new(AtomicU32::new(OFF)));
        Box::leak(word);
    }
}

#[cfg(test)]
mod tests {
    //! The doorbells at the ring level, each forced in turn: every wake
    //! reaches the leader, with a reaper swallowing wakes (and re-sending
    //! them, as the core does) and after the port closed. The port-level
    //! tests, on both backends, are in `tests/wake.rs`.

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::driver::{Config, Engine};

    /// A poster gives up after this; the leader's waits last longer, so a
    /// lost wake-up fails the test instead of passing late.
    const BOUND: Duration = Duration::from_secs(5);
    const LEADER_WAIT: Duration = Duration::from_secs(20);

    /// A ring whose doorbell is `kind`, and whether the kernel has it.
    fn ring(kind: &str) -> (Ring, bool) {
        let mut r = Ring::open(Config { entries: 64 }).expect("an io_uring ring");
        r.bell = Doorbell::with(&r.ring, kind);
        let got = r.bell.kind() == kind;
        if !got {
            eprintln!("this kernel lacks the {kind} doorbell: testing the NOP in its place");
        }
        (r, got)
    }

    /// Posters each wake the leader 300 times and wait (bounded) until it
    /// has returned from the kernel after their wake; a reaper drains the
    /// CQ meanwhile, re-sending each wake it swallows.
    fn every_wake_reaches_the_leader(kind: &str) {
        let (ring, _) = ring(kind);
        let ring = Arc::new(ring);
        let requested = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let leader = {
            let (ring, requested, seen, stop) =
                (ring.clone(), requested.clone(), seen.clone(), stop.clone());
            thread::spawn(move || {
                let mut out = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    ring.wait(Some(start + LEADER_WAIT), &mut out).unwrap();
                    assert!(start.elapsed() < LEADER_WAIT, "the leader was not woken");
                    assert!(out.is_empty(), "no operation was submitted");
                    seen.store(requested.load(Ordering::SeqCst), Ordering::SeqCst);
                }
            })
        };
        let (reaper, swallowed) = {
            let (ring, stop) = (ring.clone(), stop.clone());
            let swallowed = Arc::new(AtomicU64::new(0));
            let n = swallowed.clone();
            let t = thread::spawn(move || {
                let (mut out, mut spill) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    if ring.reap(&mut out).swallowed_wake {
                        n.fetch_add(1, Ordering::Relaxed);
                        ring.wake(&mut spill);
                    }
                    thread::yield_now();
                }
                assert!(out.is_empty() && spill.is_empty());
            });
            (t, swallowed)
        };
        let posters: Vec<_> = (0..4)
            .map(|_| {
                let (ring, requested, seen) = (ring.clone(), requested.clone(), seen.clone());
                thread::spawn(move || {
                    let mut spill = Vec::new();
                    for _ in 0..300 {
                        let k = requested.fetch_add(1, Ordering::SeqCst) + 1;
                        ring.wake(&mut spill);
                        let end = Instant::now() + BOUND;
                        while seen.load(Ordering::SeqCst) < k {
                            assert!(Instant::now() < end, "wake {k} was lost");
                            thread::yield_now();
                        }
                    }
                    assert!(spill.is_empty());
                })
            })
            .collect();
        for p in posters {
            p.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        ring.wake(&mut Vec::new());
        leader.join().unwrap();
        reaper.join().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 1200);
        eprintln!(
            "{kind}: the reaper swallowed {} wakes",
            swallowed.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn every_msg_wake_reaches_the_leader() {
        every_wake_reaches_the_leader("msg");
    }

    #[test]
    fn every_futex_wake_reaches_the_leader() {
        every_wake_reaches_the_leader("futex");
    }

    #[test]
    fn every_nop_wake_reaches_the_leader() {
        every_wake_reaches_the_leader("nop");
    }

    /// A wait returns within `BOUND` once `wake` is called from another
    /// thread, `rounds` times.
    fn wakes_reach(ring: &Arc<Ring>, rounds: usize) {
        for _ in 0..rounds {
            let waker = {
                let ring = ring.clone();
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(5));
                    ring.wake(&mut Vec::new());
                })
            };
            let start = Instant::now();
            ring.wait(Some(start + LEADER_WAIT), &mut Vec::new())
                .unwrap();
            assert!(start.elapsed() < BOUND, "the wait was not woken");
            waker.join().unwrap();
        }
    }

    /// A reaper that swallows the wake's CQE (the leader not yet in the
    /// kernel) reports it, and leaves the doorbell ready for the next wake:
    /// the futex re-armed and submitted by the reaper itself.
    fn a_swallowed_wake_leaves_the_bell_ready(kind: &str) {
        let (ring, got) = ring(kind);
        let futex = got && kind == "futex";
        let ring = Arc::new(ring);
        // A wait arms the futex; its deadline passes with no wake.
        ring.wait(
            Some(Instant::now() + Duration::from_millis(10)),
            &mut Vec::new(),
        )
        .unwrap();
        for _ in 0..3 {
            ring.wake(&mut Vec::new());
            let end = Instant::now() + BOUND;
            while !ring.reap(&mut Vec::new()).swallowed_wake {
                assert!(Instant::now() < end, "the wake's CQE never came");
                thread::yield_now();
            }
            if futex {
                assert!(ring.bell.armed.load(Ordering::SeqCst), "re-armed");
            }
            wakes_reach(&ring, 1);
        }
    }

    #[test]
    fn a_swallowed_wake_leaves_each_bell_ready() {
        for kind in ["msg", "futex", "nop"] {
            a_swallowed_wake_leaves_the_bell_ready(kind);
        }
    }

    /// Closing cancels the armed futex wait; the doorbell turns off and
    /// later wakes (the core's, to make the leader see the close) go as
    /// NOPs.
    #[test]
    fn a_closed_ring_still_wakes_its_leader() {
        let (ring, futex) = ring("futex");
        let ring = Arc::new(ring);
        wakes_reach(&ring, 3);
        ring.shutdown(&mut Vec::new());
        wakes_reach(&ring, 3);
        if futex {
            assert_eq!(ring.bell.kind(), "nop", "the cancelled wait turned it off");
            assert!(!ring.bell.armed.load(Ordering::SeqCst));
        }
    }

    /// An armed futex wait is cancelled, and its CQE seen, before the
    /// word it points at is freed.
    #[test]
    fn dropping_the_ring_disarms_the_futex() {
        let (mut ring, futex) = ring("futex");
        // A wait arms it; its deadline passes with no wake.
        ring.wait(
            Some(Instant::now() + Duration::from_millis(10)),
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(ring.bell.armed.load(Ordering::SeqCst), futex);
        assert!(ring.disarm_bell());
        assert!(!ring.bell.armed.load(Ordering::SeqCst));
    }
}
