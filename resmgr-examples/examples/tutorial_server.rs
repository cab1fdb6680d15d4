//! The greeter: the resource manager that `docs/tutorial.md` builds, step by step.
//!
//! It attaches `/dev/greeter`. A client opens it, writes a name (the per-open state, kept in
//! the OCB), and each `read` returns one greeting line naming that visitor, how many times
//! this open was greeted, and the pid of the server that answered:
//!
//! ```text
//! Hello, Ada! (greeting 2 from server pid 4242)
//! ```
//!
//! The pid makes a restart visible to the client; the per-open count shows what a restarted
//! server has forgotten. With `--journal FILE` every greeting is recorded before its reply.
//!
//! Run it with `cargo run --release -p resmgr-examples --example tutorial_server`.
#![forbid(unsafe_code)]

use clap::Parser;
use kernel_sim::{Errno, SystemBuilder};
use resmgr_examples::journal::Journal;
use resmgr_examples::resmgr::{Ctx, Dispatch, Ocb, OpenRequest, ResourceManager};
use std::path::PathBuf;
use std::process::ExitCode;

/// The greeter's path.
const GREETER_PATH: &str = "/dev/greeter";

/// The longest name a visitor may give.
const NAME_MAX: usize = 64;

/// The greeter: serves /dev/greeter until it is killed.
#[derive(Parser, Debug)]
#[command(name = "tutorial_server")]
struct Args {
    /// System (arena) name; default: $QSIM_SYSTEM, else qsim-<uid>.
    #[arg(long)]
    system: Option<String>,
    /// Record every greeting in this file, before replying.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Exit when stdin reaches end of file (so a test that dies takes the server with it).
    #[arg(long)]
    exit_on_eof: bool,
}

/// The server's state shared by every open: only its own pid, for the greetings.
struct Greeter {
    pid: i32,
}

/// What the greeter keeps per open (the OCB's `ext`).
struct Visitor {
    name: String,
    greetings: u64,
}

impl ResourceManager for Greeter {
    type Ocb = Visitor;

    /// `_IO_CONNECT`: only the mountpoint itself exists; every open starts as "world".
    fn open(&self, _ctx: &Ctx<'_>, req: &OpenRequest<'_>) -> Result<Visitor, Errno> {
        if !req.path.is_empty() {
            return Err(Errno::NOENT);
        }
        Ok(Visitor {
            name: "world".to_owned(),
            greetings: 0,
        })
    }

    /// `_IO_WRITE`: the data is the visitor's name. A name that is not one printable word
    /// of at most 64 bytes is refused with `EINVAL` (what a client sends is an allegation).
    fn write(&self, _ctx: &Ctx<'_>, ocb: &mut Ocb<Visitor>, data: &[u8]) -> Result<usize, Errno> {
        let name = std::str::from_utf8(data).map_err(|_| Errno::INVAL)?.trim();
        if name.is_empty()
            || name.len() > NAME_MAX
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Errno::INVAL);
        }
        ocb.ext.name = name.to_owned();
        Ok(data.len())
    }

    /// `_IO_READ`: one greeting per read, whatever the offset: a device, like /dev/zero,
    /// that never reaches its end. The line is cut to what the client asked for.
    fn read(
        &self,
        ctx: &Ctx<'_>,
        ocb: &mut Ocb<Visitor>,
        nbytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let n = ocb.ext.greetings + 1;
        // Recorded before the count moves and before the reply: the journal never claims a
        // greeting the server did not give, and never misses one it gave.
        ctx.record(
            "greet",
            &[("pid", &ctx.client().0), ("name", &ocb.ext.name), ("n", &n)],
        )?;
        ocb.ext.greetings = n;
        let line = format!(
            "Hello, {}! (greeting {n} from server pid {})\n",
            ocb.ext.name, self.pid
        );
        out.extend_from_slice(&line.as_bytes()[..line.len().min(nbytes)]);
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let builder = match &args.system {
        Some(name) => SystemBuilder::new().name(name),
        None => SystemBuilder::new(),
    };
    let sys = match builder.open() {
        Ok(sys) => sys,
        Err(e) => {
            eprintln!("tutorial-server: cannot open the system: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.exit_on_eof {
        std::thread::spawn(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
            std::process::exit(0);
        });
    }
    let mut d = match Dispatch::new(&sys, Greeter { pid: sys.pid().0 }) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tutorial-server: cannot create the channel: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.journal {
        match Journal::open(path) {
            Ok(j) => d = d.journal(j),
            Err(e) => {
                eprintln!("tutorial-server: journal {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = d.attach(GREETER_PATH, 0) {
        eprintln!("tutorial-server: cannot attach {GREETER_PATH}: {e}");
        return ExitCode::FAILURE;
    }
    // Scripts and tests wait for this line: from here on, opens reach this server.
    println!(
        "tutorial-server: pid {} serves {GREETER_PATH} on system {}",
        sys.pid().0,
        sys.name()
    );
    match d.run(1) {
        Ok(st) => {
            println!(
                "tutorial-server: stopping after {} requests, {} opens",
                st.requests, st.opens
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tutorial-server: receive failed: {e}");
            ExitCode::FAILURE
        }
    }
}
