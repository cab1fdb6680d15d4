//! The server side of guaranteed delivery: a durable record of the highest sequence number
//! accepted from each sender (per incarnation of its area), so that a message sent again after
//! a lost acknowledgement (the server died after recording it, or the client restarted before
//! it saw the reply) is dropped as a duplicate, across restarts of the server too.
//!
//! The record is a log file of `SEEN` records (the same
//! format as the sender's area), each written with one `write(2)` before the acknowledgement is
//! sent. With `keep_payloads` the record holds the message as well: the log is then a durable
//! inbox, and "recorded" and "delivered" are one atomic step.

use super::record::{self, kind, Damage};
use super::wire::{ack, Delivery};
use super::{Durability, GmdError};
use kernel_sim::{Errno, Rcvid, System};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a [`GmdReceiver`] keeps its log.
#[derive(Clone, Copy, Debug)]
pub struct ReceiverOptions {
    /// Keep each message's payload in its record (the log becomes a durable inbox; payloads are
    /// stored hex-encoded, so that no sender can put bytes shaped like a record in the log).
    /// Default:
    /// false (only sender, incarnation and sequence number).
    pub keep_payloads: bool,
    /// When records are made durable (`fdatasync`). A record is in the page cache before the
    /// acknowledgement either way, which survives the kill of the server. Surviving a host crash
    /// needs [`Durability::EachRecord`] here **and** in the sender's area: with a batch, a crash
    /// can lose records of messages already acknowledged (and so gone from the sender).
    /// Default: [`Durability::Batch`] of 64.
    pub durability: Durability,
    /// How long [`GmdReceiver::open`] waits for the log's lock while a previous server holding
    /// it is still exiting. Default: 5 s.
    pub lock_wait: Duration,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            keep_payloads: false,
            durability: Durability::Batch(std::num::NonZeroU32::new(64).expect("64 > 0")),
            lock_wait: Duration::from_secs(5),
        }
    }
}

/// What [`GmdReceiver::accept`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// A message not seen before: recorded now.
    New,
    /// Seen before (its sequence number is at or below the sender's last): dropped.
    Duplicate,
}

/// A record of the receiver's log ([`GmdReceiver::read_log`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The sender.
    pub sender: String,
    /// Its area's incarnation.
    pub incarnation: u64,
    /// The sequence number.
    pub seq: u64,
    /// The message (empty unless the receiver keeps payloads).
    pub payload: Vec<u8>,
}

/// The receiving side's duplicate filter and delivery log (one per server; its threads share it
/// behind a lock).
#[derive(Debug)]
pub struct GmdReceiver {
    file: File,
    _lock: File,
    path: PathBuf,
    last: HashMap<(String, u64), u64>,
    opts: ReceiverOptions,
    unsynced: u32,
    damage: Vec<Damage>,
    /// The log's length after the last good record (a failed write is cut back to it).
    len: u64,
}

/// Lowercase hex: no byte of the record magic ("GMDR") can appear in it.
fn to_hex(b: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    b.iter()
        .flat_map(|x| [DIGITS[usize::from(x >> 4)], DIGITS[usize::from(x & 15)]])
        .collect()
}

