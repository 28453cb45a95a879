//! `cport`: the completion-port command-line program.

mod bench;
mod demo;

use clap::{Parser, Subcommand};

/// The Windows I/O completion port model on Linux: demos and benchmarks.
#[derive(Parser)]
#[command(name = "cport", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the seed's scenario: an echo server on one port served by a pool
    /// of worker threads, driven by a built-in client.
    ///
    /// Example: cport demo --threads 4 --connections 50 --seconds 3
    Demo(demo::Args),
    /// Benchmark the port side by side with its peers and print ratios.
    ///
    /// Example: cport bench queue --quick
    Bench(bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
    };
    if let Err(e) = r {
        eprintln!("cport: {e}");
        std::process::exit(1);
    }
}
