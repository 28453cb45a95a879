//! The reference model: what the test issued, and what each packet,
//! refusal and cancel must look like given what happened since.
//!
//! Every issued operation and post gets an id and a [`Rec`]. Its context
//! ([`Ctx`]) counts its own drops, so "every context dropped exactly once"
//! is checked per id; buffers are counted by the allocator (`alloc.rs`).

use std::io;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use completion_port::{is_aborted, is_port_closed, Buf, Packet, PacketKind, Port, Token};

use crate::world::{fill, key, pat, Kind, Slot};

/// Completion key of posted packets.
pub const POST_KEY: usize = usize::MAX - 1;
/// Completion key of timer packets (`Port::post_after`).
pub const TIMER_KEY: usize = usize::MAX - 2;

/// The per-operation context: its id, and the drop counters it bumps.
pub struct Ctx {
    pub id: usize,
    drops: Arc<Vec<AtomicU8>>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.drops[self.id].fetch_add(1, SeqCst);
    }
}

/// What was asked for.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Post {
        bytes: usize,
    },
    /// `Port::post_after`: a timer packet after `delay_us` µs (`Ok(0)`, or
    /// aborted after `cancel_timer`).
    Timer {
        delay_us: u64,
    },
    Nop,
    ReadAt {
        off: u64,
        len: usize,
    },
    WriteAt {
        len: usize,
    },
    Read {
        cap: usize,
    },
    Write {
        len: usize,
    },
    Recv {
        cap: usize,
        vectored: bool,
    },
    /// A receive through `Handle::with_timeout`: data, or `TimedOut` (the
    /// buffer back, empty) once `timeout_us` µs passed without any.
    RecvTimed {
        cap: usize,
        timeout_us: u64,
    },
    Send {
        len: usize,
        vectored: bool,
    },
    /// A read with no room in its buffer: always refused, `InvalidInput`.
    ReadNoRoom,
    /// A vectored receive of no buffers: always refused, `InvalidInput`.
    RecvNoBufs,
}

