//! `echo-server`: attaches a name and echoes every message (see `resmgr_examples::echo`).
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Echo server: attaches a name and replies to every message with the same bytes"
)]
struct Cli {
    #[command(flatten)]
    args: resmgr_examples::cli::EchoServerArgs,
}

fn main() -> std::process::ExitCode {
    resmgr_examples::cli::echo_server(&Cli::parse().args)
}
