//! Waking the leader ([`Engine::wake`](crate::driver::Engine::wake))
//! without a NOP under the SQ lock: the *doorbell*.
//!
//! The leader sleeps in `io_uring_enter(GETEVENTS)` until a CQE arrives.
//! The plain way to post one is to submit a NOP tagged [`WAKE`]: take the
//! SQ lock, push, `io_uring_enter`. On Linux 6.13 and newer the doorbell
//! instead posts the [`WAKE`] CQE with one `io_uring_register` call,
//! `IORING_REGISTER_SEND_MSG_RING`: the kernel's `IORING_OP_MSG_RING`
//! without a source ring. No SQ lock (a waker no longer queues behind a
//! thread submitting), no request; the kernel writes the CQE straight into
//! the port's CQ and wakes the leader. The CQE is the NOP's, so reaping it
//! is unchanged: a reaper that consumes it reports a swallowed wake and the
//! core sends another.
//!
//! Chosen at open by posting one probe message (tagged [`PROBE`], ignored
//! when reaped); a kernel without it, and any later failure to send, falls
//! back to the NOP — a wake never fails for it. `CPORT_URING_WAKE=nop`
//! forces the NOP, for measuring the two against each other.
//!
//! A futex doorbell (`IORING_OP_FUTEX_WAIT`, Linux 6.7: the leader arms a
//! wait on a word, `wake` sets the word and calls `FUTEX_WAKE`) was built
//! and measured too: no better than the NOP on wake-up latency, and its
//! completion runs as task work on the thread that armed it, an extra
//! hop. BENCHMARKS.md, "Waking the leader", has the numbers of all three.
//!
//! The epoll backend wakes its leader by writing an eventfd
//! (`driver/epoll/mod.rs`).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, types, IoUring};

use super::{Ring, WAKE};

/// `user_data` of the message the probe at open posts (ignored).
pub(super) const PROBE: u64 = u64::MAX - 3;

/// `io_uring_register` opcode that posts a `MSG_RING` without a ring
/// (Linux 6.13).
const IORING_REGISTER_SEND_MSG_RING: libc::c_long = 31;

/// How the port's ring wakes its leader (module docs).
pub(super) struct Doorbell {
    /// `IORING_REGISTER_SEND_MSG_RING` works here; cleared for good if a
    /// send fails (then the NOP).
    msg: AtomicBool,
    /// The ring's fd, the message's target.
    ring_fd: i32,
}

impl Doorbell {
    /// The doorbell for `ring`: the message when this kernel has it and
    /// `CPORT_URING_WAKE` is not `nop`, else the NOP.
    pub(super) fn open(ring: &IoUring) -> Doorbell {
        let want = std::env::var("CPORT_URING_WAKE").unwrap_or_default();
        let bell = Doorbell::with(ring, want.trim() != "nop");
        tracing::debug!("io_uring: the leader is woken by {}", bell.kind());
        bell
    }

    /// The message doorbell if `msg` and the kernel has it, else the NOP.
    pub(super) fn with(ring: &IoUring, msg: bool) -> Doorbell {
        let ring_fd = ring.as_raw_fd();
        Doorbell {
            msg: AtomicBool::new(msg && send_msg(ring_fd, PROBE).is_ok()),
            ring_fd,
        }
    }

    /// The doorbell in use: `msg` or `nop`.
    pub(super) fn kind(&self) -> &'static str {
        if self.msg.load(Ordering::Relaxed) {
            "msg"
        } else {
            "nop"
        }
    }
}

