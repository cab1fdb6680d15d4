//! A sender's delivery area on disk: `<dir>/<sender>.gmd`, an append-only file of records
//! ([`super::record`]) from which the messages not yet taken out are rebuilt when the sender
//! starts again, and `<dir>/<sender>.lock`, locked (`flock`) while a sender uses the area so
//! that two live senders cannot share it (the kernel drops the lock of a killed one).
//!
//! The file is rewritten (to a temporary file, then renamed over it) when it has grown by
//! `compact_bytes` since the last rewrite, and when it was found damaged; a damaged file is
//! first kept beside it as `<sender>.gmd.damaged`, for a post-mortem.

use super::record::{self, kind, Damage};
use super::{Durability, GmdError};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A message in the area.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub payload: Vec<u8>,
    /// When its delivery times out (Unix ms), if it does.
    pub deadline_ms: Option<i64>,
    /// Its delivery timeout (a resend gets a new deadline this far ahead).
    pub timeout: Option<Duration>,
}

/// What an area file held.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub incarnation: Option<u64>,
    pub next_seq: u64,
    pub pending: BTreeMap<u64, Stored>,
    pub damage: Vec<Damage>,
}

pub(crate) fn ms_field(v: Option<i64>) -> [u8; 8] {
    v.unwrap_or(-1).to_le_bytes()
}

fn opt_ms(v: i64) -> Option<i64> {
    (v >= 0).then_some(v)
}

/// The record of message `seq` of area `incarnation` put in the area. (Each message names the
/// incarnation, so that the area keeps it even if its base record is lost to damage: a
/// message sent again under another incarnation would slip past the receiver's filter.)
pub(crate) fn message_record(
    seq: u64,
    incarnation: u64,
    deadline_ms: Option<i64>,
    timeout: Option<Duration>,
    payload: &[u8],
) -> Vec<u8> {
    let t = timeout.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
    record::encode(
        kind::MESSAGE,
        &[
            &seq.to_le_bytes(),
            &incarnation.to_le_bytes(),
            &ms_field(deadline_ms),
            &ms_field(t),
            payload,
        ],
    )
}

/// A message as [`FileArea::compact`] writes it: sequence number, deadline (Unix ms),
/// timeout, payload (the incarnation is the compaction's).
pub(crate) type Pending<'a> = (u64, Option<i64>, Option<Duration>, &'a [u8]);

/// Rebuilds the area from the records of a file.
///
/// The next sequence number is above every one any record names. If part of the file was
/// damaged it is raised further, by one for each record the damaged bytes could have held: a
/// lost record may have named a message the receiver has, and a number used twice would make
/// the receiver drop the second message as a duplicate (gaps do no harm).
pub(crate) fn load(bytes: &[u8]) -> Loaded {
    let (records, damage) = record::scan(bytes);
    let mut l = Loaded {
        next_seq: 1,
        damage,
        ..Loaded::default()
    };
    let seen = |l: &mut Loaded, seq: u64| l.next_seq = l.next_seq.max(seq.saturating_add(1));
    for r in records {
        let b = r.body;
        match r.kind {
            kind::BASE => {
                if let (Some(inc), Some(next)) = (record::u64_at(b, 0), record::u64_at(b, 8)) {
                    l.incarnation.get_or_insert(inc);
                    l.next_seq = l.next_seq.max(next);
                }
            }
            kind::MESSAGE => {
                let (Some(seq), Some(inc), Some(dl), Some(t)) = (
                    record::u64_at(b, 0),
                    record::u64_at(b, 8),
                    record::i64_at(b, 16),
                    record::i64_at(b, 24),
                ) else {
                    continue;
                };
                if seq == 0 {
                    continue;
                }
                l.incarnation.get_or_insert(inc);
                seen(&mut l, seq);
                l.pending.insert(
                    seq,
                    Stored {
                        payload: b[32..].to_vec(),
                        deadline_ms: opt_ms(dl),
                        timeout: opt_ms(t).map(|t| Duration::from_millis(t as u64)),
                    },
                );
            }
            kind::DONE => {
                if let Some(seq) = record::u64_at(b, 0) {
                    seen(&mut l, seq);
                    l.pending.remove(&seq);
                }
            }
            kind::RESENT => {
                if let (Some(seq), Some(dl)) = (record::u64_at(b, 0), record::i64_at(b, 8)) {
                    seen(&mut l, seq);
                    if let Some(s) = l.pending.get_mut(&seq) {
                        s.deadline_ms = opt_ms(dl);
                    }
                }
            }
            _ => {}
        }
    }
    let lost: u64 = l.damage.iter().map(|d| d.len).sum();
    if lost > 0 {
        l.next_seq = l.next_seq.saturating_add(lost / record::HEADER as u64 + 1);
    }
    l
}

/// An open area file.
#[derive(Debug)]
pub(crate) struct FileArea {
    file: File,
    _lock: File,
    path: PathBuf,
    durability: Durability,
    unsynced: u32,
    grown: u64,
    compact_bytes: u64,
    /// The file's length after the last good record (a failed append is cut back to it).
    len: u64,
}

