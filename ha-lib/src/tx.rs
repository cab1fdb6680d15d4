//! Transactions for server classes: a small durable store that the members of a class share, in
//! which a member records the effect of a request and its transaction id in one atomic step, so
//! that a reissued request whose id is recorded is answered from the record instead of being
//! executed twice (exactly-once for the server's effects, where plain recovery is at-least-once).
//!
//! A transaction is one request ([`TxStore::apply`]: applied and committed at once) or several
//! ([`TxStore::step`] for each, then [`TxStore::commit`] or [`TxStore::abort`]), like TMF's
//! `BEGINTRANSACTION` ... `ENDTRANSACTION` / `ABORTTRANSACTION`. The steps of an open
//! transaction are applied at once and **lock** the values they changed: a step of another
//! transaction that would change one of them fails with [`TxError::Conflict`] (no waiting, so no
//! deadlock; the caller aborts and tries again). Aborting rolls every step back, in reverse order,
//! and remembers the id as aborted (a late step or commit with it is refused, never taken for a
//! new transaction). An open transaction whose owner (the client that began it, named by pid
//! and start time) has died is aborted by the next call on the store, as TMF backs out the
//! transactions of a process that failed; only the owner may step, commit or abort it. A member
//! that dies inside a step leaves that step undone (the step is one atomic write), so its
//! reissue runs it once. An effect may refuse a step (an overflow, insufficient funds) by
//! returning an errno: nothing is applied.
//!
//! The store is a directory: `ledger.json` holds the state (named integer values, such as
//! account balances) and every transaction with, per step, its reply and the values it changed
//! as they were before; `lock` is locked (`flock`) while a member works on the ledger, and the
//! kernel releases that lock when its holder dies. A change is written to a temporary file and
//! renamed over `ledger.json`, one atomic step: a member killed before the rename leaves
//! nothing, one killed after it leaves the whole change. This survives the kill of any member
//! (the file is in the page cache); it does not `fsync`, so a host crash may lose the last
//! changes. It is a teaching store: the whole ledger is rewritten each time, reads take no
//! locks (a step may read a value another open transaction changed), and committed
//! transactions are kept for ever.

use kernel_sim::process::{start_time, ProcessWatch};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The state: named integer values.
pub type State = BTreeMap<String, i64>;

/// The process that began a transaction: its pid and start time (which together name one
/// process for good, whatever pid reuse does).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The pid.
    pub pid: i32,
    /// Its start time ([`kernel_sim::process::start_time`]).
    pub start: u64,
}

impl Owner {
    /// The owner record of live process `pid` (a member passes the client's pid from
    /// `MsgInfo`); `None` if it is gone.
    pub fn of(pid: i32) -> Option<Owner> {
        start_time(pid).map(|start| Owner { pid, start })
    }

