//! [`PortStats`]: a snapshot of a port's counters.

use crate::driver::Engine;
use crate::sync::Ordering;

use super::Core;

/// A snapshot of a port's counters, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PortStats {
    /// Packets queued and not yet dequeued.
    pub queued: usize,
    /// Threads counted as running (may exceed the concurrency value for a
    /// while after a blocking scope ends).
    pub running: usize,
    /// Threads parked in user space (not counting the leader).
    pub parked: usize,
    /// Whether a thread waits in the kernel for completions.
    pub leader: bool,
    /// Operations issued whose completion has not been reaped yet.
    pub in_flight: usize,
    /// Packets dequeued since the port was created.
    pub dequeued: u64,
    /// Threads not counted as running right now because the blocked-thread
    /// monitor saw them blocked (see
    /// [`PortBuilder::blocking_detection`](crate::PortBuilder::blocking_detection)); 0 with detection off.
    pub blocked: usize,
    /// How many times the monitor counted a thread of this port out since
    /// the port was created.
    pub blocked_total: u64,
    /// Sends that went zero-copy (io_uring,
    /// [`PortBuilder::send_zerocopy_threshold`](crate::PortBuilder::send_zerocopy_threshold)),
    /// counted at their release; always 0 on the epoll backend.
    pub zerocopy_sends: u64,
    /// Of those, how many the kernel copied after all (it says so from
    /// Linux 6.2; loopback always copies).
    pub zerocopy_copied: u64,
}

impl<C: Send + 'static> Core<C> {
    pub(crate) fn stats(&self) -> PortStats {
        let (zerocopy_sends, zerocopy_copied) = self.driver.zerocopy_counts();
        let st = self.state.lock();
        PortStats {
            queued: self.queue.len(),
            running: self.hot.running.load(Ordering::SeqCst),
            parked: st.waiters.len(),
            leader: st.leader,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            blocked: self.detected.now.load(Ordering::Relaxed),
            blocked_total: self.detected.total.load(Ordering::Relaxed),
            dequeued: self
                .dequeued
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .sum(),
            zerocopy_sends,
            zerocopy_copied,
        }
    }
}
