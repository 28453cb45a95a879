//! `sends`: large `send_all`s over one loopback TCP connection, zero-copy
//! on against off ([`PortBuilder::send_zerocopy_threshold`]): the same
//! program, ours with the threshold at the send size (so every send goes
//! `SEND_ZC` on io_uring), the peer with it at 0 (plain `SEND`).
//!
//! - One sending thread (first CPU), one port (concurrency 1): keeps
//!   [`DEPTH`] `send_all`s (`CPORT_BENCH_SENDS_DEPTH`: another number) of `size` bytes in flight on the connection,
//!   reissuing each buffer as its packet comes back, until `n` sends
//!   completed; every packet must report `size` bytes.
//! - One reading thread (second CPU) drains the other end with plain
//!   `read`s into a 1 MiB buffer and must read exactly `n × size` bytes.
//!
//! Ratio: process CPU (both threads, and the kernel's work on their
//! behalf, which on loopback includes the receive path) per send, ours /
//! peer: lower is better. Extra numbers: the sending thread's own CPU per
//! send on each side, and the share of zero-copy sends the kernel reported
//! it copied (loopback always copies: the receiver cannot keep pages it
//! does not own). On the epoll backend the knob does nothing, and both
//! sides are the same program.
//!
//! [`PortBuilder::send_zerocopy_threshold`]: completion_port::PortBuilder::send_zerocopy_threshold

use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use completion_port::{Backend, Buf, Port};

use super::{median, run_on_thread, spawn_pinned, thread_use, Contest, Extra, Meter, RatioKind};
use super::{Row, Sample, Settings};

/// Sends in flight at once, unless [`DEPTH_ENV`] says otherwise.
const DEPTH: usize = 2;
/// Environment variable setting the sends in flight (1 to 64).
const DEPTH_ENV: &str = "CPORT_BENCH_SENDS_DEPTH";

/// Sends in flight at once: [`DEPTH_ENV`], or [`DEPTH`].
fn depth() -> usize {
    std::env::var(DEPTH_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|d| (1..=64).contains(d))
        .unwrap_or(DEPTH)
}
/// How long the sender waits for one packet before failing.
const LIMIT: Duration = Duration::from_secs(30);

/// What one trial measured besides its sample.
struct Trial {
    sample: Sample,
    /// The sending thread's CPU per send, ns.
    sender_ns: f64,
    /// Zero-copy sends, and how many of them the kernel copied.
    zc: (u64, u64),
}

/// A connected TCP pair on 127.0.0.1.
fn tcp_pair() -> io::Result<(TcpStream, TcpStream)> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let a = TcpStream::connect(l.local_addr()?)?;
    let (b, _) = l.accept()?;
    Ok((a, b))
}

/// One trial: `n` sends of `size` bytes, zero-copy at `threshold` (0: off).
fn trial(
    n: u64,
    size: usize,
    threshold: usize,
    backend: Backend,
    reader_cpu: Option<usize>,
) -> io::Result<Trial> {
    let port: Port<()> = Port::builder()
        .concurrency(1)
        .backend(backend)
        .blocking_detection(super::detection())
        .send_zerocopy_threshold(threshold)
        .build()?;
    let (a, mut b) = tcp_pair()?;
    let a = port.associate(a, 1)?;
    let total = n * size as u64;
    let meter = Meter::start();
    let reader = spawn_pinned("bench-sends-reader".into(), reader_cpu, move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while got < total {
            match b.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => got += k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    })?;
    let before = thread_use();
    let mut issued = 0u64;
    for _ in 0..depth().min(n as usize) {
        a.send_all(Buf::from(vec![0x5au8; size]), ())
            .map_err(|r| r.error)?;
        issued += 1;
    }
    let mut done = 0u64;
    while done < n {
        let mut p = port
            .get(Some(LIMIT))
            .map_err(|e| io::Error::other(format!("sends: no packet within 30 s: {e:?}")))?;
        match &p.result {
            Ok(k) if *k == size => {}
            r => {
                return Err(io::Error::other(format!(
                    "sends: a send_all of {size} bytes completed with {r:?}"
                )))
            }
        }
        done += 1;
        if issued < n {
            let buf = p.take_buf().expect("a send's packet carries its buffer");
            a.send_all(buf, ()).map_err(|r| r.error)?;
            issued += 1;
        }
    }
    let sender = thread_use().since(before);
    let got = reader
        .join()
        .map_err(|_| io::Error::other("sends: the reader panicked"))??;
    let sample = meter.stop(n);
    if got != total {
        return Err(io::Error::other(format!(
            "sends: the reader got {got} bytes, expected {total}"
        )));
    }
    let st = port.stats();
    Ok(Trial {
        sample,
        sender_ns: sender.cpu.as_nanos() as f64 / n as f64,
        zc: (st.zerocopy_sends, st.zerocopy_copied),
    })
}

