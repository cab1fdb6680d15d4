//! A file server: a directory of the host's file system served under a mountpoint
//! (`_RESMGR_FLAG_DIR`), with an offset per open.
//!
//! Its content lives in real files, so it survives a restart of the server: a client that
//! reopens the file and seeks back to its offset reads on where it stopped, which is what the
//! HA library's recovery does. Each `open` keeps its own `std::fs::File` and offset (in the
//! OCB), so two clients reading one file do not disturb each other.

use crate::journal::Journal;
use crate::resmgr::{CloseReason, Ctx, Dispatch, Ocb, OpenRequest, ResourceManager, Stats};
use kernel_sim::{Errno, System};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

/// Where the file server mounts by default.
pub const FILES_PATH: &str = "/files";

/// Serves the files below `root`.
pub struct FileServer {
    root: PathBuf,
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl FileServer {
    /// A server for the files below `root`.
    pub fn new(root: impl Into<PathBuf>) -> FileServer {
        FileServer { root: root.into() }
    }

    /// The host path of `rel` (the rest of a client's path), which must stay below the root.
    fn host_path(&self, rel: &str) -> Result<PathBuf, Errno> {
        let rel = Path::new(rel);
        if rel.as_os_str().is_empty() {
            return Err(Errno::ISDIR);
        }
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(Errno::NOENT);
        }
        Ok(self.root.join(rel))
    }
}

impl ResourceManager for FileServer {
    type Ocb = File;

    fn open(&self, _ctx: &Ctx<'_>, req: &OpenRequest<'_>) -> Result<File, Errno> {
        let path = self.host_path(req.path)?;
        let oflag = req.oflag();
        let acc = oflag & libc::O_ACCMODE;
        let f = OpenOptions::new()
            .read(acc == libc::O_RDONLY || acc == libc::O_RDWR)
            .write(acc == libc::O_WRONLY || acc == libc::O_RDWR)
            .create(oflag & libc::O_CREAT != 0 && acc != libc::O_RDONLY)
            .truncate(oflag & libc::O_TRUNC != 0 && acc != libc::O_RDONLY)
            .open(&path)
            .map_err(|e| errno_of(&e))?;
        if f.metadata().map_err(|e| errno_of(&e))?.is_dir() {
            return Err(Errno::ISDIR);
        }
        Ok(f)
    }

    fn read(
        &self,
        _ctx: &Ctx<'_>,
        ocb: &mut Ocb<File>,
        nbytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        out.resize(nbytes, 0);
        let n = ocb.ext.read_at(out, ocb.offset).map_err(|e| errno_of(&e))?;
        out.truncate(n);
        Ok(())
    }

    fn write(&self, _ctx: &Ctx<'_>, ocb: &mut Ocb<File>, data: &[u8]) -> Result<usize, Errno> {
        if ocb.oflag() & libc::O_APPEND != 0 {
            ocb.offset = self.size(ocb);
        }
        ocb.ext.write_at(data, ocb.offset).map_err(|e| errno_of(&e))
    }

    fn size(&self, ocb: &Ocb<File>) -> u64 {
        ocb.ext.metadata().map_or(0, |m| m.len())
    }

    fn close_ocb(&self, ocb: Ocb<File>, why: CloseReason) {
        tracing::debug!(ocb = ocb.id(), path = ocb.path, ?why, "file closed");
    }
}

/// Serves the files below `root` at mountpoint `mount` on `threads` receiving threads until
/// stopped. `ready` runs once the path is attached.
///
/// # Errors
///
/// The errno of the attach or of a failed receive; `ENOTDIR` if `root` is not a directory;
/// `EIO` if the journal cannot be opened.
pub fn serve(
    sys: &System,
    root: &Path,
    mount: &str,
    journal: Option<&Path>,
    threads: usize,
    ready: impl FnOnce(&Dispatch<'_, FileServer>),
) -> Result<Stats, Errno> {
    if !root.is_dir() {
        return Err(Errno::NOTDIR);
    }
    let mut d = Dispatch::new(sys, FileServer::new(root))?;
    if let Some(p) = journal {
        d = d.journal(Journal::open(p).map_err(|_| Errno::IO)?);
    }
    d.attach(mount, kernel_sim::resmgr_flag::DIR)?;
    ready(&d);
    d.run(threads)
}
