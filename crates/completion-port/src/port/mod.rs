//! [`Port`]: the completion port, and [`PortBuilder`]. This page is where
//! the port's behaviour is described: what counts as running, how a
//! blocked thread is noticed, when an operation reaches the kernel, what
//! happens while nobody waits, and where this port differs from Windows.
//! Citations of the form *windows-semantics §S.N* refer to
//! `docs/windows-semantics.md` in the repository: what Windows does, point
//! by point.
//!
//! # Where a packet goes
//! - **Born**: [`Port::post`] (`Packet::posted`), or an operation's
//!   completion collected from the backend (`Core::complete` in
//!   `core/reap.rs`, which runs the [completion
//!   hook](PortBuilder::on_completion)).
//! - **Queued**: pushed on the FIFO queue (`Core::post` in `core/mod.rs`,
//!   `Core::queue_completions` in `core/reap.rs`), then handed straight to
//!   a parked thread by `Core::dispatch` (`core/mod.rs`) when one may take
//!   it.
//! - **Dequeued**: `Core::get` in `core/mod.rs`.
//!
//! # The concurrency value
//! At most `concurrency` threads *run* completions of a port at once (0:
//! one per CPU of the process's affinity mask); further callers of
//! [`get`](Port::get) wait, and waiting threads are released last in, first
//! out (windows-semantics §1.3–1.5). A thread counts as running from the
//! moment `get` returns it a packet until:
//! - it calls `get` or `get_many` again (on any port: a thread runs for one
//!   port at a time),
//! - it enters a blocking scope ([`Port::blocking`],
//!   [`Port::blocking_guard`]),
//! - the blocked-thread monitor sees it blocked in the kernel (below), or
//! - it exits.
//!
//! When it runs again (the scope ends, or the monitor sees it run) it counts
//! again, which may take the count above the value for a while, as on
//! Windows; no packet is handed out — not even to a running thread asking
//! again — until the count is back below the value.
//!
//! ## Blocked-thread detection
//! Windows' scheduler knows when a running thread blocks on anything; a
//! library has to look. One monitor thread per process does, for the ports
//! built with detection on ([`PortBuilder::blocking_detection`], the
//! default):
//! - **When it looks**: only while a packet waits for a slot (packets
//!   queued and every slot held). Otherwise it does not look, and a blocked
//!   worker keeps its slot — nobody needs it — until a packet comes for the
//!   full port; the monitor's first look then counts it out, however long
//!   it has been blocked.
//! - **How**: every 0.25 ms while it looks, it reads each running
//!   thread's CPU-time clock, and for a thread that did not run during the
//!   whole period, its scheduler state (`/proc/self/task/<tid>/stat`).
//!   Anything but running or runnable is blocked: the thread is counted out
//!   and a waiter released. A preempted thread is runnable: never counted
//!   out. With `CPORT_DETECT=switch`, where the kernel lets a process count
//!   its threads' context switches (`perf_event_open`), each switch-out of
//!   a watched thread wakes the monitor instead (sooner, and more costly
//!   where workers share a CPU; the signal `SIGRTMAX-3` is then the
//!   library's). [`Port::blocking_detection`] says which runs.
//! - **Cost**: nothing while no packet waits for a slot; on a port kept
//!   full, one monitor wake-up every 0.25 ms (sampling). Measured delays
//!   and costs: `BENCHMARKS.md`, "Blocking detection".
//! - **Off**: a thread that blocks without a scope then keeps its slot;
//!   wrap such calls in [`Port::blocking`], which works with detection on
//!   too and is faster than waiting to be seen.
//!
//! # When an operation reaches the kernel
//! The epoll backend tries every operation inside its issue call. The
//! io_uring backend batches: an operation issued by a thread that runs for
//! the port, while no thread waits in the kernel for it, stays in the ring
//! and goes with that thread's next `get` (in the same system call as its
//! wait, when it goes on to wait), blocking scope or exit — or with any
//! other thread's entry into the kernel. If none of those comes (the
//! thread blocks somewhere the port cannot see, say on a channel), the
//! port's monitor submits it within about a millisecond (below): so no
//! operation depends on detection, or on the backend, to start. Any other
//! operation is submitted before its issue call returns. A full ring is
//! submitted to make room, never an error.
//!
//! # While nobody waits
//! The leader — the one thread waiting in the kernel for the port — is
//! what normally collects completions. When operations are in flight and
//! no thread waits (every worker busy or blocked elsewhere, or gone), the
//! process's monitor keeps the port moving: every millisecond it submits
//! what waits in the ring and, if nothing was collected meanwhile, collects
//! what is ready without blocking (`core/progress.rs`). So a completion's
//! hook runs — and the C ABI writes an `OVERLAPPED`'s state — within a few
//! milliseconds of the I/O ending, whether or not anybody dequeues, and a
//! queue kept busy by posts cannot starve completions behind it.
//!
//! # Differences from Windows
//! - A block is noticed one or two sampling periods late (0.25–0.5 ms), or
//!   not at all with detection off and no blocking scope; Windows notices
//!   at once.
//! - `get` returns [`GetError::Timeout`] / [`GetError::Closed`] instead of
//!   `WAIT_TIMEOUT` / `ERROR_ABANDONED_WAIT_0`.
//! - Errors the **kernel** reports for an operation (`ENOTCONN`, `EBADF` on
//!   a wrong kind of fd, …) arrive in its packet; only argument and state
//!   checks (closed port, oversized buffer, empty vectored list) fail at the
//!   call. Windows reports some kernel errors at the call instead
//!   (windows-semantics §3.13).
//! - A read at or past the end of a file completes with `Ok(0)`, the Rust
//!   convention, where Windows fails it with `ERROR_HANDLE_EOF`
//!   (windows-semantics §5.24).
//! - `close` waits until every operation in flight was cancelled and
//!   reaped, so that their buffers are freed before it returns.
//! - A port belongs to the process that created it. In a child made by
//!   `fork` (which shares the port's io_uring or epoll instance with its
//!   parent) every call on it fails with the error
//!   [`is_port_forked`](crate::is_port_forked) recognises, and dropping it
//!   touches nothing of the parent's (`core/fork.rs`); the child should
//!   `exec`.
//! - Timer packets ([`Port::post_after`]) and per-operation time-outs
//!   ([`Handle::with_timeout`](crate::Handle::with_timeout)) are extensions.
//!
//! [`GetError::Timeout`]: crate::GetError::Timeout
//! [`GetError::Closed`]: crate::GetError::Closed

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

