//! `qsim chaos`: HA clients send numbered requests while servers (and, if asked, clients) are
//! killed at random moments; the HA manager restarts the servers. Every figure of the report is
//! counted from durable records (the servers' journals, written before each reply, and the
//! clients' own journals) and from the kernel's introspection view, never from what a process
//! believes at the end.

use crate::demo::Stage;
use crate::journal::Journal;
use kernel_sim::process::ProcessWatch;
use kernel_sim::NAME_PREFIX;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// What to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Kills to make.
    pub kills: u32,
    /// HA client processes sending at once.
    pub clients: u32,
    /// Echo servers (each supervised by the HA manager).
    pub servers: u32,
    /// Spread the kills over about this long.
    pub seconds: f64,
    /// Kill clients too (about one kill in four); a killed client is replaced.
    pub kill_clients: bool,
    /// Seed of the kill schedule (0: from the clock).
    pub seed: u64,
    /// How long clients get to finish after the last kill before they count as hung.
    pub grace: Duration,
    /// Keep the records (journals) in this directory (else a temporary one, removed).
    pub keep_records: Option<PathBuf>,
}

/// The report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Kills made (servers and clients).
    pub kills: u64,
    /// Requests the clients sent.
    pub sent: u64,
    /// Requests the clients got a reply to.
    pub completed: u64,
    /// Completed after at least one recovery.
    pub recovered: u64,
    /// Calls that returned an error to the client.
    pub failed: u64,
    /// Completed, yet absent from the servers' records.
    pub lost: u64,
    /// Request ids the servers executed more than once (at-least-once, made visible).
    pub duplicated: u64,
    /// In flight in a client that was killed.
    pub abandoned: u64,
    /// Clients still blocked a grace period after the run.
    pub hung: u64,
    /// Objects in the introspection view owned by no live process, after the run.
    pub leaked: u64,
}

impl Report {
    /// Whether the run went well: nothing failed, was lost, hung or leaked.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.lost == 0 && self.hung == 0 && self.leaked == 0
    }

    /// The report as one JSON object, keys as numbers.
    pub fn json(&self) -> String {
        format!(
            "{{\"kills\":{},\"sent\":{},\"completed\":{},\"recovered\":{},\"failed\":{},\"lost\":{},\"duplicated\":{},\"abandoned\":{},\"hung\":{},\"leaked\":{}}}",
            self.kills,
            self.sent,
            self.completed,
            self.recovered,
            self.failed,
            self.lost,
            self.duplicated,
            self.abandoned,
            self.hung,
            self.leaked
        )
    }
}

/// xorshift64*: enough randomness for a kill schedule, reproducible from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
}
impl Proc {
    /// Waits up to `limit` for the process to exit on its own.
    fn wait_exit(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], piped_stdin: bool) -> Result<Proc, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(if piped_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {args:?}: {e}"))?;
    let stdin = child.stdin.take();
    Ok(Proc { child, stdin })
}

/// A client: its process (while it runs), its journal and whether it was killed.
struct Client {
    proc: Option<Proc>,
    journal: PathBuf,
    killed: bool,
}

