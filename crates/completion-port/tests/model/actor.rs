//! One model thread: random steps — issue, post, cancel, close and
//! re-associate, dequeue, blocking scopes, exit — each checked against
//! the model as it returns.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use completion_port::{Buf, GetError, Handle, Token};

use crate::alloc::{buf, filled};
use crate::common::Rng;
use crate::model::{Ctx, Issued, Model, Op, CLOSED, CLOSING, OPEN};
use crate::world::{fill, Kind, AREA};

/// Most operations in flight before a thread dequeues instead of issuing.
const MAX_IN_FLIGHT: usize = 96;

/// What a step asks of the thread that runs it.
pub enum Next {
    Go,
    /// End this OS thread; the logical thread goes on in a new one.
    Exit,
}

/// One logical thread of the model.
pub struct Actor<'m> {
    pub m: &'m Model,
    pub id: usize,
    pub rng: Rng,
    /// The step at which this thread closes the port, if it is the one.
    pub close_at: Option<usize>,
    pub step: usize,
    out: Vec<completion_port::Packet<Ctx>>,
}

impl<'m> Actor<'m> {
    pub fn new(m: &'m Model, id: usize, seed: u64, close_at: Option<usize>) -> Actor<'m> {
        Actor {
            m,
            id,
            rng: Rng::new(seed),
            close_at,
            step: 0,
            out: Vec::new(),
        }
    }

    pub fn step(&mut self) -> Result<Next, String> {
        self.step += 1;
        self.m.progress.fetch_add(1, SeqCst);
        if self.close_at == Some(self.step) {
            self.close_port()?;
        }
        let in_flight = {
            let t = &self.m.tally;
            t.accepted
                .load(SeqCst)
                .saturating_sub(t.packets.load(SeqCst))
        };
        let pick = if in_flight >= MAX_IN_FLIGHT {
            60
        } else {
            self.rng.below(100)
        };
        match pick {
            0..=29 => self.issue_random()?,
            30..=32 => self.issue_on_retired()?,
            33..=34 => self.issue_bad_input()?,
            35..=40 => self.post()?,
            41 => self.timer()?,
            42 => self.cancel_timer()?,
            43..=49 => self.cancel_one()?,
            50..=51 => self.cancel_all()?,
            52..=54 => {
                let s = self.rng.below(self.m.slots.len() as u64) as usize;
                self.m.tally.closes.fetch_add(1, SeqCst);
                self.m.slots[s].close_and_replace(&self.m.port)?;
            }
            55..=56 => self.m.port.blocking(std::thread::yield_now),
            57 => {
                self.m.tally.exits.fetch_add(1, SeqCst);
                return Ok(Next::Exit);
            }
            _ => self.dequeue()?,
        }
        Ok(Next::Go)
    }

    fn close_port(&mut self) -> Result<(), String> {
        self.m.life.store(CLOSING, SeqCst);
        self.m.port.close();
        self.m.life.store(CLOSED, SeqCst);
        // Its stats are checked once the other threads stopped issuing: an
        // issue racing the close counts in `in_flight` until refused.
        Ok(())
    }

    /// Dequeues with `get` or `get_many`, a random size and time-out.
    fn dequeue(&mut self) -> Result<(), String> {
        let timeout = match self.rng.below(4) {
            0 => Duration::ZERO,
            1 => Duration::from_micros(200),
            _ => Duration::from_millis(2),
        };
        let closed_before = self.m.life.load(SeqCst) == CLOSED;
        let r = if self.rng.below(2) == 0 {
            self.m.port.get(Some(timeout)).map(|p| self.out.push(p))
        } else {
            let max = 1 + self.rng.below(16) as usize;
            match self.m.port.get_many(&mut self.out, max, Some(timeout)) {
                Ok(n) if n == self.out.len() && n <= max => Ok(()),
                Ok(n) => {
                    return Err(format!(
                        "get_many({max}) gave {n}, out has {}",
                        self.out.len()
                    ))
                }
                Err(e) => Err(e),
            }
        };
        match r {
            Ok(()) if closed_before => Err(format!("{} packets after close", self.out.len())),
            Ok(()) => {
                for mut p in self.out.drain(..) {
                    self.m.packet(&mut p)?;
                }
                Ok(())
            }
            Err(GetError::Timeout) => Ok(()),
            Err(GetError::Closed) if self.m.life.load(SeqCst) != OPEN => Ok(()),
            Err(e) => Err(format!(
                "get: {e:?} with the port {}",
                self.m.life.load(SeqCst)
            )),
        }
    }

    fn post(&mut self) -> Result<(), String> {
        let bytes = self.rng.next_u64() as usize;
        let ctx = self.m.begin(Op::Post { bytes }, None, self.id);
        let id = ctx.id;
        let before = self.m.life.load(SeqCst);
        let r = self.m.port.post(crate::model::POST_KEY, bytes, ctx);
        let after = self.m.life.load(SeqCst);
        let (r, _ctx) = match r {
            Ok(()) => (Ok(None), None),
            Err(rej) => (Err((rej.error, Vec::new())), Some(rej.context)),
        };
        self.m.issued(id, r, (before, after), (false, false))
    }

    /// A timer packet 0–3 ms from now (`Port::post_after`).
    fn timer(&mut self) -> Result<(), String> {
        let delay_us = self.rng.below(3000);
        let ctx = self.m.begin(Op::Timer { delay_us }, None, self.id);
        let id = ctx.id;
        let before = self.m.life.load(SeqCst);
        let r = self.m.port.post_after(
            Duration::from_micros(delay_us),
            crate::model::TIMER_KEY,
            ctx,
        );
        let after = self.m.life.load(SeqCst);
        let token = r.as_ref().ok().copied();
        let (r, _ctx) = match r {
            Ok(t) => (Ok(Some(t)), None),
            Err(rej) => (Err((rej.error, Vec::new())), Some(rej.context)),
        };
        self.m.issued(id, r, (before, after), (false, false))?;
        if let Some(t) = token {
            self.m.timers.lock().unwrap().push((t, id));
        }
        Ok(())
    }

    /// Cancels a random timer: its packet comes aborted, unless it fired
    /// (then `NotFound`; certainly so if its packet was dequeued before).
    fn cancel_timer(&mut self) -> Result<(), String> {
        let picked = {
            let mut t = self.m.timers.lock().unwrap();
            if t.is_empty() {
                return Ok(());
            }
            let i = self.rng.below(t.len() as u64) as usize;
            t.swap_remove(i)
        };
        let (token, id) = picked;
        let done_before = self.m.cancelling(id);
        match self.m.port.cancel_timer(token) {
            Ok(()) if done_before => Err(format!(
                "timer op {id}: cancel_timer found it after its packet was dequeued"
            )),
            Ok(()) => {
                self.m.tally.timer_cancels.fetch_add(1, SeqCst);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("timer op {id}: cancel_timer failed with {e:?}")),
        }
    }

    /// An operation on a random end of a random slot, of a kind that end
    /// supports.
    fn issue_random(&mut self) -> Result<(), String> {
        let s = self.rng.below(self.m.slots.len() as u64) as usize;
        let slot = &self.m.slots[s];
        let mut guard = Some(slot.cur.read().unwrap());
        let g = guard.as_ref().unwrap();
        let end = self.rng.below(g.ends.len() as u64) as usize;
        let (gen, h) = (g.gen, g.ends[end].clone());
        // Closed for good once the port is closed (nothing to re-associate with).
        let closed = h.is_closed();
        // No close of this slot runs now (we hold its generation shared).
        let ended = slot.closes_ended.load(SeqCst);
        if self.m.races {
            guard = None; // the issue below may race a close of `h`
        }
        // `EBADF` is a right answer only if `h` was closed before the call,
        // or a close of the slot began before the call returned.
        let raced = || slot.closes_begun.load(SeqCst) > ended;
        let token = self.issue(&h, s, gen, end, slot.kind, (closed, &raced))?;
        if guard.is_some() {
            // Submit what this thread deferred before anyone may cancel it.
            self.m.port.blocking(|| ());
            drop(guard);
        }
        if let Some((t, id)) = token {
            self.m.tokens.lock().unwrap().push(Issued {
                slot: s,
                gen,
                end,
                token: t,
                id,
            });
        }
        Ok(())
    }

    /// An operation on a handle closed earlier: refused with `EBADF`.
    fn issue_on_retired(&mut self) -> Result<(), String> {
        let s = self.rng.below(self.m.slots.len() as u64) as usize;
        let h = {
            let r = self.m.slots[s].retired.lock().unwrap();
            if r.is_empty() {
                return Ok(());
            }
            r[self.rng.below(r.len() as u64) as usize].clone()
        };
        self.issue(&h, s, u64::MAX, 0, self.m.slots[s].kind, (true, &|| false))
            .map(|_| ())
    }

    /// Arguments every handle refuses with `InvalidInput`.
    fn issue_bad_input(&mut self) -> Result<(), String> {
        let s = self.rng.below(self.m.slots.len() as u64) as usize;
        let (gen, h) = {
            let g = self.m.slots[s].cur.read().unwrap();
            (g.gen, g.ends[0].clone())
        };
        let op = if self.rng.below(2) == 0 {
            Op::ReadNoRoom
        } else {
            Op::RecvNoBufs
        };
        let ctx = self.m.begin(op, Some((s, gen, 0)), self.id);
        let id = ctx.id;
        let life = self.m.life.load(SeqCst);
        let r = match op {
            Op::ReadNoRoom => h.read_at(filled(1, 0), 0, ctx),
            _ => h.recv_vectored(Vec::new(), ctx),
        };
        let (r, _drop_after) = split(r);
        self.m.issued(
            id,
            r,
            (life, self.m.life.load(SeqCst)),
            (h.is_closed(), false),
        )
    }

    /// Issues a random operation on `h`; returns its token when accepted.
    fn issue(
        &mut self,
        h: &Handle<Ctx>,
        s: usize,
        gen: u64,
        end: usize,
        kind: Kind,
        (closed, raced): (bool, &dyn Fn() -> bool),
    ) -> Result<Option<(Token, usize)>, String> {
        let f = fill(s, gen);
        let small = 1 + self.rng.below(256) as usize;
        let op = match (kind, end, self.rng.below(4)) {
            (_, _, 0) => Op::Nop,
            (Kind::File, ..) if self.rng.below(2) == 0 => {
                let len = 1 + self.rng.below(512) as usize;
                Op::ReadAt {
                    off: self.rng.below((AREA - len) as u64),
                    len,
                }
            }
            (Kind::File, ..) => Op::WriteAt { len: small },
            (Kind::Pipe, 0, _) => Op::Read { cap: small },
            (Kind::Pipe, ..) => Op::Write { len: small },
            (Kind::Null, ..) if self.rng.below(2) == 0 => Op::Read { cap: small },
            (Kind::Null, ..) => Op::Write { len: small },
            (_, _, r) => {
                let vectored = self.rng.below(4) == 0;
                if r == 1 && self.rng.below(4) == 0 {
                    Op::RecvTimed {
                        cap: small,
                        timeout_us: 100 + self.rng.below(3000),
                    }
                } else if r == 1 {
                    // Vectored: two buffers, `cap / 2` bytes and the rest.
                    let cap = if vectored { small.max(2) } else { small };
                    Op::Recv { cap, vectored }
                } else {
                    Op::Send {
                        len: small,
                        vectored,
                    }
                }
            }
        };
        let ctx = self.m.begin(op, Some((s, gen, end)), self.id);
        let id = ctx.id;
        let life = self.m.life.load(SeqCst);
        let r = match op {
            Op::Nop => h.nop(ctx),
            Op::ReadAt { off, len } => h.read_at(buf(len), off, ctx),
            Op::WriteAt { len } => {
                let off = (AREA + id * 512) as u64;
                h.write_at(filled(len, f), off, ctx)
            }
            Op::Read { cap } => h.read(buf(cap), ctx),
            Op::Write { len } => h.write(filled(len, f), ctx),
            Op::Recv {
                cap,
                vectored: false,
            } => h.recv(buf(cap), ctx),
            Op::Recv {
                cap,
                vectored: true,
            } => h.recv_vectored(vec![buf(cap / 2), buf(cap - cap / 2)], ctx),
            Op::Send {
                len,
                vectored: false,
            } => h.send(filled(len, f), ctx),
            Op::Send {
                len,
                vectored: true,
            } => h.send_vectored(vec![filled(len / 2, f), filled(len - len / 2, f)], ctx),
            Op::RecvTimed { cap, timeout_us } => h
                .with_timeout(Duration::from_micros(timeout_us))
                .recv(buf(cap), ctx),
            Op::Post { .. } | Op::Timer { .. } | Op::ReadNoRoom | Op::RecvNoBufs => {
                unreachable!()
            }
        };
        let token = r.as_ref().ok().map(|&t| (t, id));
        let (r, _drop_after) = split(r);
        self.m
            .issued(id, r, (life, self.m.life.load(SeqCst)), (closed, raced()))?;
        Ok(token)
    }

    /// Cancels a random accepted operation, sometimes through the wrong
    /// handle (which must find nothing).
    fn cancel_one(&mut self) -> Result<(), String> {
        let picked = {
            let mut tk = self.m.tokens.lock().unwrap();
            if tk.is_empty() {
                return Ok(());
            }
            let i = self.rng.below(tk.len() as u64) as usize;
            tk.swap_remove(i)
        };
        let Issued {
            slot: s,
            gen,
            end,
            token,
            id,
        } = picked;
        let slot = &self.m.slots[s];
        let guard = slot.cur.read().unwrap();
        if guard.gen != gen {
            return Ok(()); // closed since: its handle is gone
        }
        let wrong = self.rng.below(8) == 0 && guard.ends.len() == 2;
        let h = guard.ends[if wrong { 1 - end } else { end }].clone();
        if self.m.races {
            drop(guard);
        }
        let done_before = self.m.cancelling(id);
        self.m.tally.cancels.fetch_add(1, SeqCst);
        match h.cancel(token) {
            Ok(()) if wrong || done_before => Err(format!(
                "op {id}: cancel found it (wrong handle {wrong}, dequeued before {done_before})"
            )),
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("op {id}: cancel failed with {e:?}")),
        }
    }