pub use crate::core::{BlockingDetection, BlockingGuard, Delivery, Packet, PacketParts, PortStats};

use crate::core::{monitor, running, CompletionHook, Core, Token};
use crate::driver::{Backend, Config, Driver};
use crate::error::{invalid_input, GetError, Rejected};
use crate::handle::{associate, AssociateError};
use crate::op::OpenOptions;
use crate::Handle;

/// A completion port: a FIFO queue of completion packets that any number of
/// threads dequeue from, LIFO, at most `concurrency` of them running at
/// once.
///
/// `C` is the per-operation context (the typed "OVERLAPPED"): every
/// operation and every post carries one, and its packet hands it back.
///
/// Cheap to clone (`Arc`); all clones are the same port. The port closes on
/// [`close`](Self::close) or when the last clone is dropped.
///
/// ```
/// use completion_port::Port;
/// use std::time::Duration;
///
/// # fn main() -> std::io::Result<()> {
/// let port = Port::<String>::new(0)?;
/// let workers: Vec<_> = (0..4)
///     .map(|_| {
///         let port = port.clone();
///         std::thread::spawn(move || {
///             let mut handled = 0;
///             // Each worker exits on its "stop" packet (key 0).
///             while let Ok(packet) = port.get(Some(Duration::from_secs(10))) {
///                 if packet.key == 0 {
///                     break;
///                 }
///                 assert_eq!(packet.context, format!("job {}", packet.key));
///                 handled += 1;
///             }
///             handled
///         })
///     })
///     .collect();
/// for job in 1..=100 {
///     port.post(job, 0, format!("job {job}"))?;
/// }
/// for _ in 0..4 {
///     port.post(0, 0, String::new())?;
/// }
/// let handled: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
/// assert_eq!(handled, 100);
/// # Ok(()) }
/// ```
pub struct Port<C: Send + 'static> {
    inner: Arc<Owner<C>>,
}

