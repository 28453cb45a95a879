//! Results kept by token instead of queued as packets (windows-semantics §3.13–14): the
//! operations issued [without packets](crate::Handle::without_packets), and
//! those that succeeded during their issue call on a handle in
//! [skip-on-success](crate::Handle::set_skip_packet_on_success) mode.
//!
//! Taken with [`Port::take_result`](crate::Port::take_result) or waited for
//! with [`Port::wait_result`](crate::Port::wait_result); see
//! `Core::wait_result` (`core/wait_result.rs`) for how a waiter drives the
//! backend when no other thread does.

use std::collections::HashMap;
use std::time::Instant;

use crate::core::Packet;
use crate::sync::{AtomicUsize, Condvar, Mutex};

pub(crate) struct Results<C> {
    inner: Mutex<Inner<C>>,
    /// Signalled, with `epoch` incremented, whenever a result is stored,
    /// the port's leadership becomes free while someone waits here, or the
    /// port closes.
    changed: Condvar,
    /// Threads waiting on `changed` (read by `dispatch` without this lock).
    pub(crate) waiters: AtomicUsize,
}

struct Inner<C> {
    map: HashMap<u64, Packet<C>>,
    /// Counts the signals of `changed`: a waiter that read it before
    /// releasing the port's state lock cannot miss a later one.
    epoch: u64,
    /// Set by `close`: nothing is kept any more.
    closed: bool,
}

impl<C> Results<C> {
    pub(crate) fn new() -> Results<C> {
        Results {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                epoch: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Keeps the result of operation `token`, and wakes the waiters.
    /// Refused once the port closed: the packet comes back (to be dropped
    /// by the caller, outside this lock).
    pub(crate) fn store(&self, token: u64, p: Packet<C>) -> Result<(), Packet<C>> {
        let mut g = self.inner.lock();
        if g.closed {
            return Err(p);
        }
        g.map.insert(token, p);
        g.epoch += 1;
        self.changed.notify_all();
        Ok(())
    }

    pub(crate) fn take(&self, token: u64) -> Option<Packet<C>> {
        self.inner.lock().map.remove(&token)
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.inner.lock().epoch
    }

    /// Wakes the waiters (something they wait for may have changed).
    pub(crate) fn notify(&self) {
        self.inner.lock().epoch += 1;
        self.changed.notify_all();
    }

    /// Waits until the epoch moves past `seen` or `deadline` passes.
    pub(crate) fn wait_changed(&self, seen: u64, deadline: Option<Instant>) {
        let mut g = self.inner.lock();
        while g.epoch == seen {
            match deadline {
                None => self.changed.wait(&mut g),
                Some(d) => {
                    if self.changed.wait_until(&mut g, d).timed_out() {
                        return;
                    }
                }
            }
        }
    }

    /// The port closed: every kept result, to drop outside the locks.
    pub(crate) fn close(&self) -> Vec<Packet<C>> {
        let mut g = self.inner.lock();
        g.closed = true;
        g.epoch += 1;
        self.changed.notify_all();
        g.map.drain().map(|(_, p)| p).collect()
    }
}
