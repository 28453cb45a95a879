//! Zero-copy sends: `IORING_OP_SEND_ZC` (Linux 6.0) for a send, and
//! `IORING_OP_SENDMSG_ZC` (6.1) for a vectored one, at or above the port's
//! threshold ([`PortBuilder::send_zerocopy_threshold`](crate::PortBuilder::send_zerocopy_threshold))
//! and on TCP sockets only; every other send is a plain `SEND`/`SENDMSG`.
//!
//! # Two completions, one packet
//! A zero-copy send posts two CQEs with the op's `user_data`: its result
//! (flagged `IORING_CQE_F_MORE` when a notification follows) and, later,
//! the notification (`IORING_CQE_F_NOTIF`) that the kernel no longer
//! references the buffer — on a real network once the peer acknowledged
//! the bytes; on loopback once they were copied into the receiver's queue.
//! The op's buffers belong to the op until its packet is dequeued, so the
//! op is reported to the core exactly once, **after the notification**,
//! with the result of the first CQE, which [`ZeroCopy::cqe`] keeps until
//! then (the kernel posts the notification after the result; both orders
//! are handled). A first CQE without `F_MORE` (the kernel failed the
//! request before it set up a notification) is the only one: reported at
//! once.
//!
//! # Every way an op ends still reports it once, after its notification
//! - **Whole sends** (`MSG_WAITALL` on a stream socket): the kernel
//!   retries a short zero-copy send itself, as it does a plain one
//!   (`io_send_zc` / `io_sendmsg_zc` in `io_uring/net.c`: a positive short
//!   result with `MSG_WAITALL` on a `SOCK_STREAM` socket, `io_net_retry`,
//!   adds to `done_io` and waits for room), and on an error after some
//!   bytes it completes with their count; the core then resubmits the rest
//!   (`OpIo::advance_whole`) — only once the notification gave the op
//!   back, so each submission's buffer range is released before the next
//!   one is built.
//! - **Cancel, close, port shutdown, a linked time-out, the issuing
//!   thread's exit**: while the request is still in the kernel, the cancel
//!   ends it with `-ECANCELED` (or the bytes it sent) *and* `F_MORE` (the
//!   kernel's `io_sendrecv_fail`), so its notification still follows and
//!   the op is reported then, through the same path; the core's `settle`
//!   reads the result as it would a plain send's (time-out, orphan to
//!   resubmit, whole send cut short). Once the result CQE was posted
//!   there is nothing left to cancel (the cancel finds nothing and is
//!   ignored), and the op is reported with its real result at the
//!   notification.
//! - Nothing is reported twice: the op leaves [`ZeroCopy::pending`] when it
//!   is reported, and the kernel posts no third CQE.
//!
//! # What it costs
//! The packet comes when the kernel lets go of the buffer, not when the
//! bytes are queued: about one round trip later on a network. A peer that
//! stops reading holds the packet — and since the op keeps its socket
//! open, closing the handle or the port waits for it — until the peer
//! reads or the connection ends; a plain send of the same bytes would have
//! completed once they were queued. The kernel pins the buffer's pages
//! meanwhile. On loopback the kernel copies anyway (the notification says
//! so: [`PortStats::zerocopy_copied`](crate::PortStats::zerocopy_copied)).
//! Hence off by default; BENCHMARKS.md ("Zero-copy sends") has the numbers.
//!
//! The epoll backend always sends with a plain `send(2)` (no
//! `MSG_ZEROCOPY`): the threshold is ignored there.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types::Fd, Probe};
use parking_lot::Mutex;

use crate::driver::OpIo;

/// `IORING_SEND_ZC_REPORT_USAGE` (Linux 6.2): the notification says whether
/// the kernel had to copy after all.
const REPORT_USAGE: u16 = 8;
/// `IORING_NOTIF_USAGE_ZC_COPIED`: set in a notification's result when the
/// kernel copied the bytes (asked for with [`REPORT_USAGE`]).
const ZC_COPIED: i32 = i32::MIN; // 1 << 31

/// How long closing a port waits for the peers of zero-copy sends whose
/// buffers the kernel still holds before it resets their connections.
pub(super) const GRACE: Duration = Duration::from_secs(2);

