//! The command-line front ends of the examples, shared by the standalone binaries
//! (`echo-server`, `echo-client`) and `qsim run <example>`.

use crate::echo;
use crate::examples::{counter, devices, files, ha_reader};
use crate::journal::Journal;
use crate::resmgr::Stats;
use clap::Args;
use kernel_sim::{Errno, System, SystemBuilder};
use std::path::PathBuf;
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
    /// Record every echoed message in this file, before replying.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Echo this many messages, then receive the next one and never reply (a server that hangs
    /// before it dies: its client stays blocked until the server is killed).
    #[arg(long)]
    pub hold_after: Option<u64>,
    /// Exit when stdin reaches end of file (so a supervisor or test that dies takes the server
    /// with it).
    #[arg(long)]
    pub exit_on_eof: bool,
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

/// Set when the process exits because its stdin closed: the errors its threads meet while
/// the system goes away under them are not news.
static EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn fail(who: &str, e: impl std::fmt::Display) -> ExitCode {
    if !EXITING.load(std::sync::atomic::Ordering::Acquire) {
        eprintln!("{who}: {e}");
    }
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
    let journal = match open_journal(&args.journal) {
        Ok(j) => j,
        Err(e) => return fail("echo-server", e),
    };
    if args.exit_on_eof {
        exit_on_stdin_eof("echo-server");
    }
    match echo::serve(&sys, &args.name, journal.as_ref(), args.hold_after, ready) {
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

// ----- the resource-manager examples --------------------------------------------------------

/// The value of a `Result<T, ExitCode>`, or a return with the exit code.
macro_rules! or_exit {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}

fn open_system(who: &str, sys: &SystemArg) -> Result<System, ExitCode> {
    sys.builder().open().map_err(|e| fail(who, e))
}

fn open_journal(path: &Option<PathBuf>) -> Result<Option<Journal>, String> {
    path.as_ref()
        .map(|p| Journal::open(p).map_err(|e| format!("journal {}: {e}", p.display())))
        .transpose()
}

/// Arguments every example server takes.
#[derive(Args, Debug, Clone)]
pub struct ServerCommon {
    #[command(flatten)]
    pub system: SystemArg,
    /// Record every request handled in this file, before replying (see the journal docs).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Receiving threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Exit when stdin reaches end of file (so a supervisor or test that dies takes the server
    /// with it).
    #[arg(long)]
    pub exit_on_eof: bool,
}

impl ServerCommon {
    fn watch_stdin(&self, who: &'static str) {
        if self.exit_on_eof {
            exit_on_stdin_eof(who);
        }
    }
}

/// Exits the process when stdin reaches end of file (read on a thread of its own).
fn exit_on_stdin_eof(who: &'static str) {
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
        EXITING.store(true, std::sync::atomic::Ordering::Release);
        eprintln!("{who}: stdin closed, exiting");
        std::process::exit(0);
    });
}

/// Arguments every example client takes.
#[derive(Args, Debug, Clone)]
pub struct ClientCommon {
    #[command(flatten)]
    pub system: SystemArg,
    /// Seconds to wait for the server's path to appear.
    #[arg(long, default_value_t = 5.0)]
    pub wait: f64,
}

impl ClientCommon {
    fn wait(&self) -> Option<Duration> {
        Some(Duration::from_secs_f64(self.wait.max(0.0)))
    }
}

/// `/dev/null` and `/dev/zero` server.
#[derive(Args, Debug, Clone)]
pub struct DevicesServerArgs {
    #[command(flatten)]
    pub common: ServerCommon,
}

/// Reads from `/dev/zero`, writes to and reads from `/dev/null`.
#[derive(Args, Debug, Clone)]
pub struct DevicesClientArgs {
    #[command(flatten)]
    pub common: ClientCommon,
    /// Bytes to read from /dev/zero.
    #[arg(long, default_value_t = 4096)]
    pub bytes: usize,
}

/// Counter server (`/dev/counter`).
#[derive(Args, Debug, Clone)]
pub struct CounterServerArgs {
    #[command(flatten)]
    pub common: ServerCommon,
}

/// Counter client: runs each COMMAND in order and prints its result.
#[derive(Args, Debug, Clone)]
pub struct CounterClientArgs {
    #[command(flatten)]
    pub common: ClientCommon,
    /// The first request id to send with `add`s (each add uses the next).
    #[arg(long, default_value_t = 1)]
    pub first_id: u64,
    /// Commands: `get`, `add:N`, `reset`, `cat` (read the value as text), `bogus` (an unknown
    /// devctl, to see ENOTTY).
    #[arg(default_values_t = vec!["get".to_string()])]
    pub commands: Vec<String>,
}

/// File server: serves a host directory under a mountpoint.
#[derive(Args, Debug, Clone)]
pub struct FileServerArgs {
    #[command(flatten)]
    pub common: ServerCommon,
    /// The host directory whose files are served.
    #[arg(long)]
    pub root: PathBuf,
    /// The mountpoint in the system's path space.
    #[arg(long, default_value = files::FILES_PATH)]
    pub mount: String,
}

