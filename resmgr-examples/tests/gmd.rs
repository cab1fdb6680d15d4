//! Guaranteed delivery (ha-lib's `gmd`) across real processes: a server down for longer than
//! the delivery timeout (the callback fires; resend and delete both work; the default callback
//! deletes), a server killed with `kill -9` and restarted under a stream of messages (each
//! delivered once, in order), and a client killed and restarted on a file-backed area (nothing
//! it queued is lost). Facts are checked in the server's inbox (its receiver log).

use ha_lib::gmd::{FailureAction, FailureReason, GmdConfig, GmdConn, GmdReceiver, Seen, Target};
use kernel_sim::Errno;
use qsim_tests::{small_limits, Helper, Scratch, TestSystem, Watchdog};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const QSIM: &str = env!("CARGO_BIN_EXE_qsim");

/// Starts `qsim run gmd-server` on `name` with inbox `log` (and `extra` arguments), and waits
/// for its ready line.
fn server(ts: &TestSystem, name: &str, log: &Path, work_us: u64) -> Helper {
    server_with(ts, name, log, work_us, &[])
}

fn server_with(ts: &TestSystem, name: &str, log: &Path, work_us: u64, extra: &[&str]) -> Helper {
    let h = Helper::spawn_cmd(
        Command::new(QSIM)
            .args(["run", "gmd-server", "--system", &ts.name, "--exit-on-eof"])
            .args(["--name", name, "--work-us", &work_us.to_string(), "--log"])
            .arg(log)
            .args(extra),
    );
    assert!(h.line("the server's ready line").contains(" serves "));
    h
}

/// The inbox, with no damage allowed.
fn inbox(log: &Path) -> Vec<Seen> {
    let (seen, damage) = GmdReceiver::read_log(log).unwrap();
    assert!(damage.is_empty(), "inbox damaged: {damage:?}");
    seen
}

fn payloads(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| String::from_utf8_lossy(&s.payload).into_owned())
        .collect()
}

/// Waits (on the condition variable) until `pred` holds for the value.
fn wait_for<T>(m: &(Mutex<T>, Condvar), what: &str, pred: impl Fn(&T) -> bool) {
    let (lock, cv) = m;
    let g = lock.lock().unwrap();
    let (_g, t) = cv
        .wait_timeout_while(g, Duration::from_secs(60), |v| !pred(v))
        .unwrap();
    assert!(!t.timed_out(), "waited 60 s for {what}");
}

/// A failure event as the callback saw it: sequence number, reason, payload, connection.
type Event = (u64, FailureReason, String, String);

