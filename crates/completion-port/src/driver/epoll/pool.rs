//! The blocking pool of the epoll backend: regular-file reads and writes
//! (which epoll cannot wait for) run here, so a slow disk never stalls the
//! port's waiters.
//!
//! Bounded: at most [`MAX_THREADS`] threads, started on demand and kept
//! until the port closes. Jobs are taken FIFO. A finished job is handed to
//! the port through [`Shared::complete`](super::Shared::complete), which
//! wakes the thread waiting in `epoll_wait`.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Weak};
use std::thread;

use parking_lot::{Condvar, Mutex};

use super::fd::{blocking_op, Attempt, Pending};
use super::Shared;
use crate::driver::{closed, Completion, OpPtr};

/// Most threads one port's pool runs.
pub(super) const MAX_THREADS: usize = 4;

pub(super) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    work: Condvar,
    shared: Weak<Shared>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Pending>,
    threads: usize,
    idle: usize,
    closed: bool,
}

impl Pool {
    pub(super) fn new(shared: Weak<Shared>) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                shared,
            }),
        }
    }

    /// Queues a job; refused once the pool is shut down.
    pub(super) fn push(&self, job: Pending) -> io::Result<()> {
        let mut st = self.inner.state.lock();
        if st.closed {
            return Err(closed());
        }
        st.jobs.push_back(job);
        if st.idle == 0 && st.threads < MAX_THREADS {
            let inner = self.inner.clone();
            let spawned = thread::Builder::new()
                .name("cport-file".into())
                .spawn(move || inner.run());
            match spawned {
                Ok(_) => st.threads += 1,
                // With no thread at all the job could never run: refuse it.
                Err(e) if st.threads == 0 => {
                    st.jobs.pop_back();
                    return Err(e);
                }
                Err(_) => {}
            }
        } else {
            self.inner.work.notify_one();
        }
        Ok(())
    }

    /// Takes the queued (not yet started) jobs that `is_target` picks out of
    /// the queue; they come back cancelled in `spill`. A job already running
    /// finishes and reports its real result.
    pub(super) fn cancel(&self, is_target: &dyn Fn(&Pending) -> bool, spill: &mut Vec<Completion>) {
        let shared = self.inner.shared.upgrade();
        let mut st = self.inner.state.lock();
        st.jobs.retain(|p| {
            if is_target(p) {
                if let (Some(key), Some(shared)) = (p.timer, &shared) {
                    shared.timers.lock().remove(key);
                }
                spill.push(Completion {
                    op: p.op,
                    res: -libc::ECANCELED,
                });
                false
            } else {
                true
            }
        });
    }

    /// Takes the queued (not yet started) job `op` out, if it is there (its
    /// deadline passed: `timers.rs`, which removed its entry already).
    pub(super) fn take(&self, op: OpPtr) -> bool {
        let mut st = self.inner.state.lock();
        match st.jobs.iter().position(|p| p.op == op) {
            Some(i) => {
                st.jobs.remove(i);
                true
            }
            None => false,
        }
    }

    /// Stops the pool: queued jobs come back cancelled in `spill`; running
    /// ones finish and report normally; threads then exit.
    pub(super) fn shutdown(&self, spill: &mut Vec<Completion>) {
        let mut st = self.inner.state.lock();
        st.closed = true;
        spill.extend(st.jobs.drain(..).map(|p| Completion {
            op: p.op,
            res: -libc::ECANCELED,
        }));
        self.inner.work.notify_all();
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let mut st = self.state.lock();
            let job = loop {
                if let Some(mut j) = st.jobs.pop_front() {
                    // Started: its deadline no longer applies (a running
                    // job finishes).
                    if let (Some(key), Some(shared)) = (j.timer.take(), self.shared.upgrade()) {
                        shared.timers.lock().remove(key);
                    }
                    break j;
                }
                if st.closed {
                    st.threads -= 1;
                    return;
                }
                st.idle += 1;
                self.work.wait(&mut st);
                st.idle -= 1;
            };
            drop(st);
            // SAFETY: the job's record is owned by the pool until reported.
            let op = unsafe { job.op.op() };
            let res = match blocking_op(op) {
                Attempt::Done(r) => r,
                Attempt::WouldBlock => -libc::EAGAIN,
            };
            let c = Completion { op: job.op, res };
            match self.shared.upgrade() {
                Some(shared) => shared.complete(c),
                // The backend is gone only after every op was reaped, so no
                // job can be left; nothing to report to.
                None => debug_assert!(false, "pool job outlived its port"),
            }
        }
    }
}
