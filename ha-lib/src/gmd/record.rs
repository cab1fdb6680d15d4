//! The record format of guaranteed delivery's files (the sender's delivery area and the
//! receiver's log), and the scan that reads them back while reporting damage.
//!
//! A record is a 20-byte header and a body, little-endian:
//!
//! ```text
//! 0   u32  magic "GMDR"
//! 4   u8   kind
//! 5   [u8; 3] zero
//! 8   u32  body length
//! 12  u32  CRC-32 of the body
//! 16  u32  CRC-32 of bytes 0..16 (the header)
//! 20  body
//! ```
//!
//! Each record is written with one `write(2)` to a file opened for appending. A writer killed
//! in the middle leaves a torn record at the end of the file; bit rot or a foreign write leaves
//! a record whose checksums do not match. [`scan`] keeps every record that checks and reports
//! the bytes that do not (with their offset). A header that checks is trusted for its length:
//! a body that fails its checksum is skipped whole, and one that runs past the end of the file
//! is a torn record, so the scan never looks for records *inside* a body (where a payload
//! could carry bytes that look like one). Only after a header that does not check does it
//! resynchronise, on the next header that does.

/// The magic that starts every record ("GMDR").
pub const MAGIC: u32 = u32::from_le_bytes(*b"GMDR");
/// The header's length.
pub const HEADER: usize = 20;
/// The largest body a record may have (a length above it is damage, not an allocation).
pub const MAX_BODY: usize = 64 << 20;

/// A record's kind (byte 4).
pub mod kind {
    /// Sender area: `{u64 incarnation, u64 next_seq}`, the first record of every area file.
    pub const BASE: u8 = 1;
    /// Sender area: `{u64 seq, i64 deadline (Unix ms, -1 none), i64 timeout (ms, -1 none),
    /// payload}`, a message put in the area.
    pub const MESSAGE: u8 = 2;
    /// Sender area: `{u64 seq, u8 how}`, a message taken out (acknowledged or deleted).
    pub const DONE: u8 = 3;
    /// Sender area: `{u64 seq, i64 deadline (Unix ms, -1 none)}`, a message resent after a
    /// failure, with its new deadline.
    pub const RESENT: u8 = 4;
    /// Receiver log: `{u64 incarnation, u64 seq, u16 sender length, sender, payload}`, a
    /// message accepted (the payload only when the receiver keeps payloads).
    pub const SEEN: u8 = 5;
}

/// What was wrong with a stretch of a file that the scan of its records could not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageKind {
    /// The file ends inside a record (a writer killed in the middle of a write, or a file cut
    /// short): the record is lost, every record before it is kept.
    Truncated,
    /// Bytes that are not a record, or a record whose CRC does not match.
    Corrupt,
}

/// A damaged stretch of a file: reported, skipped, and the good records around it kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The byte offset where it starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// What kind of damage.
    pub kind: DamageKind,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            DamageKind::Truncated => "truncated record",
            DamageKind::Corrupt => "corrupt bytes",
        };
        write!(f, "{what} at offset {} ({} bytes)", self.offset, self.len)
    }
}

/// Encodes one record of `kind` whose body is the concatenation of `parts` (callers bound
/// their bodies far below [`MAX_BODY`]).
pub fn encode(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut r = Vec::with_capacity(HEADER + len);
    r.extend_from_slice(&MAGIC.to_le_bytes());
    r.extend_from_slice(&[kind, 0, 0, 0]);
    r.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    r.extend_from_slice(&[0; 8]);
    let mut body = crc32fast::Hasher::new();
    for p in parts {
        body.update(p);
        r.extend_from_slice(p);
    }
    r[12..16].copy_from_slice(&body.finalize().to_le_bytes());
    let head = crc32fast::hash(&r[..16]);
    r[16..20].copy_from_slice(&head.to_le_bytes());
    r
}

/// A record that checked: its kind and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The kind ([`kind`]).
    pub kind: u8,
    /// Its offset in the file.
    pub offset: u64,
    /// The body.
    pub body: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads a `u64` at `at` of `b` (None if `b` is too short).
pub fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads an `i64` at `at` of `b` (None if `b` is too short).
pub fn i64_at(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// What the bytes at a position are.
enum At<'a> {
    /// A record that checks, and its whole length.
    Good(Record<'a>, usize),
    /// A header that checks with a body that does not: skip its whole length.
    BadBody(usize),
    /// A record cut short by the end of the file.
    Torn,
    /// Not a header that checks.
    NotHeader,
}

/// Whether `b` starts with a header that checks; its body length if so.
fn header_at(b: &[u8]) -> Option<usize> {
    let h = b.get(..HEADER)?;
    if u32_at(h, 0) != Some(MAGIC) || u32_at(h, 16) != Some(crc32fast::hash(&h[..16])) {
        return None;
    }
    let len = u32_at(h, 8)? as usize;
    (h[5..8] == [0, 0, 0] && len <= MAX_BODY).then_some(len)
}

fn record_at(b: &[u8]) -> At<'_> {
    let Some(len) = header_at(b) else {
        // Too short for a header at the end of the file: a torn one if it starts like one.
        let m = MAGIC.to_le_bytes();
        let n = b.len().min(4);
        return if b.len() < HEADER && b[..n] == m[..n] {
            At::Torn
        } else {
            At::NotHeader
        };
    };
    let Some(body) = b.get(HEADER..HEADER + len) else {
        return At::Torn;
    };
    if u32_at(b, 12) != Some(crc32fast::hash(body)) {
        return At::BadBody(HEADER + len);
    }
    At::Good(
        Record {
            kind: b[4],
            offset: 0,
            body,
        },
        HEADER + len,
    )
}

