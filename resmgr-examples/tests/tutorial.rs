//! The tutorial (`docs/tutorial.md`) as a newcomer follows it, step by step, with real
//! processes on a system of its own: the greeter (`examples/tutorial_server.rs`) and a plain
//! client; the plain client failing when the server is killed; the HA client
//! (`examples/tutorial_client.rs --ha`) carrying on across a kill and a restart by hand; the
//! same under the HA manager with the tutorial's configuration (`docs/tutorial/ham.toml`),
//! which restarts the server; and `qsim pidin` showing them.
//!
//! The examples' binaries sit next to `qsim` in `target/<profile>/examples/`. A plain `cargo
//! test` builds them, but `cargo test --test tutorial` does not, so the test asks cargo to
//! build them first (a no-op when they are up to date).
//!
//! Every step waits for an event (a line printed, a journal record), never for a time.

use kernel_sim::process::ProcessWatch;
use qsim_tests::{small_limits, Helper, TestSystem, Watchdog};
use resmgr_examples::ham::client;
use resmgr_examples::journal::{Journal, Record};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QSIM: &str = env!("CARGO_BIN_EXE_qsim");

/// The program path the tutorial's configuration names; the test puts the real one there.
const CONFIG_SERVER: &str = "target/release/examples/tutorial_server";

