//! A resource-manager framework in the image of QNX's `resmgr` and `iofunc` layers.
//!
//! A server implements [`ResourceManager`] (only the handlers it needs: the others have QNX's
//! `iofunc` defaults), attaches one or more paths with [`Dispatch::attach`] and calls
//! [`Dispatch::run`]. The dispatch loop receives, validates every header
//! ([`kernel_sim::iomsg::IoMsg::decode`]: a short or lying message gets `EBADMSG`, never a
//! crash), finds the open's control block, calls the handler and replies.
//!
//! What the framework does itself, as QNX's does:
//!
//! - **OCBs** (open control blocks): each `open` makes one, holding the offset, the open flags,
//!   the mountpoint and the rest of the path, the client's pid and the server's own per-open
//!   state ([`ResourceManager::Ocb`]). It is bound to the client's connection (scoid, coid); an
//!   I/O message on a connection with no OCB gets `EBADF`.
//! - **`_IO_DUP`** binds the new connection to the same OCB; **`_IO_CLOSE`** unbinds it, and the
//!   close handler ([`ResourceManager::close_ocb`]) runs when the OCB's last binding goes.
//! - **A client that dies with files open**: its DISCONNECT pulse unbinds every connection of
//!   that scoid, runs the close handlers, and detaches the scoid (QNX's process manager would
//!   send `_IO_CLOSE` for the dead client; the simulator does not send on behalf of the dead).
//! - **Defaults**: no read handler reads 0 bytes (end of file), no write handler swallows the
//!   data, `lseek` moves the offset ([`lseek_default`]), `devctl` answers
//!   `DCMD_ALL_GETFLAGS`/`SETFLAGS` and gives `ENOSYS` otherwise ([`devctl_default`]), which a
//!   client's `devctl` turns into `ENOTTY`; any other I/O type gives `ENOSYS`, and `_IO_CLOSE`
//!   without a handler gives `EOK`. Read and write first check the open's access (`EBADF`).
//! - **The offset**: after a read or write of `n` bytes the framework advances the OCB's offset
//!   by `n`; a handler reads it as the position of the transfer.
//! - **Journal** (optional, [`Dispatch::journal`]): one record per request, written before the
//!   reply (see [`crate::journal`]).
//! - **Pulses and timers**: DISCONNECT and UNBLOCK are handled here; every other pulse, and
//!   those of timers made with [`Dispatch::timer`], go to [`ResourceManager::pulse`]. A pulse
//!   with code [`STOP_CODE`] through the server's own connection stops the loop
//!   ([`Dispatch::stop`] sends it); a client's pulse with that code is ignored.
//! - **A pool of receiving threads**: `run(n)` receives on `n` threads. Handlers take `&self`;
//!   each OCB is locked while a handler uses it, as `iofunc_lock_ocb` does.

use crate::journal::Journal;
use kernel_sim::iomsg::{self, dcmd, IoMsg};
use kernel_sim::{
    chf, pulse_code, Chid, Coid, Errno, MsgInfo, NameAttach, PathId, Pid, Pulse, Rcvid, Received,
    Scoid, SigEvent, System, TimerId, SIDE_CHANNEL,
};
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The pulse code that stops a [`Dispatch`] loop (`_PULSE_CODE_MAXAVAIL`).
pub const STOP_CODE: i8 = pulse_code::MAXAVAIL;

/// Largest receive buffer a dispatch thread keeps; longer writes are fetched with `msg_read`.
const RECV_BUF: usize = 64 * 1024;

/// One of a dispatch's mountpoints, in the order [`Dispatch::attach`] made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MountId(pub usize);

/// What a client's `open` asked for.
#[derive(Clone, Debug)]
pub struct OpenRequest<'a> {
    /// The mountpoint it resolved to.
    pub mount: MountId,
    /// The rest of the path below the mountpoint (empty for the mountpoint itself).
    pub path: &'a str,
    /// The open flags as `ioflag` (`_IO_FLAG_RD`/`_WR` in the low bits, then `O_CREAT`, ...).
    pub ioflag: u32,
    /// The creation mode.
    pub mode: u32,
    /// The client's pid.
    pub client: Pid,
}

