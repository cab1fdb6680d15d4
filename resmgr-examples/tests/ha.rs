//! ha-lib across real process deaths: servers are `kill -9`ed and restarted while HA clients
//! send, and every request completes; the cases where recovery is not possible return the
//! original error; threads share one recovery; the retry policy rides out a full send queue.
//! Facts are checked on the server side too (the echo server's journal).

use ha_lib::{Ha, HaCtrl, Limit, RetryPolicy, REPLACE_RECOVERY_FN};
use kernel_sim::{iomsg, Chid, Coid, Errno, Limits, Pid, Received, System};
use qsim_tests::{small_limits, Helper, Scratch, TestSystem, Watchdog};
use resmgr_examples::journal::Journal;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const QSIM: &str = env!("CARGO_BIN_EXE_qsim");

fn limits() -> Limits {
    Limits {
        threads_per_process: 8,
        ..small_limits()
    }
}

/// A file removed on drop.
struct TempFile(PathBuf);
impl TempFile {
    fn new(tag: &str) -> TempFile {
        let p = std::env::temp_dir().join(format!("qsimtest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TempFile(p)
    }
}
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `qsim run file-server` over `root` (journaling to `journal` if given); waits until ready.
fn file_server(ts: &TestSystem, root: &std::path::Path, journal: Option<&PathBuf>) -> Helper {
    let mut cmd = Command::new(QSIM);
    cmd.args(["run", "file-server", "--system", &ts.name, "--exit-on-eof"])
        .arg("--root")
        .arg(root);
    if let Some(j) = journal {
        cmd.arg("--journal").arg(j);
    }
    let h = Helper::spawn_cmd(&mut cmd);
    assert!(h.line("file server ready").contains(" serves "));
    h
}

/// `qsim run echo-server` on `name`, journaling to `journal`; waits for its ready line.
fn echo_server(ts: &TestSystem, name: &str, journal: &TempFile, extra: &[&str]) -> Helper {
    let h = Helper::spawn_cmd(
        Command::new(QSIM)
            .args(["run", "echo-server", "--system", &ts.name, "--name", name])
            .args(["--exit-on-eof", "--journal"])
            .arg(&journal.0)
            .args(extra),
    );
    let line = h.line("the echo server's ready line");
    assert!(line.contains(" serves "), "{line}");
    h
}

/// An echo request with id `id` (type above `_IO_MAX`, id at bytes 4..8).
fn req(id: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..2].copy_from_slice(&resmgr_examples::echo::ECHO_MSG_TYPE.to_le_bytes());
    m[4..].copy_from_slice(&id.to_le_bytes());
    m
}

/// The ids the journal shows the server echoed.
fn echoed_ids(journal: &TempFile) -> Vec<u32> {
    Journal::read(&journal.0)
        .unwrap_or_default()
        .iter()
        .filter(|r| r.op == "echo")
        .filter_map(|r| r.get("id")?.parse().ok())
        .collect()
}

/// Installs ha-lib and opens `name` as an HA coid whose recovery re-opens the name.
fn ha_name_coid(sys: &System, name: &str) -> (Ha, Coid) {
    let ha = Ha::install(sys).unwrap();
    ha.set_wait_budget(Duration::from_secs(60));
    let coid = sys
        .name_wait_open(name, Some(Duration::from_secs(30)))
        .unwrap();
    ha.attach(
        coid,
        |ha: &Ha, c: Coid, name: &String| ha.name_reopen(c, name),
        name.to_owned(),
        0,
    )
    .unwrap();
    assert!(ha.is_ha(coid));
    (ha, coid)
}

#[test]
fn every_send_variant_recovers_across_kill_and_restart() {
    let _w = Watchdog::new("every_send_variant", 120);
    let ts = TestSystem::new("ha-variants", limits());
    let j = TempFile::new("ha-variants.journal");
    let mut srv = echo_server(&ts, "ha-echo", &j, &[]);
    let sys = &ts.sys;
    let (ha, coid) = ha_name_coid(sys, "ha-echo");
    type Variant = fn(&System, Coid, u32) -> Result<i32, Errno>;
    let variants: [(&str, Variant); 6] = [
        ("msg_send", |s, c, id| {
            s.msg_send(c, &req(id), &mut [0u8; 8])
        }),
        ("msg_sendv", |s, c, id| {
            let r = req(id);
            s.msg_sendv(c, &[&r[..4], &r[4..]], &mut [&mut [0u8; 3], &mut [0u8; 5]])
        }),
        ("msg_sendsv", |s, c, id| {
            s.msg_sendsv(c, &req(id), &mut [&mut [0u8; 4], &mut [0u8; 4]])
        }),
        ("msg_sendvs", |s, c, id| {
            let r = req(id);
            s.msg_sendvs(c, &[&r[..2], &r[2..]], &mut [0u8; 8])
        }),
        ("msg_send_timeout", |s, c, id| {
            s.msg_send_timeout(c, &req(id), &mut [0u8; 8], Duration::from_secs(60))
        }),
        ("timer_timeout", |s, c, id| {
            s.timer_timeout(
                kernel_sim::timeout::SEND | kernel_sim::timeout::REPLY,
                Some(Duration::from_secs(60)),
            )?;
            s.msg_send(c, &req(id), &mut [0u8; 8])
        }),
    ];
    for (i, (what, send)) in variants.iter().enumerate() {
        let id = 100 + i as u32;
        srv.kill();
        srv = echo_server(&ts, "ha-echo", &j, &[]);
        assert_eq!(send(sys, coid, id), Ok(8), "{what}");
        assert_eq!(
            ha.counters(coid).unwrap().recoveries,
            i as u64 + 1,
            "{what}"
        );
    }
    // A pulse on the broken coid: recovered and delivered (the stop pulse ends the server).
    srv.kill();
    srv = echo_server(&ts, "ha-echo", &j, &[]);
    ha.msg_send_pulse(coid, -1, resmgr_examples::echo::STOP_PULSE, 0)
        .unwrap();
    srv.expect("echo-server: stopping after 0 messages");
    let c = ha.counters(coid).unwrap();
    assert_eq!((c.recoveries, c.retransmissions), (7, 7));
    // The servers' side: each request executed (once here: each was sent after the kill).
    assert_eq!(echoed_ids(&j), (100..106).collect::<Vec<_>>());
}

#[test]
fn a_client_blocked_in_a_send_when_the_server_dies_gets_its_reply_from_the_new_one() {
    let _w = Watchdog::new("blocked_send_recovers", 120);
    let ts = TestSystem::new("ha-blocked", limits());
    let j = TempFile::new("ha-blocked.journal");
    let mut srv = echo_server(&ts, "ha-hold", &j, &["--hold-after", "1"]);
    let sys = &ts.sys;
    let (ha, coid) = ha_name_coid(sys, "ha-hold");
    assert_eq!(sys.msg_send(coid, &req(1), &mut [0u8; 8]), Ok(8));
    let client = {
        let sys = sys.clone();
        std::thread::spawn(move || {
            let mut reply = [0u8; 8];
            let r = sys.msg_send(coid, &req(2), &mut reply);
            (r, reply)
        })
    };
    srv.expect("echo-server: holding a request");
    // Killed while the client is REPLY-blocked: it sees ESRCH inside the library, whose
    // recovery waits for the name to come back.
    srv.kill();
    let _srv2 = echo_server(&ts, "ha-hold", &j, &[]);
    let (r, reply) = client.join().unwrap();
    assert_eq!(r, Ok(8));
    assert_eq!(reply, req(2));
    let c = ha.counters(coid).unwrap();
    assert_eq!((c.failures, c.recoveries, c.retransmissions), (1, 1, 1));
    // The first server never executed request 2; the second did, once.
    assert_eq!(echoed_ids(&j), [1, 2]);
}

#[test]
fn a_plain_read_loop_resumes_at_the_right_offset_after_a_file_server_restart() {
    let _w = Watchdog::new("read_loop_resumes", 120);
    let ts = TestSystem::new("ha-reader", limits());
    let scratch = Scratch::new("ha-reader");
    let dir = scratch.0.clone();
    std::fs::write(dir.join("abc.txt"), b"0123456789abcdefghijklmnopqrstuvwxyz").unwrap();
    let j2 = dir.join("second.journal");
    let file_server = |journal: &PathBuf| file_server(&ts, &dir, Some(journal));
    let mut srv = file_server(&dir.join("first.journal"));
    let mut reader = Helper::spawn_cmd(Command::new(QSIM).args([
        "run",
        "ha-reader",
        "--system",
        &ts.name,
        "--step",
        "--chunk",
        "8",
        "/files/abc.txt",
    ]));
    let mut got = vec![reader.line("first read")];
    srv.kill();
    let _srv2 = file_server(&j2);
    loop {
        reader.say("");
        let l = reader.line("the next read");
        let done = l.starts_with("ha-reader: done");
        got.push(l);
        if done {
            break;
        }
    }
    assert_eq!(
        got,
        [
            "ha-reader: read 8 at 0: 01234567",
            "ha-reader: read 8 at 8: 89abcdef",
            "ha-reader: read 8 at 16: ghijklmn",
            "ha-reader: read 8 at 24: opqrstuv",
            "ha-reader: read 4 at 32: wxyz",
            "ha-reader: done: 36 bytes, 1 recoveries",
        ]
    );
    assert_eq!(reader.wait(), Some(0));
    // The new server saw the reopen, the seek back to 8, and reads from there on.
    let r = Journal::read(&j2).unwrap();
    let ops: Vec<String> = r
        .iter()
        .map(|r| format!("{} {}", r.op, r.get("offset").unwrap_or("")))
        .collect();
    assert_eq!(ops[..3], ["open ", "lseek 8", "read 8"]);
}

#[test]
fn when_recovery_cannot_help_the_original_error_comes_back() {
    let _w = Watchdog::new("original_error", 120);
    let ts = TestSystem::new("ha-propagate", limits());
    let j = TempFile::new("ha-propagate.journal");
    let mut srv = echo_server(&ts, "ha-prop", &j, &[]);
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    let open = || sys.name_open("ha-prop").unwrap();
    // A plain coid, a recovery that fails, one that returns another coid, a suspended one.
    let plain = open();
    let failing = open();
    ha.attach(failing, |_: &Ha, _, _: &()| Err(Errno::NOENT), (), 0)
        .unwrap();
    let other = open();
    ha.attach(other, move |_: &Ha, _, _: &()| Ok(Coid(1)), (), 0)
        .unwrap();
    let suspended = open();
    ha.attach(
        suspended,
        |ha: &Ha, c: Coid, _: &()| ha.name_reopen(c, "ha-prop"),
        (),
        0,
    )
    .unwrap();
    ha.connection_ctrl(suspended, HaCtrl::Suspend).unwrap();
    srv.kill();
    srv = echo_server(&ts, "ha-prop", &j, &[]);
    let send = |c| sys.msg_send(c, &req(9), &mut [0u8; 8]);
    assert_eq!(send(plain), Err(Errno::BADF));
    assert_eq!(send(failing), Err(Errno::BADF));
    assert_eq!(ha.counters(failing).unwrap().failed_recoveries, 1);
    assert_eq!(send(other), Err(Errno::BADF));
    assert_eq!(send(suspended), Err(Errno::BADF));
    assert_eq!(ha.counters(suspended).unwrap().recoveries, 0);
    // Enabled again, it recovers.
    ha.connection_ctrl(suspended, HaCtrl::Enable).unwrap();
    assert_eq!(send(suspended), Ok(8));
    // ACOUNT 0 disables recovery.
    ha.connection_ctrl(suspended, HaCtrl::RecoveryACount(Limit::At(0)))
        .unwrap();
    srv.kill();
    let _srv = echo_server(&ts, "ha-prop", &j, &[]);
    assert_eq!(send(suspended), Err(Errno::BADF));
    ha.connection_ctrl(suspended, HaCtrl::RecoveryACount(Limit::Unlimited))
        .unwrap();
    assert_eq!(send(suspended), Ok(8));
}

#[test]
fn other_errors_pass_through_without_recovery() {
    let ts = TestSystem::new("ha-other", limits());
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    // A server in this process answers ENOSYS, then EAGAIN, to everything but _IO_CONNECT,
    // and counts what it received.
    let att = sys.name_attach("ha-enosys").unwrap();
    let chid = att.chid;
    let server = {
        let sys = sys.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut got = 0;
            for answer in [Errno::NOSYS, Errno::AGAIN] {
                loop {
                    let Ok(Received::Message { rcvid, info }) = sys.msg_receive(chid, &mut buf)
                    else {
                        continue;
                    };
                    let m = &buf[..info.msglen as usize];
                    if iomsg::answer_bookkeeping(&sys, rcvid, m, &info).unwrap_or(true) {
                        continue;
                    }
                    got += 1;
                    let _ = sys.msg_error(rcvid, answer);
                    break;
                }
            }
            got
        })
    };
    let coid = sys.name_open("ha-enosys").unwrap();
    ha.attach(coid, |_: &Ha, c: Coid, _: &()| Ok(c), (), 0)
        .unwrap();
    assert_eq!(sys.msg_send(coid, &req(1), &mut []), Err(Errno::NOSYS));
    // An EAGAIN the server itself answers is not a full queue: it is not sent again.
    assert_eq!(sys.msg_send(coid, &req(2), &mut []), Err(Errno::AGAIN));
    let c = ha.counters(coid).unwrap();
    assert_eq!((c.failures, c.recoveries, c.retries), (0, 0, 0));
    assert_eq!(server.join().unwrap(), 2);
    let _ = sys.name_detach(att);
}