/// The ring's zero-copy policy and the ops between their two CQEs.
pub(super) struct ZeroCopy {
    /// Smallest send that goes zero-copy; `usize::MAX`: never (the knob is
    /// off, or the kernel lacks `SEND_ZC`).
    threshold: usize,
    /// The kernel has `SENDMSG_ZC` (vectored sends).
    vectored: bool,
    /// The kernel knows `IORING_SEND_ZC_REPORT_USAGE`.
    report: bool,
    /// Ops of which one CQE of the two was seen, by `user_data`. Taken
    /// only while reaping (under the ring's CQ lock).
    pending: Mutex<HashMap<u64, Half>>,
    /// Zero-copy sends reported, and how many of them the kernel copied.
    sent: AtomicU64,
    copied: AtomicU64,
    /// When the ring shut down (the port closes).
    closed_at: OnceLock<Instant>,
    /// [`abort_stuck`](Self::abort_stuck) disconnected the stuck sockets.
    aborted: AtomicBool,
}

/// The CQE of a zero-copy send seen first.
enum Half {
    /// Its result (the notification is to come).
    Result(i32),
    /// Its notification (the result is to come).
    Notified,
}

impl ZeroCopy {
    /// The policy for a ring whose kernel answered `probe`: `threshold`
    /// bytes (0: never), if the kernel has `SEND_ZC`.
    pub(super) fn new(threshold: usize, probe: &Probe, kernel: (u32, u32)) -> ZeroCopy {
        let on = threshold > 0 && probe.is_supported(opcode::SendZc::CODE);
        ZeroCopy {
            threshold: if on { threshold } else { usize::MAX },
            vectored: on && probe.is_supported(opcode::SendMsgZc::CODE),
            report: kernel >= (6, 2),
            pending: Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            closed_at: OnceLock::new(),
            aborted: AtomicBool::new(false),
        }
    }

    /// The ring shut down: from [`GRACE`] on, [`abort_stuck`](Self::abort_stuck)
    /// ends the zero-copy sends still waiting for their notification.
    pub(super) fn shut_down(&self) {
        let _ = self.closed_at.set(Instant::now());
    }

    /// Once, [`GRACE`] after the shutdown: disconnects the socket of every
    /// op still waiting for its notification, so the kernel drops the
    /// bytes it queued and lets go of the pages (module docs). Called from
    /// each wait of the closing port.
    pub(super) fn abort_stuck(&self) {
        let Some(at) = self.closed_at.get() else {
            return;
        };
        if at.elapsed() < GRACE || self.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        // Under the lock no op in the map can be reported (reporting takes
        // it out of the map under the same lock), so each is alive and so
        // is its fd (the op's record keeps it open).
        let pending = self.pending.lock();
        for (&user_data, half) in pending.iter() {
            if !matches!(half, Half::Result(_)) {
                continue;
            }
            let op = user_data as *const OpIo;
            // SAFETY: alive (above); one field, read through no reference
            // to the whole record, which the core does not touch while it
            // is in flight.
            let fd = unsafe { (*op).fd.raw };
            let unspec = libc::sockaddr {
                sa_family: libc::AF_UNSPEC as libc::sa_family_t,
                sa_data: [0; 14],
            };
            // SAFETY: a valid sockaddr of the length given.
            let r = unsafe {
                libc::connect(
                    fd,
                    &unspec,
                    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                )
            };
            tracing::warn!(
                "io_uring: closing the port: a zero-copy send's peer read nothing for {} s; \
                 reset its connection (fd {fd}){}",
                GRACE.as_secs(),
                if r == 0 { "" } else { " — failed" }
            );
        }
    }

    /// Whether a send of `len` bytes (`vectored` or not) on `fd` goes
    /// zero-copy. `tcp` says, and remembers, whether `fd` is a TCP socket
    /// (the only kind the kernel sends from user pages without copying;
    /// others refuse `SEND_ZC` with `EOPNOTSUPP`).
    pub(super) fn wants(
        &self,
        len: usize,
        vectored: bool,
        fd: RawFd,
        tcp: &std::sync::OnceLock<bool>,
    ) -> bool {
        len >= self.threshold && (!vectored || self.vectored) && *tcp.get_or_init(|| is_tcp(fd))
    }

    /// A zero-copy send of `len` bytes at `buf` with `flags`.
    pub(super) fn send(&self, fd: Fd, buf: *const u8, len: u32, flags: i32) -> squeue::Entry {
        opcode::SendZc::new(fd, buf, len)
            .flags(flags)
            .zc_flags(self.zc_flags())
            .build()
    }

    /// A zero-copy vectored send of `msg` with `flags`.
    pub(super) fn send_msg(&self, fd: Fd, msg: *const libc::msghdr, flags: u32) -> squeue::Entry {
        opcode::SendMsgZc::new(fd, msg)
            .ioprio(self.zc_flags())
            .flags(flags)
            .build()
    }

