//! The closed-loop load generator shared by every echo-style workload: one
//! thread, one epoll instance, `connections` sockets that each send a
//! message, wait for its full echo, check every byte, and send the next.
//!
//! The same generator drives ours and every peer, so the only thing that
//! changes between trials is the server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// What a run of the generator measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    /// Round trips completed (each one verified byte for byte).
    pub requests: u64,
    /// Wall time of the measured part.
    pub elapsed: Duration,
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
}

fn fill(msg: &mut [u8], conn: usize, seq: u64) {
    let mut x =
        (conn as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for b in msg.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
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
/// for `duration`. Fails on any mismatch, error, or early close.
pub fn run(
    addr: SocketAddr,
    connections: usize,
    size: usize,
    duration: Duration,
) -> io::Result<Load> {
    let mut conns = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut msg = vec![0u8; size];
        fill(&mut msg, i, 0);
        conns.push(Conn {
            stream,
            msg,
            sent: 0,
            got: 0,
            echo: vec![0u8; size],
            seq: 0,
            events: (libc::EPOLLIN | libc::EPOLLOUT) as u32,
        });
    }
    // SAFETY: plain syscall; the fd is closed at the end of this function.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    let result = drive(ep, &mut conns, size, duration);
    // SAFETY: `ep` is ours and closed once.
    unsafe { libc::close(ep) };
    result
}

fn drive(ep: i32, conns: &mut [Conn], size: usize, duration: Duration) -> io::Result<Load> {
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: c.events,
            u64: i as u64,
        };
        // SAFETY: valid epoll fd, open socket, valid event.
        cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, c.stream.as_raw_fd(), &mut ev) })?;
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; conns.len().max(1)];
    let start = Instant::now();
    let end = start + duration;
    let mut requests = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
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
                requests += 1;
                c.seq += 1;
                fill(&mut c.msg, i, c.seq);
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
    Ok(Load {
        requests,
        elapsed: start.elapsed(),
    })
}
