//! The path space and the POSIX-like client helpers, as QNX's process manager and libc hold
//! them.
//!
//! A server attaches a path with [`System::resmgr_attach`]; a client's [`System::open`] resolves
//! the path to the servers whose mountpoints cover it, connects an fd-range coid to the first
//! and sends it `_IO_CONNECT`; [`System::read`], [`System::write`], [`System::lseek`],
//! [`System::devctl`], [`System::close`] and [`System::dup`] are then ordinary sends of the
//! `_IO_*` messages of [`crate::iomsg`] on that coid. Nothing here bypasses `msg_send`, so
//! whatever watches a process's sends (the HA library's interposition) sees these too.
//!
//! Paths are normalized before use: a relative path is taken from `/` (there is no working
//! directory), empty and `.` components are dropped and `..` goes up one level, lexically.
//! A path, with its mountpoint, is at most 120 bytes (`ENAMETOOLONG`).

use crate::api::{deadline_after, disarm};
use crate::iomsg;
use crate::kern::PathTarget;
use crate::{Chid, Coid, Errno, Pid, Result, System};
use std::io::SeekFrom;
use std::time::Duration;

/// A path registered with [`System::resmgr_attach`] (QNX's link id); what
/// [`System::resmgr_detach`] takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PathId {
    index: u32,
    gen: u32,
}

impl PathId {
    /// The `handle` that clients' `_IO_CONNECT` messages carry when they open this path (see
    /// [`iomsg::IoConnect::handle`]).
    pub fn handle(self) -> u32 {
        self.index
    }
}

