//! The HA client's worked example: a reader whose file server may be killed and restarted, and
//! whose read loop does not notice.
//!
//! The client opens the file with [`Ha::open`], giving a recovery function and a handle that
//! holds the path and the current offset. The loop below is plain `read` calls. When the server
//! dies, the next `read` fails with `EBADF` (or `ESRCH` if it died during the read) inside the
//! library; the library calls [`recover`], which reopens the path on the old fd number
//! ([`Ha::reopen`], waiting for the restarted server to attach it) and seeks back to the saved
//! offset; the library then sends the `read` again, and the loop carries on where it stopped.

use ha_lib::Ha;
use kernel_sim::sync::atomic::{AtomicU32, Ordering};
use kernel_sim::{Coid, Errno, System};
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};

/// What the reader keeps for its recovery function (QNX's `rhdl`).
#[derive(Debug)]
pub struct ReaderState {
    /// The file.
    pub path: String,
    /// Where the next read starts.
    pub offset: Mutex<u64>,
    /// Recoveries run so far.
    pub recoveries: AtomicU32,
}

/// The recovery function: reopen the path on the old fd, seek back, hand the fd back.
///
/// # Errors
///
/// What `reopen` or `lseek` failed with (the library then returns the original error).
pub fn recover(ha: &Ha, fd: Coid, st: &Arc<ReaderState>) -> Result<Coid, Errno> {
    let fd = ha.reopen(fd, &st.path, libc::O_RDONLY)?;
    let offset = *st.offset.lock().unwrap_or_else(|e| e.into_inner());
    ha.sys().lseek(fd, SeekFrom::Start(offset))?;
    st.recoveries.fetch_add(1, Ordering::Relaxed);
    Ok(fd)
}

/// Opens `path` HA-aware and reads it to the end in `chunk`-byte reads, calling `each` with every
/// chunk (and the offset it was read at) before the next read. Returns the whole content.
///
/// # Errors
///
/// The error of the open or of a read that recovery could not save.
pub fn read_all(
    sys: &System,
    path: &str,
    chunk: usize,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<(Vec<u8>, Arc<ReaderState>), Errno> {
    let ha = Ha::install(sys)?;
    let st = Arc::new(ReaderState {
        path: path.to_owned(),
        offset: Mutex::new(0),
        recoveries: AtomicU32::new(0),
    });
    let fd = ha.open(path, libc::O_RDONLY, recover, st.clone(), 0)?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; chunk.max(1)];
    loop {
        // A plain read: recovery, if needed, happens inside it.
        let n = sys.read(fd, &mut buf)?;
        if n == 0 {
            break;
        }
        let at = {
            let mut off = st.offset.lock().unwrap_or_else(|e| e.into_inner());
            let at = *off;
            *off += n as u64;
            at
        };
        all.extend_from_slice(&buf[..n]);
        each(at, &buf[..n]);
    }
    ha.close(fd)?;
    Ok((all, st))
}