struct Sends<'a> {
    s: &'a Settings,
    backend: Backend,
    size: usize,
    ours_sender: Vec<f64>,
    peer_sender: Vec<f64>,
    zc: (u64, u64),
}

impl Sends<'_> {
    fn run(&mut self, n: u64, zero_copy: bool) -> io::Result<Sample> {
        let (size, backend) = (self.size, self.backend);
        let threshold = if zero_copy { size } else { 0 };
        let reader_cpu = self.s.cpu_for(1);
        let t = run_on_thread("sends", self.s.cpu_for(0), move || {
            trial(n, size, threshold, backend, reader_cpu)
        })?;
        let v = if zero_copy {
            &mut self.ours_sender
        } else {
            &mut self.peer_sender
        };
        v.push(t.sender_ns);
        self.zc.0 += t.zc.0;
        self.zc.1 += t.zc.1;
        Ok(t.sample)
    }
}

impl Contest for Sends<'_> {
    fn label(&self) -> String {
        format!("sends {}", size_label(self.size))
    }
    fn ours(&mut self, n: u64) -> io::Result<Sample> {
        self.run(n, true)
    }
    fn peer(&mut self, n: u64) -> io::Result<Sample> {
        self.run(n, false)
    }
}

fn size_label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else {
        format!("{} KiB", size >> 10)
    }
}

/// The `sends` rows: 256 KiB and 1 MiB sends.
pub(super) fn run(s: &Settings, backend: Backend) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (id, size) in [("sends_256k_zc", 256 << 10), ("sends_1m_zc", 1 << 20)] {
        // 2 GiB per trial (512 MiB with --quick).
        let n = s.work(
            (2u64 << 30) / size as u64,
            (512u64 << 20) / size as u64,
            8,
            1,
        );
        let mut c = Sends {
            s,
            backend,
            size,
            ours_sender: Vec::new(),
            peer_sender: Vec::new(),
            zc: (0, 0),
        };
        let (ours, peer) = run_pairs_named(s, &mut c, n, backend)?;
        let copied = if c.zc.0 == 0 {
            0.0
        } else {
            c.zc.1 as f64 / c.zc.0 as f64
        };
        rows.push(Row {
            id,
            label: format!("sends {}: zero-copy on/off", size_label(size)),
            describe: format!(
                "{n} send_all of {} on one loopback TCP connection, {} in flight, one sending thread on a \
                 port (concurrency 1), a reader thread draining with 1 MiB reads; ours: \
                 send_zerocopy_threshold = the size (SEND_ZC on io_uring), peer: 0 (plain SEND); ratio = \
                 process CPU per send ours/peer, lower is better",
                size_label(size),
                depth()
            ),
            ops_per_trial: n,
            ours,
            peer,
            // An on/off measurement of a knob, not a race with a peer.
            target: None,
            kind: RatioKind::Cpu,
            note: (backend == Backend::Epoll)
                .then(|| "epoll: the knob does nothing, both sides send plainly".to_string()),
            extra: vec![
                Extra {
                    name: "sender_cpu_per_send_ours",
                    value: median(c.ours_sender.clone()),
                    unit: "ns",
                },
                Extra {
                    name: "sender_cpu_per_send_peer",
                    value: median(c.peer_sender.clone()),
                    unit: "ns",
                },
                Extra {
                    name: "zero_copy_sends_copied",
                    value: copied,
                    unit: "fraction",
                },
            ],
        });
    }
    Ok(rows)
}

fn run_pairs_named(
    s: &Settings,
    c: &mut Sends<'_>,
    n: u64,
    backend: Backend,
) -> io::Result<(super::Side, super::Side)> {
    let size = size_label(c.size);
    let (ours, peer) = super::run_pairs(
        s,
        c,
        n,
        (n / 8).max(2),
        (
            format!("completion-port ({backend}) send_all {size}, zero-copy"),
            format!("completion-port ({backend}) send_all {size}, plain send"),
        ),
    )?;
    // The warm-up trials are not in the medians.
    c.ours_sender.remove(0);
    c.peer_sender.remove(0);
    Ok((ours, peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_arrives_both_ways() {
        for backend in [Backend::IoUring, Backend::Epoll] {
            for threshold in [0, 64 << 10] {
                let t = trial(16, 256 << 10, threshold, backend, None).unwrap();
                assert_eq!(t.sample.ops, 16);
                let zc = backend == Backend::IoUring && threshold > 0;
                assert_eq!(t.zc.0 >= 16, zc, "{backend} {threshold}: {:?}", t.zc);
            }
        }
    }
}
