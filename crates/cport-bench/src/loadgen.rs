//! The closed-loop load generator shared by every echo-style workload: one
//! thread, one epoll instance, `connections` sockets that each send a
//! message, wait for its full echo, check every byte, and send the next.
//!
//! The same generator drives ours and every peer, so the only thing that
//! changes between trials is the server.
//!
//! Options: with `latency` every round trip is timed (first byte written
//! to last byte of the echo read) into an `hdrhistogram`; with `burn_seed`
//! the first 4 bytes of each message ask the server to burn CPU for that
//! many nanoseconds (see [`burn_ns`], [`BurnParser`]); `zero_linger`
//! closes with a reset (no TIME_WAIT: thousands of connections per trial
//! would otherwise exhaust the ephemeral ports); with `ramp` the clock
//! starts after a first round trip per connection (on average); the hook
//! runs just after the last connect.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// What a run of the generator measured.
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Round trips completed (each one verified byte for byte).
    pub requests: u64,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Round-trip latencies in ns, when asked for.
    pub latency: Option<Histogram<u64>>,
}

/// How to run the generator (see the module documentation).
#[derive(Default)]
pub struct Opts<'a> {
    pub latency: bool,
    pub burn_seed: Option<u64>,
    pub zero_linger: bool,
    /// Start the clock only once as many round trips as there are
    /// connections have completed (the first burst of thousands of
    /// messages is a ramp-up, not the steady state).
    pub ramp: bool,
    pub after_connect: Option<&'a mut dyn FnMut() -> io::Result<()>>,
}

/// CPU time a request asks for, from the seed, the connection and the
/// sequence number: 90 % 2 µs, 10 % 200 µs.
pub fn burn_ns(seed: u64, conn: usize, seq: u64) -> u32 {
    let mut x = seed
        ^ (conn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ seq.wrapping_mul(0xd6e8_feb8_6659_fd93);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    if x % 10 == 0 {
        200_000
    } else {
        2_000
    }
}

/// Reads the burn requests out of a connection's byte stream of
/// `size`-byte messages, whatever way it is cut into reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct BurnParser {
    /// Position in the current message.
    pos: u32,
    hdr: [u8; 4],
}

impl BurnParser {
    /// Feeds received bytes; returns the nanoseconds of CPU they ask for.
    pub fn feed(&mut self, data: &[u8], size: usize) -> u64 {
        let mut total = 0u64;
        for &b in data {
            let pos = self.pos as usize;
            if pos < 4 {
                self.hdr[pos] = b;
                if pos == 3 {
                    total += u64::from(u32::from_le_bytes(self.hdr));
                }
            }
            self.pos = if pos + 1 >= size { 0 } else { self.pos + 1 };
        }
        total
    }
}

/// Spins on the clock for `ns` nanoseconds (a handler's CPU work).
pub fn burn(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = Instant::now() + Duration::from_nanos(ns);
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

struct Conn {
    stream: TcpStream,
    /// The message in flight (changes every round trip).
    msg: Vec<u8>,
    /// Bytes of `msg` sent so far.
    sent: usize,
    /// Bytes of the echo received so far.
    got: usize,
    echo: Vec<u8>,
    seq: u64,
    /// Events registered with epoll for this socket.
    events: u32,
    /// When the first byte of `msg` was written (latency runs).
    t0: Option<Instant>,
}

fn fill(msg: &mut [u8], conn: usize, seq: u64, burn_seed: Option<u64>) {
    let mut x =
        (conn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for b in msg.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    if let Some(seed) = burn_seed {
        if msg.len() >= 4 {
            msg[..4].copy_from_slice(&burn_ns(seed, conn, seq).to_le_bytes());
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Runs `connections` closed loops of `size`-byte messages against `addr`
/// for `duration`, with options. Fails on any mismatch, error, or early
/// close.
pub fn run_with(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    duration: Duration,
    mut opts: Opts<'_>,
) -> io::Result<Load> {
    if size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "load generator: empty messages",
        ));
    }
    // Every buffer is allocated before the first connect.
    let mut bufs = Vec::with_capacity(connections);
    for i in 0..connections {
        let mut msg = vec![0u8; size];
        fill(&mut msg, i, 0, opts.burn_seed);
        bufs.push((msg, vec![0u8; size]));
    }
    let mut conns = Vec::with_capacity(connections);
    let mut latency = if opts.latency {
        Some(super::ns_histogram()?)
    } else {
        None
    };
    for (msg, echo) in bufs {
        let stream = TcpStream::connect(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "load generator: connection {} of {connections} to {addr}: {e}",
                    conns.len() + 1
                ),
            )
        })?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        if opts.zero_linger {
            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
        }
        conns.push(Conn {
            stream,
            msg,
            sent: 0,
            got: 0,
            echo,
            seq: 0,
            events: (libc::EPOLLIN | libc::EPOLLOUT) as u32,
            t0: None,
        });
    }
    if let Some(h) = opts.after_connect.as_mut() {
        h()?;
    }
    // SAFETY: plain syscall; the fd is closed at the end of this function.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    let result = drive(
        ep,
        &mut conns,
        size,
        duration,
        opts.burn_seed,
        latency.as_mut(),
        opts.ramp,
    );
    // SAFETY: `ep` is ours and closed once.
    unsafe { libc::close(ep) };
    let (requests, elapsed) = result?;
    Ok(Load {
        requests,
        elapsed,
        latency,
    })
}

