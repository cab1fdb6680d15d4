//! A file under `/dev/shm` that the bench process and its floor peer both map.

use memmap2::{MmapOptions, MmapRaw};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The prefix of every file this crate creates under `/dev/shm` (floor mappings and arenas).
pub const SHM_PREFIX: &str = "qsimtest-bench-";

/// A shared mapping of a `/dev/shm` file. The owner ([`SharedMapping::create`]) removes the file
/// when dropped; a peer ([`SharedMapping::open`]) only unmaps.
///
/// Both sides must agree on how they use the bytes: this type hands out a base pointer and a
/// length, and the floor protocol ([`FloorClient`](super::FloorClient), [`serve`](super::serve))
/// decides who may touch what, when.
#[derive(Debug)]
pub struct SharedMapping {
    map: MmapRaw,
    path: PathBuf,
    owner: bool,
}

impl SharedMapping {
    /// Creates a new zero-filled file `/dev/shm/qsimtest-bench-<pid>-<n>-<tag>` (mode 0600,
    /// never an existing one) of `len` bytes and maps it.
    ///
    /// # Errors
    ///
    /// The OS errors of creating, sizing or mapping the file; `InvalidInput` for a zero length or
    /// a tag with characters other than ASCII alphanumerics, `-` and `_`.
    pub fn create(tag: &str, len: usize) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        if len == 0
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad shared mapping request: tag {tag:?}, {len} bytes"),
            ));
        }
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                Path::new("/dev/shm").join(format!("{SHM_PREFIX}{}-{n}-{tag}", std::process::id()));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                // A file left by an earlier process with our pid: take the next number.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            // From here on the file is ours: a failure below must remove it.
            let mapped = file
                .set_len(len as u64)
                .and_then(|()| Self::map(&file, len));
            return match mapped {
                Ok(map) => Ok(SharedMapping {
                    map,
                    path,
                    owner: true,
                }),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
            };
        }
    }

    /// Maps the existing file `path`, which must be a floor mapping (under `/dev/shm`, named with
    /// [`SHM_PREFIX`]) of exactly `len` bytes.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for another path or size; the OS errors of opening or mapping it.
    pub fn open(path: &Path, len: usize) -> io::Result<Self> {
        let named_ok = path.parent() == Some(Path::new("/dev/shm"))
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(SHM_PREFIX));
        if !named_ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a bench mapping", path.display()),
            ));
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let actual = file.metadata()?.len();
        if actual != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has {actual} bytes, expected {len}", path.display()),
            ));
        }
        Ok(SharedMapping {
            map: Self::map(&file, len)?,
            path: path.to_owned(),
            owner: false,
        })
    }

    /// A raw mapping, not `MmapMut`: the other process writes these bytes concurrently, so no
    /// `&[u8]` or `&mut [u8]` over them may exist; access goes through atomics and through raw
    /// copies while the protocol gives this side ownership (see `lines`).
    fn map(file: &File, len: usize) -> io::Result<MmapRaw> {
        MmapOptions::new().len(len).map_raw(file)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never, by construction).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// The first byte of the mapping: page-aligned, valid for [`SharedMapping::len`] bytes for as
    /// long as `self` lives, and shared with the peer process.
    ///
    /// Neither side resizes the file after mapping it (its size was set or checked just before),
    /// so the pointer never reaches past the end of the file (which would raise SIGBUS).
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