/// Posts a CQE tagged `user_data` (result 0) into the ring `fd` without a
/// ring of our own (`IORING_REGISTER_SEND_MSG_RING`).
fn send_msg(fd: i32, user_data: u64) -> io::Result<()> {
    let e = opcode::MsgRingData::new(types::Fd(fd), 0, user_data, None).build();
    loop {
        // SAFETY: `e` is a valid SQE (`Entry` is `repr(C)` over it) that the
        // kernel only reads during the call; this opcode takes fd -1.
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
        if !self.bell.msg.load(Ordering::Relaxed) {
            return false;
        }
        match send_msg(self.bell.ring_fd, WAKE) {
            Ok(()) => true,
            Err(e) => {
                // E.g. the CQ overflowed and the kernel could not allocate
                // an overflow entry: the NOP waits for room instead.
                tracing::warn!("io_uring: MSG_RING wake-up failed ({e}); waking with NOPs");
                self.bell.msg.store(false, Ordering::Relaxed);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Both doorbells at the ring level: every wake reaches the leader,
    //! with a reaper swallowing wakes (and re-sending them, as the core
    //! does), and after the port closed. The port-level tests, on both
    //! backends, are in `tests/wake.rs`.

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

    /// A ring with the message doorbell (`msg`) or the NOP.
    fn ring(msg: bool) -> Ring {
        let mut r = Ring::open(Config {
            entries: 64,
            fixed_files: 0,
            send_zerocopy: 0,
        })
        .expect("an io_uring ring");
        r.bell = Doorbell::with(&r.ring, msg);
        if msg && r.bell.kind() != "msg" {
            eprintln!("this kernel lacks IORING_REGISTER_SEND_MSG_RING: testing the NOP");
        }
        r
    }

    /// Posters each wake the leader 300 times and wait (bounded) until it
    /// has returned from the kernel after their wake; a reaper drains the
    /// CQ meanwhile, re-sending each wake it swallows.
    fn every_wake_reaches_the_leader(msg: bool) {
        let ring = Arc::new(ring(msg));
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
        let reaper = {
            let (ring, stop) = (ring.clone(), stop.clone());
            thread::spawn(move || {
                let (mut out, mut spill) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    if ring.reap(&mut out).swallowed_wake {
                        ring.wake(&mut spill);
                    }
                    thread::yield_now();
                }
                assert!(out.is_empty() && spill.is_empty());
            })
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
    }

    #[test]
    fn every_msg_wake_reaches_the_leader() {
        every_wake_reaches_the_leader(true);
    }

    #[test]
    fn every_nop_wake_reaches_the_leader() {
        every_wake_reaches_the_leader(false);
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
    /// kernel) reports it; the probe's CQE is not a wake; the next wake
    /// still reaches the leader.
    #[test]
    fn a_swallowed_wake_is_reported() {
        for msg in [true, false] {
            let ring = Arc::new(ring(msg));
            // The probe's CQE (if any) is reaped without counting.
            assert!(!ring.reap(&mut Vec::new()).swallowed_wake);
            for _ in 0..3 {
                ring.wake(&mut Vec::new());
                let end = Instant::now() + BOUND;
                while !ring.reap(&mut Vec::new()).swallowed_wake {
                    assert!(Instant::now() < end, "the wake's CQE never came");
                    thread::yield_now();
                }
                wakes_reach(&ring, 1);
            }
        }
    }

    /// After `shutdown` (cancel everything, refuse submissions) a wake
    /// still reaches the leader: the core wakes it to see the close.
    #[test]
    fn a_closed_ring_still_wakes_its_leader() {
        for msg in [true, false] {
            let ring = Arc::new(ring(msg));
            wakes_reach(&ring, 2);
            ring.shutdown(&mut Vec::new());
            wakes_reach(&ring, 2);
        }
    }

    /// A run of wakes with nobody asleep: each lands as a CQE that a reap
    /// reports as a swallowed wake, with either doorbell. (Its CPU cost
    /// per wake, BENCHMARKS.md "Waking the leader", was measured by this
    /// loop at 200 000 wakes with a thread clock around it, in 1c0dfae.)
    #[test]
    fn wakes_with_nobody_asleep_are_each_reaped() {
        for msg in [false, true] {
            let ring = ring(msg);
            let (mut out, mut spill) = (Vec::new(), Vec::new());
            for i in 0..2_000 {
                ring.wake(&mut spill);
                if i % 32 == 31 {
                    assert!(ring.reap(&mut out).swallowed_wake, "{}", ring.bell.kind());
                }
            }
            assert!(out.is_empty() && spill.is_empty());
        }
    }
}
