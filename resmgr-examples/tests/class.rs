//! Server classes (ha-lib's Pathsend-style API) across real member processes killed with
//! `kill -9`: repeatable requests all complete; a request that must not be repeated gets the
//! outcome-unknown error only where its member had received it, and is otherwise sent to another
//! member silently; the limits. Facts are checked in the members' journal.

use ha_lib::class::{ClassError, Replay, Send, ServerClass};
use kernel_sim::Limits;
use qsim_tests::{small_limits, Helper, Scratch, TestSystem, Watchdog};
use resmgr_examples::examples::class_member;
use resmgr_examples::journal::Journal;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const QSIM: &str = env!("CARGO_BIN_EXE_qsim");

struct Scene {
    ts: TestSystem,
    journal: PathBuf,
}

impl Scene {
    fn new(tag: &str) -> Scene {
        let journal =
            std::env::temp_dir().join(format!("qsimtest-{tag}-{}.journal", std::process::id()));
        let _ = std::fs::remove_file(&journal);
        Scene {
            ts: TestSystem::new(
                tag,
                Limits {
                    threads_per_process: 8,
                    ..small_limits()
                },
            ),
            journal,
        }
    }

    /// A member of class `class` doing `work_us` per request.
    fn member(&self, class: &str, work_us: u64) -> Helper {
        self.member_with(class, work_us, &[])
    }

    /// [`Scene::member`] with more arguments (such as `--store DIR`).
    fn member_with(&self, class: &str, work_us: u64, extra: &[&std::ffi::OsStr]) -> Helper {
        let work = work_us.to_string();
        let h = Helper::spawn_cmd(
            Command::new(QSIM)
                .args([
                    "run",
                    "class-member",
                    "--system",
                    &self.ts.name,
                    "--exit-on-eof",
                ])
                .args(["--class", class, "--work-us", &work, "--journal"])
                .arg(&self.journal)
                .args(extra),
        );
        assert!(h.line("a member's ready line").contains(" serves "));
        h
    }

    /// (op, member, id) of every record.
    fn records(&self) -> Vec<(String, i32, u32)> {
        Journal::read(&self.journal)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                Some((
                    r.op.clone(),
                    r.get("member")?.parse().ok()?,
                    r.get("id")?.parse().ok()?,
                ))
            })
            .collect()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&[(String, i32, u32)]) -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while !pred(&self.records()) {
            assert!(Instant::now() < end, "never saw {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Three members of `class` sharing the transaction store in `store`.
    fn store_members(&self, class: &str, work_us: u64, store: &Path) -> Vec<Helper> {
        (0..3)
            .map(|_| self.store_member(class, work_us, store))
            .collect()
    }

    fn store_member(&self, class: &str, work_us: u64, store: &Path) -> Helper {
        self.member_with(class, work_us, &["--store".as_ref(), store.as_os_str()])
    }

    /// `kills` times, once the journal holds `every` more records of `op`: kills the oldest of
    /// `members` with `kill -9` and starts a new one with `spawn`.
    fn kill_in_turn(
        &self,
        op: &str,
        every: usize,
        kills: usize,
        members: &mut Vec<Helper>,
        spawn: impl Fn() -> Helper,
    ) {
        for k in 1..=kills {
            self.wait_for("progress", |r| {
                r.iter().filter(|(o, _, _)| o == op).count() >= k * every
            });
            members.remove(0).kill();
            members.push(spawn());
        }
    }
}

/// The snapshot of the transaction store in `store`.
fn store_snapshot(store: &Path) -> ha_lib::tx::Snapshot {
    ha_lib::tx::TxStore::open(store)
        .unwrap()
        .snapshot()
        .unwrap()
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.journal);
    }
}

fn req(id: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..2].copy_from_slice(&0x200u16.to_le_bytes());
    m[4..].copy_from_slice(&id.to_le_bytes());
    m
}

