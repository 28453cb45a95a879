//! An operation handed to the backend (`Core::submit`: registered with its
//! fd, then submitted at once or deferred to the issuing thread's next
//! visit to the port, `running.rs`), and operations cancelled
//! (`Core::cancel`). Its packet is born when the backend reports it
//! complete (`Packet::completed`, `packet.rs`) and queued by `enqueue`
//! (`reap.rs`).

use std::io;
use std::mem;
use std::sync::atomic::Ordering;

use super::Core;
use crate::error::{handle_closed, Rejected};
use crate::handle::{FdOwner, InFlightOp, OpPtr};
use crate::op::{Notify, RecordBox, Token};
use crate::port::running;
use crate::Packet;

impl<C: Send + 'static> Core<C> {
    /// Hands an operation to the backend. On refusal everything comes back.
    pub(crate) fn submit(&self, rec: RecordBox<C>) -> Result<Token, Rejected<C>> {
        let token = rec.io.token;
        let raw = rec.into_raw();
        // SAFETY: `raw` comes from `RecordBox::into_raw`, so it is valid and
        // unaliased; `io` is its first field.
        let io = unsafe { &mut (*raw.as_ptr()).io };
        io.prepare();
        // Register before submitting (the op may complete at once), under
        // the lock that `Handle::close` sets `closed` with.
        let owner = io.owner.clone();
        {
            let mut reg = owner.inflight();
            if reg.closed {
                drop(reg);
                // SAFETY: never handed to the driver: still ours.
                let mut rec = unsafe { RecordBox::from_raw(raw) };
                let bufs = mem::take(&mut rec.io.bufs);
                let ctx = rec.ctx.take().expect("context present until completion");
                return Err(Rejected::new(handle_closed(), ctx, bufs));
            }
            reg.ops.insert(
                token.0,
                InFlightOp {
                    ptr: OpPtr(std::ptr::NonNull::from(&mut *io)),
                    cancelled: false,
                },
            );
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // A thread running for this port will come back to the port (next
        // `get`, blocking scope or exit: `running.rs`), and the pending
        // submission is made then; any other thread submits at once.
        let defer = self.driver.can_defer() && running::defer_submit(self.id);
        let notify = io.notify;
        let op = std::ptr::NonNull::from(io);
        let mut spill = Vec::new();
        let r = self.driver.submit(op, defer, &mut spill);
        if defer && r.is_ok() && running::deferred() {
            // The monitor counted this thread out meanwhile and may have
            // flushed before this op was queued (running.rs).
            self.driver.flush(&mut spill);
        }
        if notify == Notify::SkipOnSuccess {
            // Succeeded during this call (the backend reported it in
            // `spill`): no packet, the result is kept for `take_result`.
            if let Some(i) = spill.iter().position(|c| c.op == op && c.res >= 0) {
                let c = spill.swap_remove(i);
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                // SAFETY: reported once by this port's driver, for a record
                // `submit` made (an `OpRecord<C>`).
                let p = unsafe { Packet::completed(c) };
                self.results.store(token.0, p);
            }
        }
        self.absorb(&mut spill);
        match r {
            // From here on the record belongs to the backend: not touched.
            Ok(()) => Ok(token),
            Err(error) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                owner.inflight().ops.remove(&token.0);
                // SAFETY: the driver refused the op, so ownership never left us.
                let mut rec = unsafe { RecordBox::from_raw(raw) };
                let bufs = mem::take(&mut rec.io.bufs);
                let ctx = rec.ctx.take().expect("context present until completion");
                Err(Rejected::new(error, ctx, bufs))
            }
        }
    }

    /// Cancels one operation (`token`) or all operations of the fd `owner`
    /// (spec §6.25). Returns how many were in flight; `NotFound` if none.
    ///
    /// The kernel's cancel request is made while holding the fd's in-flight
    /// lock: the named records cannot complete into packets (and be freed,
    /// and their addresses reused) until it has been handed to the backend.
    pub(crate) fn cancel(&self, owner: &FdOwner, token: Option<Token>) -> io::Result<usize> {
        let mut spill = Vec::new();
        let n = {
            let mut reg = owner.inflight();
            let mut targets: Vec<OpPtr> = Vec::new();
            let mut mark = |op: &mut InFlightOp| {
                op.cancelled = true;
                targets.push(op.ptr);
            };
            match token {
                Some(t) => reg.ops.get_mut(&t.0).into_iter().for_each(&mut mark),
                None => reg.ops.values_mut().for_each(&mut mark),
            }
            if targets.is_empty() {
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let all = token.is_none();
            self.driver.cancel(owner, &targets, all, &mut spill)?;
            targets.len()
        };
        self.absorb(&mut spill);
        Ok(n)
    }
}
