//! [`AfterUnlock`]: the work collected under the state lock (threads to
//! unpark, the leader or the monitor to wake, packets to drop) and done by
//! `Core::run` after the lock is released (invariant 5 in `core/mod.rs`: a
//! context's `Drop` may call back into the port).

use std::sync::Arc;

use super::Core;
use crate::core::monitor;
use crate::core::waiter::Waiter;
use crate::core::Packet;
use crate::driver::Engine;

/// Work collected under the state lock and done after releasing it.
pub(super) struct AfterUnlock<C> {
    pub(super) unpark: Vec<Arc<Waiter<C>>>,
    pub(super) wake_leader: bool,
    /// The leadership is free while threads wait for results: they may
    /// have to drive the backend themselves (`wait_result`).
    pub(super) notify_results: bool,
    pub(super) drop: Vec<Packet<C>>,
    /// Every slot is held while packets wait: wake the blocked-thread
    /// monitor (`monitor::wake`).
    pub(super) wake_monitor: bool,
}

impl<C> Default for AfterUnlock<C> {
    fn default() -> Self {
        AfterUnlock {
            unpark: Vec::new(),
            wake_leader: false,
            notify_results: false,
            drop: Vec::new(),
            wake_monitor: false,
        }
    }
}

impl<C: Send + 'static> Core<C> {
    /// Does the work collected under the lock.
    pub(super) fn run(&self, later: AfterUnlock<C>) {
        for w in &later.unpark {
            w.unpark();
        }
        if later.notify_results {
            self.results.notify();
        }
        if later.wake_monitor {
            monitor::wake();
        }
        if later.wake_leader {
            let mut spill = Vec::new();
            self.driver.wake(&mut spill);
            self.absorb(&mut spill);
        }
        drop(later.drop);
    }
}
