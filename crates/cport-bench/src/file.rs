//! `file`: 4 KiB random reads at queue depth 32 on an `O_DIRECT` file of
//! 1 GiB (256 MiB with `--quick`), against fio's io_uring engine with the
//! same file, size, block size and depth:
//!
//! ```text
//! fio --ioengine=io_uring --direct=1 --rw=randread --bs=4k --iodepth=32
//!     --size=SIZE --time_based --runtime=T --norandommap --output-format=json
//! ```
//!
//! - **ours**: one thread, one port (concurrency 1); 32 `read_at`s of
//!   aligned 4 KiB buffers at random 4 KiB-aligned offsets, each reissued
//!   at a new offset as its packet comes back (`get_many`, up to 32 at a
//!   time) until the trial's time is up; every read must return 4096 bytes.
//! - **fio**: run as a child process, pinned to the same CPU
//!   (`--cpus_allowed`); its JSON output gives the reads done, its runtime
//!   and its CPU (`usr_cpu` + `sys_cpu`).
//!
//! The data file (written with pseudo-random bytes, then synced, so reads
//! reach the device rather than holes) lives in a temporary directory
//! created inside `--dir` (default: the system temporary directory), on
//! the filesystem being measured, and is removed afterwards. When that
//! filesystem refuses `O_DIRECT` the row says so, with no numbers; when fio
//! is not installed (or `CPORT_BENCH_FIO` names no program) the row has
//! ours only and says "fio not found".

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use completion_port::{Backend, Buf};
use serde_json::Value;

use super::{open_port, run_on_thread, Meter, RatioKind, Row, Sample, Settings, Side};

const BLOCK: usize = 4096;
const DEPTH: usize = 32;
/// Pin slot of the reading thread (and of fio).
const SLOT: usize = 1;
/// Environment variable naming the fio program (default: `fio` on PATH).
const FIO_ENV: &str = "CPORT_BENCH_FIO";

/// A directory removed (with its contents) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(base: &Path) -> io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!("cport-bench-file-{}-{nanos:x}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "file: cannot create a temporary directory in {}: {e}",
                    base.display()
                ),
            )
        })?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `size` bytes of pseudo-random data to `path` and syncs them.
fn write_data(path: &Path, size: u64) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut left = size;
    while left > 0 {
        for b in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    // Drop the now clean pages from the page cache (O_DIRECT skips them
    // anyway; this gives the memory back).
    // SAFETY: a valid fd; advice only.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    Ok(())
}

fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// One trial of ours: reads for `ms` milliseconds.
fn ours_trial(path: &Path, size: u64, ms: u64, backend: Backend, seed: u64) -> io::Result<Sample> {
    let file = open_direct(path)?;
    let port = open_port::<()>(backend, 1)?;
    let h = port.associate(file, 1)?;
    let blocks = size / BLOCK as u64;
    let mut x = seed | 1;
    let mut next_offset = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % blocks) * BLOCK as u64
    };
    let meter = Meter::start();
    let deadline = Instant::now() + Duration::from_millis(ms);
    for _ in 0..DEPTH {
        h.read_at(Buf::aligned(BLOCK, BLOCK)?, next_offset(), ())?;
    }
    let mut in_flight = DEPTH;
    let mut done = 0u64;
    let mut packets = Vec::with_capacity(DEPTH);
    while in_flight > 0 {
        packets.clear();
        port.get_many(&mut packets, DEPTH, Some(Duration::from_secs(30)))
            .map_err(io::Error::from)?;
        let more = Instant::now() < deadline;
        for p in packets.iter_mut() {
            match p.result {
                Ok(n) if n == BLOCK => {}
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "file: a 4 KiB O_DIRECT read returned {n} bytes"
                    )))
                }
                Err(ref e) => {
                    return Err(io::Error::new(e.kind(), format!("file: read failed: {e}")))
                }
            }
            done += 1;
            let mut buf = p
                .take_buf()
                .ok_or_else(|| io::Error::other("file: a read packet without its buffer"))?;
            if more {
                buf.clear();
                h.read_at(buf, next_offset(), ())?;
            } else {
                in_flight -= 1;
            }
        }
    }
    let sample = meter.stop(done);
    port.close();
    Ok(sample)
}

