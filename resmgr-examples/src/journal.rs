//! A server's journal: one line per request it handled, written before the reply.
//!
//! Tests and tools check facts on the server side with it ("the server executed request 42
//! twice", "the close handler ran for the dead client's file"), not only what a client saw.
//! Each record is one `write(2)` to a file opened with `O_APPEND`, so records from several
//! threads or processes never interleave, and a record is in the kernel's page cache before the
//! reply leaves: it survives a `kill -9` of the server at any later instant. (It does not
//! survive a power cut: there is no `fsync`, which would cost milliseconds per request.)
//!
//! A record is a line of space-separated words, the first the operation, then `key=value` pairs,
//! and last a `.` that marks it complete, such as `read pid=4242 ocb=3 offset=16 n=16 .`;
//! whitespace inside a value is written as `_`. A `write(2)` that crosses a page boundary can be
//! cut short by a `kill -9`, so each record is written as a newline then the record: a torn
//! record stays alone on its line, without its `.`, and [`Journal::read`] skips it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only journal file.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
}

impl Journal {
    /// Opens (creating it if needed, mode 0600) the journal at `path`; records are appended.
    ///
    /// # Errors
    ///
    /// The I/O error of the open.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<Journal> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Journal { file, path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (`op` then the `key=value` words), in one write.
    ///
    /// # Errors
    ///
    /// The I/O error of the write (a full disk): the caller should fail the request rather than
    /// reply without a record.
    pub fn record(
        &self,
        op: &str,
        fields: &[(&str, &dyn std::fmt::Display)],
    ) -> std::io::Result<()> {
        let mut line = String::with_capacity(64);
        // The newline first: whatever a killed writer left unfinished ends here.
        line.push('\n');
        line.push_str(op);
        for (k, v) in fields {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            // A value is one word: whitespace in it becomes `_`.
            line.extend(
                v.to_string()
                    .chars()
                    .map(|c| if c.is_whitespace() { '_' } else { c }),
            );
        }
        line.push_str(" .");
        (&self.file).write_all(line.as_bytes())
    }

    /// Reads every complete record of the journal at `path` (what tests and tools check);
    /// records cut short by a kill are skipped.
    ///
    /// # Errors
    ///
    /// The I/O error of the read.
    pub fn read(path: impl AsRef<Path>) -> std::io::Result<Vec<Record>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text.lines().filter_map(Record::parse).collect())
    }
}

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The operation (`open`, `read`, `close`, ...).
    pub op: String,
    /// The `key=value` pairs, in order.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// Parses a line; `None` for an empty one or one without its final `.` (torn).
    pub fn parse(line: &str) -> Option<Record> {
        let body = line.trim_end().strip_suffix(" .")?;
        let mut words = body.split_whitespace();
        let op = words.next()?.to_owned();
        let fields = words
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (w.to_owned(), String::new()),
            })
            .collect();
        Some(Record { op, fields })
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_cut_short_by_a_kill_is_skipped_and_the_next_survives() {
        let p = std::env::temp_dir().join(format!("qsim-journal-unit-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let j = Journal::open(&p).unwrap();
        j.record("echo", &[("id", &1), ("msg", &"two words")])
            .unwrap();
        // What a writer killed between two pages leaves: part of a record, no newline.
        (&j.file).write_all(b"\necho pid=2160 id=30").unwrap();
        j.record("echo", &[("id", &3)]).unwrap();
        let r = Journal::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].get("msg"), Some("two_words"));
        assert_eq!(r[1].get("id"), Some("3"));
    }
}