#[test]
fn two_threads_on_one_broken_coid_run_one_recovery() {
    let _w = Watchdog::new("two_threads_one_recovery", 120);
    let ts = TestSystem::new("ha-threads", limits());
    let j = TempFile::new("ha-threads.journal");
    let mut srv = echo_server(&ts, "ha-two", &j, &["--hold-after", "0"]);
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    ha.set_wait_budget(Duration::from_secs(60));
    let calls = Arc::new(Mutex::new(0u32));
    let coid = sys.name_open("ha-two").unwrap();
    let info = sys.connect_server_info(Pid(0), coid).unwrap();
    ha.attach(
        coid,
        |ha: &Ha, c: Coid, calls: &Arc<Mutex<u32>>| {
            *calls.lock().unwrap() += 1;
            ha.name_reopen(c, "ha-two")
        },
        calls.clone(),
        0,
    )
    .unwrap();
    let senders: Vec<_> = (0..2u32)
        .map(|i| {
            let sys = sys.clone();
            std::thread::spawn(move || sys.msg_send(coid, &req(10 + i), &mut [0u8; 8]))
        })
        .collect();
    // One request is held by the server, the other waits in its queue.
    srv.expect("echo-server: holding a request");
    while sys
        .channel_stats_of(Pid(info.pid), Chid(info.chid))
        .map_or(0, |s| s.queued)
        < 1
    {
        std::thread::yield_now();
    }
    srv.kill();
    let _srv2 = echo_server(&ts, "ha-two", &j, &[]);
    for s in senders {
        assert_eq!(s.join().unwrap(), Ok(8));
    }
    let c = ha.counters(coid).unwrap();
    assert_eq!(*calls.lock().unwrap(), 1, "{c:?}");
    assert_eq!((c.recoveries, c.failures), (1, 2));
    let mut ids = echoed_ids(&j);
    ids.sort();
    assert_eq!(ids, [10, 11]);
}