fn from_hex(h: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if !h.len().is_multiple_of(2) {
        return None;
    }
    h.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

fn parse_seen(body: &[u8]) -> Option<Seen> {
    let incarnation = record::u64_at(body, 0)?;
    let seq = record::u64_at(body, 8)?;
    let slen = u16::from_le_bytes(body.get(16..18)?.try_into().ok()?) as usize;
    let sender = std::str::from_utf8(body.get(18..18 + slen)?).ok()?;
    Some(Seen {
        sender: sender.to_owned(),
        incarnation,
        seq,
        payload: from_hex(&body[18 + slen..])?,
    })
}

impl GmdReceiver {
    /// Opens (creating if needed) the log at `path` and rebuilds the last sequence number of
    /// every sender from it. Damage (a torn last record, corrupt bytes) is reported by
    /// [`GmdReceiver::damage`] and through `tracing`; the good records are kept.
    ///
    /// # Errors
    ///
    /// - [`GmdError::InUse`]: another live receiver holds the log (after `lock_wait`);
    /// - [`GmdError::Io`]: the file cannot be created or read.
    pub fn open(path: impl AsRef<Path>, opts: ReceiverOptions) -> Result<GmdReceiver, GmdError> {
        let path = path.as_ref().to_path_buf();
        if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d)?;
        }
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        let until = Instant::now().checked_add(opts.lock_wait);
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock)
                    if until.is_none_or(|u| Instant::now() < u) =>
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(std::fs::TryLockError::WouldBlock) => return Err(GmdError::InUse(path)),
                Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
            }
        }
        let (seen, damage) = Self::read_log(&path)?;
        for d in &damage {
            tracing::warn!(log = %path.display(), %d, "GMD receiver log damaged; good records kept");
        }
        let mut last: HashMap<(String, u64), u64> = HashMap::new();
        for s in seen {
            let e = last.entry((s.sender, s.incarnation)).or_default();
            *e = (*e).max(s.seq);
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if let Some(d) = damage
            .iter()
            .find(|d| d.kind == record::DamageKind::Truncated)
        {
            // A record torn by a killed server's write (always the last): cut it off, so that
            // the next record follows the last good one (it was never acknowledged: its sender
            // sends it again).
            file.set_len(d.offset)?;
        }
        let len = file.metadata()?.len();
        Ok(GmdReceiver {
            file,
            _lock: lock,
            path,
            last,
            opts,
            unsynced: 0,
            damage,
            len,
        })
    }

    /// What was found damaged in the log when it was opened.
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// Where the log is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest sequence number accepted from `sender`'s area `incarnation`.
    pub fn last_seq(&self, sender: &str, incarnation: u64) -> Option<u64> {
        self.last.get(&(sender.to_owned(), incarnation)).copied()
    }

    /// Decides whether `d` is new and, if it is, records it (one write, before returning).
    ///
    /// # Errors
    ///
    /// The I/O error of the write: the message is then not accepted (answer it with an error,
    /// and the sender will send it again).
    pub fn accept(&mut self, d: &Delivery<'_>) -> io::Result<Accepted> {
        if self.last_seq(d.sender, d.incarnation) >= Some(d.seq) {
            return Ok(Accepted::Duplicate);
        }
        // Hex: a payload comes from another process, and its bytes must not be able to look
        // like a record to the scan that reads the log back after damage.
        let payload = if self.opts.keep_payloads {
            to_hex(d.payload)
        } else {
            Vec::new()
        };
        let rec = record::encode(
            kind::SEEN,
            &[
                &d.incarnation.to_le_bytes(),
                &d.seq.to_le_bytes(),
                &(d.sender.len() as u16).to_le_bytes(),
                d.sender.as_bytes(),
                &payload,
            ],
        );
        if let Err(e) = self.file.write_all(&rec) {
            // A part of a record (a full disk) is cut off again: its length would swallow the
            // records after it.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += rec.len() as u64;
        // Recorded (in the page cache) from here: a failed sync below must not let a resend
        // be written a second time.
        self.last
            .insert((d.sender.to_owned(), d.incarnation), d.seq);
        self.unsynced += 1;
        let due = match self.opts.durability {
            Durability::EachRecord => true,
            Durability::Batch(n) => self.unsynced >= n.get(),
        };
        if due {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(Accepted::New)
    }

    /// Serves one delivery message `msg` received as `rcvid` (all of it: read the rest with
    /// `msg_read` first if it was longer than the receive buffer): decodes it; a duplicate is
    /// acknowledged at once; a new one is handed to `effect`, then recorded, then acknowledged.
    /// Returns what happened, and the delivery (borrowed from `msg`).
    ///
    /// A server killed after `effect` but before the record makes the sender send the message
    /// again, and `effect` runs again: at-least-once for the effect, unless the effect is the
    /// record itself (`keep_payloads`) or is made idempotent by the sequence number.
    ///
    /// # Errors
    ///
    /// The errno the sender was answered with: `EBADMSG` for a malformed message, the
    /// effect's own errno (the sender raises a refused-failure event; `EAGAIN` asks it to send
    /// again later instead), `EAGAIN` if the record could not be written (a passing disk
    /// problem must not make the sender give the message up).
    pub fn serve<'m>(
        &mut self,
        sys: &System,
        rcvid: Rcvid,
        msg: &'m [u8],
        effect: impl FnOnce(&Delivery<'m>) -> Result<(), Errno>,
    ) -> Result<(Accepted, Delivery<'m>), Errno> {
        let d = match Delivery::decode(msg) {
            Ok(d) => d,
            Err(e) => {
                let _ = sys.msg_error(rcvid, e);
                return Err(e);
            }
        };
        if self.last_seq(d.sender, d.incarnation) >= Some(d.seq) {
            let _ = sys.msg_reply(rcvid, ack::DUPLICATE, &[]);
            return Ok((Accepted::Duplicate, d));
        }
        if let Err(e) = effect(&d) {
            let _ = sys.msg_error(rcvid, e);
            return Err(e);
        }
        match self.accept(&d) {
            Ok(a) => {
                let status = match a {
                    Accepted::New => ack::NEW,
                    Accepted::Duplicate => ack::DUPLICATE,
                };
                let _ = sys.msg_reply(rcvid, status, &[]);
                Ok((a, d))
            }
            Err(e) => {
                tracing::warn!(log = %self.path.display(), error = %e, "GMD receiver cannot record");
                let _ = sys.msg_error(rcvid, Errno::AGAIN);
                Err(Errno::AGAIN)
            }
        }
    }

    /// Makes every record written so far durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The I/O error of the sync.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced > 0 {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Reads the log at `path` (what tests and tools check): every good record in order, and
    /// the damage skipped. A missing file is an empty log.
    ///
    /// # Errors
    ///
    /// The I/O error of the read.
    pub fn read_log(path: impl AsRef<Path>) -> io::Result<(Vec<Seen>, Vec<Damage>)> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(e),
        };
        let (records, mut damage) = record::scan(&bytes);
        let mut seen = Vec::with_capacity(records.len());
        for r in records.iter().filter(|r| r.kind == kind::SEEN) {
            match parse_seen(r.body) {
                Some(s) => seen.push(s),
                None => damage.push(Damage {
                    offset: r.offset,
                    len: (record::HEADER + r.body.len()) as u64,
                    kind: record::DamageKind::Corrupt,
                }),
            }
        }
        Ok((seen, damage))
    }
}