#[test]
fn server_down_longer_than_the_timeout_fires_the_callback_and_resend_and_delete_work() {
    let _w = Watchdog::new("gmd down", 120);
    let ts = TestSystem::new("gmd-down", small_limits());
    let dir = Scratch::new("gmd-down");
    let log = dir.path("inbox");
    // The callback: resend the `keep` messages, delete the `drop` one; record every event.
    let events: Arc<(Mutex<Vec<Event>>, Condvar)> = Arc::default();
    let ev = Arc::clone(&events);
    let cfg = GmdConfig::new()
        .sender("down-test")
        .delivery_timeout(Some(Duration::from_millis(30)))
        .retry_interval(Duration::from_millis(2))
        .on_failure(move |f| {
            let text = String::from_utf8_lossy(&f.payload).into_owned();
            let action = if text.starts_with("keep") {
                FailureAction::Resend
            } else {
                FailureAction::Delete
            };
            ev.0.lock()
                .unwrap()
                .push((f.seq, f.reason, text, f.connection.clone()));
            ev.1.notify_all();
            action
        });
    let conn = GmdConn::open(&ts.sys, Target::Name("gmd-down".into()), cfg).unwrap();
    assert_eq!(conn.send(b"keep-1").unwrap(), 1);
    assert_eq!(conn.send(b"drop-2").unwrap(), 2);
    assert_eq!(conn.send(b"keep-3").unwrap(), 3);
    // A message of its own with no delivery timeout: it never fails.
    assert_eq!(conn.send_with_timeout(b"patient-4", None).unwrap(), 4);
    // No server: every timed message fails; the keep ones fail again after each resend.
    wait_for(&events, "two failures of each keep message", |v| {
        [1u64, 3]
            .iter()
            .all(|s| v.iter().filter(|e| e.0 == *s).count() >= 2)
            && v.iter().any(|e| e.0 == 2)
    });
    {
        let v = events.0.lock().unwrap();
        assert_eq!(v.iter().filter(|e| e.0 == 2).count(), 1, "deleted once");
        assert!(v.iter().all(|e| e.0 != 4), "the untimed message failed");
        assert!(v.iter().all(|e| e.3 == "name gmd-down"));
        // The head was attempted: the last error says nobody serves the name.
        assert!(v.iter().any(|e| e.0 == 1
            && e.1
                == FailureReason::Timeout {
                    last_error: Some(Errno::NOENT)
                }));
        assert_eq!(v.iter().find(|e| e.0 == 2).unwrap().2, "drop-2");
    }
    assert_eq!(conn.pending(), [1, 3, 4]);
    // The server comes: what was resent, and the untimed message, arrive once and in order.
    let srv = server(&ts, "gmd-down", &log, 0);
    assert!(conn.wait_idle(Some(Duration::from_secs(60))));
    let c = conn.counters();
    assert_eq!((c.delivered, c.deleted), (3, 1));
    assert!(c.resent >= 4, "{c:?}");
    drop(conn);
    drop(srv);
    assert_eq!(payloads(&inbox(&log)), ["keep-1", "keep-3", "patient-4"]);

    // The default callback warns and deletes.
    let conn = GmdConn::open(
        &ts.sys,
        Target::Name("gmd-nobody".into()),
        GmdConfig::new()
            .delivery_timeout(Some(Duration::from_millis(5)))
            .retry_interval(Duration::from_millis(1)),
    )
    .unwrap();
    conn.send(b"lost").unwrap();
    assert!(conn.wait_idle(Some(Duration::from_secs(60))));
    let c = conn.counters();
    assert_eq!((c.failures, c.deleted, c.delivered), (1, 1, 0));
}

#[test]
fn a_server_killed_and_restarted_under_a_stream_gets_everything_once_in_order() {
    let _w = Watchdog::new("gmd restart", 300);
    let ts = TestSystem::new("gmd-restart", small_limits());
    let dir = Scratch::new("gmd-restart");
    let log = dir.path("inbox");
    // The first server crashes between recording message 100 and acknowledging it: the
    // sender must send it again, and the next server must drop it.
    let crashing = server_with(&ts, "gmd-restart", &log, 100, &["--crash-after", "100"]);
    let conn = GmdConn::open(
        &ts.sys,
        Target::Name("gmd-restart".into()),
        GmdConfig::new()
            .sender("restart-test")
            .delivery_timeout(None)
            .retry_interval(Duration::from_millis(2)),
    )
    .unwrap();
    let total = 3000u64;
    let kills = 6u64;
    let mut next = 1u64;
    while next <= 200 {
        conn.send(format!("m{next}").as_bytes()).unwrap();
        next += 1;
    }
    assert_eq!(crashing.wait_exit(), None, "the server aborted");
    let mut srv = server(&ts, "gmd-restart", &log, 100);
    for k in 1..=kills {
        // Queue a share of the stream (send never blocks), then kill the server once it has
        // acknowledged some of it, while the rest is in flight.
        let upto = total * k / (kills + 1);
        while next <= upto {
            assert_eq!(conn.send(format!("m{next}").as_bytes()).unwrap(), next);
            next += 1;
        }
        let target = conn.counters().delivered + 50;
        while conn.counters().delivered < target && !conn.pending().is_empty() {
            std::thread::yield_now();
        }
        srv.kill();
        srv = server(&ts, "gmd-restart", &log, 100);
    }
    while next <= total {
        conn.send(format!("m{next}").as_bytes()).unwrap();
        next += 1;
    }
    assert!(conn.wait_idle(Some(Duration::from_secs(120))));
    let c = conn.counters();
    drop(conn);
    drop(srv);
    let seen = inbox(&log);
    let seqs: Vec<u64> = seen.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>(), "once each, in order");
    assert!(seen
        .iter()
        .all(|s| s.payload == format!("m{}", s.seq).as_bytes()));
    assert_eq!((c.delivered, c.deleted, c.failures), (total, 0, 0));
    assert!(
        c.duplicates >= 1,
        "message 100 was acknowledged as a duplicate: {c:?}"
    );
    assert!(c.connects > kills + 1, "{c:?}");
    eprintln!(
        "gmd restart: {total} messages, {kills} kills, {} duplicates dropped by the server, {} connects",
        c.duplicates, c.connects
    );
}

