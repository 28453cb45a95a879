use completion_port::Port;

fn main() {
    let port = Port::<u32>::new(1).unwrap();
    let h = port.associate(std::fs::File::open("/dev/null").unwrap(), 0).unwrap();
    let mut stack = [0u8; 64];
    h.read_at(&mut stack[..], 0, 1).unwrap();
}
