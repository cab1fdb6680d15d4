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
//! and forgets the id. An open transaction whose owner (the client that began it, named by pid
//! and start time) has died is aborted by the next call on the store, as TMF backs out the
//! transactions of a process that failed; a member that dies inside a step leaves that step
//! undone (the step is one atomic write), so its reissue runs it once.
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

    fn alive(&self) -> bool {
        ProcessWatch::new_checked(self.pid, self.start).is_ok_and(|w| !w.has_exited())
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
}

impl Ledger {
    /// Rolls transaction `txid`'s steps back, newest first, and forgets it.
    fn roll_back(&mut self, txid: u64) -> bool {
        let Some(tx) = self.txs.remove(&txid) else {
            return false;
        };
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
}

impl TxError {
    /// The errno a member answers with: `EIO`, `EBUSY`, `EEXIST`, `EINVAL` (in that order).
    pub fn errno(&self) -> kernel_sim::Errno {
        use kernel_sim::Errno;
        match self {
            TxError::Io(_) => Errno::IO,
            TxError::Conflict { .. } => Errno::BUSY,
            TxError::Committed(_) => Errno::EXIST,
            TxError::Open(_) => Errno::INVAL,
        }
    }
}

/// A shared transaction store (one directory, shared by the members of a class).
#[derive(Debug)]
pub struct TxStore {
    dir: PathBuf,
    lock: File,
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
        Ok(TxStore { dir, lock })
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
        self.lock.lock()?;
        let r = (|| {
            let mut l = self.read()?;
            let orphans = l.abort_orphans();
            let (changed, r) = f(&mut l);
            if changed || !orphans.is_empty() {
                self.write(&l)?;
            }
            r
        })();
        let _ = self.lock.unlock();
        r
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
    /// - [`TxError::Open`]: `txid` is an open multi-step transaction.
    pub fn apply(
        &self,
        txid: u64,
        effect: impl FnOnce(&mut State) -> Vec<u8>,
    ) -> Result<Outcome, TxError> {
        self.with_ledger(|l| {
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
    /// - [`TxError::Committed`]: a new step of a committed transaction.
    pub fn step(
        &self,
        txid: u64,
        step: u32,
        owner: Option<Owner>,
        effect: impl FnOnce(&mut State) -> Vec<u8>,
    ) -> Result<Outcome, TxError> {
        self.with_ledger(|l| {
            if let Some(t) = l.txs.get(&txid) {
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

    /// Commits transaction `txid` (`ENDTRANSACTION`): its changes stay and its locks go.
    /// `Ok(true)` if it is committed (now or before: a reissued commit is harmless), `Ok(false)`
    /// if there is no such transaction (never begun, or aborted: its owner died, or an abort).
    ///
    /// # Errors
    ///
    /// [`TxError::Io`].
    pub fn commit(&self, txid: u64) -> Result<bool, TxError> {
        self.with_ledger(|l| match l.txs.get_mut(&txid) {
            Some(t) if t.committed => (false, Ok(true)),
            Some(t) => {
                t.committed = true;
                (true, Ok(true))
            }
            None => (false, Ok(false)),
        })
    }

    /// Aborts open transaction `txid` (`ABORTTRANSACTION`): rolls its steps back, newest first
    /// (each value changed gets the value it had before), and forgets its id. `Ok(false)` if
    /// there is no such transaction.
    ///
    /// # Errors
    ///
    /// [`TxError::Io`]; [`TxError::Committed`] if it has committed (its changes are final).
    pub fn abort(&self, txid: u64) -> Result<bool, TxError> {
        self.with_ledger(|l| match l.txs.get(&txid) {
            Some(t) if t.committed => (false, Err(TxError::Committed(txid))),
            Some(_) => (l.roll_back(txid), Ok(true)),
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
        self.lock.lock()?;
        let r = (|| {
            let mut l = self.read()?;
            let dead = l.abort_orphans();
            if !dead.is_empty() {
                self.write(&l)?;
            }
            Ok(dead)
        })();
        let _ = self.lock.unlock();
        r
    }

    /// The state and the committed and open transactions.
    ///
    /// # Errors
    ///
    /// [`TxError::Io`].
    pub fn snapshot(&self) -> Result<Snapshot, TxError> {
        self.lock.lock_shared()?;
        let r = self.read();
        let _ = self.lock.unlock();
        let l = r?;
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
    effect: impl FnOnce(&mut State) -> Vec<u8>,
) -> Result<Applied, TxError> {
    let mut next = l.state.clone();
    let reply = effect(&mut next);
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

    fn add(key: &'static str, n: i64) -> impl FnOnce(&mut State) -> Vec<u8> {
        move |st: &mut State| {
            let v = st.entry(key.into()).or_default();
            *v += n;
            v.to_le_bytes().to_vec()
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
        assert!(matches!(s.abort(2), Err(TxError::Committed(2))));
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
        // Abort 10: both steps undone, b disappears again, the id is forgotten.
        assert!(s.abort(10).unwrap());
        let snap = s.snapshot().unwrap();
        assert_eq!(snap.state.get("a"), Some(&100));
        assert_eq!(snap.state.get("b"), None);
        assert_eq!(snap.open, vec![11]);
        // Now 11 may change b; commit it (twice: a reissued commit is harmless).
        s.step(11, 2, None, add("b", 1)).unwrap();
        assert!(s.commit(11).unwrap() && s.commit(11).unwrap());
        assert!(!s.commit(10).unwrap());
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
}