/// The normalized form of `path` (see the module doc).
///
/// # Errors
///
/// - `ENOENT`: an empty path, as POSIX `open` gives.
/// - `EINVAL`: a NUL byte.
/// - `ENAMETOOLONG`: longer than the arena's 120-byte field once normalized.
pub fn normalize_path(path: &str) -> Result<String> {
    if path.is_empty() {
        return Err(Errno::NOENT);
    }
    if path.contains('\0') {
        return Err(Errno::INVAL);
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let norm = format!("/{}", parts.join("/"));
    if norm.len() > crate::kern::layout::NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(norm)
}

impl System {
    /// `resmgr_attach(dpp, attr, path, _FTYPE_ANY, flags, ...)`: registers mountpoint `path`
    /// for the caller's channel `chid`. Several servers may attach the same path; a client's
    /// [`System::open`] tries them in QNX's order: the longest mountpoint first, then at one
    /// mountpoint the `_RESMGR_FLAG_BEFORE` registrations, the unflagged ones and the
    /// `_RESMGR_FLAG_AFTER` ones, the latest first within each group. With
    /// `_RESMGR_FLAG_DIR` the paths below the mountpoint resolve to it too. The registration
    /// goes when the server detaches it, destroys the channel or dies; a restarted server can
    /// attach the path again at once.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `path` is not absolute, is under `/dev/name/` (the names of
    ///   [`System::name_attach`]), has a NUL byte, `flags` has bits outside
    ///   [`crate::abi::resmgr_flag::MASK`], or `chid` is not a channel of the caller.
    /// - `ENAMETOOLONG`: the path is longer than 120 bytes.
    /// - `EAGAIN`: the system's table of names and paths is full.
    pub fn resmgr_attach(&self, chid: Chid, path: &str, flags: u32) -> Result<PathId> {
        disarm();
        if !path.starts_with('/') {
            return Err(Errno::INVAL);
        }
        let norm = normalize_path(path)?;
        if norm == "/dev/name" || norm.starts_with("/dev/name/") {
            return Err(Errno::INVAL);
        }
        let (index, gen) = self.k().path_register(&norm, chid.0, flags)?;
        Ok(PathId { index, gen })
    }

    /// `resmgr_detach(dpp, id, 0)`: removes a registration of the caller; opens already made
    /// stay connected.
    ///
    /// # Errors
    ///
    /// - `ENOENT`: no such registration (already detached, or released at the channel's end).
    /// - `EPERM`: another process's registration.
    pub fn resmgr_detach(&self, id: PathId) -> Result<()> {
        disarm();
        self.k().path_unregister(id.index, id.gen)
    }

    /// The servers `path` resolves to, in the order [`System::open`] tries them (what QNX's
    /// process manager answers a client's `_IO_CONNECT`). Empty if none.
    ///
    /// # Errors
    ///
    /// As [`normalize_path`].
    pub fn path_resolve(&self, path: &str) -> Result<Vec<PathTarget>> {
        let norm = normalize_path(path)?;
        Ok(self.k().path_resolve(&norm))
    }

    /// Waits until some server's mountpoint covers `path` (woken by the attach, not polling), at
    /// most `timeout` (`None`: no limit). What a client does while a server (re)starts.
    ///
    /// # Errors
    ///
    /// - `ETIMEDOUT`: no server attached a covering path in time.
    /// - as [`normalize_path`].
    pub fn path_wait(&self, path: &str, timeout: Option<Duration>) -> Result<()> {
        let norm = normalize_path(path)?;
        let deadline = timeout.and_then(deadline_after);
        self.k().path_wait(&norm, deadline).map(|_| ())
    }

    /// `open(path, oflag)`: [`System::open_mode`] with mode `0o644`.
    ///
    /// # Errors
    ///
    /// As [`System::open_mode`].
    pub fn open(&self, path: &str, oflag: i32) -> Result<Coid> {
        self.open_mode(path, oflag, 0o644)
    }

    /// `open(path, oflag, mode)`: resolves `path`, connects the lowest free fd-range coid to the
    /// first server it resolves to and sends it `_IO_CONNECT` (`_IO_CONNECT_OPEN`, with the
    /// rest of the path below the mountpoint, `oflag` as `ioflag` and `mode`). A server that
    /// answers `ENOENT`, or that died meanwhile, is passed over for the next one, as QNX's libc
    /// does. `oflag` takes the host's `O_*` values (`libc::O_RDONLY`, ...).
    ///
    /// # Errors
    ///
    /// - `ENOENT`: no server's mountpoint covers the path, or every one answered `ENOENT`.
    /// - `ENAMETOOLONG`, `EINVAL`: as [`normalize_path`].
    /// - `EMFILE`: no free coid; `ENFILE`: no free connection in the system.
    /// - any other errno the server gives the open (`EACCES`, `EISDIR`, ...).
    pub fn open_mode(&self, path: &str, oflag: i32, mode: u32) -> Result<Coid> {
        let norm = normalize_path(path)?;
        let targets = self.k().path_resolve(&norm);
        self.open_targets(&targets, oflag, mode, None)
    }

    /// [`System::open`] whose `_IO_CONNECT` to each server waits at most `timeout` for its
    /// answer, so that a server that attached the path but does not receive cannot hold the
    /// caller.
    ///
    /// # Errors
    ///
    /// As [`System::open_mode`], and `ETIMEDOUT` (the coid is released).
    pub fn open_timeout(&self, path: &str, oflag: i32, timeout: Duration) -> Result<Coid> {
        let norm = normalize_path(path)?;
        let targets = self.k().path_resolve(&norm);
        self.open_targets(&targets, oflag, 0o644, Some(timeout))
    }

    /// [`System::open`], waiting first (at most `timeout`, `None`: no limit) until a server's
    /// mountpoint covers `path`; the wait starts again if that server goes before the open
    /// reaches it. What a recovery function does while its server restarts.
    ///
    /// # Errors
    ///
    /// - `ETIMEDOUT`: no server attached a covering path in time.
    /// - as [`System::open_mode`].
    pub fn open_wait(&self, path: &str, oflag: i32, timeout: Option<Duration>) -> Result<Coid> {
        let norm = normalize_path(path)?;
        let deadline = timeout.and_then(deadline_after);
        loop {
            let targets = self.k().path_wait(&norm, deadline)?;
            match self.open_targets(&targets, oflag, 0o644, None) {
                // The same servers, all answering ENOENT: they do not have it.
                Err(Errno::NOENT) if self.k().path_resolve(&norm) == targets => {
                    return Err(Errno::NOENT)
                }
                // Some went away meanwhile: wait for the path again.
                Err(Errno::NOENT) => continue,
                other => return other,
            }
        }
    }

    fn open_targets(
        &self,
        targets: &[PathTarget],
        oflag: i32,
        mode: u32,
        timeout: Option<Duration>,
    ) -> Result<Coid> {
        for t in targets {
            let coid = match self.connect_attach(0, Pid(t.pid), Chid(t.chid), 0, 0) {
                Ok(c) => c,
                // The server is gone: the next one may have the path.
                Err(Errno::SRCH) => continue,
                Err(e) => return Err(e),
            };
            let msg = iomsg::IoConnect {
                subtype: iomsg::IO_CONNECT_OPEN,
                file_type: iomsg::FTYPE_ANY,
                handle: t.handle,
                ioflag: iomsg::ioflag_from_oflag(oflag),
                mode,
                path: t.rest.clone(),
            }
            .encode();
            let sent = match timeout {
                Some(t) => self.msg_send_timeout(coid, &msg, &mut [], t),
                None => self.msg_send(coid, &msg, &mut []),
            };
            match sent {
                Ok(_) => return Ok(coid),
                Err(e) => {
                    let _ = self.connect_detach(coid);
                    if !matches!(e, Errno::NOENT | Errno::SRCH | Errno::BADF) {
                        return Err(e);
                    }
                }
            }
        }
        Err(Errno::NOENT)
    }

    /// `read(fd, buf, nbytes)`: sends `_IO_READ` for `buf.len()` bytes (at most the system's
    /// message-size limit) and returns how many the server gave; 0 is end of file.
    ///
    /// # Errors
    ///
    /// - `EBADF`: no such coid, the server is gone, or the open was not for reading.
    /// - `ESRCH`: the server died while the read was in progress.
    /// - `EIO`: the server answered a count it did not send.
    /// - any errno the server gives (`ENOSYS` from a server with no read handler).
    pub fn read(&self, coid: Coid, buf: &mut [u8]) -> Result<usize> {
        let n = buf.len().min(self.limits().max_msg_size as usize);
        let status = self.msg_send(coid, &iomsg::io_read(n as u32), &mut buf[..n])?;
        usize::try_from(status)
            .ok()
            .filter(|&got| got <= n)
            .ok_or(Errno::IO)
    }

    /// `write(fd, buf, nbytes)`: sends `_IO_WRITE` with the data and returns how many bytes the
    /// server took. A buffer larger than one message (the system's limit less the 16-byte
    /// header) is written in part, as POSIX allows: the count says how much.
    ///
    /// # Errors
    ///
    /// - `EBADF`: no such coid, the server is gone, or the open was not for writing.
    /// - `ESRCH`: the server died while the write was in progress.
    /// - `EIO`: the server answered a count larger than the data.
    /// - any errno the server gives.
    pub fn write(&self, coid: Coid, buf: &[u8]) -> Result<usize> {
        let room = (self.limits().max_msg_size as usize).saturating_sub(16);
        let data = &buf[..buf.len().min(room)];
        let hdr = iomsg::io_write(data.len() as u32);
        let status = self.msg_sendv(coid, &[&hdr, data], &mut [])?;
        usize::try_from(status)
            .ok()
            .filter(|&took| took <= data.len())
            .ok_or(Errno::IO)
    }

    /// `lseek(fd, offset, whence)`: sends `_IO_LSEEK` and returns the new offset.
    ///
    /// # Errors
    ///
    /// - `EBADF`: no such coid or the server is gone; `ESRCH`: it died meanwhile.
    /// - `EINVAL`: the result would be negative; `ESPIPE`: the file cannot seek.
    /// - `EIO`: the server's reply carried no offset.
    /// - any errno the server gives (`ENOSYS` from a server with no lseek handler).
    pub fn lseek(&self, coid: Coid, pos: SeekFrom) -> Result<u64> {
        let (whence, offset) = match pos {
            SeekFrom::Start(o) => (libc::SEEK_SET, i64::try_from(o).map_err(|_| Errno::INVAL)?),
            SeekFrom::Current(o) => (libc::SEEK_CUR, o),
            SeekFrom::End(o) => (libc::SEEK_END, o),
        };
        let mut out = [0u8; 8];
        self.msg_send(coid, &iomsg::io_lseek(whence as i16, offset), &mut out)?;
        Ok(u64::from_le_bytes(out))
    }

    /// `devctl(fd, dcmd, data, n_bytes, &dev_info)`: sends `_IO_DEVCTL` with command `dcmd`
    /// ([`iomsg::dcmd`]). Its direction bits decide the data's way: `data` (all of it) goes to
    /// the server if the command has [`iomsg::dcmd::DIR_TO`], and is overwritten with what the
    /// server returns if it has [`iomsg::dcmd::DIR_FROM`]. Returns the server's `dev_info`
    /// (the reply's `ret_val`).
    ///
    /// As QNX's `devctl`, it reports errors as values, not through `errno`: the `Err` is the
    /// errno itself, and a server that does not know the command (`ENOSYS`) gives `ENOTTY`.
    ///
    /// # Errors
    ///
    /// - `ENOTTY`: the server does not support the command.
    /// - `EBADF`: no such coid or the server is gone; `ESRCH`: it died meanwhile.
    /// - `EIO`: the server's reply has no devctl header.
    /// - any errno the server gives.
    pub fn devctl(&self, coid: Coid, dcmd: u32, data: &mut [u8]) -> Result<i32> {
        let room = (self.limits().max_msg_size as usize).saturating_sub(16);
        if data.len() > room {
            return Err(Errno::INVAL);
        }
        let dir = iomsg::dcmd::direction(dcmd);
        let hdr = iomsg::io_devctl(dcmd, data.len() as u32);
        let mut rhdr = [0u8; 16];
        let (to, from) = (
            dir & iomsg::dcmd::DIR_TO != 0,
            dir & iomsg::dcmd::DIR_FROM != 0,
        );
        let res = match (to, from) {
            (false, false) => self.msg_sendv(coid, &[&hdr], &mut [&mut rhdr]),
            (true, false) => self.msg_sendv(coid, &[&hdr, data], &mut [&mut rhdr]),
            (false, true) => self.msg_sendv(coid, &[&hdr], &mut [&mut rhdr, data]),
            (true, true) => {
                let sent = data.to_vec();
                self.msg_sendv(coid, &[&hdr, &sent], &mut [&mut rhdr, data])
            }
        };
        match res {
            Err(Errno::NOSYS) => Err(Errno::NOTTY),
            Err(e) => Err(e),
            Ok(_) => iomsg::decode_devctl_reply(&rhdr)
                .map(|(ret, _)| ret)
                .ok_or(Errno::IO),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_path;
    use crate::Errno;

    #[test]
    fn paths_normalize_lexically() {
        assert_eq!(normalize_path("/dev/null").unwrap(), "/dev/null");
        assert_eq!(normalize_path("dev//null/").unwrap(), "/dev/null");
        assert_eq!(normalize_path("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(normalize_path("/../..").unwrap(), "/");
        assert_eq!(normalize_path(""), Err(Errno::NOENT));
        assert_eq!(normalize_path("/a\0b"), Err(Errno::INVAL));
        assert_eq!(normalize_path(&"/x".repeat(61)), Err(Errno::NAMETOOLONG));
    }
}
