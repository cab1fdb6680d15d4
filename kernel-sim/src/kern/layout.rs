//! The arena's types: `#[repr(C)]`, atomics only (every field may be written by another process at
//! any time), no pointers, only indices and generations. [`Layout`] computes where each region
//! starts from the limits in the header; the size formula is documented on [`Layout::compute`].

use crate::shm::ArenaSafe;
use crate::sync::atomic::{AtomicU32, AtomicU64};

/// The arena file's magic number ("QSIMARNA").
pub const MAGIC: u64 = u64::from_le_bytes(*b"QSIMARNA");
/// The layout version. Bump it whenever any arena type or the layout formula changes: an arena
/// from another build is then refused with a clear error instead of being misread.
pub const LAYOUT_VERSION: u32 = 3;

/// Limits a system is created with; every participant accepts them when it attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Processes that can be registered at once.
    pub max_processes: u32,
    /// Threads per process that can use the system at once (each needs a thread slot).
    pub threads_per_process: u32,
    /// Channels in the whole system.
    pub max_channels: u32,
    /// Connection ids per process: plays QNX's `RLIMIT_NOFILE` (`EMFILE`). Also the size of the
    /// per-process pool that chids, scoids and side-channel coids share.
    pub max_coids: u32,
    /// Largest message or reply in bytes (`EMSGSIZE` beyond it).
    pub max_msg_size: u32,
    /// Pulses queued at once in the whole system (`EAGAIN` beyond it).
    pub max_pulses: u32,
    /// Names and paths registered at once.
    pub max_names: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_processes: 32,
            threads_per_process: 8,
            max_channels: 128,
            max_coids: 256,
            max_msg_size: 64 * 1024,
            max_pulses: 1024,
            max_names: 128,
        }
    }
}

/// Hard bounds on limits, so sizes cannot overflow and indices fit their fields.
pub mod bounds {
    /// Thread slots in total: rcvids keep the slot index + 1 in 15 bits.
    pub const MAX_THREAD_SLOTS: u32 = 0x7FFE;
    /// Processes (the lock owner tag keeps the process index + 1 in 12 bits).
    pub const MAX_PROCESSES: u32 = 4000;
    /// Coids per process (the fd range must stay below the side-channel bit).
    pub const MAX_COIDS: u32 = 1 << 16;
    /// Channels, pulses and names.
    pub const MAX_OBJECTS: u32 = 1 << 20;
    /// Message size: 64 MiB.
    pub const MAX_MSG: u32 = 64 << 20;
    /// Connections in total.
    pub const MAX_CONNS: u32 = 1 << 22;
}

impl Limits {
    /// Connections in the whole system: one per coid of every process.
    pub fn max_conns(&self) -> u32 {
        self.max_processes
            .saturating_mul(self.max_coids)
            .min(bounds::MAX_CONNS)
    }
    /// Thread slots in the whole system.
    pub fn thread_slots(&self) -> u32 {
        self.max_processes * self.threads_per_process
    }
    /// Checks every limit against its bounds; the message names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: u32, lo: u32, hi: u32| {
            if v < lo || v > hi {
                Err(format!("limit {name} = {v} is outside {lo}..={hi}"))
            } else {
                Ok(())
            }
        };
        check(
            "max_processes",
            self.max_processes,
            1,
            bounds::MAX_PROCESSES,
        )?;
        check(
            "threads_per_process",
            self.threads_per_process,
            1,
            bounds::MAX_THREAD_SLOTS,
        )?;
        if (self.max_processes as u64) * (self.threads_per_process as u64)
            > bounds::MAX_THREAD_SLOTS as u64
        {
            return Err(format!(
                "max_processes * threads_per_process = {} exceeds {} thread slots",
                self.max_processes as u64 * self.threads_per_process as u64,
                bounds::MAX_THREAD_SLOTS
            ));
        }
        check("max_channels", self.max_channels, 1, bounds::MAX_OBJECTS)?;
        check("max_coids", self.max_coids, 4, bounds::MAX_COIDS)?;
        check("max_msg_size", self.max_msg_size, 64, bounds::MAX_MSG)?;
        check("max_pulses", self.max_pulses, 1, bounds::MAX_OBJECTS)?;
        check("max_names", self.max_names, 1, bounds::MAX_OBJECTS)?;
        Ok(())
    }
}

