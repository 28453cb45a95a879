//! `Core::close`: waiters released with `Closed`, queued packets dropped,
//! operations in flight cancelled and reaped before it returns (invariant 4
//! and "No lost wake-up" in `core/mod.rs`: `closed` is set, fenced, then the
//! queue emptied).

use crate::sync::{fence, Ordering};
use std::mem;
use std::time::{Duration, Instant};

use super::{AfterUnlock, Core};
use crate::core::waiter::Wake;
use crate::driver::Engine;

impl<C: Send + 'static> Core<C> {
    /// Closes the port: waiters get `Closed`, queued packets are dropped,
    /// in-flight operations are cancelled and reaped (their buffers and
    /// contexts dropped exactly once). Returns once nothing is in flight.
    pub(crate) fn close(&self) {
        if self.forked() {
            // A forked child's copy: nothing to cancel or reap here, no lock
            // to take (`fork.rs`).
            self.hot.closed.store(true, Ordering::SeqCst);
            return;
        }
        if self.hot.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut spill = Vec::new();
        self.driver.shutdown(&mut spill);
        let mut later = AfterUnlock::default();
        let mut st = self.state.lock();
        st.closed = true;
        let waiters = mem::take(&mut st.waiters);
        for w in &waiters {
            w.give(Wake::Closed);
        }
        // Wakes the leader, if any, so it sees `closed`.
        self.dispatch(&mut st, &mut later);
        drop(st);
        // Cancelled at once (epoll): dropped, the port being closed.
        self.queue_completions(&mut spill);
        for w in &waiters {
            w.unpark();
        }
        // `closed` is set: fence, then empty the queue (a poster racing with
        // this sees `closed` after its push and empties it too).
        fence(Ordering::SeqCst);
        self.drain_closed();
        drop(self.results.close());
        self.run(later);
        // Reap until every cancelled op is back. The leader, if any, reaps
        // too (and drops what it gets), so wait in short slices. Each wait
        // may consume the leader's wake-up, so re-arm it after each one.
        while self.in_flight.load(Ordering::Acquire) > 0 {
            let mut done = Vec::new();
            let r = self
                .driver
                .wait(Some(Instant::now() + Duration::from_millis(20)), &mut done);
            self.queue_completions(&mut done);
            let mut later = AfterUnlock::default();
            let mut st = self.state.lock();
            st.leader_woken = false;
            self.dispatch(&mut st, &mut later);
            drop(st);
            self.run(later);
            if let Err(e) = r {
                tracing::error!(
                    "completion port: reaping cancelled operations at close failed: {e}"
                );
                break;
            }
        }
    }
}
