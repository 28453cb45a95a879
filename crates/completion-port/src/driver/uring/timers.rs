//! Timer operations of the io_uring backend ([`OpKind::Timer`](crate::driver::OpKind::Timer),
//! `Port::post_after`): one ordered map per ring, watched by kernel
//! time-outs ("ticks") armed only for the earliest deadline — not one
//! kernel time-out per timer.
//!
//! # Why not a kernel time-out per timer
//! Each io_uring time-out is a kernel hrtimer whose expiry interrupts a
//! CPU and then runs task work in the submitting thread to post its CQE:
//! with 100 000 timers pending that cost about 8.7 µs of CPU per timer
//! (BENCHMARKS.md, "Timers"), and arming each one is a system call of its
//! own. Here arming is a map insertion (`O(log n)`), a kernel time-out is
//! armed only when a new deadline is the earliest, and one tick ends every
//! timer due by then.
//!
//! # Invariants
//! - A timer operation between its submission and its completion is in
//!   `map` (and `keys`) and nowhere else; whoever removes it (a tick that
//!   finds it due, a cancel, shutdown) reports its completion, once.
//! - While `map` is not empty, a tick is in flight for a deadline no later
//!   than its earliest — or `rearm` is pending: a tick CQE (which removed
//!   its tick from `ticks`) sets it, and the ring re-arms as soon as it
//!   may take the SQ lock (`Ring::settle_ticks`).
//! - A tick's `user_data` is [`TICK`] plus its deadline in nanoseconds
//!   since `epoch`, below 2^62: never a record's address (user-space
//!   addresses are below 2^63) nor one of the ring's other tags.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use io_uring::types::Timespec;

use crate::driver::{OpPtr, TIMER_GRANULARITY};

/// Tag of a tick's `user_data` (the top bit).
pub(super) const TICK: u64 = 1 << 63;
/// Largest deadline a tick's `user_data` can carry (ns since `epoch`).
const TICK_MAX: u64 = (1 << 62) - 1;

pub(super) struct Timers {
    /// Pending timers by deadline; the second part makes keys unique.
    map: BTreeMap<(Instant, u64), OpPtr>,
    /// Their keys, to cancel them by address.
    keys: HashMap<OpPtr, (Instant, u64)>,
    next: u64,
    /// Ticks in flight, by deadline (ns since `epoch`), each with the
    /// timespec its SQE points to (read by the kernel when it takes the
    /// SQE; kept until the tick's CQE).
    ticks: BTreeMap<u64, Box<Timespec>>,
    /// `Instant` and the monotonic clock at the same moment: converts a
    /// deadline to the absolute time a tick is armed for.
    epoch: Instant,
    epoch_mono: Duration,
}

/// A tick to arm: its `user_data` and the timespec its SQE points to.
pub(super) struct Tick {
    pub user_data: u64,
    pub ts: *const Timespec,
}

