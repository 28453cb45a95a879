//! Kernel-side micro-measurements behind two io_uring choices of the port
//! (BENCHMARKS.md, "Registered files and a registered ring fd"): one
//! thread, in a process that has a second (idle) thread as every process
//! with a port does, so the kernel's fd lookups take real references.
//! Each mode alternates with its counterpart, round by round; CPU time of
//! the measuring thread (`CLOCK_THREAD_CPUTIME_ID`).
//!
//! ```sh
//! cargo run --release -p cport-bench --example uring_micro -- ringfd 1 12   # CPU per enter, batch 1
//! cargo run --release -p cport-bench --example uring_micro -- fixed 12      # send+recv by fd or by slot
//! cargo run --release -p cport-bench --example uring_micro -- churn 8       # install+release of a slot
//! ```

use io_uring::{opcode, types, IoUring};

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn socketpair() -> [i32; 2] {
    let mut sv = [0i32; 2];
    // SAFETY: writes two fds into `sv`.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair");
    sv
}

fn close(sv: [i32; 2]) {
    for fd in sv {
        // SAFETY: closes an fd this program opened and no longer uses.
        unsafe { libc::close(fd) };
    }
}

/// CPU per `io_uring_enter` submitting and waiting for `batch` NOPs, with
/// the ring named by its fd or by its registered index.
fn ringfd(registered: bool, batch: u32) -> f64 {
    let iters = 400_000 / batch;
    let mut ring = IoUring::new(64).unwrap();
    if registered {
        ring.submitter().register_ring_fd().unwrap();
    }
    let c0 = cpu_ns();
    for _ in 0..iters {
        {
            let mut sq = ring.submission();
            for _ in 0..batch {
                let e = opcode::Nop::new().build().user_data(1);
                // SAFETY: a NOP references no memory.
                unsafe { sq.push(&e).unwrap() };
            }
        }
        ring.submit_and_wait(batch as usize).unwrap();
        ring.completion().for_each(drop);
    }
    (cpu_ns() - c0) as f64 / f64::from(iters)
}

/// CPU per operation of 16 send+recv pairs per enter on a socket pair
/// (data always ready: each completes at once), the fds named by number
/// or by fixed slot.
fn fixed(by_slot: bool) -> f64 {
    let iters = 20_000u32;
    let mut ring = IoUring::new(64).unwrap();
    let sv = socketpair();
    if by_slot {
        ring.submitter().register_files(&sv).unwrap();
    }
    let out = [7u8; 64];
    let mut inb = vec![[0u8; 64]; 16];
    let c0 = cpu_ns();
    for _ in 0..iters {
        {
            let mut sq = ring.submission();
            for b in inb.iter_mut() {
                let (s, r) = if by_slot {
                    (
                        opcode::Send::new(types::Fixed(0), out.as_ptr(), 64).build(),
                        opcode::Recv::new(types::Fixed(1), b.as_mut_ptr(), 64).build(),
                    )
                } else {
                    (
                        opcode::Send::new(types::Fd(sv[0]), out.as_ptr(), 64).build(),
                        opcode::Recv::new(types::Fd(sv[1]), b.as_mut_ptr(), 64).build(),
                    )
                };
                // SAFETY: the buffers outlive the wait below, which reaps
                // every entry.
                unsafe { sq.push_multiple(&[s.user_data(1), r.user_data(2)]).unwrap() };
            }
        }
        ring.submit_and_wait(32).unwrap();
        ring.completion().for_each(|c| assert_eq!(c.result(), 64));
    }
    let per_op = (cpu_ns() - c0) as f64 / (f64::from(iters) * 32.0);
    close(sv);
    per_op
}

/// CPU per (install a socket in a slot, one NOP enter, empty the slot):
/// by two `io_uring_register` calls around the enter, or by two
/// `IORING_OP_FILES_UPDATE` entries that go with it.
fn churn(by_sqe: bool) -> f64 {
    let iters = 100_000u32;
    let mut ring = IoUring::new(64).unwrap();
    ring.submitter().register_files_sparse(64).unwrap();
    let sv = socketpair();
    let (fds, none) = ([sv[0]], [-1i32]);
    let c0 = cpu_ns();
    for _ in 0..iters {
        let nop = opcode::Nop::new().build().user_data(1);
        if by_sqe {
            let install = opcode::FilesUpdate::new(fds.as_ptr(), 1).offset(5).build();
            let release = opcode::FilesUpdate::new(none.as_ptr(), 1).offset(5).build();
            // SAFETY: the fd arrays outlive the wait below.
            unsafe {
                ring.submission()
                    .push_multiple(&[install.user_data(3), nop, release.user_data(4)])
                    .unwrap()
            };
            ring.submit_and_wait(3).unwrap();
            ring.completion().for_each(|c| assert!(c.result() >= 0));
        } else {
            ring.submitter().register_files_update(5, &fds).unwrap();
            // SAFETY: a NOP references no memory.
            unsafe { ring.submission().push(&nop).unwrap() };
            ring.submit_and_wait(1).unwrap();
            ring.completion().for_each(drop);
            ring.submitter().register_files_update(5, &none).unwrap();
        }
    }
    let per = (cpu_ns() - c0) as f64 / f64::from(iters);
    close(sv);
    per
}

/// Runs `f(false)` and `f(true)` alternately for `rounds` rounds and
/// prints each result and the medians.
fn ab(rounds: u32, what: &str, names: [&str; 2], f: impl Fn(bool) -> f64) {
    let mut res = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for m in order {
            let v = f(m);
            println!("round {r} {:10} {v:6.0} ns", names[m as usize]);
            res[m as usize].push(v);
        }
    }
    for (i, v) in res.iter_mut().enumerate() {
        v.sort_by(|a, b| a.total_cmp(b));
        println!("{:10} median {what}: {:.0} ns", names[i], v[v.len() / 2]);
    }
}

fn main() {
    // A second thread, as in every process with a port.
    let _idle = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_secs(3600)));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u32| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    match args.first().map(String::as_str) {
        Some("ringfd") => {
            let batch = num(1, 1);
            ab(
                num(2, 12),
                &format!("CPU per enter of {batch} NOPs"),
                ["ring fd", "registered"],
                |m| ringfd(m, batch),
            )
        }
        Some("fixed") => ab(
            num(1, 12),
            "CPU per send or recv",
            ["by fd", "by slot"],
            fixed,
        ),
        Some("churn") => ab(
            num(1, 8),
            "CPU per install + NOP enter + release",
            ["register", "sqe"],
            churn,
        ),
        _ => eprintln!("usage: uring_micro ringfd BATCH ROUNDS | fixed ROUNDS | churn ROUNDS"),
    }
}
