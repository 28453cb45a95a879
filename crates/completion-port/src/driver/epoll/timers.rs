//! Deadlines of the epoll backend — timer operations, and the time-outs of
//! operations waiting for readiness or for a pool thread — in one ordered
//! map per port, watched through one `timerfd` in the port's epoll set.
//!
//! # Cost
//! Inserting and removing are `O(log n)` in the number of pending
//! deadlines; the `timerfd` is re-armed (one system call) only when a new
//! deadline is the earliest; expiry is found by the kernel, so nothing
//! polls. No thread per timer.
//!
//! # Invariants
//! - An operation with a deadline that waits in an fd queue or the pool
//!   has exactly one entry here, whose key its [`Pending`](super::fd::Pending)
//!   holds; whoever takes the operation out of its queue (it finished, it
//!   was cancelled, the pool started it) removes the entry, under the
//!   queue's lock then this one (lock order: queue, then timers).
//! - An entry that expires is taken out here first; its operation is then
//!   looked for in its queue by address only (never dereferenced: it may
//!   have finished meanwhile), and ended with `-ETIMEDOUT` if still there.
//! - Timer operations live only here: whoever removes their entry (expiry,
//!   cancel, shutdown) reports them.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use super::fd::FdEntry;
use crate::driver::{OpPtr, TIMER_GRANULARITY};

/// Orders the deadlines; the second part makes keys unique.
pub(super) type TimerKey = (Instant, u64);

/// What a deadline ends.
pub(super) enum Deadline {
    /// A timer operation: it fires.
    Timer(OpPtr),
    /// An operation waiting in `fd`'s queues: it times out.
    Queued { op: OpPtr, fd: Arc<FdEntry> },
    /// An operation waiting for a pool thread: it times out.
    Pooled(OpPtr),
}

pub(super) struct Timers {
    map: BTreeMap<TimerKey, Deadline>,
    /// Timer operations' keys, for cancelling them by address.
    timers: HashMap<OpPtr, TimerKey>,
    next: u64,
    /// The deadline the `timerfd` is armed for.
    armed: Option<Instant>,
    tfd: OwnedFd,
}

impl Timers {
    pub(super) fn new() -> io::Result<Timers> {
        // SAFETY: plain system call; the fd is owned at once.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Timers {
            map: BTreeMap::new(),
            timers: HashMap::new(),
            next: 0,
            armed: None,
            // SAFETY: a new fd, owned by nobody else.
            tfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(super) fn fd(&self) -> RawFd {
        self.tfd.as_raw_fd()
    }

    pub(super) fn insert(&mut self, at: Instant, what: Deadline) -> TimerKey {
        let key = (at, self.next);
        self.next += 1;
        if let Deadline::Timer(op) = &what {
            self.timers.insert(*op, key);
        }
        let round = matches!(what, Deadline::Timer(_));
        self.map.insert(key, what);
        if self.armed.is_none_or(|a| at < a) {
            self.arm(Some((at, round)));
        }
        key
    }

    /// Removes a deadline whose operation left its queue.
    pub(super) fn remove(&mut self, key: TimerKey) {
        if let Some(Deadline::Timer(op)) = self.map.remove(&key) {
            self.timers.remove(&op);
        }
        // The timerfd may stay armed for it: an expiry finding nothing due
        // just re-arms for the next one.
    }

    /// Takes out the timer operation `op`, if it has not fired.
    pub(super) fn take_timer(&mut self, op: OpPtr) -> bool {
        match self.timers.remove(&op) {
            Some(key) => self.map.remove(&key).is_some(),
            None => false,
        }
    }

    /// Drops every deadline and returns the timer operations (the port
    /// shuts down: the waiting operations are drained by their queues).
    pub(super) fn clear(&mut self) -> Vec<OpPtr> {
        let ops: Vec<OpPtr> = self.timers.drain().map(|(op, _)| op).collect();
        self.map.clear();
        self.arm(None);
        ops
    }

    /// Takes out every deadline due by now, and re-arms the `timerfd` for
    /// the next one.
    pub(super) fn expired(&mut self) -> Vec<Deadline> {
        let now = Instant::now();
        let later = self.map.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.map, later);
        let due: Vec<Deadline> = due.into_values().collect();
        for d in &due {
            if let Deadline::Timer(op) = d {
                self.timers.remove(op);
            }
        }
        let next = self
            .map
            .iter()
            .next()
            .map(|(k, d)| (k.0, matches!(d, Deadline::Timer(_))));
        self.arm(next);
        due
    }

    /// Arms the `timerfd` for `at` (absolute, on the monotonic clock) —
    /// rounded up to the timers' grid ([`TIMER_GRANULARITY`]) when `round`
    /// (the earliest deadline is a timer's) — or disarms it.
    fn arm(&mut self, at: Option<(Instant, bool)>) {
        self.armed = at.map(|(at, _)| at);
        let mut spec: libc::itimerspec = disarmed();
        let flags = match at {
            None => 0,
            Some((at, round)) => {
                let mut now: libc::timespec = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: writes one timespec.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
                let left = at.saturating_duration_since(Instant::now());
                let mut sec = now.tv_sec + left.as_secs() as libc::time_t;
                let mut nsec = now.tv_nsec + libc::c_long::from(left.subsec_nanos() as i32);
                if nsec >= 1_000_000_000 {
                    sec += 1;
                    nsec -= 1_000_000_000;
                }
                if round {
                    let grain = TIMER_GRANULARITY.as_nanos() as libc::c_long;
                    let rounded = (nsec + grain - 1) / grain * grain;
                    // What the timerfd is armed for, on `Instant`'s clock
                    // (the same clock): an insert due before it re-arms.
                    self.armed =
                        Some(at + std::time::Duration::from_nanos((rounded - nsec) as u64));
                    nsec = rounded;
                    if nsec >= 1_000_000_000 {
                        sec += 1;
                        nsec -= 1_000_000_000;
                    }
                }
                // Zero would disarm: a deadline due now fires at once.
                if sec == 0 && nsec == 0 {
                    nsec = 1;
                }
                spec.it_value = libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                };
                libc::TFD_TIMER_ABSTIME
            }
        };
        // SAFETY: `spec` is a valid itimerspec; the fd is our timerfd.
        let r = unsafe { libc::timerfd_settime(self.fd(), flags, &spec, std::ptr::null_mut()) };
        if r < 0 {
            tracing::warn!(
                "epoll: arming the timer failed: {}",
                io::Error::last_os_error()
            );
        }
    }

    /// Resets the `timerfd` after it fired.
    pub(super) fn acknowledge(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 (non-blocking fd).
        unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

fn disarmed() -> libc::itimerspec {
    libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    }
}
