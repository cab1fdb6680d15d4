//! Transactions for server classes: a small durable store that the members of a class share, in
//! which a member records the effect of a request and its transaction id in one atomic step, so
//! that a reissued request whose id is recorded is answered from the record instead of being
//! executed twice (exactly-once for the server's effects, where plain recovery is at-least-once).
//!
//! The store is a directory: `ledger.json` holds the state (named integer values, such as
//! account balances) and, for each applied transaction, its reply and what it changed; `lock` is
//! locked (`flock`) while a member works on the ledger, and the kernel releases that lock when
//! its holder dies. A change is written to a temporary file and renamed over `ledger.json`, one
//! atomic step: a member killed before the rename leaves nothing (its transaction is aborted, as
//! TMF leaves a transaction whose process died), one killed after it leaves the whole change.
//! This survives the kill of any member (the file is in the page cache); it does not `fsync`,
//! so a host crash may lose the last changes. It is a teaching store: the whole ledger is
//! rewritten each time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The state: named integer values.
pub type State = BTreeMap<String, i64>;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    /// The reply given.
    reply: Vec<u8>,
    /// The values it changed, as they were before (for an abort).
    before: Vec<(String, Option<i64>)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Ledger {
    state: State,
    applied: BTreeMap<u64, Applied>,
}

/// A shared transaction store (one directory, shared by the members of a class).
#[derive(Debug)]
pub struct TxStore {
    dir: PathBuf,
    lock: File,
}

/// What [`TxStore::apply`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The transaction was applied now; its reply.
    Applied(Vec<u8>),
    /// The transaction had been applied before (a reissue): the recorded reply.
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
    ///
    /// A ledger that does not parse (a corrupt file: the renames make a torn one impossible) is
    /// reported as `InvalidData`, never taken for empty.
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

    /// Runs `effect` for transaction `txid` exactly once across all members: if `txid` is
    /// recorded, its recorded reply comes back and `effect` does not run; otherwise `effect`
    /// changes the state and returns the reply, and the change and the record are written in one
    /// atomic step.
    ///
    /// # Errors
    ///
    /// The I/O error of the lock, the read or the write (the transaction is then not applied).
    pub fn apply(
        &self,
        txid: u64,
        effect: impl FnOnce(&mut State) -> Vec<u8>,
    ) -> io::Result<Outcome> {
        self.lock.lock()?;
        let r = (|| {
            let mut l = self.read()?;
            if let Some(a) = l.applied.get(&txid) {
                return Ok(Outcome::Recorded(a.reply.clone()));
            }
            let before_state = l.state.clone();
            let reply = effect(&mut l.state);
            let mut keys: Vec<&String> = l.state.keys().chain(before_state.keys()).collect();
            keys.sort();
            keys.dedup();
            let before = keys
                .into_iter()
                .filter(|k| l.state.get(*k) != before_state.get(*k))
                .map(|k| (k.clone(), before_state.get(k).copied()))
                .collect();
            l.applied.insert(
                txid,
                Applied {
                    reply: reply.clone(),
                    before,
                },
            );
            self.write(&l)?;
            Ok(Outcome::Applied(reply))
        })();
        let _ = self.lock.unlock();
        r
    }

    /// Aborts transaction `txid`: rolls its changes back (each value it changed gets the value
    /// it had before) and forgets its id. `Ok(false)` if it was not recorded.
    ///
    /// # Errors
    ///
    /// As [`TxStore::apply`].
    pub fn abort(&self, txid: u64) -> io::Result<bool> {
        self.lock.lock()?;
        let r = (|| {
            let mut l = self.read()?;
            let Some(a) = l.applied.remove(&txid) else {
                return Ok(false);
            };
            for (k, v) in a.before {
                match v {
                    Some(v) => l.state.insert(k, v),
                    None => l.state.remove(&k),
                };
            }
            self.write(&l)?;
            Ok(true)
        })();
        let _ = self.lock.unlock();
        r
    }

    /// The current state and the ids of the applied transactions.
    ///
    /// # Errors
    ///
    /// As [`TxStore::apply`].
    pub fn snapshot(&self) -> io::Result<(State, Vec<u64>)> {
        self.lock.lock_shared()?;
        let r = self.read();
        let _ = self.lock.unlock();
        let l = r?;
        Ok((l.state, l.applied.keys().copied().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_once_answered_from_the_record_and_rolled_back_on_abort() {
        let dir = std::env::temp_dir().join(format!("qsim-tx-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = TxStore::open(&dir).unwrap();
        let add = |n: i64| {
            move |st: &mut State| {
                let v = st.entry("acct".into()).or_default();
                *v += n;
                v.to_le_bytes().to_vec()
            }
        };
        assert_eq!(
            s.apply(1, add(5)).unwrap(),
            Outcome::Applied(5i64.to_le_bytes().to_vec())
        );
        assert_eq!(
            s.apply(2, add(7)).unwrap(),
            Outcome::Applied(12i64.to_le_bytes().to_vec())
        );
        // A reissue of 1: answered from the record, not applied again.
        assert_eq!(
            s.apply(1, add(5)).unwrap(),
            Outcome::Recorded(5i64.to_le_bytes().to_vec())
        );
        assert_eq!(s.snapshot().unwrap().0["acct"], 12);
        assert!(s.abort(2).unwrap());
        assert!(!s.abort(2).unwrap());
        let (st, ids) = s.snapshot().unwrap();
        assert_eq!((st["acct"], ids), (5, vec![1]));
        // A corrupt ledger is an error, not an empty ledger.
        std::fs::write(dir.join("ledger.json"), b"{not json").unwrap();
        assert_eq!(
            s.apply(3, add(1)).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
