//! The record format of guaranteed delivery's files (the sender's delivery area and the
//! receiver's log), and the scan that reads them back while reporting damage.
//!
//! A record is a 16-byte header and a body, little-endian:
//!
//! ```text
//! 0   u32  magic "GMDR"
//! 4   u8   kind
//! 5   [u8; 3] zero
//! 8   u32  body length
//! 12  u32  CRC-32 of bytes 4..12 and of the body
//! 16  body
//! ```
//!
//! Each record is written with one `write(2)` to a file opened for appending. A writer killed
//! in the middle leaves a torn record at the end of the file; bit rot or a foreign write leaves
//! a record whose CRC does not match. [`scan`] keeps every record that checks, reports the bytes
//! that do not (with their offset), and resynchronises on the next magic after damage, so one
//! bad record costs only itself.

/// The magic that starts every record ("GMDR").
pub const MAGIC: u32 = u32::from_le_bytes(*b"GMDR");
/// The header's length.
pub const HEADER: usize = 16;
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

/// What was wrong with a stretch of a file that [`scan`] could not use.
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

fn crc(head: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(body);
    h.finalize()
}

/// Encodes one record of `kind` whose body is the concatenation of `parts`.
///
/// # Panics
///
/// Never for bodies up to [`MAX_BODY`]; callers bound their payloads below it.
pub fn encode(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut r = Vec::with_capacity(HEADER + len);
    r.extend_from_slice(&MAGIC.to_le_bytes());
    r.extend_from_slice(&[kind, 0, 0, 0]);
    r.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    for p in parts {
        r.extend_from_slice(p);
    }
    let c = crc(&r[4..12], &r[HEADER..]);
    r[12..16].copy_from_slice(&c.to_le_bytes());
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

/// The record at the start of `b`, if one checks there: `Ok(record, its length)`;
/// `Err(true)` if `b` ends inside what may be a record, `Err(false)` if it is not one.
fn record_at(b: &[u8]) -> Result<(Record<'_>, usize), bool> {
    if b.len() < HEADER {
        // Too short for a header: a torn record if it starts like one.
        let m = MAGIC.to_le_bytes();
        return Err(b[..b.len().min(4)] == m[..b.len().min(4)]);
    }
    if u32_at(b, 0) != Some(MAGIC) || b[5..8] != [0, 0, 0] {
        return Err(false);
    }
    let len = u32_at(b, 8).unwrap_or(u32::MAX) as usize;
    if len > MAX_BODY {
        return Err(false);
    }
    let Some(body) = b.get(HEADER..HEADER + len) else {
        return Err(true);
    };
    if Some(crc(&b[4..12], body)) != u32_at(b, 12) {
        return Err(false);
    }
    Ok((
        Record {
            kind: b[4],
            offset: 0,
            body,
        },
        HEADER + len,
    ))
}

/// Reads every record of `bytes` that checks, in order, and reports what it skipped.
///
/// After damage it looks for the next magic and goes on from there; a record that starts there
/// must check completely to be kept. A stretch at the end that looks like the start of a record
/// cut short is reported as [`DamageKind::Truncated`].
pub fn scan(bytes: &[u8]) -> (Vec<Record<'_>>, Vec<Damage>) {
    let mut out = Vec::new();
    let mut damage = Vec::new();
    let mut pos = 0usize;
    let magic = MAGIC.to_le_bytes();
    while pos < bytes.len() {
        match record_at(&bytes[pos..]) {
            Ok((r, n)) => {
                out.push(Record {
                    offset: pos as u64,
                    ..r
                });
                pos += n;
            }
            Err(torn) => {
                // Resynchronise on the next magic that starts a good record.
                let mut next = pos + 1;
                let resume = loop {
                    match bytes[next.min(bytes.len())..]
                        .windows(4)
                        .position(|w| w == magic)
                    {
                        None => break None,
                        Some(i) => {
                            let at = next + i;
                            if record_at(&bytes[at..]).is_ok() {
                                break Some(at);
                            }
                            next = at + 1;
                        }
                    }
                };
                let end = resume.unwrap_or(bytes.len());
                let kind = if resume.is_none() && torn {
                    DamageKind::Truncated
                } else {
                    DamageKind::Corrupt
                };
                damage.push(Damage {
                    offset: pos as u64,
                    len: (end - pos) as u64,
                    kind,
                });
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
        // A flipped byte in the middle record: it alone is lost, and reported as corrupt.
        f[a.len() + HEADER + 2] ^= 0x40;
        let (r, d) = scan(&f);
        assert_eq!(r.iter().map(|r| r.kind).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            d,
            [Damage {
                offset: a.len() as u64,
                len: b.len() as u64,
                kind: DamageKind::Corrupt
            }]
        );
        // A torn last record (cut anywhere, even inside its header).
        for cut in [1, 5, HEADER, HEADER + 3] {
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
}