impl OpenRequest<'_> {
    /// The host `O_*` flags the client passed to `open` (the inverse of
    /// [`iomsg::ioflag_from_oflag`]).
    pub fn oflag(&self) -> i32 {
        oflag_of(self.ioflag)
    }
}

fn oflag_of(ioflag: u32) -> i32 {
    let acc = libc::O_ACCMODE as u32;
    ((ioflag & !acc) | (ioflag & acc).saturating_sub(1)) as i32
}

/// An open control block: the state of one `open`, shared by its `dup`s.
#[derive(Debug)]
pub struct Ocb<T> {
    id: u64,
    /// The mountpoint it was opened through.
    pub mount: MountId,
    /// The rest of the path below the mountpoint.
    pub path: String,
    /// The open flags as `ioflag`.
    pub ioflag: u32,
    /// The current offset.
    pub offset: u64,
    /// The pid of the client that opened it.
    pub client: Pid,
    /// The server's own per-open state.
    pub ext: T,
}

impl<T> Ocb<T> {
    /// A number unique within this dispatch (what the journal calls `ocb`).
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Opened for reading.
    pub fn readable(&self) -> bool {
        self.ioflag & iomsg::IO_FLAG_RD != 0
    }
    /// Opened for writing.
    pub fn writable(&self) -> bool {
        self.ioflag & iomsg::IO_FLAG_WR != 0
    }
    /// The host `O_*` flags of the open.
    pub fn oflag(&self) -> i32 {
        oflag_of(self.ioflag)
    }
}

/// Why an OCB's close handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its last descriptor of the open.
    Closed,
    /// The client went away (died, or detached without closing): its DISCONNECT pulse.
    ClientGone,
}

impl CloseReason {
    fn word(self) -> &'static str {
        match self {
            CloseReason::Closed => "close",
            CloseReason::ClientGone => "disconnect",
        }
    }
}

/// What a handler knows of the request it serves.
pub struct Ctx<'a> {
    sys: &'a System,
    rcvid: Rcvid,
    info: &'a MsgInfo,
    journal: Option<&'a Journal>,
}

impl<'a> Ctx<'a> {
    /// The system.
    pub fn sys(&self) -> &'a System {
        self.sys
    }
    /// The request's receive id.
    pub fn rcvid(&self) -> Rcvid {
        self.rcvid
    }
    /// What the kernel said about the request (`MsgInfo`).
    pub fn info(&self) -> &'a MsgInfo {
        self.info
    }
    /// The client's pid.
    pub fn client(&self) -> Pid {
        Pid(self.info.pid)
    }
    /// `MsgRead`: more of the client's message, from `offset`.
    ///
    /// # Errors
    ///
    /// `ESRCH` if the client is gone.
    pub fn msg_read(&self, buf: &mut [u8], offset: usize) -> Result<usize, Errno> {
        self.sys.msg_read(self.rcvid, buf, offset)
    }
    /// Appends a record of the handler's own to the journal (nothing without one), before the
    /// framework's record of the request and before the reply.
    ///
    /// # Errors
    ///
    /// `EIO` if the journal cannot be written: fail the request rather than reply unrecorded.
    pub fn record(&self, op: &str, fields: &[(&str, &dyn Display)]) -> Result<(), Errno> {
        match self.journal {
            Some(j) => j.record(op, fields).map_err(|_| Errno::IO),
            None => Ok(()),
        }
    }
}

/// A resource manager's handlers. Only [`ResourceManager::open`] is required; each other one
/// has the default QNX's `iofunc_func_init` gives.
pub trait ResourceManager: Sync {
    /// The server's own per-open state, kept in the [`Ocb`].
    type Ocb: Send;

    /// `_IO_CONNECT` (`open`): checks the request and makes the per-open state. An error is the
    /// client's `open` error (`ENOENT` lets the client try the next server on the path).
    ///
    /// # Errors
    ///
    /// Whatever the open should fail with.
    fn open(&self, ctx: &Ctx<'_>, req: &OpenRequest<'_>) -> Result<Self::Ocb, Errno>;

