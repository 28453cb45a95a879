//! `cport bench …`: the benchmarks live in their own program,
//! `cport-bench` (crate `crates/cport-bench`), so that this CLI does not
//! link tokio, compio, io-uring and the rest of the peers. This command
//! runs that program, found next to the `cport` executable, with the
//! arguments unchanged; when it is not there, the error says how to build
//! it.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Name of the benchmark program.
const BENCH_EXE: &str = "cport-bench";

/// Everything after `cport bench`, handed to `cport-bench` as it is.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Arguments of `cport-bench` (`cport bench --help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

/// Where `cport-bench` should be: next to this executable.
fn bench_exe() -> io::Result<PathBuf> {
    let me = std::env::current_exe().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("bench: cannot locate the cport executable: {e}"),
        )
    })?;
    Ok(me.with_file_name(BENCH_EXE))
}

/// How to build `cport-bench` so that it lands next to `cport` at `exe`.
fn how_to_build(exe: &Path) -> String {
    let profile = exe
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str());
    let flag = match profile {
        Some("debug") => "",
        _ => " --release",
    };
    format!(
        "build it with `cargo build{flag} -p cport-bench` (or run it directly: \
         `cargo run{flag} -p cport-bench -- all --quick`)"
    )
}

/// Replaces this process with `cport-bench ARGS…`; returns only on error.
pub fn run(a: Args) -> io::Result<()> {
    let exe = bench_exe()?;
    if !exe.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "bench: the benchmarks are a separate program, {} (not found); {}",
                exe.display(),
                how_to_build(&exe)
            ),
        ));
    }
    let e = Command::new(&exe).args(&a.args).exec();
    Err(io::Error::new(
        e.kind(),
        format!("bench: cannot run {}: {e}", exe.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_hint_follows_the_profile() {
        let debug = how_to_build(Path::new("/x/target/debug/cport-bench"));
        assert!(debug.contains("`cargo build -p cport-bench`"), "{debug}");
        let release = how_to_build(Path::new("/x/target/release/cport-bench"));
        assert!(
            release.contains("`cargo build --release -p cport-bench`"),
            "{release}"
        );
        let installed = how_to_build(Path::new("/home/u/.cargo/bin/cport-bench"));
        assert!(installed.contains("--release"), "{installed}");
    }
}
