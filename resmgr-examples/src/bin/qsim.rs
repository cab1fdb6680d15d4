//! `qsim`: the simulator's command line. With no arguments it runs the demo.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use kernel_sim::SystemBuilder;
use resmgr_examples::cli::{
    counter_client, counter_server, devices_client, devices_server, echo_client, echo_server,
    file_client, file_server, CounterClientArgs, CounterServerArgs, DevicesClientArgs,
    DevicesServerArgs, EchoClientArgs, EchoServerArgs, FileClientArgs, FileServerArgs,
};
use resmgr_examples::cli::{
    ha_reader, ham, ham_ctl, heartbeat, HaReaderArgs, HamArgs, HamCtlArgs, HeartbeatArgs,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "A QNX-like message-passing microkernel simulated over shared memory", long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start an echo server and a client as two processes on a fresh system, show their
    /// exchange, and clean up (what `cargo run --release` does).
    Demo {
        /// 8-byte messages the client sends after the greeting, for a first latency figure.
        #[arg(long, default_value_t = 2000)]
        count: usize,
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
}

/// A child process killed on drop, so the demo leaves nothing running even if it fails.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the demo's system on drop.
struct RemoveSystem(String);

impl Drop for RemoveSystem {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.0);
    }
}

fn spawn(args: &[&str]) -> Result<(Guard, std::sync::mpsc::Receiver<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {args:?}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((Guard(child), rx))
}

fn demo(count: usize) -> Result<(), String> {
    let t0 = Instant::now();
    let stamp = |what: &str| println!("[{:>8.3} ms] {what}", t0.elapsed().as_secs_f64() * 1e3);
    let name = format!("qsim-demo-{}", std::process::id());
    let _remove = RemoveSystem(name.clone());
    let sys = SystemBuilder::new()
        .name(&name)
        .create()
        .map_err(|e| e.to_string())?;
    stamp(&format!(
        "created system {name}: /dev/shm/{name}, limits {} processes x {} threads, {} KiB messages",
        sys.limits().max_processes,
        sys.limits().threads_per_process,
        sys.limits().max_msg_size / 1024
    ));
    let (mut server, server_out) =
        spawn(&["run", "echo-server", "--system", &name, "--name", "echo"])?;
    let line = server_out
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the echo server did not start".to_string())?;
    stamp(&line);
    let count_s = count.to_string();
    let (mut client, client_out) = spawn(&[
        "run",
        "echo-client",
        "--system",
        &name,
        "--name",
        "echo",
        "--count",
        &count_s,
        "--stop",
        "hello",
        "from another process",
    ])?;
    for line in client_out.iter() {
        stamp(&line);
    }
    let status = client.0.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the echo client failed: {status}"));
    }
    for line in server_out.iter() {
        stamp(&line);
    }
    let status = server.0.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the echo server failed: {status}"));
    }
    drop(sys);
    stamp(&format!("both processes exited cleanly; removing {name}"));
    println!();
    println!("Try it by hand in two shells:  cargo run --release --bin echo-server   and   cargo run --release --bin echo-client -- hi");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd.unwrap_or(Cmd::Demo { count: 2000 }) {
        Cmd::Demo { count } => match demo(count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qsim demo: {e}");
                ExitCode::FAILURE
            }
        },
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