    /// `_IO_READ`: append at most `nbytes` bytes read at `ocb.offset` to `out` (empty: end of
    /// file). Called only if the open allows reading. Default: end of file.
    ///
    /// # Errors
    ///
    /// The read's errno.
    fn read(
        &self,
        ctx: &Ctx<'_>,
        ocb: &mut Ocb<Self::Ocb>,
        nbytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let _ = (ctx, ocb, nbytes, out);
        Ok(())
    }

    /// `_IO_WRITE`: write `data` at `ocb.offset`; returns how many bytes were taken. Called only
    /// if the open allows writing. Default: all of them, discarded.
    ///
    /// # Errors
    ///
    /// The write's errno.
    fn write(&self, ctx: &Ctx<'_>, ocb: &mut Ocb<Self::Ocb>, data: &[u8]) -> Result<usize, Errno> {
        let _ = (ctx, ocb);
        Ok(data.len())
    }

    /// The size of what `ocb` refers to, for `SEEK_END` (the attribute's `nbytes`). Default 0.
    fn size(&self, ocb: &Ocb<Self::Ocb>) -> u64 {
        let _ = ocb;
        0
    }

    /// `_IO_LSEEK`. Default: [`lseek_default`] with [`ResourceManager::size`].
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad `whence` or a negative result.
    fn lseek(
        &self,
        ctx: &Ctx<'_>,
        ocb: &mut Ocb<Self::Ocb>,
        whence: i16,
        offset: i64,
    ) -> Result<u64, Errno> {
        let _ = ctx;
        let size = self.size(ocb);
        lseek_default(ocb, whence, offset, size)
    }