/// File client: opens PATH, optionally seeks, and reads it in chunks, printing each.
#[derive(Args, Debug, Clone)]
pub struct FileClientArgs {
    #[command(flatten)]
    pub common: ClientCommon,
    /// Bytes per read.
    #[arg(long, default_value_t = 16)]
    pub chunk: usize,
    /// Seek to this offset first.
    #[arg(long)]
    pub seek: Option<u64>,
    /// Stop after this many reads (default: read to the end).
    #[arg(long)]
    pub reads: Option<usize>,
    /// Then keep the file open until stdin closes (to see what a client's death does).
    #[arg(long)]
    pub hold: bool,
    /// The file, such as /files/hello.txt.
    pub path: String,
}

fn serve_report(who: &str, res: Result<Stats, Errno>) -> ExitCode {
    match res {
        Ok(st) => {
            println!(
                "{who}: stopping: {} requests ({} errors), {} opens, {} closes, {} closed for clients that went away",
                st.requests, st.errors, st.opens, st.closes, st.client_gone
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(who, e),
    }
}

/// Runs the devices server.
pub fn devices_server(args: &DevicesServerArgs) -> ExitCode {
    let who = "devices-server";
    let sys = or_exit!(open_system(who, &args.common.system));
    args.common.watch_stdin(who);
    let journal = match open_journal(&args.common.journal) {
        Ok(j) => j,
        Err(e) => return fail(who, e),
    };
    let res = devices::serve(&sys, journal, args.common.threads, |_| {
        println!(
            "{who}: pid {} serves {} and {} on system {}",
            sys.pid().0,
            devices::NULL_PATH,
            devices::ZERO_PATH,
            sys.name()
        )
    });
    serve_report(who, res)
}

/// Runs the devices client.
pub fn devices_client(args: &DevicesClientArgs) -> ExitCode {
    let who = "devices-client";
    let sys = or_exit!(open_system(who, &args.common.system));
    if let Err(e) = sys.path_wait(devices::ZERO_PATH, args.common.wait()) {
        return fail(who, format!("{}: {e}", devices::ZERO_PATH));
    }
    match devices::client(&sys, args.bytes) {
        Ok(r) => {
            println!(
                "{who}: read {} bytes from {} (all zero: {})",
                r.zero_read.0,
                devices::ZERO_PATH,
                r.zero_read.1
            );
            println!(
                "{who}: wrote {} bytes to {}, read back {} bytes",
                r.null_written,
                devices::NULL_PATH,
                r.null_read
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(who, e),
    }
}

/// Runs the counter server.
pub fn counter_server(args: &CounterServerArgs) -> ExitCode {
    let who = "counter-server";
    let sys = or_exit!(open_system(who, &args.common.system));
    args.common.watch_stdin(who);
    let res = counter::serve(
        &sys,
        args.common.journal.as_deref(),
        args.common.threads,
        |d| {
            println!(
                "{who}: pid {} serves {} on system {}, value {}",
                sys.pid().0,
                counter::COUNTER_PATH,
                sys.name(),
                d.resource().value()
            )
        },
    );
    serve_report(who, res)
}

/// Runs the counter client.
pub fn counter_client(args: &CounterClientArgs) -> ExitCode {
    let who = "counter-client";
    let sys = or_exit!(open_system(who, &args.common.system));
    let fd = match sys.open_wait(counter::COUNTER_PATH, libc::O_RDWR, args.common.wait()) {
        Ok(fd) => fd,
        Err(e) => return fail(who, format!("{}: {e}", counter::COUNTER_PATH)),
    };
    let mut id = args.first_id;
    for cmd in &args.commands {
        let res = match cmd.split_once(':') {
            None if cmd == "get" => counter::get(&sys, fd).map(|v| format!("get {v}")),
            None if cmd == "reset" => counter::reset(&sys, fd).map(|()| "reset".to_string()),
            None if cmd == "cat" => {
                let mut b = [0u8; 32];
                sys.lseek(fd, std::io::SeekFrom::Start(0))
                    .and_then(|_| sys.read(fd, &mut b))
                    .map(|n| format!("cat {}", String::from_utf8_lossy(&b[..n]).trim_end()))
            }
            None if cmd == "bogus" => sys
                .devctl(fd, kernel_sim::iomsg::dcmd::dion(0x05, 0x77), &mut [])
                .map(|r| format!("bogus {r}")),
            Some(("add", n)) => match n.parse::<u64>() {
                Ok(n) => {
                    id += 1;
                    counter::add(&sys, fd, n, id - 1)
                        .map(|v| format!("add {n} id {} -> {v}", id - 1))
                }
                Err(_) => return fail(who, format!("bad amount in {cmd:?}")),
            },
            _ => return fail(who, format!("unknown command {cmd:?}")),
        };
        match res {
            Ok(line) => println!("{who}: {line}"),
            Err(e) => println!("{who}: {cmd} failed: {e}"),
        }
    }
    let _ = sys.close(fd);
    ExitCode::SUCCESS
}

/// Runs the file server.
pub fn file_server(args: &FileServerArgs) -> ExitCode {
    let who = "file-server";
    let sys = or_exit!(open_system(who, &args.common.system));
    args.common.watch_stdin(who);
    let res = files::serve(
        &sys,
        &args.root,
        &args.mount,
        args.common.journal.as_deref(),
        args.common.threads,
        |_| {
            println!(
                "{who}: pid {} serves {} at {} on system {}",
                sys.pid().0,
                args.root.display(),
                args.mount,
                sys.name()
            )
        },
    );
    serve_report(who, res)
}

/// Runs the file client.
pub fn file_client(args: &FileClientArgs) -> ExitCode {
    let who = "file-client";
    let sys = or_exit!(open_system(who, &args.common.system));
    let fd = match sys.open_wait(&args.path, libc::O_RDONLY, args.common.wait()) {
        Ok(fd) => fd,
        Err(e) => return fail(who, format!("{}: {e}", args.path)),
    };
    println!("{who}: opened {} as coid {}", args.path, fd.0);
    if let Some(off) = args.seek {
        match sys.lseek(fd, std::io::SeekFrom::Start(off)) {
            Ok(at) => println!("{who}: seek to {at}"),
            Err(e) => return fail(who, format!("lseek: {e}")),
        }
    }
    let mut buf = vec![0u8; args.chunk.max(1)];
    let mut reads = 0;
    let mut total = 0;
    while args.reads.is_none_or(|r| reads < r) {
        match sys.read(fd, &mut buf) {
            Ok(0) => {
                println!("{who}: end of file after {total} bytes");
                break;
            }
            Ok(n) => {
                reads += 1;
                total += n;
                println!(
                    "{who}: read {n}: {}",
                    String::from_utf8_lossy(&buf[..n]).escape_debug()
                );
            }
            Err(e) => return fail(who, format!("read: {e}")),
        }
    }
    if args.hold {
        println!("{who}: holding the file open");
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    }
    match sys.close(fd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(who, format!("close: {e}")),
    }
}

/// HA reader: reads a file from the file server with plain `read` calls, recovering (reopen
/// and seek back) if the server is killed and restarted meanwhile.
#[derive(Args, Debug, Clone)]
pub struct HaReaderArgs {
    #[command(flatten)]
    pub common: ClientCommon,
    /// Bytes per read.
    #[arg(long, default_value_t = 16)]
    pub chunk: usize,
    /// After each read, wait for a line on stdin before the next (to kill the server between
    /// reads by hand).
    #[arg(long)]
    pub step: bool,
    /// How long recovery waits for the restarted server, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub budget: f64,
    /// The file, such as /files/hello.txt.
    pub path: String,
}

/// Runs the HA reader.
pub fn ha_reader(args: &HaReaderArgs) -> ExitCode {
    let who = "ha-reader";
    let sys = or_exit!(open_system(who, &args.common.system));
    if let Err(e) = sys.path_wait(&args.path, args.common.wait()) {
        return fail(who, format!("{}: {e}", args.path));
    }
    match ha_lib::Ha::install(&sys) {
        Ok(ha) => ha.set_wait_budget(Duration::from_secs_f64(args.budget.max(0.0))),
        Err(e) => return fail(who, e),
    }
    let res = ha_reader::read_all(&sys, &args.path, args.chunk, |at, data| {
        println!(
            "{who}: read {} at {at}: {}",
            data.len(),
            String::from_utf8_lossy(data).escape_debug()
        );
        if args.step {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
    });
    match res {
        Ok((all, st)) => {
            println!(
                "{who}: done: {} bytes, {} recoveries",
                all.len(),
                st.recoveries
                    .load(kernel_sim::sync::atomic::Ordering::Relaxed)
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(who, e),
    }
}

// ----- the HA manager -----------------------------------------------------------------------

/// The HA manager: supervises the entities of its configuration file.
#[derive(Args, Debug, Clone)]
pub struct HamArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The name it attaches (/dev/name/local/<NAME>).
    #[arg(long, default_value = "ham")]
    pub name: String,
    /// The configuration file (TOML; see docs/ham.md). Without one it supervises only the
    /// entities that attach themselves.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Record every event and action in this file.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Keep the state a guardian takes over from in this file.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Keep a guardian: a standby that takes over if this manager is killed (needs --state).
    #[arg(long)]
    pub guardian: bool,
    /// Run as the guardian of the manager called NAME (what --guardian starts).
    #[arg(long, hide = true)]
    pub standby: bool,
    /// Let the entities it starts print to this terminal.
    #[arg(long)]
    pub entity_output: bool,
    /// Stop, killing the entities, when stdin reaches end of file (for programs that run the
    /// manager: it goes down with them even if they are killed).
    #[arg(long)]
    pub stop_on_eof: bool,
    /// Tether the entities it starts: each gets a pipe as stdin that closes when the manager
    /// goes (entities run with --exit-on-eof then go too). Not with --guardian.
    #[arg(long)]
    pub tether: bool,
}

/// Runs the HA manager (or, with --standby, its guardian).
pub fn ham(args: &HamArgs) -> ExitCode {
    let who = "ham";
    let sys = or_exit!(open_system(who, &args.system));
    if args.standby {
        let Some(state) = &args.state else {
            return fail(who, "--standby needs --state");
        };
        return match crate::ham::run_standby(
            &sys,
            &args.name,
            state,
            args.journal.clone(),
            args.entity_output,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("ham guardian", e),
        };
    }
    let config = match &args.config {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => match crate::ham::Config::parse(&text) {
                Ok(c) => c,
                Err(e) => return fail(who, format!("{}: {e}", p.display())),
            },
            Err(e) => return fail(who, format!("{}: {e}", p.display())),
        },
        None => crate::ham::Config::parse("").unwrap_or_default(),
    };
    let opts = crate::ham::Options {
        name: args.name.clone(),
        config,
        journal: args.journal.clone(),
        state: args.state.clone(),
        guardian: args.guardian,
        entity_output: args.entity_output,
        stop_on_eof: args.stop_on_eof,
        tether: args.tether,
    };
    let res = crate::ham::run(&sys, opts, || {
        println!(
            "ham: pid {} serves /dev/name/local/{} on system {}",
            sys.pid().0,
            args.name,
            sys.name()
        )
    });
    match res {
        Ok(()) => {
            println!("ham: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(who, e),
    }
}

/// What to ask the HA manager.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HamRequest {
    /// Print its entity table.
    Status,
    /// Stop it (and its guardian).
    Stop,
}

/// Asks the HA manager for its entity table, or to stop.
#[derive(Args, Debug, Clone)]
pub struct HamCtlArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The manager's name.
    #[arg(long, default_value = "ham")]
    pub name: String,
    /// With `stop`: kill the entities it supervises too.
    #[arg(long)]
    pub kill_entities: bool,
    /// What to ask.
    #[arg(value_enum)]
    pub request: HamRequest,
}

/// Runs `qsim ham-ctl`.
pub fn ham_ctl(args: &HamCtlArgs) -> ExitCode {
    let who = "ham-ctl";
    let sys = match args.system.builder().attach() {
        Ok(s) => s,
        Err(e) => return fail(who, e),
    };
    match args.request {
        HamRequest::Status => match crate::ham::client::status(&sys, &args.name) {
            Ok(rows) => {
                println!(
                    "{:<20} {:<9} {:>8} {:<6} {:>8}  gave up",
                    "entity", "kind", "pid", "alive", "restarts"
                );
                for r in rows {
                    println!(
                        "{:<20} {:<9} {:>8} {:<6} {:>8}  {}",
                        r.name, r.kind, r.pid, r.alive, r.restarts, r.gave_up
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(who, e),
        },
        HamRequest::Stop => match crate::ham::client::stop(&sys, &args.name, args.kill_entities) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(who, e),
        },
    }
}

/// A self-attached entity with a heartbeat (for trying the HA manager's heartbeat conditions).
#[derive(Args, Debug, Clone)]
pub struct HeartbeatArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The manager's name.
    #[arg(long, default_value = "ham")]
    pub ham: String,
    /// The entity's name.
    #[arg(long)]
    pub name: String,
    /// Heartbeat period in milliseconds.
    #[arg(long, default_value_t = 50)]
    pub period_ms: u64,
    /// Missed beats that raise heartbeat-low.
    #[arg(long, default_value_t = 2)]
    pub low: u32,
    /// Missed beats that raise heartbeat-high.
    #[arg(long, default_value_t = 4)]
    pub high: u32,
    /// Beat this many times, then stop beating (and stay until stdin closes).
    #[arg(long)]
    pub beats: Option<u64>,
    /// Detach (a clean exit) after the beats instead of staying.
    #[arg(long)]
    pub detach: bool,
}

/// Runs the heartbeat entity.
pub fn heartbeat(args: &HeartbeatArgs) -> ExitCode {
    let who = "heartbeat";
    let sys = or_exit!(open_system(who, &args.system));
    let period = Duration::from_millis(args.period_ms);
    let me = match crate::ham::client::attach_self(
        &sys,
        &args.ham,
        &args.name,
        Some(period),
        args.low,
        args.high,
    ) {
        Ok(h) => h,
        Err(e) => return fail(who, e),
    };
    println!("heartbeat: pid {} attached as {}", sys.pid().0, args.name);
    let mut n = 0u64;
    while args.beats.is_none_or(|b| n < b) {
        if let Err(e) = me.heartbeat() {
            return fail(who, format!("heartbeat: {e}"));
        }
        n += 1;
        std::thread::sleep(period);
    }
    println!("heartbeat: stopped beating after {n} beats");
    if args.detach {
        return match me.detach() {
            Ok(()) => {
                println!("heartbeat: detached");
                ExitCode::SUCCESS
            }
            Err(e) => fail(who, e),
        };
    }
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|k| k > 0) {
        line.clear();
    }
    ExitCode::SUCCESS
}

/// HA echo client: numbered requests through an HA connection; recovers when the server is
/// killed and restarted.
#[derive(Args, Debug, Clone)]
pub struct HaClientArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The echo server's name.
    #[arg(long, default_value = "echo")]
    pub name: String,
    /// A label for this client's lines.
    #[arg(long, default_value = "A")]
    pub label: String,
    /// The first request id.
    #[arg(long, default_value_t = 1)]
    pub base: u32,
    /// Requests to send.
    #[arg(long, default_value_t = 1000)]
    pub count: u32,
    /// Microseconds to pause between requests.
    #[arg(long, default_value_t = 0)]
    pub pace_us: u64,
    /// Seconds recovery waits for the server to come back.
    #[arg(long, default_value_t = 10.0)]
    pub budget: f64,
    /// Record each request sent, answered or failed in this file.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Stop sending when stdin reaches end of file (then print the totals).
    #[arg(long)]
    pub until_eof: bool,
    /// Recoveries allowed within one send (0: unlimited, bounded by --budget).
    #[arg(long, default_value_t = ha_lib::DEFAULT_RECOVERIES_PER_SEND)]
    pub recoveries_per_send: u32,
}

/// Runs the HA echo client.
pub fn ha_client(args: &HaClientArgs) -> ExitCode {
    use crate::examples::ha_echo::{self, Event};
    let who = format!("ha-client {}", args.label);
    let sys = match args.system.builder().attach() {
        Ok(s) => s,
        Err(e) => return fail(&who, e),
    };
    let label = who.clone();
    let on = move |e: Event| match e {
        Event::ServerGone { id, received } => println!(
            "{label}: request {id}: the server died{}; recovering",
            if received {
                " holding it (ESRCH)"
            } else {
                " (EBADF)"
            }
        ),
        Event::Reconnected { pid, took } => println!(
            "{label}: reconnected to the new server, pid {pid}, {:.1} ms after the failure",
            took.as_secs_f64() * 1e3
        ),
        Event::Retransmitted { id } => {
            println!("{label}: request {id} sent again and answered")
        }
        Event::Progress { n } => println!("{label}: {n} requests answered"),
    };
    let journal = match open_journal(&args.journal) {
        Ok(j) => j,
        Err(e) => return fail(&who, e),
    };
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let stop = &STOP;
    if args.until_eof {
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
            stop.store(true, std::sync::atomic::Ordering::Release);
        });
    }
    let plan = ha_echo::Plan {
        name: &args.name,
        base: args.base,
        count: args.count,
        pace: Duration::from_micros(args.pace_us),
        budget: Duration::from_secs_f64(args.budget.max(0.0)),
        journal: journal.as_ref(),
        stop: Some(stop),
        recoveries_per_send: (args.recoveries_per_send != 0).then_some(args.recoveries_per_send),
    };
    let res = ha_echo::run(&sys, &plan, on);
    match res {
        Ok(t) => {
            println!(
                "{who}: done: sent {} answered {} recovered {} recoveries {}",
                t.sent, t.answered, t.recovered, t.recoveries
            );
            ExitCode::SUCCESS
        }
        Err((e, t)) => {
            println!(
                "{who}: failed: sent {} answered {} recovered {} recoveries {}; request {} failed: {e}",
                t.sent,
                t.answered,
                t.recovered,
                t.recoveries,
                t.failed.unwrap_or(0)
            );
            ExitCode::FAILURE
        }
    }
}

// ----- qsim send ------------------------------------------------------------------------------

/// Pokes a server from a shell: sends each MESSAGE to a name or a path and prints the replies.
#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The server's name under /dev/name/local/ (name_open).
    #[arg(long, conflicts_with = "path")]
    pub name: Option<String>,
    /// A path in the system's path space (open, then write each message and read a reply).
    #[arg(long)]
    pub path: Option<String>,
    /// Put this message type (such as 0x200) before each message, as servers' own types are.
    #[arg(long, value_parser = parse_u16)]
    pub msg_type: Option<u16>,
    /// Send a pulse with this code (0..=126) and value instead of messages: CODE[:VALUE].
    #[arg(long)]
    pub pulse: Option<String>,
    /// Bytes of reply buffer.
    #[arg(long, default_value_t = 4096)]
    pub reply_size: usize,
    /// Messages to send (as text).
    pub messages: Vec<String>,
}

fn parse_u16(s: &str) -> Result<u16, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?}: {e}"))
}

fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(t) if !t.chars().any(|c| c.is_control() && c != '\n') => format!("{t:?}"),
        _ => bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Runs `qsim send`.
pub fn send(args: &SendArgs) -> ExitCode {
    let who = "qsim send";
    let sys = match args.system.builder().attach() {
        Ok(s) => s,
        Err(e) => return fail(who, e),
    };
    let (coid, is_path) = match (&args.name, &args.path) {
        (Some(n), None) => match sys.name_open(n) {
            Ok(c) => (c, false),
            Err(e) => return fail(who, format!("name_open {n}: {e}")),
        },
        (None, Some(p)) => match sys.open(p, libc::O_RDWR) {
            Ok(c) => (c, true),
            Err(e) => return fail(who, format!("open {p}: {e}")),
        },
        _ => return fail(who, "give --name or --path"),
    };
    let mut ok = true;
    if let Some(p) = &args.pulse {
        let (code, value) = p.split_once(':').unwrap_or((p, "0"));
        match (code.parse::<i8>(), value.parse::<i32>()) {
            (Ok(c), Ok(v)) if c >= 0 => match sys.msg_send_pulse(coid, -1, c, v) {
                Ok(()) => println!("pulse code {c} value {v} sent"),
                Err(e) => {
                    ok = false;
                    println!("pulse failed: {e}");
                }
            },
            _ => return fail(who, format!("bad pulse {p:?}: CODE[:VALUE], CODE 0..=126")),
        }
    }
    for m in &args.messages {
        let mut msg = Vec::new();
        if let Some(t) = args.msg_type {
            msg.extend_from_slice(&t.to_le_bytes());
            msg.extend_from_slice(&[0, 0]);
        }
        msg.extend_from_slice(m.as_bytes());
        let mut reply = vec![0u8; args.reply_size];
        let r = if is_path {
            sys.write(coid, &msg).and_then(|n| {
                let got = sys.read(coid, &mut reply)?;
                println!("wrote {n} bytes");
                Ok(got as i32)
            })
        } else {
            sys.msg_send(coid, &msg, &mut reply)
        };
        match r {
            Ok(status) => {
                let n = (status.max(0) as usize).min(reply.len());
                println!("{m:?} -> status {status}, reply {}", show(&reply[..n]));
            }
            Err(e) => {
                ok = false;
                println!("{m:?} -> {e}");
            }
        }
    }
    let _ = if is_path {
        sys.close(coid)
    } else {
        sys.name_close(coid)
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A member of a server class: attaches /class/<CLASS> beside the other members.
#[derive(Args, Debug, Clone)]
pub struct ClassMemberArgs {
    #[command(flatten)]
    pub common: ServerCommon,
    /// The class.
    #[arg(long)]
    pub class: String,
    /// Microseconds of CPU work per request.
    #[arg(long, default_value_t = 100)]
    pub work_us: u64,
    /// The transaction store (a directory the class's members share) for TX_ADD requests.
    #[arg(long)]
    pub store: Option<PathBuf>,
}

/// Runs a class member.
pub fn class_member(args: &ClassMemberArgs) -> ExitCode {
    let who = "class-member";
    let sys = or_exit!(open_system(who, &args.common.system));
    args.common.watch_stdin(who);
    let journal = match open_journal(&args.common.journal) {
        Ok(j) => j,
        Err(e) => return fail(who, e),
    };
    let store = match args
        .store
        .as_ref()
        .map(ha_lib::tx::TxStore::open)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return fail(who, format!("store: {e}")),
    };
    let res = crate::examples::class_member::serve(
        &sys,
        &args.class,
        Duration::from_micros(args.work_us),
        journal.as_ref(),
        store.as_ref(),
        || {
            println!(
                "class-member: pid {} serves /class/{} on system {}",
                sys.pid().0,
                args.class,
                sys.name()
            )
        },
    );
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(who, e),
    }
}

