//! The switch-events mechanism's plumbing: a `perf_event_open` software
//! event per watched thread counting its context switches, aimed (by
//! `F_SETOWN_EX`/`F_SETSIG`) at the monitor thread as a signal, and the
//! monitor's `signalfd` that reads those signals. When the monitor uses
//! them is in `monitor.rs` ("Two mechanisms").
//!
//! Signal used: `SIGRTMAX - 3` ([`signal`]), blocked in the monitor thread
//! only and aimed at that thread only; if the kernel's queue of real-time
//! signals overflows, it sends `SIGIO` instead, which the monitor also
//! blocks and takes as "look at every thread".

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The real-time signal the switch events raise.
pub(super) fn signal() -> libc::c_int {
    libc::SIGRTMAX() - 3
}

/// `struct perf_event_attr`, its first version (`PERF_ATTR_SIZE_VER0`,
/// 64 bytes: every field this needs; the kernel zero-extends).
#[repr(C)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CONTEXT_SWITCHES: u64 = 3;
/// `attr.disabled` (bit 0 of the flags).
const ATTR_DISABLED: u64 = 1;
/// `attr.exclude_hv` (bit 6).
const ATTR_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;
/// `si_code` of a signal raised by an fd becoming readable.
const POLL_IN: i32 = 1;

#[repr(C)]
struct FOwnerEx {
    type_: libc::c_int,
    pid: libc::pid_t,
}

/// A disabled context-switch event of thread `tid` (0: the caller),
/// sampling every switch.
pub(super) fn open_switch_event(tid: i32) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        type_: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CONTEXT_SWITCHES,
        sample_period: 1,
        sample_type: 0,
        read_format: 0,
        // Kernel-side events included: a switch happens in the kernel.
        flags: ATTR_DISABLED | ATTR_EXCLUDE_HV,
        wakeup_events: 1,
        bp_type: 0,
        config1: 0,
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it states;
    // the call only reads it. pid = a thread of this process, any CPU, no
    // group.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid as libc::c_long,
            -1 as libc::c_long,
            -1 as libc::c_long,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Opens thread `tid`'s switch event, signalling `monitor_tid`.
pub(super) fn switch_event_to(tid: i32, monitor_tid: i32) -> std::io::Result<OwnedFd> {
    let fd = open_switch_event(tid)?;
    let raw = fd.as_raw_fd();
    let owner = FOwnerEx {
        type_: F_OWNER_TID,
        pid: monitor_tid,
    };
    // SAFETY: fcntl on an fd we own; `owner` is a valid f_owner_ex.
    let ok = unsafe {
        libc::fcntl(raw, F_SETOWN_EX, &owner as *const FOwnerEx) == 0
            && libc::fcntl(raw, F_SETSIG, signal()) == 0
            && libc::fcntl(
                raw,
                libc::F_SETFL,
                libc::fcntl(raw, libc::F_GETFL) | libc::O_ASYNC,
            ) == 0
    };
    if !ok {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

pub(super) fn set_enabled(fd: &OwnedFd, on: bool) {
    let req = if on {
        PERF_EVENT_IOC_ENABLE
    } else {
        PERF_EVENT_IOC_DISABLE
    };
    // SAFETY: an ioctl without argument on a perf fd we own.
    unsafe {
        libc::ioctl(fd.as_raw_fd(), req as _, 0);
    }
}

/// Switch events: the monitor's `signalfd` for [`signal`] and `SIGIO`
/// (both blocked in this thread first).
pub(super) fn signal_fd() -> Option<OwnedFd> {
    // SAFETY: `set` is a valid sigset_t, initialised by sigemptyset before
    // use; pthread_sigmask and signalfd only read it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal());
        libc::sigaddset(&mut set, libc::SIGIO);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return None;
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    }
}

/// What a wait on the `signalfd` returned.
#[derive(Default)]
pub(super) struct Signals {
    /// fds of the switch events that fired.
    pub(super) fds: Vec<i32>,
    /// Look at every thread (a wake-up, or an overflow to `SIGIO`).
    pub(super) all: bool,
}

/// Waits up to `timeout` (`None`: forever) for signals, and reads them all.
pub(super) fn wait_signals(sfd: &OwnedFd, timeout: Option<Duration>, out: &mut Signals) {
    let mut pfd = libc::pollfd {
        fd: sfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, 60_000) as libc::c_int);
    // SAFETY: one valid pollfd.
    unsafe {
        libc::poll(&mut pfd, 1, ms);
    }
    const N: usize = 32;
    // SAFETY: signalfd_siginfo is plain old data: all zeroes is valid.
    let mut buf: [libc::signalfd_siginfo; N] = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `buf` is writable for its whole size; a non-blocking
        // signalfd returns whole records or fails with EAGAIN.
        let n = unsafe {
            libc::read(
                sfd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                std::mem::size_of_val(&buf),
            )
        };
        if n <= 0 {
            return;
        }
        let got = n as usize / std::mem::size_of::<libc::signalfd_siginfo>();
        for si in &buf[..got] {
            if si.ssi_signo as libc::c_int == signal() && si.ssi_code == POLL_IN {
                out.fds.push(si.ssi_fd);
            } else {
                out.all = true;
            }
        }
        if got < N {
            return;
        }
    }
}
