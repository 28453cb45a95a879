//! Threads of the benchmark: the CPUs this process may run on, pinning a
//! thread to one, spawning pinned threads, and waiting for their results
//! with the stuck-trial limit ([`TRIAL_LIMIT`]).

use std::io;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A trial that has not finished after this long is reported as stuck (a
/// lost packet would otherwise hang the benchmark).
const TRIAL_LIMIT: Duration = Duration::from_secs(120);

/// CPUs in the calling thread's affinity mask, ascending.
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the kernel writes at most
    // `size_of::<cpu_set_t>()` bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins the calling thread to one CPU.
pub(super) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked to be below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the
    // size given.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu` when given. Pinning was checked to work
/// before the trials, so a failure here only loses the pinning.
pub(crate) fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let _ = pin_current_thread(cpu);
    }
}

/// Spawns a named benchmark thread, pinned to `cpu`.
pub(crate) fn spawn_pinned<T: Send + 'static>(
    name: String,
    cpu: Option<usize>,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<thread::JoinHandle<T>> {
    thread::Builder::new().name(name).spawn(move || {
        pin(cpu);
        f()
    })
}

/// Waits for `n` results on `rx`, failing if the trial is stuck.
pub(crate) fn collect<T>(
    rx: &mpsc::Receiver<io::Result<T>>,
    n: usize,
    what: &str,
) -> io::Result<Vec<T>> {
    collect_ticking(rx, n, what, TRIAL_LIMIT, &mut || {})
}

/// Like [`collect`], calling `tick` about every `every` while waiting.
pub(crate) fn collect_ticking<T>(
    rx: &mpsc::Receiver<io::Result<T>>,
    n: usize,
    what: &str,
    every: Duration,
    tick: &mut dyn FnMut(),
) -> io::Result<Vec<T>> {
    let deadline = Instant::now() + TRIAL_LIMIT;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        match rx.recv_timeout(left.min(every)) {
            Ok(r) => out.push(r?),
            Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => tick(),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                    "{what}: trial did not finish within {} s (a lost packet or a lost wake-up?)",
                    TRIAL_LIMIT.as_secs()
                ),
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other(format!(
                    "{what}: a benchmark thread died (panicked) before reporting"
                )))
            }
        }
    }
    Ok(out)
}

/// Joins benchmark threads, turning a panic into an error.
pub(crate) fn join_all<T>(handles: Vec<thread::JoinHandle<T>>, what: &str) -> io::Result<Vec<T>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| io::Error::other(format!("{what}: a benchmark thread panicked")))
        })
        .collect()
}

/// Runs `f` on one thread pinned to `cpu`, with the stuck-trial limit.
pub(crate) fn run_on_thread<T: Send + 'static>(
    what: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = mpsc::channel();
    let h = spawn_pinned(format!("bench-{what}"), cpu, move || {
        let _ = tx.send(f());
    })?;
    let mut r = collect(&rx, 1, what)?;
    join_all(vec![h], what)?;
    Ok(r.pop().expect("one result collected"))
}
