//! `qsim demo`: the HA story in one command. On a fresh system it starts the HA manager, which
//! starts an echo server; HA clients send numbered requests; the demo kills the server several
//! times while they work; the manager restarts it and the clients recover and send again. It
//! prints a timeline and a summary computed from what the servers recorded (the echo server's
//! journal), then removes everything it made.

use crate::journal::Journal;
use kernel_sim::process::ProcessWatch;
use kernel_sim::{SystemBuilder, NAME_PREFIX};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the demo does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Server kills.
    pub kills: u32,
    /// HA client processes.
    pub clients: u32,
    /// Requests per client.
    pub requests: u32,
    /// Pause between a client's requests, in microseconds.
    pub pace_us: u64,
    /// Keep the servers' records in this directory (else a temporary one, removed at the end).
    pub keep_records: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kills: 3,
            clients: 2,
            requests: 3000,
            pace_us: 100,
            keep_records: None,
        }
    }
}

/// The summary, from the servers' records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Kills made.
    pub kills: u32,
    /// Restarts the HA manager made.
    pub restarts: u32,
    /// Requests the clients sent.
    pub sent: u64,
    /// Distinct requests the servers recorded executing.
    pub completed: u64,
    /// Requests the clients had answered only after a recovery.
    pub recovered: u64,
    /// Requests a client was answered that no server recorded (must be 0).
    pub lost: u64,
    /// Requests a server recorded more than once (the dead one had done it, its reply died
    /// with it, and the client's retransmission did it again: at-least-once, made visible).
    pub duplicated: u64,
    /// Clients that ended with an error.
    pub failed_clients: u32,
}

/// A child process killed on drop.
pub(crate) struct Guard(pub(crate) Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the system (and a temporary directory) on drop.
struct Cleanup {
    system: String,
    dir: Option<PathBuf>,
}
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.system);
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The stage of a demo (`qsim demo`, `qsim gmd-demo`, `qsim chaos`): a fresh system named
/// `<prefix>-<pid>` and a directory for the records (`keep`, or a temporary one), both removed
/// when it is dropped (a kept directory stays).
pub(crate) struct Stage {
    /// The system's name.
    pub(crate) name: String,
    /// Where the records go.
    pub(crate) dir: PathBuf,
    /// The system.
    pub(crate) sys: kernel_sim::System,
    _cleanup: Cleanup,
}

impl Stage {
    /// Creates the directory and the system.
    pub(crate) fn new(prefix: &str, keep: Option<&PathBuf>) -> Result<Stage, String> {
        let name = format!("{prefix}-{}", std::process::id());
        let (dir, temp) = match keep {
            Some(d) => (d.clone(), false),
            None => (std::env::temp_dir().join(&name), true),
        };
        if temp {
            let _ = std::fs::remove_dir_all(&dir);
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cleanup = Cleanup {
            system: name.clone(),
            dir: temp.then(|| dir.clone()),
        };
        let sys = SystemBuilder::new()
            .name(&name)
            .create()
            .map_err(|e| e.to_string())?;
        Ok(Stage {
            name,
            dir,
            sys,
            _cleanup: cleanup,
        })
    }
}

/// Stops an HA manager started with `owned_manager_args` (closing its stdin stops it and the
/// entities it started), waiting up to 20 s for it to exit; then the guard kills what is left.
pub(crate) fn stop_manager(mut ham: Guard) {
    ham.0.stdin.take();
    let end = Instant::now() + Duration::from_secs(20);
    while matches!(ham.0.try_wait(), Ok(None)) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts this program with `args`; its stdout lines go to `tx`, tagged with `label`.
pub(crate) fn spawn(
    args: &[&str],
    label: &str,
    tx: &mpsc::Sender<(String, String)>,
) -> Result<Guard, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        // A pipe nobody writes: a child that stops on its end of file goes when we do.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {args:?}: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, label) = (tx.clone(), label.to_owned());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((label.clone(), line)).is_err() {
                break;
            }
        }
    });
    Ok(Guard(child))
}

fn records(path: &Path, op: &str) -> Vec<crate::journal::Record> {
    Journal::read(path)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.op == op)
        .collect()
}

