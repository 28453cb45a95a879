//! [`PortStats`]: a snapshot of a port's counters.

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
}

impl<C: Send + 'static> Core<C> {
    pub(crate) fn stats(&self) -> PortStats {
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
        }
    }
}
