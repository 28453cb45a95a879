//! What the user sees and sends while a copy runs: the progress bar on
//! stderr, and SIGINT/SIGTERM, which a thread of ours turns into a cancel
//! posted to the port.

use std::fs;
use std::io::{self, IsTerminal};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use completion_port::Port;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::err;
use super::pipeline::{Op, CANCEL_KEY};
use crate::echo::{signal_name, TermSignals};

/// Blocks SIGINT/SIGTERM (to be taken by [`watch_signals`]'s thread) and
/// ignores SIGXFSZ. Call before any thread starts.
pub(super) fn take_signals() -> io::Result<TermSignals> {
    let signals = TermSignals::block()
        .map_err(|e| err(e.kind(), format!("cannot block SIGINT/SIGTERM: {e}")))?;
    // SAFETY: setting a signal's disposition to SIG_IGN is always sound;
    // with it, a write past the file-size limit fails with EFBIG (and the
    // temporary file is cleaned up) instead of killing the process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    Ok(signals)
}

/// Starts the thread that takes `signals`: the first cancels the copy
/// (through `port`, so the dequeue loop sees it); a second removes the
/// temporary file at `tmp_path` and exits. Returns the flag it sets.
pub(super) fn watch_signals(
    signals: TermSignals,
    port: &Port<Op>,
    tmp_path: &Path,
) -> io::Result<Arc<AtomicBool>> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let (port, flag, tmp_path) = (port.clone(), interrupted.clone(), tmp_path.to_path_buf());
    thread::Builder::new()
        .name("cport-signals".into())
        .spawn(move || loop {
            let Ok(sig) = signals.wait() else { return };
            if flag.swap(true, Ordering::AcqRel) {
                let _ = fs::remove_file(&tmp_path);
                eprintln!(
                    "cport copy: {} received again, exiting now",
                    signal_name(sig)
                );
                std::process::exit(130);
            }
            let _ = port.post(CANCEL_KEY, 0, Op::Cancel(sig));
        })
        .map_err(|e| err(e.kind(), format!("cannot start the signal thread: {e}")))?;
    Ok(interrupted)
}

/// A bar of `size` bytes on stderr when it is a terminal; else a hidden one.
pub(super) fn bar(size: u64) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