/// The arena header: identification, the limits, and system-wide words.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`], written last by the creator (with `ready`).
    pub magic: AtomicU64,
    /// [`LAYOUT_VERSION`].
    pub version: AtomicU32,
    /// 0 while the creator initialises; 1 once the arena is usable.
    pub ready: AtomicU32,
    /// Total file size in bytes; must equal [`Layout::total`] for the limits below.
    pub total_size: AtomicU64,
    /// [`Limits::max_processes`].
    pub max_processes: AtomicU32,
    /// [`Limits::threads_per_process`].
    pub threads_per_process: AtomicU32,
    /// [`Limits::max_channels`].
    pub max_channels: AtomicU32,
    /// [`Limits::max_coids`].
    pub max_coids: AtomicU32,
    /// [`Limits::max_msg_size`].
    pub max_msg_size: AtomicU32,
    /// [`Limits::max_pulses`].
    pub max_pulses: AtomicU32,
    /// [`Limits::max_names`].
    pub max_names: AtomicU32,
    /// The system's default wait mode (0 adaptive, 1 blocking).
    pub wait_mode: AtomicU32,
    /// The adaptive mode's spin budget in nanoseconds.
    pub spin_ns: AtomicU32,
    /// The uid of the creator.
    pub creator_uid: AtomicU32,
    /// The structural lock (process table, connections, channels, names): an owner tag or 0.
    pub lock: AtomicU32,
    /// Bumped (and futex-woken) whenever a name is attached or detached: what
    /// `name_wait` sleeps on.
    pub names_gen: AtomicU32,
}

/// A process's registration.
#[repr(C)]
pub struct ProcSlot {
    /// [`proc_state`] in the low byte, generation above it.
    pub state: AtomicU32,
    /// OS pid.
    pub pid: AtomicU32,
    /// Start time of the process image (ticks since boot), against pid reuse.
    pub start_time: AtomicU64,
    /// A random token kept in the registering image's memory, against `exec`.
    pub incarnation: AtomicU64,
    /// Real uid, effective uid, real gid, effective gid at registration.
    pub ids: [AtomicU32; 4],
    /// fd-range coids in use.
    pub fd_count: AtomicU32,
    /// Side-channel coids in use.
    pub side_count: AtomicU32,
    /// The chid of the process's death channel (THREAD_DEATH or COID_DISCONNECT), 0 if none.
    pub death_chid: AtomicU32,
    /// Pad to 64 bytes.
    pub _pad: [AtomicU32; 3],
}

/// Process slot states.
pub mod proc_state {
    /// Unused.
    pub const FREE: u32 = 0;
    /// Registered and (as far as anyone knows) alive.
    pub const ALIVE: u32 = 1;
    /// Being torn down.
    pub const CLEANING: u32 = 2;
    /// Taken by a registering process that has not finished filling it in.
    pub const CLAIMING: u32 = 3;
}

/// A simulated thread control block: the protocol word, the request and reply bookkeeping.
#[repr(C)]
pub struct ThreadSlot {
    /// 0 free, else the owning process index + 1.
    pub alloc: AtomicU32,
    /// The protocol word (see `kern::proto`): state, waiters bit, generation.
    pub state: AtomicU32,
    /// OS thread id of the owner.
    pub tid: AtomicU32,
    /// Simulated priority 1..=255.
    pub priority: AtomicU32,
    /// CPU the thread runs on, or `u32::MAX` while it sleeps in the kernel.
    pub cpu: AtomicU32,
    /// Send-queue link (guarded by the channel lock).
    pub next: AtomicU32,
    /// Send-queue order key (guarded by the channel lock).
    pub key: AtomicU32,
    /// Connection the current/last send went through.
    pub conn: AtomicU32,
    /// That connection's generation.
    pub conn_gen: AtomicU32,
    /// The coid the current send went through.
    pub coid: AtomicU32,
    /// Target channel index of the current send.
    pub chan: AtomicU32,
    /// Bytes in the send buffer.
    pub send_len: AtomicU32,
    /// Room in the client's reply buffer.
    pub reply_cap: AtomicU32,
    /// Bytes written into the reply buffer by `msg_reply`.
    pub reply_len: AtomicU32,
    /// The reply status (kind 0) or errno (kind 1).
    pub result: AtomicU32,
    /// 0: `result` is a status; 1: an errno.
    pub result_kind: AtomicU32,
    /// What a sender handed this waiting receiver (a queue node id, or a marker).
    pub handoff: AtomicU32,
    /// Receiver-stack link (guarded by the channel lock).
    pub recv_next: AtomicU32,
    /// Channel this thread is receiving on.
    pub recv_chan: AtomicU32,
    /// 1 if this receiver takes pulses only.
    pub recv_pulse_only: AtomicU32,
    /// Pulse handed directly to this receiver: code, value, scoid, priority.
    pub pulse: [AtomicU32; 4],
    /// Receiver thread slot that took this thread's message (for adaptive spinning), +1.
    pub served_by: AtomicU32,
    /// `_NTO_MI_*` flags of the current request.
    pub mi_flags: AtomicU32,
    /// Pad to 128 bytes.
    pub _pad: [AtomicU32; 6],
}

