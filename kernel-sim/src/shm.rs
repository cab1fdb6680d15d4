//! The arena mapping: creating, attaching and validating the file, and typed access by index.
//!
//! This is the only module that turns offsets into references. Every index handed to an accessor
//! is bounds-checked against the limits the header was validated with, so a corrupted index read
//! from the arena yields `None`, never an out-of-bounds reference.
#![allow(unsafe_code)]

use crate::kern::layout::{
    Channel, Conn, Header, Layout, Limits, NameEntry, ProcSlot, PulseObj, ThreadSlot,
    LAYOUT_VERSION, MAGIC,
};
use crate::sync::atomic::{AtomicU64, Ordering};
use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Marker for types that may live in the shared arena.
///
/// # Safety
///
/// An implementor must be `#[repr(C)]`, valid for every bit pattern (in practice: made only of
/// atomics), hold no pointers, references or handles, and be accessed across processes only
/// through atomic operations.
pub unsafe trait ArenaSafe: Sized {}

/// Why a system could not be created or attached.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The name is not a valid system name.
    #[error("invalid system name {0:?}: use 1 to 200 characters from [A-Za-z0-9._-], not starting with '.'")]
    InvalidName(String),
    /// The limits asked for are out of range.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    /// `create` found the file already there.
    #[error("system {0} already exists")]
    Exists(PathBuf),
    /// `attach` found no file.
    #[error("system {0} does not exist")]
    NotFound(PathBuf),
    /// /dev/shm has no room for the arena.
    #[error("no space in /dev/shm for system {path} ({size} bytes); remove stale systems or lower the limits")]
    NoSpace {
        /// The arena's path.
        path: PathBuf,
        /// The bytes it needed.
        size: usize,
    },
    /// Any other I/O error on the arena file.
    #[error("{what} {path}: {err}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The arena's path.
        path: PathBuf,
        /// The OS error.
        err: std::io::Error,
    },
    /// The file is not an arena (or not one that finished initialising).
    #[error("{0} is not a qsim arena (bad magic number): a foreign or garbage file")]
    BadMagic(PathBuf),
    /// The arena was made by an incompatible build.
    #[error("{path} has arena layout version {found}, this build understands {expected}: remove it (qsim clean) or use the matching build")]
    Version {
        /// The arena's path.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version of this build.
        expected: u32,
    },
    /// The file is shorter (or longer) than its header says.
    #[error(
        "{path} is {size} bytes but its limits need {expected}: the file is truncated or corrupted"
    )]
    Truncated {
        /// The arena's path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The size its header implies.
        expected: u64,
    },
    /// The header's limits are out of range.
    #[error("{path} has corrupted limits: {why}")]
    CorruptHeader {
        /// The arena's path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file belongs to another user or is accessible to others.
    #[error("{path} is owned by uid {owner} with mode {mode:o}; a system must belong to you (uid {me}) with mode 600")]
    NotOwner {
        /// The arena's path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        me: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// The creator never finished initialising the arena.
    #[error(
        "{0} was never fully initialised (its creator died or is stuck); remove it and try again"
    )]
    NotReady(PathBuf),
    /// The file was unlinked while mapped.
    #[error("{0} was removed while in use; open the system again to get a fresh one")]
    Unlinked(PathBuf),
    /// Explicit limits differ from the existing system's.
    #[error("system {path} exists with limits {existing:?}, not the {requested:?} asked for")]
    LimitsMismatch {
        /// The arena's path.
        path: PathBuf,
        /// Its limits.
        existing: Limits,
        /// The limits asked for.
        requested: Limits,
    },
    /// The process table is full.
    #[error("system {0} has no free process slot (max_processes reached)")]
    ProcessTableFull(PathBuf),
}

/// A mapped, validated arena.
pub struct Arena {
    map: MmapRaw,
    file: File,
    path: PathBuf,
    layout: Layout,
}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arena")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .finish()
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SystemError + 'a {
    move |err| SystemError::Io {
        what,
        path: path.to_owned(),
        err,
    }
}

