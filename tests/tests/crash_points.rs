//! A survivable arena, proven at every write: a helper process runs a scripted scenario and kills
//! itself (SIGKILL) just before its n-th arena write, for every n the scenario makes; after each
//! crash the survivor checks that its calls returned with allowed errors, that the dead process's
//! objects were all released, and that the system still works. The same sweep is then run over
//! the writes of a cleaner that dies while cleaning up after an earlier death: the cleanup it
//! left half done must be finished by the next process.

use kernel_sim::sync::atomic::{AtomicU64, Ordering};
use kernel_sim::{Errno, Limits, Pid, Received, SystemBuilder};
use qsim_tests::{reply_for, Helper, Watchdog, PREFIX};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const HELPER: &str = env!("CARGO_BIN_EXE_kt-helper");

struct Remove(String);
impl Drop for Remove {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.0);
    }
}

fn limits() -> Limits {
    Limits {
        max_processes: 6,
        threads_per_process: 3,
        max_channels: 8,
        max_coids: 8,
        max_msg_size: 256,
        max_pulses: 16,
        max_names: 4,
    }
}

/// Serves the survivor's channel until told to stop; counts replies that failed with anything
/// but ESRCH (a client that died) as violations.
fn serve(
    sys: kernel_sim::System,
    chid: kernel_sim::Chid,
    stop: Arc<AtomicBool>,
    bad: Arc<AtomicU64>,
) {
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        match sys.msg_receive_timeout(chid, &mut buf, Duration::from_millis(20)) {
            Ok(Received::Message { rcvid, info }) => {
                let r = sys.msg_reply(rcvid, 0, &reply_for(&buf[..info.msglen as usize]));
                if !matches!(r, Ok(()) | Err(Errno::SRCH)) {
                    eprintln!("reply gave {r:?}");
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Received::Pulse(_)) | Err(Errno::TIMEDOUT) => {}
            Err(e) => {
                eprintln!("receive gave {e:?}");
                bad.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Checks that only the survivor's own objects are left, and that it still works.
fn check_clean(sys: &kernel_sim::System, what: &str) {
    let snap = sys.snapshot();
    let c = snap.counts;
    assert_eq!(
        c.processes, 1,
        "{what}: a dead process is still registered\n{snap}"
    );
    assert_eq!(c.channels, 1, "{what}: a channel leaked\n{snap}");
    assert_eq!(c.connections, 0, "{what}: a connection leaked\n{snap}");
    assert_eq!(c.names, 0, "{what}: a name leaked\n{snap}");
    assert_eq!(c.pulses, 0, "{what}: a pulse leaked\n{snap}");
    assert!(c.threads <= 2, "{what}: a thread slot leaked\n{snap}");
}

fn survivor(tag: &str) -> (kernel_sim::System, Remove, kernel_sim::Chid) {
    let name = format!("{PREFIX}{tag}-{}", std::process::id());
    let _ = kernel_sim::remove_system(&name);
    // No watcher: the test itself decides when the survivor cleans up (clean_up_after).
    let sys = SystemBuilder::new()
        .name(&name)
        .limits(limits())
        .lock_poll(Duration::from_millis(1))
        .watcher(false)
        .create()
        .unwrap();
    let chid = sys.channel_create(0).unwrap();
    (sys, Remove(name), chid)
}

#[test]
fn a_process_killed_at_any_arena_write_leaves_a_usable_arena() {
    let _w = Watchdog::new("crash_sweep", 600);
    let (sys, remove, chid) = survivor("crashsweep");
    let name = remove.0.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let server = {
        let (s, stop, bad) = (sys.clone(), stop.clone(), bad.clone());
        std::thread::spawn(move || serve(s, chid, stop, bad))
    };
    let (me, chid_s) = (sys.pid().0.to_string(), chid.0.to_string());
    // Count the scenario's writes.
    let h = Helper::spawn(HELPER, &["crash-scenario", &name, &me, &chid_s, "0"]);
    let total: u64 = h.expect("WRITES ")[0].parse().unwrap();
    assert_eq!(h.wait_exit(), Some(0));
    check_clean(&sys, "after a clean run");
    println!("the scenario makes {total} arena writes; crashing at each");
    // A few past the counted total: another run may make a few more writes.
    for n in 1..=total + 8 {
        let h = Helper::spawn(
            HELPER,
            &["crash-scenario", &name, &me, &chid_s, &n.to_string()],
        );
        let pid = h.pid;
        // The count varies a little from run to run (a waiter that sleeps writes its waiters
        // bit), so a run may end before write n: then it says how many it made.
        let finished = h.try_expect("WRITES ");
        let code = h.wait_exit();
        match finished {
            Some(v) => assert!(
                v[0].parse::<u64>().unwrap() < n,
                "write {n}: it lived past its crash point"
            ),
            None => assert_eq!(code, None, "write {n}: the helper should have been killed"),
        }
        sys.clean_up_after(Pid(pid));
        check_clean(&sys, &format!("crash at write {n} of {total}"));
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "a survivor's call failed with a disallowed error"
    );
    println!("{total} crash points, each left a clean, working arena");
}

#[test]
fn a_cleaner_killed_at_any_write_leaves_a_cleanup_the_next_process_finishes() {
    let _w = Watchdog::new("cleaner_sweep", 600);
    let (sys, remove, chid) = survivor("cleansweep");
    let name = remove.0.clone();
    let (me, chid_s) = (sys.pid().0.to_string(), chid.0.to_string());
    let mut n = 0u64;
    let mut total = u64::MAX;
    while n <= total {
        let mut victim = Helper::spawn(HELPER, &["victim", &name, &me, &chid_s]);
        victim.expect("READY ");
        let vpid = victim.pid;
        victim.kill();
        let cleaner = Helper::spawn(
            HELPER,
            &["cleaner", &name, &vpid.to_string(), &n.to_string()],
        );
        let cpid = cleaner.pid;
        if n == 0 {
            let v = cleaner.expect("CLEANED ");
            assert_eq!(v[0], "true");
            total = v[2].parse().unwrap();
            println!("a cleanup makes {total} arena writes; crashing the cleaner at each");
            assert_eq!(cleaner.wait_exit(), Some(0));
        } else if let Some(v) = cleaner.try_expect("CLEANED ") {
            assert!(
                v[2].parse::<u64>().unwrap() < n,
                "cleaner write {n}: it lived past its crash point"
            );
        } else {
            assert_eq!(
                cleaner.wait_exit(),
                None,
                "cleaner write {n}: it should have been killed"
            );
        }
        // The survivor finishes whatever the dead cleaner left, and cleans up after it too.
        sys.clean_up_after(Pid(vpid));
        sys.clean_up_after(Pid(cpid));
        // The pulse the victim queued to itself, and DISCONNECTs, died with its channel; ours
        // has no DISCONNECT flag, so nothing is queued for us.
        check_clean(&sys, &format!("cleaner killed at write {n} of {total}"));
        n += 1;
    }
}
