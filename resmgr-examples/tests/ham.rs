//! The HA manager as a user runs it (`qsim ham` with a configuration file), checked through its
//! journal: order and counts of events, never elapsed time. Entities are real processes killed
//! with `kill -9`.

use kernel_sim::process::ProcessWatch;
use kernel_sim::{pulse_code, Errno, Received};
use qsim_tests::{small_limits, Helper, TestSystem, Watchdog};
use resmgr_examples::ham::{client, Condition};
use resmgr_examples::journal::{Journal, Record};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const QSIM: &str = env!("CARGO_BIN_EXE_qsim");

/// A scratch directory; on drop, stops the manager of `sys` with its entities and kills any
/// process of this test's system that is left, then removes the directory.
struct Scene {
    dir: PathBuf,
    ts: TestSystem,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let dir = std::env::temp_dir().join(format!("qsimtest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ts = TestSystem::new(
            tag,
            kernel_sim::Limits {
                threads_per_process: 8,
                ..small_limits()
            },
        );
        Scene { dir, ts }
    }
    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }
    fn journal(&self) -> PathBuf {
        self.path("ham.journal")
    }

    /// Writes the configuration and starts `qsim ham` on it.
    fn ham(&self, config: &str, extra: &[&str]) -> Helper {
        let cfg = self.path("ham.toml");
        std::fs::write(&cfg, config).unwrap();
        let h = Helper::spawn_cmd(
            Command::new(QSIM)
                .args(["ham", "--system", &self.ts.name, "--config"])
                .arg(&cfg)
                .arg("--journal")
                .arg(self.journal())
                .arg("--state")
                .arg(self.path("ham.state"))
                .args(extra),
        );
        let line = h.line("the manager's ready line");
        assert!(line.contains(" serves "), "{line}");
        h
    }

    /// An echo-server entity's command line (naming this test's system, so the clean-up can
    /// tell its processes from others).
    fn echo_cmd(&self, name: &str) -> String {
        format!(
            r#"["qsim", "run", "echo-server", "--system", "{}", "--name", "{name}"]"#,
            self.ts.name
        )
    }

    /// Waits until the journal satisfies `pred` (bounded, so a failure cannot hang).
    fn wait(&self, what: &str, pred: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let r = Journal::read(self.journal()).unwrap_or_default();
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < end,
                "the journal never showed {what}: {r:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The pid of the `n`th record `op` for `entity` (from 1).
    fn pid_of(&self, op: &str, entity: &str, n: usize) -> i32 {
        let r = self.wait(&format!("{op} #{n} of {entity}"), |r| {
            count(r, op, entity) >= n
        });
        r.iter()
            .filter(|r| r.op == op && r.get("entity") == Some(entity))
            .nth(n - 1)
            .and_then(|r| r.get("pid")?.parse().ok())
            .unwrap()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = client::stop_within(&self.ts.sys, "ham", true, Duration::from_millis(100));
        // Whatever is left of this test's processes (found by their command lines).
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let ours = cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == self.ts.name.as_bytes());
                if pid != std::process::id() as i32 && ours {
                    if let Ok(w) = ProcessWatch::new(pid) {
                        let _ = w.kill();
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn count(r: &[Record], op: &str, entity: &str) -> usize {
    r.iter()
        .filter(|r| r.op == op && r.get("entity") == Some(entity))
        .count()
}

/// The journal's records for `entity`, as `op` or `op:on` words.
fn story(r: &[Record], entity: &str) -> Vec<String> {
    r.iter()
        .filter(|r| r.get("entity") == Some(entity))
        .map(|r| match r.get("on") {
            Some(on) => format!("{}:{on}", r.op),
            None => r.op.clone(),
        })
        .collect()
}

/// Waits until `name` is attached by process `pid` (the incarnation the test means is
/// serving).
fn serving(sys: &kernel_sim::System, name: &str, pid: i32) {
    let path = format!("{}{name}", kernel_sim::NAME_PREFIX);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = sys.path_wait(&path, Some(Duration::from_secs(1)));
        if sys
            .path_resolve(&path)
            .is_ok_and(|t| t.first().is_some_and(|t| t.pid == pid))
        {
            return;
        }
        assert!(Instant::now() < end, "{name} never served by {pid}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn kill(pid: i32) {
    let w = ProcessWatch::new(pid).unwrap();
    w.kill().unwrap();
    w.wait(None);
}

#[test]
fn restarts_wait_out_their_backoff_and_stop_at_the_limit() {
    let _w = Watchdog::new("ham_restart_limit", 120);
    let sc = Scene::new("ham-restart");
    let cfg = format!(
        r#"
        [[entity]]
        name = "echo"
        command = {}
        restart = {{ limit = 2, backoff_ms = 10, backoff_max_ms = 1000 }}
        [[entity.action]]
        on = "death"
        log = "echo died"
        [[entity.action]]
        on = "restart"
        waitfor = "echo"
        waitfor_ms = 10000
        "#,
        sc.echo_cmd("echo")
    );
    let _ham = sc.ham(&cfg, &[]);
    // Each incarnation is killed once it serves (so each restart's waitfor sees its name).
    for (op, n) in [("start", 1), ("restart", 1), ("restart", 2)] {
        let pid = sc.pid_of(op, "echo", n);
        serving(&sc.ts.sys, "echo", pid);
        kill(pid);
    }
    let r = sc.wait("the restart limit", |r| {
        count(r, "restart-limit", "echo") == 1
    });
    // The waitfor records come from threads of their own: leave them out of the order.
    let s: Vec<String> = story(&r, "echo")
        .into_iter()
        .filter(|w| w != "waitfor")
        .collect();
    assert_eq!(
        s,
        [
            "start",
            "death",
            "condition:death",
            "log",
            "restart-scheduled",
            "restart",
            "condition:restart",
            "death",
            "condition:death",
            "log",
            "restart-scheduled",
            "restart",
            "condition:restart",
            "death",
            "condition:death",
            "log",
            "restart-limit",
        ]
    );
    let backoffs: Vec<&str> = r
        .iter()
        .filter(|r| r.op == "restart-scheduled")
        .filter_map(|r| r.get("backoff_ms"))
        .collect();
    assert_eq!(backoffs, ["10", "20"]);
    let st = client::status(&sc.ts.sys, "ham").unwrap();
    assert_eq!(
        (st[0].restarts, st[0].alive, st[0].gave_up),
        (2, false, true)
    );
    // Each restart's waitfor saw the name come back.
    let r = sc.wait("two waitfors", |r| count(r, "waitfor", "echo") == 2);
    assert!(r
        .iter()
        .filter(|r| r.op == "waitfor")
        .all(|r| r.get("ok") == Some("true")));
}

#[test]
fn the_guardian_takes_over_without_losing_the_entities() {
    let _w = Watchdog::new("ham_guardian", 120);
    let sc = Scene::new("ham-guardian");
    let cfg = format!(
        r#"
        [[entity]]
        name = "echo"
        command = {}
        restart = {{ limit = 5, backoff_ms = 10 }}
        "#,
        sc.echo_cmd("echo")
    );
    let mut ham = sc.ham(&cfg, &["--guardian"]);
    let first = sc.pid_of("start", "echo", 1);
    sc.wait("the guardian", |r| r.iter().any(|r| r.op == "guardian"));
    // A self-attached entity too: it must carry on with the new manager.
    let mut hb = Helper::spawn_cmd(Command::new(QSIM).args([
        "run",
        "heartbeat",
        "--system",
        &sc.ts.name,
        "--name",
        "beater",
        "--period-ms",
        "20",
        "--low",
        "100",
        "--high",
        "200",
    ]));
    hb.expect("heartbeat: pid");
    ham.kill();
    let r = sc.wait("the takeover and the re-attach", |r| {
        r.iter().any(|r| r.op == "takeover") && count(r, "reattach", "beater") == 1
    });
    // The running entity was adopted, not restarted.
    assert!(r
        .iter()
        .any(|r| r.op == "adopt" && r.get("pid") == Some(&first.to_string()[..])));
    assert_eq!(count(&r, "restart", "echo"), 0);
    // The new manager supervises it: killed, it is restarted, and counted.
    kill(first);
    sc.pid_of("restart", "echo", 1);
    let st = client::status(&sc.ts.sys, "ham").unwrap();
    let echo = st.iter().find(|e| e.name == "echo").unwrap();
    assert_eq!((echo.restarts, echo.alive), (1, true));
    let beater = st.iter().find(|e| e.name == "beater").unwrap();
    assert!(beater.alive);
    // And it has a guardian of its own.
    sc.wait("a second guardian", |r| {
        r.iter().filter(|r| r.op == "guardian").count() == 2
    });
    hb.kill();
}

#[test]
fn heartbeats_missed_raise_low_then_high_and_a_detach_is_not_a_death() {
    let _w = Watchdog::new("ham_heartbeat", 120);
    let sc = Scene::new("ham-heartbeat");
    let cfg = r#"
        tick_ms = 5
        [[entity]]
        name = "quiet"
        [[entity.action]]
        on = "heartbeat-high"
        log = "quiet is stuck"
        "#;
    let _ham = sc.ham(cfg, &[]);
    let spawn = |name: &str, extra: &[&str]| {
        let h = Helper::spawn_cmd(
            Command::new(QSIM)
                .args(["run", "heartbeat", "--system", &sc.ts.name, "--name", name])
                .args(["--period-ms", "10", "--low", "2", "--high", "4"])
                .args(extra),
        );
        h.expect("heartbeat: pid");
        h
    };
    let mut quiet = spawn("quiet", &["--beats", "3"]);
    let r = sc.wait("both heartbeat conditions and the log", |r| {
        count(r, "heartbeat-missed", "quiet") == 2 && count(r, "log", "quiet") == 1
    });
    let s = story(&r, "quiet");
    let low = s
        .iter()
        .position(|w| w == "condition:heartbeat-low")
        .unwrap();
    let high = s
        .iter()
        .position(|w| w == "condition:heartbeat-high")
        .unwrap();
    assert!(low < high, "{s:?}");
    assert_eq!(s[high + 1], "log");
    assert_eq!(s[0..2], ["attach", "condition:attach"]);
    // Killed, it is a death.
    quiet.kill();
    sc.wait("quiet's death", |r| count(r, "death", "quiet") == 1);
    // A clean detach is not.
    let polite = spawn("polite", &["--beats", "2", "--detach"]);
    assert_eq!(polite.wait_exit(), Some(0));
    let r = sc.wait("polite's detach", |r| count(r, "detach", "polite") == 1);
    assert_eq!(count(&r, "death", "polite"), 0);
}

#[test]
fn a_client_registered_for_notification_gets_its_pulse_on_the_death() {
    let _w = Watchdog::new("ham_notify", 120);
    let sc = Scene::new("ham-notify");
    let cfg = format!(
        "[[entity]]\nname = \"echo\"\ncommand = {}\n",
        sc.echo_cmd("echo")
    );
    let _ham = sc.ham(&cfg, &[]);
    let sys = &sc.ts.sys;
    let chid = sys.channel_create(0).unwrap();
    client::notify(sys, "ham", "echo", Condition::Death, chid, 7, 42).unwrap();
    assert_eq!(
        client::notify(sys, "ham", "nobody", Condition::Death, chid, 7, 42),
        Err(Errno::NOENT)
    );
    // A client cannot fake the manager's own pulses (a stop, a death): they are ignored.
    let c = sys.name_open("ham").unwrap();
    for code in 1..=5 {
        sys.msg_send_pulse(c, -1, code, 0).unwrap();
    }
    sys.name_close(c).unwrap();
    assert!(client::status(sys, "ham").unwrap()[0].alive);
    kill(sc.pid_of("start", "echo", 1));
    let mut buf = [0u8; 32];
    loop {
        match sys.msg_receive(chid, &mut buf).unwrap() {
            Received::Pulse(p) if p.code == 7 => {
                assert_eq!(p.value, 42);
                break;
            }
            Received::Pulse(p) if p.code < 0 && p.code != pulse_code::UNBLOCK => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    // No restart configured: it stays dead.
    let st = client::status(sys, "ham").unwrap();
    assert!(!st[0].alive);
}

#[test]
fn a_bad_configuration_is_refused_with_a_clear_message() {
    let sc = Scene::new("ham-badcfg");
    let cfg = sc.path("bad.toml");
    std::fs::write(&cfg, "[[entity]]\nname = \"a/b\"\n").unwrap();
    let out = Command::new(QSIM)
        .args(["ham", "--system", &sc.ts.name, "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad entity name"), "{err}");
    // A second manager with the same name is refused too.
    let _ham = sc.ham("", &[]);
    let out = Command::new(QSIM)
        .args(["ham", "--system", &sc.ts.name])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("EEXIST"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_killed_guardian_is_replaced_and_a_failed_start_counts_as_a_death() {
    let _w = Watchdog::new("ham_guardian_lost", 120);
    let sc = Scene::new("ham-guard-lost");
    let cfg = r#"
        [[entity]]
        name = "nothere"
        command = ["/nonexistent/program"]
        restart = { limit = 2, backoff_ms = 5 }
        "#;
    let _ham = sc.ham(cfg, &["--guardian"]);
    let r = sc.wait("the guardian", |r| r.iter().any(|r| r.op == "guardian"));
    let g: i32 = r
        .iter()
        .find(|r| r.op == "guardian")
        .and_then(|r| r.get("pid")?.parse().ok())
        .unwrap();
    kill(g);
    sc.wait("a new guardian", |r| {
        r.iter().any(|r| r.op == "guardian-lost")
            && r.iter().filter(|r| r.op == "guardian").count() == 2
    });
    // The program that cannot start: a death at birth, restarted up to the limit, given up.
    let r = sc.wait("the restart limit", |r| {
        count(r, "restart-limit", "nothere") == 1
    });
    let s = story(&r, "nothere");
    assert_eq!(s[0..2], ["start-failed", "condition:death"]);
    assert_eq!(count(&r, "restart-failed", "nothere"), 2);
    // Values with spaces stay one field.
    let failed = r.iter().find(|r| r.op == "start-failed").unwrap();
    assert!(!failed.get("error").unwrap().contains(' '));
}