#[test]
fn repeatable_requests_all_complete_while_members_are_killed() {
    let _w = Watchdog::new("class_repeatable", 120);
    let sc = Scene::new("class-rep");
    let mut members: Vec<Helper> = (0..3).map(|_| sc.member("work", 200)).collect();
    let class = ServerClass::open(&sc.ts.sys, "work").unwrap();
    assert_eq!(class.members().len(), 3);
    let total = 3000u32;
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut who = HashMap::<i32, u32>::new();
            for id in 0..total {
                let mut reply = [0u8; 4];
                let pid = class
                    .send(&req(id), &mut reply, Send::Repeatable)
                    .unwrap_or_else(|e| panic!("request {id}: {e}"));
                *who.entry(pid).or_default() += 1;
            }
            who
        });
        // Kill a member every 300 requests done (six kills), starting a replacement each time.
        for k in 1..=6u32 {
            sc.wait_for("progress", |r| {
                r.iter().filter(|(op, _, _)| op == "done").count() as u32 >= k * 300
            });
            let mut victim = members.remove(0);
            victim.kill();
            members.push(sc.member("work", 200));
        }
        let who = sender.join().unwrap();
        // The load was spread: more than one member answered.
        assert!(who.len() > 1, "{who:?}");
    });
    let c = class.counters();
    assert_eq!(c.answered, u64::from(total));
    assert_eq!(c.outcome_unknown, 0);
    // Every request was done by some member.
    let done: std::collections::HashSet<u32> = sc
        .records()
        .into_iter()
        .filter(|(op, _, _)| op == "done")
        .map(|(_, _, id)| id)
        .collect();
    assert!((0..total).all(|id| done.contains(&id)));
}

#[test]
fn a_request_not_to_repeat_gets_outcome_unknown_only_if_its_member_had_it() {
    let _w = Watchdog::new("class_not_repeatable", 120);
    let sc = Scene::new("class-904");
    // One slow member: it holds request 1 in its work; request 2 waits in its queue.
    let mut slow = sc.member("pay", 60_000_000);
    let class = ServerClass::open(&sc.ts.sys, "pay").unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| class.send(&req(1), &mut [0u8; 4], Send::NotRepeatable));
        sc.wait_for("request 1 received", |r| {
            r.iter().any(|(op, _, id)| op == "received" && *id == 1)
        });
        let second = s.spawn(|| class.send(&req(2), &mut [0u8; 4], Send::NotRepeatable));
        let slow_pid = slow.pid;
        let info_wait = Instant::now() + Duration::from_secs(30);
        // Request 2 is queued (SEND-blocked) at the slow member.
        loop {
            let queued = sc
                .ts
                .sys
                .snapshot()
                .channels
                .iter()
                .filter(|c| c.pid == slow_pid)
                .map(|c| c.queued)
                .sum::<u32>();
            if queued >= 1 {
                break;
            }
            assert!(Instant::now() < info_wait, "request 2 never queued");
            std::thread::sleep(Duration::from_millis(1));
        }
        // A quick member joins; the slow one is killed.
        let _fast = sc.member("pay", 10);
        slow.kill();
        // Request 1 had been received: outcome unknown, not sent again.
        assert_eq!(
            first.join().unwrap(),
            Err(ClassError::OutcomeUnknown { member: slow_pid })
        );
        // Request 2 had not: sent to the other member, silently, and answered.
        let r2 = second.join().unwrap();
        assert!(r2.is_ok(), "{r2:?}");
        assert_ne!(r2.unwrap(), slow_pid);
    });
    let r = sc.records();
    let count = |op: &str, id: u32| r.iter().filter(|(o, _, i)| o == op && *i == id).count();
    // Request 1 was received once (by the member that died) and never again.
    assert_eq!((count("received", 1), count("done", 1)), (1, 0));
    // Request 2 was received and done once, by the new member.
    assert_eq!((count("received", 2), count("done", 2)), (1, 1));
    let c = class.counters();
    assert_eq!((c.outcome_unknown, c.rerouted, c.answered), (1, 1, 1));
}

#[test]
fn configuration_limits_are_not_retried_and_a_busy_class_is_waited_out() {
    let _w = Watchdog::new("class_limits", 120);
    let sc = Scene::new("class-limits");
    assert_eq!(
        ServerClass::open(&sc.ts.sys, "nobody").unwrap_err(),
        ClassError::UnknownClass
    );
    assert_eq!(
        ServerClass::open(&sc.ts.sys, "a/b").unwrap_err(),
        ClassError::UnknownClass
    );
    let mut slow = sc.member("busy", 60_000_000);
    let mut class = ServerClass::open(&sc.ts.sys, "busy").unwrap();
    class.set_concurrency(1, Duration::from_millis(20));
    std::thread::scope(|s| {
        let first = s.spawn(|| class.send(&req(1), &mut [0u8; 4], Send::Repeatable));
        sc.wait_for("request 1 received", |r| {
            r.iter().any(|(op, _, id)| op == "received" && *id == 1)
        });
        // One send in flight is the limit: the next waits 20 ms for room, then gives up.
        assert_eq!(
            class.send(&req(2), &mut [0u8; 4], Send::Repeatable),
            Err(ClassError::Busy)
        );
        // The only member dies: no members, not retried.
        slow.kill();
        assert_eq!(first.join().unwrap(), Err(ClassError::NoMembers));
    });
    assert_eq!(
        class.send(&req(3), &mut [0u8; 4], Send::Repeatable),
        Err(ClassError::NoMembers)
    );
}

