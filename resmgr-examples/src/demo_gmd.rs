//! `qsim gmd-demo`: guaranteed delivery's story in one command. On a fresh system the HA manager
//! starts a (slow) GMD server; a client queues numbered one-way messages into a file-backed
//! delivery area without waiting for the server; the demo kills the server (the manager restarts
//! it) and kills the client (the demo starts it again on the same area). It prints a timeline
//! and a summary computed from the server's inbox: every message once, in order, and the
//! duplicates the server dropped. Then it removes everything it made.

use crate::demo::{spawn, stop_manager, Guard, Stage};
use ha_lib::gmd::GmdReceiver;
use kernel_sim::process::ProcessWatch;
use kernel_sim::NAME_PREFIX;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the demo does.
#[derive(Clone, Debug)]
pub struct Options {
    /// Messages to deliver.
    pub messages: u64,
    /// Server kills (the client is killed once besides).
    pub kills: u32,
    /// Microseconds between two messages the client queues.
    pub pace_us: u64,
    /// Microseconds of work the server does per message (it falls behind the client).
    pub work_us: u64,
    /// Keep the inbox, the area and the manager's journal in this directory.
    pub keep_records: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            messages: 2000,
            kills: 2,
            pace_us: 200,
            work_us: 300,
            keep_records: None,
        }
    }
}

/// The summary, from the server's inbox and the clients' reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Server kills made.
    pub kills: u32,
    /// Restarts the HA manager made.
    pub restarts: u32,
    /// Messages the two client runs queued (`send` returned): what the first run left in the
    /// area's numbering, plus what the second queued.
    pub queued: u64,
    /// Messages the second client run found in the area (the first one's undelivered).
    pub recovered: u64,
    /// Messages the inbox holds.
    pub recorded: u64,
    /// Sequence numbers 1..=messages missing from the inbox (must be 0).
    pub lost: u64,
    /// Inbox records out of order or recorded twice (must be 0).
    pub disordered: u64,
    /// Messages the server acknowledged as duplicates (sent again after a lost acknowledgement).
    pub duplicates_dropped: u64,
    /// Whether the last client run reported everything delivered.
    pub all_done: bool,
}

/// A number after `key` in `line` (`"… 12 delivered"` with key `" delivered"` looks backwards).
fn number_before(line: &str, key: &str) -> u64 {
    line.split(key)
        .next()
        .and_then(|head| head.split_whitespace().last())
        .and_then(|v| v.trim_start_matches('(').parse().ok())
        .unwrap_or(0)
}