impl FileArea {
    /// Opens (creating if needed) the area of `sender` in `dir`.
    ///
    /// # Errors
    ///
    /// [`GmdError::InUse`] if a live sender holds it; [`GmdError::Io`] otherwise.
    pub fn open(
        dir: &Path,
        sender: &str,
        durability: Durability,
        compact_bytes: u64,
    ) -> Result<(FileArea, Loaded), GmdError> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{sender}.gmd"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{sender}.lock")))?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => GmdError::InUse(path),
                std::fs::TryLockError::Error(e) => GmdError::Io(e),
            });
        }
        let loaded = match std::fs::read(&path) {
            Ok(b) => load(&b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded {
                next_seq: 1,
                ..Loaded::default()
            },
            Err(e) => return Err(e.into()),
        };
        if !loaded.damage.is_empty() {
            // Keep the damaged file for a post-mortem; the area is rewritten from what was good.
            let _ = std::fs::copy(&path, dir.join(format!("{sender}.gmd.damaged")));
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        Ok((
            FileArea {
                file,
                _lock: lock,
                path,
                durability,
                unsynced: 0,
                grown: 0,
                compact_bytes,
                len,
            },
            loaded,
        ))
    }

    /// Appends a record. A `MESSAGE` record (`durable`) is made durable as the area's
    /// [`Durability`] says; the others ride along with the next sync (losing one makes a
    /// message be sent again, which the receiver drops as a duplicate).
    ///
    /// A record that could not be written (a full disk), or not made durable when it had to be,
    /// is cut off again: the caller reports the error, and the file does not keep a part of a
    /// record whose length would swallow the records after it.
    pub fn append(&mut self, rec: &[u8], durable: bool) -> io::Result<()> {
        let r = (|| {
            self.file.write_all(rec)?;
            if durable {
                self.unsynced += 1;
                let due = match self.durability {
                    Durability::EachRecord => true,
                    Durability::Batch(n) => self.unsynced >= n.get(),
                };
                if due {
                    self.sync()?;
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => {
                self.len += rec.len() as u64;
                self.grown += rec.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Makes everything written so far durable (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Whether the file has grown enough to be rewritten.
    pub fn wants_compaction(&self) -> bool {
        self.grown >= self.compact_bytes
    }

    /// Puts off the next rewrite by another `compact_bytes` (after one failed).
    pub fn defer_compaction(&mut self) {
        self.grown = 0;
    }

    /// Rewrites the file with just the base and the messages still in the area: to a
    /// temporary file, made durable, then renamed over the area (one atomic step).
    pub fn compact<'a>(
        &mut self,
        incarnation: u64,
        next_seq: u64,
        pending: impl Iterator<Item = Pending<'a>>,
    ) -> io::Result<()> {
        let mut bytes = record::encode(
            kind::BASE,
            &[&incarnation.to_le_bytes(), &next_seq.to_le_bytes()],
        );
        for (seq, dl, t, payload) in pending {
            bytes.extend_from_slice(&message_record(seq, incarnation, dl, t, payload));
        }
        let tmp = self.path.with_extension("gmd.tmp");
        // Written and made durable before the rename; the handle (opened for appending) is
        // kept for the records that follow, so there is no reopen to fail after the rename.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = f;
        self.len = bytes.len() as u64;
        self.grown = 0;
        self.unsynced = 0;
        // The rename itself is durable once the directory is; the area is right either way.
        if let Some(dir) = self.path.parent() {
            if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
                tracing::warn!(dir = %dir.display(), error = %e, "GMD area directory not synced");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_area_is_rebuilt_from_its_records() {
        let t = Some(Duration::from_millis(500));
        let mut f = record::encode(kind::BASE, &[&42u64.to_le_bytes(), &1u64.to_le_bytes()]);
        f.extend(message_record(1, 42, Some(1000), t, b"one"));
        f.extend(message_record(2, 42, None, t, b"two"));
        f.extend(message_record(3, 42, Some(3000), t, b"three"));
        f.extend(record::encode(kind::DONE, &[&1u64.to_le_bytes(), &[1]]));
        f.extend(record::encode(
            kind::RESENT,
            &[&3u64.to_le_bytes(), &9000i64.to_le_bytes()],
        ));
        let l = load(&f);
        assert_eq!((l.incarnation, l.next_seq), (Some(42), 4));
        assert_eq!(l.pending.keys().copied().collect::<Vec<_>>(), [2, 3]);
        assert_eq!(l.pending[&2].payload, b"two");
        assert_eq!(l.pending[&2].deadline_ms, None);
        assert_eq!(l.pending[&3].deadline_ms, Some(9000));
        assert_eq!(l.pending[&3].timeout, Some(Duration::from_millis(500)));
        assert!(l.damage.is_empty());
        // Without its base record (damaged), the area keeps its incarnation from a message,
        // and numbers above whatever the damaged bytes may have named.
        let base_len = record::encode(kind::BASE, &[&[0u8; 16]]).len();
        let mut g = f.clone();
        g[5] = 1;
        let l = load(&g);
        assert_eq!(l.incarnation, Some(42));
        assert_eq!(l.next_seq, 4 + base_len as u64 / record::HEADER as u64 + 1);
        // Acknowledged messages (only their DONE records left) still count.
        let h = record::encode(kind::DONE, &[&9u64.to_le_bytes(), &[1]]);
        assert_eq!(load(&h).next_seq, 10);
    }
}