/// Reads every record of `bytes` that checks, in order, and reports what it skipped.
pub fn scan(bytes: &[u8]) -> (Vec<Record<'_>>, Vec<Damage>) {
    let mut out = Vec::new();
    let mut damage = Vec::new();
    let mut pos = 0usize;
    let magic = MAGIC.to_le_bytes();
    let mut note = |offset: usize, len: usize, kind| {
        damage.push(Damage {
            offset: offset as u64,
            len: len as u64,
            kind,
        })
    };
    while pos < bytes.len() {
        match record_at(&bytes[pos..]) {
            At::Good(r, n) => {
                out.push(Record {
                    offset: pos as u64,
                    ..r
                });
                pos += n;
            }
            At::BadBody(n) => {
                note(pos, n, DamageKind::Corrupt);
                pos += n;
            }
            At::Torn => {
                note(pos, bytes.len() - pos, DamageKind::Truncated);
                pos = bytes.len();
            }
            At::NotHeader => {
                // Resynchronise on the next header that checks (or a torn one at the end).
                let mut next = pos + 1;
                let resume = loop {
                    match bytes[next..].windows(4).position(|w| w == magic) {
                        None => break None,
                        Some(i) => {
                            let at = next + i;
                            if header_at(&bytes[at..]).is_some() {
                                break Some(at);
                            }
                            next = at + 1;
                        }
                    }
                };
                let end = resume.unwrap_or(bytes.len());
                note(pos, end - pos, DamageKind::Corrupt);
                pos = end;
            }
        }
    }
    (out, damage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_records_survive_truncation_and_corruption_around_them() {
        let a = encode(kind::BASE, &[&7u64.to_le_bytes(), &1u64.to_le_bytes()]);
        let b = encode(kind::DONE, &[&3u64.to_le_bytes(), &[1]]);
        let c = encode(kind::MESSAGE, &[&4u64.to_le_bytes(), b"hello"]);
        // Clean.
        let mut f = [a.clone(), b.clone(), c.clone()].concat();
        let (r, d) = scan(&f);
        assert_eq!((r.len(), d.len()), (3, 0));
        assert_eq!(r[2].body[8..], *b"hello");
        // A flipped byte in the middle record's body: it alone is lost, reported as corrupt.
        f[a.len() + HEADER + 2] ^= 0x40;
        let (r, d) = scan(&f);
        assert_eq!(r.iter().map(|r| r.kind).collect::<Vec<_>>(), [1, 2]);
        let bad = Damage {
            offset: a.len() as u64,
            len: b.len() as u64,
            kind: DamageKind::Corrupt,
        };
        assert_eq!(d, [bad]);
        // The same in its header: the scan resynchronises on the next record.
        let mut g = [a.clone(), b.clone(), c.clone()].concat();
        g[a.len() + 9] ^= 0x01;
        assert_eq!(scan(&g).1, [bad]);
        // A torn last record (cut anywhere, even inside its header).
        for cut in [1, 5, HEADER - 1, HEADER, HEADER + 3] {
            let t = [a.clone(), b.clone(), c[..cut].to_vec()].concat();
            let (r, d) = scan(&t);
            assert_eq!(r.len(), 2, "cut {cut}");
            assert_eq!(d.len(), 1, "cut {cut}");
            assert_eq!(d[0].kind, DamageKind::Truncated, "cut {cut}");
            assert_eq!(d[0].offset, (a.len() + b.len()) as u64);
        }
        // Garbage between records, and a length that lies.
        let mut lying = b.clone();
        lying[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let g = [a.clone(), b"garbage".to_vec(), lying, c.clone()].concat();
        let (r, d) = scan(&g);
        assert_eq!(r.iter().map(|r| r.kind).collect::<Vec<_>>(), [1, 2]);
        assert!(d.iter().all(|d| d.kind == DamageKind::Corrupt));
        assert_eq!(d.iter().map(|d| d.len).sum::<u64>(), 7 + b.len() as u64);
    }

    #[test]
    fn a_record_hidden_in_a_torn_payload_is_not_taken() {
        // A payload that carries a whole record, in a record torn after it.
        let base = encode(kind::BASE, &[&7u64.to_le_bytes(), &1u64.to_le_bytes()]);
        let hidden = encode(kind::DONE, &[&1u64.to_le_bytes(), &[1]]);
        let carrier = encode(
            kind::MESSAGE,
            &[&2u64.to_le_bytes(), &[0; 16], &hidden, b"tail"],
        );
        let torn = [base.clone(), carrier[..carrier.len() - 2].to_vec()].concat();
        let (r, d) = scan(&torn);
        assert_eq!(r.len(), 1);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind, DamageKind::Truncated);
        // And in a carrier whose body was corrupted: skipped whole.
        let mut bad = [base, carrier].concat();
        let at = bad.len() - 2;
        bad[at] ^= 1;
        let (r, d) = scan(&bad);
        assert_eq!((r.len(), d[0].kind), (1, DamageKind::Corrupt));
    }
}