/// A channel.
#[repr(C)]
pub struct Channel {
    /// State in the low byte ([`obj_state`]), generation above.
    pub state: AtomicU32,
    /// Owner process index.
    pub owner: AtomicU32,
    /// The chid in the owner's pool.
    pub chid: AtomicU32,
    /// `_NTO_CHF_*` flags.
    pub flags: AtomicU32,
    /// 0 adaptive, 1 blocking, 2 the system's default.
    pub wait_mode: AtomicU32,
    /// The channel lock: guards the send queue and the receiver stack. Owner tag or 0.
    pub lock: AtomicU32,
    /// Head of the send queue (node id, 0 = empty).
    pub q_head: AtomicU32,
    /// Top of the receiver stack (thread slot + 1, 0 = empty).
    pub recv_top: AtomicU32,
    /// Thread slot + 1 of the last sender (for adaptive spinning).
    pub last_sender: AtomicU32,
    /// Queued nodes.
    pub q_len: AtomicU32,
    /// Thread slot + 1 of the last receiver (for the senders' adaptive spinning).
    pub last_receiver: AtomicU32,
    /// Queued entries beyond which `msg_send` fails with `EAGAIN` (0: no bound).
    pub queue_limit: AtomicU32,
    /// Pad to 64 bytes.
    pub _pad: [AtomicU32; 4],
}

/// Object states for channels, connections, pulses and names (low byte of `state`).
pub mod obj_state {
    /// Unused.
    pub const FREE: u32 = 0;
    /// In use.
    pub const LIVE: u32 = 1;
    /// Connection: the server's channel is gone (client coids stay allocated, EBADF).
    pub const DEAD: u32 = 2;
    /// Connection: no client links left, the scoid waits for the server's detach
    /// (after a DISCONNECT pulse).
    pub const DISCONNECTED: u32 = 3;
}

/// A client-server connection, shared by the client's coids that name it.
#[repr(C)]
pub struct Conn {
    /// State in the low byte ([`obj_state`]), generation above.
    pub state: AtomicU32,
    /// Client process index.
    pub client: AtomicU32,
    /// Target channel index.
    pub chan: AtomicU32,
    /// Target channel's generation when attached.
    pub chan_gen: AtomicU32,
    /// Server process index.
    pub server: AtomicU32,
    /// The scoid (pool number in the server's process, without the side bit).
    pub scoid: AtomicU32,
    /// Client coid slots naming this connection.
    pub links: AtomicU32,
    /// `_NTO_COF_*` flags it was created with.
    pub flags: AtomicU32,
}

/// A queued pulse.
#[repr(C)]
pub struct PulseObj {
    /// State ([`obj_state`]) and generation.
    pub state: AtomicU32,
    /// Queue link.
    pub next: AtomicU32,
    /// Queue order key.
    pub key: AtomicU32,
    /// Code (as u8), value, scoid, priority.
    pub data: [AtomicU32; 4],
    /// Channel it is queued on.
    pub chan: AtomicU32,
}

/// What a [`NameEntry`] registers (bits of its `flags`, above the `_RESMGR_FLAG_*` bits).
pub mod name_kind {
    /// A `resmgr_attach` path (several servers may share one; longest match first). Without
    /// this bit the entry is a `name_attach` name (unique, exact match only).
    pub const PATH: u32 = 1 << 31;
}

/// Longest name or path, in bytes.
pub const NAME_MAX: usize = 120;

/// A registered name (`/dev/name/local/...`) or path.
#[repr(C)]
pub struct NameEntry {
    /// State ([`obj_state`]) and generation.
    pub state: AtomicU32,
    /// Owner process index.
    pub owner: AtomicU32,
    /// Channel index.
    pub chan: AtomicU32,
    /// Channel generation.
    pub chan_gen: AtomicU32,
    /// Length of the name in bytes.
    pub len: AtomicU32,
    /// The owner's chid.
    pub chid: AtomicU32,
    /// [`name_kind::PATH`] for a `resmgr_attach` path (else a `name_attach` name), ORed with
    /// the `_RESMGR_FLAG_*` flags of the attach.
    pub flags: AtomicU32,
    /// The names generation when it was attached: orders registrations at one mountpoint.
    pub seq: AtomicU32,
    /// The name's bytes.
    pub bytes: [AtomicU64; NAME_MAX / 8],
}

