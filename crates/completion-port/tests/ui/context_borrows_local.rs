use completion_port::Port;

fn main() {
    let local = 5u32;
    let port = Port::<&u32>::new(1).unwrap();
    port.post(0, 0, &local).unwrap();
}