fn drive(
    ep: i32,
    conns: &mut [Conn],
    size: usize,
    duration: Duration,
    burn_seed: Option<u64>,
    mut latency: Option<&mut Histogram<u64>>,
    ramp: bool,
) -> io::Result<(u64, Duration)> {
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: c.events,
            u64: i as u64,
        };
        // SAFETY: valid epoll fd, open socket, valid event.
        cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), &mut ev) })?;
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len().max(1)];
    let mut start = Instant::now();
    let mut ramp_left = if ramp { conns.len() as u64 } else { 0 };
    const RAMP_LIMIT: Duration = Duration::from_secs(60);
    let mut end = start + if ramp_left > 0 { RAMP_LIMIT } else { duration };
    let mut requests = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            if ramp_left > 0 {
                return Err(io::Error::other(format!(
                    "load generator: ramp-up ({} round trips) not done within {} s",
                    conns.len(),
                    RAMP_LIMIT.as_secs()
                )));
            }
            break;
        }
        let ms = (end - now).as_millis().clamp(1, 1000) as i32;
        // SAFETY: `events` has room for `events.len()` entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let i = ev.u64 as usize;
            let c = &mut conns[i];
            loop {
                // Send what is left of the message, then read the echo.
                if c.sent == 0 && latency.is_some() {
                    c.t0 = Some(Instant::now());
                }
                while c.sent < size {
                    match c.stream.write(&c.msg[c.sent..]) {
                        Ok(k) => c.sent += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                while c.got < size {
                    match c.stream.read(&mut c.echo[c.got..]) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "server closed a connection",
                            ))
                        }
                        Ok(k) => c.got += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                if c.got < size {
                    break;
                }
                if c.echo != c.msg {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("echo mismatch on connection {i}"),
                    ));
                }
                if ramp_left > 0 {
                    ramp_left -= 1;
                    if ramp_left == 0 {
                        start = Instant::now();
                        end = start + duration;
                    }
                } else {
                    requests += 1;
                }
                if let (Some(h), Some(t0)) = (latency.as_mut(), c.t0.take()) {
                    h.saturating_record(t0.elapsed().as_nanos().max(1) as u64);
                }
                c.seq += 1;
                fill(&mut c.msg, i, c.seq, burn_seed);
                c.sent = 0;
                c.got = 0;
            }
            let want = (if c.sent < size {
                libc::EPOLLIN | libc::EPOLLOUT
            } else {
                libc::EPOLLIN
            }) as u32;
            if want != c.events {
                let mut ev = libc::epoll_event {
                    events: want,
                    u64: i as u64,
                };
                // SAFETY: valid epoll fd, open socket, valid event.
                cvt(unsafe {
                    libc::epoll_ctl(ep, libc::EPOLL_CTL_MOD, c.stream.as_raw_fd(), &mut ev)
                })?;
                c.events = want;
            }
        }
    }
    Ok((requests, start.elapsed()))
}