fn sum_of(reply: &[u8]) -> i64 {
    i64::from_le_bytes(reply[..8].try_into().unwrap())
}

fn whoami() -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..2].copy_from_slice(&class_member::WHOAMI.to_le_bytes());
    m
}

/// Kills the member with pid `pid` among `members` (and forgets it).
fn kill_member(members: &mut Vec<Helper>, pid: i32) {
    let i = members.iter().position(|m| m.pid == pid).unwrap();
    members.remove(i).kill();
}

#[test]
fn a_dialog_whose_member_dies_between_sends_is_aborted() {
    let _w = Watchdog::new("dialog_929", 120);
    let sc = Scene::new("class-929");
    let mut members: Vec<Helper> = (0..2).map(|_| sc.member("dlg", 10)).collect();
    let class = ServerClass::open(&sc.ts.sys, "dlg").unwrap();
    let mut d = class.dialog(Replay::Never).unwrap();
    let mut r = [0u8; 8];
    d.send(&class_member::dialog_add(1, 5), &mut r).unwrap();
    assert_eq!(sum_of(&r), 5);
    d.send(&class_member::dialog_add(2, 7), &mut r).unwrap();
    assert_eq!(sum_of(&r), 12, "the context lives in the member");
    let m = d.member();
    kill_member(&mut members, m);
    assert_eq!(
        d.send(&class_member::dialog_add(3, 1), &mut r),
        Err(ClassError::DialogAborted { member: m })
    );
    assert_eq!(
        d.send(&class_member::dialog_add(4, 1), &mut r),
        Err(ClassError::DialogAborted { member: m })
    );
    d.abort();
    // A new dialog starts afresh on the member that lives.
    let mut d2 = class.dialog(Replay::Never).unwrap();
    d2.send(&class_member::dialog_add(5, 2), &mut r).unwrap();
    assert_eq!(sum_of(&r), 2);
    d2.end();
}

#[test]
fn a_dialog_whose_member_dies_during_a_send_gets_outcome_unknown() {
    let _w = Watchdog::new("dialog_904", 120);
    let sc = Scene::new("class-d904");
    let mut slow = sc.member("dslow", 60_000_000);
    let class = ServerClass::open(&sc.ts.sys, "dslow").unwrap();
    let mut d = class.dialog(Replay::Never).unwrap();
    let m = d.member();
    std::thread::scope(|s| {
        let t = s.spawn(move || d.send(&req(9), &mut [0u8; 4]));
        sc.wait_for("request 9 received", |r| {
            r.iter().any(|(op, _, id)| op == "received" && *id == 9)
        });
        slow.kill();
        assert_eq!(
            t.join().unwrap(),
            Err(ClassError::OutcomeUnknown { member: m })
        );
    });
}

#[test]
fn a_replayable_dialog_is_replayed_on_a_new_member_and_a_different_reply_aborts_it() {
    let _w = Watchdog::new("dialog_replay", 120);
    let sc = Scene::new("class-replay");
    let mut members: Vec<Helper> = (0..2).map(|_| sc.member("rep", 10)).collect();
    let class = ServerClass::open(&sc.ts.sys, "rep").unwrap();
    let mut d = class.dialog(Replay::Replayable).unwrap();
    let mut r = [0u8; 8];
    d.send(&class_member::dialog_add(1, 5), &mut r).unwrap();
    d.send(&class_member::dialog_add(2, 7), &mut r).unwrap();
    let first = d.member();
    kill_member(&mut members, first);
    // Replayed on the other member (5, then 12, as before), then the new request.
    d.send(&class_member::dialog_add(3, 3), &mut r).unwrap();
    assert_eq!(sum_of(&r), 15);
    assert_ne!(d.member(), first);
    assert_eq!(class.counters().replays, 1);
    d.end();
    // A dialog whose replies depend on the member cannot be replayed faithfully.
    members.push(sc.member("rep", 10));
    let mut d = class.dialog(Replay::Replayable).unwrap();
    d.send(&whoami(), &mut r).unwrap();
    let m = d.member();
    kill_member(&mut members, m);
    assert_eq!(
        d.send(&class_member::dialog_add(4, 1), &mut r),
        Err(ClassError::ReplayDiverged { exchange: 0 })
    );
}