impl Drop for GmdReceiver {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_cannot_plant_a_record_in_the_inbox() {
        let (dir, _rm) = crate::test_support::tmp("qsim-gmd-rx-unit", "plant");
        let log = dir.join("inbox");
        let opts = ReceiverOptions {
            keep_payloads: true,
            ..ReceiverOptions::default()
        };
        // A payload that is a whole, valid SEEN record claiming seq u64::MAX for "victim".
        let forged = record::encode(
            kind::SEEN,
            &[
                &7u64.to_le_bytes(),
                &u64::MAX.to_le_bytes(),
                &6u16.to_le_bytes(),
                b"victim",
            ],
        );
        {
            let mut rx = GmdReceiver::open(&log, opts).unwrap();
            let d = Delivery {
                sender: "evil",
                incarnation: 1,
                seq: 1,
                payload: &forged,
            };
            assert_eq!(rx.accept(&d).unwrap(), Accepted::New);
        }
        // The payload comes back as it was sent.
        let (seen, _) = GmdReceiver::read_log(&log).unwrap();
        assert_eq!(seen[0].payload, forged);
        // Damage the carrier's header: the scan resynchronises, and finds no planted record.
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&log, &bytes).unwrap();
        let rx = GmdReceiver::open(&log, opts).unwrap();
        assert_eq!(rx.last_seq("victim", 7), None);
        assert!(!rx.damage().is_empty());
    }
}
