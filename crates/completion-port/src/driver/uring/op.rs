//! Encoding of an operation record as a submission queue entry.

use io_uring::{opcode, squeue, types::Fd};

use std::os::fd::AsRawFd;

use io_uring::types::{self, Timespec};

use super::send_zc::ZeroCopy;
use crate::driver::{KernelTimespec, OpIo, OpKind, SPLICE_CHUNK};

/// The empty path of `statx(fd, "", AT_EMPTY_PATH)`.
const EMPTY_PATH: &std::ffi::CStr = c"";

/// `IORING_RECVSEND_POLL_FIRST` (Linux 5.19; the io_uring crate does not
/// export it): a receive arms its poll before trying, so a pooled receive
/// on an idle socket takes no buffer.
const RECVSEND_POLL_FIRST: u16 = 1;

/// A `statx` for the kernel to fill.
fn zeroed_statx() -> libc::statx {
    // SAFETY: all-zero is a valid `statx` (plain integers).
    unsafe { std::mem::zeroed() }
}

/// Opcodes the port uses; all are probed when a ring is opened.
pub(super) const REQUIRED: &[(u8, &str)] = &[
    (opcode::Nop::CODE, "NOP"),
    (opcode::Read::CODE, "READ"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::Send::CODE, "SEND"),
    (opcode::RecvMsg::CODE, "RECVMSG"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::Connect::CODE, "CONNECT"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::LinkTimeout::CODE, "LINK_TIMEOUT"),
    (opcode::Fsync::CODE, "FSYNC"),
    (opcode::Fallocate::CODE, "FALLOCATE"),
    (opcode::Statx::CODE, "STATX"),
    (opcode::Shutdown::CODE, "SHUTDOWN"),
    (opcode::OpenAt::CODE, "OPENAT"),
    (opcode::Splice::CODE, "SPLICE"),
];

/// Builds the SQEs for `op`, tagged with its address: the operation's, and
/// for an operation with a deadline a `LINK_TIMEOUT` linked to it (tagged
/// [`LINK_TIMEOUT`](super::LINK_TIMEOUT); its own CQE is ignored: when it
/// fires the operation ends with `-ECANCELED`, which the core reads as the
/// time-out once the deadline passed). The two must be submitted together.
///
/// Every pointer placed in an SQE points into the record (`ts`) or its
/// boxed `extra` (`msg`, `addr`, `addr_len`) or into the heap memory of its
/// buffers; the record is owned by the kernel until its CQE is reaped, so
/// all stay valid for the whole operation.
///
/// Sends at or above the zero-copy threshold go out as `SEND_ZC` /
/// `SENDMSG_ZC` (`send_zc.rs`).
pub(super) fn entries(op: &mut OpIo, zc: &ZeroCopy) -> (squeue::Entry, Option<squeue::Entry>) {
    let timed = op.kind != OpKind::Timer && op.arm_deadline();
    let e = entry(op, zc);
    if !timed {
        return (e, None);
    }
    let link = opcode::LinkTimeout::new(timespec(op))
        .build()
        .user_data(super::LINK_TIMEOUT);
    (e.flags(squeue::Flags::IO_LINK), Some(link))
}

/// `op.ts` as the io_uring crate's type.
fn timespec(op: &OpIo) -> *const Timespec {
    // `Timespec` is `repr(transparent)` over the kernel's
    // `__kernel_timespec` (two i64), which is exactly `KernelTimespec`
    // (`repr(C)`, the same two i64: checked by a test below); the kernel
    // reads it through this pointer.
    (&op.ts as *const KernelTimespec).cast::<Timespec>()
}