#[test]
fn a_recovery_that_does_not_repair_stops_at_the_limit_with_the_first_error() {
    let ts = TestSystem::new("ha-limit", limits());
    let j = TempFile::new("ha-limit.journal");
    let mut srv = echo_server(&ts, "ha-lim", &j, &[]);
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    let calls = Arc::new(Mutex::new(0u32));
    let coid = sys.name_open("ha-lim").unwrap();
    ha.attach(
        coid,
        |_: &Ha, c: Coid, calls: &Arc<Mutex<u32>>| {
            *calls.lock().unwrap() += 1;
            Ok(c) // "repaired", but it is not
        },
        calls.clone(),
        0,
    )
    .unwrap();
    srv.kill();
    // Cleaned up at once, so the first send fails with EBADF (before the cleanup it would be
    // ESRCH: either is the "original error" the caller must get back).
    sys.clean_up_after(Pid(srv.pid));
    assert_eq!(sys.msg_send(coid, &req(1), &mut []), Err(Errno::BADF));
    assert_eq!(*calls.lock().unwrap(), 3);
    // Unlimited per send (QNX's behaviour), bounded here by ACOUNT over the coid's life.
    ha.connection_ctrl(coid, HaCtrl::RecoveriesPerSend(Limit::Unlimited))
        .unwrap();
    ha.connection_ctrl(coid, HaCtrl::RecoveryACount(Limit::At(10)))
        .unwrap();
    assert_eq!(sys.msg_send(coid, &req(1), &mut []), Err(Errno::BADF));
    assert_eq!(*calls.lock().unwrap(), 10);
    ha.connection_ctrl(coid, HaCtrl::ResetACount).unwrap();
    ha.connection_ctrl(coid, HaCtrl::RecoveryICount(Limit::At(1)))
        .unwrap();
    ha.attach(
        coid,
        |_: &Ha, _: Coid, _: &()| Err(Errno::NOENT),
        (),
        REPLACE_RECOVERY_FN,
    )
    .unwrap();
    assert_eq!(sys.msg_send(coid, &req(1), &mut []), Err(Errno::BADF));
    // ICOUNT reached: no more recovery calls until reset.
    assert_eq!(sys.msg_send(coid, &req(1), &mut []), Err(Errno::BADF));
    assert_eq!(ha.counters(coid).unwrap().failed_recoveries, 1);
    drop(srv);
}

