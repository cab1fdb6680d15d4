//! `echo-client`: sends messages to the echo server and prints the replies.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser)]
#[command(
    version,
    about = "Echo client: sends each MESSAGE to the echo server and prints what comes back"
)]
struct Cli {
    #[command(flatten)]
    args: resmgr_examples::cli::EchoClientArgs,
}

fn main() -> std::process::ExitCode {
    resmgr_examples::cli::echo_client(&Cli::parse().args)
}