/// Runs the chaos; `progress(done, total)` is called after each kill.
///
/// # Errors
///
/// A message if the system, the manager or a process cannot be started.
pub fn run(opts: &Options, mut progress: impl FnMut(u32, u32)) -> Result<Report, String> {
    let stage = Stage::new("qsim-chaos", opts.keep_records.as_ref())?;
    let (name, dir, sys) = (&stage.name, &stage.dir, &stage.sys);
    let servers = opts.servers.max(1);
    let mut config = String::new();
    for s in 0..servers {
        config.push_str(&format!(
            "[[entity]]\nname = \"echo{s}\"\ncommand = [\"qsim\", \"run\", \"echo-server\", \"--system\", \"{name}\", \"--name\", \"chaos-echo{s}\", \"--exit-on-eof\", \"--journal\", \"{}\"]\nrestart = {{ limit = {}, backoff_ms = 1, backoff_max_ms = 20 }}\n",
            dir.join(format!("server{s}.journal")).display(),
            opts.kills + 10
        ));
    }
    let cfg = dir.join("ham.toml");
    std::fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let ham_journal = dir.join("ham.journal");
    let ham_args = crate::ham::owned_manager_args(name, &cfg, &ham_journal);
    let mut ham = spawn(
        &ham_args.iter().map(String::as_str).collect::<Vec<_>>(),
        true,
    )?;
    for s in 0..servers {
        sys.path_wait(
            &format!("{NAME_PREFIX}chaos-echo{s}"),
            Some(Duration::from_secs(10)),
        )
        .map_err(|e| format!("server {s} did not start: {e}"))?;
    }
    let mut clients: Vec<Client> = Vec::new();
    let start_client = |clients: &mut Vec<Client>| -> Result<(), String> {
        let i = clients.len() as u32;
        let journal = dir.join(format!("client{i}.journal"));
        let (base, server) = (
            ((i + 1) * 1_000_000).to_string(),
            format!("chaos-echo{}", i % servers),
        );
        let j = journal.display().to_string();
        let p = spawn(
            &[
                "run",
                "ha-client",
                "--system",
                name,
                "--name",
                &server,
                "--label",
                &i.to_string(),
                "--base",
                &base,
                "--count",
                "900000",
                "--budget",
                "30",
                "--journal",
                &j,
                "--until-eof",
                "--recoveries-per-send",
                "0",
            ],
            true,
        )?;
        clients.push(Client {
            proc: Some(p),
            journal,
            killed: false,
        });
        Ok(())
    };
    for _ in 0..opts.clients.max(1) {
        start_client(&mut clients)?;
    }
    let mut rng = Rng(if opts.seed != 0 {
        opts.seed
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let mean_us = ((opts.seconds.max(0.0) * 1e6) / f64::from(opts.kills.max(1))) as u64;
    let mut report = Report::default();
    for k in 0..opts.kills {
        std::thread::sleep(Duration::from_micros(rng.below(2 * mean_us.max(1))));
        if opts.kill_clients && rng.below(4) == 0 {
            // A client, replaced by a new one so the load goes on.
            let live: Vec<usize> = (0..clients.len())
                .filter(|&i| clients[i].proc.is_some())
                .collect();
            let i = live[rng.below(live.len() as u64) as usize];
            if let Some(mut p) = clients[i].proc.take() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
            clients[i].killed = true;
            report.kills += 1;
            start_client(&mut clients)?;
        } else {
            let s = rng.below(u64::from(servers));
            let path = format!("{NAME_PREFIX}chaos-echo{s}");
            // The server as it is now: wait for the restart if it is down.
            let _ = sys.path_wait(&path, Some(Duration::from_secs(10)));
            if let Some(pid) = sys
                .path_resolve(&path)
                .ok()
                .and_then(|t| t.first().map(|t| t.pid))
            {
                if let Ok(w) = ProcessWatch::new(pid) {
                    if w.kill().is_ok() {
                        report.kills += 1;
                    }
                    w.wait(Some(Duration::from_secs(10)));
                }
            }
        }
        progress(k + 1, opts.kills);
    }
    // The end: each running client finishes its request in flight and exits.
    for c in clients.iter_mut() {
        if let Some(p) = c.proc.as_mut() {
            p.stdin.take();
        }
    }
    let end = Instant::now() + opts.grace;
    for c in clients.iter_mut() {
        let Some(p) = c.proc.as_mut() else { continue };
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    report.hung += 1;
                    break;
                }
            }
        }
    }
    for c in clients.iter_mut() {
        c.proc.take();
    }
    // Closing its stdin stops the manager, which kills the servers; then it exits.
    ham.stdin.take();
    ham.wait_exit(Duration::from_secs(20));
    drop(ham);
    // The servers' records.
    let mut executed: HashMap<u32, u32> = HashMap::new();
    for s in 0..servers {
        for r in Journal::read(dir.join(format!("server{s}.journal"))).unwrap_or_default() {
            if let Some(id) = r.get("id").and_then(|v| v.parse().ok()) {
                *executed.entry(id).or_default() += 1;
            }
        }
    }
    report.duplicated = executed.values().filter(|&&n| n > 1).count() as u64;
    // The clients' records.
    for c in &clients {
        let mut sent = HashSet::new();
        let mut done = HashSet::new();
        for r in Journal::read(&c.journal).unwrap_or_default() {
            let id: Option<u32> = r.get("id").and_then(|v| v.parse().ok());
            let Some(id) = id else { continue };
            match r.op.as_str() {
                "sent" => {
                    sent.insert(id);
                }
                "answered" => {
                    done.insert(id);
                    report.completed += 1;
                    if r.get("recovered") == Some("1") {
                        report.recovered += 1;
                    }
                    if !executed.contains_key(&id) {
                        report.lost += 1;
                        eprintln!(
                            "qsim chaos: request {id} was answered to {} but no server recorded it",
                            c.journal.display()
                        );
                    }
                }
                "failed" => report.failed += 1,
                _ => {}
            }
        }
        report.sent += sent.len() as u64;
        if c.killed {
            report.abandoned += sent.difference(&done).count() as u64;
        }
    }
    report.leaked = leaked(sys);
    Ok(report)
}

/// Objects still owned by processes that are gone, once every cleanup had its chance.
fn leaked(sys: &kernel_sim::System) -> u64 {
    let count = |sys: &kernel_sim::System| {
        let snap = sys.snapshot();
        let dead: HashSet<i32> = snap
            .processes
            .iter()
            .filter(|p| !p.running)
            .map(|p| p.pid)
            .collect();
        let owned = snap
            .channels
            .iter()
            .filter(|c| dead.contains(&c.pid))
            .count()
            + snap
                .connections
                .iter()
                .filter(|c| dead.contains(&c.pid))
                .count()
            + snap.names.iter().filter(|n| dead.contains(&n.pid)).count();
        (dead, owned as u64 + snap.orphans.len() as u64)
    };
    // The watchers of the survivors clean up after the dead; give them a bounded while.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (dead, n) = count(sys);
        if n == 0 || Instant::now() > end {
            return n;
        }
        for pid in dead {
            // What any process does when it meets a dead one: finish its cleanup.
            sys.clean_up_after(kernel_sim::Pid(pid));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Draws a progress bar on `out` (a terminal).
pub fn bar(out: &mut impl Write, done: u32, total: u32) {
    let width = 40;
    let filled = (done as usize * width) / (total.max(1) as usize);
    let _ = write!(
        out,
        "\r[{}{}] {done}/{total} kills",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    let _ = out.flush();
}

/// The report as a human-readable table.
pub fn table(r: &Report) -> String {
    let rows = [
        ("kills", r.kills),
        ("sent", r.sent),
        ("completed", r.completed),
        ("recovered", r.recovered),
        ("failed", r.failed),
        ("lost", r.lost),
        ("duplicated", r.duplicated),
        ("abandoned", r.abandoned),
        ("hung", r.hung),
        ("leaked", r.leaked),
    ];
    rows.iter()
        .map(|(k, v)| format!("{k:<11} {v:>9}\n"))
        .collect()
}
