//! A thread parked on a port, and the slot through which it is handed a
//! packet, the leadership, or the news that the port closed.
//!
//! # Hand-off protocol
//! - A waiter is created and pushed on the port's LIFO stack **under the
//!   state lock**, after its last look at the queue.
//! - A giver pops it from the stack and calls [`Waiter::give`] **under the
//!   state lock**, then [`Waiter::unpark`]s it after releasing the lock.
//!   Popping and giving happen in one critical section, so a waiter that is
//!   no longer on the stack has been given something, and exactly once.
//! - A waiter whose deadline passes takes the state lock, then
//!   [`Waiter::take`]s its slot: if it was given something meanwhile it uses
//!   it (a packet is never lost to a time-out); otherwise it removes itself
//!   from the stack, and no giver can reach it any more.

use std::time::Instant;

use crate::core::Packet;
use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicBool, Mutex, Ordering};

/// What a parked thread can be handed.
pub(crate) enum Wake<C> {
    /// A packet; the giver already counted the thread as running.
    Packet(Packet<C>),
    /// The leadership: wait in the kernel for the port (the giver already
    /// marked the port as having a leader).
    Lead,
    /// The port closed.
    Closed,
}

pub(crate) struct Waiter<C> {
    /// Set (Release) after `slot` is filled; read (Acquire) by the parked
    /// thread to tell a real wake from a spurious one without locking.
    given: AtomicBool,
    slot: Mutex<Option<Wake<C>>>,
    thread: Thread,
}

impl<C> Waiter<C> {
    pub(crate) fn new() -> Waiter<C> {
        Waiter {
            given: AtomicBool::new(false),
            slot: Mutex::new(None),
            thread: thread::current(),
        }
    }

    /// Fills the slot. Caller holds the port's state lock and has just
    /// popped this waiter from the stack.
    pub(crate) fn give(&self, w: Wake<C>) {
        *self.slot.lock() = Some(w);
        self.given.store(true, Ordering::Release);
    }

    /// Wakes the thread (after the state lock is released).
    pub(crate) fn unpark(&self) {
        self.thread.unpark();
    }

    /// Sleeps until given something (`Some`) or until `deadline` (`None`:
    /// the caller must then settle the race under the state lock with
    /// [`take`](Self::take)).
    pub(crate) fn park(&self, deadline: Option<Instant>) -> Option<Wake<C>> {
        loop {
            if self.given.load(Ordering::Acquire) {
                return self.slot.lock().take();
            }
            match deadline {
                None => thread::park(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    thread::park_timeout(d - now);
                }
            }
        }
    }

    /// Takes whatever was given. Caller holds the state lock.
    pub(crate) fn take(&self) -> Option<Wake<C>> {
        self.slot.lock().take()
    }
}