impl Timers {
    pub(super) fn new() -> Timers {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: writes one timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        Timers {
            map: BTreeMap::new(),
            keys: HashMap::new(),
            next: 0,
            ticks: BTreeMap::new(),
            epoch: Instant::now(),
            epoch_mono: Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.max(0) as u32),
        }
    }

    /// Whether `user_data` is a tick's.
    pub(super) fn is_tick(user_data: u64) -> bool {
        user_data & TICK != 0 && user_data & !TICK <= TICK_MAX
    }

    /// Adds timer `op`, due `at`. Returns a tick to arm when `at` is
    /// earlier than every tick in flight.
    pub(super) fn insert(&mut self, at: Instant, op: OpPtr) -> Option<Tick> {
        let key = (at, self.next);
        self.next += 1;
        self.map.insert(key, op);
        self.keys.insert(op, key);
        self.arm_for(at)
    }

    /// Takes timer `op` out (it is cancelled), if it is still pending.
    pub(super) fn take(&mut self, op: OpPtr) -> bool {
        match self.keys.remove(&op) {
            Some(key) => self.map.remove(&key).is_some(),
            None => false,
        }
    }

    /// A tick's CQE came (it fired, or was cancelled): forgets it. Then
    /// [`due`](Self::due) and [`rearm`](Self::rearm).
    pub(super) fn tick_done(&mut self, user_data: u64) {
        self.ticks.remove(&(user_data & !TICK));
    }

    /// Takes out every timer due by now.
    pub(super) fn due(&mut self, out: &mut Vec<OpPtr>) {
        let now = Instant::now();
        let later = self.map.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.map, later);
        for (_, op) in due {
            self.keys.remove(&op);
            out.push(op);
        }
    }

    /// A tick to arm for the earliest pending timer, unless one in flight
    /// is due no later.
    pub(super) fn rearm(&mut self) -> Option<Tick> {
        let at = self.map.keys().next()?.0;
        self.arm_for(at)
    }

    /// Every pending timer (the ring shuts down; its ticks are cancelled
    /// with everything else).
    pub(super) fn clear(&mut self) -> Vec<OpPtr> {
        self.keys.clear();
        std::mem::take(&mut self.map).into_values().collect()
    }

    /// A tick for `at` if no tick in flight is due by then.
    fn arm_for(&mut self, at: Instant) -> Option<Tick> {
        // Rounded up to the next multiple of `TIMER_GRANULARITY` (plus a
        // microsecond: the two clocks are the same, read a few nanoseconds
        // apart), so a tick never fires before a deadline it covers, and
        // timers due close together share one.
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let grain = TIMER_GRANULARITY.as_nanos();
        let ns = (since.div_ceil(grain) * grain + 1000).min(u128::from(TICK_MAX)) as u64;
        if self.ticks.keys().next().is_some_and(|&t| t <= ns) {
            return None;
        }
        let abs = self.epoch_mono + Duration::from_nanos(ns);
        let ts = Box::new(Timespec::new().sec(abs.as_secs()).nsec(abs.subsec_nanos()));
        let ptr: *const Timespec = &*ts;
        self.ticks.insert(ns, ts);
        Some(Tick {
            user_data: TICK | ns,
            ts: ptr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr::NonNull;

    fn op(n: usize) -> OpPtr {
        OpPtr(NonNull::new(n as *mut crate::driver::OpIo).unwrap())
    }

    #[test]
    fn a_tick_only_for_a_new_earliest_deadline() {
        let mut t = Timers::new();
        let now = Instant::now();
        let first = t
            .insert(now + Duration::from_secs(10), op(8))
            .expect("first tick");
        assert!(Timers::is_tick(first.user_data));
        assert!(t.insert(now + Duration::from_secs(20), op(16)).is_none());
        assert!(t.insert(now + Duration::from_secs(5), op(24)).is_some());
        assert!(t.take(op(16)));
        assert!(!t.take(op(16)));
        let mut due = Vec::new();
        t.due(&mut due);
        assert!(due.is_empty());
        assert_eq!(t.clear().len(), 2);
    }

    #[test]
    fn due_timers_come_out_and_the_next_is_rearmed() {
        let mut t = Timers::new();
        let now = Instant::now();
        let tick = t.insert(now, op(8)).unwrap();
        t.insert(now + Duration::from_secs(60), op(16));
        t.tick_done(tick.user_data);
        let mut due = Vec::new();
        t.due(&mut due);
        assert_eq!(due, vec![op(8)]);
        let next = t.rearm().expect("a tick for the remaining timer");
        assert!(Timers::is_tick(next.user_data));
        assert!(t.rearm().is_none(), "one tick in flight is enough");
    }

    #[test]
    fn tags_do_not_collide() {
        assert!(!Timers::is_tick(u64::MAX));
        assert!(!Timers::is_tick(u64::MAX - 1));
        assert!(!Timers::is_tick(u64::MAX - 2));
        assert!(!Timers::is_tick(0x7fff_ffff_f000));
    }
}
