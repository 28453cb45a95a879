//! Operations of the port itself, not of a handle: timer packets
//! (`Port::post_after`, [`OpKind::Timer`]) and opening files
//! (`Port::open`, [`OpKind::Open`]). Each is an operation on the port's own
//! fd, so that it is registered, cancelled and reported exactly like any
//! other — including on close, and when io_uring cancels an open with its
//! issuing thread (an orphan, resubmitted). Timers never reach the kernel
//! one by one: each backend keeps them in one ordered map per port
//! (`driver/uring/timers.rs`, `driver/epoll/timers.rs`).
//!
//! The port's own fd is an eventfd made on first use; no operation ever
//! reads or writes it.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fd::FdOwner;
use super::record::{Notify, OpRecord};
use super::{Core, Token};
use crate::buf::Buffers;
use crate::driver::OpKind;
use crate::error::{invalid_input, Rejected};

impl<C: Send + 'static> Core<C> {
    /// The port's own fd (made on first use).
    fn own_fd(&self) -> io::Result<&Arc<FdOwner>> {
        if let Some(o) = self.own.get() {
            return Ok(o);
        }
        // SAFETY: plain system call; the fd is owned at once.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let owner = FdOwner::new(fd).map_err(|(e, _)| e)?;
        // A racing first timer may have set it: ours then just closes.
        Ok(self.own.get_or_init(|| Arc::new(owner)))
    }

    /// A record for an operation of the port itself, on its own fd.
    fn own_record(
        &self,
        kind: OpKind,
        key: usize,
        context: C,
    ) -> Result<super::record::RecordBox<C>, Rejected<C>> {
        match self.own_fd() {
            Ok(own) => Ok(OpRecord::boxed(
                kind,
                own,
                key,
                Notify::Packet,
                Buffers::None,
                context,
            )),
            Err(e) => Err(Rejected::new(e, context, Buffers::None)),
        }
    }

    /// A timer packet `delay` from now (`Port::post_after`).
    pub(crate) fn post_after(
        &self,
        delay: Duration,
        key: usize,
        context: C,
    ) -> Result<Token, Rejected<C>> {
        let Some(deadline) = Instant::now().checked_add(delay) else {
            return Err(Rejected::new(
                invalid_input(format!("a timer delay of {delay:?} overflows the clock")),
                context,
                Buffers::None,
            ));
        };
        let mut rec = self.own_record(OpKind::Timer, key, context)?;
        rec.io.deadline = Some(deadline);
        self.submit(rec)
    }

    /// Opens `path` (`Port::open`): the new fd comes in the packet.
    pub(crate) fn open(
        &self,
        path: &std::path::Path,
        flags: i32,
        mode: u32,
        key: usize,
        context: C,
    ) -> Result<Token, Rejected<C>> {
        use std::os::unix::ffi::OsStrExt;
        let path = match std::ffi::CString::new(path.as_os_str().as_bytes()) {
            Ok(p) => p,
            Err(_) => {
                return Err(Rejected::new(
                    invalid_input(format!(
                        "cannot open {path:?}: the path contains a NUL byte"
                    )),
                    context,
                    Buffers::None,
                ))
            }
        };
        let mut rec = self.own_record(OpKind::Open { flags, mode }, key, context)?;
        rec.io.extra().path = Some(path);
        self.submit(rec)
    }

    /// Cancels a timer (`Port::cancel_timer`): its packet comes at once,
    /// with `ECANCELED`.
    pub(crate) fn cancel_timer(&self, token: Token) -> io::Result<()> {
        match self.own.get() {
            Some(own) => self.cancel(own, Some(token)).map(drop),
            None => Err(crate::error::nothing_to_cancel(Some(token.0))),
        }
    }
}
