//! `qsim chaos` as a user runs it: random kills of servers and clients while HA clients work,
//! and a JSON report computed from the records. Nothing may fail, be lost, hang or leak; the
//! run leaves no arena and no process behind.

use std::process::Command;

/// Runs `qsim chaos ... --json`: (success, stdout, pid).
fn run(args: &[&str]) -> (bool, String, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_qsim"))
        .arg("chaos")
        .args(args)
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        pid,
    )
}

fn field(json: &str, key: &str) -> u64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 3..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn chaos_with_server_and_client_kills_loses_nothing_and_leaves_nothing() {
    let (ok, json, pid) = run(&[
        "--kills",
        "30",
        "--clients",
        "3",
        "--kill-clients",
        "--seed",
        "12345",
    ]);
    // Only one JSON object on stdout.
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(json.trim().starts_with('{') && json.trim().ends_with('}'));
    for key in ["failed", "lost", "hung", "leaked"] {
        assert_eq!(field(&json, key), 0, "{key} in {json}");
    }
    assert_eq!(field(&json, "kills"), 30);
    assert!(field(&json, "completed") > 0);
    assert!(field(&json, "sent") >= field(&json, "completed"));
    assert!(ok, "{json}");
    // The run's system is gone and none of its processes is left.
    let tag = format!("qsim-chaos-{pid}");
    assert!(!std::path::Path::new(&format!("/dev/shm/{tag}")).exists());
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let ours = cmdline.split(|&b| b == 0).any(|a| a == tag.as_bytes());
        assert!(!ours, "left behind: {:?}", p.path());
    }
}
