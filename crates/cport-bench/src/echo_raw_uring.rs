//! The raw io_uring echo peer: the single-thread loop a good io_uring
//! programmer writes, the yardstick for our io_uring backend.
//!
//! - one ring, created on the thread that uses it (`SINGLE_ISSUER` and
//!   `DEFER_TASKRUN`, see [`Setup`]);
//! - one multishot accept; per connection a slot in a slab (indices reused
//!   through a free list) with its own buffer, boxed so it never moves
//!   while the kernel writes into it, and one operation in flight: recv,
//!   then send (the rest again after a short send), then recv …;
//! - the loop: one `io_uring_enter` per round that submits every SQE
//!   queued since the last one and waits for at least one completion, then
//!   every completion drained in one pass over the CQ ring, the SQEs they
//!   lead to queued for the next round (submitted early only if the SQ
//!   ring fills up);
//! - no scan of the connections: a count of operations in flight;
//! - stopping: a 50 ms timeout ticks so the loop sees the stop flag; then
//!   one `ASYNC_CANCEL_ANY` cancels everything and the loop drains until
//!   nothing it issued is in flight (bounded by [`DRAIN_LIMIT`]).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, SubmissionQueue, Submitter};

use super::super::{pin, thread_use};
use super::Running;

/// How the ring is set up (what the kernel does between our calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `io_uring_queue_init(256, &ring, 0)`: completions are posted by task
    /// work the kernel delivers by interrupting the thread; ~50 % more CPU
    /// per request than the others in this echo on Linux 6.18.
    Plain,
    /// `COOP_TASKRUN | TASKRUN_FLAG` (5.19): task work waits until the
    /// thread enters the kernel anyway.
    Coop,
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (6.1): task work runs only when the
    /// thread waits for completions, in one batch — what liburing's
    /// documentation recommends for one thread that submits and waits.
    Defer,
}

/// Ring entries (the CQ ring gets twice as many).
const ENTRIES: u32 = 256;
/// Operation kinds, in the low 2 bits of `user_data`; the connection's slot
/// is in the bits above (for [`CTRL`]: 0 the tick, 1 the cancel).
const ACCEPT: u64 = 0;
const RECV: u64 = 1;
const SEND: u64 = 2;
const CTRL: u64 = 3;
const TICK_UD: u64 = CTRL;
const CANCEL_UD: u64 = (1 << 2) | CTRL;
/// How often the loop wakes up to look at the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// How long the loop waits, when stopping, for its cancelled operations.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// How long starting the server may take.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The tick's timeout; `static`, so valid for every SQE that points at it.
static TICK_TS: types::Timespec = types::Timespec::new().nsec(TICK.as_nanos() as u32);

/// Starts the loop on its own thread, pinned to `cpu`.
pub(super) fn raw_uring(
    listener: TcpListener,
    size: usize,
    stop: Arc<AtomicBool>,
    cpu: Option<usize>,
    setup: Setup,
) -> io::Result<Running> {
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let t = thread::spawn(move || {
        pin(cpu);
        // Created here: with SINGLE_ISSUER only this thread may submit.
        let ring = match build(setup) {
            Ok(r) => {
                let _ = ready_tx.send(Ok(()));
                r
            }
            Err(e) => {
                let msg = format!("raw io_uring ({setup:?}): cannot set up the ring: {e}");
                let _ = ready_tx.send(Err(io::Error::new(e.kind(), msg.clone())));
                return Err(io::Error::new(e.kind(), msg));
            }
        };
        serve(ring, &listener, size, &stop)?;
        Ok(thread_use())
    });
    match ready_rx.recv_timeout(START_LIMIT) {
        Ok(Ok(())) => Ok(Running {
            threads: vec![t],
            port: None,
            library_before: None,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::other("raw io_uring: the loop did not start")),
    }
}

fn build(setup: Setup) -> io::Result<IoUring> {
    let mut b = IoUring::builder();
    match setup {
        Setup::Plain => {}
        Setup::Coop => {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }
        Setup::Defer => {
            b.setup_single_issuer().setup_defer_taskrun();
        }
    }
    b.build(ENTRIES)
}

/// One connection: its socket, its buffer, where its echo stands.
struct Conn {
    sock: TcpStream,
    /// Boxed: the slab may reallocate, the box's heap block stays put.
    buf: Box<[u8]>,
    /// Bytes received by the last recv.
    len: usize,
    /// Bytes of them sent so far.
    sent: usize,
}

/// The loop's state besides the ring.
struct Server {
    conns: Vec<Option<Conn>>,
    /// Free slots of `conns`.
    free: Vec<usize>,
    size: usize,
    /// Operations issued whose last CQE has not come (the tick excluded).
    inflight: usize,
    stopping: Option<Instant>,
}

/// Serves until `stop`, then cancels everything; closes the ring before
/// the buffers are freed, and leaks them if operations may still be in
/// flight (an error).
fn serve(
    mut ring: IoUring,
    listener: &TcpListener,
    size: usize,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut srv = Server {
        conns: Vec::new(),
        free: Vec::new(),
        size,
        inflight: 0,
        stopping: None,
    };
    let r = run(&mut ring, &mut srv, listener, stop);
    drop(ring);
    if r.is_err() {
        // The kernel may still hold pointers into the buffers.
        std::mem::forget(srv);
    }
    r
}

/// Queues `e`, submitting first if the SQ ring is full.
fn push(
    sq: &mut SubmissionQueue<'_>,
    submitter: &Submitter<'_>,
    e: &squeue::Entry,
) -> io::Result<()> {
    loop {
        // SAFETY: every entry built in this file points only at memory that
        // stays valid until its last CQE: a connection's boxed buffer (the
        // slot is freed only after its one operation completed; on an error
        // the ring is closed and the buffers leaked, see `serve`) or the
        // `static` timespec.
        if unsafe { sq.push(e) }.is_ok() {
            return Ok(());
        }
        sq.sync();
        submitter.submit()?;
        sq.sync();
    }
}

fn run(
    ring: &mut IoUring,
    srv: &mut Server,
    listener: &TcpListener,
    stop: &AtomicBool,
) -> io::Result<()> {
    let (submitter, mut sq, mut cq) = ring.split();
    let accept = opcode::AcceptMulti::new(types::Fd(listener.as_raw_fd()))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(ACCEPT);
    let tick = opcode::Timeout::new(&TICK_TS as *const types::Timespec)
        .build()
        .user_data(TICK_UD);
    push(&mut sq, &submitter, &accept)?;
    srv.inflight += 1;
    push(&mut sq, &submitter, &tick)?;
    loop {
        sq.sync();
        match submitter.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            // Completions overflowed the CQ ring: drain it first.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            let (slot, kind) = ((ud >> 2) as usize, ud & 3);
            match kind {
                ACCEPT => srv.accepted(&mut sq, &submitter, &accept, cqe.result(), cqe.flags())?,
                RECV | SEND => srv.echoed(&mut sq, &submitter, slot, kind, cqe.result())?,
                _ if ud == TICK_UD => {
                    // Ticks on while draining, so the drain limit holds.
                    push(&mut sq, &submitter, &tick)?;
                    if srv.stopping.is_none() && stop.load(Ordering::Acquire) {
                        srv.stopping = Some(Instant::now());
                        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                            .build()
                            .user_data(CANCEL_UD);
                        push(&mut sq, &submitter, &cancel)?;
                        srv.inflight += 1;
                    }
                }
                _ => srv.inflight -= 1, // the cancel's own CQE
            }
        }
        cq.sync();
        if let Some(since) = srv.stopping {
            if srv.inflight == 0 {
                return Ok(());
            }
            if since.elapsed() > DRAIN_LIMIT {
                return Err(io::Error::other(format!(
                    "raw io_uring: {} operations still in flight {DRAIN_LIMIT:?} after the cancel",
                    srv.inflight
                )));
            }
        }
    }
}

