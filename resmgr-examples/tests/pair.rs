//! A process pair under load: the primary is killed with `kill -9` again and again while an HA
//! client sends numbered updates; the backup takes over each time with the last checkpoint and
//! starts a new backup; the client recovers through the ordinary HA covers. No acknowledged
//! update is lost and none is applied twice: the pair's total is checked against what the client
//! was told.

use ha_lib::Ha;
use kernel_sim::process::ProcessWatch;
use kernel_sim::{Limits, NAME_PREFIX};
use qsim_tests::{small_limits, Helper, TestSystem, Watchdog};
use resmgr_examples::examples::pair;
use std::process::Command;
use std::time::{Duration, Instant};

/// Kills, on drop, every process started for system `name` (found by `QSIM_SYSTEM=<name>` in
/// its environment or `<name>` among its arguments).
struct KillAll(String);
impl Drop for KillAll {
    fn drop(&mut self) {
        let env = format!("QSIM_SYSTEM={}", self.0);
        for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let has = |file: &str, what: &[u8]| {
                std::fs::read(p.path().join(file))
                    .unwrap_or_default()
                    .split(|&b| b == 0)
                    .any(|a| a == what)
            };
            if has("environ", env.as_bytes()) || has("cmdline", self.0.as_bytes()) {
                if let Ok(w) = ProcessWatch::new(pid) {
                    let _ = w.kill();
                }
            }
        }
    }
}

fn owner(sys: &kernel_sim::System, name: &str) -> Option<i32> {
    sys.path_resolve(&format!("{NAME_PREFIX}{name}"))
        .ok()?
        .first()
        .map(|t| t.pid)
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < end, "never: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_killed_primary_is_replaced_by_its_backup_without_losing_acknowledged_updates() {
    let _w = Watchdog::new("process_pair", 120);
    let ts = TestSystem::new(
        "pair",
        Limits {
            threads_per_process: 8,
            ..small_limits()
        },
    );
    let _killall = KillAll(ts.name.clone());
    let sys = &ts.sys;
    let first = Helper::spawn_cmd(
        Command::new(env!("CARGO_BIN_EXE_qsim"))
            .args(["run", "pair", "--system", &ts.name, "--name", "acct"]),
    );
    assert!(first.line("the primary").contains("primary: pid"));
    wait_until("a backup", || owner(sys, "acct.backup").is_some());
    // The example's HA client (a name_open coid recovered with Ha::name_reopen), given a
    // generous wait for each takeover; it checks every reply against the total it expects.
    Ha::install(sys)
        .unwrap()
        .set_wait_budget(Duration::from_secs(30));
    let total = 6000u32;
    let report = std::thread::scope(|s| {
        let sender = s.spawn(|| pair::client(sys, "acct", total, Duration::ZERO, &|_| {}));
        for _ in 0..3 {
            // Kill the primary once it has a backup; wait for the takeover and a new backup.
            wait_until("a backup", || owner(sys, "acct.backup").is_some());
            let p = owner(sys, "acct").unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let w = ProcessWatch::new(p).unwrap();
            w.kill().unwrap();
            w.wait(Some(Duration::from_secs(10)));
            wait_until("the takeover", || {
                owner(sys, "acct").is_some_and(|q| q != p)
            });
        }
        sender.join().unwrap()
    })
    .unwrap_or_else(|e| panic!("the client failed: {e}"));
    assert_eq!(report.acked, total);
    assert_eq!(report.sum, (1..=i64::from(total)).sum::<i64>());
    assert_eq!(
        report.total, report.sum,
        "the pair's total against the client's"
    );
    assert!(report.recoveries >= 3, "{report:?}");
    drop(first);
}