/// Closes the core when the last `Port` clone goes. Handles keep the core
/// (backend) alive, but not the port open.
pub(crate) struct Owner<C: Send + 'static> {
    pub(crate) core: Arc<Core<C>>,
}

impl<C: Send + 'static> Drop for Owner<C> {
    fn drop(&mut self) {
        self.core.close();
    }
}

impl<C: Send + 'static> Clone for Port<C> {
    fn clone(&self) -> Self {
        Port {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Send + 'static> Port<C> {
    /// A port with the given concurrency value (0: the number of CPUs this
    /// process may run on) and default settings.
    pub fn new(concurrency: usize) -> io::Result<Port<C>> {
        PortBuilder::new().concurrency(concurrency).build()
    }

    /// A builder for the other settings.
    pub fn builder() -> PortBuilder<C> {
        PortBuilder::new()
    }

    /// Associates `fd` (a `File`, `TcpListener`, `TcpStream`, `UdpSocket`,
    /// `UnixStream`, `socket2::Socket`, pipe end, …) with this port: every
    /// operation issued on the returned handle queues its packet here,
    /// carrying `key`. The handle owns the fd from now on.
    ///
    /// Refused, with the fd handed back open, when the port is closed or the
    /// fd is already associated with a port (windows-semantics §2.8).
    pub fn associate(
        &self,
        fd: impl Into<OwnedFd>,
        key: usize,
    ) -> Result<Handle<C>, AssociateError> {
        associate(&self.inner, fd.into(), key)
    }

    /// Dequeues one packet, waiting up to `timeout` (`None`: forever;
    /// `Some(Duration::ZERO)`: poll).
    ///
    /// Returns at once with the oldest queued packet when the calling thread
    /// may run (fewer than `concurrency` threads are running, counting this
    /// one out since it asked again); otherwise waits, and waiting threads
    /// are served last-in first-out.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Packet<C>, GetError> {
        self.inner.core.get(timeout)
    }

    /// Waits like [`get`](Self::get) for one packet, then also takes
    /// whatever else is queued, up to `max` packets in all, without waiting
    /// for more (windows-semantics §4.18). Appends to `out`; returns how many were
    /// added. `max == 0` is refused with `InvalidInput`.
    pub fn get_many(
        &self,
        out: &mut Vec<Packet<C>>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        if max == 0 {
            return Err(GetError::Io(invalid_input(
                "get_many needs room for at least one packet",
            )));
        }
        self.inner.core.get_many(out, max, timeout)
    }

    /// Queues a packet carrying exactly `key`, `Ok(bytes)` and `context`;
    /// no I/O is involved (windows-semantics §4.19). Refused (context handed back) when
    /// the port is closed. A post that races with [`close`](Self::close)
    /// may succeed and have its packet dropped with the rest of the queue,
    /// as if it had been posted just before.
    pub fn post(&self, key: usize, bytes: usize, context: C) -> Result<(), Rejected<C>> {
        self.inner.core.post(key, bytes, context)
    }

    /// Queues a timer packet `delay` from now: its `key`, `Ok(0)`, `context`,
    /// [`PacketKind::Timer`](crate::PacketKind::Timer). Returns the timer's
    /// token, for [`cancel_timer`](Self::cancel_timer). Costs no thread:
    /// pending timers wait in one ordered map per port, and the kernel
    /// wakes the port for the earliest only (io_uring: one kernel time-out;
    /// epoll: a timerfd); arming is `O(log n)` in the timers pending. A
    /// timer is an operation of the port
    /// like any other (closing the port cancels it, and drops its context).
    /// Refused (context back) when the port is closed.
    ///
    /// ```
    /// use completion_port::{PacketKind, Port};
    /// use std::time::Duration;
    /// # fn main() -> std::io::Result<()> {
    /// let port = Port::<&str>::new(0)?;
    /// port.post_after(Duration::from_millis(20), 2, "later")?;
    /// let early = port.post_after(Duration::from_secs(60), 3, "never")?;
    /// port.cancel_timer(early)?; // its packet comes at once, cancelled
    /// let p = port.get(None)?;
    /// assert_eq!((p.kind(), p.context), (PacketKind::Timer, "never"));
    /// assert!(completion_port::is_aborted(p.result.as_ref().unwrap_err()));
    /// let p = port.get(None)?;
    /// assert_eq!((p.key, p.context, p.bytes()), (2, "later", 0));
    /// # Ok(()) }
    /// ```
    pub fn post_after(
        &self,
        delay: Duration,
        key: usize,
        context: C,
    ) -> Result<Token, Rejected<C>> {
        self.inner.core.post_after(delay, key, context)
    }

    /// Opens `path` without blocking the calling thread (io_uring's
    /// `openat`; the epoll backend's blocking pool): the packet brings the
    /// file ([`Packet::take_opened`]), not yet associated — associate it
    /// with this or another port. A failure (`ENOENT`, `EACCES`, …) comes in
    /// the packet; a path with a NUL byte is refused at once.
    ///
    /// ```
    /// use completion_port::{Buf, OpenOptions, Port};
    /// # fn main() -> std::io::Result<()> {
    /// let dir = tempfile::tempdir()?;
    /// std::fs::write(dir.path().join("hello.txt"), b"hello")?;
    /// let port = Port::<&str>::new(0)?;
    /// port.open(dir.path().join("hello.txt"), OpenOptions::read(), 0, "open")?;
    /// let file = port.get(None)?.take_opened().expect("opened");
    /// let file = port.associate(file, 1)?;
    /// file.read_at(Buf::with_capacity(16), 0, "read")?;
    /// assert_eq!(&port.get(None)?.take_buf().unwrap()[..], b"hello");
    /// # Ok(()) }
    /// ```
    pub fn open(
        &self,
        path: impl AsRef<std::path::Path>,
        options: OpenOptions,
        key: usize,
        context: C,
    ) -> Result<Token, Rejected<C>> {
        let (flags, mode) = options.flags();
        self.inner
            .core
            .open(path.as_ref(), flags, mode, key, context)
    }

    /// Cancels a timer from [`post_after`](Self::post_after): its packet
    /// comes at once, with `ECANCELED` (see [`is_aborted`](crate::is_aborted))
    /// and its context. `NotFound` ("nothing to cancel: …") when it already
    /// fired.
    pub fn cancel_timer(&self, token: Token) -> io::Result<()> {
        self.inner.core.cancel_timer(token)
    }

    /// The result of an operation that queues no packet — issued through
    /// [`Handle::without_packets`](crate::Handle::without_packets), or
    /// completed during its issue call on a handle in
    /// [skip-on-success](crate::Handle::set_skip_packet_on_success) mode —
    /// if it has completed (`GetOverlappedResult` without waiting). Returns
    /// `None` while it is in flight, and for tokens of operations that
    /// yield packets. Each result is returned once.
    pub fn take_result(&self, token: Token) -> Option<Packet<C>> {
        self.inner.core.take_result(token)
    }

    /// Waits up to `timeout` for the result of an operation that queues no
    /// packet (`GetOverlappedResult` with `bWait`; see
    /// [`take_result`](Self::take_result)). The calling thread counts as
    /// blocked meanwhile, and drives the port's backend itself when no
    /// other thread waits in the kernel for the port, so it needs no worker
    /// to make progress. A token of an operation that yields a packet is
    /// never found here: the call times out.
    pub fn wait_result(
        &self,
        token: Token,
        timeout: Option<Duration>,
    ) -> Result<Packet<C>, GetError> {
        self.inner.core.wait_result(token, timeout)
    }

    /// Closes the port: every waiting thread returns [`GetError::Closed`],
    /// queued packets are dropped, operations in flight are cancelled and
    /// their buffers and contexts dropped; later calls are refused. Returns
    /// once nothing is in flight any more. Handles stay open for blocking
    /// I/O. Closing twice is harmless.
    pub fn close(&self) {
        self.inner.core.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.core.is_closed()
    }

    /// The concurrency value in force (0 was resolved to the CPU count).
    pub fn concurrency(&self) -> usize {
        self.inner.core.concurrency
    }

    /// The backend running this port's I/O.
    pub fn backend(&self) -> Backend {
        self.inner.core.driver.backend()
    }

    /// Why `Backend::Auto` chose epoll instead of io_uring (`None` when it
    /// did not fall back, or a backend was forced).
    pub fn fallback_reason(&self) -> Option<&str> {
        self.inner.core.driver.fallback_reason()
    }

    /// A snapshot of the port's counters.
    pub fn stats(&self) -> PortStats {
        self.inner.core.stats()
    }

    /// Which blocked-thread detection mechanism watches this port's
    /// threads: [`BlockingDetection::Off`] when the port was built with
    /// detection off; otherwise the process-wide one —
    /// [`BlockingDetection::Sampling`] by default, or
    /// [`BlockingDetection::SwitchEvents`] when the environment variable
    /// `CPORT_DETECT=switch` (read once per process) asks for them and the
    /// kernel lets the process count its threads' context switches
    /// (`perf_event_open`).
    pub fn blocking_detection(&self) -> BlockingDetection {
        if self.inner.core.detect {
            monitor::mechanism()
        } else {
            BlockingDetection::Off
        }
    }

    /// Runs `f` in a blocking scope: while it runs, the calling thread does
    /// not count as running for the port it last dequeued from, so another
    /// waiter may be released (see the [module docs](self)). A thread that
    /// is not running for any port is unaffected.
    pub fn blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        let _g = self.blocking_guard();
        f()
    }

    /// Opens a blocking scope that lasts until the guard is dropped; see
    /// [`blocking`](Self::blocking).
    pub fn blocking_guard(&self) -> BlockingGuard {
        BlockingGuard::enter()
    }

    /// Whether the calling thread counts as running for this port.
    pub fn is_running_here(&self) -> bool {
        running::is_counted_for_core(&self.inner.core)
    }
}

