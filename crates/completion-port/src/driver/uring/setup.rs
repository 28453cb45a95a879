//! Opening a ring: kernel knobs, feature checks, opcode probe, and errors
//! that say what to change.

use std::io;

use io_uring::{IoUring, Probe};

use super::op::REQUIRED;
use crate::driver::Config;

/// Oldest kernel the backend supports: 5.19 brings `IORING_ASYNC_CANCEL_ANY`,
/// which closing a port uses to cancel everything in flight.
const MIN_KERNEL: (u32, u32) = (5, 19);

/// Opens the ring; also returns the kernel's opcode probe (for the
/// optional opcodes, `send_zc.rs`).
pub(super) fn open(cfg: Config) -> io::Result<(IoUring, Probe)> {
    check_kernel_version()?;
    let ring = IoUring::builder()
        // SUBMIT_ALL: keep submitting the rest of a batch when one entry
        // fails at submission, so each op still gets its own CQE (5.18).
        .setup_submit_all()
        // CLAMP: a too-large `entries` is reduced to the kernel maximum
        // instead of failing.
        .setup_clamp()
        // A CQ four times the SQ absorbs bursts of completions (each leader
        // wake reaps them all) before the kernel's overflow list is needed.
        .setup_cqsize(cfg.entries.saturating_mul(4))
        .build(cfg.entries)
        .map_err(explain_setup_error)?;
    let params = ring.params();
    if !params.is_feature_nodrop() {
        return Err(unsupported(
            "IORING_FEAT_NODROP (never drop a completion, Linux 5.5)",
        ));
    }
    if !params.is_feature_ext_arg() {
        return Err(unsupported(
            "IORING_FEAT_EXT_ARG (waits with a time-out, Linux 5.11)",
        ));
    }
    if !params.is_feature_submit_stable() {
        return Err(unsupported("IORING_FEAT_SUBMIT_STABLE (Linux 5.5)"));
    }
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("io_uring: probing the kernel's opcodes failed: {e}"),
        )
    })?;
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, n)| *n)
        .collect();
    if !missing.is_empty() {
        return Err(unsupported(&format!("the opcodes {}", missing.join(", "))));
    }
    Ok((ring, probe))
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "io_uring: this kernel lacks {what}; completion-port needs Linux {}.{} or newer",
            MIN_KERNEL.0, MIN_KERNEL.1
        ),
    )
}

fn check_kernel_version() -> io::Result<()> {
    let Some((major, minor, release)) = kernel_release() else {
        return Ok(()); // cannot tell: let the feature checks decide
    };
    if (major, minor) < MIN_KERNEL {
        return Err(unsupported(&format!(
            "features of newer kernels (this is {release})"
        )));
    }
    Ok(())
}

/// The running kernel's (major, minor) version, (0, 0) when unknown.
pub(super) fn kernel_version() -> (u32, u32) {
    kernel_release().map_or((0, 0), |(major, minor, _)| (major, minor))
}

/// The running kernel's major and minor version and release string.
fn kernel_release() -> Option<(u32, u32, String)> {
    // SAFETY: `uname` fills the zeroed struct it is given.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    // SAFETY: `release` is NUL-terminated by the kernel.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((major, minor, release))
}

/// What `io_uring_setup` failed with, and what to change.
fn explain_setup_error(e: io::Error) -> io::Error {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    explain(e, disabled.as_deref().map(str::trim))
}

/// [`explain_setup_error`] given the value of `kernel.io_uring_disabled`.
fn explain(e: io::Error, disabled: Option<&str>) -> io::Error {
    let msg = match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring_setup is not implemented by this kernel (ENOSYS): it was built without io_uring, or a sandbox such as gVisor hides it".to_string(),
        Some(libc::EPERM) | Some(libc::EACCES) => match disabled {
            Some("2") => "io_uring is disabled on this machine: the sysctl kernel.io_uring_disabled is 2 (set it to 0 to allow io_uring)".to_string(),
            Some("1") => "io_uring is restricted on this machine: the sysctl kernel.io_uring_disabled is 1, which allows it only to CAP_SYS_ADMIN or to the group in kernel.io_uring_group".to_string(),
            _ => "io_uring_setup was denied: a seccomp profile (such as Docker's default one) or a security module forbids io_uring in this process".to_string(),
        },
        Some(libc::ENOMEM) => "the kernel refused memory for the ring: raise the locked-memory limit (`ulimit -l`, RLIMIT_MEMLOCK; kernels before 5.12 charge rings to it) or ask for fewer entries".to_string(),
        Some(libc::EINVAL) => "io_uring_setup rejected the parameters (entries must be 1..=32768; this kernel may not know IORING_SETUP_SUBMIT_ALL, Linux 5.18)".to_string(),
        Some(libc::EMFILE) | Some(libc::ENFILE) => "no file descriptor is left for the ring: raise the open-file limit (`ulimit -n`)".to_string(),
        _ => "io_uring_setup failed".to_string(),
    };
    io::Error::new(e.kind(), format!("io_uring: {msg} ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(errno: i32, disabled: Option<&str>) -> String {
        explain(io::Error::from_raw_os_error(errno), disabled).to_string()
    }

    #[test]
    fn setup_errors_name_their_cause() {
        assert!(msg(libc::EPERM, Some("2")).contains("kernel.io_uring_disabled is 2"));
        assert!(msg(libc::EPERM, Some("1")).contains("kernel.io_uring_disabled is 1"));
        assert!(msg(libc::EPERM, Some("0")).contains("seccomp"));
        assert!(msg(libc::ENOSYS, None).contains("ENOSYS"));
        assert!(msg(libc::ENOMEM, None).contains("ulimit -l"));
        // The OS error stays visible, and its kind is kept.
        let e = explain(io::Error::from_raw_os_error(libc::EPERM), Some("2"));
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("os error 1"));
    }
}