/// Builds the examples of this package for the profile `qsim` was built with, and returns the
/// path of example `name`.
fn example(name: &str) -> PathBuf {
    let dir = Path::new(QSIM).parent().expect("qsim's directory");
    let profile = dir.file_name().and_then(|p| p.to_str()).unwrap_or("debug");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--quiet",
        "-p",
        "resmgr-examples",
        "--examples",
    ]);
    match profile {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    match cargo.output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("cannot run cargo to build the examples: {e}"),
    }
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p resmgr-examples --examples`",
        path.display()
    );
    path
}

/// The test's scratch directory and system. On drop (also when the test fails) it stops the
/// HA manager with its entities, kills whatever process of this system is left (found by the
/// system's name in its command line or environment), and removes the directory; the
/// `TestSystem` then removes the arena.
struct Scene {
    dir: PathBuf,
    ts: TestSystem,
}

impl Scene {
    fn new() -> Scene {
        let ts = TestSystem::new(
            "tutorial",
            kernel_sim::Limits {
                max_processes: 16,
                threads_per_process: 8,
                max_names: 16,
                ..small_limits()
            },
        );
        let dir = std::env::temp_dir().join(&ts.name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scene { dir, ts }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.join(f)
    }

    /// The tutorial's server, started by hand, with `--exit-on-eof` so that it cannot outlive
    /// the test; returns it once it serves, with its pid.
    fn server(&self, bin: &Path) -> (Helper, i32) {
        let h = Helper::spawn_cmd(
            Command::new(bin)
                .args(["--system", &self.ts.name, "--exit-on-eof", "--journal"])
                .arg(self.path("greeter.journal")),
        );
        let words = h.expect("tutorial-server: pid ");
        let pid = words[0].parse().expect("the server's pid");
        assert_eq!(words[1..3], ["serves", "/dev/greeter"], "{words:?}");
        (h, pid)
    }

    /// The tutorial's client with `args`; its stderr goes to `<dir>/<tag>.err`.
    fn client(&self, bin: &Path, tag: &str, args: &[&str]) -> Helper {
        let err = std::fs::File::create(self.path(&format!("{tag}.err"))).expect("stderr file");
        Helper::spawn_cmd(
            Command::new(bin)
                .args(["--system", &self.ts.name])
                .args(args)
                .stderr(Stdio::from(err)),
        )
    }

    fn stderr_of(&self, tag: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{tag}.err"))).unwrap_or_default()
    }

    /// Waits until the HA manager's journal satisfies `pred` (bounded, so that a failure
    /// cannot hang).
    fn wait_journal(&self, what: &str, pred: impl Fn(&[Record]) -> bool) -> Vec<Record> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let r = Journal::read(self.path("ham.journal")).unwrap_or_default();
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < end,
                "the manager's journal never showed {what}: {r:#?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = client::stop_within(&self.ts.sys, "ham", true, Duration::from_millis(100));
        let me = std::process::id() as i32;
        let env_mark = format!("QSIM_SYSTEM={}", self.ts.name);
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let read = |f: &str| {
                    String::from_utf8_lossy(&std::fs::read(p.path().join(f)).unwrap_or_default())
                        .into_owned()
                };
                let ours = read("cmdline").split('\0').any(|a| a == self.ts.name)
                    || read("environ").split('\0').any(|v| v == env_mark);
                if pid != me && ours {
                    if let Ok(w) = ProcessWatch::new(pid) {
                        let _ = w.kill();
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the client's next line, which must be a greeting; returns (greeting number, server
/// pid).
fn greeting(h: &Helper, name: &str) -> (u64, i32) {
    let line = h.line("a greeting");
    let prefix = format!("tutorial-client: Hello, {name}! (greeting ");
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("not a greeting for {name}: {line:?}"));
    let words: Vec<&str> = rest.trim_end_matches(')').split_whitespace().collect();
    match words[..] {
        [n, "from", "server", "pid", pid] => (
            n.parse().expect("greeting number"),
            pid.parse().expect("server pid"),
        ),
        _ => panic!("a greeting of an unexpected shape: {line:?}"),
    }
}

/// Reads the client's next line and checks that it starts with `prefix`.
fn next(h: &Helper, prefix: &str) -> String {
    let line = h.line(prefix);
    assert!(
        line.starts_with(prefix),
        "expected {prefix:?}, got {line:?}"
    );
    line
}

fn kill(pid: i32) {
    let w = ProcessWatch::new(pid).expect("watch the process to kill");
    w.kill().expect("kill -9");
    w.wait(None);
}

#[test]
fn the_tutorial_steps_work_in_order() {
    let _w = Watchdog::new("tutorial", 240);
    let server_bin = example("tutorial_server");
    let client_bin = example("tutorial_client");
    let sc = Scene::new();
    let name = &sc.ts.name;

    // Step 2: run the greeter and a plain client.
    let (mut server, pid1) = sc.server(&server_bin);
    let plain = sc.client(&client_bin, "plain", &["--name", "Ada", "--count", "3"]);
    next(&plain, "tutorial-client: opened /dev/greeter as coid ");
    for n in 1..=3 {
        assert_eq!(greeting(&plain, "Ada"), (n, pid1));
    }
    next(&plain, "tutorial-client: done: 3 greetings, 0 recoveries");
    assert_eq!(plain.wait(), Some(0));

    // A name that is not one word is refused by the server's write handler.
    let bad = sc.client(&client_bin, "bad", &["--name", "Ada Lovelace"]);
    assert_eq!(bad.wait_exit(), Some(1));
    let err = sc.stderr_of("bad");
    assert!(err.contains("write the name: EINVAL"), "{err}");

    // The plain client does not survive its server's death.
    let mut plain = sc.client(&client_bin, "plain-kill", &["--name", "Bob", "--step"]);
    next(&plain, "tutorial-client: opened");
    assert_eq!(greeting(&plain, "Bob"), (1, pid1));
    server.kill();
    plain.say("");
    assert_eq!(plain.wait_exit(), Some(1));
    let err = sc.stderr_of("plain-kill");
    assert!(
        err.contains("read 2: EBADF") || err.contains("read 2: ESRCH"),
        "{err}"
    );
    eprintln!("step 2: greeter pid {pid1} served a plain client; killed, the next read failed");

    // Step 3: the HA client, across a kill and a restart by hand.
    let (mut server, pid2) = sc.server(&server_bin);
    let mut ha = sc.client(&client_bin, "ha", &["--name", "Ada", "--ha", "--step"]);
    next(
        &ha,
        "tutorial-client: opened /dev/greeter as coid 0 (HA-aware)",
    );
    assert_eq!(greeting(&ha, "Ada"), (1, pid2));
    server.kill();
    // The read fails inside ha-lib; the recovery function waits for a new greeter.
    ha.say("");
    let (server3, pid3) = sc.server(&server_bin);
    next(
        &ha,
        "tutorial-client: the greeter was gone; reopened /dev/greeter on coid 0",
    );
    // The new server greets the same name: the recovery gave it again. Its count starts over.
    assert_eq!(greeting(&ha, "Ada"), (1, pid3));
    ha.say("");
    assert_eq!(greeting(&ha, "Ada"), (2, pid3));
    next(&ha, "tutorial-client: done: 3 greetings, 1 recoveries");
    assert_eq!(ha.wait(), Some(0));
    drop(server3);
    eprintln!("step 3: the HA client went from greeter {pid2} to {pid3} with 1 recovery");

    // Step 4: the HA manager supervises the greeter, with the tutorial's configuration.
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tutorial/ham.toml"),
    )
    .expect("docs/tutorial/ham.toml");
    assert!(
        config.contains(CONFIG_SERVER),
        "docs/tutorial/ham.toml no longer names {CONFIG_SERVER}"
    );
    let cfg = sc.path("ham.toml");
    std::fs::write(
        &cfg,
        config.replace(CONFIG_SERVER, &server_bin.display().to_string()),
    )
    .expect("write the configuration");
    let ham = Helper::spawn_cmd(
        Command::new(QSIM)
            .args(["ham", "--system", name, "--config"])
            .arg(&cfg)
            .arg("--journal")
            .arg(sc.path("ham.journal")),
    );
    ham.expect("ham: pid ");
    let r = sc.wait_journal("the greeter's start", |r| {
        r.iter()
            .any(|r| r.op == "start" && r.get("entity") == Some("greeter"))
    });
    let pid_of = |r: &[Record], op: &str| -> i32 {
        r.iter()
            .find(|r| r.op == op && r.get("entity") == Some("greeter"))
            .and_then(|r| r.get("pid")?.parse().ok())
            .unwrap_or_else(|| panic!("no {op} record with a pid: {r:#?}"))
    };
    let pid4 = pid_of(&r, "start");
    let mut ha = sc.client(&client_bin, "ha-ham", &["--name", "Ada", "--ha", "--step"]);
    next(
        &ha,
        "tutorial-client: opened /dev/greeter as coid 0 (HA-aware)",
    );
    assert_eq!(greeting(&ha, "Ada"), (1, pid4));
    kill(pid4);
    // The manager restarts it, and its waitfor action sees the new one attach /dev/greeter.
    let r = sc.wait_journal("the restart and its waitfor", |r| {
        r.iter().any(|r| r.op == "restart") && r.iter().any(|r| r.op == "waitfor")
    });
    let pid5 = pid_of(&r, "restart");
    assert!(r
        .iter()
        .any(|r| r.op == "waitfor" && r.get("ok") == Some("true")));
    let story: Vec<String> = r
        .iter()
        .filter(|r| r.get("entity") == Some("greeter") && r.op != "waitfor")
        .map(|r| match r.get("on") {
            Some(on) => format!("{}:{on}", r.op),
            None => r.op.clone(),
        })
        .collect();
    assert_eq!(
        story,
        [
            "start",
            "death",
            "condition:death",
            "log",
            "restart-scheduled",
            "restart",
            "condition:restart",
        ]
    );
    ha.say("");
    next(
        &ha,
        "tutorial-client: the greeter was gone; reopened /dev/greeter on coid 0",
    );
    assert_eq!(greeting(&ha, "Ada"), (1, pid5));
    ha.say("");
    assert_eq!(greeting(&ha, "Ada"), (2, pid5));
    next(&ha, "tutorial-client: done: 3 greetings, 1 recoveries");
    assert_eq!(ha.wait(), Some(0));
    let st = client::status(&sc.ts.sys, "ham").expect("ham-ctl status");
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0].name.as_str(), st[0].pid, st[0].alive, st[0].restarts),
        ("greeter", pid5, true, 1)
    );
    eprintln!("step 4: the manager restarted greeter {pid4} as {pid5}; the HA client recovered");

    // Step 5: `qsim pidin` shows the manager's name and the greeter's path.
    let out = Command::new(QSIM)
        .args(["pidin", "--system", name])
        .output()
        .expect("qsim pidin");
    assert!(out.status.success());
    let pidin = String::from_utf8_lossy(&out.stdout);
    assert!(
        pidin.contains(&format!("path /dev/greeter -> {pid5}:"))
            && pidin.contains("name /dev/name/local/ham"),
        "{pidin}"
    );

    // The end: stop the manager and its greeter.
    client::stop(&sc.ts.sys, "ham", true).expect("ham-ctl stop");
    assert_eq!(ham.wait(), Some(0));
    let gone = ProcessWatch::new(pid5).map_or(true, |w| w.wait(Some(Duration::from_secs(30))));
    assert!(gone, "the greeter {pid5} outlived its manager's stop");
}
