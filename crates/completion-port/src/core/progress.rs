//! Progress when nobody waits: a port's operations finish, their
//! completions are collected (and the completion hook runs), orphans are
//! resubmitted and deferred submissions reach the kernel even while no
//! application thread waits on the port — all its workers busy, blocked
//! elsewhere, or gone.
//!
//! Normally the leader does all of that: its kernel wait submits what the
//! SQ holds and returns with the completions (io_uring), or runs the ready
//! operations (epoll). A port *needs progress* while operations are in
//! flight and no thread holds the leadership. Then the process's monitor
//! thread (`monitor.rs`, "Progress") looks at it every tick:
//! - it submits what the SQ holds (deferred submissions of a running thread
//!   that then blocked somewhere the port cannot see: issue 15's channel
//!   wait, with detection on or off, on both backends the same);
//! - if nothing was waited on, or collected completely (`Reaped::complete`:
//!   epoll's `reap` is not, it never asks which fds are ready), since its
//!   previous tick (the `reaped` count stood still), it polls the backend without
//!   blocking (`Engine::poll`: drain the CQ; epoll: run the operations
//!   whose fds are ready) and queues what that collected — so a queue that
//!   never empties (handlers whose new operations finish during the issue
//!   call) cannot starve operations that wait for readiness (issue 17).
//!
//! # No missed wake-up of the monitor
//! The monitor sleeps only after it published `asleep`, fenced, and found
//! no port in need (`needs_progress`). The two ways into that state each
//! end with a `SeqCst` fence and a look at `asleep` (`monitor::wake`):
//! - the leadership given up while operations are in flight
//!   ([`Core::set_leader`]: store `leading = false`, fence, load
//!   `in_flight`, wake);
//! - an operation submitted while nobody leads (`Core::submit`: increment
//!   `in_flight`, fence, load `leading`, wake).
//!
//! The two also meet each other: if the leader saw `in_flight == 0` (so
//! did not wake), the submitter's later fence sees `leading == false` (and
//! wakes). The monitor keeps ticking a while after the last port in need
//! ([`monitor::LINGER`]), so a busy port that gains and loses a leader at
//! every packet costs no wake-up system call per packet.
//!
//! # Deferred submissions and the leader
//! A running thread defers a submission (io_uring) only while nobody
//! leads: a leader already in the kernel would not see it, and that thread
//! will park (and flush) at its next `get` anyway. The deferral is a
//! Dekker pair with the leader: the submitter pushes, fences, then looks
//! at `leading` and flushes itself if a leader appeared; a new leader
//! stores `leading`, fences, then enters the kernel, whose submission reads
//! the SQ — so either the submitter flushes or the leader's wait submits.

use std::sync::atomic::Ordering as Std;

use super::monitor;
use super::{AfterUnlock, Core, State};
use crate::sync::{fence, Ordering};

impl<C: Send + 'static> Core<C> {
    /// Takes (`on`) or gives up the leadership (invariant 3 of `mod.rs`),
    /// mirrored in `hot.leading`. Giving it up with operations in flight
    /// leaves the ring unwatched: the monitor must be awake (module docs).
    pub(super) fn set_leader(&self, st: &mut State<C>, on: bool) {
        st.leader = on;
        self.hot.leading.store(on, Ordering::SeqCst);
        if !on {
            // Store, fence, load (module docs).
            fence(Ordering::SeqCst);
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                monitor::wake();
            }
        }
    }

    /// Whether a thread holds the leadership (a lock-free look).
    pub(super) fn leading(&self) -> bool {
        self.hot.leading.load(Ordering::SeqCst)
    }

    /// An operation was just counted in flight (`prev` before): if nobody
    /// leads, the monitor must keep the port moving (module docs).
    pub(super) fn in_flight_added(&self, prev: usize) {
        if prev == 0 {
            // Increment, fence, load (module docs).
            fence(Ordering::SeqCst);
            if !self.leading() {
                monitor::wake();
            }
        }
    }

    /// Operations are in flight and nobody leads.
    pub(crate) fn needs_progress(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0 && !self.leading()
    }

    /// The monitor's tick for this port (module docs).
    pub(crate) fn tick_progress(&self) {
        if !self.needs_progress() || self.is_closed() {
            return;
        }
        self.flush();
        let now = self.reaped.load(Std::Relaxed);
        if self.reaped_seen.swap(now, Std::Relaxed) == now {
            self.poll_progress();
            self.reaped_seen
                .store(self.reaped.load(Std::Relaxed), Std::Relaxed);
        }
    }

    /// Polls the backend without blocking, unless somebody leads, and
    /// queues what that collected.
    fn poll_progress(&self) {
        let mut later = AfterUnlock::default();
        let st = self.state.lock();
        if st.leader || st.closed {
            return;
        }
        let st = self.collect_unlocked(st, &mut later, true);
        drop(st);
        self.run(later);
    }
}
