//! An operation belongs to the port, not to the thread that issued it: it
//! completes normally after that thread has exited (as on Windows since
//! Vista). io_uring cancels a request when its submitting thread exits; the
//! port resubmits such orphans, and this test holds both backends to it.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use common::*;
use completion_port::{Backend, Buf, PacketKind};

fn ops_outlive_the_thread_that_issued_them(backend: Backend) {
    let port = port::<u32>(backend, 2);
    let (a, mut peer) = UnixStream::pair().unwrap();
    let sock = port.associate(a, 1).unwrap();
    let file = port.associate(tempfile::tempfile().unwrap(), 2).unwrap();
    let listener = port
        .associate(std::net::TcpListener::bind("127.0.0.1:0").unwrap(), 3)
        .unwrap();
    let addr = {
        use std::os::fd::AsFd;
        socket2::SockRef::from(&listener.as_fd())
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap()
    };
    const WRITES: u32 = 32;
    {
        let (sock, file, listener) = (sock.clone(), file.clone(), listener.clone());
        std::thread::spawn(move || {
            sock.recv(Buf::with_capacity(16), 1000).unwrap();
            listener.accept(2000).unwrap();
            for i in 0..WRITES {
                file.write_at(Buf::copy_from(&[i as u8; 4096]), u64::from(i) * 4096, i)
                    .unwrap();
            }
        })
        .join()
        .unwrap();
    }
    // The issuing thread is gone; now make the pending ones completable.
    peer.write_all(b"after exit").unwrap();
    let _client = std::net::TcpStream::connect(addr).unwrap();
    let mut writes = 0;
    let (mut got_recv, mut got_accept) = (false, false);
    for _ in 0..WRITES + 2 {
        let mut p = port.get(Some(WAIT)).unwrap();
        let r = p.result.as_ref().copied().map_err(|e| e.to_string());
        match p.kind() {
            PacketKind::Recv => {
                assert_eq!(r, Ok(10));
                assert_eq!(&p.take_buf().unwrap()[..], b"after exit");
                got_recv = true;
            }
            PacketKind::Accept => {
                assert_eq!(r, Ok(0));
                assert!(p.take_accepted().is_some());
                got_accept = true;
            }
            PacketKind::Write => {
                assert_eq!(r, Ok(4096), "write {}", p.context);
                writes += 1;
            }
            k => panic!("unexpected packet {k:?}"),
        }
    }
    assert!(got_recv && got_accept);
    assert_eq!(writes, WRITES);
}

per_backend!(ops_outlive_the_thread_that_issued_them);