    /// `_IO_DEVCTL`: `data` is what the client sent (for a [`dcmd::DIR_TO`] command); append what
    /// it gets back (for [`dcmd::DIR_FROM`]) to `out`; returns `dev_info`. Default:
    /// [`devctl_default`].
    ///
    /// # Errors
    ///
    /// `ENOSYS` for a command the server does not know (the client sees `ENOTTY`).
    fn devctl(
        &self,
        ctx: &Ctx<'_>,
        ocb: &mut Ocb<Self::Ocb>,
        dcmd: u32,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<i32, Errno> {
        let _ = ctx;
        devctl_default(ocb, dcmd, data, out)
    }

    /// The last binding of an OCB went: by `_IO_CLOSE`, or because the client went away.
    /// Default: nothing.
    fn close_ocb(&self, ocb: Ocb<Self::Ocb>, why: CloseReason) {
        let _ = (ocb, why);
    }

    /// A server-defined message (type above `_IO_MAX`): put the reply body in `out` and return
    /// its status. It needs no open (a `name_open` connection is enough). Default: `ENOSYS`.
    ///
    /// # Errors
    ///
    /// The errno the client gets.
    fn msg(&self, ctx: &Ctx<'_>, msg: &[u8], out: &mut Vec<u8>) -> Result<i32, Errno> {
        let _ = (ctx, msg, out);
        Err(Errno::NOSYS)
    }

    /// A client connection went away (its DISCONNECT pulse), after the framework closed the
    /// OCBs bound to it and before it detaches the scoid. Default: nothing.
    fn disconnect(&self, sys: &System, scoid: i32) {
        let _ = (sys, scoid);
    }

    /// A pulse the framework does not handle itself (user codes, timers, COIDDEATH, ...).
    /// Default: ignored.
    fn pulse(&self, sys: &System, pulse: &Pulse) {
        let _ = (sys, pulse);
    }
}

/// `iofunc_lseek_default`: `SEEK_SET`, `SEEK_CUR` or `SEEK_END` (from `size`); updates the
/// offset and returns it.
///
/// # Errors
///
/// `EINVAL`: another `whence`, or a result below 0 or beyond `i64::MAX`.
pub fn lseek_default<T>(
    ocb: &mut Ocb<T>,
    whence: i16,
    offset: i64,
    size: u64,
) -> Result<u64, Errno> {
    let base = match whence as i32 {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => ocb.offset,
        libc::SEEK_END => size,
        _ => return Err(Errno::INVAL),
    };
    let base = i64::try_from(base).map_err(|_| Errno::INVAL)?;
    let to = base.checked_add(offset).ok_or(Errno::INVAL)?;
    let to = u64::try_from(to).map_err(|_| Errno::INVAL)?;
    ocb.offset = to;
    Ok(to)
}

/// `iofunc_devctl_default`: `DCMD_ALL_GETFLAGS` returns the open's `O_*` flags,
/// `DCMD_ALL_SETFLAGS` sets its `O_APPEND`, `O_NONBLOCK`, `O_DSYNC`, `O_RSYNC` and `O_SYNC`.
///
/// # Errors
///
/// `ENOSYS` for any other command; `EINVAL` for a short `SETFLAGS` argument.
pub fn devctl_default<T>(
    ocb: &mut Ocb<T>,
    dcmd: u32,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<i32, Errno> {
    match dcmd {
        dcmd::ALL_GETFLAGS => {
            out.extend_from_slice(&ocb.oflag().to_le_bytes());
            Ok(0)
        }
        dcmd::ALL_SETFLAGS => {
            let b: [u8; 4] = data
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(Errno::INVAL)?;
            let settable =
                (libc::O_APPEND | libc::O_NONBLOCK | libc::O_DSYNC | libc::O_RSYNC | libc::O_SYNC)
                    as u32;
            let want = i32::from_le_bytes(b) as u32;
            ocb.ioflag = (ocb.ioflag & !settable) | (want & settable);
            Ok(0)
        }
        _ => Err(Errno::NOSYS),
    }
}

type Shared<T> = Arc<Mutex<Option<Ocb<T>>>>;

/// The OCB bindings: (scoid, coid) of a client connection to (OCB id, OCB).
struct Bindings<T> {
    map: HashMap<(i32, i32), (u64, Shared<T>)>,
    refs: HashMap<u64, usize>,
    next_id: u64,
}

/// What a dispatch has served so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Successful opens.
    pub opens: u64,
    /// Close handlers run after `_IO_CLOSE`.
    pub closes: u64,
    /// Close handlers run for clients that went away.
    pub client_gone: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests answered in all.
    pub requests: u64,
}

/// A resource manager's channel, mountpoints and dispatch loop (`dispatch_t` with its
/// `resmgr_attach`es).
pub struct Dispatch<'s, R: ResourceManager> {
    sys: &'s System,
    rm: R,
    chid: Chid,
    self_coid: Coid,
    /// The scoid the server sees on pulses sent through `self_coid`.
    self_scoid: i32,
    mounts: Vec<(PathId, String)>,
    names: Vec<NameAttach>,
    journal: Option<Journal>,
    bindings: Mutex<Bindings<R::Ocb>>,
    stats: Mutex<Stats>,
    stopping: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<'s, R: ResourceManager> Dispatch<'s, R> {
    /// `dispatch_create` + `resmgr_attach(NULL path)`: a channel with `_NTO_CHF_DISCONNECT |
    /// _NTO_CHF_UNBLOCK` for resource manager `rm`, and a connection to it for its own pulses.
    ///
    /// # Errors
    ///
    /// The errno of `channel_create` or `connect_attach` (`EAGAIN`, `EMFILE`).
    pub fn new(sys: &'s System, rm: R) -> Result<Self, Errno> {
        let chid = sys.channel_create(chf::DISCONNECT | chf::UNBLOCK)?;
        // NOSHARE: a server connection of its own, so its scoid is not one this process's
        // other connections to the channel (a client in the same process) share.
        let own = sys
            .connect_attach(0, sys.pid(), chid, SIDE_CHANNEL, kernel_sim::cof::NOSHARE)
            .and_then(|c| Ok((c, sys.connect_server_info(Pid(0), c)?.scoid)));
        let (self_coid, self_scoid) = match own {
            Ok(x) => x,
            Err(e) => {
                let _ = sys.channel_destroy(chid);
                return Err(e);
            }
        };
        Ok(Dispatch {
            sys,
            rm,
            chid,
            self_coid,
            self_scoid,
            mounts: Vec::new(),
            names: Vec::new(),
            journal: None,
            bindings: Mutex::new(Bindings {
                map: HashMap::new(),
                refs: HashMap::new(),
                next_id: 1,
            }),
            stats: Mutex::new(Stats::default()),
            stopping: AtomicBool::new(false),
        })
    }

    /// Records every request in `journal` before replying.
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// `resmgr_attach`: attaches mountpoint `path` with `_RESMGR_FLAG_*` `flags` (see
    /// [`System::resmgr_attach`]).
    ///
    /// # Errors
    ///
    /// As [`System::resmgr_attach`].
    pub fn attach(&mut self, path: &str, flags: u32) -> Result<MountId, Errno> {
        let id = self.sys.resmgr_attach(self.chid, path, flags)?;
        self.mounts.push((id, path.to_owned()));
        Ok(MountId(self.mounts.len() - 1))
    }

    /// `name_attach(dpp, name, 0)`: also registers `/dev/name/local/<name>` for this channel, so
    /// clients can `name_open` it and send server-defined messages.
    ///
    /// # Errors
    ///
    /// As [`System::name_attach_on`].
    pub fn attach_name(&mut self, name: &str) -> Result<(), Errno> {
        let n = self.sys.name_attach_on(self.chid, name)?;
        self.names.push(n);
        Ok(())
    }

    /// The mountpoint path of `mount`.
    pub fn mount_path(&self, mount: MountId) -> Option<&str> {
        self.mounts.get(mount.0).map(|(_, p)| p.as_str())
    }

    /// The channel.
    pub fn chid(&self) -> Chid {
        self.chid
    }

    /// A side-channel connection to this dispatch's own channel: other threads of the server
    /// send it pulses (for [`ResourceManager::pulse`]) through it.
    pub fn self_coid(&self) -> Coid {
        self.self_coid
    }

    /// Whether pulse `p` came through [`Dispatch::self_coid`] (this server's own threads and
    /// timers), not from a client: what a pulse code that controls the server must check.
    pub fn is_own(&self, p: &Pulse) -> bool {
        p.scoid == self.self_scoid
    }

    /// The scoid of [`Dispatch::self_coid`] as its pulses carry it (see [`Dispatch::is_own`]).
    pub fn self_scoid(&self) -> i32 {
        self.self_scoid
    }

    /// The resource manager.
    pub fn resource(&self) -> &R {
        &self.rm
    }

    /// What has been served so far.
    pub fn stats(&self) -> Stats {
        *lock(&self.stats)
    }

    /// A timer that delivers a pulse with `code` and `value` to this dispatch every `period`
    /// (first after one period), for [`ResourceManager::pulse`].
    ///
    /// # Errors
    ///
    /// `EINVAL` for a negative code or [`STOP_CODE`]; the errors of `timer_create`.
    pub fn timer(&self, code: i8, value: i32, period: Duration) -> Result<TimerId, Errno> {
        if !(0..STOP_CODE).contains(&code) {
            return Err(Errno::INVAL);
        }
        let id = self.sys.timer_create(SigEvent::Pulse {
            coid: self.self_coid,
            priority: -1,
            code,
            value,
        })?;
        self.sys.timer_settime(id, Some(period), Some(period))?;
        Ok(id)
    }

    /// Asks the loop to stop (every thread of the pool), from any thread.
    ///
    /// # Errors
    ///
    /// `EAGAIN` if the system's pulse pool is full.
    pub fn stop(&self) -> Result<(), Errno> {
        self.stopping.store(true, Ordering::Release);
        self.sys.msg_send_pulse(self.self_coid, -1, STOP_CODE, 0)
    }

    /// Receives and handles messages on `threads` threads (at least one: the caller's) until a
    /// [`STOP_CODE`] pulse arrives; returns what was served.
    ///
    /// # Errors
    ///
    /// The errno of a failed receive (the channel was destroyed under the loop).
    pub fn run(&self, threads: usize) -> Result<Stats, Errno> {
        std::thread::scope(|s| {
            let pool: Vec<_> = (1..threads.max(1))
                .map(|_| s.spawn(|| self.serve()))
                .collect();
            let mut res = self.serve();
            for t in pool {
                let r = t.join().unwrap_or(Err(Errno::INTR));
                res = res.and(r);
            }
            res
        })?;
        Ok(self.stats())
    }

    fn serve(&self) -> Result<(), Errno> {
        let cap = (self.sys.limits().max_msg_size as usize).min(RECV_BUF);
        let mut buf = vec![0u8; cap];
        let mut out = Vec::new();
        while !self.stopping.load(Ordering::Acquire) {
            match self.sys.msg_receive(self.chid, &mut buf) {
                Err(Errno::INTR) | Err(Errno::TIMEDOUT) => continue,
                Err(e) => return Err(e),
                Ok(Received::Pulse(p)) => {
                    // Only this server's own connection may stop it: a client's pulse with the
                    // same code is not obeyed.
                    if p.code == STOP_CODE && self.is_own(&p) {
                        self.stopping.store(true, Ordering::Release);
                        // Wake the next thread of the pool; it passes the pulse on.
                        let _ = self.sys.msg_send_pulse(self.self_coid, -1, STOP_CODE, 0);
                        break;
                    }
                    self.on_pulse(&p);
                }
                Ok(Received::Message { rcvid, info }) => {
                    let got = (info.msglen as usize).min(buf.len());
                    out.clear();
                    let ctx = Ctx {
                        sys: self.sys,
                        rcvid,
                        info: &info,
                        journal: self.journal.as_ref(),
                    };
                    let res = self.on_message(&ctx, &buf[..got], &mut out);
                    let mut st = lock(&self.stats);
                    st.requests += 1;
                    if res.is_err() {
                        st.errors += 1;
                    }
                    drop(st);
                    let sent = match res {
                        Ok(status) => self.sys.msg_reply(rcvid, status, &out),
                        Err(e) => self.sys.msg_error(rcvid, e),
                    };
                    // A client that is gone (ESRCH) needs no answer; any other failure to
                    // reply (a reply too large, say) must not leave the client blocked.
                    if let Err(e) = sent {
                        if e != Errno::SRCH {
                            let _ = self.sys.msg_error(rcvid, e);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn on_pulse(&self, p: &Pulse) {
        match p.code {
            pulse_code::DISCONNECT => {
                let gone: Vec<_> = {
                    let mut b = lock(&self.bindings);
                    let keys: Vec<_> = b.map.keys().filter(|k| k.0 == p.scoid).copied().collect();
                    keys.into_iter()
                        .filter_map(|k| self.unbind_locked(&mut b, k))
                        .collect()
                };
                for ocb in gone {
                    self.close(ocb, CloseReason::ClientGone);
                }
                self.rm.disconnect(self.sys, p.scoid);
                let _ = self.sys.scoid_detach(Scoid(p.scoid));
            }
            // Handlers reply before they return, so there is never a request to unblock.
            pulse_code::UNBLOCK => {}
            STOP_CODE => tracing::debug!(scoid = p.scoid, "a client's stop pulse ignored"),
            _ => self.rm.pulse(self.sys, p),
        }
    }

    /// Removes binding `key`; the OCB if that was its last binding.
    fn unbind_locked(&self, b: &mut Bindings<R::Ocb>, key: (i32, i32)) -> Option<Shared<R::Ocb>> {
        let (id, ocb) = b.map.remove(&key)?;
        let refs = b.refs.entry(id).or_insert(1);
        *refs -= 1;
        if *refs == 0 {
            b.refs.remove(&id);
            Some(ocb)
        } else {
            None
        }
    }

    fn close(&self, ocb: Shared<R::Ocb>, why: CloseReason) {
        let Some(ocb) = lock(&ocb).take() else {
            return;
        };
        if let Some(j) = &self.journal {
            let _ = j.record(
                "close",
                &[
                    ("pid", &ocb.client.0),
                    ("ocb", &ocb.id),
                    ("why", &why.word()),
                ],
            );
        }
        let mut st = lock(&self.stats);
        match why {
            CloseReason::Closed => st.closes += 1,
            CloseReason::ClientGone => st.client_gone += 1,
        }
        drop(st);
        self.rm.close_ocb(ocb, why);
    }

    fn bound(&self, info: &MsgInfo) -> Result<Shared<R::Ocb>, Errno> {
        lock(&self.bindings)
            .map
            .get(&(info.scoid, info.coid))
            .map(|(_, o)| o.clone())
            .ok_or(Errno::BADF)
    }

    fn record(&self, op: &str, fields: &[(&str, &dyn Display)]) -> Result<(), Errno> {
        match &self.journal {
            Some(j) => j.record(op, fields).map_err(|_| Errno::IO),
            None => Ok(()),
        }
    }

    fn on_message(&self, ctx: &Ctx<'_>, msg: &[u8], out: &mut Vec<u8>) -> Result<i32, Errno> {
        let info = ctx.info;
        let m = IoMsg::decode(msg, info.srcmsglen as usize)?;
        match m {
            IoMsg::Connect(c) => self.on_open(ctx, c),
            IoMsg::Private(ty) => {
                let status = self.rm.msg(ctx, msg, out)?;
                self.record(
                    "msg",
                    &[("pid", &info.pid), ("type", &ty), ("len", &msg.len())],
                )?;
                Ok(status)
            }
            IoMsg::Close => {
                let last = {
                    let mut b = lock(&self.bindings);
                    if !b.map.contains_key(&(info.scoid, info.coid)) {
                        return Err(Errno::BADF);
                    }
                    self.unbind_locked(&mut b, (info.scoid, info.coid))
                };
                if let Some(ocb) = last {
                    self.close(ocb, CloseReason::Closed);
                }
                Ok(0)
            }
            IoMsg::Dup(old) => {
                let mut b = lock(&self.bindings);
                let (id, ocb) = b
                    .map
                    .get(&(old.scoid, old.coid))
                    .cloned()
                    .ok_or(Errno::BADF)?;
                let key = (info.scoid, info.coid);
                if key == (old.scoid, old.coid) {
                    return Ok(0);
                }
                // A stale binding on the new connection (its close never arrived) is replaced.
                let stale = self.unbind_locked(&mut b, key);
                b.map.insert(key, (id, ocb));
                *b.refs.entry(id).or_insert(0) += 1;
                drop(b);
                if let Some(s) = stale {
                    self.close(s, CloseReason::Closed);
                }
                self.record("dup", &[("pid", &info.pid), ("ocb", &id)])?;
                Ok(0)
            }
            IoMsg::Read { nbytes, xtype } => {
                let shared = self.bound(info)?;
                let mut g = lock(&shared);
                let ocb = g.as_mut().ok_or(Errno::BADF)?;
                if !ocb.readable() {
                    return Err(Errno::BADF);
                }
                if xtype != iomsg::IO_XTYPE_NONE {
                    return Err(Errno::NOSYS);
                }
                // No more than the client can take, nor than one reply can carry.
                let n = (nbytes as usize)
                    .min(info.dstmsglen as usize)
                    .min(self.sys.limits().max_msg_size as usize);
                self.rm.read(ctx, ocb, n, out)?;
                out.truncate(n);
                let at = ocb.offset;
                ocb.offset += out.len() as u64;
                self.record(
                    "read",
                    &[
                        ("pid", &info.pid),
                        ("ocb", &ocb.id),
                        ("offset", &at),
                        ("n", &out.len()),
                    ],
                )?;
                Ok(out.len() as i32)
            }
            IoMsg::Write {
                nbytes,
                xtype,
                data,
            } => {
                let shared = self.bound(info)?;
                let mut g = lock(&shared);
                let ocb = g.as_mut().ok_or(Errno::BADF)?;
                if !ocb.writable() {
                    return Err(Errno::BADF);
                }
                if xtype != iomsg::IO_XTYPE_NONE {
                    return Err(Errno::NOSYS);
                }
                let n = nbytes as usize;
                let more;
                let data = if data.len() < n {
                    // The rest did not fit the receive buffer: fetch it from the client.
                    let mut all = vec![0u8; n];
                    all[..data.len()].copy_from_slice(data);
                    let got = ctx.msg_read(&mut all[data.len()..], 16 + data.len())?;
                    if got != n - data.len() {
                        return Err(Errno::BADMSG);
                    }
                    more = all;
                    &more[..]
                } else {
                    data
                };
                let took = self.rm.write(ctx, ocb, data)?.min(n);
                let at = ocb.offset;
                ocb.offset += took as u64;
                self.record(
                    "write",
                    &[
                        ("pid", &info.pid),
                        ("ocb", &ocb.id),
                        ("offset", &at),
                        ("n", &took),
                    ],
                )?;
                Ok(took as i32)
            }
            IoMsg::Lseek { whence, offset } => {
                let shared = self.bound(info)?;
                let mut g = lock(&shared);
                let ocb = g.as_mut().ok_or(Errno::BADF)?;
                let to = self.rm.lseek(ctx, ocb, whence, offset)?;
                self.record(
                    "lseek",
                    &[("pid", &info.pid), ("ocb", &ocb.id), ("offset", &to)],
                )?;
                out.extend_from_slice(&to.to_le_bytes());
                Ok(0)
            }
            IoMsg::Devctl {
                dcmd: cmd,
                nbytes,
                data,
            } => {
                let shared = self.bound(info)?;
                let mut g = lock(&shared);
                let ocb = g.as_mut().ok_or(Errno::BADF)?;
                out.extend_from_slice(&[0u8; 16]);
                let ret = self.rm.devctl(ctx, ocb, cmd, data, out)?;
                let from = dcmd::direction(cmd) & dcmd::DIR_FROM != 0;
                let n = if from {
                    (out.len() - 16).min(nbytes as usize)
                } else {
                    0
                };
                out.truncate(16 + n);
                out[..16].copy_from_slice(&iomsg::io_devctl_reply(ret, n as u32));
                self.record(
                    "devctl",
                    &[
                        ("pid", &info.pid),
                        ("ocb", &ocb.id),
                        ("dcmd", &format_args!("{cmd:#x}")),
                        ("ret", &ret),
                    ],
                )?;
                Ok(0)
            }
            IoMsg::Other(_) => {
                self.bound(info)?;
                Err(Errno::NOSYS)
            }
        }
    }

    fn on_open(&self, ctx: &Ctx<'_>, c: iomsg::IoConnect) -> Result<i32, Errno> {
        let info = ctx.info;
        if c.subtype != iomsg::IO_CONNECT_OPEN {
            return Err(Errno::NOSYS);
        }
        if c.file_type == iomsg::FTYPE_NAME {
            // A `name_open` of one of our names: the connection needs no OCB.
            return if self.names.is_empty() {
                Err(Errno::NOENT)
            } else {
                Ok(0)
            };
        }
        let Some(mount) = self
            .mounts
            .iter()
            .position(|(id, _)| id.handle() == c.handle)
        else {
            return Err(Errno::NOENT);
        };
        let req = OpenRequest {
            mount: MountId(mount),
            path: &c.path,
            ioflag: c.ioflag,
            mode: c.mode,
            client: Pid(info.pid),
        };
        let ext = self.rm.open(ctx, &req)?;
        let key = (info.scoid, info.coid);
        let (id, stale) = {
            let mut b = lock(&self.bindings);
            let id = b.next_id;
            b.next_id += 1;
            let stale = self.unbind_locked(&mut b, key);
            let ocb = Ocb {
                id,
                mount: MountId(mount),
                path: c.path.clone(),
                ioflag: c.ioflag,
                offset: 0,
                client: Pid(info.pid),
                ext,
            };
            b.map.insert(key, (id, Arc::new(Mutex::new(Some(ocb)))));
            b.refs.insert(id, 1);
            (id, stale)
        };
        if let Some(s) = stale {
            self.close(s, CloseReason::Closed);
        }
        let mut st = lock(&self.stats);
        st.opens += 1;
        drop(st);
        let mount_path = self.mounts[mount].1.as_str();
        self.record(
            "open",
            &[
                ("pid", &info.pid),
                ("ocb", &id),
                ("mount", &mount_path),
                ("path", &c.path),
                ("ioflag", &format_args!("{:#x}", c.ioflag)),
            ],
        )?;
        Ok(0)
    }
}

impl<R: ResourceManager> Drop for Dispatch<'_, R> {
    fn drop(&mut self) {
        for (id, _) in self.mounts.drain(..) {
            let _ = self.sys.resmgr_detach(id);
        }
        for n in self.names.drain(..) {
            let _ = self.sys.name_detach_keep(&n);
        }
        let _ = self.sys.connect_detach(self.self_coid);
        let _ = self.sys.channel_destroy(self.chid);
    }
}