/// A process pair: a primary that checkpoints to a backup before each reply; the backup takes
/// over when the primary dies (and starts a new backup).
#[derive(Args, Debug, Clone)]
pub struct PairArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The pair's name (the primary's /dev/name/local/NAME).
    #[arg(long, default_value = "pair")]
    pub name: String,
    /// Run as the backup (what the primary starts).
    #[arg(long)]
    pub backup: bool,
}

/// Runs a process pair's primary (or, with --backup, its backup).
pub fn pair(args: &PairArgs) -> ExitCode {
    let who = "pair";
    let sys = or_exit!(open_system(who, &args.system));
    let say = |line: &str| println!("{line}");
    let res = if args.backup {
        crate::examples::pair::backup(&sys, &args.name, &say)
    } else {
        crate::examples::pair::primary(&sys, &args.name, Default::default(), None, &say)
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(who, e),
    }
}

/// Guaranteed delivery's server: records each message once, in a durable inbox.
#[derive(Args, Debug, Clone)]
pub struct GmdServerArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The name to attach under /dev/name/local/.
    #[arg(long, default_value = "gmd")]
    pub name: String,
    /// The inbox: the receiver's log, with each message (kept across restarts).
    #[arg(long)]
    pub log: PathBuf,
    /// Microseconds of CPU work per new message, before it is recorded.
    #[arg(long, default_value_t = 0)]
    pub work_us: u64,
    /// Fault injection: abort right after recording the N-th new message, before its
    /// acknowledgement.
    #[arg(long)]
    pub crash_after: Option<u64>,
    /// Exit when stdin reaches end of file.
    #[arg(long)]
    pub exit_on_eof: bool,
}