/// The operation's own SQE (see [`entries`]).
fn entry(op: &mut OpIo, zc: &ZeroCopy) -> squeue::Entry {
    // The fd's fixed slot, for the kinds that use it (`files.rs`): the SQE
    // then carries the slot where it would carry the fd, and the flag.
    let slot = super::files::slot_of(op.kind, &op.fd);
    let fd = Fd(slot.map_or(op.fd.raw, |s| s as i32));
    let e = match op.kind {
        OpKind::Nop => opcode::Nop::new().build(),
        OpKind::Read => {
            let b = op.bufs.one_mut();
            // The length was checked to fit in u32 at issue.
            opcode::Read::new(fd, b.spare_ptr(), b.spare_capacity() as u32)
                .offset(op.offset)
                .build()
        }
        OpKind::Write => {
            let offset = op.out_offset();
            let (ptr, len) = op.out_bytes();
            opcode::Write::new(fd, ptr, len as u32)
                .offset(offset)
                .build()
        }
        OpKind::Recv => {
            let b = op.bufs.one_mut();
            opcode::Recv::new(fd, b.spare_ptr(), b.spare_capacity() as u32).build()
        }
        // The kernel picks a buffer of the pool's group once data is there
        // (poll first: an idle socket takes none); the CQE names it.
        OpKind::RecvPooled => {
            let p = op.pool.as_ref().expect("a pooled receive has its pool");
            opcode::Recv::new(fd, std::ptr::null_mut(), p.buf_size())
                .buf_group(p.group())
                .ioprio(RECVSEND_POLL_FIRST)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        }
        // One-shot: completes with the ready mask (reported as 0).
        OpKind::Readable => opcode::PollAdd::new(fd, libc::POLLIN as u32).build(),
        OpKind::Send => {
            let flags = libc::MSG_NOSIGNAL | waitall(op);
            let (ptr, len) = op.out_bytes();
            if zc.wants(len, false, op.fd.raw, &op.fd.state().uring_tcp) {
                zc.send(fd, ptr, len as u32, flags)
            } else {
                opcode::Send::new(fd, ptr, len as u32).flags(flags).build()
            }
        }
        OpKind::RecvVectored => opcode::RecvMsg::new(fd, &mut op.extra().msg).build(),
        OpKind::SendVectored => {
            let flags = libc::MSG_NOSIGNAL as u32 | waitall(op) as u32;
            let len = op.total() - op.done;
            if zc.wants(len, true, op.fd.raw, &op.fd.state().uring_tcp) {
                zc.send_msg(fd, &op.extra().msg, flags)
            } else {
                opcode::SendMsg::new(fd, &op.extra().msg)
                    .flags(flags)
                    .build()
            }
        }
        OpKind::Accept => {
            let ex = op.extra();
            opcode::Accept::new(
                fd,
                (&mut ex.addr as *mut libc::sockaddr_storage).cast(),
                &mut ex.addr_len,
            )
            .flags(libc::SOCK_CLOEXEC)
            .build()
        }
        OpKind::Connect => {
            let ex = op.extra();
            opcode::Connect::new(
                fd,
                (&ex.addr as *const libc::sockaddr_storage).cast(),
                ex.addr_len,
            )
            .build()
        }
        // Timers wait in the ring's map (`timers.rs`) and never come here
        // through `submit`; a timer that did would still fire, after the
        // time left (relative, written by `arm_deadline`).
        OpKind::Timer => {
            op.arm_deadline();
            opcode::Timeout::new(timespec(op)).build()
        }
        OpKind::Fsync { data_only } => {
            let flags = if data_only {
                types::FsyncFlags::DATASYNC
            } else {
                types::FsyncFlags::empty()
            };
            opcode::Fsync::new(fd).flags(flags).build()
        }
        OpKind::Fallocate { mode, len } => opcode::Fallocate::new(fd, len)
            .offset(op.offset)
            .mode(mode)
            .build(),
        OpKind::Stat => {
            let ex = op.extra();
            let st = ex.stat.get_or_insert_with(|| Box::new(zeroed_statx()));
            // `types::statx` is the crate's opaque stand-in for
            // `libc::statx` (its docs say to pass libc's).
            let buf = (&mut **st as *mut libc::statx).cast::<types::statx>();
            opcode::Statx::new(fd, EMPTY_PATH.as_ptr(), buf)
                .flags(libc::AT_EMPTY_PATH)
                .mask(libc::STATX_BASIC_STATS | libc::STATX_BTIME)
                .build()
        }
        OpKind::Shutdown { how } => opcode::Shutdown::new(fd, how).build(),
        OpKind::Open { flags, mode } => {
            let path = op
                .extra()
                .path
                .as_ref()
                .map_or(EMPTY_PATH.as_ptr(), |p| p.as_ptr());
            opcode::OpenAt::new(Fd(libc::AT_FDCWD), path)
                .flags(flags | libc::O_CLOEXEC)
                .mode(mode)
                .build()
        }
        OpKind::SendFile => {
            let (done, offset) = (op.done, op.offset);
            let s = op
                .extra()
                .splice
                .as_ref()
                .expect("a send_file has its pipe");
            let (pipe_r, pipe_w) = (s.pipe[0].as_raw_fd(), s.pipe[1].as_raw_fd());
            if s.draining {
                opcode::Splice::new(Fd(pipe_r), -1, fd, -1, s.in_pipe as u32)
                    .flags(libc::SPLICE_F_MOVE)
                    .build()
            } else {
                let left = (s.len - done as u64).min(SPLICE_CHUNK as u64) as u32;
                opcode::Splice::new(
                    Fd(s.src),
                    (offset + done as u64) as i64,
                    Fd(pipe_w),
                    -1,
                    left,
                )
                .flags(libc::SPLICE_F_MOVE)
                .build()
            }
        }
    };
    let e = match slot {
        Some(_) => e.flags(squeue::Flags::FIXED_FILE),
        None => e,
    };
    e.user_data(op as *mut OpIo as u64)
}

/// `MSG_WAITALL` for a whole send: on a stream socket the kernel keeps
/// sending the rest itself (retrying on writability) and completes with
/// every byte, or with what it managed before an error (the core then
/// resubmits the rest, which reports the error). Other sockets ignore it.
fn waitall(op: &OpIo) -> libc::c_int {
    if op.whole {
        libc::MSG_WAITALL
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_timespec_is_the_crates_timespec() {
        use std::mem::{align_of, size_of};
        assert_eq!(size_of::<KernelTimespec>(), size_of::<Timespec>());
        assert_eq!(align_of::<KernelTimespec>(), align_of::<Timespec>());
        assert_eq!(size_of::<Timespec>(), 16);
    }
}