/// How to run fio, or why it cannot be run.
fn find_fio() -> Result<PathBuf, String> {
    let prog = std::env::var_os(FIO_ENV).map_or_else(|| PathBuf::from("fio"), PathBuf::from);
    match Command::new(&prog).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(prog),
        Ok(o) => Err(format!(
            "fio not usable ({} --version: {})",
            prog.display(),
            o.status
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err("fio not found".into()),
        Err(e) => Err(format!("fio not usable ({}: {e})", prog.display())),
    }
}

fn num(v: &Value, what: &str) -> io::Result<f64> {
    v.as_f64()
        .ok_or_else(|| io::Error::other(format!("fio's JSON has no number at {what}")))
}

/// One trial of fio: the same reads for `ms` milliseconds.
fn fio_trial(
    fio: &Path,
    path: &Path,
    size: u64,
    ms: u64,
    cpu: Option<usize>,
) -> io::Result<Sample> {
    let mut cmd = Command::new(fio);
    cmd.arg("--name=cport-bench")
        .arg(format!("--filename={}", path.display()))
        .args([
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=32",
            "--numjobs=1",
            "--norandommap",
            "--randrepeat=0",
            "--time_based",
            "--output-format=json",
        ])
        .arg(format!("--size={size}"))
        .arg(format!("--runtime={ms}ms"));
    if let Some(cpu) = cpu {
        cmd.arg(format!("--cpus_allowed={cpu}"));
    }
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!(
            "fio failed ({}): {}",
            out.status,
            stderr
                .lines()
                .chain(stdout.lines())
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ")
        )));
    }
    // fio may print notes before its JSON.
    let json = stdout.find('{').map_or("", |i| &stdout[i..]);
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| io::Error::other(format!("fio's output is not JSON: {e}")))?;
    let job = &doc["jobs"][0];
    let read = &job["read"];
    let ios = num(&read["total_ios"], "jobs[0].read.total_ios")?;
    let runtime_ms = num(&read["runtime"], "jobs[0].read.runtime")?;
    let job_ms = num(&job["job_runtime"], "jobs[0].job_runtime").unwrap_or(runtime_ms);
    let usr = num(&job["usr_cpu"], "jobs[0].usr_cpu")?;
    let sys = num(&job["sys_cpu"], "jobs[0].sys_cpu")?;
    let ctx = job["ctx"].as_f64().unwrap_or(0.0);
    let errors = job["error"].as_f64().unwrap_or(0.0);
    if errors != 0.0 || ios <= 0.0 || runtime_ms <= 0.0 {
        return Err(io::Error::other(format!(
            "fio did no reads (error {errors}, {ios} ios in {runtime_ms} ms)"
        )));
    }
    let secs = |pct: f64| Duration::from_secs_f64((pct / 100.0 * job_ms / 1000.0).max(0.0));
    Ok(Sample {
        ops: ios as u64,
        wall: Duration::from_secs_f64(runtime_ms / 1000.0),
        cpu: secs(usr + sys),
        sys: secs(sys),
        csw: ctx as u64,
        ..Sample::default()
    })
}

