//! The things operations run on: slots, each holding one resource (a file,
//! a pipe, a socket pair, `/dev/null`) associated with the port. Closing a
//! slot closes its handles and re-associates a fresh resource of the same
//! kind: a new *generation*, with a new completion key, usually on the
//! same fd numbers the old one had — so a packet or a byte that crossed
//! from one generation to the next is caught by its key or its fill byte.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, RwLock};

use completion_port::{Handle, Port};

use crate::model::Ctx;

/// Bytes of each file's read area (its contents are [`pat`]).
pub const AREA: usize = 4096;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A temporary file: `read_at` in the area, `write_at` past it.
    File,
    /// A pipe: end 0 reads, end 1 writes.
    Pipe,
    /// A Unix stream socket pair: both ends send and receive.
    Unix,
    /// A loopback TCP connection: both ends send and receive.
    Tcp,
    /// `/dev/null`: reads end at once, writes take everything.
    Null,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::File, Kind::Pipe, Kind::Unix, Kind::Tcp, Kind::Null];
}

/// Byte `i` of every file's read area.
pub fn pat(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

/// The byte every send or write on generation `gen` of slot `slot` is made
/// of (never 0).
pub fn fill(slot: usize, gen: u64) -> u8 {
    ((slot as u64).wrapping_mul(31).wrapping_add(gen) % 251) as u8 + 1
}

/// The completion key of end `end` of generation `gen` of slot `slot`.
pub fn key(slot: usize, gen: u64, end: usize) -> usize {
    (slot << 24) | (((gen as usize) & 0x7f_ffff) << 1) | end
}

/// One generation of a slot: its handles.
pub struct Gen {
    pub gen: u64,
    pub ends: Vec<Handle<Ctx>>,
}

pub struct Slot {
    pub kind: Kind,
    pub index: usize,
    /// The live generation. Issuers hold it shared while they pick a
    /// handle (for the whole issue call only with
    /// `CPORT_MODEL_ISSUE_RACES=0`); closing and `cancel_all` hold it
    /// exclusively.
    pub cur: RwLock<Gen>,
    /// Grows before every `cancel_all` and close of this slot: an
    /// operation issued before a growth may end aborted (or see its peer
    /// gone).
    pub disrupt: AtomicU64,
    /// Closes of this slot begun and ended: an issue call may be refused
    /// with `EBADF` only if its handle was closed before it, or a close
    /// begun before it returned had not ended before it started.
    pub closes_begun: AtomicU64,
    pub closes_ended: AtomicU64,
    /// The closed handles of earlier generations, kept until the run ends:
    /// for issues that must be refused with `EBADF`, and so that their fds
    /// stay open — a receive whose cancel was lost then waits for ever (and
    /// is reported lost) instead of being ended by its peer's close.
    pub retired: Mutex<Vec<Handle<Ctx>>>,
}

impl Slot {
    pub fn new(port: &Port<Ctx>, index: usize, kind: Kind) -> Slot {
        Slot {
            kind,
            index,
            cur: RwLock::new(Gen {
                gen: 0,
                ends: open(port, kind, index, 0),
            }),
            disrupt: AtomicU64::new(0),
            closes_begun: AtomicU64::new(0),
            closes_ended: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Closes the live generation's handles (whose operations end
    /// aborted) and associates a fresh resource in its place. Returns
    /// whether the port still took it (a closed port refuses).
    pub fn close_and_replace(&self, port: &Port<Ctx>) -> Result<(), String> {
        let mut g = self.cur.write().unwrap();
        self.disrupt.fetch_add(1, SeqCst);
        self.closes_begun.fetch_add(1, SeqCst);
        for h in &g.ends {
            h.close();
            if !h.is_closed() || h.close() != 0 {
                return Err(format!(
                    "slot {}: a closed handle is not closed",
                    self.index
                ));
            }
        }
        self.closes_ended.fetch_add(1, SeqCst);
        if port.is_closed() {
            return Ok(()); // Nothing to re-associate with: keep the closed ends.
        }
        let gen = g.gen + 1;
        let old = std::mem::replace(
            &mut *g,
            Gen {
                gen,
                ends: open(port, self.kind, self.index, gen),
            },
        );
        self.retired.lock().unwrap().extend(old.ends);
        Ok(())
    }
}

/// Opens a resource of `kind` and associates its ends with `port`. A port
/// closed meanwhile refuses: then the ends are made on a throw-away port,
/// so that the slot still has (closed) handles to issue on.
fn open(port: &Port<Ctx>, kind: Kind, slot: usize, gen: u64) -> Vec<Handle<Ctx>> {
    let fds: Vec<OwnedFd> = match kind {
        Kind::File => {
            let mut f = tempfile::tempfile().expect("temporary file");
            f.write_all(&(0..AREA).map(pat).collect::<Vec<u8>>())
                .expect("fill the read area");
            vec![f.into()]
        }
        Kind::Pipe => {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two fds pipe2 writes.
            let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
            assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
            // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
            fds.iter()
                .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .collect()
        }
        Kind::Unix => {
            let (a, b) = UnixStream::pair().expect("socketpair");
            vec![a.into(), b.into()]
        }
        Kind::Tcp => {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            let a = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
            let (b, _) = l.accept().expect("accept");
            a.set_nodelay(true).unwrap();
            vec![a.into(), b.into()]
        }
        Kind::Null => {
            let f: File = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .expect("/dev/null");
            vec![f.into()]
        }
    };
    let mut ends = Vec::new();
    for (end, fd) in fds.into_iter().enumerate() {
        match port.associate(fd, key(slot, gen, end)) {
            Ok(h) => ends.push(h),
            Err(e) => {
                assert!(port.is_closed(), "associate refused: {}", e.error);
                let spare: Port<Ctx> = Port::new(1).expect("a spare port");
                let h = spare.associate(e.fd, key(slot, gen, end)).unwrap();
                h.close();
                ends.push(h);
            }
        }
    }
    ends
}
