//! Seeded stress of the end of an operation's life: several threads issue
//! receives, sends and no-ops on socket pairs, cancel random operations,
//! close and replace random handles, and post, while others dequeue. Every
//! operation that was accepted yields exactly one packet (whatever its
//! outcome), every buffer comes back, and no packet is unknown.
//!
//! `CPORT_STRESS_SEED` picks the sequence; `CPORT_CANCEL_OPS` (default
//! 50 000) the number of random steps.

mod common;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use completion_port::{is_aborted, Backend, Buf, GetError, Handle, Port, Token};

const THREADS: usize = 3;
const DEQUEUERS: usize = 2;
const SLOTS: usize = 4;
const POST_KEY: usize = usize::MAX;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the test knows about one issued operation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Issued,
    Done,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cancel_close_stress(backend: Backend) {
    let seed = env_num("CPORT_STRESS_SEED", 0xc0ffee).max(1);
    let steps = env_num("CPORT_CANCEL_OPS", 50_000) as usize;
    eprintln!("cancel stress on {backend}: seed {seed}, {steps} steps per thread group");
    let port: Port<u64> = port(backend, DEQUEUERS);
    // Slots of socket pairs; a slot's handles are replaced when closed.
    let slots: Vec<Mutex<(Handle<u64>, Handle<u64>)>> = (0..SLOTS)
        .map(|i| {
            let (a, b) = UnixStream::pair().unwrap();
            Mutex::new((port.associate(a, i).unwrap(), port.associate(b, i).unwrap()))
        })
        .collect();
    let nop = port
        .associate(std::fs::File::open("/dev/null").unwrap(), 100)
        .unwrap();
    let ops: Mutex<HashMap<u64, State>> = Mutex::new(HashMap::new());
    let tokens: Mutex<Vec<(usize, Token)>> = Mutex::new(Vec::new());
    let next_id = AtomicUsize::new(1);
    let issued = AtomicUsize::new(0);
    let received = AtomicUsize::new(0);
    let done_issuing = AtomicBool::new(false);
    let (mut aborted, mut ok, mut failed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );

    thread::scope(|s| {
        for _ in 0..DEQUEUERS {
            let (ops, received, done_issuing, issued, port) =
                (&ops, &received, &done_issuing, &issued, &port);
            let (aborted, ok, failed) = (&aborted, &ok, &failed);
            s.spawn(move || {
                let mut last_progress = Instant::now();
                loop {
                    match port.get(Some(Duration::from_millis(20))) {
                        Ok(mut p) => {
                            last_progress = Instant::now();
                            let id = p.context;
                            let prev = ops.lock().unwrap().insert(id, State::Done);
                            assert_eq!(
                                prev,
                                Some(State::Issued),
                                "packet for op {id} ({:?}) seen twice or unknown",
                                p.kind()
                            );
                            received.fetch_add(1, SeqCst);
                            match &p.result {
                                Ok(_) => ok.fetch_add(1, SeqCst),
                                Err(e) if is_aborted(e) => aborted.fetch_add(1, SeqCst),
                                Err(_) => failed.fetch_add(1, SeqCst),
                            };
                            if p.key != POST_KEY && p.key != 100 {
                                assert!(p.take_buf().is_some(), "op {id}: buffer not returned");
                            }
                        }
                        Err(GetError::Timeout) => {
                            if done_issuing.load(SeqCst)
                                && received.load(SeqCst) == issued.load(SeqCst)
                            {
                                return;
                            }
                            assert!(
                                last_progress.elapsed() < WAIT,
                                "no packet for {WAIT:?}: lost completions"
                            );
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
        // Issuers in a scope of their own: it ends when they all have.
        thread::scope(|s| {
            for t in 0..THREADS {
                let (slots, ops, tokens, next_id, issued, nop, port) =
                    (&slots, &ops, &tokens, &next_id, &issued, &nop, &port);
                s.spawn(move || {
                    let mut rng = Rng(seed.wrapping_mul(t as u64 + 1) | 1);
                    for _ in 0..steps / THREADS {
                        let id = next_id.fetch_add(1, SeqCst) as u64;
                        let slot = rng.below(SLOTS as u64) as usize;
                        let choice = rng.below(100);
                        // Record before issuing: the packet may come at once.
                        let issue = |ops: &Mutex<HashMap<u64, State>>| {
                            ops.lock().unwrap().insert(id, State::Issued);
                            issued.fetch_add(1, SeqCst);
                        };
                        let unissue = |ops: &Mutex<HashMap<u64, State>>| {
                            ops.lock().unwrap().remove(&id);
                            issued.fetch_sub(1, SeqCst);
                        };
                        match choice {
                            0..=34 => {
                                let h = slots[slot].lock().unwrap().0.clone();
                                issue(ops);
                                match h.recv(Buf::with_capacity(8), id) {
                                    Ok(tok) => tokens.lock().unwrap().push((slot, tok)),
                                    Err(r) => {
                                        assert_eq!(
                                            r.error.raw_os_error(),
                                            Some(libc::EBADF),
                                            "{:?}",
                                            r.error
                                        );
                                        unissue(ops);
                                    }
                                }
                            }
                            35..=59 => {
                                let h = slots[slot].lock().unwrap().1.clone();
                                issue(ops);
                                if let Err(r) = h.send(Buf::copy_from(&id.to_le_bytes()), id) {
                                    assert_eq!(r.error.raw_os_error(), Some(libc::EBADF));
                                    unissue(ops);
                                }
                            }
                            60..=69 => {
                                issue(ops);
                                nop.nop(id).unwrap();
                            }
                            70..=79 => {
                                issue(ops);
                                port.post(POST_KEY, 0, id).unwrap();
                            }
                            80..=94 => {
                                let picked = {
                                    let mut tk = tokens.lock().unwrap();
                                    if tk.is_empty() {
                                        None
                                    } else {
                                        let i = rng.below(tk.len() as u64) as usize;
                                        Some(tk.swap_remove(i))
                                    }
                                };
                                if let Some((slot, tok)) = picked {
                                    let h = slots[slot].lock().unwrap().0.clone();
                                    match h.cancel(tok) {
                                        Ok(()) => {}
                                        Err(e) => {
                                            assert_eq!(e.kind(), std::io::ErrorKind::NotFound)
                                        }
                                    }
                                }
                            }
                            _ => {
                                // Close both ends of a slot and replace them.
                                let (a, b) = UnixStream::pair().unwrap();
                                let (na, nb) = (
                                    port.associate(a, slot).unwrap(),
                                    port.associate(b, slot).unwrap(),
                                );
                                let old =
                                    std::mem::replace(&mut *slots[slot].lock().unwrap(), (na, nb));
                                old.0.close();
                                old.1.close();
                            }
                        }
                    }
                });
            }
        });
        // Close every slot so that pending receives end too.
        for slot in &slots {
            let g = slot.lock().unwrap();
            g.0.close();
            g.1.close();
        }
        done_issuing.store(true, SeqCst);
    });
    let ops = ops.into_inner().unwrap();
    assert!(
        ops.values().all(|s| *s == State::Done),
        "some operations never completed"
    );
    let (a, o, f) = (*aborted.get_mut(), *ok.get_mut(), *failed.get_mut());
    eprintln!("{} ops: {o} ok, {a} aborted, {f} failed", ops.len());
    assert_eq!(a + o + f, ops.len());
    assert!(a > 0, "the run cancelled nothing: the test lost its point");
    assert_eq!(port.stats().in_flight, 0);
}

per_backend!(cancel_close_stress);
