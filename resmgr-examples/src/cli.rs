//! The command-line front ends of the examples, shared by the standalone binaries
//! (`echo-server`, `echo-client`) and `qsim run`.

use crate::echo;
use clap::Args;
use kernel_sim::{System, SystemBuilder};
use std::process::ExitCode;
use std::time::Duration;

/// Which system to use.
#[derive(Args, Debug, Clone)]
pub struct SystemArg {
    /// System (arena) name; default: $QSIM_SYSTEM, else qsim-<uid>.
    #[arg(long)]
    pub system: Option<String>,
}

impl SystemArg {
    fn builder(&self) -> SystemBuilder {
        match &self.system {
            Some(s) => SystemBuilder::new().name(s),
            None => SystemBuilder::new(),
        }
    }
}

/// Echo server: attaches a name and replies to every message with the same bytes.
#[derive(Args, Debug, Clone)]
pub struct EchoServerArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The name to attach under /dev/name/local/.
    #[arg(long, default_value = "echo")]
    pub name: String,
}

/// Echo client: sends each MESSAGE to the echo server and prints what comes back.
#[derive(Args, Debug, Clone)]
pub struct EchoClientArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The server's name under /dev/name/local/.
    #[arg(long, default_value = "echo")]
    pub name: String,
    /// Then send COUNT more 8-byte messages and print the median round trip.
    #[arg(long, default_value_t = 0)]
    pub count: usize,
    /// Ask the server to stop afterwards.
    #[arg(long)]
    pub stop: bool,
    /// Seconds to wait for the server's name to appear.
    #[arg(long, default_value_t = 5.0)]
    pub wait: f64,
    /// Messages to send.
    #[arg(default_values_t = vec!["hello".to_string(), "world".to_string()])]
    pub messages: Vec<String>,
}

fn fail(who: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{who}: {e}");
    ExitCode::FAILURE
}

/// Runs the echo server (creating the system if it does not exist).
pub fn echo_server(args: &EchoServerArgs) -> ExitCode {
    let sys = match args.system.builder().open() {
        Ok(s) => s,
        Err(e) => return fail("echo-server", e),
    };
    let ready = || {
        println!(
            "echo-server: pid {} serves /dev/name/local/{} on system {}",
            sys.pid().0,
            args.name,
            sys.name()
        )
    };
    match echo::serve(&sys, &args.name, ready) {
        Ok(st) => {
            println!(
                "echo-server: stopping after {} messages; {} client(s) came and went",
                st.echoed, st.disconnects
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("echo-server", e),
    }
}

/// Runs the echo client against an existing system.
pub fn echo_client(args: &EchoClientArgs) -> ExitCode {
    let sys: System = match args.system.builder().attach() {
        Ok(s) => s,
        Err(e) => return fail("echo-client", format!("{e} (start echo-server first)")),
    };
    let mut msgs: Vec<Vec<u8>> = args
        .messages
        .iter()
        .map(|m| m.as_bytes().to_vec())
        .collect();
    let named = msgs.len();
    // Each bulk message starts with a message type above `_IO_MAX`, as QNX servers' own types
    // do, so the server never mistakes a counter for an `_IO_*` message.
    msgs.extend((0..args.count).map(|i| {
        let mut m = echo::ECHO_MSG_TYPE.to_le_bytes().to_vec();
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&(i as u32).to_le_bytes());
        m
    }));
    match echo::client(
        &sys,
        &args.name,
        &msgs,
        args.stop,
        Duration::from_secs_f64(args.wait.max(0.0)),
    ) {
        Ok(done) => {
            for e in &done[..named.min(done.len())] {
                println!(
                    "echo-client: sent {:?}, got {:?} back in {:.1} µs",
                    String::from_utf8_lossy(&e.sent),
                    String::from_utf8_lossy(&e.reply),
                    e.rtt.as_secs_f64() * 1e6
                );
            }
            let bulk = &done[named.min(done.len())..];
            if !bulk.is_empty() {
                let wrong = bulk.iter().filter(|e| e.reply != e.sent).count();
                let mut rtts: Vec<f64> = bulk.iter().map(|e| e.rtt.as_secs_f64() * 1e6).collect();
                rtts.sort_by(f64::total_cmp);
                println!(
                    "echo-client: {} more 8-byte messages, {} wrong replies, median round trip {:.1} µs (this is one unpinned run; see `cargo bench -p benches` for the method)",
                    bulk.len(),
                    wrong,
                    rtts[rtts.len() / 2]
                );
                if wrong > 0 {
                    return ExitCode::FAILURE;
                }
            }
            if args.stop {
                println!("echo-client: asked the server to stop");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail("echo-client", e),
    }
}
