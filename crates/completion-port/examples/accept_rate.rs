//! Connection accept rate of a port: a one-worker server (pinned to the
//! first CPU) keeps `outstanding` accepts pending on a listener, closes
//! each accepted connection and issues the next accept; a client process
//! (pinned to the second CPU) connects and closes (`SO_LINGER` 0: no
//! `TIME_WAIT`) in a loop from `clients` threads for `secs` seconds.
//! Prints accepts per second and the server process's CPU per accept.
//!
//! ```text
//! cargo run --release -p completion-port --example accept_rate -- [secs] [outstanding] [clients]
//! CPORT_MULTISHOT_ACCEPT=1 …   # multishot accept on (io_uring)
//! CPORT_BACKEND=epoll …        # the epoll backend
//! ```

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use completion_port::Port;
use socket2::{Domain, Socket, Type};

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// User + system CPU of this process, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid and writable.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn client(addr: SocketAddr, secs: f64, threads: usize) {
    pin(1);
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, made) = (stop.clone(), made.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match TcpStream::connect(addr) {
                        Ok(s) => {
                            socket2::SockRef::from(&s)
                                .set_linger(Some(Duration::ZERO))
                                .unwrap();
                            made.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("connect: {e}");
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    println!("{}", made.load(Ordering::Relaxed));
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("client") {
        client(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
        );
        return Ok(());
    }
    let num = |i: usize, d: f64| args.get(i).map_or(d, |s| s.parse().unwrap());
    let secs = num(0, 2.0);
    let outstanding = num(1, 4.0) as usize;
    let clients = num(2, 2.0) as usize;
    pin(0);
    let port = Port::<()>::builder().concurrency(1).build()?;
    let l = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    l.set_reuse_address(true)?;
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())?;
    l.listen(4096)?;
    let addr = l.local_addr()?.as_socket().unwrap();
    let l = port.associate(l, 0)?;
    for _ in 0..outstanding {
        l.accept(()).map_err(|r| r.error)?;
    }
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "client",
            &addr.to_string(),
            &secs.to_string(),
            &clients.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let (t0, c0) = (Instant::now(), cpu_seconds());
    let mut accepted = 0u64;
    let mut errors = 0u64;
    while child.try_wait()?.is_none() {
        let Ok(mut p) = port.get(Some(Duration::from_millis(50))) else {
            continue;
        };
        match p.take_accepted() {
            Some(_) => accepted += 1,
            None => errors += 1,
        }
        l.accept(()).map_err(|r| r.error)?;
    }
    let (t, c) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let out = child.wait_with_output()?;
    let made: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "backend={} multishot={} outstanding={outstanding} clients={clients}: \
         {accepted} accepted ({made} connected, {errors} errors) in {t:.2} s: \
         {:.1} k/s, server CPU {:.2} µs/accept",
        port.backend(),
        std::env::var("CPORT_MULTISHOT_ACCEPT").unwrap_or_default(),
        accepted as f64 / t / 1e3,
        c / accepted.max(1) as f64 * 1e6,
    );
    Ok(())
}
