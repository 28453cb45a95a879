//! How the monitor looks at one thread: [`Watched`], what it remembers of
//! a thread between looks, and the looks themselves — the rule of
//! `monitor.rs` (CPU-time clock, then the state field of
//! `/proc/self/task/<tid>/stat`; with a switch event, the state field after
//! a switch-out), and the look that counts a `DETECTED` thread back in.
//! What a look concludes is acted on by `detect` and `resume`
//! (`monitor.rs`, the state machine of running.rs).
//!
//! # Why this rule
//! The CPU-time clock alone mistakes preemption for blocking (a preempted
//! thread does not run either); the state field alone is several times
//! dearer per look, and would be read for every running thread every
//! period. The clock first, and the state only for a thread that did not
//! run for a whole period, costs one cheap system call per running thread
//! per period and never counts out a preempted thread. The measurements
//! behind this choice (cost per look, delay, false alarms), with their
//! command (`cargo run --release -p completion-port --example
//! probe_blocking`): BENCHMARKS.md, "Blocking detection" → "Choosing the
//! mechanism".

use crate::sync::Ordering;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{detect, resume};
use crate::core::running::Worker;

/// CPU time of the thread of `clock`, in ns (`None`: it exited).
fn cpu_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; a clock id of a thread
    // that exited only makes the call fail with EINVAL.
    let r = unsafe { libc::clock_gettime(clock, &mut ts) };
    (r == 0).then(|| (ts.tv_sec as u64).wrapping_mul(1_000_000_000) + ts.tv_nsec as u64)
}

/// A record, with what the monitor remembers of its previous look.
pub(super) struct Watched {
    pub(super) rec: Arc<Worker>,
    /// Set by the thread when it exits (`monitor::ExitGuard`): the monitor
    /// then drops this entry, closing `stat` and `event`.
    pub(super) gone: Arc<AtomicBool>,
    /// CPU time at the previous look, if the thread was looked at then
    /// (`None`: the next look reads the state field at once).
    pub(super) last_cpu: Option<u64>,
    /// `/proc/self/task/<tid>/stat`, opened at the first need, closed when
    /// the entry is dropped (the thread exited).
    pub(super) stat: Option<File>,
    /// Switch events: the thread's event, if it could be opened (else the
    /// thread is sampled), and whether it is enabled.
    pub(super) event: Option<OwnedFd>,
    pub(super) enabled: bool,
    /// A switch-out was signalled since the last look.
    pub(super) switched: bool,
}

impl Watched {
    /// Whether the thread is in the kernel's `R` state (running or
    /// runnable). Unknown counts as runnable: never a false "blocked".
    fn runnable(&mut self) -> bool {
        if self.stat.is_none() {
            self.stat = File::open(format!("/proc/self/task/{}/stat", self.rec.tid)).ok();
        }
        let Some(f) = &self.stat else {
            return true;
        };
        let mut buf = [0u8; 512];
        let n = f.read_at(&mut buf, 0).unwrap_or(0);
        let s = &buf[..n];
        // "pid (comm) S ...": the state follows the last ')' (the thread
        // name may contain one).
        match s.iter().rposition(|&b| b == b')') {
            Some(i) if i + 2 < n => s[i + 2] == b'R',
            _ => true,
        }
    }

    /// Whether the thread exited (its exit guard ran; its state may not say
    /// `Exited` yet).
    pub(super) fn exited(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the monitor must look at this `COUNTED` thread now: its
    /// port is contended, or it deferred submissions.
    pub(super) fn wanted(&self) -> bool {
        if self.rec.pending.load(Ordering::SeqCst) {
            return true;
        }
        // Upgraded under the lock, used (and maybe dropped) after it.
        let port = (self.rec.port.lock().as_ref())
            .filter(|p| p.detect)
            .and_then(|p| p.port.upgrade());
        port.is_some_and(|p| p.contended())
    }

    /// One look at a `COUNTED` thread the monitor must look at. With a
    /// switch event: the state field, if it switched out since the last
    /// look (or at the first look). Sampling: the CPU clock, then the
    /// state field if it did not advance (or at once, the first look).
    pub(super) fn look_counted(&mut self) {
        let prev = self.last_cpu;
        let now = self.rec.clock.and_then(cpu_ns);
        self.last_cpu = Some(now.unwrap_or(0));
        let switched = std::mem::take(&mut self.switched);
        let suspect = match prev {
            // Blocked for however long before the monitor looked: seen now.
            None => true,
            Some(_) if self.event.is_some() => switched,
            Some(p) => now == Some(p),
        };
        if suspect && !self.runnable() {
            detect(&self.rec);
        }
    }

    /// One look at a `DETECTED` thread: counted back in if it ran.
    pub(super) fn look_detected(&mut self) {
        let Some(c) = self.rec.clock.and_then(cpu_ns) else {
            return;
        };
        let ran = self.last_cpu.is_some_and(|l| l != c);
        self.last_cpu = Some(c);
        if ran {
            resume(&self.rec);
        }
    }
}
