//! The path space: `name_attach` names and `resmgr_attach` paths in one table, as QNX's process
//! manager keeps both. A name is unique and matches exactly; several servers may attach one
//! path, and a path resolves to every server whose mountpoint covers it, in the order a client
//! tries them: the longest mountpoint first, then, at one mountpoint, `_RESMGR_FLAG_BEFORE`
//! registrations, the unflagged ones and the `_RESMGR_FLAG_AFTER` ones, the latest first within
//! each group. Entries are changed only under the structural lock; every change bumps the names
//! generation word, which is what the waits for a name or a path sleep on.

use super::layout::{name_kind, obj_state, NameEntry, NAME_MAX};
use super::ops::{obj_gen, obj_st, obj_word, Kernel};
use crate::abi::resmgr_flag;
use crate::sync::atomic::Ordering;
use crate::sync::{OsFutex, Wait};
use crate::Errno;
use std::time::Instant;

const R: Ordering = Ordering::Acquire;
const W: Ordering = Ordering::Release;
const X: Ordering = Ordering::Relaxed;

/// One server a path resolves to, in the order a client tries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTarget {
    /// The server's pid.
    pub pid: i32,
    /// The server's channel.
    pub chid: i32,
    /// The registration's index: the `handle` field of the `_IO_CONNECT` a client sends, so the
    /// server knows which of its attaches was opened.
    pub handle: u32,
    /// The rest of the path below the mountpoint, without a leading `/` (empty for the
    /// mountpoint itself).
    pub rest: String,
    /// The `_RESMGR_FLAG_*` flags of the registration (0 for a name).
    pub flags: u32,
}

/// Copies a live entry's bytes into `buf`; its length, or `None` if the entry is not live or its
/// length is corrupt.
fn entry_bytes(e: &NameEntry, buf: &mut [u8; NAME_MAX]) -> Option<usize> {
    if obj_st(e.state.load(R)) != obj_state::LIVE {
        return None;
    }
    let len = e.len.load(X) as usize;
    if len > NAME_MAX {
        return None;
    }
    for (k, w) in e.bytes.iter().enumerate() {
        buf[k * 8..k * 8 + 8].copy_from_slice(&w.load(X).to_le_bytes());
    }
    Some(len)
}

/// The part of `path` below mountpoint `mount`, if `mount` covers it. Both are normalized
/// (absolute, no empty, `.` or `..` components, no trailing `/` except for the root).
fn below<'p>(mount: &[u8], path: &'p [u8], dir: bool) -> Option<&'p [u8]> {
    if path == mount {
        return Some(&path[path.len()..]);
    }
    if !dir {
        return None;
    }
    if mount == b"/" {
        return path.get(1..);
    }
    match path.strip_prefix(mount) {
        Some(rest) if rest.first() == Some(&b'/') => Some(&rest[1..]),
        _ => None,
    }
}

impl<'a> Kernel<'a> {
    /// Index of the live *name* (not path) entry `path`.
    fn find_name_locked(&self, path: &[u8]) -> Option<u32> {
        let mut buf = [0u8; NAME_MAX];
        (0..self.a.limits().max_names).find(|&i| {
            self.a.name(i).is_some_and(|e| {
                e.flags.load(X) & name_kind::PATH == 0
                    && entry_bytes(e, &mut buf).is_some_and(|n| &buf[..n] == path)
            })
        })
    }

