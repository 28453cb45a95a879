//! `nop`: the backend's no-op, issued and reaped by one thread in batches.
//!
//! - ours: `batch` × [`Handle::nop`](completion_port::Handle::nop) on a
//!   handle (an associated `/dev/null`), then `get_many` until `batch`
//!   packets are back;
//! - peer: a raw `io-uring` loop on one `IoUring`: push `batch` NOP SQEs,
//!   `submit_and_wait(batch)`, reap `batch` CQEs.
//!
//! Both check every completion (result 0, and the sum of the contexts /
//! user_data), and count them; the thread is pinned to pin slot 1.

use std::fs::File;
use std::io;

use completion_port::{Backend, Port};
use io_uring::{opcode, IoUring};

use super::{open_port, run_on_thread, Contest, Meter, Row, Sample, Settings};

/// Completion key of the handle.
const KEY: usize = 7;
/// The single benchmark thread's pin slot.
const SLOT: usize = 1;

struct Nop<'a> {
    s: &'a Settings,
    batch: usize,
}

fn check(what: &str, count: u64, sum: u64, iters: u64, batch: usize) -> io::Result<()> {
    let n = iters * batch as u64;
    // Contexts are 0..batch in every round.
    let want = iters * (batch as u64 * (batch as u64 - 1) / 2);
    if count != n || sum != want {
        return Err(io::Error::other(format!(
            "{what}: reaped {count} completions (context sum {sum}), expected {n} (sum {want})"
        )));
    }
    Ok(())
}

fn ours(backend: Backend, batch: usize, iters: u64) -> io::Result<Sample> {
    let what = format!("nop batch {batch} (ours)");
    let port: Port<u32> = open_port(backend, 1)?;
    let devnull = File::open("/dev/null")
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: cannot open /dev/null: {e}")))?;
    let h = port.associate(devnull, KEY)?;
    let mut got_packets = Vec::with_capacity(batch);
    let (mut count, mut sum) = (0u64, 0u64);
    let m = Meter::start();
    for _ in 0..iters {
        for i in 0..batch {
            h.nop(i as u32)?;
        }
        let mut got = 0;
        while got < batch {
            got += port
                .get_many(&mut got_packets, batch - got, None)
                .map_err(io::Error::from)?;
            for p in got_packets.drain(..) {
                match p.result {
                    Ok(0) if p.key == KEY => {}
                    other => {
                        return Err(io::Error::other(format!(
                            "{what}: unexpected packet: key {}, result {other:?}",
                            p.key
                        )))
                    }
                }
                count += 1;
                sum += u64::from(p.context);
            }
        }
    }
    let sample = m.stop(count);
    check(&what, count, sum, iters, batch)?;
    drop(h);
    port.close();
    Ok(sample)
}

fn peer(batch: usize, iters: u64) -> io::Result<Sample> {
    let what = format!("nop batch {batch} (raw io-uring)");
    let mut ring = IoUring::new(256)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: io_uring_setup failed: {e}")))?;
    let (mut count, mut sum) = (0u64, 0u64);
    let m = Meter::start();
    for _ in 0..iters {
        {
            let mut sq = ring.submission();
            for i in 0..batch {
                let e = opcode::Nop::new().build().user_data(i as u64);
                // SAFETY: a NOP references no memory.
                unsafe { sq.push(&e) }
                    .map_err(|_| io::Error::other(format!("{what}: submission queue full")))?;
            }
        }
        let mut got = 0;
        while got < batch {
            ring.submit_and_wait(batch - got)?;
            for cqe in ring.completion() {
                if cqe.result() != 0 {
                    return Err(io::Error::other(format!(
                        "{what}: NOP completed with {}",
                        cqe.result()
                    )));
                }
                got += 1;
                count += 1;
                sum += cqe.user_data();
            }
        }
    }
    let sample = m.stop(count);
    check(&what, count, sum, iters, batch)?;
    Ok(sample)
}

impl Contest for Nop<'_> {
    fn label(&self) -> String {
        format!("nop batch {}", self.batch)
    }

    fn ours(&mut self, ops: u64) -> io::Result<Sample> {
        let (backend, batch) = (self.s.backend, self.batch);
        let iters = ops / batch as u64;
        run_on_thread(&self.label(), self.s.cpu_for(SLOT), move || {
            ours(backend, batch, iters)
        })
    }

    fn peer(&mut self, ops: u64) -> io::Result<Sample> {
        let batch = self.batch;
        let iters = ops / batch as u64;
        run_on_thread(&self.label(), self.s.cpu_for(SLOT), move || {
            peer(batch, iters)
        })
    }
}

/// Runs the `nop` workload at one batch size.
pub(crate) fn run(s: &Settings, backend: Backend, batch: usize) -> io::Result<Row> {
    let b = batch as u64;
    let ops = if batch == 1 {
        s.work(1_000_000, 300_000, 1_000, 1)
    } else {
        s.work(6_000_000, 2_000_000, 32 * b, b)
    };
    let warmup = ((ops / 10).max(b) / b) * b;
    eprintln!("nop batch {batch}: {ops} no-ops per trial");
    let names = (
        format!("completion-port ({backend}) Handle::nop"),
        "raw io-uring".to_string(),
    );
    let (ours, peer) = super::run_pairs(s, &mut Nop { s, batch }, ops, warmup, names)?;
    let (id, label) = match batch {
        1 => ("nop_batch_1", "nop batch 1"),
        32 => ("nop_batch_32", "nop batch 32"),
        _ => ("nop", "nop"),
    };
    Ok(Row {
        id,
        label: label.into(),
        describe: format!(
            "{ops} no-ops per trial, one thread, {batch} issued then {batch} reaped per round (ours: Handle::nop + Port::get_many; peer: push {batch} NOP SQEs, submit_and_wait({batch}), reap)"
        ),
        ops_per_trial: ops,
        ours,
        peer,
        // Issue 13: 0.7× the raw ring at batch 32.
        target: if batch == 32 { Some(0.7) } else { None },
        kind: super::RatioKind::Rate,
        note: None,
        extra: Vec::new(),
    })
}