/// Runs the guaranteed-delivery server.
pub fn gmd_server(args: &GmdServerArgs) -> ExitCode {
    let who = "gmd-server";
    let sys = or_exit!(open_system(who, &args.system));
    if args.exit_on_eof {
        exit_on_stdin_eof(who);
    }
    let opts = ha_lib::gmd::ReceiverOptions {
        keep_payloads: true,
        ..Default::default()
    };
    let mut rx = match ha_lib::gmd::GmdReceiver::open(&args.log, opts) {
        Ok(r) => r,
        Err(e) => return fail(who, format!("log {}: {e}", args.log.display())),
    };
    for d in rx.damage() {
        println!("gmd-server: log damaged: {d}; good records kept");
    }
    let res = crate::examples::gmd::serve(
        &sys,
        &args.name,
        &mut rx,
        Duration::from_micros(args.work_us),
        args.crash_after,
        || {
            println!(
                "gmd-server: pid {} serves {} on system {}, inbox {}",
                sys.pid().0,
                args.name,
                sys.name(),
                args.log.display()
            )
        },
    );
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(who, e),
    }
}

/// Guaranteed delivery's client: queues numbered messages without waiting for the server.
#[derive(Args, Debug, Clone)]
pub struct GmdClientArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The server's name.
    #[arg(long, default_value = "gmd")]
    pub name: String,
    /// Queue messages until this sequence number (a restarted client goes on from its area).
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Keep the delivery area in this directory (default: in memory).
    #[arg(long)]
    pub area: Option<PathBuf>,
    /// The sender's name (names the area's file).
    #[arg(long, default_value = "gmd-client")]
    pub sender: String,
    /// Sync the area every N messages instead of before each send returns.
    #[arg(long)]
    pub batch: Option<std::num::NonZeroU32>,
    /// Delivery timeout in milliseconds (0: none).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Milliseconds between attempts to reach an absent server.
    #[arg(long, default_value_t = 20)]
    pub retry_ms: u64,
    /// What to do with a message that fails.
    #[arg(long, value_enum, default_value_t = crate::examples::gmd::OnFailure::Delete)]
    pub on_failure: crate::examples::gmd::OnFailure,
    /// Seconds to wait for everything to be delivered (0: as long as it takes).
    #[arg(long, default_value_t = 0.0)]
    pub wait: f64,
    /// Microseconds between two messages queued (0: as fast as `send` returns).
    #[arg(long, default_value_t = 0)]
    pub pace_us: u64,
    /// Exit when stdin reaches end of file.
    #[arg(long)]
    pub exit_on_eof: bool,
}

