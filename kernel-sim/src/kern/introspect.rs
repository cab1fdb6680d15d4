//! A read-only view of a whole system, safe to take while it runs: it reads the arena without
//! taking any lock, so a view taken during an update may show that update half done (a
//! connection without its coid yet, say). Every index is validated as everywhere else.

use super::layout::{obj_state, proc_state};
use super::ops::{entry_kind, obj_st, Entry, Kernel};
use super::proto::{self, st};
use crate::abi::SIDE_CHANNEL;
use crate::sync::atomic::Ordering::{Acquire as R, Relaxed as X};
use std::fmt;

/// What a simulated thread is doing, as `pidin` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadState {
    /// Not in a kernel call (QNX: READY or RUNNING).
    Ready,
    /// Queued on a channel (SEND-blocked) of process `pid`.
    Send {
        /// Server pid.
        pid: i32,
        /// Server chid.
        chid: i32,
    },
    /// Waiting for a reply from process `pid` (REPLY-blocked; includes the brief copy states).
    Reply {
        /// Server pid.
        pid: i32,
        /// Server chid.
        chid: i32,
    },
    /// Waiting on one of its own channels (RECEIVE-blocked).
    Receive {
        /// Its chid.
        chid: i32,
    },
    /// Holding a reply it has not picked up yet, or a hand-over it has not taken yet.
    Waking,
}

impl fmt::Display for ThreadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThreadState::Ready => write!(f, "READY"),
            ThreadState::Send { pid, chid } => write!(f, "SEND {pid}:{chid}"),
            ThreadState::Reply { pid, chid } => write!(f, "REPLY {pid}:{chid}"),
            ThreadState::Receive { chid } => write!(f, "RECEIVE {chid}"),
            ThreadState::Waking => write!(f, "WAKING"),
        }
    }
}

/// A thread slot in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadView {
    /// The simulated tid (slot within its process + 1).
    pub tid: i32,
    /// Its OS thread id.
    pub os_tid: i32,
    /// Simulated priority.
    pub priority: u8,
    /// What it is doing.
    pub state: ThreadState,
}

/// A registered process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessView {
    /// Its OS pid.
    pub pid: i32,
    /// Its process-table slot.
    pub slot: u32,
    /// `"alive"`, `"cleaning"` (being torn down) or `"claiming"` (registering).
    pub state: &'static str,
    /// Whether its OS process still runs (false: awaiting cleanup).
    pub running: bool,
    /// Its threads that hold a slot.
    pub threads: Vec<ThreadView>,
}

/// A channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelView {
    /// Owner pid.
    pub pid: i32,
    /// Its chid.
    pub chid: i32,
    /// `_NTO_CHF_*` flags.
    pub flags: u32,
    /// Messages and pulses queued.
    pub queued: u32,
}

/// A client connection (one per coid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    /// Client pid.
    pub pid: i32,
    /// The client's coid.
    pub coid: i32,
    /// Server pid (0 if gone).
    pub server_pid: i32,
    /// Server chid (0 if gone).
    pub chid: i32,
    /// Scoid, with the side-channel bit.
    pub scoid: i32,
    /// The server's channel is gone (sends give `EBADF`).
    pub dead: bool,
}

/// A registered name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameView {
    /// The name's full path (`/dev/name/local/...`) or the mountpoint.
    pub path: String,
    /// Owner pid.
    pub pid: i32,
    /// Its chid.
    pub chid: i32,
    /// A `resmgr_attach` path (else a `name_attach` name).
    pub is_path: bool,
    /// The `_RESMGR_FLAG_*` flags of a path.
    pub flags: u32,
}

/// How many objects of each kind are in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObjectCounts {
    /// Process slots.
    pub processes: u32,
    /// Thread slots.
    pub threads: u32,
    /// Channels.
    pub channels: u32,
    /// Connection objects (shared by coids).
    pub connections: u32,
    /// Pulses queued.
    pub pulses: u32,
    /// Names.
    pub names: u32,
}

/// A view of a whole system ([`crate::System::snapshot`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Registered processes and their threads.
    pub processes: Vec<ProcessView>,
    /// Channels.
    pub channels: Vec<ChannelView>,
    /// Client coids.
    pub connections: Vec<ConnectionView>,
    /// Names and paths.
    pub names: Vec<NameView>,
    /// Threads of dead clients kept until their server replies (REPLY-blocked on an
    /// `_NTO_CHF_UNBLOCK` channel when they died).
    pub orphans: Vec<ThreadView>,
    /// Objects in use.
    pub counts: ObjectCounts,
}

