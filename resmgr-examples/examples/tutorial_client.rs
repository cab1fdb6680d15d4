//! The greeter's client, from `docs/tutorial.md`: opens `/dev/greeter`, writes a name, and
//! reads greetings.
//!
//! Plain, it uses the POSIX-like calls of kernel-sim (`open_wait`, `write`, `read`): kill the
//! server between two reads and the next read fails with `EBADF`. With `--ha` it opens the
//! greeter through ha-lib with a recovery function: the same loop of plain `read`s then
//! carries on across the server's death, on a restarted server.
//!
//! Run it with `cargo run --release -p resmgr-examples --example tutorial_client -- --ha`.
#![forbid(unsafe_code)]

use clap::Parser;
use ha_lib::Ha;
use kernel_sim::sync::atomic::{AtomicU32, Ordering};
use kernel_sim::{Coid, Errno, System, SystemBuilder};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The greeter's path.
const GREETER_PATH: &str = "/dev/greeter";

/// Reads greetings from /dev/greeter.
#[derive(Parser, Debug)]
#[command(name = "tutorial_client")]
struct Args {
    /// System (arena) name; default: $QSIM_SYSTEM, else qsim-<uid>.
    #[arg(long)]
    system: Option<String>,
    /// The name to be greeted by (one word).
    #[arg(long, default_value = "world")]
    name: String,
    /// Greetings to read.
    #[arg(long, default_value_t = 3)]
    count: u32,
    /// Open through ha-lib with a recovery function, so reads carry on across a restart of
    /// the server.
    #[arg(long)]
    ha: bool,
    /// After each greeting but the last, wait for a line on stdin (Enter) before the next
    /// read: time to kill the server by hand. End of file on stdin ends the run.
    #[arg(long)]
    step: bool,
    /// Seconds to wait for the greeter to appear at the start.
    #[arg(long, default_value_t = 5.0)]
    wait: f64,
    /// With --ha: seconds a recovery waits for a restarted greeter.
    #[arg(long, default_value_t = 10.0)]
    budget: f64,
}

/// What the recovery function needs (QNX's `rhdl`): where to reconnect, and the state to
/// rebuild on the new server.
struct Session {
    path: String,
    name: String,
    recoveries: AtomicU32,
}

/// The recovery function. The old server is dead, and the new one knows nothing of this
/// client: reopen the path on the old fd number, tell the new server the name again, and
/// hand the fd back so that ha-lib sends the failed request again.
fn recover(ha: &Ha, fd: Coid, s: &Arc<Session>) -> Result<Coid, Errno> {
    // Waits (up to the wait budget) for a server to attach the path again.
    let fd = ha.reopen(fd, &s.path, libc::O_RDWR)?;
    // A send from inside a recovery function goes straight to the kernel: no nested recovery.
    ha.sys().write(fd, s.name.as_bytes())?;
    let n = s.recoveries.fetch_add(1, Ordering::Relaxed) + 1;
    println!(
        "tutorial-client: the greeter was gone; reopened {} on coid {} and gave my name again (recovery {n})",
        s.path, fd.0
    );
    Ok(fd)
}

/// Opens the greeter (HA-aware or not) and gives it the name.
fn open(sys: &System, args: &Args, session: &Arc<Session>) -> Result<Coid, String> {
    let wait = Some(Duration::from_secs_f64(args.wait.max(0.0)));
    let fd = if args.ha {
        let ha = Ha::install(sys).map_err(|e| format!("cannot install ha-lib: {e}"))?;
        ha.set_wait_budget(Duration::from_secs_f64(args.budget.max(0.0)));
        sys.path_wait(GREETER_PATH, wait)
            .map_err(|e| format!("{GREETER_PATH}: {e} (is tutorial_server running?)"))?;
        ha.open(GREETER_PATH, libc::O_RDWR, recover, session.clone(), 0)
    } else {
        sys.open_wait(GREETER_PATH, libc::O_RDWR, wait)
    }
    .map_err(|e| format!("open {GREETER_PATH}: {e}"))?;
    sys.write(fd, args.name.as_bytes())
        .map_err(|e| format!("write the name: {e}"))?;
    Ok(fd)
}

fn run(args: &Args) -> Result<(), String> {
    let builder = match &args.system {
        Some(name) => SystemBuilder::new().name(name),
        None => SystemBuilder::new(),
    };
    let sys = builder
        .attach()
        .map_err(|e| format!("cannot attach the system: {e} (start tutorial_server first)"))?;
    let session = Arc::new(Session {
        path: GREETER_PATH.to_owned(),
        name: args.name.clone(),
        recoveries: AtomicU32::new(0),
    });
    let fd = open(&sys, args, &session)?;
    println!(
        "tutorial-client: opened {GREETER_PATH} as coid {}{}",
        fd.0,
        if args.ha { " (HA-aware)" } else { "" }
    );
    let mut buf = [0u8; 256];
    let mut read = 0;
    while read < args.count {
        if read > 0 && args.step {
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(n) if n > 0 => {}
                _ => {
                    println!("tutorial-client: stdin closed; stopping");
                    break;
                }
            }
        }
        // A plain read. With --ha, a dead server is repaired inside it.
        let n = sys
            .read(fd, &mut buf)
            .map_err(|e| format!("read {}: {e}", read + 1))?;
        read += 1;
        print!("tutorial-client: {}", String::from_utf8_lossy(&buf[..n]));
        if !buf[..n].ends_with(b"\n") {
            println!();
        }
    }
    // ha-lib's close detaches the recovery first, so a dead server is not recovered just to
    // be closed; a plain close otherwise.
    let closed = if args.ha {
        Ha::install(&sys).and_then(|ha| ha.close(fd))
    } else {
        sys.close(fd)
    };
    if let Err(e) = closed {
        println!("tutorial-client: close: {e}");
    }
    println!(
        "tutorial-client: done: {read} greetings, {} recoveries",
        session.recoveries.load(Ordering::Relaxed)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tutorial-client: {e}");
            ExitCode::FAILURE
        }
    }
}