impl Op {
    fn kind(self) -> PacketKind {
        match self {
            Op::Post { .. } => PacketKind::Posted,
            Op::Timer { .. } => PacketKind::Timer,
            Op::Nop => PacketKind::Nop,
            Op::ReadAt { .. } | Op::Read { .. } | Op::ReadNoRoom => PacketKind::Read,
            Op::WriteAt { .. } | Op::Write { .. } => PacketKind::Write,
            Op::Recv { .. } | Op::RecvTimed { .. } | Op::RecvNoBufs => PacketKind::Recv,
            Op::Send { .. } => PacketKind::Send,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum St {
    /// The issue call has not returned yet (its packet may come first).
    Issuing,
    Accepted,
    Refused,
    /// Its packet was dequeued.
    Done,
}

#[derive(Debug)]
pub struct Rec {
    pub op: Op,
    /// `None` for posts.
    pub slot: Option<(usize, u64, usize)>,
    pub thread: usize,
    pub state: St,
    pub token: Option<Token>,
    /// The slot's disruption count when the issue started.
    pub disrupt: u64,
    /// `cancel(token)` was called for it.
    pub cancelled: bool,
    /// When its issue began (a timer fires no earlier than its delay).
    pub at: Instant,
}

/// An accepted operation on end `end` of generation `gen` of a slot.
pub struct Issued {
    pub slot: usize,
    pub gen: u64,
    pub end: usize,
    pub token: Token,
    pub id: usize,
}

/// Port life: open, `close` running, `close` returned.
pub const OPEN: u8 = 0;
pub const CLOSING: u8 = 1;
pub const CLOSED: u8 = 2;

#[derive(Default, Debug)]
pub struct Tally {
    pub accepted: AtomicUsize,
    pub refused: AtomicUsize,
    pub packets: AtomicUsize,
    pub ok: AtomicUsize,
    pub aborted: AtomicUsize,
    pub failed: AtomicUsize,
    pub cancels: AtomicUsize,
    pub closes: AtomicUsize,
    pub exits: AtomicUsize,
    /// Timed receives that ended with `TimedOut`.
    pub timeouts: AtomicUsize,
    /// Timers cancelled (their packet aborted).
    pub timer_cancels: AtomicUsize,
}

pub struct Model {
    pub port: Port<Ctx>,
    pub slots: Vec<Slot>,
    pub recs: Mutex<Vec<Rec>>,
    pub drops: Arc<Vec<AtomicU8>>,
    /// Accepted operations, for cancels.
    pub tokens: Mutex<Vec<Issued>>,
    /// Accepted timers `(token, id)`, for `cancel_timer`.
    pub timers: Mutex<Vec<(Token, usize)>>,
    pub life: AtomicU8,
    /// Issue calls may race `close`/`cancel_all` on the same handle (issue 17.1).
    pub races: bool,
    pub tally: Tally,
    /// Grows with every step and packet: the watchdog's sign of life.
    pub progress: AtomicU64,
    pub failure: Mutex<Option<String>>,
}

impl Model {
    pub fn new(port: Port<Ctx>, kinds: &[Kind], max_ids: usize, races: bool) -> Model {
        let slots = kinds
            .iter()
            .enumerate()
            .map(|(i, &k)| Slot::new(&port, i, k))
            .collect();
        Model {
            port,
            slots,
            recs: Mutex::new(Vec::new()),
            drops: Arc::new((0..max_ids).map(|_| AtomicU8::new(0)).collect()),
            tokens: Mutex::new(Vec::new()),
            timers: Mutex::new(Vec::new()),
            life: AtomicU8::new(OPEN),
            races,
            tally: Tally::default(),
            progress: AtomicU64::new(0),
            failure: Mutex::new(None),
        }
    }

    pub fn failed(&self) -> bool {
        self.failure.lock().unwrap().is_some()
    }

    /// Records the first failure; every thread stops at its next step.
    pub fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(why);
        }
    }

    /// A new record in state `Issuing`, and its context.
    pub fn begin(&self, op: Op, slot: Option<(usize, u64, usize)>, thread: usize) -> Ctx {
        let disrupt = slot.map_or(0, |(s, ..)| self.slots[s].disrupt.load(SeqCst));
        let mut recs = self.recs.lock().unwrap();
        let id = recs.len();
        assert!(
            id < self.drops.len(),
            "more operations than the model holds"
        );
        recs.push(Rec {
            op,
            slot,
            thread,
            state: St::Issuing,
            token: None,
            disrupt,
            cancelled: false,
            at: Instant::now(),
        });
        Ctx {
            id,
            drops: self.drops.clone(),
        }
    }

    /// Checks the outcome of issue call `id` (which ended with the port in
    /// state `life_after`, having started in `life_before`);
    /// `handle_closed` says the handle was closed before the call,
    /// `close_raced` that a close of it began before the call returned. Returns the refusal's
    /// context for the caller to drop after the lock is released.
    pub fn issued(
        &self,
        id: usize,
        r: Result<Option<Token>, (io::Error, Vec<Buf>)>,
        life: (u8, u8),
        (handle_closed, close_raced): (bool, bool),
    ) -> Result<(), String> {
        let mut recs = self.recs.lock().unwrap();
        let rec = &mut recs[id];
        let bad_input = matches!(rec.op, Op::ReadNoRoom | Op::RecvNoBufs);
        match r {
            Ok(token) => {
                if bad_input || handle_closed || life.0 == CLOSED {
                    return Err(format!("op {id} {:?} accepted; expected a refusal (handle closed {handle_closed}, port {life:?})", rec.op));
                }
                self.tally.accepted.fetch_add(1, SeqCst);
                match (rec.token, token) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(format!(
                            "op {id}: token {b:?} at issue, {a:?} in its packet"
                        ))
                    }
                    (_, Some(t)) => rec.token = Some(t),
                    _ => {}
                }
                if rec.state == St::Issuing {
                    rec.state = St::Accepted;
                }
            }
            Err((e, bufs)) => {
                self.tally.refused.fetch_add(1, SeqCst);
                if rec.state != St::Issuing {
                    return Err(format!("op {id} refused ({e}) but its packet came"));
                }
                rec.state = St::Refused;
                let why_ok = if bad_input {
                    e.kind() == io::ErrorKind::InvalidInput
                } else if is_port_closed(&e) {
                    life.1 != OPEN
                } else if e.raw_os_error() == Some(libc::EBADF) {
                    handle_closed || close_raced
                } else {
                    false
                };
                if !why_ok {
                    return Err(format!(
                        "op {id} {:?} refused with {e:?} (handle closed {handle_closed}, port {life:?})",
                        rec.op
                    ));
                }
                let expect_bufs = match rec.op {
                    Op::Post { .. } | Op::Timer { .. } | Op::Nop | Op::RecvNoBufs => 0,
                    Op::Recv { vectored: true, .. } | Op::Send { vectored: true, .. } => 2,
                    _ => 1,
                };
                if bufs.len() != expect_bufs {
                    return Err(format!(
                        "op {id}: refusal handed back {} buffers",
                        bufs.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks one dequeued packet against the model and records it.
    pub fn packet(&self, p: &mut Packet<Ctx>) -> Result<(), String> {
        self.progress.fetch_add(1, SeqCst);
        self.tally.packets.fetch_add(1, SeqCst);
        let id = p.context.id;
        let bufs = match p.take_buf() {
            Some(b) => vec![b],
            None => p.take_bufs(),
        };
        let mut recs = self.recs.lock().unwrap();
        let Some(rec) = recs.get_mut(id) else {
            return Err(format!("packet of unknown op {id}"));
        };
        let what = format!(
            "op {id} {:?} (thread {}, slot {:?})",
            rec.op, rec.thread, rec.slot
        );
        if !matches!(rec.state, St::Issuing | St::Accepted) {
            return Err(format!(
                "{what}: packet in state {:?} (duplicate?)",
                rec.state
            ));
        }
        rec.state = St::Done;
        if p.kind() != rec.op.kind() {
            return Err(format!("{what}: packet kind {:?}", p.kind()));
        }
        let disrupted = rec
            .slot
            .is_some_and(|(s, ..)| self.slots[s].disrupt.load(SeqCst) > rec.disrupt);
        // The port's close cancels what is in flight; a `get` running
        // during the close never sees those packets (tests/close_port_race.rs).
        let may_abort = rec.cancelled || disrupted;
        let (fill_byte, kind) = match rec.slot {
            None if matches!(rec.op, Op::Timer { .. }) => {
                let token_ok = match (rec.token, p.token()) {
                    (Some(a), Some(b)) => a == b,
                    (None, Some(b)) => {
                        rec.token = Some(b);
                        true
                    }
                    (_, None) => false,
                };
                let Op::Timer { delay_us } = rec.op else {
                    unreachable!()
                };
                let result_ok = match &p.result {
                    // Fired: never before its delay.
                    Ok(0) => rec.at.elapsed() >= Duration::from_micros(delay_us),
                    Err(e) if is_aborted(e) && rec.cancelled => {
                        self.tally.aborted.fetch_add(1, SeqCst);
                        true
                    }
                    _ => false,
                };
                return if p.key == TIMER_KEY && token_ok && result_ok && bufs.is_empty() {
                    self.tally.ok.fetch_add(1, SeqCst);
                    Ok(())
                } else {
                    Err(format!(
                        "{what}: timer packet key {:x} token {:?} result {:?} (cancelled {}, \
                         port life {}, {:?} after its issue began)",
                        p.key,
                        p.token(),
                        p.result,
                        rec.cancelled,
                        self.life.load(SeqCst),
                        rec.at.elapsed()
                    ))
                };
            }
            None => {
                let ok = p.key == POST_KEY
                    && p.token().is_none()
                    && matches!(rec.op, Op::Post { bytes } if p.result.as_ref().ok() == Some(&bytes));
                return if ok && bufs.is_empty() {
                    self.tally.ok.fetch_add(1, SeqCst);
                    Ok(())
                } else {
                    Err(format!(
                        "{what}: posted packet key {:x} result {:?}",
                        p.key, p.result
                    ))
                };
            }
            Some((s, gen, end)) => {
                if p.key != key(s, gen, end) {
                    return Err(format!(
                        "{what}: key {:x}, expected {:x}",
                        p.key,
                        key(s, gen, end)
                    ));
                }
                (fill(s, gen), self.slots[s].kind)
            }
        };
        match (rec.token, p.token()) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!("{what}: token {b:?}, issued {a:?}"))
            }
            (_, None) => return Err(format!("{what}: no token in its packet")),
            (_, t) => rec.token = t,
        }
        let n = match &p.result {
            Ok(n) => *n,
            Err(e) if is_aborted(e) => {
                self.tally.aborted.fetch_add(1, SeqCst);
                return if may_abort {
                    Ok(())
                } else {
                    Err(format!(
                        "{what}: aborted, but nothing cancelled it (port life {})",
                        self.life.load(SeqCst)
                    ))
                };
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                self.tally.timeouts.fetch_add(1, SeqCst);
                // Its time-out passed with no data: the buffer comes back
                // empty. Only a timed receive may end so.
                return if matches!(rec.op, Op::RecvTimed { .. })
                    && bufs.len() == 1
                    && bufs[0].is_empty()
                {
                    Ok(())
                } else {
                    Err(format!("{what}: timed out with {} buffers", bufs.len()))
                };
            }
            Err(e) => {
                self.tally.failed.fetch_add(1, SeqCst);
                let peer_gone = matches!(
                    e.raw_os_error(),
                    Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN)
                );
                return if disrupted && peer_gone && kind != Kind::File {
                    Ok(())
                } else {
                    Err(format!("{what}: failed with {e:?} (disrupted {disrupted})"))
                };
            }
        };
        self.tally.ok.fetch_add(1, SeqCst);
        let got: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        let all_fill = got.iter().all(|&b| b == fill_byte);
        let ok = match rec.op {
            Op::Nop => n == 0 && bufs.is_empty(),
            Op::ReadAt { off, len } => {
                n == len
                    && got.len() == len
                    && got
                        .iter()
                        .enumerate()
                        .all(|(i, &b)| b == pat(off as usize + i))
            }
            Op::WriteAt { len } => n == len,
            Op::Read { cap } if kind == Kind::Null => n == 0 && got.is_empty() && cap > 0,
            Op::Read { cap } => n == got.len() && n <= cap && all_fill && (n > 0 || disrupted),
            Op::Write { len } => n == len,
            Op::Recv { cap, .. } => n == got.len() && n <= cap && all_fill && (n > 0 || disrupted),
            Op::Send { len, .. } => (1..=len).contains(&n) && got.len() == len,
            Op::RecvTimed { cap, .. } => {
                n == got.len() && n <= cap && all_fill && (n > 0 || disrupted)
            }
            Op::Post { .. } | Op::Timer { .. } | Op::ReadNoRoom | Op::RecvNoBufs => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{what}: result {n}, buffers {} bytes (disrupted {disrupted})",
                got.len()
            ))
        }
    }

    /// Marks `id` as targeted by a cancel; returns whether its packet was
    /// dequeued already (then the cancel must find nothing).
    pub fn cancelling(&self, id: usize) -> bool {
        let mut recs = self.recs.lock().unwrap();
        recs[id].cancelled = true;
        recs[id].state == St::Done
    }

    /// Operations accepted whose packet has not been dequeued.
    pub fn outstanding(&self) -> Vec<usize> {
        let recs = self.recs.lock().unwrap();
        (0..recs.len())
            .filter(|&i| matches!(recs[i].state, St::Accepted | St::Issuing))
            .collect()
    }

    /// A description of up to 10 operations, for failure messages.
    pub fn describe(&self, ids: &[usize]) -> String {
        let recs = self.recs.lock().unwrap();
        ids.iter()
            .take(10)
            .map(|&i| format!("\n  op {i}: {:?}", recs[i]))
            .collect()
    }

    /// The final check: every context dropped exactly once; every
    /// accepted operation dequeued once, unless the port closed.
    pub fn final_check(&self) -> Result<(), String> {
        let recs = self.recs.lock().unwrap();
        let closed = self.life.load(SeqCst) == CLOSED;
        for (i, rec) in recs.iter().enumerate() {
            let drops = self.drops[i].load(SeqCst);
            if drops != 1 {
                return Err(format!(
                    "op {i} {rec:?}: its context was dropped {drops} times"
                ));
            }
            let ended = match rec.state {
                St::Done | St::Refused => true,
                St::Accepted => closed,
                St::Issuing => false,
            };
            if !ended {
                return Err(format!("op {i} {rec:?}: no packet (lost)"));
            }
        }
        Ok(())
    }
}