impl Kernel<'_> {
    fn thread_view(&self, s: u32, t: &super::layout::ThreadSlot) -> ThreadView {
        let l = self.a.limits();
        let (spid, schid) = self.chan_owner(t.chan.load(X));
        let state = match proto::state_of(t.state.load(R)) {
            st::SEND_BLOCKED => ThreadState::Send {
                pid: spid,
                chid: schid,
            },
            st::RECV_COPY | st::REPLY_BLOCKED | st::REPLY_BUSY => ThreadState::Reply {
                pid: spid,
                chid: schid,
            },
            st::RECV_WAIT => ThreadState::Receive {
                chid: self.chan_owner(t.recv_chan.load(X)).1,
            },
            st::REPLIED | st::RECV_HANDED => ThreadState::Waking,
            _ => ThreadState::Ready,
        };
        ThreadView {
            tid: (s % l.threads_per_process + 1) as i32,
            os_tid: t.tid.load(X) as i32,
            priority: t.priority.load(X) as u8,
            state,
        }
    }

    fn pid_of(&self, slot: u32) -> i32 {
        self.a.proc(slot).map_or(0, |p| p.pid.load(X) as i32)
    }

    fn chan_owner(&self, idx: u32) -> (i32, i32) {
        self.a.chan(idx).map_or((0, 0), |c| {
            (self.pid_of(c.owner.load(X)), c.chid.load(X) as i32)
        })
    }

    /// Takes a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        let a = self.a;
        let l = *a.limits();
        let mut snap = Snapshot::default();
        for i in 0..l.max_processes {
            let Some(p) = a.proc(i) else { continue };
            let state = match obj_st(p.state.load(R)) {
                proc_state::ALIVE => "alive",
                proc_state::CLEANING => "cleaning",
                proc_state::CLAIMING => "claiming",
                _ => continue,
            };
            let pid = p.pid.load(X) as i32;
            let mut threads = Vec::new();
            for s in i * l.threads_per_process..(i + 1) * l.threads_per_process {
                let Some(t) = a.thread(s) else { continue };
                let alloc = t.alloc.load(R);
                // An orphan belongs to a dead client, not to whoever has this process slot now.
                if alloc == 0 || alloc == super::ops::ALLOC_ORPHAN {
                    continue;
                }
                threads.push(self.thread_view(s, t));
            }
            snap.counts.threads += threads.len() as u32;
            snap.counts.processes += 1;
            let running = crate::sys::process_alive(pid, p.start_time.load(X));
            snap.processes.push(ProcessView {
                pid,
                slot: i,
                state,
                running,
                threads,
            });
            for n in 0..l.max_coids {
                for (side, e) in [(false, a.fd_entry(i, n)), (true, a.pool_entry(i, n))] {
                    let Some(e) = e else { continue };
                    let ent = Entry::decode(e.load(R));
                    if ent.kind != entry_kind::COID {
                        continue;
                    }
                    let Some(cn) = a.conn(ent.idx) else { continue };
                    let cw = cn.state.load(R);
                    let live_chan = a.chan(cn.chan.load(X)).is_some_and(|c| {
                        c.state.load(R) == ((cn.chan_gen.load(X) << 8) | obj_state::LIVE)
                    });
                    let dead = obj_st(cw) != obj_state::LIVE || !live_chan;
                    let (server_pid, chid) = if dead {
                        (0, 0)
                    } else {
                        self.chan_owner(cn.chan.load(X))
                    };
                    snap.connections.push(ConnectionView {
                        pid,
                        coid: if side {
                            SIDE_CHANNEL | n as i32
                        } else {
                            n as i32
                        },
                        server_pid,
                        chid,
                        scoid: SIDE_CHANNEL | cn.scoid.load(X) as i32,
                        dead,
                    });
                }
            }
        }
        for i in 0..l.max_channels {
            let Some(c) = a.chan(i) else { continue };
            if obj_st(c.state.load(R)) != obj_state::LIVE {
                continue;
            }
            snap.counts.channels += 1;
            let (pid, chid) = self.chan_owner(i);
            snap.channels.push(ChannelView {
                pid,
                chid,
                flags: c.flags.load(X),
                queued: c.q_len.load(X),
            });
        }
        snap.counts.connections = (0..l.max_conns())
            .filter(|&i| {
                a.conn(i)
                    .is_some_and(|c| obj_st(c.state.load(R)) != obj_state::FREE)
            })
            .count() as u32;
        snap.counts.pulses = (0..l.max_pulses)
            .filter(|&i| {
                a.pulse(i)
                    .is_some_and(|p| obj_st(p.state.load(R)) != obj_state::FREE)
            })
            .count() as u32;
        for s in 0..l.thread_slots() {
            if let Some(t) = a.thread(s) {
                if t.alloc.load(R) == super::ops::ALLOC_ORPHAN {
                    snap.orphans.push(self.thread_view(s, t));
                    snap.counts.threads += 1;
                }
            }
        }
        for i in 0..l.max_names {
            let Some(e) = a.name(i) else { continue };
            if obj_st(e.state.load(R)) != obj_state::LIVE {
                continue;
            }
            let len = (e.len.load(X) as usize).min(super::layout::NAME_MAX);
            let mut bytes = Vec::with_capacity(super::layout::NAME_MAX);
            for w in &e.bytes {
                bytes.extend_from_slice(&w.load(X).to_le_bytes());
            }
            bytes.truncate(len);
            snap.counts.names += 1;
            snap.names.push(NameView {
                path: String::from_utf8_lossy(&bytes).into_owned(),
                pid: self.pid_of(e.owner.load(X)),
                chid: e.chid.load(X) as i32,
                is_path: e.flags.load(X) & super::layout::name_kind::PATH != 0,
                flags: e.flags.load(X) & crate::abi::resmgr_flag::MASK,
            });
        }
        snap
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>8} {:>4} {:>4} {:<10} {:<20}",
            "pid", "tid", "prio", "state", "blocked on"
        )?;
        for p in &self.processes {
            let note = match (p.state, p.running) {
                ("alive", true) => String::new(),
                (s, true) => format!(" ({s})"),
                (s, false) => format!(" ({s}, process gone: awaiting cleanup)"),
            };
            if p.threads.is_empty() {
                writeln!(
                    f,
                    "{:>8} {:>4} {:>4} {:<10}{note}",
                    p.pid, "-", "-", "(no threads in the system)"
                )?;
            }
            for t in &p.threads {
                let (state, on) = match t.state {
                    ThreadState::Send { pid, chid } => ("SEND", format!("{pid}:{chid}")),
                    ThreadState::Reply { pid, chid } => ("REPLY", format!("{pid}:{chid}")),
                    ThreadState::Receive { chid } => ("RECEIVE", format!("chid {chid}")),
                    ThreadState::Waking => ("WAKING", String::new()),
                    ThreadState::Ready => ("READY", String::new()),
                };
                writeln!(
                    f,
                    "{:>8} {:>4} {:>4} {:<10} {:<20}{note}",
                    p.pid, t.tid, t.priority, state, on
                )?;
            }
        }
        writeln!(f)?;
        writeln!(f, "channels:")?;
        for c in &self.channels {
            writeln!(
                f,
                "  {}:{} flags {:#x}, {} queued",
                c.pid, c.chid, c.flags, c.queued
            )?;
        }
        writeln!(f, "connections:")?;
        for c in &self.connections {
            let target = if c.dead {
                "(server gone)".to_string()
            } else {
                format!("{}:{}", c.server_pid, c.chid)
            };
            writeln!(
                f,
                "  pid {} coid {:#x} -> {} scoid {:#x}",
                c.pid, c.coid, target, c.scoid
            )?;
        }
        if !self.orphans.is_empty() {
            writeln!(
                f,
                "threads of dead clients, kept until their server replies:"
            )?;
            for t in &self.orphans {
                writeln!(f, "  os tid {} {}", t.os_tid, t.state)?;
            }
        }
        writeln!(f, "names and paths:")?;
        for n in &self.names {
            let kind = if n.is_path { "path" } else { "name" };
            write!(f, "  {kind} {} -> {}:{}", n.path, n.pid, n.chid)?;
            if n.flags != 0 {
                write!(f, " flags {:#x}", n.flags)?;
            }
            writeln!(f)?;
        }
        let c = self.counts;
        write!(
            f,
            "in use: {} processes, {} threads, {} channels, {} connections, {} pulses, {} names",
            c.processes, c.threads, c.channels, c.connections, c.pulses, c.names
        )
    }
}
