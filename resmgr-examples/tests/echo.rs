//! The examples as a newcomer runs them: `echo-server` and `echo-client` as two processes, and
//! the `qsim` demo, which must exit 0 and leave nothing behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the child on drop.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the system on drop.
struct Remove(String);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.0);
    }
}

#[test]
fn echo_server_and_echo_client_talk_as_two_processes() {
    let name = format!("qsimtest-echo-{}", std::process::id());
    let _r = Remove(name.clone());
    let journal = std::env::temp_dir().join(format!("{name}.journal"));
    let _j = RemoveFile(journal.clone());
    let mut server = Guard(
        Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .args(["--system", &name, "--name", "echo-test", "--journal"])
            .arg(&journal)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.contains("serves /dev/name/local/echo-test"),
        "{first}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_echo-client"))
        .args([
            "--system",
            &name,
            "--name",
            "echo-test",
            "--count",
            "100",
            "--stop",
            "ping",
            "pong",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sent \"ping\", got \"ping\" back"));
    assert!(text.contains("100 more 8-byte messages, 0 wrong replies"));
    let last = lines.next().unwrap().unwrap();
    assert!(last.contains("stopping after 102 messages"), "{last}");
    assert!(server.0.wait().unwrap().success());
    // The server's own record: every numbered request exactly once, in order.
    let records = resmgr_examples::journal::Journal::read(&journal).unwrap();
    let ids: Vec<&str> = records.iter().filter_map(|r| r.get("id")).collect();
    assert_eq!(ids.len(), 102);
    assert_eq!(&ids[..2], ["-", "-"]);
    let numbered: Vec<String> = (0..100).map(|i| i.to_string()).collect();
    assert_eq!(
        ids[2..],
        numbered.iter().map(String::as_str).collect::<Vec<_>>()
    );
}

/// Removes a file on drop.
struct RemoveFile(std::path::PathBuf);
impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn an_echo_client_without_a_system_says_what_to_do() {
    let name = format!("qsimtest-echo-none-{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_echo-client"))
        .args(["--system", &name, "--wait", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains("start echo-server first"),
        "{err}"
    );
}

#[test]
fn the_demo_exits_zero_its_summary_matches_the_servers_records_and_it_leaves_nothing() {
    let scratch = qsim_tests::Scratch::new("demo");
    let dir = scratch.0.clone();
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_qsim"))
            .args([
                "demo",
                "--kills",
                "2",
                "--requests",
                "400",
                "--pace-us",
                "200",
            ])
            .arg("--keep-records")
            .arg(&dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let out = child.0.stdout.take().unwrap();
    let text: Vec<String> = BufReader::new(out).lines().map_while(Result::ok).collect();
    let status = child.0.wait().unwrap();
    println!("{}", text.join("\n"));
    assert!(status.success());
    let value = |key: &str| -> u64 {
        let l = text
            .iter()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} line"));
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(value("kills"), 2);
    assert_eq!(value("sent"), 800);
    assert_eq!(value("lost"), 0);
    // The summary is the servers' records: recompute it from the journal.
    let records = resmgr_examples::journal::Journal::read(dir.join("echo.journal")).unwrap();
    let mut ids: Vec<u32> = records
        .iter()
        .filter(|r| r.op == "echo")
        .filter_map(|r| r.get("id")?.parse().ok())
        .collect();
    let all = ids.len() as u64;
    ids.sort();
    ids.dedup();
    assert_eq!(value("completed"), ids.len() as u64);
    assert_eq!(value("duplicated"), all - ids.len() as u64);
    for base in [1_000_000u32, 2_000_000] {
        assert!((base..base + 400).all(|id| ids.binary_search(&id).is_ok()));
    }
    let restarts = resmgr_examples::journal::Journal::read(dir.join("ham.journal"))
        .unwrap()
        .iter()
        .filter(|r| r.op == "restart")
        .count();
    assert_eq!(restarts, 2);
    assert!(
        !std::path::Path::new(&format!("/dev/shm/qsim-demo-{pid}")).exists(),
        "the demo removed its arena"
    );
    // And no process of the demo's system is left.
    let tag = format!("qsim-demo-{pid}");
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&tag),
            "left behind: {:?}",
            p.path()
        );
    }
}

#[test]
fn qsim_pidin_shows_a_server_receive_blocked_and_its_name() {
    let name = format!("qsimtest-pidin-{}", std::process::id());
    let _r = Remove(name.clone());
    let mut server = Guard(
        Command::new(env!("CARGO_BIN_EXE_echo-server"))
            .args(["--system", &name, "--name", "shown"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    let _ready = lines.next().unwrap().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_qsim"))
        .args(["pidin", "--system", &name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success());
    let pid = server.0.id().to_string();
    assert!(
        text.lines()
            .any(|l| l.contains(&pid) && l.contains("RECEIVE")),
        "the server's thread is RECEIVE-blocked"
    );
    assert!(text.contains(&format!("/dev/name/local/shown -> {pid}:1")));
}

#[test]
fn qsim_pidin_shows_a_client_reply_blocked_on_a_server_stopped_in_its_handler() {
    let name = format!("qsimtest-pidin-reply-{}", std::process::id());
    let _r = Remove(name.clone());
    let mut server = Guard(
        Command::new(env!("CARGO_BIN_EXE_qsim"))
            .args(["run", "echo-server", "--system", &name, "--name", "held"])
            .args(["--hold-after", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(server.0.stdout.take().unwrap()).lines();
    let _ready = lines.next().unwrap().unwrap();
    let client = Guard(
        Command::new(env!("CARGO_BIN_EXE_echo-client"))
            .args(["--system", &name, "--name", "held", "stuck"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The server says when it holds the request in its handler.
    let held = lines.next().unwrap().unwrap();
    assert!(held.contains("holding a request"), "{held}");
    let out = Command::new(env!("CARGO_BIN_EXE_qsim"))
        .args(["pidin", "--system", &name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success());
    let (spid, cpid) = (server.0.id().to_string(), client.0.id().to_string());
    let row = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&cpid[..]))
        .expect("the client's row");
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(words[3], "REPLY", "{row}");
    assert_eq!(words[4], format!("{spid}:1"), "{row}");
}
