//! `Core::take_result` and `Core::wait_result`: the results of operations
//! that queue no packet (kept by token in `results.rs`), and how a thread
//! waiting for one drives the backend itself when no other thread leads.

use std::time::{Duration, Instant};

use super::{AfterUnlock, Core};
use crate::core::running::BlockingGuard;
use crate::core::Packet;
use crate::core::Token;
use crate::error::GetError;
use crate::sync::Ordering;

impl<C: Send + 'static> Core<C> {
    /// The kept result of operation `token` (`results.rs`), if it is there;
    /// collects ready completions first, without blocking.
    pub(crate) fn take_result(&self, token: Token) -> Option<Packet<C>> {
        if self.forked() {
            return None;
        }
        if let Some(p) = self.results.take(token.0) {
            return Some(p);
        }
        let mut later = AfterUnlock::default();
        let st = self.state.lock();
        let st = self.reap_unlocked(st, &mut later);
        drop(st);
        self.run(later);
        self.results.take(token.0)
    }

    /// Waits for the kept result of operation `token` (`GetOverlappedResult`
    /// with `bWait`).
    ///
    /// The thread counts as blocked meanwhile (a blocking scope, which also
    /// submits what it deferred). If no thread leads (waits in the kernel
    /// for the port), it takes the leadership itself for one kernel wait at
    /// a time and queues what it reaps as any leader does; otherwise it
    /// sleeps until a result is stored or the leadership becomes free
    /// (`dispatch` signals both), then looks again.
    pub(crate) fn wait_result(
        &self,
        token: Token,
        timeout: Option<Duration>,
    ) -> Result<Packet<C>, GetError> {
        if let Some(e) = self.fork_refusal() {
            return Err(GetError::Io(e));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let _scope = BlockingGuard::enter();
        loop {
            if let Some(p) = self.results.take(token.0) {
                return Ok(p);
            }
            if self.is_closed() {
                return Err(GetError::Closed);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(GetError::Timeout);
            }
            let mut later = AfterUnlock::default();
            let mut st = self.state.lock();
            if st.closed {
                return Err(GetError::Closed);
            }
            // Results of completions are stored under the state lock: look
            // again now, or one stored since the look above would be missed
            // by the sleep below.
            if let Some(p) = self.results.take(token.0) {
                return Ok(p);
            }
            if !st.leader {
                st.leader = true;
                st.leader_woken = false;
                st.leader_for_result = true;
                self.publish_sleepers(&st);
                let r;
                (st, r) = self.lead_once(st, deadline, &mut later, None);
                st.leader = false;
                st.leader_for_result = false;
                self.dispatch(&mut st, &mut later);
                drop(st);
                self.run(later);
                r.map_err(GetError::Io)?;
                continue;
            }
            // Another thread leads: it reaps, and stores our result, or the
            // leadership becomes free; both move the epoch read here, under
            // the state lock, before it can happen.
            let seen = self.results.epoch();
            self.results.waiters.fetch_add(1, Ordering::SeqCst);
            drop(st);
            self.run(later);
            self.results.wait_changed(seen, deadline);
            self.results.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