    /// Fills a free entry for the caller's channel `chid` (structural lock held): (index,
    /// generation).
    fn register_locked(&self, bytes: &[u8], chid: i32, flags: u32) -> Result<(u32, u32), Errno> {
        let (cidx, cgen, _) = self.own_chan(chid).ok_or(Errno::INVAL)?;
        let i = (0..self.a.limits().max_names)
            .find(|&i| {
                self.a
                    .name(i)
                    .is_some_and(|e| obj_st(e.state.load(R)) == obj_state::FREE)
            })
            .ok_or(Errno::AGAIN)?;
        let e = self.a.name(i).ok_or(Errno::AGAIN)?;
        let mut buf = [0u8; NAME_MAX];
        buf[..bytes.len()].copy_from_slice(bytes);
        for (k, w) in e.bytes.iter().enumerate() {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&buf[k * 8..k * 8 + 8]);
            w.store(u64::from_le_bytes(chunk), X);
        }
        e.len.store(bytes.len() as u32, X);
        e.owner.store(self.me, X);
        e.chan.store(cidx, X);
        e.chan_gen.store(cgen, X);
        e.chid.store(chid as u32, X);
        e.flags.store(flags, X);
        e.seq.store(self.a.header().names_gen.load(X), X);
        let gen = (obj_gen(e.state.load(R)) + 1) & 0xFF_FFFF;
        e.state.store(obj_word(gen, obj_state::LIVE), W);
        self.names_changed();
        Ok((i, gen))
    }

    /// Registers name `path` for channel `chid` of the caller (`EEXIST` if taken).
    pub fn name_register(&self, path: &str, chid: i32) -> Result<u32, Errno> {
        let bytes = path.as_bytes();
        if bytes.len() > NAME_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        let _g = self.lock_struct();
        if let Some(i) = self.find_name_locked(bytes) {
            // A holder that died is cleaned up now, so a restarted server takes its name back
            // at once instead of racing the watcher.
            let holder = self.a.name(i).map_or(u32::MAX, |e| e.owner.load(X));
            if !self.reap_locked_if_dead(holder) || self.find_name_locked(bytes).is_some() {
                tracing::debug!(path, "name already attached");
                return Err(Errno::EXIST);
            }
        }
        self.register_locked(bytes, chid, 0).map(|(i, _)| i)
    }

    /// Registers mountpoint `path` (normalized by the caller) for channel `chid` of the caller
    /// with `_RESMGR_FLAG_*` `flags`: (index, generation), what `path_unregister` takes.
    pub fn path_register(&self, path: &str, chid: i32, flags: u32) -> Result<(u32, u32), Errno> {
        let bytes = path.as_bytes();
        if bytes.len() > NAME_MAX {
            return Err(Errno::NAMETOOLONG);
        }
        if flags & !resmgr_flag::MASK != 0 {
            return Err(Errno::INVAL);
        }
        let _g = self.lock_struct();
        self.register_locked(bytes, chid, name_kind::PATH | flags)
    }

    /// Removes the caller's path registration (index, generation).
    pub fn path_unregister(&self, index: u32, gen: u32) -> Result<(), Errno> {
        let _g = self.lock_struct();
        let e = self.a.name(index).ok_or(Errno::NOENT)?;
        let w = e.state.load(R);
        if w != obj_word(gen, obj_state::LIVE) || e.flags.load(X) & name_kind::PATH == 0 {
            return Err(Errno::NOENT);
        }
        if e.owner.load(X) != self.me {
            return Err(Errno::PERM);
        }
        e.state.store(obj_word(gen, obj_state::FREE), W);
        self.names_changed();
        Ok(())
    }

    /// Wakes the waiters for names and paths: one was attached or detached.
    fn names_changed(&self) {
        let h = self.a.header();
        h.names_gen.fetch_add(1, Ordering::Release);
        OsFutex.wake(&h.names_gen, u32::MAX);
    }

    /// Sleeps on the names generation word until `ready` gives something other than `ENOENT`
    /// or `deadline` passes (`ETIMEDOUT`). Every attach bumps the word: no polling.
    fn wait_for_names<T>(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut() -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let word = &self.a.header().names_gen;
        loop {
            let seen = word.load(R);
            match ready() {
                Err(Errno::NOENT) => {}
                other => return other,
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Err(Errno::TIMEDOUT),
                },
            };
            let _ = OsFutex.wait(word, seen, timeout);
        }
    }

    /// Waits until name `path` is registered or `deadline` passes. Returns (server pid, chid).
    pub fn name_wait(&self, path: &str, deadline: Option<Instant>) -> Result<(i32, i32), Errno> {
        self.wait_for_names(deadline, || self.name_lookup(path))
    }

    /// Waits until some server's mountpoint covers `path` (normalized) or `deadline` passes.
    pub fn path_wait(
        &self,
        path: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<PathTarget>, Errno> {
        self.wait_for_names(deadline, || {
            let found = self.path_resolve(path);
            if found.is_empty() {
                Err(Errno::NOENT)
            } else {
                Ok(found)
            }
        })
    }

    /// Removes the caller's registration of name `path`.
    pub fn name_unregister(&self, path: &str) -> Result<(), Errno> {
        let _g = self.lock_struct();
        let i = self.find_name_locked(path.as_bytes()).ok_or(Errno::NOENT)?;
        let e = self.a.name(i).ok_or(Errno::NOENT)?;
        if e.owner.load(X) != self.me {
            return Err(Errno::PERM);
        }
        let w = e.state.load(R);
        e.state.store(obj_word(obj_gen(w), obj_state::FREE), W);
        self.names_changed();
        Ok(())
    }

    /// Frees every name and path of process slot `owner` (its cleanup; structural lock held).
    pub(super) fn drop_names_of(&self, owner: u32) {
        for i in 0..self.a.limits().max_names {
            let Some(e) = self.a.name(i) else { continue };
            let w = e.state.load(R);
            if obj_st(w) == obj_state::LIVE && e.owner.load(X) == owner {
                e.state.store(obj_word(obj_gen(w), obj_state::FREE), W);
                self.names_changed();
            }
        }
    }

    /// Frees the names and paths registered for channel (index, generation) (its destruction;
    /// structural lock held).
    pub(super) fn drop_names_of_chan(&self, chan: u32, chan_gen: u32) {
        for i in 0..self.a.limits().max_names {
            let Some(e) = self.a.name(i) else { continue };
            let w = e.state.load(R);
            if obj_st(w) == obj_state::LIVE
                && e.chan.load(X) == chan
                && e.chan_gen.load(X) == chan_gen
            {
                e.state.store(obj_word(obj_gen(w), obj_state::FREE), W);
                self.names_changed();
            }
        }
    }

    /// Looks name `path` up: (server pid, chid).
    pub fn name_lookup(&self, path: &str) -> Result<(i32, i32), Errno> {
        let _g = self.lock_struct();
        let i = self.find_name_locked(path.as_bytes()).ok_or(Errno::NOENT)?;
        let e = self.a.name(i).ok_or(Errno::NOENT)?;
        let owner = self.a.proc(e.owner.load(X)).ok_or(Errno::NOENT)?;
        Ok((owner.pid.load(X) as i32, e.chid.load(X) as i32))
    }

    /// Every server whose registration covers `path` (normalized), in the order a client tries
    /// them (see the module doc). Registrations of dead processes are cleaned up first, so a
    /// restarted server is never shadowed by its dead predecessor; those whose channel is gone
    /// are skipped.
    pub fn path_resolve(&self, path: &str) -> Vec<PathTarget> {
        let path = path.as_bytes();
        let _g = self.lock_struct();
        let now = self.a.header().names_gen.load(X);
        // (mountpoint length, group, age, owner, target)
        let mut found: Vec<(usize, u32, u32, u32, PathTarget)> = Vec::new();
        let mut reaped: Vec<u32> = Vec::new();
        for pass in 0..2 {
            found.clear();
            let mut buf = [0u8; NAME_MAX];
            for i in 0..self.a.limits().max_names {
                let Some(e) = self.a.name(i) else { continue };
                let Some(n) = entry_bytes(e, &mut buf) else {
                    continue;
                };
                let flags = e.flags.load(X);
                let dir = flags & name_kind::PATH != 0 && flags & resmgr_flag::DIR != 0;
                let Some(rest) = below(&buf[..n], path, dir) else {
                    continue;
                };
                let chan_live = self.a.chan(e.chan.load(X)).is_some_and(|c| {
                    c.state.load(R) == obj_word(e.chan_gen.load(X), obj_state::LIVE)
                });
                let owner = e.owner.load(X);
                let Some(p) = self.a.proc(owner) else {
                    continue;
                };
                if !chan_live {
                    continue;
                }
                let group = if flags & resmgr_flag::BEFORE != 0 {
                    0
                } else if flags & resmgr_flag::AFTER != 0 {
                    2
                } else {
                    1
                };
                let Ok(rest) = std::str::from_utf8(rest) else {
                    continue;
                };
                found.push((
                    n,
                    group,
                    now.wrapping_sub(e.seq.load(X)),
                    owner,
                    PathTarget {
                        pid: p.pid.load(X) as i32,
                        chid: e.chid.load(X) as i32,
                        handle: i,
                        rest: rest.to_owned(),
                        flags: flags & resmgr_flag::MASK,
                    },
                ));
            }
            if pass == 1 {
                break;
            }
            // Clean up after dead owners (each once), then look again if any was.
            let mut any = false;
            for &(_, _, _, owner, _) in &found {
                if !reaped.contains(&owner) {
                    reaped.push(owner);
                    any |= self.reap_locked_if_dead(owner);
                }
            }
            if !any {
                break;
            }
        }
        found.sort_by_key(|f| (std::cmp::Reverse(f.0), f.1, f.2));
        found.into_iter().map(|f| f.4).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::below;

    #[test]
    fn mountpoints_cover_what_they_should() {
        assert_eq!(below(b"/dev/null", b"/dev/null", false), Some(&b""[..]));
        assert_eq!(below(b"/dev/null", b"/dev/null/x", false), None);
        assert_eq!(below(b"/files", b"/files/a/b", true), Some(&b"a/b"[..]));
        assert_eq!(below(b"/files", b"/filesx", true), None);
        assert_eq!(below(b"/", b"/a", true), Some(&b"a"[..]));
        assert_eq!(below(b"/", b"/", true), Some(&b""[..]));
        assert_eq!(below(b"/a", b"/", true), None);
    }
}