#[test]
fn a_client_killed_and_restarted_on_a_file_area_loses_nothing() {
    let _w = Watchdog::new("gmd client restart", 300);
    let ts = TestSystem::new("gmd-client", small_limits());
    let dir = Scratch::new("gmd-client");
    let log = dir.path("inbox");
    let area = dir.path("area");
    // A slow server, so that the client is killed with messages queued and in flight.
    let srv = server(&ts, "gmd-client", &log, 300);
    let client = || {
        Helper::spawn_cmd(
            Command::new(QSIM)
                .args(["run", "gmd-client", "--system", &ts.name, "--exit-on-eof"])
                .args([
                    "--name",
                    "gmd-client",
                    "--count",
                    "2000",
                    "--timeout-ms",
                    "0",
                ])
                .args(["--retry-ms", "2", "--area"])
                .arg(&area),
        )
    };
    let mut first = client();
    let mut queued = BTreeSet::new();
    loop {
        let l = first.line("a queued line");
        if let Some(s) = l.strip_prefix("queued ") {
            queued.insert(s.parse::<u64>().unwrap());
            if queued.len() == 1000 {
                break;
            }
        }
    }
    first.kill();
    let second = client();
    let head = second.expect("gmd-client: sender gmd-client incarnation ");
    // `<incarnation> recovered <n> next <seq>`
    let recovered: u64 = head[2].parse().unwrap();
    let next: u64 = head[4].parse().unwrap();
    assert!(
        next > 1000,
        "the area kept every queued message: next {next}"
    );
    assert!(recovered > 0, "the slow server left messages in the area");
    let mut summary = None;
    while let Some(l) = second.try_expect("") {
        let l = l.join(" ");
        if let Some(s) = l.strip_prefix("queued ") {
            queued.insert(s.parse::<u64>().unwrap());
        } else if l.starts_with("gmd-client: ") {
            summary = Some(l);
        }
    }
    let summary = summary.expect("the client's summary");
    assert!(summary.ends_with("all done"), "{summary}");
    assert_eq!(second.wait_exit(), Some(0));
    drop(srv);
    let seen = inbox(&log);
    let seqs: Vec<u64> = seen.iter().map(|s| s.seq).collect();
    // Every message either run reported queued, and any the first wrote but was killed
    // before reporting: all of 1..=2000, once each, in order, under one incarnation.
    assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
    assert!(queued.iter().all(|q| seqs.binary_search(q).is_ok()));
    assert!(seen
        .iter()
        .all(|s| s.payload == format!("msg-{}", s.seq).as_bytes()));
    assert_eq!(
        seen.iter()
            .map(|s| s.incarnation)
            .collect::<BTreeSet<_>>()
            .len(),
        1
    );
    // The tool says the same.
    let out = Command::new(QSIM)
        .arg("gmd-log")
        .arg(&log)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains(": 2000 messages accepted"), "{out}");
    assert!(out.contains(": last seq 2000"), "{out}");
    eprintln!("gmd client restart: {recovered} recovered from the area; {summary}");
}

#[test]
fn the_gmd_demo_delivers_everything_once_in_order_and_leaves_nothing() {
    let _w = Watchdog::new("gmd demo", 180);
    let scratch = Scratch::new("gmd-demo");
    let child = Command::new(QSIM)
        .args(["gmd-demo", "--messages", "400", "--pace-us", "100"])
        .args(["--work-us", "200", "--keep-records"])
        .arg(&scratch.0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "the demo failed");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the summary"))
    };
    assert_eq!(field("recorded"), 400);
    assert_eq!(field("queued"), 400);
    assert_eq!((field("lost"), field("out of order")), (0, 0));
    assert_eq!(field("server kills"), 2);
    // The summary agrees with the kept inbox.
    let seen = inbox(&scratch.path("inbox"));
    assert_eq!(
        seen.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=400).collect::<Vec<_>>()
    );
    assert!(
        !Path::new(&format!("/dev/shm/qsim-demo-gmd-{pid}")).exists(),
        "the demo removed its arena"
    );
    let tag = format!("qsim-demo-gmd-{pid}");
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&tag),
            "left behind: {:?}",
            p.path()
        );
    }
}