    /// Dead only when the system says so (no such process, or another one under its pid): a
    /// check that cannot be made (no file descriptor left, no pidfds) counts as alive, since
    /// aborting a live client's transaction would be worse than keeping a dead one's a while.
    fn alive(&self) -> bool {
        match ProcessWatch::new_checked(self.pid, self.start) {
            Ok(w) => !w.has_exited(),
            Err(e) => e != kernel_sim::Errno::SRCH,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    /// The step's number within its transaction.
    step: u32,
    /// The reply given.
    reply: Vec<u8>,
    /// The values it changed, as they were before (for an abort).
    before: Vec<(String, Option<i64>)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tx {
    committed: bool,
    owner: Option<Owner>,
    /// The steps, in the order they were applied.
    steps: Vec<Applied>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Ledger {
    state: State,
    txs: BTreeMap<u64, Tx>,
    /// The ids of aborted transactions: a late step or commit with one is refused, never taken
    /// for a new transaction (that would commit half of the aborted one's work).
    #[serde(default)]
    aborted: std::collections::BTreeSet<u64>,
}

impl Ledger {
    /// Rolls transaction `txid`'s steps back, newest first, and records it as aborted.
    fn roll_back(&mut self, txid: u64) -> bool {
        let Some(tx) = self.txs.remove(&txid) else {
            return false;
        };
        self.aborted.insert(txid);
        for a in tx.steps.into_iter().rev() {
            for (k, v) in a.before {
                match v {
                    Some(v) => self.state.insert(k, v),
                    None => self.state.remove(&k),
                };
            }
        }
        true
    }

    /// Aborts the open transactions whose owner has died; returns their ids.
    fn abort_orphans(&mut self) -> Vec<u64> {
        let dead: Vec<u64> = self
            .txs
            .iter()
            .filter(|(_, t)| !t.committed && t.owner.is_some_and(|o| !o.alive()))
            .map(|(id, _)| *id)
            .collect();
        for id in &dead {
            self.roll_back(*id);
            tracing::info!(txid = id, "transaction aborted: its owner died");
        }
        dead
    }

    /// The open transaction (other than `txid`) holding a lock on `key`.
    fn holder(&self, key: &str, txid: u64) -> Option<u64> {
        self.txs
            .iter()
            .filter(|(id, t)| **id != txid && !t.committed)
            .find(|(_, t)| {
                t.steps
                    .iter()
                    .any(|a| a.before.iter().any(|(k, _)| k == key))
            })
            .map(|(id, _)| *id)
    }
}

/// Errors of the transaction store.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The ledger could not be locked, read or written (nothing was applied). A ledger that
    /// does not parse is `InvalidData`, never taken for empty.
    #[error("transaction store I/O: {0}")]
    Io(#[from] io::Error),
    /// The step would change `key`, which open transaction `holder` has changed: nothing was
    /// applied. Abort and try again (or wait for the holder).
    #[error("transaction {txid}: {key} is locked by open transaction {holder}")]
    Conflict {
        /// The transaction of the step.
        txid: u64,
        /// The value in question.
        key: String,
        /// The open transaction that changed it.
        holder: u64,
    },
    /// The transaction is committed: it takes no new step and cannot be aborted.
    #[error("transaction {0} is committed")]
    Committed(u64),
    /// [`TxStore::apply`] on a transaction already open with steps of its own.
    #[error("transaction {0} is open with steps: use step and commit")]
    Open(u64),
    /// The transaction was aborted (by an abort, or because its owner died): it takes no step
    /// and no commit. Begin a new one, with a new id.
    #[error("transaction {0} was aborted")]
    Aborted(u64),
    /// A step, commit or abort from another client than the one that began the transaction.
    #[error("transaction {0} belongs to another client")]
    NotOwner(u64),
    /// The effect refused the step (insufficient funds, an overflow): nothing applied.
    #[error("transaction {txid}: the step was refused ({errno})")]
    Refused {
        /// The transaction.
        txid: u64,
        /// The effect's errno.
        errno: kernel_sim::Errno,
    },
}

impl TxError {
    /// The errno a member answers with: `EIO`, `EBUSY`, `EEXIST`, `EINVAL`, `ENOENT`,
    /// `EPERM`, and the effect's own (in that order).
    pub fn errno(&self) -> kernel_sim::Errno {
        use kernel_sim::Errno;
        match self {
            TxError::Io(_) => Errno::IO,
            TxError::Conflict { .. } => Errno::BUSY,
            TxError::Committed(_) => Errno::EXIST,
            TxError::Open(_) => Errno::INVAL,
            TxError::Aborted(_) => Errno::NOENT,
            TxError::NotOwner(_) => Errno::PERM,
            TxError::Refused { errno, .. } => *errno,
        }
    }
}

/// A shared transaction store (one directory, shared by the members of a class). One
/// `TxStore` may be shared by the threads of a process.
#[derive(Debug)]
pub struct TxStore {
    dir: PathBuf,
    lock: File,
    /// `flock` excludes other open files, not other threads using this one: the threads of
    /// this process take this first.
    threads: std::sync::Mutex<()>,
}

/// The store's `flock`, released on drop (a panicking effect must not leave it held).
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// What [`TxStore::apply`] and [`TxStore::step`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The transaction (or step) was applied now; its reply.
    Applied(Vec<u8>),
    /// It had been applied before (a reissue): the recorded reply.
    Recorded(Vec<u8>),
}

impl Outcome {
    /// The reply, either way.
    pub fn reply(&self) -> &[u8] {
        match self {
            Outcome::Applied(r) | Outcome::Recorded(r) => r,
        }
    }
}

/// What [`TxStore::snapshot`] shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The state (including the changes of open transactions).
    pub state: State,
    /// The committed transactions' ids.
    pub committed: Vec<u64>,
    /// The open transactions' ids.
    pub open: Vec<u64>,
}

impl TxStore {
    /// Opens (creating if needed) the store in directory `dir`.
    ///
    /// # Errors
    ///
    /// The I/O error of creating the directory or the lock file.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<TxStore> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        Ok(TxStore {
            dir,
            lock,
            threads: std::sync::Mutex::new(()),
        })
    }

    fn ledger_path(&self) -> PathBuf {
        self.dir.join("ledger.json")
    }

    /// Reads the ledger; a missing file is an empty ledger.
    fn read(&self) -> io::Result<Ledger> {
        match std::fs::read(self.ledger_path()) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Ledger::default()),
            Err(e) => Err(e),
        }
    }

    fn write(&self, l: &Ledger) -> io::Result<()> {
        let tmp = self.dir.join(format!("ledger.{}.tmp", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(l).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, self.ledger_path())
    }

    /// Runs `f` on the ledger under the store's lock, and writes the ledger back if `f` says
    /// it changed it (or if it aborted orphaned transactions on the way).
    fn with_ledger<T>(
        &self,
        f: impl FnOnce(&mut Ledger) -> (bool, Result<T, TxError>),
    ) -> Result<T, TxError> {
        self.locked(|l| {
            let orphans = l.abort_orphans();
            let (changed, r) = f(l);
            (changed || !orphans.is_empty(), r)
        })
    }

    /// Runs `f` on the ledger under the store's locks (this process's threads, then `flock`),
    /// and writes the ledger back if `f` says it changed it.
    fn locked<T>(
        &self,
        f: impl FnOnce(&mut Ledger) -> (bool, Result<T, TxError>),
    ) -> Result<T, TxError> {
        let _threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        self.lock.lock()?;
        let _locked = Locked(&self.lock);
        let mut l = self.read()?;
        let (changed, r) = f(&mut l);
        if changed {
            self.write(&l)?;
        }
        r
    }

    /// Checks that `owner` may act on transaction `t` (a different known owner may not).
    fn check_owner(t: &Tx, txid: u64, owner: Option<Owner>) -> Result<(), TxError> {
        match (t.owner, owner) {
            (Some(a), Some(b)) if a != b => Err(TxError::NotOwner(txid)),
            _ => Ok(()),
        }
    }

    /// A single-request transaction: runs `effect` for transaction `txid` exactly once across
    /// all members and commits it. If `txid` is recorded, its recorded reply comes back and
    /// `effect` does not run; otherwise `effect` changes the state and returns the reply, and
    /// the change and the record are written in one atomic step.
    ///
    /// # Errors
    ///
    /// - [`TxError::Io`]: the lock, the read or the write failed (nothing applied);
    /// - [`TxError::Conflict`]: it would change a value an open transaction holds;
    /// - [`TxError::Open`]: `txid` is an open multi-step transaction;
    /// - [`TxError::Aborted`]: `txid` was aborted;
    /// - [`TxError::Refused`]: the effect returned an error (nothing applied).
    pub fn apply(
        &self,
        txid: u64,
        effect: impl FnOnce(&mut State) -> Result<Vec<u8>, kernel_sim::Errno>,
    ) -> Result<Outcome, TxError> {
        self.with_ledger(|l| {
            if l.aborted.contains(&txid) {
                return (false, Err(TxError::Aborted(txid)));
            }
            if let Some(t) = l.txs.get(&txid) {
                return match (t.committed, t.steps.first()) {
                    (true, Some(a)) => (false, Ok(Outcome::Recorded(a.reply.clone()))),
                    (true, None) => (false, Err(TxError::Committed(txid))),
                    (false, _) => (false, Err(TxError::Open(txid))),
                };
            }
            match run_step(l, txid, 0, effect) {
                Ok(a) => {
                    let reply = a.reply.clone();
                    l.txs.insert(
                        txid,
                        Tx {
                            committed: true,
                            owner: None,
                            steps: vec![a],
                        },
                    );
                    (true, Ok(Outcome::Applied(reply)))
                }
                Err(e) => (false, Err(e)),
            }
        })
    }

    /// One step of a multi-request transaction: runs `effect` as step `step` of transaction
    /// `txid` exactly once (a reissued step is answered from its record), beginning the
    /// transaction if it is new; `owner` is the client that began it, whose death aborts it.
    /// The step's changes lock the values changed until the transaction commits or aborts.
    ///
    /// # Errors
    ///
    /// - [`TxError::Io`]: as [`TxStore::apply`];
    /// - [`TxError::Conflict`]: the step would change a value another open transaction holds
    ///   (nothing applied);
    /// - [`TxError::Committed`]: a new step of a committed transaction;
    /// - [`TxError::Aborted`]: the transaction was aborted (its owner died, or an abort);
    /// - [`TxError::NotOwner`]: another client began it;
    /// - [`TxError::Refused`]: the effect returned an error (nothing applied).
    pub fn step(
        &self,
        txid: u64,
        step: u32,
        owner: Option<Owner>,
        effect: impl FnOnce(&mut State) -> Result<Vec<u8>, kernel_sim::Errno>,
    ) -> Result<Outcome, TxError> {
        self.with_ledger(|l| {
            if l.aborted.contains(&txid) {
                return (false, Err(TxError::Aborted(txid)));
            }
            if let Some(t) = l.txs.get(&txid) {
                if let Err(e) = Self::check_owner(t, txid, owner) {
                    return (false, Err(e));
                }
                if let Some(a) = t.steps.iter().find(|a| a.step == step) {
                    return (false, Ok(Outcome::Recorded(a.reply.clone())));
                }
                if t.committed {
                    return (false, Err(TxError::Committed(txid)));
                }
            }
            match run_step(l, txid, step, effect) {
                Ok(a) => {
                    let reply = a.reply.clone();
                    let t = l.txs.entry(txid).or_default();
                    t.owner = t.owner.or(owner);
                    t.steps.push(a);
                    (true, Ok(Outcome::Applied(reply)))
                }
                Err(e) => (false, Err(e)),
            }
        })
    }

    /// Commits transaction `txid` (`ENDTRANSACTION`) for `owner`: its changes stay and its
    /// locks go. `Ok(true)` if it is committed (now or before: a reissued commit is harmless),
    /// `Ok(false)` if it was never begun.
    ///
    /// # Errors
    ///
    /// [`TxError::Io`]; [`TxError::Aborted`] (its owner died, or an abort);
    /// [`TxError::NotOwner`].
    pub fn commit(&self, txid: u64, owner: Option<Owner>) -> Result<bool, TxError> {
        self.with_ledger(|l| {
            if l.aborted.contains(&txid) {
                return (false, Err(TxError::Aborted(txid)));
            }
            match l.txs.get_mut(&txid) {
                Some(t) => {
                    if let Err(e) = Self::check_owner(t, txid, owner) {
                        return (false, Err(e));
                    }
                    let newly = !t.committed;
                    t.committed = true;
                    (newly, Ok(true))
                }
                None => (false, Ok(false)),
            }
        })
    }

    /// Aborts open transaction `txid` (`ABORTTRANSACTION`) for `owner`: rolls its steps back,
    /// newest first (each value changed gets the value it had before), and remembers the id as
    /// aborted. `Ok(false)` if there is no open transaction of that id (never begun, or
    /// aborted already).
    ///
    /// # Errors
    ///
    /// [`TxError::Io`]; [`TxError::Committed`] if it has committed (its changes are final);
    /// [`TxError::NotOwner`].
    pub fn abort(&self, txid: u64, owner: Option<Owner>) -> Result<bool, TxError> {
        self.with_ledger(|l| match l.txs.get(&txid) {
            Some(t) if t.committed => (false, Err(TxError::Committed(txid))),
            Some(t) => match Self::check_owner(t, txid, owner) {
                Ok(()) => (l.roll_back(txid), Ok(true)),
                Err(e) => (false, Err(e)),
            },
            None => (false, Ok(false)),
        })
    }

    /// Aborts every open transaction whose owner has died (every other call does this first,
    /// too); returns their ids.
    ///
    /// # Errors
    ///
    /// [`TxError::Io`].
    pub fn abort_orphans(&self) -> Result<Vec<u64>, TxError> {
        self.locked(|l| {
            let dead = l.abort_orphans();
            (!dead.is_empty(), Ok(dead))
        })
    }

    /// The state and the committed and open transactions.
    ///
    /// # Errors
    ///
    /// [`TxError::Io`].
    pub fn snapshot(&self) -> Result<Snapshot, TxError> {
        let l = {
            let _threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            self.lock.lock_shared()?;
            let _locked = Locked(&self.lock);
            self.read()?
        };
        Ok(Snapshot {
            state: l.state,
            committed: l
                .txs
                .iter()
                .filter(|(_, t)| t.committed)
                .map(|(id, _)| *id)
                .collect(),
            open: l
                .txs
                .iter()
                .filter(|(_, t)| !t.committed)
                .map(|(id, _)| *id)
                .collect(),
        })
    }
}