/// Runs the guaranteed-delivery client.
pub fn gmd_client(args: &GmdClientArgs) -> ExitCode {
    use ha_lib::gmd::{Durability, GmdConfig};
    let who = "gmd-client";
    let sys = or_exit!(open_system(who, &args.system));
    if args.exit_on_eof {
        exit_on_stdin_eof(who);
    }
    let cfg = match &args.area {
        Some(dir) => GmdConfig::file(
            dir,
            &args.sender,
            args.batch.map_or(Durability::EachRecord, Durability::Batch),
        ),
        None => GmdConfig::new().sender(&args.sender),
    }
    .delivery_timeout((args.timeout_ms > 0).then(|| Duration::from_millis(args.timeout_ms)))
    .retry_interval(Duration::from_millis(args.retry_ms.max(1)));
    let wait = (args.wait > 0.0).then(|| Duration::from_secs_f64(args.wait));
    let pace = Duration::from_micros(args.pace_us);
    match crate::examples::gmd::client(
        &sys,
        &args.name,
        cfg,
        args.on_failure,
        args.count,
        pace,
        wait,
    ) {
        Ok(r) => {
            let c = r.counters;
            println!(
                "gmd-client: {} recovered, {} queued; {} delivered ({} as duplicates), {} failures, {} resent, {} deleted, {} connects; {}",
                r.recovered,
                r.queued,
                c.delivered,
                c.duplicates,
                c.failures,
                c.resent,
                c.deleted,
                c.connects,
                if r.idle { "all done" } else { "some left in the area" }
            );
            if r.idle {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(who, e),
    }
}

/// A client of a class's transaction store: moves an amount between two accounts in one
/// transaction of two steps and a commit.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The class (its members must share a --store).
    #[arg(long)]
    pub class: String,
    /// The transaction id.
    #[arg(long)]
    pub txid: u64,
    /// The account debited.
    #[arg(long)]
    pub from: u32,
    /// The account credited.
    #[arg(long)]
    pub to: u32,
    /// The amount.
    #[arg(long)]
    pub amount: i64,
    /// Stop after the first step and wait for stdin to close (then exit without committing:
    /// the open transaction is aborted when the store sees this process dead).
    #[arg(long)]
    pub hold: bool,
}

/// Runs a transfer.
pub fn transfer(args: &TransferArgs) -> ExitCode {
    let who = "transfer";
    let sys = or_exit!(open_system(who, &args.system));
    let class = match ha_lib::class::ServerClass::open(&sys, &args.class) {
        Ok(c) => c,
        Err(e) => return fail(who, e),
    };
    let res = crate::examples::class_member::transfer(
        &class,
        args.txid,
        args.from,
        args.to,
        args.amount,
        || {
            if args.hold {
                println!("transfer: holding transaction {} after step 1", args.txid);
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    line.clear();
                }
                println!("transfer: stdin closed; exiting without a commit");
                std::process::exit(0);
            }
        },
    );
    match res {
        Ok(()) => {
            println!(
                "transfer: committed transaction {}: {} from account {} to account {}",
                args.txid, args.amount, args.from, args.to
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(who, format!("transaction {}: {e}", args.txid)),
    }
}

/// Prints a guaranteed-delivery file: a receiver's log (what it accepted) or a sender's area
/// (what is still to deliver), with the damage found.
pub fn gmd_log(path: &std::path::Path, limit: usize) -> ExitCode {
    let who = "gmd-log";
    let show = |p: &[u8]| {
        let t = String::from_utf8_lossy(&p[..p.len().min(60)]).into_owned();
        let t: String = t
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        if p.len() > 60 {
            format!("{t}... ({} bytes)", p.len())
        } else {
            t
        }
    };
    let (seen, damage) = match ha_lib::gmd::GmdReceiver::read_log(path) {
        Ok(r) => r,
        Err(e) => return fail(who, format!("{}: {e}", path.display())),
    };
    if !seen.is_empty() {
        println!(
            "receiver log {}: {} messages accepted",
            path.display(),
            seen.len()
        );
        let mut last: std::collections::BTreeMap<(&str, u64), u64> = Default::default();
        for s in &seen {
            let e = last.entry((s.sender.as_str(), s.incarnation)).or_default();
            *e = (*e).max(s.seq);
        }
        for ((sender, inc), seq) in &last {
            println!("  sender {sender} incarnation {inc}: last seq {seq}");
        }
        for s in seen.iter().take(limit) {
            println!(
                "  {} {} seq {}: {}",
                s.sender,
                s.incarnation,
                s.seq,
                show(&s.payload)
            );
        }
        if seen.len() > limit {
            println!("  ... {} more (--limit)", seen.len() - limit);
        }
    } else {
        let area = match ha_lib::gmd::read_area(path) {
            Ok(a) => a,
            Err(e) => return fail(who, format!("{}: {e}", path.display())),
        };
        println!(
            "sender area {}: incarnation {}, next seq {}, {} messages pending",
            path.display(),
            area.incarnation.map_or("none".into(), |i| i.to_string()),
            area.next_seq,
            area.pending.len()
        );
        for (seq, p) in area.pending.iter().take(limit) {
            println!("  seq {seq}: {}", show(p));
        }
        if area.pending.len() > limit {
            println!("  ... {} more (--limit)", area.pending.len() - limit);
        }
        for d in &area.damage {
            println!("  damage: {d}");
        }
        return ExitCode::SUCCESS;
    }
    for d in &damage {
        println!("  damage: {d}");
    }
    ExitCode::SUCCESS
}

/// An HA client of a process pair: numbered updates that survive takeovers.
#[derive(Args, Debug, Clone)]
pub struct PairClientArgs {
    #[command(flatten)]
    pub system: SystemArg,
    /// The pair's name.
    #[arg(long, default_value = "pair")]
    pub name: String,
    /// Updates to send.
    #[arg(long, default_value_t = 1000)]
    pub count: u32,
    /// Microseconds between two updates.
    #[arg(long, default_value_t = 1000)]
    pub pace_us: u64,
}

/// Runs the pair's client.
pub fn pair_client(args: &PairClientArgs) -> ExitCode {
    let who = "pair-client";
    let sys = or_exit!(open_system(who, &args.system));
    let say = |line: &str| println!("{line}");
    match crate::examples::pair::client(
        &sys,
        &args.name,
        args.count,
        Duration::from_micros(args.pace_us),
        &say,
    ) {
        Ok(r) => {
            println!(
                "pair-client: {} updates acknowledged (sum {}); the pair's total grew by {}; {} recoveries; {}",
                r.acked,
                r.sum,
                r.total,
                r.recoveries,
                if r.total == r.sum { "nothing lost, nothing applied twice" } else { "MISMATCH" }
            );
            if r.total == r.sum {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(who, e),
    }
}