/// Runs the demo, printing the timeline through `say`.
///
/// # Errors
///
/// A message if a process cannot be started, the system cannot be created, or a step does
/// not happen within a generous bound (the system is removed all the same).
pub fn run(opts: &Options, mut say: impl FnMut(&str)) -> Result<Summary, String> {
    let t0 = Instant::now();
    let mut stamp = |what: &str| {
        say(&format!(
            "[{:>9.3} ms] {what}",
            t0.elapsed().as_secs_f64() * 1e3
        ))
    };
    let stage = Stage::new("qsim-demo", opts.keep_records.as_ref())?;
    let (name, dir, sys) = (&stage.name, &stage.dir, &stage.sys);
    stamp(&format!("created system {name} (/dev/shm/{name})"));
    let echo_journal = dir.join("echo.journal");
    let ham_journal = dir.join("ham.journal");
    let _ = std::fs::remove_file(&echo_journal);
    let _ = std::fs::remove_file(&ham_journal);
    let config = format!(
        r#"[[entity]]
name = "echo-server"
command = ["qsim", "run", "echo-server", "--system", "{name}", "--name", "demo-echo", "--exit-on-eof", "--journal", "{}"]
restart = {{ limit = {}, backoff_ms = 20, backoff_max_ms = 200 }}
"#,
        echo_journal.display(),
        opts.kills + 5
    );
    let cfg_path = dir.join("ham.toml");
    std::fs::write(&cfg_path, config).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<(String, String)>();
    let ham_args = crate::ham::owned_manager_args(name, &cfg_path, &ham_journal);
    let ham = spawn(
        &ham_args.iter().map(String::as_str).collect::<Vec<_>>(),
        "ham",
        &tx,
    )?;
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the HA manager did not start")?;
    stamp(&line.1);
    let echo_path = format!("{NAME_PREFIX}demo-echo");
    sys.path_wait(&echo_path, Some(Duration::from_secs(10)))
        .map_err(|e| format!("the echo server did not start: {e}"))?;
    let owner = |sys: &kernel_sim::System| {
        sys.path_resolve(&echo_path)
            .ok()
            .and_then(|t| t.first().map(|t| t.pid))
    };
    stamp(&format!(
        "the HA manager started the echo server: pid {}",
        owner(sys).unwrap_or(0)
    ));
    let mut clients = Vec::new();
    let mut bases = Vec::new();
    for i in 0..opts.clients {
        let label = ((b'A' + (i % 26) as u8) as char).to_string();
        let base = (i + 1) * 1_000_000;
        bases.push((label.clone(), base));
        let (b, c, p) = (
            base.to_string(),
            opts.requests.to_string(),
            opts.pace_us.to_string(),
        );
        clients.push(spawn(
            &[
                "run",
                "ha-client",
                "--system",
                name,
                "--name",
                "demo-echo",
                "--label",
                &label,
                "--base",
                &b,
                "--count",
                &c,
                "--pace-us",
                &p,
            ],
            &label,
            &tx,
        )?);
        stamp(&format!(
            "started HA client {label}: {} requests, ids from {base}",
            opts.requests
        ));
    }
    drop(tx);
    let total = u64::from(opts.clients) * u64::from(opts.requests);
    let mut finals: HashMap<String, String> = HashMap::new();
    let print_pending = |stamp: &mut dyn FnMut(&str), finals: &mut HashMap<String, String>| {
        while let Ok((label, line)) = rx.try_recv() {
            if line.contains(": done:") || line.contains(": failed:") {
                finals.insert(label, line.clone());
            }
            stamp(&line);
        }
    };
    let mut kills = 0;
    for k in 1..=opts.kills {
        // Kill when the servers have recorded their share of the work since the last kill.
        let due = total * u64::from(k) / u64::from(opts.kills + 1);
        let end = Instant::now() + Duration::from_secs(60);
        while (records(&echo_journal, "echo").len() as u64) < due {
            print_pending(&mut stamp, &mut finals);
            if Instant::now() > end || finals.len() == opts.clients as usize {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let Some(pid) = owner(sys) else {
            return Err("the echo server is not running".into());
        };
        if let Ok(w) = ProcessWatch::new(pid) {
            let _ = w.kill();
            w.wait(Some(Duration::from_secs(10)));
        }
        kills += 1;
        stamp(&format!("KILLED the echo server, pid {pid} (kill -9)"));
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            print_pending(&mut stamp, &mut finals);
            let r = records(&ham_journal, "restart");
            if r.len() >= k as usize {
                let new = r
                    .last()
                    .and_then(|r| r.get("pid"))
                    .unwrap_or("?")
                    .to_owned();
                stamp(&format!(
                    "the HA manager restarted the echo server: pid {new} (restart {k})"
                ));
                break;
            }
            if Instant::now() > end {
                return Err("the HA manager did not restart the echo server".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Let the clients finish, printing their lines as they come.
    let end = Instant::now() + Duration::from_secs(120);
    while clients
        .iter_mut()
        .any(|c| matches!(c.0.try_wait(), Ok(None)))
    {
        print_pending(&mut stamp, &mut finals);
        if Instant::now() > end {
            return Err("the clients did not finish".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(clients);
    while let Ok((label, line)) = rx.recv_timeout(Duration::from_millis(200)) {
        if line.contains(": done:") || line.contains(": failed:") {
            finals.insert(label, line.clone());
        }
        stamp(&line);
    }
    // Closing its stdin stops the manager, which kills the echo server; then it exits.
    stop_manager(ham);
    stamp("stopped the HA manager and the echo server");
    // The summary, from the records.
    let mut s = Summary {
        kills,
        restarts: records(&ham_journal, "restart").len() as u32,
        ..Summary::default()
    };
    let mut seen: HashMap<u32, u32> = HashMap::new();
    for r in records(&echo_journal, "echo") {
        if let Some(id) = r.get("id").and_then(|v| v.parse().ok()) {
            *seen.entry(id).or_default() += 1;
        }
    }
    for (label, base) in &bases {
        let line = finals.get(label).cloned().unwrap_or_default();
        let num = |key: &str| -> u64 {
            line.split(key)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.trim_end_matches(';').parse().ok())
                .unwrap_or(0)
        };
        if !line.contains(": done:") {
            s.failed_clients += 1;
        }
        s.sent += num("sent ");
        s.recovered += num("recovered ");
        let answered = num("answered ");
        for id in *base..base.saturating_add(answered as u32) {
            match seen.get(&id) {
                None => s.lost += 1,
                Some(&n) if n > 1 => s.duplicated += 1,
                Some(_) => {}
            }
        }
        s.completed += seen
            .keys()
            .filter(|&&id| id >= *base && id < base.saturating_add(opts.requests))
            .count() as u64;
    }
    if let Some(d) = &opts.keep_records {
        stamp(&format!("the servers' records are in {}", d.display()));
    }
    Ok(s)
}