// SAFETY: each type below is #[repr(C)], made only of atomics (valid for any bit pattern,
// including the zeroes of a fresh file), holds no pointers or handles, and is shared across
// processes only through atomic operations.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for Header {}
// SAFETY: see above.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for ProcSlot {}
// SAFETY: see above.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for ThreadSlot {}
// SAFETY: see above.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for Channel {}
// SAFETY: see above.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for Conn {}
// SAFETY: see above.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for PulseObj {}
// SAFETY: see above.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for NameEntry {}
// SAFETY: see above.
#[allow(unsafe_code)]
unsafe impl ArenaSafe for AtomicU64 {}

const _: () = {
    assert!(core::mem::size_of::<Header>() <= 128);
    assert!(core::mem::size_of::<ProcSlot>() == 64);
    assert!(core::mem::size_of::<ThreadSlot>() == 128);
    assert!(core::mem::size_of::<Channel>() == 64);
    assert!(core::mem::size_of::<Conn>() == 32);
    assert!(core::mem::size_of::<PulseObj>() == 32);
    assert!(core::mem::size_of::<NameEntry>() == 152);
    assert!(core::mem::align_of::<Header>() == 8);
    assert!(core::mem::align_of::<ThreadSlot>() == 4);
};

/// Where each region of the arena starts, derived from the limits alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The limits it was computed from.
    pub limits: Limits,
    /// Offset of the process table.
    pub procs: usize,
    /// Offset of the fd-range coid tables (`max_processes * max_coids` u64 entries).
    pub fds: usize,
    /// Offset of the per-process pools of chids, scoids and side coids (same size).
    pub pools: usize,
    /// Offset of the thread slots.
    pub threads: usize,
    /// Offset of the channels.
    pub chans: usize,
    /// Offset of the connections.
    pub conns: usize,
    /// Offset of the pulses.
    pub pulses: usize,
    /// Offset of the names.
    pub names: usize,
    /// Offset of the message buffers (page aligned): per thread slot a send buffer then a reply
    /// buffer, each `max_msg_size` bytes rounded up to 64.
    pub bufs: usize,
    /// Bytes per buffer.
    pub buf_size: usize,
    /// Total size of the file.
    pub total: usize,
}

fn align(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

impl Layout {
    /// Computes the layout. The file size is, with P processes, T threads per process, C coids per
    /// process, M the message size rounded up to 64, and every region aligned to 64 bytes:
    ///
    /// ```text
    /// 128 (header) + 64·P (processes) + 2·8·P·C (coid tables and pools)
    ///   + 128·P·T (thread slots) + 64·channels + 32·P·C (connections)
    ///   + 32·pulses + 152·names, rounded up to 4096,
    ///   + 2·M·P·T (a send and a reply buffer per thread slot)
    /// ```
    ///
    /// The buffers dominate: the default limits (32 processes of 8 threads, 64 KiB messages) make a
    /// file of about 34 MiB.
    pub fn compute(limits: Limits) -> Layout {
        let p = limits.max_processes as usize;
        let t = limits.thread_slots() as usize;
        let c = limits.max_coids as usize;
        let mut off = 128usize;
        let procs = off;
        off = align(off + 64 * p, 64);
        let fds = off;
        off = align(off + 8 * p * c, 64);
        let pools = off;
        off = align(off + 8 * p * c, 64);
        let threads = off;
        off = align(off + 128 * t, 64);
        let chans = off;
        off = align(off + 64 * limits.max_channels as usize, 64);
        let conns = off;
        off = align(off + 32 * limits.max_conns() as usize, 64);
        let pulses = off;
        off = align(off + 32 * limits.max_pulses as usize, 64);
        let names = off;
        off = align(
            off + core::mem::size_of::<NameEntry>() * limits.max_names as usize,
            4096,
        );
        let bufs = off;
        let buf_size = align(limits.max_msg_size as usize, 64);
        let total = align(bufs + 2 * buf_size * t, 4096);
        Layout {
            limits,
            procs,
            fds,
            pools,
            threads,
            chans,
            conns,
            pulses,
            names,
            bufs,
            buf_size,
            total,
        }
    }
}
