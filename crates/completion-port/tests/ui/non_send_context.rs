use completion_port::Port;
use std::rc::Rc;

fn main() {
    let port = Port::<Rc<u32>>::new(1).unwrap();
    port.post(0, 0, Rc::new(1)).unwrap();
}
