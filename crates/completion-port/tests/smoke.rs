use completion_port::{Buf, GetError, Port};
use std::io::Write;
use std::time::Duration;

#[test]
fn smoke() {
    let port = Port::<u32>::new(2).unwrap();
    port.post(5, 10, 99).unwrap();
    let p = port.get(Some(Duration::from_secs(1))).unwrap();
    assert_eq!((p.key, *p.result.as_ref().unwrap(), p.context), (5, 10, 99));
    assert!(matches!(
        port.get(Some(Duration::from_millis(10))),
        Err(GetError::Timeout)
    ));
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"hello world").unwrap();
    let h = port.associate(f, 3).unwrap();
    h.read_at(Buf::with_capacity(100), 6, 1).unwrap();
    let mut p = port.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(p.key, 3);
    assert_eq!(&p.take_buf().unwrap()[..], b"world");
    h.nop(7).unwrap();
    let p = port.get(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(p.context, 7);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let lh = port.associate(l, 1).unwrap();
    lh.accept(0).unwrap();
    let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let ch = port.associate(c, 2).unwrap();
    ch.connect(addr, 1).unwrap();
    let mut got = vec![];
    for _ in 0..2 {
        got.push(port.get(Some(Duration::from_secs(5))).unwrap());
    }
    got.sort_by_key(|p| p.key);
    assert!(got[0].result.is_ok(), "{:?}", got[0].result);
    assert!(got[1].result.is_ok(), "{:?}", got[1].result);
    let acc = got[0].take_accepted().unwrap();
    let sh = port.associate(acc.socket, 10).unwrap();
    ch.send(Buf::copy_from(b"ping"), 5).unwrap();
    sh.recv(Buf::with_capacity(10), 6).unwrap();
    let mut ps = vec![];
    port.get_many(&mut ps, 4, Some(Duration::from_secs(5)))
        .unwrap();
    if ps.len() < 2 {
        ps.push(port.get(Some(Duration::from_secs(5))).unwrap());
    }
    ps.sort_by_key(|p| p.key);
    assert_eq!(ps[1].key, 10);
    assert_eq!(&ps[1].take_buf().unwrap()[..], b"ping");
    port.close();
    assert!(matches!(port.get(None), Err(GetError::Closed)));
}
