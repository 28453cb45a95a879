use completion_port::Handle;

fn issue(h: &Handle<&u32>, data: &u32) {
    h.nop(data).unwrap();
}

fn main() {}