#[test]
fn recoveries_that_send_on_each_others_coids_do_not_deadlock() {
    let _w = Watchdog::new("no_deadlock", 120);
    let ts = TestSystem::new("ha-cross", limits());
    let j = TempFile::new("ha-cross.journal");
    let mut srv = echo_server(&ts, "ha-x", &j, &[]);
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    ha.set_wait_budget(Duration::from_secs(60));
    let a = sys.name_open("ha-x").unwrap();
    let b = sys.name_open("ha-x").unwrap();
    // Each recovery first sends on the other coid (which is broken too, or being recovered):
    // that send must fail at once with the original error, not wait, then it reconnects.
    let saw = Arc::new(Mutex::new(Vec::new()));
    for (me, peer) in [(a, b), (b, a)] {
        ha.attach(
            me,
            move |ha: &Ha, c: Coid, saw: &Arc<Mutex<Vec<Result<i32, Errno>>>>| {
                let r = ha.sys().msg_send(peer, &req(0), &mut []);
                saw.lock().unwrap().push(r);
                ha.name_reopen(c, "ha-x")
            },
            saw.clone(),
            0,
        )
        .unwrap();
    }
    srv.kill();
    let _srv = echo_server(&ts, "ha-x", &j, &[]);
    let go = Arc::new(AtomicBool::new(false));
    let ts_: Vec<_> = [(a, 1u32), (b, 2u32)]
        .into_iter()
        .map(|(c, id)| {
            let sys = sys.clone();
            let go = go.clone();
            std::thread::spawn(move || {
                while !go.load(std::sync::atomic::Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                sys.msg_send(c, &req(id), &mut [0u8; 8])
            })
        })
        .collect();
    go.store(true, std::sync::atomic::Ordering::Release);
    for t in ts_ {
        assert_eq!(t.join().unwrap(), Ok(8));
    }
    // Every send made inside a recovery got an immediate answer: EBADF if the peer was still
    // broken, or a reply if the other recovery had repaired it first.
    for r in saw.lock().unwrap().iter() {
        assert!(matches!(r, Err(Errno::BADF) | Ok(_)), "{r:?}");
    }
}

#[test]
fn the_retry_policy_rides_out_a_full_send_queue_and_zero_retry_does_not() {
    let _w = Watchdog::new("retry_policy", 120);
    let ts = TestSystem::new("ha-retry", limits());
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    let chid = sys.channel_create(0).unwrap();
    sys.channel_queue_limit(chid, 1).unwrap();
    let coid = sys.connect_attach(0, Pid(0), chid, 0, 0).unwrap();
    // The server takes one request and holds it until told to serve.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let server = {
        let sys = sys.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let Ok(Received::Message { rcvid, .. }) = sys.msg_receive(chid, &mut buf) else {
                panic!("no first request");
            };
            held_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            sys.msg_reply(rcvid, 0, &[]).unwrap();
            for _ in 0..2 {
                if let Ok(Received::Message { rcvid, .. }) = sys.msg_receive(chid, &mut buf) {
                    sys.msg_reply(rcvid, 0, &[]).unwrap();
                }
            }
        })
    };
    let sender = |id| {
        let sys = sys.clone();
        std::thread::spawn(move || sys.msg_send(coid, &req(id), &mut []))
    };
    let first = sender(1);
    held_rx.recv().unwrap();
    let second = sender(2);
    while sys.channel_stats(chid).unwrap().queued < 1 {
        std::thread::yield_now();
    }
    // The queue is full. Zero-retry: EAGAIN at once, and nothing was sent.
    ha.set_coid_retry_policy(coid, Some(RetryPolicy::none()));
    assert_eq!(sys.msg_send(coid, &req(3), &mut []), Err(Errno::AGAIN));
    assert_eq!(sys.last_send_outcome(), kernel_sim::SendOutcome::NotSent);
    // The default policy: the caller never sees EAGAIN once the server catches up.
    ha.set_coid_retry_policy(coid, None);
    let before = ha.process_counters().retries;
    let third = sender(4);
    while ha.process_counters().retries == before {
        std::thread::yield_now();
    }
    release_tx.send(()).unwrap();
    assert_eq!(first.join().unwrap(), Ok(0));
    assert_eq!(second.join().unwrap(), Ok(0));
    assert_eq!(third.join().unwrap(), Ok(0));
    server.join().unwrap();
}