impl Server {
    /// A CQE of the multishot accept.
    fn accepted(
        &mut self,
        sq: &mut SubmissionQueue<'_>,
        submitter: &Submitter<'_>,
        accept: &squeue::Entry,
        res: i32,
        flags: u32,
    ) -> io::Result<()> {
        if !cqueue::more(flags) {
            // The multishot ended (an error, or the cancel): re-arm it.
            self.inflight -= 1;
            if self.stopping.is_none() {
                push(sq, submitter, accept)?;
                self.inflight += 1;
            }
        }
        if res < 0 {
            return Ok(());
        }
        // SAFETY: a non-negative accept result is a new fd nothing else owns.
        let sock = unsafe { TcpStream::from_raw_fd(res) };
        if self.stopping.is_some() {
            return Ok(()); // dropped: closed
        }
        sock.set_nodelay(true)?;
        let conn = Conn {
            sock,
            buf: vec![0u8; self.size].into_boxed_slice(),
            len: 0,
            sent: 0,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(conn);
                i
            }
            None => {
                self.conns.push(Some(conn));
                self.conns.len() - 1
            }
        };
        self.recv(sq, submitter, slot)
    }

    /// A CQE of a connection's recv or send.
    fn echoed(
        &mut self,
        sq: &mut SubmissionQueue<'_>,
        submitter: &Submitter<'_>,
        slot: usize,
        kind: u64,
        res: i32,
    ) -> io::Result<()> {
        self.inflight -= 1;
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return Err(io::Error::other(format!(
                "raw io_uring: a completion for the empty slot {slot}"
            )));
        };
        if res <= 0 || self.stopping.is_some() {
            // End of stream, an error or the cancel: the connection ends
            // (the kernel holds nothing of it any more).
            self.conns[slot] = None;
            self.free.push(slot);
            return Ok(());
        }
        let n = res as usize;
        if kind == RECV {
            c.len = n;
            c.sent = 0;
        } else {
            c.sent += n;
            if c.sent == c.len {
                return self.recv(sq, submitter, slot);
            }
        }
        // The echo, or the rest of it after a short send.
        let rest = &c.buf[c.sent..c.len];
        let e = opcode::Send::new(
            types::Fd(c.sock.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .build()
        .user_data(((slot as u64) << 2) | SEND);
        push(sq, submitter, &e)?;
        self.inflight += 1;
        Ok(())
    }

    fn recv(
        &mut self,
        sq: &mut SubmissionQueue<'_>,
        submitter: &Submitter<'_>,
        slot: usize,
    ) -> io::Result<()> {
        let c = self.conns[slot].as_mut().expect("a live slot");
        let e = opcode::Recv::new(
            types::Fd(c.sock.as_raw_fd()),
            c.buf.as_mut_ptr(),
            c.buf.len() as u32,
        )
        .build()
        .user_data(((slot as u64) << 2) | RECV);
        push(sq, submitter, &e)?;
        self.inflight += 1;
        Ok(())
    }
}