/// The `file` row.
pub(super) fn run(s: &Settings, backend: Backend) -> io::Result<Row> {
    let mib = s.work(1024, 256, 4, 1);
    let size = mib << 20;
    let ms = s.work(2000, 500, 50, 1);
    let base = s.dir.clone().unwrap_or_else(std::env::temp_dir);
    let describe = format!(
        "4 KiB random reads, queue depth {DEPTH}, O_DIRECT, on a {mib} MiB file in {} for {ms} ms; \
         ours: one thread and one port; peer: fio --ioengine=io_uring --direct=1 --rw=randread --bs=4k \
         --iodepth=32 --norandommap on the same file; CPU/op: the reading thread's process CPU, fio's usr+sys",
        base.display()
    );
    let label = format!("file 4K randread QD{DEPTH} O_DIRECT {mib} MiB");
    let row = |ours: Side, peer: Side, note: Option<String>| Row {
        id: "file",
        label: label.clone(),
        describe: describe.clone(),
        ops_per_trial: 0,
        ours,
        peer,
        target: Some(0.95),
        kind: RatioKind::Rate,
        note,
        extra: Vec::new(),
    };
    let empty = |name: String| Side {
        name,
        samples: Vec::new(),
        warmup: None,
    };
    let ours_name = format!("completion-port ({backend}, 1 thread)");
    let dir = TempDir::new(&base)?;
    let path = dir.0.join("data");
    eprintln!("  file: writing {mib} MiB to {}", path.display());
    write_data(&path, size).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("file: cannot write {}: {e}", path.display()),
        )
    })?;
    if let Err(e) = open_direct(&path) {
        if e.raw_os_error() == Some(libc::EINVAL) {
            let note = format!(
                "O_DIRECT refused by the filesystem of {} ({e}); not measured",
                base.display()
            );
            eprintln!("  file: {note}");
            return Ok(row(empty(ours_name), empty("fio".into()), Some(note)));
        }
        return Err(io::Error::new(
            e.kind(),
            format!("file: cannot open {} with O_DIRECT: {e}", path.display()),
        ));
    }
    let cpu = s.cpu_for(SLOT);
    let ours = |ms: u64, i: u64| -> io::Result<Sample> {
        let path = path.clone();
        run_on_thread("file", cpu, move || {
            ours_trial(&path, size, ms, backend, 0x9e37_79b9 + i)
        })
    };
    let warm = (ms / 4).max(50);
    let fio = find_fio();
    let fio_name = "fio (io_uring engine)".to_string();
    let ours_warmup = ours(warm, 0)?;
    let fio = match fio {
        Ok(f) => match fio_trial(&f, &path, size, warm, cpu) {
            Ok(w) => Ok((f, w)),
            Err(e) => Err(e.to_string()),
        },
        Err(why) => Err(why),
    };
    let mut o = Vec::with_capacity(s.pairs);
    let mut p = Vec::with_capacity(s.pairs);
    match fio {
        Ok((f, fio_warmup)) => {
            for i in 0..s.pairs {
                let a = ours(ms, i as u64 + 1)?;
                let b = fio_trial(&f, &path, size, ms, cpu)?;
                eprintln!(
                    "  file: pair {}/{}: ours {} ({:.0} ns CPU/op), fio {} ({:.0} ns CPU/op), ratio {:.2}",
                    i + 1,
                    s.pairs,
                    super::report::fmt_rate(a.ops_per_sec()),
                    a.cpu_ns_per_op(),
                    super::report::fmt_rate(b.ops_per_sec()),
                    b.cpu_ns_per_op(),
                    a.ops_per_sec() / b.ops_per_sec().max(1e-9),
                );
                o.push(a);
                p.push(b);
            }
            Ok(row(
                Side {
                    name: ours_name,
                    samples: o,
                    warmup: Some(ours_warmup),
                },
                Side {
                    name: fio_name,
                    samples: p,
                    warmup: Some(fio_warmup),
                },
                None,
            ))
        }
        Err(why) => {
            eprintln!("  file: {why}; measuring ours only, no ratio");
            for i in 0..s.pairs {
                let a = ours(ms, i as u64 + 1)?;
                eprintln!(
                    "  file: trial {}/{}: ours {} ({:.0} ns CPU/op)",
                    i + 1,
                    s.pairs,
                    super::report::fmt_rate(a.ops_per_sec()),
                    a.cpu_ns_per_op(),
                );
                o.push(a);
            }
            Ok(row(
                Side {
                    name: ours_name,
                    samples: o,
                    warmup: Some(ours_warmup),
                },
                empty(fio_name),
                Some(why),
            ))
        }
    }
}
