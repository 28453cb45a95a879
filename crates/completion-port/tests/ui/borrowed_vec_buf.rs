use completion_port::Port;

fn main() {
    let port = Port::<u32>::new(1).unwrap();
    let h = port.associate(std::fs::File::open("/dev/null").unwrap(), 0).unwrap();
    let mut v = Vec::with_capacity(64);
    h.recv(&mut v, 1).unwrap();
}