    fn zc_flags(&self) -> u16 {
        if self.report {
            REPORT_USAGE
        } else {
            0
        }
    }

    /// Whether a CQE of an op (`send`: the op is a send or vectored send)
    /// with `flags` is one of a zero-copy send's two.
    pub(super) fn is_zc_cqe(flags: u32, send: impl FnOnce() -> bool) -> bool {
        cqueue::notif(flags) || (cqueue::more(flags) && send())
    }

    /// One of a zero-copy send's two CQEs (see [`is_zc_cqe`](Self::is_zc_cqe)).
    /// Returns the op's result when this CQE is the second, so the op is
    /// reported now; `None` while the other is still to come.
    pub(super) fn cqe(&self, user_data: u64, res: i32, flags: u32) -> Option<i32> {
        let notif = cqueue::notif(flags);
        let mut pending = self.pending.lock();
        let first = pending.remove(&user_data);
        if notif {
            self.sent.fetch_add(1, Ordering::Relaxed);
            if self.report && res & ZC_COPIED != 0 {
                self.copied.fetch_add(1, Ordering::Relaxed);
            }
        }
        match (first, notif) {
            (None, false) => {
                pending.insert(user_data, Half::Result(res));
                None
            }
            (None, true) => {
                pending.insert(user_data, Half::Notified);
                None
            }
            (Some(Half::Result(r)), true) => Some(r),
            (Some(Half::Notified), false) => Some(res),
            // Two results or two notifications: the kernel never posts
            // them; report the op rather than hold it forever.
            (Some(Half::Result(r)), false) => Some(r),
            (Some(Half::Notified), true) => Some(0),
        }
    }

    /// (zero-copy sends reported, of which the kernel copied).
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.copied.load(Ordering::Relaxed),
        )
    }
}

/// Whether `fd` is a TCP socket (IPv4 or IPv6).
fn is_tcp(fd: RawFd) -> bool {
    use socket2::{Domain, Protocol, SockRef, Type};
    // SAFETY: the caller's fd is open for this call (an operation on it
    // is being issued); an fd that is not a socket only fails the queries.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let s = SockRef::from(&fd);
    matches!(s.domain(), Ok(Domain::IPV4 | Domain::IPV6))
        && matches!(s.r#type(), Ok(Type::STREAM))
        && matches!(s.protocol(), Ok(Some(Protocol::TCP)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zc() -> ZeroCopy {
        ZeroCopy {
            threshold: 1,
            vectored: true,
            report: true,
            pending: Mutex::new(HashMap::new()),
            sent: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            closed_at: OnceLock::new(),
            aborted: AtomicBool::new(false),
        }
    }

    const MORE: u32 = 2; // IORING_CQE_F_MORE
    const NOTIF: u32 = 8; // IORING_CQE_F_NOTIF

    #[test]
    fn the_op_is_reported_at_the_second_cqe_with_the_first_result() {
        let z = zc();
        assert_eq!(z.cqe(8, 4096, MORE), None);
        assert_eq!(z.cqe(16, -libc::ECANCELED, MORE), None);
        assert_eq!(z.cqe(8, ZC_COPIED, NOTIF), Some(4096));
        // The other order.
        assert_eq!(z.cqe(24, 0, NOTIF), None);
        assert_eq!(z.cqe(24, 100, MORE), Some(100));
        assert_eq!(z.cqe(16, 0, NOTIF), Some(-libc::ECANCELED));
        assert!(z.pending.lock().is_empty());
        assert_eq!(z.counts(), (3, 1));
    }

    #[test]
    fn only_send_cqes_with_more_or_notif_are_zero_copy_halves() {
        assert!(ZeroCopy::is_zc_cqe(NOTIF, || false));
        assert!(ZeroCopy::is_zc_cqe(MORE, || true));
        assert!(!ZeroCopy::is_zc_cqe(MORE, || false));
        assert!(!ZeroCopy::is_zc_cqe(0, || true));
    }

    #[test]
    fn only_tcp_sockets_qualify() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(is_tcp(std::os::fd::AsRawFd::as_raw_fd(&l)));
        let (u, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!is_tcp(std::os::fd::AsRawFd::as_raw_fd(&u)));
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!is_tcp(std::os::fd::AsRawFd::as_raw_fd(&s)));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(!is_tcp(std::os::fd::AsRawFd::as_raw_fd(&f)));
    }
}
