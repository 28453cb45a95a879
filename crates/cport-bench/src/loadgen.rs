//! The closed-loop load generator shared by every echo-style workload: one
//! thread, one epoll instance, `connections` sockets that each send a
//! message, wait for its full echo, check every byte, and send the next.
//!
//! The same generator drives ours and every peer, so the only thing that
//! changes between trials is the server.
//!
//! Options: with `latency` every round trip is timed (first byte written
//! to last byte of the echo read) into an `hdrhistogram`; with `cost`
//! the first 4 bytes of each message ask the server to spin for so many
//! nanoseconds, or to make a blocking call that long (see [`Cost`],
//! [`CostParser`]); `zero_linger`
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
    pub cost: Option<Cost>,
    pub zero_linger: bool,
    /// Start the clock only once as many round trips as there are
    /// connections have completed (the first burst of thousands of
    /// messages is a ramp-up, not the steady state).
    pub ramp: bool,
    pub after_connect: Option<&'a mut dyn FnMut() -> io::Result<()>>,
}

/// Top bit of a request's cost header: the server makes a blocking call
/// for the nanoseconds in the low 31 bits, instead of spinning for them.
pub const BLOCK_FLAG: u32 = 1 << 31;

/// What the requests of a run ask the server to do besides echoing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `mixed`: spin 2 µs (90 %) or 200 µs (10 %).
    Mixed,
    /// `handlers`: a 1 ms blocking call in 10 % of requests, nothing else.
    Blocking,
}

/// The cost of every request: a profile and the seed of its sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub seed: u64,
    pub profile: Profile,
}

impl Cost {
    /// The cost header of request `seq` of connection `conn` (the first 4
    /// bytes of the message, little-endian; see [`CostParser`]).
    pub fn header(self, conn: usize, seq: u64) -> u32 {
        let mut x = self.seed
            ^ (conn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ seq.wrapping_mul(0xd6e8_feb8_6659_fd93);
        // splitmix64 finaliser
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let tail = x % 10 == 0;
        match (self.profile, tail) {
            (Profile::Mixed, true) => 200_000,
            (Profile::Mixed, false) => 2_000,
            (Profile::Blocking, true) => BLOCK_FLAG | 1_000_000,
            (Profile::Blocking, false) => 0,
        }
    }
}

/// What received requests ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// CPU to spend, spinning.
    pub spin_ns: u64,
    /// Time to spend in a blocking call.
    pub block_ns: u64,
}

impl Work {
    /// Does the work on this thread: spins, then blocks.
    pub fn run_inline(self) {
        burn(self.spin_ns);
        block(self.block_ns);
    }
}

/// Reads the cost headers out of a connection's byte stream of
/// `size`-byte messages, whatever way it is cut into reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct CostParser {
    /// Position in the current message.
    pos: u32,
    hdr: [u8; 4],
}

impl CostParser {
    /// Feeds received bytes; returns the work they ask for.
    pub fn feed(&mut self, data: &[u8], size: usize) -> Work {
        let mut w = Work::default();
        for &b in data {
            let pos = self.pos as usize;
            if pos < 4 {
                self.hdr[pos] = b;
                if pos == 3 {
                    let h = u32::from_le_bytes(self.hdr);
                    if h & BLOCK_FLAG != 0 {
                        w.block_ns += u64::from(h & !BLOCK_FLAG);
                    } else {
                        w.spin_ns += u64::from(h);
                    }
                }
            }
            self.pos = if pos + 1 >= size { 0 } else { self.pos + 1 };
        }
        w
    }
}

/// A blocking call of `ns` nanoseconds: the thread sleeps in the kernel,
/// as one waiting for a database's answer does.
pub fn block(ns: u64) {
    if ns > 0 {
        std::thread::sleep(Duration::from_nanos(ns));
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

fn fill(msg: &mut [u8], conn: usize, seq: u64, cost: Option<Cost>) {
    let mut x =
        (conn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for b in msg.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    if let Some(cost) = cost {
        if msg.len() >= 4 {
            msg[..4].copy_from_slice(&cost.header(conn, seq).to_le_bytes());
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
        fill(&mut msg, i, 0, opts.cost);
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
        opts.cost,
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
    cost: Option<Cost>,
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
            // A trial measures at least one round trip: on a loaded
            // machine a short trial (the tests' tiny scale) can end before
            // the server first ran. Its time counts (`elapsed` below).
            if requests == 0 && now - start < RAMP_LIMIT {
                end = now + duration;
                continue;
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
                fill(&mut c.msg, i, c.seq, cost);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of `requests` round trips of connection 3.
    fn stream(cost: Cost, requests: u64, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in 0..requests {
            let mut msg = vec![0u8; size];
            fill(&mut msg, 3, seq, Some(cost));
            out.extend_from_slice(&msg);
        }
        out
    }

    #[test]
    fn the_blocking_profile_blocks_one_request_in_ten_for_1_ms() {
        let cost = Cost {
            seed: 7,
            profile: Profile::Blocking,
        };
        let n = 10_000;
        let data = stream(cost, n, 64);
        let w = CostParser::default().feed(&data, 64);
        assert_eq!(w.spin_ns, 0);
        assert_eq!(w.block_ns % 1_000_000, 0);
        let blocks = w.block_ns / 1_000_000;
        assert!((800..=1200).contains(&blocks), "{blocks} blocks in {n}");
        // The same seed gives every side the same sequence.
        assert_eq!(stream(cost, 100, 64), stream(cost, 100, 64));
    }

    #[test]
    fn the_parser_finds_every_header_however_the_stream_is_cut() {
        for profile in [Profile::Mixed, Profile::Blocking] {
            let cost = Cost { seed: 1, profile };
            let size = 16;
            let data = stream(cost, 200, size);
            let whole = CostParser::default().feed(&data, size);
            assert!(whole.spin_ns + whole.block_ns > 0, "{profile:?}");
            // Cut into reads of 1, 3, 5 and 7 bytes, headers split too.
            for cut in [1, 3, 5, 7] {
                let mut p = CostParser::default();
                let mut sum = Work::default();
                for chunk in data.chunks(cut) {
                    let w = p.feed(chunk, size);
                    sum.spin_ns += w.spin_ns;
                    sum.block_ns += w.block_ns;
                }
                assert_eq!(sum, whole, "{profile:?}, reads of {cut}");
            }
        }
    }

    #[test]
    fn mixed_requests_spin_2_or_200_us() {
        let cost = Cost {
            seed: 9,
            profile: Profile::Mixed,
        };
        for seq in 0..1000 {
            let h = cost.header(0, seq);
            assert!(h == 2_000 || h == 200_000, "{h}");
        }
    }

    /// A server that first answers after the trial's time is up still
    /// gives the trial a round trip (a loaded machine, a tiny scale):
    /// the trial runs on until one comes back, and its time counts.
    #[test]
    fn a_trial_waits_for_its_first_round_trip() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let mut buf = [0u8; 16];
            // Echo until the load generator hangs up.
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let load = run_with(addr, 1, 16, Duration::from_millis(10), Opts::default()).unwrap();
        assert!(load.requests >= 1, "{} requests", load.requests);
        assert!(
            load.elapsed >= Duration::from_millis(90),
            "{:?}",
            load.elapsed
        );
        server.join().unwrap();
    }
}