#[test]
fn attach_detach_dup_and_release_keep_ha_state_where_it_belongs() {
    let ts = TestSystem::new("ha-table", limits());
    let j = TempFile::new("ha-table.journal");
    let _srv = echo_server(&ts, "ha-t", &j, &[]);
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    let ok = |_: &Ha, c: Coid, _: &()| Ok(c);
    assert_eq!(ha.attach(Coid(77), ok, (), 0), Err(Errno::BADF));
    let c = sys.name_open("ha-t").unwrap();
    assert_eq!(ha.attach(c, ok, (), REPLACE_RECOVERY_FN), Err(Errno::BADF));
    ha.attach(c, ok, (), 0).unwrap();
    assert_eq!(ha.attach(c, ok, (), 0), Err(Errno::EXIST));
    ha.attach(c, ok, (), REPLACE_RECOVERY_FN).unwrap();
    assert_eq!(
        ha.connection_ctrl(Coid(77), HaCtrl::Suspend),
        Err(Errno::BADF)
    );
    // Closed outside recovery: the HA mark goes, and a new coid on the same number is plain.
    sys.connect_detach(c).unwrap();
    assert!(!ha.is_ha(c));
    let again = sys.name_open("ha-t").unwrap();
    assert_eq!(again, c);
    assert!(!ha.is_ha(again));
    // ha_close / ha_ConnectDetach refuse a plain coid and leave it attached.
    assert_eq!(ha.connect_detach(again), Err(Errno::BADF));
    assert!(sys.connect_server_info(Pid(0), again).is_ok());
    ha.attach(again, ok, (), 0).unwrap();
    ha.connect_detach(again).unwrap();
    assert!(sys.connect_server_info(Pid(0), again).is_err());
    // A second install is the same library instance.
    let ha2 = Ha::install(sys).unwrap();
    let c2 = sys.name_open("ha-t").unwrap();
    ha.attach(c2, ok, (), 0).unwrap();
    assert!(ha2.is_ha(c2));
    assert_eq!(ha2.detach(c2), Ok(()));
    assert_eq!(ha.detach(c2), Err(Errno::BADF));
}

