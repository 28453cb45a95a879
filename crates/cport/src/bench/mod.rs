//! `cport bench` (being written).
#[derive(clap::Args)]
pub struct Args {}
pub fn run(_a: Args) -> std::io::Result<()> {
    Err(std::io::Error::other("bench: not built yet"))
}