    fn cancel_all(&mut self) -> Result<(), String> {
        let s = self.rng.below(self.m.slots.len() as u64) as usize;
        let slot = &self.m.slots[s];
        // Exclusive although it only reads: it keeps issuers out (unless
        // issue races are on, they hold the slot shared while they issue).
        #[allow(clippy::readonly_write_lock)]
        let guard = slot.cur.write().unwrap();
        slot.disrupt.fetch_add(1, SeqCst);
        for h in &guard.ends {
            match h.cancel_all() {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("slot {s}: cancel_all failed with {e:?}")),
            }
        }
        Ok(())
    }
}

/// An issue call's result as the model takes it, and what to drop once
/// the model's lock is released (the refused context and buffers).
type Checked = Result<Option<Token>, (std::io::Error, Vec<Buf>)>;

fn split(r: Result<Token, completion_port::Rejected<Ctx>>) -> (Checked, Option<Ctx>) {
    match r {
        Ok(t) => (Ok(Some(t)), None),
        Err(mut rej) => {
            let mut bufs = rej.take_bufs();
            bufs.extend(rej.take_buf());
            (Err((rej.error, bufs)), Some(rej.context))
        }
    }
}

/// The port's life as a word, for messages.
pub fn life_name(l: u8) -> &'static str {
    match l {
        OPEN => "open",
        CLOSING => "closing",
        CLOSED => "closed",
        _ => "?",
    }
}