impl Arena {
    /// Creates a new arena file (exclusively: `Exists` if it is there), reserves its whole size,
    /// initialises the header and marks it ready.
    pub fn create(
        path: &Path,
        limits: Limits,
        wait_mode: u32,
        spin_ns: u32,
    ) -> Result<Arena, SystemError> {
        limits.validate().map_err(SystemError::InvalidLimits)?;
        let layout = Layout::compute(limits);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SystemError::Exists(path.to_owned()))
            }
            Err(e) => return Err(io("creating", path)(e)),
        };
        let fail = |e: SystemError| {
            let _ = std::fs::remove_file(path);
            e
        };
        // The umask may have cleared bits we asked for, never added any; make the mode exact.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io("setting the mode of", path))
            .map_err(fail)?;
        if let Err(e) = crate::sys::fallocate(&file, layout.total as u64) {
            let err = if e == crate::Errno::NOSPC {
                SystemError::NoSpace {
                    path: path.to_owned(),
                    size: layout.total,
                }
            } else {
                SystemError::Io {
                    what: "reserving space for",
                    path: path.to_owned(),
                    err: e.into(),
                }
            };
            return Err(fail(err));
        }
        let map = MmapRaw::map_raw(&file)
            .map_err(io("mapping", path))
            .map_err(fail)?;
        let arena = Arena {
            map,
            file,
            path: path.to_owned(),
            layout,
        };
        let h = arena.header();
        h.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        h.total_size.store(layout.total as u64, Ordering::Relaxed);
        h.max_processes
            .store(limits.max_processes, Ordering::Relaxed);
        h.threads_per_process
            .store(limits.threads_per_process, Ordering::Relaxed);
        h.max_channels.store(limits.max_channels, Ordering::Relaxed);
        h.max_coids.store(limits.max_coids, Ordering::Relaxed);
        h.max_msg_size.store(limits.max_msg_size, Ordering::Relaxed);
        h.max_pulses.store(limits.max_pulses, Ordering::Relaxed);
        h.max_names.store(limits.max_names, Ordering::Relaxed);
        h.wait_mode.store(wait_mode, Ordering::Relaxed);
        h.spin_ns.store(spin_ns, Ordering::Relaxed);
        h.creator_uid.store(crate::sys::ids().1, Ordering::Relaxed);
        // Everything else starts as the file's zeroes, which every arena type reads as "free".
        h.magic.store(MAGIC, Ordering::Release);
        h.ready.store(1, Ordering::Release);
        Ok(arena)
    }

    /// Attaches to an existing arena, validating owner, mode, magic, version, limits and size.
    /// Waits up to `init_wait` for a creator that is still initialising it.
    pub fn attach(path: &Path, init_wait: Duration) -> Result<Arena, SystemError> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SystemError::NotFound(path.to_owned()))
            }
            Err(e) => return Err(io("opening", path)(e)),
        };
        let meta = file.metadata().map_err(io("inspecting", path))?;
        let me = crate::sys::ids().1;
        if meta.uid() != me || meta.mode() & 0o077 != 0 {
            return Err(SystemError::NotOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                me,
                mode: meta.mode() & 0o7777,
            });
        }
        // Wait for the creator: first for the file to have its size, then for `ready`.
        let deadline = Instant::now() + init_wait;
        loop {
            let len = file.metadata().map_err(io("inspecting", path))?.len();
            if len >= 128 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(SystemError::Truncated {
                    path: path.to_owned(),
                    size: len,
                    expected: 128,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let map = MmapRaw::map_raw(&file).map_err(io("mapping", path))?;
        let len = map.len() as u64;
        // The size was checked before mapping; check the mapping itself, which `header` relies on.
        if len < 128 {
            return Err(SystemError::Truncated {
                path: path.to_owned(),
                size: len,
                expected: 128,
            });
        }
        // A provisional layout covering only the header, until the limits are validated.
        let mut arena = Arena {
            map,
            file,
            path: path.to_owned(),
            layout: Layout::compute(Limits::default()),
        };
        loop {
            let h = arena.header();
            if h.ready.load(Ordering::Acquire) == 1 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(
                    if h.magic.load(Ordering::Relaxed) == 0
                        && h.version.load(Ordering::Relaxed) != 0
                    {
                        SystemError::NotReady(path.to_owned())
                    } else if h.magic.load(Ordering::Relaxed) != MAGIC {
                        SystemError::BadMagic(path.to_owned())
                    } else {
                        SystemError::NotReady(path.to_owned())
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let h = arena.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(SystemError::BadMagic(path.to_owned()));
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != LAYOUT_VERSION {
            return Err(SystemError::Version {
                path: path.to_owned(),
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let limits = Limits {
            max_processes: h.max_processes.load(Ordering::Relaxed),
            threads_per_process: h.threads_per_process.load(Ordering::Relaxed),
            max_channels: h.max_channels.load(Ordering::Relaxed),
            max_coids: h.max_coids.load(Ordering::Relaxed),
            max_msg_size: h.max_msg_size.load(Ordering::Relaxed),
            max_pulses: h.max_pulses.load(Ordering::Relaxed),
            max_names: h.max_names.load(Ordering::Relaxed),
        };
        limits
            .validate()
            .map_err(|why| SystemError::CorruptHeader {
                path: path.to_owned(),
                why,
            })?;
        let layout = Layout::compute(limits);
        if len != layout.total as u64 || h.total_size.load(Ordering::Relaxed) != layout.total as u64
        {
            return Err(SystemError::Truncated {
                path: path.to_owned(),
                size: len,
                expected: layout.total as u64,
            });
        }
        arena.layout = layout;
        Ok(arena)
    }

    /// The arena's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The validated layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The validated limits.
    pub fn limits(&self) -> &Limits {
        &self.layout.limits
    }

    /// Whether the file was unlinked while mapped (`st_nlink == 0`).
    pub fn is_unlinked(&self) -> bool {
        self.file.metadata().map(|m| m.nlink() == 0).unwrap_or(true)
    }

    fn at<T: ArenaSafe>(&self, base: usize, stride: usize, idx: u32, count: u32) -> Option<&T> {
        if idx >= count {
            return None;
        }
        let off = base + stride * idx as usize;
        debug_assert!(off + core::mem::size_of::<T>() <= self.layout.total);
        // SAFETY: `count` comes from limits validated against the file's size (the layout's
        // `total` equals the mapping's length), so `off..off+size_of::<T>()` lies inside the
        // mapping, which lives as long as `self`. Every region offset is a multiple of 64 and every
        // stride a multiple of T's alignment, so the pointer is aligned. T: ArenaSafe is valid for
        // any bit pattern and is only accessed atomically, so a shared reference is sound even while
        // other processes write to it.
        Some(unsafe { &*(self.map.as_mut_ptr().add(off) as *const T) })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: every mapping is at least 128 bytes long (checked in attach; create reserved the
        // whole layout), the mapping is page aligned, and Header is ArenaSafe; see `at`.
        unsafe { &*(self.map.as_mut_ptr() as *const Header) }
    }

    /// Process slot `i`.
    pub fn proc(&self, i: u32) -> Option<&ProcSlot> {
        self.at(self.layout.procs, 64, i, self.layout.limits.max_processes)
    }
    /// Thread slot `i`.
    pub fn thread(&self, i: u32) -> Option<&ThreadSlot> {
        self.at(
            self.layout.threads,
            128,
            i,
            self.layout.limits.thread_slots(),
        )
    }
    /// Channel `i`.
    pub fn chan(&self, i: u32) -> Option<&Channel> {
        self.at(self.layout.chans, 64, i, self.layout.limits.max_channels)
    }
    /// Connection `i`.
    pub fn conn(&self, i: u32) -> Option<&Conn> {
        self.at(self.layout.conns, 32, i, self.layout.limits.max_conns())
    }
    /// Pulse `i`.
    pub fn pulse(&self, i: u32) -> Option<&PulseObj> {
        self.at(self.layout.pulses, 32, i, self.layout.limits.max_pulses)
    }
    /// Name entry `i`.
    pub fn name(&self, i: u32) -> Option<&NameEntry> {
        self.at(
            self.layout.names,
            core::mem::size_of::<NameEntry>(),
            i,
            self.layout.limits.max_names,
        )
    }
    /// Entry `n` of process `p`'s fd-range coid table.
    pub fn fd_entry(&self, p: u32, n: u32) -> Option<&AtomicU64> {
        let c = self.layout.limits.max_coids;
        if n >= c || p >= self.layout.limits.max_processes {
            return None;
        }
        self.at(
            self.layout.fds,
            8,
            p * c + n,
            c * self.layout.limits.max_processes,
        )
    }
    /// Entry `n` of process `p`'s pool of chids, scoids and side-channel coids.
    pub fn pool_entry(&self, p: u32, n: u32) -> Option<&AtomicU64> {
        let c = self.layout.limits.max_coids;
        if n >= c || p >= self.layout.limits.max_processes {
            return None;
        }
        self.at(
            self.layout.pools,
            8,
            p * c + n,
            c * self.layout.limits.max_processes,
        )
    }

    fn buf_base(&self, slot: u32, which: Buf) -> Option<usize> {
        if slot >= self.layout.limits.thread_slots() {
            return None;
        }
        Some(self.layout.bufs + self.layout.buf_size * (2 * slot as usize + which as usize))
    }

    /// Copies `src` into thread slot `slot`'s buffer at `off`; copies what fits and returns the
    /// byte count (0 for a bad slot or an offset past the end).
    ///
    /// Callers own the buffer by the slot protocol (the client before it queues its request, a
    /// server while the client is REPLY-blocked and the slot is marked busy).
    pub fn buf_write(&self, slot: u32, which: Buf, off: usize, src: &[u8]) -> usize {
        let Some(base) = self.buf_base(slot, which) else {
            return 0;
        };
        let room = self.layout.buf_size.saturating_sub(off);
        let n = src.len().min(room);
        if n == 0 {
            return 0;
        }
        // SAFETY: `base + off + n <= base + buf_size`, inside the mapping (the layout places
        // 2·buf_size bytes per thread slot and `slot` is in range). `src` is a Rust slice in this
        // process's private memory and cannot overlap the shared mapping. Concurrent writers are
        // excluded by the slot protocol; a hostile process writing anyway can only garble bytes,
        // which are plain data with no validity invariant.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.map.as_mut_ptr().add(base + off), n)
        };
        n
    }

    /// Copies from thread slot `slot`'s buffer at `off` into `dst`, at most `limit` bytes of the
    /// buffer (the valid length); returns the byte count.
    pub fn buf_read(
        &self,
        slot: u32,
        which: Buf,
        off: usize,
        limit: usize,
        dst: &mut [u8],
    ) -> usize {
        let Some(base) = self.buf_base(slot, which) else {
            return 0;
        };
        let valid = limit.min(self.layout.buf_size);
        let n = dst.len().min(valid.saturating_sub(off));
        if n == 0 {
            return 0;
        }
        // SAFETY: as in `buf_write`: `off + n <= buf_size`, the source lies inside this slot's
        // buffer in the mapping and `dst` is private memory, so they do not overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.map.as_mut_ptr().add(base + off),
                dst.as_mut_ptr(),
                n,
            )
        };
        n
    }
}

/// Which of a thread slot's two buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Buf {
    /// The request the client sent (read by `msg_receive` and `msg_read`).
    Send = 0,
    /// The reply (written by `msg_reply` and `msg_write`).
    Reply = 1,
}
