//! `cport`: the completion-port command-line program.

mod bench;
mod copy;
mod demo;
mod echo;
mod server;

use clap::{Parser, Subcommand};

/// The Windows I/O completion port model on Linux: an echo server, a file
/// copier, demos (and, through `cport-bench`, benchmarks).
#[derive(Parser)]
#[command(
    name = "cport",
    version,
    about,
    long_about = None,
    after_help = "Examples:
  cport demo                                  echo server + verifying client, 3 s
  cport echo --listen 127.0.0.1:7000          serve until Ctrl-C (try: nc 127.0.0.1 7000)
  cport copy big.iso /backup/big.iso          overlapped file copy
  cport bench all --quick --json out.json     every benchmark, side by side with its peers"
)]
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
    #[command(after_help = "Examples:
  cport demo                                          4 workers, 50 connections, 3 s
  cport demo --threads 8 --connections 200 --seconds 10
  cport demo --backend epoll --message-size 4096      the epoll fallback, bigger messages")]
    Demo(demo::Args),
    /// Benchmark the port side by side with its peers and print ratios
    ///
    /// Runs the separate program `cport-bench` (next to `cport`) with the
    /// same arguments: `cport bench --help` shows its options. Build it with
    /// `cargo build --release -p cport-bench`.
    #[command(
        verbatim_doc_comment,
        disable_help_flag = true,
        after_help = "Examples:
  cport bench all --quick                        every workload in well under 2 minutes
  cport bench echo --json echo.json              echo vs raw epoll, raw io_uring, tokio, compio; JSON with units
  cport bench --help                             cport-bench's workloads and options"
    )]
    Bench(bench::Args),
    /// Run a TCP echo server on one completion port until Ctrl-C or SIGTERM
    ///
    /// A pool of worker threads dequeues from one port; each connection has
    /// a heap context; everything received is sent back. Ctrl-C or SIGTERM
    /// stops the workers and exits with status 0.
    ///
    /// Try it: `nc 127.0.0.1 7000`, type a line, get it back.
    #[command(
        verbatim_doc_comment,
        after_help = "Examples:
  cport echo --listen 127.0.0.1:7000
  cport echo --listen 0.0.0.0:7000 --threads 8 --stats
  cport echo --listen 127.0.0.1:0 --backend epoll   (any free port; printed)"
    )]
    Echo(echo::Args),
    /// Copy a file with overlapped reads and writes through one completion port
    ///
    /// Up to --queue-depth blocks are in flight at different offsets. The
    /// copy goes to a temporary file next to DST (unnamed where the
    /// filesystem allows), put in place at the end, so DST is either the
    /// complete copy or untouched. A progress bar shows on a terminal.
    #[command(
        verbatim_doc_comment,
        after_help = "Examples:
  cport copy big.iso /backup/big.iso
  cport copy big.iso /backup/big.iso --queue-depth 64 --block-size 256K
  cport copy disk.img /mnt/disk.img --direct --force   (O_DIRECT, replace)"
    )]
    Copy(copy::Args),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Echo(a) => echo::run(a),
        Command::Copy(a) => copy::run(a),
    };
    if let Err(e) = r {
        eprintln!("cport: {e}");
        std::process::exit(1);
    }
}