#[test]
fn ha_dup_shares_the_recovery_and_reopen_repoints_the_dups() {
    let _w = Watchdog::new("ha_dup", 120);
    let ts = TestSystem::new("ha-dup", limits());
    let scratch = Scratch::new("ha-dup");
    let dir = scratch.0.clone();
    std::fs::write(dir.join("f.txt"), b"abcdefghij").unwrap();
    let start = || file_server(&ts, &dir, None);
    let mut srv = start();
    let sys = &ts.sys;
    let ha = Ha::install(sys).unwrap();
    ha.set_wait_budget(Duration::from_secs(60));
    let reopen = |ha: &Ha, c: Coid, path: &String| ha.reopen(c, path, libc::O_RDONLY);
    let fd = ha
        .open(
            "/files/f.txt",
            libc::O_RDONLY,
            reopen,
            "/files/f.txt".to_string(),
            0,
        )
        .unwrap();
    let d = ha.dup(fd).unwrap();
    assert!(ha.is_ha(d));
    let mut b = [0u8; 3];
    assert_eq!(sys.read(d, &mut b), Ok(3));
    srv.kill();
    srv = start();
    // A read on the dup recovers through the shared mechanism; the original fd is re-pointed
    // too and shares the new open (a fresh offset: this recovery does not seek).
    assert_eq!(sys.read(d, &mut b), Ok(3));
    assert_eq!(&b, b"abc");
    assert_eq!(sys.read(fd, &mut b), Ok(3));
    assert_eq!(&b, b"def");
    assert_eq!(ha.counters(fd).unwrap().recoveries, 1);
    ha.close(fd).unwrap();
    assert!(ha.is_ha(d));
    ha.close(d).unwrap();
    drop(srv);
}

