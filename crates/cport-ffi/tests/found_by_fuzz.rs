//! Bugs the C fuzzer and its model found, each as a minimal test that
//! failed before its fix and is a plain regression test since (the fuzzer
//! itself, `tests/c/fuzz.c`, checks each of them on every run).

use std::time::{Duration, Instant};

use cport::*;

/// An fd number nothing has open (far above any fd a test opens).
const NOT_OPEN: HANDLE = 0x7ff0_1234 as HANDLE;

/// A new file `f` in `dir`, opened for overlapped reads and writes.
fn new_overlapped_file(dir: &tempfile::TempDir) -> HANDLE {
    let path = std::ffi::CString::new(dir.path().join("f").to_str().unwrap()).unwrap();
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the
    // other pointers are NULL, which CreateFileA accepts.
    let file = unsafe {
        CreateFileA(
            path.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            0,
            std::ptr::null_mut(),
            CREATE_ALWAYS,
            FILE_FLAG_OVERLAPPED,
            std::ptr::null_mut(),
        )
    };
    assert_ne!(
        file,
        INVALID_HANDLE_VALUE,
        "CreateFileA: {}",
        GetLastError()
    );
    file
}

/// Fixed: `CancelIoEx`/`CancelIo` on an fd number nothing has open said
/// `ERROR_NOT_FOUND`.
#[test]
fn cancel_on_an_fd_number_nothing_has_open_is_invalid_handle() {
    // SAFETY: nothing is dereferenced.
    let one = unsafe { CancelIoEx(NOT_OPEN, std::ptr::null_mut()) };
    assert_eq!(
        (one, GetLastError()),
        (FALSE, ERROR_INVALID_HANDLE),
        "CancelIoEx"
    );
    // SAFETY: as above.
    let all = unsafe { CancelIo(NOT_OPEN) };
    assert_eq!(
        (all, GetLastError()),
        (FALSE, ERROR_INVALID_HANDLE),
        "CancelIo"
    );
}