/// Runs the demo, printing the timeline through `say`.
///
/// # Errors
///
/// A message if a process cannot be started, the system cannot be created, or a step does
/// not happen within a generous bound (everything is removed all the same).
pub fn run(opts: &Options, mut say: impl FnMut(&str)) -> Result<Summary, String> {
    let t0 = Instant::now();
    let mut stamp = |what: &str| {
        say(&format!(
            "[{:>9.3} ms] {what}",
            t0.elapsed().as_secs_f64() * 1e3
        ))
    };
    let stage = Stage::new("qsim-demo-gmd", opts.keep_records.as_ref())?;
    let (name, dir, sys) = (&stage.name, &stage.dir, &stage.sys);
    stamp(&format!("created system {name}"));
    let inbox = dir.join("inbox");
    let area = dir.join("area");
    let ham_journal = dir.join("ham.journal");
    for f in [&inbox, &ham_journal] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(&area);
    let config = format!(
        r#"[[entity]]
name = "gmd-server"
command = ["qsim", "run", "gmd-server", "--system", "{name}", "--name", "demo-gmd", "--exit-on-eof", "--work-us", "{}", "--log", "{}"]
restart = {{ limit = {}, backoff_ms = 20, backoff_max_ms = 200 }}
"#,
        opts.work_us,
        inbox.display(),
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
    let path = format!("{NAME_PREFIX}demo-gmd");
    sys.path_wait(&path, Some(Duration::from_secs(10)))
        .map_err(|e| format!("the GMD server did not start: {e}"))?;
    let owner = || {
        sys.path_resolve(&path)
            .ok()
            .and_then(|t| t.first().map(|t| t.pid))
    };
    stamp(&format!(
        "the HA manager started the GMD server: pid {} (slow on purpose: {} µs a message)",
        owner().unwrap_or(0),
        opts.work_us
    ));
    let (count, pace, area_arg) = (
        opts.messages.to_string(),
        opts.pace_us.to_string(),
        area.display().to_string(),
    );
    let client_args = [
        "run",
        "gmd-client",
        "--system",
        name,
        "--name",
        "demo-gmd",
        "--sender",
        "demo",
        "--area",
        &area_arg,
        "--count",
        &count,
        "--pace-us",
        &pace,
        "--timeout-ms",
        "0",
        "--exit-on-eof",
    ];
    let recorded = || {
        GmdReceiver::read_log(&inbox)
            .map(|(s, _)| s.len() as u64)
            .unwrap_or(0)
    };
    let restarts = || {
        crate::journal::Journal::read(&ham_journal)
            .unwrap_or_default()
            .iter()
            .filter(|r| r.op == "restart")
            .count() as u32
    };
    let mut s = Summary::default();
    let mut client: Option<Guard> = Some(spawn(&client_args, "client-1", &tx)?);
    stamp(&format!(
        "started the client: {} messages into a file-backed area, one every {} µs",
        opts.messages, opts.pace_us
    ));
    let mut client_killed = false;
    // `queued` lines seen (for the kill point), and the restarted client's next sequence number.
    let mut queued_lines = 0u64;
    let mut next_after_restart = 1u64;
    let mut summaries: Vec<String> = Vec::new();
    let mut kills_done = 0u32;
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        // The clients' lines: count the queued ones, show the others.
        while let Ok((label, line)) = rx.try_recv() {
            if line.starts_with("queued ") {
                queued_lines += 1;
            } else {
                if line.contains(" queued; ") {
                    summaries.push(line.clone());
                }
                if let Some(r) = line.split(" recovered ").nth(1) {
                    s.recovered = number_before(r, " next");
                    next_after_restart = r
                        .split(" next ")
                        .nth(1)
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(1);
                }
                if label == "ham" {
                    stamp(&line);
                } else {
                    stamp(&format!("{label}: {line}"));
                }
            }
        }
        let done = recorded();
        // Kill the server at evenly spread points, and the client once, halfway through.
        let due = opts.messages * u64::from(kills_done + 1) / u64::from(opts.kills + 2);
        if kills_done < opts.kills && done >= due {
            let Some(pid) = owner() else {
                return Err("the GMD server is not running".into());
            };
            if let Ok(w) = ProcessWatch::new(pid) {
                let _ = w.kill();
                w.wait(Some(Duration::from_secs(10)));
            }
            kills_done += 1;
            stamp(&format!(
                "KILLED the GMD server, pid {pid} (kill -9), with {done} messages in its inbox"
            ));
            // Restarted, and serving the name again (a new pid behind it).
            let until = Instant::now() + Duration::from_secs(30);
            while restarts() < kills_done || owner().is_none_or(|p| p == pid) {
                if Instant::now() > until {
                    return Err("the HA manager did not restart the GMD server".into());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            stamp(&format!(
                "the HA manager restarted the GMD server: pid {}",
                owner().unwrap_or(0)
            ));
        }
        if !client_killed && queued_lines >= opts.messages / 2 {
            if let Some(mut c) = client.take() {
                let pid = c.0.id();
                let _ = c.0.kill();
                let _ = c.0.wait();
                stamp(&format!(
                    "KILLED the client, pid {pid} (kill -9), after it queued {queued_lines} messages; the server has {done}"
                ));
            }
            client_killed = true;
            client = Some(spawn(&client_args, "client-2", &tx)?);
            stamp("started the client again, on the same area");
        }
        if let Some(c) = client.as_mut() {
            if client_killed && !matches!(c.0.try_wait(), Ok(None)) {
                break;
            }
        }
        if Instant::now() > end {
            return Err("the demo did not finish in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(client);
    drop(tx);
    while let Ok((label, line)) = rx.recv_timeout(Duration::from_millis(100)) {
        if !line.starts_with("queued ") && label != "ham" {
            if line.contains(" queued; ") {
                summaries.push(line.clone());
            }
            stamp(&format!("{label}: {line}"));
        }
    }
    // Closing its stdin stops the manager, which stops the server.
    stop_manager(ham);
    stamp("stopped the HA manager and the GMD server");
    // The summary, from the inbox.
    s.kills = kills_done;
    s.restarts = restarts();
    let (seen, _) = GmdReceiver::read_log(&inbox).map_err(|e| e.to_string())?;
    s.recorded = seen.len() as u64;
    let mut last = 0u64;
    let mut have = std::collections::BTreeSet::new();
    for r in &seen {
        if r.seq <= last || !have.insert(r.seq) {
            s.disordered += 1;
        }
        last = last.max(r.seq);
    }
    s.lost = (1..=opts.messages).filter(|q| !have.contains(q)).count() as u64;
    for l in &summaries {
        s.duplicates_dropped += number_before(l, " as duplicates");
    }
    // The first run queued everything below the restarted run's first number (its area kept
    // the count, including a message queued just before the kill whose line never came).
    s.queued = next_after_restart.saturating_sub(1)
        + summaries.last().map_or(0, |l| number_before(l, " queued;"));
    s.all_done = summaries.last().is_some_and(|l| l.ends_with("all done"));
    if let Some(d) = &opts.keep_records {
        stamp(&format!(
            "the inbox, the area and the manager's journal are in {} (read them with qsim gmd-log)",
            d.display()
        ));
    }
    Ok(s)
}
