//! What the user sees and sends while a copy runs: the progress bar on
//! stderr, and SIGINT/SIGTERM, which a thread of ours takes from the start
//! and, once the copy runs, turns into a cancel posted to the port.

use std::fs;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use completion_port::Port;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::err;
use super::pipeline::{Op, CANCEL_KEY};
use crate::echo::{signal_name, TermSignals};

/// Blocks SIGINT/SIGTERM (to be taken by [`Signals::watch`]'s thread) and
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

/// What the signal thread knows of the copy: set as the copy gets going.
#[derive(Default)]
struct Stage {
    /// The hidden temporary file, once there is one with a name.
    temp: Option<PathBuf>,
    /// The port, once the copy runs: a signal then cancels through it.
    port: Option<Port<Op>>,
}

/// The thread that takes SIGINT/SIGTERM, started before the copy opens
/// anything (an `open` may block): before the copy runs, the first signal
/// removes the temporary file if there is one and exits (status 128 +
/// signal); while it runs, the first cancels it through the port (the
/// dequeue loop sees it and cleans up), a second removes the temporary
/// file and exits.
pub(super) struct Signals {
    stage: Mutex<Stage>,
    /// Set by the first signal: the copy must not be renamed into place.
    pub interrupted: AtomicBool,
}

impl Signals {
    pub(super) fn watch(signals: TermSignals) -> io::Result<Arc<Signals>> {
        let me = Arc::new(Signals {
            stage: Mutex::new(Stage::default()),
            interrupted: AtomicBool::new(false),
        });
        let watch = me.clone();
        thread::Builder::new()
            .name("cport-signals".into())
            .spawn(move || loop {
                let Ok(sig) = signals.wait() else { return };
                let again = watch.interrupted.swap(true, Ordering::AcqRel);
                let stage = watch.stage.lock().unwrap_or_else(|e| e.into_inner());
                match &stage.port {
                    Some(port) if !again => {
                        let _ = port.post(CANCEL_KEY, 0, Op::Cancel(sig));
                    }
                    _ => {
                        if let Some(t) = &stage.temp {
                            let _ = fs::remove_file(t);
                        }
                        eprintln!(
                            "cport copy: interrupted by {}{}, exiting now; DST untouched",
                            signal_name(sig),
                            if again {
                                " again"
                            } else {
                                " before the copy started"
                            }
                        );
                        std::process::exit(128 + sig);
                    }
                }
            })
            .map_err(|e| err(e.kind(), format!("cannot start the signal thread: {e}")))?;
        Ok(me)
    }

    /// The hidden temporary file a signal must remove (`None`: unnamed).
    pub(super) fn temp(&self, path: Option<PathBuf>) {
        self.stage.lock().unwrap_or_else(|e| e.into_inner()).temp = path;
    }

    /// The copy runs: the first signal cancels it through `port`.
    pub(super) fn running(&self, port: &Port<Op>) {
        self.stage.lock().unwrap_or_else(|e| e.into_inner()).port = Some(port.clone());
    }
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