impl<C: Send + 'static> fmt::Debug for Port<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Port").finish_non_exhaustive()
    }
}

/// Settings of a new [`Port`] whose packets carry contexts of type `C`.
pub struct PortBuilder<C> {
    concurrency: usize,
    entries: u32,
    fixed_files: Option<u32>,
    backend: Backend,
    blocking_detection: bool,
    send_zerocopy: usize,
    on_completion: Option<CompletionHook<C>>,
    _context: PhantomData<fn() -> C>,
}

impl<C> fmt::Debug for PortBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortBuilder")
            .field("concurrency", &self.concurrency)
            .field("entries", &self.entries)
            .field("fixed_files", &self.fixed_files)
            .field("backend", &self.backend)
            .field("blocking_detection", &self.blocking_detection)
            .field("send_zerocopy_threshold", &self.send_zerocopy)
            .field("on_completion", &self.on_completion.is_some())
            .finish()
    }
}

impl<C: Send + 'static> Default for PortBuilder<C> {
    fn default() -> Self {
        PortBuilder::new()
    }
}

impl<C: Send + 'static> PortBuilder<C> {
    /// Defaults: concurrency 0 (one per CPU), 256 ring entries, automatic
    /// backend, blocking detection on.
    pub fn new() -> PortBuilder<C> {
        PortBuilder {
            concurrency: 0,
            entries: 256,
            fixed_files: None,
            backend: Backend::Auto,
            blocking_detection: true,
            send_zerocopy: 0,
            on_completion: None,
            _context: PhantomData,
        }
    }

    /// How many threads may run completions of this port at once. 0 (the
    /// default) means the number of CPUs in this process's affinity mask.
    /// Windows servers often use 0, or 2× CPUs when handlers block.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Size of the submission ring (io_uring entries; rounded up to a power
    /// of two, clamped to the kernel's maximum). It bounds how many
    /// operations are handed to the kernel per system call, not how many may
    /// be in flight: a full ring is flushed, never an error. The completion
    /// ring is four times larger. Default 256; raise it for servers that
    /// issue thousands of operations per wake.
    pub fn entries(mut self, n: u32) -> Self {
        self.entries = n;
        self
    }

    /// How many associated fds the io_uring backend keeps in the ring's
    /// table of registered files, so that their operations skip the
    /// kernel's fd lookup and file reference count (Linux 5.19). Each fd
    /// takes a slot at its first operation and gives it back when it is
    /// closed, at one `io_uring_register` call each (about 140 ns apiece);
    /// fds beyond the table use their number. Clamped to the open-file
    /// limit (`ulimit -n`); 8 bytes of kernel memory per slot. What it
    /// saves, about 18 ns per operation that completes at once, did not
    /// show in the echo benchmark (no gain, within its noise), so the
    /// default is 0, no table: the environment variable
    /// `CPORT_FIXED_FILES` sets another default (for benchmarks). The
    /// epoll backend has no such table and ignores it. Details:
    /// `driver/uring/files.rs`; numbers: BENCHMARKS.md ("Registered
    /// files").
    pub fn fixed_files(mut self, n: u32) -> Self {
        self.fixed_files = Some(n);
        self
    }

    /// Which backend to use; [`Backend::Auto`] (default) honours the
    /// `CPORT_BACKEND` environment variable.
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }

    /// Whether a thread that runs completions of this port and blocks in
    /// the kernel without a blocking scope — a `read`, a sleep, a
    /// contended mutex, a page fault — stops counting as running, as on
    /// Windows (windows-semantics §1.4). Default: on. How it works, when it
    /// looks and what it costs: [the module docs](self#blocked-thread-detection).
    /// Turn it off for ports whose handlers never block, or that mark their
    /// blocking calls with [`Port::blocking`].
    pub fn blocking_detection(mut self, on: bool) -> Self {
        self.blocking_detection = on;
        self
    }

    /// Sends of at least `min_bytes` on a TCP socket go out zero-copy on
    /// the io_uring backend (`IORING_OP_SEND_ZC`, Linux 6.0; vectored
    /// sends `IORING_OP_SENDMSG_ZC`, 6.1): the kernel transmits from the
    /// buffer's pages instead of copying them into the socket. 0 (the
    /// default) means never. A kernel without these opcodes sends plainly;
    /// so does the epoll backend, always. Results, ordering and whole-send
    /// semantics do not change.
    ///
    /// What it costs: the packet comes only when the kernel no longer
    /// references the buffer — on a network once the peer acknowledged the
    /// bytes, about a round trip after a plain send's — and a peer that
    /// stops reading holds it (and, since the operation keeps its socket
    /// open, closing the handle or the port waits) until the peer reads or
    /// the connection ends. On loopback the kernel copies anyway
    /// ([`PortStats::zerocopy_copied`] counts it). Measured on and off in
    /// BENCHMARKS.md ("Zero-copy sends"); details in the io_uring backend's
    /// `send_zc.rs`.
    pub fn send_zerocopy_threshold(mut self, min_bytes: usize) -> Self {
        self.send_zerocopy = min_bytes;
        self
    }

    /// Runs `hook` on every operation's packet at the moment its completion
    /// is collected — before the packet is queued (or its result kept by
    /// token) — on whichever thread collects it: a thread waiting in
    /// [`get`](Port::get), the issuing thread, or the port's monitor, which
    /// keeps collecting while no thread waits (so the hook runs within a
    /// few milliseconds of the I/O ending even if nobody dequeues). Once
    /// per operation, whatever its outcome; never for posted packets. The
    /// hook may look at the result and context, take the buffers, and say
    /// whether the packet is still delivered ([`Delivery`]).
    ///
    /// This is the moment Windows' I/O manager writes an `OVERLAPPED`'s
    /// status and signals its event; the C ABI does exactly that here.
    /// Keep it short and non-blocking: it runs on the port's completion
    /// path. It may post, issue or cancel, but must not wait on the port.
    ///
    /// ```
    /// use completion_port::{Buf, Delivery, Packet, Port};
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    ///
    /// # fn main() -> std::io::Result<()> {
    /// // Each operation's context records its outcome as soon as it ends.
    /// struct Op { done: Arc<AtomicUsize> }
    /// let port = Port::<Op>::builder()
    ///     .on_completion(|p: &mut Packet<Op>| {
    ///         p.context.done.store(p.bytes() + 1, Ordering::Release);
    ///         Delivery::Deliver
    ///     })
    ///     .build()?;
    /// let (a, mut b) = std::os::unix::net::UnixStream::pair()?;
    /// let a = port.associate(a, 1)?;
    /// let done = Arc::new(AtomicUsize::new(0));
    /// a.recv(Buf::with_capacity(16), Op { done: done.clone() })?;
    /// std::io::Write::write_all(&mut b, b"hi")?;
    /// // No thread dequeues: the completion is still collected.
    /// while done.load(Ordering::Acquire) == 0 {
    ///     std::thread::sleep(std::time::Duration::from_millis(1));
    /// }
    /// assert_eq!(done.load(Ordering::Acquire), 3); // 2 bytes, + 1
    /// # Ok(()) }
    /// ```
    pub fn on_completion(
        mut self,
        hook: impl Fn(&mut Packet<C>) -> Delivery + Send + Sync + 'static,
    ) -> Self {
        self.on_completion = Some(Box::new(hook));
        self
    }

    /// Creates the port.
    ///
    /// Fails with a message naming the cause when the backend cannot start
    /// (io_uring denied by seccomp or `kernel.io_uring_disabled`, kernel too
    /// old, locked-memory limit) and with `InvalidInput` for 0 entries.
    pub fn build(self) -> io::Result<Port<C>> {
        if self.entries == 0 {
            return Err(invalid_input("a port needs at least one ring entry"));
        }
        let concurrency = if self.concurrency == 0 {
            cpu_count()
        } else {
            self.concurrency
        };
        let driver = Driver::open(
            self.backend,
            Config {
                entries: self.entries.min(32768),
                fixed_files: self.fixed_files.unwrap_or_else(default_fixed_files),
                send_zerocopy: self.send_zerocopy,
            },
        )?;
        Ok(Port::from_core(Core::new(
            concurrency,
            driver,
            self.blocking_detection,
            self.on_completion,
        )))
    }
}

impl<C: Send + 'static> Port<C> {
    fn from_core(core: Arc<Core<C>>) -> Port<C> {
        Port {
            inner: Arc::new(Owner { core }),
        }
    }

    /// The port's core.
    pub(crate) fn core(&self) -> &Arc<Core<C>> {
        &self.inner.core
    }

    pub(crate) fn from_owner(inner: Arc<Owner<C>>) -> Port<C> {
        Port { inner }
    }
}

/// CPUs in this process's affinity mask (at least 1).
pub(crate) fn cpu_count() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most `size_of::<cpu_set_t>()` bytes into it.
    let n = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set) as usize
        } else {
            0
        }
    };
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// [`PortBuilder::fixed_files`]'s default: `CPORT_FIXED_FILES`, else 0.
fn default_fixed_files() -> u32 {
    std::env::var("CPORT_FIXED_FILES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