/// Waits (bounded) until `ov`'s state is no longer `STATUS_PENDING`, as a
/// Windows program spinning on `HasOverlappedIoCompleted` does; returns
/// `(Internal, InternalHigh)`, or `None` after 2 s.
fn wait_written(ov: &OVERLAPPED) -> Option<(usize, usize)> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        // SAFETY: `ov` is a live OVERLAPPED; the library writes these
        // fields atomically (a volatile read sees its store).
        let st = unsafe { std::ptr::read_volatile(&ov.Internal) };
        if st as u32 != STATUS_PENDING {
            return Some((st, ov.InternalHigh));
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Found by the fuzzer (the model's "closing ends it promptly" check): a
/// zero-length `ReadFile`/`WriteFile` on a file or pipe that queues a
/// packet (no skip mode, `hEvent`'s low bit clear) is queued as a post,
/// which the ports' completion hook never sees, so its OVERLAPPED is
/// written only when its packet is dequeued: `HasOverlappedIoCompleted`
/// stays false while nobody dequeues (Windows: the zero-byte transfer
/// completes in its call, state written, packet queued). Fixed in 5c31c77.
#[test]
fn zero_length_transfer_with_a_packet_writes_its_state_when_it_ends() {
    // SAFETY: every pointer passed lives across the calls that use it;
    // each OVERLAPPED is boxed and outlives its operation (its packet is
    // dequeued before it is dropped).
    unsafe {
        let port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, 1);
        assert!(!port.is_null());
        let dir = tempfile::tempdir().unwrap();
        let file = new_overlapped_file(&dir);
        assert_ne!(file, INVALID_HANDLE_VALUE);
        let mut fds = [0; 2];
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        let (rd, wr) = (fds[0] as usize as HANDLE, fds[1] as usize as HANDLE);
        for (h, key) in [(file, 1), (rd, 2), (wr, 3)] {
            assert_eq!(CreateIoCompletionPort(h, port, key, 0), port);
        }
        let mut failures = Vec::new();
        let mut buf = [0u8; 1];
        for (what, h, write) in [
            ("ReadFile of 0 on a file", file, false),
            ("WriteFile of 0 on a file", file, true),
            ("ReadFile of 0 on a pipe", rd, false),
            ("WriteFile of 0 on a pipe", wr, true),
        ] {
            let mut ov: Box<OVERLAPPED> = Box::new(std::mem::zeroed());
            let p: LPOVERLAPPED = &mut *ov;
            let ok = if write {
                WriteFile(h, buf.as_ptr().cast(), 0, std::ptr::null_mut(), p)
            } else {
                ReadFile(h, buf.as_mut_ptr().cast(), 0, std::ptr::null_mut(), p)
            };
            assert!(
                ok == TRUE || GetLastError() == ERROR_IO_PENDING,
                "{what}: {}",
                GetLastError()
            );
            if wait_written(&ov).is_none() {
                failures.push(what);
            }
            let (mut n, mut key, mut got) = (0, 0, std::ptr::null_mut());
            assert_eq!(
                GetQueuedCompletionStatus(port, &mut n, &mut key, &mut got, 2000),
                TRUE
            );
            assert_eq!((got, n), (p, 0), "{what}: its packet");
            assert_eq!(ov.Internal, 0, "{what}: its state after the packet");
        }
        for h in [file, rd, wr, port] {
            CloseHandle(h);
        }
        assert!(
            failures.is_empty(),
            "OVERLAPPED still STATUS_PENDING 2 s after the call, nobody dequeuing: {failures:?}"
        );
    }
}

/// Found by the fuzzer (the model's "a cancel that names only ended
/// operations finds nothing" check): `CancelIoEx`/`CancelIo` on a listener
/// whose `AcceptEx` already ended (its state written, its packet not yet
/// dequeued) say `TRUE`, not `ERROR_NOT_FOUND` — the `AcceptEx` stays in
/// the library's list of accepts in flight (`accept_live.rs`) until its
/// packet is dequeued, and a cancel counts every entry it marks. Windows
/// (and this library for every other operation) answers `ERROR_NOT_FOUND`
/// once the operation completed. Fixed in 5c31c77 (`FfiOp::end` drops the
/// entry before writing the state).
#[test]
fn cancel_of_an_ended_accept_finds_nothing() {
    let mut failures = Vec::new();
    for data in [0, 32] {
        for connect in [false, true] {
            failures.extend(cancel_ended_accept(data, connect));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// An `AcceptEx` with `data` receive bytes (a client connected that sends
/// nothing, if `connect`), cancelled, seen ended; then cancelled again:
/// what each later cancel said, where it was not `ERROR_NOT_FOUND`.
fn cancel_ended_accept(data: DWORD, connect: bool) -> Vec<String> {
    // SAFETY: every pointer passed lives across the calls that use it; the
    // OVERLAPPED and the output buffer are boxed and outlive the operation
    // (its packet is dequeued before they are dropped).
    unsafe {
        let port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, 1);
        let l = WSASocketW(
            libc::AF_INET,
            libc::SOCK_STREAM,
            0,
            std::ptr::null_mut(),
            0,
            1,
        );
        let acc = WSASocketW(
            libc::AF_INET,
            libc::SOCK_STREAM,
            0,
            std::ptr::null_mut(),
            0,
            1,
        );
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let sa: *mut libc::sockaddr = (&mut a as *mut libc::sockaddr_in).cast();
        assert_eq!(libc::bind(l as i32, sa, len), 0);
        assert_eq!(libc::listen(l as i32, 4), 0);
        assert_eq!(libc::getsockname(l as i32, sa, &mut len), 0);
        assert_eq!(CreateIoCompletionPort(l as HANDLE, port, 1, 0), port);
        let mut ov: Box<OVERLAPPED> = Box::new(std::mem::zeroed());
        let p: LPOVERLAPPED = &mut *ov;
        let mut out = vec![0u8; 256];
        let room = 64;
        let ok = AcceptEx(
            l,
            acc,
            out.as_mut_ptr().cast(),
            data,
            room,
            room,
            std::ptr::null_mut(),
            p,
        );
        assert!(ok == FALSE && GetLastError() == ERROR_IO_PENDING);
        let client = connect.then(|| {
            let c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert_eq!(libc::connect(c, sa, len), 0);
            // Accepted (the connection installed in the accept socket):
            // with a receive length, the AcceptEx now waits for data.
            let end = Instant::now() + Duration::from_secs(2);
            let mut peer: libc::sockaddr_in = std::mem::zeroed();
            let mut plen = len;
            while libc::getpeername(
                acc as i32,
                (&mut peer as *mut libc::sockaddr_in).cast(),
                &mut plen,
            ) != 0
            {
                assert!(Instant::now() < end, "the client was never accepted");
                plen = len;
                std::thread::sleep(Duration::from_millis(1));
            }
            c
        });
        // TRUE, or (no receive length, a client connected) ERROR_NOT_FOUND:
        // the accept may have completed already.
        CancelIoEx(l as HANDLE, std::ptr::null_mut());
        assert!(wait_written(&ov).is_some(), "the AcceptEx ended");
        let again = [
            (
                "CancelIoEx(listener, ov)",
                CancelIoEx(l as HANDLE, p),
                GetLastError(),
            ),
            (
                "CancelIoEx(listener, NULL)",
                CancelIoEx(l as HANDLE, std::ptr::null_mut()),
                GetLastError(),
            ),
            ("CancelIo(listener)", CancelIo(l as HANDLE), GetLastError()),
        ];
        let (mut n, mut key, mut got) = (0, 0, std::ptr::null_mut());
        GetQueuedCompletionStatus(port, &mut n, &mut key, &mut got, 2000);
        assert_eq!(got, p, "its packet");
        for h in [l, acc] {
            closesocket(h);
        }
        if let Some(c) = client {
            libc::close(c);
        }
        CloseHandle(port);
        again
            .into_iter()
            .filter(|&(_, ok, err)| (ok, err) != (FALSE, ERROR_NOT_FOUND))
            .map(|(what, ok, err)| {
                format!(
                    "AcceptEx with {data} data bytes, client connected {connect}: {what} after \
                     it ended (packet not dequeued): {ok}, error {err}"
                )
            })
            .collect()
    }
}

/// Found while writing the fuzzer's model ("a no-packet operation frees
/// its OVERLAPPED when its state is written"), and seen in CI's C suite
/// under ASan (`suite.c`'s `s3_no_packet_low_bit` failed once in about
/// seven runs with `ReadFile: 87`): a no-packet operation's state is written (`mark_done`, in the ports'
/// completion hook) before its OVERLAPPED leaves the library's registry
/// (when the discarded packet's context is dropped, after the hook), so a
/// program that sees the operation ended — `GetOverlappedResult(TRUE)`
/// returned, `HasOverlappedIoCompleted` — and reuses the OVERLAPPED at
/// once is sometimes refused with `ERROR_INVALID_PARAMETER`. On Windows the
/// OVERLAPPED is the program's again once its state is written. The window
/// is wide: the completing thread (often the port's monitor) is preempted
/// by the waiter it just woke; a retry loop saw the reuse refused for
/// 0.8–2.5 ms. (After a refused round, `GetOverlappedResult` returns at
/// once — the state is the previous one — so this loop hits the window
/// again and again: most of its rounds are refused.) Fixed in 5c31c77:
/// `FfiOp::end` takes the OVERLAPPED out of the registry before writing its
/// state.
#[test]
fn a_no_packet_overlapped_seen_ended_is_free() {
    const ROUNDS: usize = 2000;
    // SAFETY: every pointer passed lives across the calls that use it; the
    // OVERLAPPED and the buffer are boxed and outlive every operation
    // (each is seen ended before the next starts).
    unsafe {
        let port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, 1);
        let dir = tempfile::tempdir().unwrap();
        let file = new_overlapped_file(&dir);
        assert_eq!(CreateIoCompletionPort(file, port, 1, 0), port);
        let mut ov: Box<OVERLAPPED> = Box::new(std::mem::zeroed());
        let p: LPOVERLAPPED = &mut *ov;
        let buf = [7u8; 64];
        let mut refused = 0;
        let mut first = None;
        for round in 0..ROUNDS {
            (*p).hEvent = 1 as HANDLE; // no packet
            let ok = WriteFile(file, buf.as_ptr().cast(), 64, std::ptr::null_mut(), p);
            if ok == FALSE && GetLastError() == ERROR_INVALID_PARAMETER {
                refused += 1;
                first.get_or_insert(round);
            } else {
                assert!(
                    ok == TRUE || GetLastError() == ERROR_IO_PENDING,
                    "{}",
                    GetLastError()
                );
            }
            let mut n = 0;
            assert_eq!(GetOverlappedResult(file, p, &mut n, TRUE), TRUE);
        }
        CloseHandle(file);
        CloseHandle(port);
        assert_eq!(
            refused, 0,
            "{refused} of {ROUNDS} WriteFile calls (the first: {first:?}) refused with ERROR_INVALID_PARAMETER right \
             after GetOverlappedResult(TRUE) said the previous no-packet write on the same \
             OVERLAPPED ended"
        );
    }
}

/// Found by the C fuzzer (seed 306 of a 1 M-call run on io_uring, after
/// 5c31c77): `GetOverlappedResult(bWait = FALSE)` on an operation that was
/// ending answered `ERROR_INVALID_PARAMETER` — the completing thread had
/// taken the OVERLAPPED out of the registry and not yet written its state
/// (it looks up the `hEvent` first), so the call saw "still pending" and
/// "not registered" at once. It must say `ERROR_IO_INCOMPLETE` or give the
/// result. Here a thread waits in `GetQueuedCompletionStatus` (and so
/// completes each write, event named in `hEvent`) while this one polls.
#[test]
fn get_overlapped_result_while_the_operation_ends() {
    const ROUNDS: usize = 20_000;
    // SAFETY: every pointer passed lives across the calls that use it; the
    // OVERLAPPED and the buffer outlive every operation (each one's packet
    // is dequeued, by the waiting thread, before the next is issued).
    unsafe {
        let port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, std::ptr::null_mut(), 0, 1);
        let dir = tempfile::tempdir().unwrap();
        let file = new_overlapped_file(&dir);
        assert_eq!(CreateIoCompletionPort(file, port, 1, 0), port);
        let event = CreateEventA(std::ptr::null_mut(), TRUE, FALSE, std::ptr::null());
        assert!(!event.is_null());
        let (port_addr, done_tx) = (port as usize, std::sync::mpsc::channel::<()>());
        let (tx, rx) = done_tx;
        let waiter = std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                let (mut n, mut key, mut ov) = (0, 0, std::ptr::null_mut());
                let ok = GetQueuedCompletionStatus(
                    port_addr as HANDLE,
                    &mut n,
                    &mut key,
                    &mut ov,
                    10_000,
                );
                assert_eq!(ok, TRUE, "{}", GetLastError());
                tx.send(()).unwrap();
            }
        });
        let mut ov: Box<OVERLAPPED> = Box::new(std::mem::zeroed());
        let p: LPOVERLAPPED = &mut *ov;
        let buf = [7u8; 64];
        let mut wrong = Vec::new();
        for round in 0..ROUNDS {
            (*p).hEvent = event;
            let ok = WriteFile(file, buf.as_ptr().cast(), 64, std::ptr::null_mut(), p);
            assert!(
                ok == TRUE || GetLastError() == ERROR_IO_PENDING,
                "{}",
                GetLastError()
            );
            loop {
                let mut n = 0;
                if GetOverlappedResult(file, p, &mut n, FALSE) == TRUE {
                    assert_eq!(n, 64);
                    break;
                }
                match GetLastError() {
                    ERROR_IO_INCOMPLETE => std::hint::spin_loop(),
                    e => {
                        wrong.push((round, e));
                        break;
                    }
                }
            }
            rx.recv_timeout(Duration::from_secs(10))
                .expect("its packet");
        }
        waiter.join().unwrap();
        CloseHandle(event);
        CloseHandle(file);
        CloseHandle(port);
        assert!(
            wrong.is_empty(),
            "{} of {ROUNDS} GetOverlappedResult(FALSE) calls on an ending write failed with \
             neither ERROR_IO_INCOMPLETE nor the result (round, error): {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
}
