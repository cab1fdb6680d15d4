//! `qsim`: the simulator's command line. With no arguments it runs the demo.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use kernel_sim::SystemBuilder;
use resmgr_examples::cli::{
    class_member, gmd_client, gmd_server, pair, pair_client, send, transfer, ClassMemberArgs,
    GmdClientArgs, GmdServerArgs, PairArgs, PairClientArgs, SendArgs, TransferArgs,
};
use resmgr_examples::cli::{
    counter_client, counter_server, devices_client, devices_server, echo_client, echo_server,
    file_client, file_server, CounterClientArgs, CounterServerArgs, DevicesClientArgs,
    DevicesServerArgs, EchoClientArgs, EchoServerArgs, FileClientArgs, FileServerArgs,
};
use resmgr_examples::cli::{
    ha_client, ha_reader, ham, ham_ctl, heartbeat, HaClientArgs, HaReaderArgs, HamArgs, HamCtlArgs,
    HeartbeatArgs,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(version, about = "A QNX-like message-passing microkernel simulated over shared memory", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The HA story: on a fresh system, the HA manager starts an echo server, HA clients send
    /// numbered requests, the server is killed several times and restarted, the clients
    /// recover; prints a timeline and a summary from the servers' records, and cleans up (what
    /// `cargo run --release` does).
    Demo {
        /// Times the server is killed.
        #[arg(long, default_value_t = 3)]
        kills: u32,
        /// HA client processes.
        #[arg(long, default_value_t = 2)]
        clients: u32,
        /// Requests per client.
        #[arg(long, default_value_t = 3000)]
        requests: u32,
        /// Microseconds each client pauses between requests.
        #[arg(long, default_value_t = 100)]
        pace_us: u64,
        /// Keep the servers' records (journals) in this directory.
        #[arg(long)]
        keep_records: Option<std::path::PathBuf>,
    },
    /// HA clients send numbered requests while servers (and, with --kill-clients, clients) are
    /// killed at random moments; reports what the records say was sent, completed, recovered,
    /// failed, lost, duplicated, abandoned, hung and leaked. Exits non-zero if anything failed,
    /// was lost, hung or leaked.
    Chaos {
        /// Kills to make.
        #[arg(long, default_value_t = 20)]
        kills: u32,
        /// HA client processes.
        #[arg(long, default_value_t = 4)]
        clients: u32,
        /// Echo servers, each supervised by the HA manager.
        #[arg(long, default_value_t = 2)]
        servers: u32,
        /// Spread the kills over about this many seconds (default: 30 ms per kill).
        #[arg(long)]
        seconds: Option<f64>,
        /// Kill clients too (about one kill in four); each is replaced.
        #[arg(long)]
        kill_clients: bool,
        /// Seed of the kill schedule (default: from the clock).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print only one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Keep the servers' and clients' records (journals) in this directory.
        #[arg(long)]
        keep_records: Option<std::path::PathBuf>,
        /// Seconds the clients get to finish after the last kill before they count as hung.
        #[arg(long, default_value_t = 10.0)]
        grace: f64,
    },
    /// Guaranteed delivery's story: the HA manager supervises a GMD server; a client queues
    /// numbered one-way messages into a file-backed area; the server is killed (and restarted)
    /// and the client is killed (and started again on its area); prints a timeline and a
    /// summary from the server's inbox (every message once, in order), and cleans up.
    GmdDemo {
        /// Messages to deliver.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Times the server is killed.
        #[arg(long, default_value_t = 2)]
        kills: u32,
        /// Microseconds between two messages the client queues.
        #[arg(long, default_value_t = 200)]
        pace_us: u64,
        /// Microseconds of work the server does per message.
        #[arg(long, default_value_t = 300)]
        work_us: u64,
        /// Keep the inbox, the area and the manager's journal in this directory.
        #[arg(long)]
        keep_records: Option<std::path::PathBuf>,
    },
    /// Run one example program in this process.
    #[command(subcommand)]
    Run(Example),
    /// Show the processes, threads (and whom they are blocked on), channels, connections and
    /// names of a system, like QNX's pidin.
    Pidin {
        /// System (arena) name; default: $QSIM_SYSTEM, else qsim-<uid>.
        #[arg(long)]
        system: Option<String>,
    },
    /// Send messages (or a pulse) to a server by name or path, and print the replies.
    Send(SendArgs),
    /// Print a guaranteed-delivery file: a receiver's log or a sender's area, and any damage.
    GmdLog {
        /// The file (a `gmd-server --log` file, or an area's `<sender>.gmd`).
        file: std::path::PathBuf,
        /// Print at most this many messages.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run the benchmark report (benches' latency-report; arguments are passed on).
    Bench {
        /// Arguments for the report (such as --quick, --json).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the HA manager: start, watch and restart the entities of a configuration file.
    Ham(HamArgs),
    /// Ask the HA manager for its entity table, or to stop.
    HamCtl(HamCtlArgs),
    /// Remove a system's arena file (the default system unless --system is given).
    Clean {
        /// System (arena) name; default: $QSIM_SYSTEM, else qsim-<uid>.
        #[arg(long)]
        system: Option<String>,
    },
}

#[derive(Subcommand)]
enum Example {
    /// The echo server.
    EchoServer(EchoServerArgs),
    /// The echo client.
    EchoClient(EchoClientArgs),
    /// The /dev/null and /dev/zero server.
    DevicesServer(DevicesServerArgs),
    /// Reads /dev/zero, writes and reads /dev/null.
    DevicesClient(DevicesClientArgs),
    /// The counter server (/dev/counter; devctl to read, add and reset).
    CounterServer(CounterServerArgs),
    /// The counter client.
    CounterClient(CounterClientArgs),
    /// The file server: a host directory under a mountpoint, an offset per open.
    FileServer(FileServerArgs),
    /// The file client: open, seek, read in chunks.
    FileClient(FileClientArgs),
    /// The HA reader: plain reads that carry on across a restart of the file server.
    HaReader(HaReaderArgs),
    /// A self-attached HA-manager entity with a heartbeat.
    Heartbeat(HeartbeatArgs),
    /// The HA echo client: numbered requests that survive a server restart.
    HaClient(HaClientArgs),
    /// A member of a server class (ha-lib's Pathsend-style classes).
    ClassMember(ClassMemberArgs),
    /// A process pair: primary and backup, checkpointing before each reply.
    Pair(PairArgs),
    /// The process pair's HA client: numbered updates that survive takeovers.
    PairClient(PairClientArgs),
    /// A transfer between two accounts: a transaction of two steps on a class's shared store.
    Transfer(TransferArgs),
    /// Guaranteed delivery's server: a durable inbox that drops duplicates.
    GmdServer(GmdServerArgs),
    /// Guaranteed delivery's client: numbered messages that reach the server once, in order.
    GmdClient(GmdClientArgs),
}

fn gmd_demo(opts: &resmgr_examples::demo_gmd::Options) -> ExitCode {
    println!(
        "qsim gmd-demo: a client queues {} one-way messages for a GMD server that the HA manager\nsupervises, without waiting for it; the server is killed {} times and the client once.\n",
        opts.messages, opts.kills
    );
    match resmgr_examples::demo_gmd::run(opts, |line| println!("{line}")) {
        Ok(s) => {
            println!();
            println!("summary (from the server's inbox):");
            println!(
                "  server kills {:>7}   restarts by the HA manager {}",
                s.kills, s.restarts
            );
            println!(
                "  queued       {:>7}   (send returned, over both client runs)",
                s.queued
            );
            println!(
                "  recovered    {:>7}   (found in the area by the restarted client)",
                s.recovered
            );
            println!(
                "  recorded     {:>7}   (in the inbox, once each)",
                s.recorded
            );
            println!("  lost         {:>7}", s.lost);
            println!("  out of order {:>7}", s.disordered);
            println!(
                "  duplicates   {:>7}   (sent again after a lost acknowledgement, dropped by the server)",
                s.duplicates_dropped
            );
            println!();
            println!("Next: docs/gmd.md, docs/patterns.md, `qsim gmd-log FILE` on a kept inbox.");
            if s.lost == 0 && s.disordered == 0 && s.all_done && s.restarts >= s.kills {
                ExitCode::SUCCESS
            } else {
                eprintln!("qsim gmd-demo: something went wrong (see above)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("qsim gmd-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(opts: &resmgr_examples::demo::Options) -> ExitCode {
    println!(
        "qsim demo: {} HA clients send {} numbered requests each to an echo server that the HA manager\nsupervises; the server is killed {} times while they work.\n",
        opts.clients, opts.requests, opts.kills
    );
    match resmgr_examples::demo::run(opts, |line| println!("{line}")) {
        Ok(s) => {
            println!();
            println!("summary (from the servers' records):");
            println!(
                "  kills      {:>8}   restarts by the HA manager {}",
                s.kills, s.restarts
            );
            println!("  sent       {:>8}", s.sent);
            println!(
                "  completed  {:>8}   (distinct requests the servers recorded)",
                s.completed
            );
            println!(
                "  recovered  {:>8}   (answered only after a recovery)",
                s.recovered
            );
            println!(
                "  lost       {:>8}   (answered, yet never recorded by a server)",
                s.lost
            );
            println!(
                "  duplicated {:>8}   (executed twice: the dead server had done it; at-least-once)",
                s.duplicated
            );
            println!();
            println!(
                "Next: docs/tutorial.md, `qsim chaos --help`, `qsim pidin` while `qsim ham` runs."
            );
            if s.lost == 0 && s.failed_clients == 0 && s.restarts >= s.kills {
                ExitCode::SUCCESS
            } else {
                eprintln!("qsim demo: something went wrong (see above)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("qsim demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `qsim bench`: the benchmarks crate's report, which qsim does not link (so that a first
/// `cargo run --release` stays light): the binary next to this one if it was built, else cargo.
fn bench(args: &[String]) -> ExitCode {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.join("latency-report")))
        .filter(|p| p.exists());
    let status = match beside {
        Some(p) => std::process::Command::new(p).args(args).status(),
        None => {
            eprintln!("qsim bench: building and running the report with cargo (this takes a while the first time)");
            std::process::Command::new("cargo")
                .args([
                    "run",
                    "--release",
                    "-p",
                    "benches",
                    "--bin",
                    "latency-report",
                    "--",
                ])
                .args(args)
                .status()
        }
    };
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("qsim bench: cannot run the report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn chaos(opts: &resmgr_examples::chaos::Options, json: bool) -> ExitCode {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let res = resmgr_examples::chaos::run(opts, |done, total| {
        if tty {
            resmgr_examples::chaos::bar(&mut std::io::stderr(), done, total);
        }
    });
    if tty {
        eprintln!();
    }
    match res {
        Ok(r) => {
            if json {
                println!("{}", r.json());
            } else {
                print!("{}", resmgr_examples::chaos::table(&r));
            }
            if r.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("qsim chaos: something failed, was lost, hung or leaked");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("qsim chaos: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let default = Cmd::Demo {
        kills: 3,
        clients: 2,
        requests: 3000,
        pace_us: 100,
        keep_records: None,
    };
    match cli.cmd.unwrap_or(default) {
        Cmd::Demo {
            kills,
            clients,
            requests,
            pace_us,
            keep_records,
        } => demo(&resmgr_examples::demo::Options {
            kills,
            clients,
            requests,
            pace_us,
            keep_records,
        }),
        Cmd::Chaos {
            kills,
            clients,
            servers,
            seconds,
            kill_clients,
            seed,
            json,
            keep_records,
            grace,
        } => chaos(
            &resmgr_examples::chaos::Options {
                kills,
                clients,
                servers,
                seconds: seconds.unwrap_or(f64::from(kills) * 0.03),
                kill_clients,
                seed,
                grace: std::time::Duration::from_secs_f64(grace.max(0.0)),
                keep_records,
            },
            json,
        ),
        Cmd::GmdDemo {
            messages,
            kills,
            pace_us,
            work_us,
            keep_records,
        } => gmd_demo(&resmgr_examples::demo_gmd::Options {
            messages,
            kills,
            pace_us,
            work_us,
            keep_records,
        }),
        Cmd::Run(Example::EchoServer(a)) => echo_server(&a),
        Cmd::Run(Example::EchoClient(a)) => echo_client(&a),
        Cmd::Run(Example::DevicesServer(a)) => devices_server(&a),
        Cmd::Run(Example::DevicesClient(a)) => devices_client(&a),
        Cmd::Run(Example::CounterServer(a)) => counter_server(&a),
        Cmd::Run(Example::CounterClient(a)) => counter_client(&a),
        Cmd::Run(Example::FileServer(a)) => file_server(&a),
        Cmd::Run(Example::FileClient(a)) => file_client(&a),
        Cmd::Run(Example::HaReader(a)) => ha_reader(&a),
        Cmd::Run(Example::Heartbeat(a)) => heartbeat(&a),
        Cmd::Run(Example::HaClient(a)) => ha_client(&a),
        Cmd::Run(Example::ClassMember(a)) => class_member(&a),
        Cmd::Run(Example::Pair(a)) => pair(&a),
        Cmd::Run(Example::PairClient(a)) => pair_client(&a),
        Cmd::Run(Example::Transfer(a)) => transfer(&a),
        Cmd::Run(Example::GmdServer(a)) => gmd_server(&a),
        Cmd::Run(Example::GmdClient(a)) => gmd_client(&a),
        Cmd::Send(a) => send(&a),
        Cmd::GmdLog { file, limit } => resmgr_examples::cli::gmd_log(&file, limit),
        Cmd::Bench { args } => bench(&args),
        Cmd::Ham(a) => ham(&a),
        Cmd::HamCtl(a) => ham_ctl(&a),
        Cmd::Pidin { system } => {
            let b = SystemBuilder::new().watcher(false);
            let b = match system {
                Some(s) => b.name(s),
                None => b,
            };
            match b.attach() {
                Ok(sys) => {
                    // A closed pipe (`qsim pidin | head`) is not an error worth a panic.
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "system {} (this qsim pidin is pid {})\n{}",
                        sys.name(),
                        sys.pid().0,
                        sys.snapshot()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("qsim pidin: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Clean { system } => {
            let name = system.unwrap_or_else(kernel_sim::default_system_name);
            match kernel_sim::remove_system(&name) {
                Ok(()) => {
                    println!("removed system {name}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("qsim clean: {name}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