/// Runs `effect` on a copy of the state; if it changes nothing another open transaction holds,
/// makes the change and returns the step's record.
fn run_step(
    l: &mut Ledger,
    txid: u64,
    step: u32,
    effect: impl FnOnce(&mut State) -> Result<Vec<u8>, kernel_sim::Errno>,
) -> Result<Applied, TxError> {
    let mut next = l.state.clone();
    let reply = effect(&mut next).map_err(|errno| TxError::Refused { txid, errno })?;
    let mut keys: Vec<&String> = next.keys().chain(l.state.keys()).collect();
    keys.sort();
    keys.dedup();
    let before: Vec<(String, Option<i64>)> = keys
        .into_iter()
        .filter(|k| next.get(*k) != l.state.get(*k))
        .map(|k| (k.clone(), l.state.get(k).copied()))
        .collect();
    for (k, _) in &before {
        if let Some(holder) = l.holder(k, txid) {
            return Err(TxError::Conflict {
                txid,
                key: k.clone(),
                holder,
            });
        }
    }
    l.state = next;
    Ok(Applied {
        step,
        reply,
        before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(
        key: &'static str,
        n: i64,
    ) -> impl FnOnce(&mut State) -> Result<Vec<u8>, kernel_sim::Errno> {
        move |st: &mut State| {
            let v = st.entry(key.into()).or_default();
            *v += n;
            Ok(v.to_le_bytes().to_vec())
        }
    }

    fn tmp(tag: &str) -> (PathBuf, crate::test_support::Rm) {
        crate::test_support::tmp("qsim-tx-unit", tag)
    }

    #[test]
    fn applied_once_answered_from_the_record_and_a_corrupt_ledger_is_an_error() {
        let (dir, _rm) = tmp("one");
        let s = TxStore::open(&dir).unwrap();
        assert_eq!(
            s.apply(1, add("acct", 5)).unwrap(),
            Outcome::Applied(5i64.to_le_bytes().to_vec())
        );
        assert_eq!(
            s.apply(2, add("acct", 7)).unwrap(),
            Outcome::Applied(12i64.to_le_bytes().to_vec())
        );
        // A reissue of 1: answered from the record, not applied again.
        assert_eq!(
            s.apply(1, add("acct", 5)).unwrap(),
            Outcome::Recorded(5i64.to_le_bytes().to_vec())
        );
        // A committed transaction is final.
        assert!(matches!(s.abort(2, None), Err(TxError::Committed(2))));
        let snap = s.snapshot().unwrap();
        assert_eq!((snap.state["acct"], snap.committed), (12, vec![1, 2]));
        // A corrupt ledger is an error, not an empty ledger.
        std::fs::write(dir.join("ledger.json"), b"{not json").unwrap();
        assert!(matches!(
            s.apply(3, add("acct", 1)),
            Err(TxError::Io(e)) if e.kind() == io::ErrorKind::InvalidData
        ));
    }

    #[test]
    fn steps_lock_what_they_change_and_an_abort_rolls_them_all_back() {
        let (dir, _rm) = tmp("steps");
        let s = TxStore::open(&dir).unwrap();
        s.apply(1, add("a", 100)).unwrap();
        // Transaction 10: move 30 from a to b, in two steps.
        assert_eq!(
            s.step(10, 1, None, add("a", -30)).unwrap().reply(),
            70i64.to_le_bytes()
        );
        s.step(10, 2, None, add("b", 30)).unwrap();
        // A reissued step is answered from its record.
        assert_eq!(
            s.step(10, 1, None, add("a", -30)).unwrap(),
            Outcome::Recorded(70i64.to_le_bytes().to_vec())
        );
        // Another transaction cannot change what 10 holds; it can change other values.
        assert!(matches!(
            s.step(11, 1, None, add("b", 1)),
            Err(TxError::Conflict { holder: 10, .. })
        ));
        s.step(11, 1, None, add("c", 1)).unwrap();
        assert!(matches!(s.apply(10, add("z", 1)), Err(TxError::Open(10))));
        // Abort 10: both steps undone, b disappears again.
        assert!(s.abort(10, None).unwrap());
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.state.get("a"), Some(&100));
        assert_eq!(snap.state.get("b"), None);
        assert_eq!(snap.open, vec![11]);
        // Now 11 may change b; commit it (twice: a reissued commit is harmless).
        s.step(11, 2, None, add("b", 1)).unwrap();
        assert!(s.commit(11, None).unwrap() && s.commit(11, None).unwrap());
        // An aborted transaction takes no commit and no step: it is not begun again.
        assert!(matches!(s.commit(10, None), Err(TxError::Aborted(10))));
        assert!(matches!(
            s.step(10, 3, None, add("b", 1)),
            Err(TxError::Aborted(10))
        ));
        assert!(!s.commit(12, None).unwrap());
        assert!(matches!(
            s.step(11, 3, None, add("a", 1)),
            Err(TxError::Committed(11))
        ));
        let snap = s.snapshot().unwrap();
        assert_eq!((snap.committed, snap.open), (vec![1, 11], vec![]));
    }

    #[test]
    fn an_open_transaction_whose_owner_died_is_aborted() {
        let (dir, _rm) = tmp("orphan");
        let s = TxStore::open(&dir).unwrap();
        // The owner: a child killed on drop, even if the test fails.
        struct Child(std::process::Child);
        impl Drop for Child {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = Child(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        );
        let owner = Owner::of(child.0.id() as i32).unwrap();
        s.step(5, 1, Some(owner), add("x", 9)).unwrap();
        assert_eq!(s.abort_orphans().unwrap(), Vec::<u64>::new());
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        // The next call on the store aborts it, whatever the call.
        let snap_before = s.snapshot().unwrap();
        assert_eq!(snap_before.open, vec![5]);
        s.apply(6, add("y", 1)).unwrap();
        let snap = s.snapshot().unwrap();
        assert_eq!((snap.open, snap.state.get("x")), (vec![], None));
    }

    #[test]
    fn owners_refusals_threads_and_panics() {
        let (dir, _rm) = tmp("misc");
        let s = TxStore::open(&dir).unwrap();
        let me = Owner::of(std::process::id() as i32).unwrap();
        let other = Owner {
            pid: me.pid,
            start: me.start + 1,
        };
        s.step(1, 1, Some(me), add("a", -5)).unwrap();
        // Another client with the same id gets neither the record nor the commit.
        assert!(matches!(
            s.step(1, 1, Some(other), add("a", -5)),
            Err(TxError::NotOwner(1))
        ));
        assert!(matches!(
            s.commit(1, Some(other)),
            Err(TxError::NotOwner(1))
        ));
        assert!(matches!(s.abort(1, Some(other)), Err(TxError::NotOwner(1))));
        assert!(s.commit(1, Some(me)).unwrap());
        // An effect may refuse: nothing is applied, the errno comes back.
        let r = s.apply(2, |st| {
            let v = st.entry("a".into()).or_default();
            *v = v.checked_sub(i64::MAX).ok_or(kernel_sim::Errno::OVERFLOW)?;
            *v = v.checked_sub(10).ok_or(kernel_sim::Errno::OVERFLOW)?;
            Ok(Vec::new())
        });
        assert_eq!(r.unwrap_err().errno(), kernel_sim::Errno::OVERFLOW);
        assert_eq!(s.snapshot().unwrap().state["a"], -5);
        // A panicking effect does not leave the store locked.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.apply(3, |_| panic!("effect panics on purpose"));
        }));
        assert!(caught.is_err());
        s.apply(4, add("a", 1)).unwrap();
        // One store shared by threads: every apply is recorded once.
        std::thread::scope(|sc| {
            for t in 0..4u64 {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..50u64 {
                        s.apply(1000 + t * 100 + i, add("n", 1)).unwrap();
                    }
                });
            }
        });
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.state["n"], 200);
        assert_eq!(snap.committed.len(), 202);
    }
}