#[test]
fn the_callers_deadline_bounds_the_whole_call_recovery_included() {
    let _w = Watchdog::new("deadline_bounds_recovery", 120);
    let ts = TestSystem::new("ha-deadline", limits());
    let j = TempFile::new("ha-deadline.journal");
    let mut srv = echo_server(&ts, "ha-dl", &j, &[]);
    let sys = &ts.sys;
    let (ha, coid) = ha_name_coid(sys, "ha-dl");
    // The server never comes back; the library's own budget is an hour: only the caller's
    // deadline can end this call.
    ha.set_wait_budget(Duration::from_secs(3600));
    srv.kill();
    assert_eq!(
        sys.msg_send_timeout(coid, &req(1), &mut [0u8; 8], Duration::from_millis(50)),
        Err(Errno::TIMEDOUT)
    );
}

#[test]
fn reconnect_lands_on_the_old_side_channel_number_with_lower_slots_free() {
    let _w = Watchdog::new("side_channel_placeholders", 120);
    let ts = TestSystem::new("ha-side", limits());
    let j = TempFile::new("ha-side.journal");
    let mut srv = echo_server(&ts, "ha-side", &j, &[]);
    let sys = &ts.sys;
    let c1 = sys.name_open("ha-side").unwrap();
    let c2 = sys.name_open("ha-side").unwrap();
    let (ha, c3) = ha_name_coid(sys, "ha-side");
    assert!(c1.0 < c2.0 && c2.0 < c3.0);
    // Two lower side slots free: the temporary name_open takes one, a placeholder the other.
    sys.connect_detach(c1).unwrap();
    sys.connect_detach(c2).unwrap();
    srv.kill();
    let srv2 = echo_server(&ts, "ha-side", &j, &[]);
    assert_eq!(sys.msg_send(c3, &req(5), &mut [0u8; 8]), Ok(8));
    assert_eq!(sys.connect_server_info(Pid(0), c3).unwrap().pid, srv2.pid);
    assert_eq!(ha.counters(c3).unwrap().recoveries, 1);
    // The helpers released their temporary coids and placeholders.
    assert_eq!(sys.name_open("ha-side"), Ok(c1));
    assert_eq!(sys.name_open("ha-side"), Ok(c2));
}