#[test]
fn transactions_take_effect_exactly_once_while_members_are_killed() {
    let _w = Watchdog::new("class_tx", 120);
    let sc = Scene::new("class-tx");
    let store = Scratch::new("class-tx-store");
    let mut members = sc.store_members("bank", 400, &store.0);
    let class = ServerClass::open(&sc.ts.sys, "bank").unwrap();
    let total = 600u32;
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            for id in 0..total {
                let mut r = [0u8; 8];
                let txid = u64::from(id) + 1;
                class
                    .send(
                        &class_member::tx_add(id, txid, i64::from(id)),
                        &mut r,
                        Send::Transaction(txid),
                    )
                    .unwrap_or_else(|e| panic!("transaction {txid}: {e}"));
            }
        });
        sc.kill_in_turn("tx", 80, 6, &mut members, || {
            sc.store_member("bank", 400, &store.0)
        });
        sender.join().unwrap();
    });
    // In the shared store: every transaction applied, each exactly once.
    let snap = store_snapshot(&store.0);
    assert_eq!(snap.committed.len() as u32, total);
    let want: i64 = (0..i64::from(total)).sum();
    assert_eq!(snap.state["acct"], want);
    let c = class.counters();
    eprintln!("class counters: {c:?}");
    assert_eq!(c.answered, u64::from(total));
}

#[test]
fn transfers_of_several_requests_commit_once_and_one_whose_owner_dies_is_aborted() {
    use ha_lib::class::ClassError;
    use kernel_sim::Errno;
    let _w = Watchdog::new("class_transfers", 180);
    let sc = Scene::new("class-xfer");
    let store = Scratch::new("class-xfer-store");
    let mut members = sc.store_members("xfer", 300, &store.0);
    let class = ServerClass::open(&sc.ts.sys, "xfer").unwrap();
    // 200 transfers among accounts 0..5 while members are killed: each of the two steps and
    // the commit may be reissued on another member; the store runs each once.
    let total = 200u64;
    let plan = |t: u64| ((t % 5) as u32, ((t * 3 + 1) % 5) as u32, t as i64);
    std::thread::scope(|s| {
        let sender = s.spawn(|| {
            for t in 1..=total {
                let (from, to, amount) = plan(t);
                class_member::transfer(&class, t, from, to, amount, || {})
                    .unwrap_or_else(|e| panic!("transfer {t}: {e}"));
            }
        });
        sc.kill_in_turn("txop", 100, 4, &mut members, || {
            sc.store_member("xfer", 300, &store.0)
        });
        sender.join().unwrap();
    });
    let snap = store_snapshot(&store.0);
    let mut want = std::collections::BTreeMap::new();
    for t in 1..=total {
        let (from, to, amount) = plan(t);
        *want.entry(class_member::account_key(from)).or_insert(0i64) -= amount;
        *want.entry(class_member::account_key(to)).or_insert(0i64) += amount;
    }
    assert_eq!(snap.state, want, "every step applied exactly once");
    assert_eq!(snap.committed, (1..=total).collect::<Vec<_>>());
    assert!(snap.open.is_empty());

    // A client that stops inside its transaction holds the account it changed: another
    // transaction touching it is refused (and aborted), until the holder dies.
    let mut holder = Helper::spawn_cmd(Command::new(QSIM).args([
        "run",
        "transfer",
        "--system",
        &sc.ts.name,
        "--class",
        "xfer",
        "--txid",
        "9001",
        "--from",
        "7",
        "--to",
        "8",
        "--amount",
        "5",
        "--hold",
    ]));
    holder.expect("transfer: holding transaction 9001");
    assert_eq!(
        class_member::transfer(&class, 9002, 7, 9, 1, || {}),
        Err(ClassError::Server(Errno::BUSY))
    );
    holder.kill();
    // The next call on the store aborts the dead client's transaction: its step is undone,
    // and the account is free.
    class_member::transfer(&class, 9003, 7, 9, 1, || {}).unwrap();
    let snap = store_snapshot(&store.0);
    assert_eq!(
        snap.state.get("acct-7"),
        Some(&-1),
        "9001's debit rolled back"
    );
    assert_eq!(snap.state.get("acct-9"), Some(&1));
    assert!(snap.open.is_empty());
    assert!(snap.committed.contains(&9003) && !snap.committed.contains(&9001));
    assert!(!snap.committed.contains(&9002));
}
