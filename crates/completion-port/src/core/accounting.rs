//! The [`Accounting`] hooks of a port: what `running.rs` and the
//! blocked-thread monitor (`monitor.rs`) call when a thread running for the
//! port is counted down (a blocking scope, a `get` elsewhere, exit, seen
//! blocked) or up again, and the detection statistics.

use crate::sync::{fence, Ordering};

use super::{AfterUnlock, Core};
use crate::core::monitor;
use crate::core::running::Accounting;

impl<C: Send + 'static> Accounting for Core<C> {
    fn count_down(&self) {
        let mut later = AfterUnlock::default();
        let mut st = self.state.lock();
        // Free the slot, then look at the queue (`dispatch`).
        self.release_slot();
        self.dispatch(&mut st, &mut later);
        drop(st);
        self.run(later);
    }

    fn count_up(&self) {
        self.hot.running.fetch_add(1, Ordering::SeqCst);
        if self.detect {
            // Increment, fence, look (monitor.rs, "When the monitor looks").
            fence(Ordering::SeqCst);
            if self.contended() {
                monitor::wake();
            }
        }
    }

    fn contended(&self) -> bool {
        self.detect
            && self.hot.running.load(Ordering::SeqCst) >= self.concurrency
            && !self.queue.is_empty()
    }

    fn needs_progress(&self) -> bool {
        Core::needs_progress(self)
    }

    fn tick_progress(&self) {
        Core::tick_progress(self)
    }

    fn flush(&self) {
        Core::flush(self);
    }

    fn detects_blocking(&self) -> bool {
        self.detect
    }

    fn note_detected(&self, entered: bool) {
        if entered {
            self.detected.now.fetch_add(1, Ordering::Relaxed);
            self.detected.total.fetch_add(1, Ordering::Relaxed);
        } else {
            self.detected.now.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
