//! The QNX-shaped calls, as methods of [`System`]: a process's handle on one system (arena).

use crate::abi::{
    chf, Chid, ClientInfo, Coid, MsgInfo, Pid, Pulse, Rcvid, Scoid, ServerInfo, PRIORITY_MAX,
    PRIORITY_MIN, SIDE_CHANNEL,
};
use crate::iomsg;
use crate::kern::layout::Limits;
use crate::kern::{self, Kernel, Timeouts, Tuning};
use crate::shm::{Arena, SystemError};
use crate::{Errno, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::time::Duration;

pub use crate::kern::WaitMode;

/// The environment variable that names the default system.
pub const SYSTEM_ENV: &str = "QSIM_SYSTEM";

/// The default spin budget of the adaptive wait mode. DESIGN.md: on this project's 2-vCPU VM a
/// waiter that spins 2 µs falls into a sleep cascade, one that spins about 20 µs does not.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// How threads wait on a channel: the system's mode, or plain blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ChannelWait {
    /// Whatever the system was created with (adaptive by default).
    #[default]
    System,
    /// Sleep on a futex at once, on both sides of this channel.
    Blocking,
}

/// The name of the default system: `$QSIM_SYSTEM`, or `qsim-<uid>`.
pub fn default_system_name() -> String {
    std::env::var(SYSTEM_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("qsim-{}", crate::sys::ids().1))
}

fn validate_name(name: &str) -> std::result::Result<(), SystemError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SystemError::InvalidName(name.to_owned()))
    }
}

/// The file of system `name`.
pub fn system_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name)
}

/// Removes system `name`'s arena file. Processes that still map it keep working on their copy
/// until they drop it (and see [`SystemError::Unlinked`] if they try to open it again).
///
/// # Errors
///
/// The OS error from `unlink`, such as `NotFound`.
pub fn remove_system(name: &str) -> std::io::Result<()> {
    validate_name(name)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    std::fs::remove_file(system_path(name))
}

/// Builds a [`System`] handle: creates a system, attaches to one, or either.
#[derive(Clone, Debug)]
pub struct SystemBuilder {
    name: Option<String>,
    limits: Option<Limits>,
    wait: WaitMode,
    tuning: Tuning,
    init_wait: Duration,
    watcher: bool,
}

impl Default for SystemBuilder {
    fn default() -> Self {
        SystemBuilder {
            name: None,
            limits: None,
            wait: WaitMode::Adaptive(DEFAULT_SPIN),
            tuning: Tuning::default(),
            init_wait: Duration::from_secs(2),
            watcher: true,
        }
    }
}

enum OpenMode {
    Create,
    Attach,
    Either,
}

impl SystemBuilder {
    /// A builder for the default system ([`default_system_name`]) with default limits.
    pub fn new() -> Self {
        Self::default()
    }
    /// Names the system (its file is `/dev/shm/<name>`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Asks for these limits: used when creating; when attaching, the existing system's limits
    /// must equal them ([`SystemError::LimitsMismatch`] otherwise).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }
    /// The system's default wait mode, recorded at creation (attaching processes follow the
    /// system's). Default: adaptive with a 20 µs spin budget.
    pub fn wait_mode(mut self, mode: WaitMode) -> Self {
        self.wait = mode;
        self
    }
    /// How often a thread waiting for an arena lock checks whether its holder died (default 5 ms).
    pub fn lock_poll(mut self, poll: Duration) -> Self {
        self.tuning.lock_poll = poll;
        self
    }
    /// How often this process's watcher looks for newly registered processes (default 20 ms);
    /// the deaths of processes it already watches wake it at once.
    pub fn watch_scan(mut self, every: Duration) -> Self {
        self.tuning.watch_scan = every;
        self
    }
    /// Whether this process runs a watcher thread (default: yes). Without one, the deaths of
    /// other processes are cleaned up only when this process meets them (a lock a dead process
    /// held, a name it held) or calls [`System::clean_up_after`]: for tools and tests that must
    /// control who cleans up.
    pub fn watcher(mut self, on: bool) -> Self {
        self.watcher = on;
        self
    }
    /// How long attaching waits for a creator that is still initialising the arena (default 2 s).
    pub fn init_wait(mut self, wait: Duration) -> Self {
        self.init_wait = wait;
        self
    }

    /// Creates the system; [`SystemError::Exists`] if it exists.
    pub fn create(self) -> std::result::Result<System, SystemError> {
        self.build(OpenMode::Create)
    }
    /// Attaches to an existing system; [`SystemError::NotFound`] if there is none.
    pub fn attach(self) -> std::result::Result<System, SystemError> {
        self.build(OpenMode::Attach)
    }
    /// Attaches to the system if it exists (accepting its limits unless limits were given
    /// explicitly), creates it otherwise.
    pub fn open(self) -> std::result::Result<System, SystemError> {
        self.build(OpenMode::Either)
    }

    fn build(self, mode: OpenMode) -> std::result::Result<System, SystemError> {
        let name = self.name.clone().unwrap_or_else(default_system_name);
        validate_name(&name)?;
        let path = system_path(&name);
        if let Some(l) = &self.limits {
            l.validate().map_err(SystemError::InvalidLimits)?;
        }
        // Share this process's registration if it has one for this file.
        if !matches!(mode, OpenMode::Create) {
            if let Some(inner) = registry_lookup(&path) {
                self.check_limits(&inner.arena)?;
                return Ok(System { inner });
            }
        }
        let (wait_code, spin_ns) = match self.wait {
            WaitMode::Adaptive(d) => (0, d.as_nanos().min(u32::MAX as u128) as u32),
            WaitMode::Blocking => (1, 0),
        };
        let limits = self.limits.unwrap_or_default();
        let arena = match mode {
            OpenMode::Create => Arena::create(&path, limits, wait_code, spin_ns)?,
            OpenMode::Attach => Arena::attach(&path, self.init_wait)?,
            OpenMode::Either => loop {
                match Arena::attach(&path, self.init_wait) {
                    Ok(a) => break a,
                    Err(SystemError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                match Arena::create(&path, limits, wait_code, spin_ns) {
                    Ok(a) => break a,
                    Err(SystemError::Exists(_)) => continue,
                    Err(e) => return Err(e),
                }
            },
        };
        self.check_limits(&arena)?;
        let inner = Inner::register(arena, name, self.tuning, self.watcher)?;
        Ok(System { inner })
    }

    fn check_limits(&self, arena: &Arena) -> std::result::Result<(), SystemError> {
        match self.limits {
            Some(l) if l != *arena.limits() => Err(SystemError::LimitsMismatch {
                path: arena.path().to_owned(),
                existing: *arena.limits(),
                requested: l,
            }),
            _ => Ok(()),
        }
    }
}

/// This process's registration in one system, shared by all its handles.
struct Inner {
    arena: Arena,
    name: String,
    proc_idx: u32,
    proc_gen: u32,
    pid: i32,
    id: u64,
    tuning: Tuning,
    wait: WaitMode,
    /// Dropping this (with the last handle) wakes the watcher thread, which then exits.
    _watch_wake: Option<std::os::fd::OwnedFd>,
    /// This process's timers on this system (`timer_create`), fired by a thread of their own.
    timers: Arc<Timers>,
    /// The send interposition point ([`crate::interpose`]).
    interposer: crate::interpose::Interposer,
}

/// The timers of one process on one system. QNX's timers are process-owned kernel objects that
/// die with their process; here they live in the process (a thread fires them), so they die
/// with it too, and nothing of them is in the arena.
#[derive(Default)]
struct Timers {
    table: Mutex<TimerTable>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct TimerTable {
    next_id: i32,
    timers: Vec<Timer>,
    closed: bool,
    thread: bool,
}

struct Timer {
    id: i32,
    event: crate::abi::SigEvent,
    next: Option<std::time::Instant>,
    interval: Option<Duration>,
}

/// A timer created with [`System::timer_create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(pub i32);

fn run_timers(weak: Weak<Inner>, timers: Arc<Timers>) {
    loop {
        let due: Vec<crate::abi::SigEvent> = {
            let mut t = timers.table.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if t.closed {
                    return;
                }
                let now = std::time::Instant::now();
                let earliest = t.timers.iter().filter_map(|x| x.next).min();
                match earliest {
                    Some(at) if at <= now => break,
                    Some(at) => {
                        t = timers
                            .changed
                            .wait_timeout(t, at - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => t = timers.changed.wait(t).unwrap_or_else(|e| e.into_inner()),
                }
            }
            let now = std::time::Instant::now();
            let mut due = Vec::new();
            for x in t.timers.iter_mut() {
                if x.next.is_some_and(|at| at <= now) {
                    due.push(x.event);
                    x.next = x.interval.map(|i| now + i);
                }
            }
            due
        };
        let Some(inner) = weak.upgrade() else { return };
        let sys = System { inner };
        for ev in due {
            if let crate::abi::SigEvent::Pulse {
                coid,
                priority,
                code,
                value,
            } = ev
            {
                if let Err(e) = sys.msg_send_pulse(coid, priority, code, value) {
                    tracing::debug!(?e, coid = coid.0, "timer pulse not delivered");
                }
            }
        }
    }
}

static REGISTRY: Mutex<Vec<(PathBuf, i32, Weak<Inner>)>> = Mutex::new(Vec::new());
static NEXT_ID: Mutex<u64> = Mutex::new(1);

/// The token of this process image: kept in private memory, so a registration under our pid but
/// another token belongs to an image that is gone (as after `exec`).
fn incarnation() -> u64 {
    static TOKEN: OnceLock<u64> = OnceLock::new();
    *TOKEN.get_or_init(crate::sys::random_u64)
}

fn registry_lookup(path: &Path) -> Option<Arc<Inner>> {
    let pid = crate::sys::getpid();
    let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    reg.retain(|(_, _, w)| w.strong_count() > 0);
    // A forked child inherits the parent's entries (other pid): it registers anew.
    let inner = reg
        .iter()
        .find(|(p, rpid, _)| p == path && *rpid == pid)
        .and_then(|(_, _, w)| w.upgrade())?;
    if inner.arena.is_unlinked() || !inner.kernel().still_registered() {
        return None;
    }
    Some(inner)
}

extern "C" fn release_all_at_exit() {
    let live: Vec<Arc<Inner>> = {
        let reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        reg.iter()
            .filter_map(|(_, pid, w)| {
                (*pid == crate::sys::getpid())
                    .then(|| w.upgrade())
                    .flatten()
            })
            .collect()
    };
    for inner in live {
        inner.kernel().release();
    }
}

impl Inner {
    fn register(
        arena: Arena,
        name: String,
        tuning: Tuning,
        watcher: bool,
    ) -> std::result::Result<Arc<Inner>, SystemError> {
        let pid = crate::sys::getpid();
        let start = crate::sys::process_start_time(pid).unwrap_or(0);
        let (idx, gen) = Kernel::register(&arena, pid, start, incarnation(), tuning)
            .ok_or_else(|| SystemError::ProcessTableFull(arena.path().to_owned()))?;
        let h = arena.header();
        let wait = if h.wait_mode.load(crate::sync::atomic::Ordering::Relaxed) == 1 {
            WaitMode::Blocking
        } else {
            WaitMode::Adaptive(Duration::from_nanos(
                h.spin_ns.load(crate::sync::atomic::Ordering::Relaxed) as u64,
            ))
        };
        let id = {
            let mut n = NEXT_ID.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        let pipe = if watcher {
            crate::sys::WakePipe::new().ok()
        } else {
            None
        };
        let (wake_read, wake_write) = match pipe {
            Some(p) => (Some(p.read), Some(p.write)),
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            arena,
            name,
            proc_idx: idx,
            proc_gen: gen,
            pid,
            id,
            tuning,
            wait,
            _watch_wake: wake_write,
            timers: Arc::default(),
            interposer: Default::default(),
        });
        if let Some(r) = wake_read {
            let weak = Arc::downgrade(&inner);
            let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
            let spawned = std::thread::Builder::new()
                .name("qsim-watcher".into())
                .spawn(move || watch(weak, r, started_tx));
            match spawned {
                // Return once the watcher watches every process already registered, so a death
                // right after `open` is noticed (bounded wait: the watcher never blocks first).
                Ok(_) => drop(started_rx.recv_timeout(Duration::from_secs(1))),
                Err(e) => {
                    tracing::warn!(%e, "no watcher thread: deaths are noticed only by callers that meet them")
                }
            }
        } else if watcher {
            tracing::warn!("no wake pipe: no watcher thread");
        }
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push((
            inner.arena.path().to_owned(),
            pid,
            Arc::downgrade(&inner),
        ));
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| crate::sys::at_exit(release_all_at_exit));
        tracing::debug!(system = %inner.name, slot = idx, pid, "registered");
        Ok(inner)
    }

    fn kernel(&self) -> Kernel<'_> {
        Kernel {
            a: &self.arena,
            me: self.proc_idx,
            me_gen: self.proc_gen,
            tuning: self.tuning,
            lock_tag: kern::lock_tag(self.proc_idx, self.proc_gen),
        }
    }
}

/// The watcher: holds a pidfd for every other process registered in the system, and when one
/// becomes readable (the process is gone) runs its cleanup, which fails the clients blocked on it
/// with `ESRCH`, releases its names and connections, and wakes every waiter that could be waiting
/// on it. New registrations are picked up every `watch_scan`. Exits when the process's last
/// handle on the system is dropped (the wake pipe's write end closes).
fn watch(weak: Weak<Inner>, wake: std::os::fd::OwnedFd, started: std::sync::mpsc::SyncSender<()>) {
    use std::os::fd::AsFd;
    let mut watched: Vec<((u32, u32), crate::sys::PidFd)> = Vec::new();
    let mut started = Some(started);
    loop {
        let scan = {
            let Some(inner) = weak.upgrade() else { return };
            let k = inner.kernel();
            let peers = k.peers();
            watched.retain(|(key, _)| peers.iter().any(|p| (p.0, p.1) == *key));
            for (slot, gen, pid, start) in peers {
                if watched.iter().any(|(key, _)| *key == (slot, gen)) {
                    continue;
                }
                match crate::sys::PidFd::open(pid) {
                    // Opened after the pid was reused? The start time tells.
                    Ok(fd) if crate::sys::process_alive(pid, start) => {
                        watched.push(((slot, gen), fd))
                    }
                    _ => {
                        k.reap_if_dead(slot);
                    }
                }
            }
            inner.tuning.watch_scan
        };
        let mut fds = vec![wake.as_fd()];
        fds.extend(watched.iter().map(|(_, f)| f.0.as_fd()));
        let mut set = crate::sys::PollSet::new(&fds);
        if let Some(tx) = started.take() {
            let _ = tx.send(());
        }
        set.wait(scan);
        if set.ready(0) {
            match crate::sys::drain(wake.as_fd()) {
                // End of file: the last handle is gone.
                Some(0) => return,
                // A nudge: a process we just connected to must be watched now; rescan.
                _ => continue,
            }
        }
        let dead: Vec<u32> = watched
            .iter()
            .enumerate()
            .filter(|(i, _)| set.ready(i + 1))
            .map(|(_, (key, _))| key.0)
            .collect();
        if dead.is_empty() {
            continue;
        }
        let Some(inner) = weak.upgrade() else { return };
        for slot in dead {
            inner.kernel().reap_if_dead(slot);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.timers
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .closed = true;
        self.timers.changed.notify_all();
        if crate::sys::getpid() == self.pid {
            self.kernel().release();
        }
    }
}

/// A thread's slot in one system; returned when the thread exits.
struct TlsSlot {
    id: u64,
    sys: Weak<Inner>,
    slot: u32,
}

impl Drop for TlsSlot {
    fn drop(&mut self) {
        // A thread of a forked child must not free its parent's slot.
        if let Some(inner) = self.sys.upgrade().filter(|i| i.pid == crate::sys::getpid()) {
            inner.kernel().free_thread_slot(self.slot);
        }
    }
}

thread_local! {
    static SLOTS: RefCell<Vec<TlsSlot>> = const { RefCell::new(Vec::new()) };
}

/// A process's handle on a system. Cheap to clone; every clone (and every `System` opened on the
/// same system in this process) shares one registration, released when the last is dropped or
/// when the process exits normally. A `fork`ed child inherits no registration, coids or
/// channels: it opens the system again and registers anew.
///
/// Each thread that calls into the system gets a thread slot (a simulated thread control block)
/// on first use and gives it back when it exits.
#[derive(Clone)]
pub struct System {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("name", &self.inner.name)
            .field("slot", &self.inner.proc_idx)
            .finish()
    }
}

/// What `msg_receive` produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A message: reply to `rcvid`.
    Message {
        /// The receive id.
        rcvid: Rcvid,
        /// What the kernel tells about the message (`_msg_info`).
        info: MsgInfo,
    },
    /// A pulse (QNX's rcvid 0); its 16-byte wire form is also in the receive buffer.
    Pulse(Pulse),
}

impl Received {
    /// The rcvid as QNX's `MsgReceive` returns it: positive for a message, 0 for a pulse.
    pub fn rcvid(&self) -> i32 {
        match self {
            Received::Message { rcvid, .. } => rcvid.0,
            Received::Pulse(_) => 0,
        }
    }
}

/// How a thread's last send ended ([`System::last_send_outcome`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// The server replied with a status (a `msg_error` reply counts as
    /// [`SendOutcome::ReceivedNoReply`]: the call failed after the server received it).
    Replied,
    /// The call failed while the request was queued: no server ever saw it.
    NotReceived,
    /// The call failed after a server had received the request: it may have acted on it.
    ReceivedNoReply,
    /// The call failed before the request was queued (bad coid, too large, no slot).
    NotSent,
}

/// `TimerTimeout` flags (`_NTO_TIMEOUT_*` = 1 << the QNX thread state).
pub mod timeout {
    /// `_NTO_TIMEOUT_SEND`: while SEND-blocked.
    pub const SEND: u32 = 1 << 4;
    /// `_NTO_TIMEOUT_RECEIVE`: while RECEIVE-blocked.
    pub const RECEIVE: u32 = 1 << 5;
    /// `_NTO_TIMEOUT_REPLY`: while REPLY-blocked.
    pub const REPLY: u32 = 1 << 6;
}

thread_local! {
    /// A `timer_timeout` armed for the calling thread's next call: (flags, duration).
    static ARMED: std::cell::Cell<Option<(u32, Duration)>> = const { std::cell::Cell::new(None) };
}

pub(crate) fn deadline_after(d: Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(d)
}

/// Any kernel call disarms a `timer_timeout` armed for the calling thread, as in QNX.
pub(crate) fn disarm() {
    let _ = ARMED.try_with(|a| a.take());
}

/// Consumes the armed timeout (any call disarms it) and returns the deadlines of the states in
/// `applies` that it names.
fn take_armed(applies: u32) -> Timeouts {
    let Some((flags, d)) = ARMED.try_with(|a| a.take()).ok().flatten() else {
        return Timeouts::default();
    };
    let dl = deadline_after(d);
    let pick = |f: u32| if flags & applies & f != 0 { dl } else { None };
    Timeouts {
        send: pick(timeout::SEND),
        reply: pick(timeout::REPLY),
        receive: pick(timeout::RECEIVE),
    }
}

/// A snapshot of a channel's queues ([`System::channel_stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages (SEND-blocked clients) and pulses queued.
    pub queued: u32,
    /// Threads RECEIVE-blocked on the channel.
    pub receivers: u32,
}

/// A name registered with [`System::name_attach`] (`name_attach_t`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAttach {
    /// The channel clients reach through the name.
    pub chid: Chid,
    /// The full path, `/dev/name/local/<name>`.
    pub path: String,
}

/// Where names live in the path space.
pub const NAME_PREFIX: &str = "/dev/name/local/";

impl System {
    /// Opens the default system (`$QSIM_SYSTEM`, else `qsim-<uid>`), creating it with default
    /// limits if it does not exist.
    ///
    /// # Errors
    ///
    /// See [`SystemError`].
    pub fn open_default() -> std::result::Result<System, SystemError> {
        SystemBuilder::new().open()
    }

    /// A builder.
    pub fn builder() -> SystemBuilder {
        SystemBuilder::new()
    }

    /// The system's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The system's limits.
    pub fn limits(&self) -> Limits {
        *self.inner.arena.limits()
    }

    /// The system's default wait mode.
    pub fn wait_mode(&self) -> WaitMode {
        self.inner.wait
    }

    /// This process's pid.
    pub fn pid(&self) -> Pid {
        Pid(self.inner.pid)
    }

    /// A read-only view of the whole system (processes, threads and what they are blocked on,
    /// channels, connections, names, object counts), taken without locks while it runs: what
    /// `qsim pidin` prints and what leak checks count.
    pub fn snapshot(&self) -> crate::kern::introspect::Snapshot {
        self.k().snapshot()
    }

    /// Runs the cleanup of process `pid` if it is registered but gone (what the watcher does on
    /// its own); finishes a cleanup that a dead cleaner left half done. Returns whether this call
    /// cleaned it up.
    pub fn clean_up_after(&self, pid: Pid) -> bool {
        let k = self.k();
        let slots: Vec<u32> = k
            .process_table()
            .into_iter()
            // Also cleanups a dead cleaner left half done after it had cleared the pid.
            .filter(|&(_, p, st)| {
                p == pid.0 || (p == 0 && st == kern::layout::proc_state::CLEANING)
            })
            .map(|(s, _, _)| s)
            .collect();
        // Every slot of that pid is tried (no short circuit).
        slots
            .into_iter()
            .map(|s| k.reap_if_dead(s))
            .filter(|&cleaned| cleaned)
            .count()
            > 0
    }

    /// Whether process `pid` is registered in this system (false once the cleanup after its
    /// death or exit has run).
    pub fn is_registered(&self, pid: Pid) -> bool {
        self.k().process_table().iter().any(|&(_, p, _)| p == pid.0)
    }

    /// Whether the arena file was removed while this handle maps it.
    pub fn is_unlinked(&self) -> bool {
        self.inner.arena.is_unlinked()
    }

    pub(crate) fn k(&self) -> Kernel<'_> {
        self.inner.kernel()
    }

    /// The calling thread's slot in this system, allocated on first use.
    fn slot(&self) -> Result<u32> {
        let id = self.inner.id;
        SLOTS
            .try_with(|v| {
                let mut v = v.borrow_mut();
                if let Some(s) = v.iter().find(|s| s.id == id) {
                    return Ok(s.slot);
                }
                v.retain(|s| s.sys.strong_count() > 0);
                let slot = self.k().alloc_thread_slot(crate::sys::gettid())?;
                v.push(TlsSlot {
                    id,
                    sys: Arc::downgrade(&self.inner),
                    slot,
                });
                Ok(slot)
            })
            .unwrap_or(Err(Errno::AGAIN))
    }

    /// Sets the calling thread's simulated priority (QNX `pthread_setschedprio`), which orders
    /// send queues and pulses.
    ///
    /// # Errors
    ///
    /// `EINVAL` outside 1..=255; `EAGAIN` if the thread cannot get a slot.
    pub fn set_priority(&self, priority: u8) -> Result<()> {
        if !(PRIORITY_MIN..=PRIORITY_MAX).contains(&priority) {
            return Err(Errno::INVAL);
        }
        let slot = self.slot()?;
        self.k().set_priority(slot, priority);
        Ok(())
    }

    // ----- channels -----------------------------------------------------------------------

    /// `ChannelCreate(flags)`: creates a channel owned by this process.
    ///
    /// Flags are `chf::*`; unknown bits are accepted, as in QNX 6.4.1. The chid is the lowest free
    /// number >= 1 of the pool the process's chids, scoids and side-channel coids share.
    ///
    /// # Errors
    ///
    /// - `EBUSY`: `THREAD_DEATH` or `COID_DISCONNECT` asked for, but the process has a death
    ///   channel already.
    /// - `EAGAIN`: no channel object or pool slot left.
    ///
    /// # References
    ///
    /// QNX `ChannelCreate()`.
    #[doc(alias = "ChannelCreate")]
    pub fn channel_create(&self, flags: u32) -> Result<Chid> {
        self.channel_create_with(flags, ChannelWait::System)
    }

    /// `ChannelCreate(flags)` with this channel's own wait mode (both the senders and the
    /// receivers of this channel follow it).
    ///
    /// # Errors
    ///
    /// As [`System::channel_create`].
    #[doc(alias = "ChannelCreate")]
    pub fn channel_create_with(&self, flags: u32, wait: ChannelWait) -> Result<Chid> {
        disarm();
        let mode = match wait {
            ChannelWait::System => 2,
            ChannelWait::Blocking => 1,
        };
        self.k().channel_create(flags, mode).map(Chid)
    }

    /// `ChannelDestroy(chid)`: destroys a channel. SEND-blocked, RECEIVE-blocked and
    /// REPLY-blocked threads on it get `ESRCH`, queued pulses are dropped, and client connections
    /// stay allocated but dead (`EBADF` on later sends); clients with a `COID_DISCONNECT` channel
    /// get a COIDDEATH pulse per coid.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `chid` is not a channel of this process.
    #[doc(alias = "ChannelDestroy")]
    pub fn channel_destroy(&self, chid: Chid) -> Result<()> {
        disarm();
        self.k().channel_destroy(chid.0)
    }

    // ----- connections --------------------------------------------------------------------

    /// `ConnectAttach(nd, pid, chid, index, flags)`: connects to channel `chid` of process `pid`
    /// (`Pid(0)`: this process).
    ///
    /// Without `SIDE_CHANNEL` in `index`, the coid is the lowest free fd-range number >= `index`;
    /// with it, `0x4000_0000 | n` with n the lowest free slot of the pool shared with chids and
    /// scoids. Connections to the same channel share one server connection (scoid) unless
    /// `cof::NOSHARE` is given.
    ///
    /// # Errors
    ///
    /// In QNX's order: `EINVAL` (unknown flag, or `index` >= the coid limit), `EMFILE` (the
    /// process's coid limit), `ENOREMOTE` (`nd` not 0), `ESRCH` (no such process or channel),
    /// `ENFILE` (no connection object), `EAGAIN` (pool full).
    #[doc(alias = "ConnectAttach")]
    pub fn connect_attach(
        &self,
        nd: u32,
        pid: Pid,
        chid: Chid,
        index: i32,
        flags: u32,
    ) -> Result<Coid> {
        disarm();
        let coid = self
            .k()
            .connect_attach(nd, pid.0, chid.0, index, flags)
            .map(Coid)?;
        if pid.0 != 0 && pid.0 != self.inner.pid {
            // Our watcher must hold this server's pidfd before the server can die unnoticed:
            // have it rescan now rather than at its next periodic scan.
            if let Some(w) = &self.inner._watch_wake {
                use std::os::fd::AsFd;
                crate::sys::nudge(w.as_fd());
            }
        }
        Ok(coid)
    }

    /// `ConnectDetach(coid)`: detaches a client coid, or (with a scoid from a DISCONNECT pulse)
    /// frees a server connection. When the last link of a connection goes, a server channel with
    /// `chf::DISCONNECT` gets a DISCONNECT pulse and must then detach the scoid.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: no such coid, or a scoid that still has client links.
    #[doc(alias = "ConnectDetach")]
    pub fn connect_detach(&self, coid: Coid) -> Result<()> {
        disarm();
        self.k().connect_detach(coid.0)?;
        if let Some(hook) = self.inner.interposer.hook.get() {
            hook.coid_released(self, coid);
        }
        Ok(())
    }

    /// [`System::connect_detach`] for a server connection, as a DISCONNECT pulse reports it.
    ///
    /// # Errors
    ///
    /// As [`System::connect_detach`].
    #[doc(alias = "ConnectDetach")]
    pub fn scoid_detach(&self, scoid: Scoid) -> Result<()> {
        disarm();
        self.k().connect_detach(scoid.0)
    }

    /// `ConnectServerInfo(pid, coid, &info)`: the connection `coid`, or the next higher one that
    /// exists (fd range first, then side channels); compare `info.coid` with what you asked for.
    /// A connection whose server is gone is reported with `cof::DEAD`.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: no such process.
    /// - `EINVAL`: no connection at or above `coid`.
    #[doc(alias = "ConnectServerInfo")]
    pub fn connect_server_info(&self, pid: Pid, coid: Coid) -> Result<ServerInfo> {
        disarm();
        self.k().connect_server_info(pid.0, coid.0, false)
    }

    /// `ConnectServerInfo(pid, coid, NULL)`: like [`System::connect_server_info`] but skipping
    /// connections whose server is gone.
    ///
    /// # Errors
    ///
    /// As [`System::connect_server_info`].
    #[doc(alias = "ConnectServerInfo")]
    pub fn connect_server_info_live(&self, pid: Pid, coid: Coid) -> Result<ServerInfo> {
        disarm();
        self.k().connect_server_info(pid.0, coid.0, true)
    }

    /// `ConnectClientInfo(scoid, &info, 0)`: who the client of a server connection is
    /// (`Scoid(-1)`: this process).
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `scoid` lacks the side-channel bit or names no server connection of ours.
    #[doc(alias = "ConnectClientInfo")]
    pub fn connect_client_info(&self, scoid: Scoid) -> Result<ClientInfo> {
        disarm();
        self.k().connect_client_info(scoid.0)
    }

    /// `ConnectFlags(pid, coid, mask, bits)`: sets the flags in `mask` to their value in `bits`
    /// (only `cof::CLOEXEC` is kept) and returns the previous flags.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: no such process.
    /// - `EPERM`: another process's table (a simulator restriction).
    /// - `EBADF`: no such coid.
    #[doc(alias = "ConnectFlags")]
    pub fn connect_flags(&self, pid: Pid, coid: Coid, mask: u32, bits: u32) -> Result<u32> {
        disarm();
        self.k().connect_flags(pid.0, coid.0, mask, bits)
    }

    // ----- messages -----------------------------------------------------------------------

    /// `MsgSend(coid, smsg, sbytes, rmsg, rbytes)`: sends `smsg` and blocks until the server
    /// replies; the reply goes into `rmsg` (min of both sizes).
    ///
    /// # Blocking
    ///
    /// SEND-blocked until a server thread receives, then REPLY-blocked until it replies.
    ///
    /// # Errors
    ///
    /// - `EBADF`: `coid` is not a connection, or its server's channel is gone.
    /// - `ESRCH`: the channel was destroyed while the caller was blocked on it.
    /// - `EMSGSIZE`: `smsg` is larger than the system's message-size limit.
    /// - any errno the server gives with `msg_error`.
    ///
    /// # Returns
    ///
    /// The status the server passed to `msg_reply`.
    #[doc(alias = "MsgSend")]
    #[doc(alias = "MsgSendnc")]
    pub fn msg_send(&self, coid: Coid, smsg: &[u8], rmsg: &mut [u8]) -> Result<i32> {
        self.msg_sendv(coid, &[smsg], &mut [rmsg])
    }

    /// `MsgSendv(coid, siov, sparts, riov, rparts)`: [`System::msg_send`] with gather and
    /// scatter vectors. (`MsgSendvnc` is the same call: Rust has no cancellation points.)
    ///
    /// # Errors
    ///
    /// As [`System::msg_send`].
    #[doc(alias = "MsgSendv")]
    #[doc(alias = "MsgSendvnc")]
    pub fn msg_sendv(&self, coid: Coid, siov: &[&[u8]], riov: &mut [&mut [u8]]) -> Result<i32> {
        let t = take_armed(timeout::SEND | timeout::REPLY);
        self.sendv_with(coid, siov, riov, t)
    }

    fn sendv_with(
        &self,
        coid: Coid,
        siov: &[&[u8]],
        riov: &mut [&mut [u8]],
        t: Timeouts,
    ) -> Result<i32> {
        let deadline = match (t.send, t.reply) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.interposed(coid, crate::interpose::SendKind::Message, deadline, || {
            self.send_direct(coid, siov, riov, t)
        })
    }

    /// Runs `send`; if it fails and a send hook is installed, hands the failure to the hook
    /// with `send` as the way to send the same request again ([`crate::interpose`]).
    fn interposed<F: FnMut() -> Result<i32>>(
        &self,
        coid: Coid,
        kind: crate::interpose::SendKind,
        deadline: Option<std::time::Instant>,
        mut send: F,
    ) -> Result<i32> {
        let ip = &self.inner.interposer;
        let epoch = ip.epoch.load(crate::sync::atomic::Ordering::Relaxed);
        match send() {
            Err(error) => match ip.hook.get() {
                Some(hook) => {
                    let mut failed = crate::interpose::FailedSend {
                        coid,
                        error,
                        kind,
                        epoch,
                        deadline,
                        resend: &mut send,
                    };
                    hook.send_failed(self, &mut failed)
                }
                None => Err(error),
            },
            ok => ok,
        }
    }

    /// The send itself, without the interposition.
    fn send_direct(
        &self,
        coid: Coid,
        siov: &[&[u8]],
        riov: &mut [&mut [u8]],
        t: Timeouts,
    ) -> Result<i32> {
        let slot = self.slot()?;
        self.k()
            .msg_send(slot, coid.0, siov, riov, self.inner.wait, t)
    }

    pub(crate) fn interposer(&self) -> &crate::interpose::Interposer {
        &self.inner.interposer
    }

    /// [`System::msg_send`] bounded by `timeout` in both the SEND-blocked and REPLY-blocked
    /// states (the Rust form of `TimerTimeout(_NTO_TIMEOUT_SEND | _NTO_TIMEOUT_REPLY)` +
    /// `MsgSend`).
    ///
    /// # Errors
    ///
    /// As [`System::msg_send`], and `ETIMEDOUT`: while SEND-blocked the request is withdrawn
    /// (the server never sees it); while REPLY-blocked the client is released, unless the channel
    /// has `chf::UNBLOCK`, in which case the server gets an UNBLOCK pulse and the call waits for
    /// its reply or error, as in QNX. [`System::last_send_outcome`] tells which happened.
    #[doc(alias = "TimerTimeout")]
    pub fn msg_send_timeout(
        &self,
        coid: Coid,
        smsg: &[u8],
        rmsg: &mut [u8],
        timeout: Duration,
    ) -> Result<i32> {
        self.msg_sendv_timeout(coid, &[smsg], &mut [rmsg], timeout)
    }

    /// [`System::msg_sendv`] bounded by `timeout`, as [`System::msg_send_timeout`].
    ///
    /// # Errors
    ///
    /// As [`System::msg_send_timeout`].
    pub fn msg_sendv_timeout(
        &self,
        coid: Coid,
        siov: &[&[u8]],
        riov: &mut [&mut [u8]],
        timeout: Duration,
    ) -> Result<i32> {
        take_armed(0);
        let d = deadline_after(timeout);
        self.sendv_with(
            coid,
            siov,
            riov,
            Timeouts {
                send: d,
                reply: d,
                receive: None,
            },
        )
    }

    /// How the calling thread's last send on this system ended: whether a server received the
    /// request before the call failed. After a failure with `ESRCH` (the server's channel went
    /// away), `NotReceived` means the request was never delivered (safe to send again) and
    /// `ReceivedNoReply` means the outcome is unknown.
    pub fn last_send_outcome(&self) -> SendOutcome {
        let Ok(slot) = self.slot() else {
            return SendOutcome::NotSent;
        };
        match self.k().last_send_kind(slot) {
            kern::result_kind::STATUS => SendOutcome::Replied,
            kern::result_kind::ERR_RECEIVED => SendOutcome::ReceivedNoReply,
            kern::result_kind::ERR_NOT_RECEIVED => SendOutcome::NotReceived,
            _ => SendOutcome::NotSent,
        }
    }

    /// `TimerTimeout(CLOCK_MONOTONIC, flags, NULL, ntime, NULL)`: arms a timeout for the calling
    /// thread's **next** kernel call (`msg_send*` or `msg_receive*`) in the blocked states named
    /// by `flags` (`timeout::SEND`, `timeout::REPLY`, `timeout::RECEIVE`); `None` means an
    /// immediate timeout (a non-blocking receive). Any next call disarms it. Returns the flags
    /// armed before.
    ///
    /// # Errors
    ///
    /// `EINVAL` for flag bits other than those three.
    #[doc(alias = "TimerTimeout")]
    pub fn timer_timeout(&self, flags: u32, ntime: Option<Duration>) -> Result<u32> {
        if flags & !(timeout::SEND | timeout::REPLY | timeout::RECEIVE) != 0 {
            return Err(Errno::INVAL);
        }
        let prev = ARMED.with(|a| a.replace(Some((flags, ntime.unwrap_or(Duration::ZERO)))));
        Ok(prev.map_or(0, |p| p.0))
    }

    /// `MsgSendsv(coid, smsg, sbytes, riov, rparts)`: a single send buffer, a reply vector.
    ///
    /// # Errors
    ///
    /// As [`System::msg_send`].
    #[doc(alias = "MsgSendsv")]
    #[doc(alias = "MsgSendsvnc")]
    pub fn msg_sendsv(&self, coid: Coid, smsg: &[u8], riov: &mut [&mut [u8]]) -> Result<i32> {
        self.msg_sendv(coid, &[smsg], riov)
    }

    /// `MsgSendvs(coid, siov, sparts, rmsg, rbytes)`: a send vector, a single reply buffer.
    ///
    /// # Errors
    ///
    /// As [`System::msg_send`].
    #[doc(alias = "MsgSendvs")]
    #[doc(alias = "MsgSendvsnc")]
    pub fn msg_sendvs(&self, coid: Coid, siov: &[&[u8]], rmsg: &mut [u8]) -> Result<i32> {
        self.msg_sendv(coid, siov, &mut [rmsg])
    }

    /// `MsgReceive(chid, msg, bytes, &info)`: waits for a message or pulse on `chid`.
    ///
    /// The first `msg.len()` bytes of a message are copied; the rest stay readable with
    /// [`System::msg_read`] (they live in the client's thread slot in the arena until the reply).
    /// Waiting receivers are served last-in first-out; the send queue is in priority order,
    /// FIFO within a priority, pulses and messages together.
    ///
    /// # Blocking
    ///
    /// RECEIVE-blocked until a message or pulse arrives.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: `chid` is not a channel of this process, or it was destroyed while waiting.
    /// - `EFAULT`: a pulse arrived and `msg` is shorter than a pulse (16 bytes); the pulse is
    ///   lost, as in QNX.
    #[doc(alias = "MsgReceive")]
    pub fn msg_receive(&self, chid: Chid, msg: &mut [u8]) -> Result<Received> {
        self.msg_receivev(chid, &mut [msg])
    }

    /// `MsgReceivev(chid, iov, parts, &info)`: [`System::msg_receive`] into a vector.
    ///
    /// # Errors
    ///
    /// As [`System::msg_receive`].
    #[doc(alias = "MsgReceivev")]
    pub fn msg_receivev(&self, chid: Chid, iov: &mut [&mut [u8]]) -> Result<Received> {
        let t = take_armed(timeout::RECEIVE);
        let slot = self.slot()?;
        self.k()
            .msg_receive(slot, chid.0, iov, false, self.inner.wait, t.receive)
            .map(convert_received)
    }

    /// [`System::msg_receive`] that gives up after `timeout` (`Duration::ZERO`: do not block).
    ///
    /// # Errors
    ///
    /// As [`System::msg_receive`], and `ETIMEDOUT`.
    pub fn msg_receive_timeout(
        &self,
        chid: Chid,
        msg: &mut [u8],
        timeout: Duration,
    ) -> Result<Received> {
        take_armed(0);
        let slot = self.slot()?;
        self.k()
            .msg_receive(
                slot,
                chid.0,
                &mut [msg],
                false,
                self.inner.wait,
                deadline_after(timeout),
            )
            .map(convert_received)
    }

    /// `MsgReceivePulse(chid, pulse, bytes, NULL)`: waits for a pulse only; messages stay queued.
    ///
    /// # Errors
    ///
    /// As [`System::msg_receive`].
    #[doc(alias = "MsgReceivePulse")]
    pub fn msg_receive_pulse(&self, chid: Chid) -> Result<Pulse> {
        let t = take_armed(timeout::RECEIVE);
        let slot = self.slot()?;
        let mut buf = [0u8; Pulse::WIRE_SIZE];
        match self.k().msg_receive(
            slot,
            chid.0,
            &mut [&mut buf],
            true,
            self.inner.wait,
            t.receive,
        )? {
            kern::Received::Pulse(p) => Ok(p),
            kern::Received::Message { .. } => Err(Errno::INTR),
        }
    }

    /// `MsgReply(rcvid, status, msg, bytes)`: replies to a REPLY-blocked client: its `msg_send`
    /// returns `status` and gets min(`msg.len()`, its buffer) bytes.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: `rcvid` names no client REPLY-blocked on one of this process's channels (never
    ///   received, replied already, or the client is gone).
    /// - `EMSGSIZE`: `msg` is larger than the message-size limit.
    #[doc(alias = "MsgReply")]
    pub fn msg_reply(&self, rcvid: Rcvid, status: i32, msg: &[u8]) -> Result<()> {
        disarm();
        self.k().msg_reply(rcvid.0, status, &[msg])
    }

    /// `MsgReplyv(rcvid, status, iov, parts)`.
    ///
    /// # Errors
    ///
    /// As [`System::msg_reply`].
    #[doc(alias = "MsgReplyv")]
    pub fn msg_replyv(&self, rcvid: Rcvid, status: i32, iov: &[&[u8]]) -> Result<()> {
        disarm();
        self.k().msg_reply(rcvid.0, status, iov)
    }

    /// `MsgError(rcvid, err)`: the client's `msg_send` fails with `err` (`EOK`: succeeds with 0;
    /// `ERESTART`: the client re-sends).
    ///
    /// # Errors
    ///
    /// - `ESRCH`: as for [`System::msg_reply`].
    #[doc(alias = "MsgError")]
    pub fn msg_error(&self, rcvid: Rcvid, err: Errno) -> Result<()> {
        disarm();
        self.k().msg_error(rcvid.0, err)
    }

    /// `MsgRead(rcvid, msg, bytes, offset)`: reads more of the client's message, from `offset`;
    /// returns the bytes copied (0 at or past the end). The client stays REPLY-blocked.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: as for [`System::msg_reply`].
    #[doc(alias = "MsgRead")]
    pub fn msg_read(&self, rcvid: Rcvid, msg: &mut [u8], offset: usize) -> Result<usize> {
        disarm();
        self.k().msg_read(rcvid.0, offset, msg)
    }

    /// `MsgWrite(rcvid, msg, bytes, offset)`: writes into the client's reply buffer at `offset`;
    /// returns the bytes copied (stopping at the end of the client's buffer). The client stays
    /// REPLY-blocked until `msg_reply` or `msg_error`.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: as for [`System::msg_reply`].
    #[doc(alias = "MsgWrite")]
    pub fn msg_write(&self, rcvid: Rcvid, msg: &[u8], offset: usize) -> Result<usize> {
        disarm();
        self.k().msg_write(rcvid.0, offset, msg)
    }

    /// `MsgInfo(rcvid, &info)`: what the kernel knows of a received message.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: as for [`System::msg_reply`].
    #[doc(alias = "MsgInfo")]
    pub fn msg_info(&self, rcvid: Rcvid) -> Result<MsgInfo> {
        disarm();
        self.k().msg_info(rcvid.0)
    }

    /// `MsgSendPulse(coid, priority, code, value)`: queues a pulse; never blocks. `priority` -1
    /// means the calling thread's; other values are cut to 8 bits, and 0 is invalid. The code is
    /// not validated (0..=127 is the range for user pulses).
    ///
    /// # Errors
    ///
    /// - `EBADF`: no such connection, or its server's channel is gone.
    /// - `EINVAL`: priority 0 (after cutting to 8 bits).
    /// - `EAGAIN`: no pulse object left.
    #[doc(alias = "MsgSendPulse")]
    pub fn msg_send_pulse(&self, coid: Coid, priority: i32, code: i8, value: i32) -> Result<()> {
        disarm();
        self.interposed(coid, crate::interpose::SendKind::Pulse, None, || {
            let slot = self.slot()?;
            self.k()
                .msg_send_pulse(slot, coid.0, priority, code, value)
                .map(|()| 0)
        })
        .map(|_| ())
    }

    /// Bounds the send queue of the caller's channel `chid`: once `limit` messages and pulses
    /// are queued, a `msg_send` that finds no receiver waiting fails with `EAGAIN` instead of
    /// queueing (the request is not sent; `last_send_outcome` says `NotSent`). 0 removes the
    /// bound (the default, QNX's behaviour: its send queues have no capacity limit). Pulses
    /// are never refused by it. A simulator extension: the overload case that retry policies
    /// (ha-lib's) exist for.
    ///
    /// # Errors
    ///
    /// `EINVAL`: `chid` is not a channel of the caller.
    pub fn channel_queue_limit(&self, chid: Chid, limit: u32) -> Result<()> {
        disarm();
        self.k().channel_queue_limit(chid.0, limit)
    }

    /// How many messages and pulses wait on one of this process's channels, and how many threads
    /// wait to receive on it: a snapshot, for tests and tools that must know a sender is queued.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: `chid` is not a channel of this process.
    pub fn channel_stats(&self, chid: Chid) -> Result<ChannelStats> {
        self.channel_stats_of(Pid(0), chid)
    }

    /// [`System::channel_stats`] for a channel of any process of the system (`Pid(0)`: ours).
    ///
    /// # Errors
    ///
    /// - `EINVAL`: no such process or channel.
    pub fn channel_stats_of(&self, pid: Pid, chid: Chid) -> Result<ChannelStats> {
        let (queued, receivers) = self.k().channel_stats(pid.0, chid.0)?;
        Ok(ChannelStats { queued, receivers })
    }

    /// `MsgDeliverEvent(rcvid, &event)`: delivers a client's event. For `SigEvent::Pulse` the
    /// coid is resolved in the **client's** process (usually its connection to its own channel)
    /// and `priority` -1 means the client thread's. The client need not be blocked.
    ///
    /// # Errors
    ///
    /// - `ESRCH`: `rcvid` names no client thread, or the event's coid is no connection of the
    ///   client's.
    /// - `EBADF`: the event's connection's channel is gone.
    /// - `EINVAL`: priority 0.
    /// - `EAGAIN`: no pulse object left.
    #[doc(alias = "MsgDeliverEvent")]
    pub fn msg_deliver_event(&self, rcvid: Rcvid, event: &crate::abi::SigEvent) -> Result<()> {
        disarm();
        match *event {
            crate::abi::SigEvent::Pulse {
                coid,
                priority,
                code,
                value,
            } => self
                .k()
                .msg_deliver_pulse(rcvid.0, coid.0, priority, code, value),
            crate::abi::SigEvent::None => Ok(()),
        }
    }

    /// `TimerCreate(CLOCK_MONOTONIC, &event)`: a timer of this process that delivers `event`
    /// (a pulse on one of this process's coids) when it fires. It starts disarmed.
    ///
    /// # Errors
    ///
    /// - `EAGAIN`: the timer thread could not be started.
    #[doc(alias = "TimerCreate")]
    pub fn timer_create(&self, event: crate::abi::SigEvent) -> Result<TimerId> {
        let timers = &self.inner.timers;
        let mut t = timers.table.lock().unwrap_or_else(|e| e.into_inner());
        if !t.thread {
            let (weak, shared) = (Arc::downgrade(&self.inner), timers.clone());
            std::thread::Builder::new()
                .name("qsim-timers".into())
                .spawn(move || run_timers(weak, shared))
                .map_err(|_| Errno::AGAIN)?;
            t.thread = true;
        }
        t.next_id += 1;
        let id = t.next_id;
        t.timers.push(Timer {
            id,
            event,
            next: None,
            interval: None,
        });
        Ok(TimerId(id))
    }

    /// `TimerSettime(id, 0, &itime, NULL)`: fires first after `initial` (`None` disarms), then
    /// every `interval` (`None`: once).
    ///
    /// # Errors
    ///
    /// - `EINVAL`: no such timer.
    #[doc(alias = "TimerSettime")]
    pub fn timer_settime(
        &self,
        id: TimerId,
        initial: Option<Duration>,
        interval: Option<Duration>,
    ) -> Result<()> {
        let timers = &self.inner.timers;
        let mut t = timers.table.lock().unwrap_or_else(|e| e.into_inner());
        let x = t
            .timers
            .iter_mut()
            .find(|x| x.id == id.0)
            .ok_or(Errno::INVAL)?;
        x.next = initial.and_then(deadline_after);
        x.interval = interval.filter(|i| !i.is_zero());
        timers.changed.notify_all();
        Ok(())
    }

    /// `TimerDestroy(id)`.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: no such timer.
    #[doc(alias = "TimerDestroy")]
    pub fn timer_delete(&self, id: TimerId) -> Result<()> {
        let mut t = self
            .inner
            .timers
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = t.timers.len();
        t.timers.retain(|x| x.id != id.0);
        if t.timers.len() == before {
            return Err(Errno::INVAL);
        }
        Ok(())
    }

    // ----- fd-style helpers ---------------------------------------------------------------

    /// `close(fd)`: sends `_IO_CLOSE` to the server, then detaches the coid. As in QNX's libc, a
    /// stale coid (server gone) gives `EBADF` but its slot is still freed.
    ///
    /// # Errors
    ///
    /// - `EBADF`: no such coid, or its server is gone (the coid is freed all the same).
    /// - any errno the server gives `_IO_CLOSE` (the coid is freed all the same).
    pub fn close(&self, coid: Coid) -> Result<()> {
        let sent = self.msg_send(coid, &iomsg::io_close(), &mut []);
        if sent == Err(Errno::INTR) {
            return Err(Errno::INTR);
        }
        match self.connect_detach(coid) {
            Err(_) => Err(Errno::BADF),
            Ok(()) => sent.map(|_| ()),
        }
    }

    /// `dup(fd)`: a new fd-range coid (the lowest free) on the same server channel, announced to
    /// the server with `_IO_DUP` on the new connection.
    ///
    /// # Errors
    ///
    /// - `EBADF`: `coid` is no fd-range connection (side channels are refused).
    /// - `ESRCH`: its server is gone.
    /// - `EMFILE`: no free coid.
    /// - any errno the server gives `_IO_DUP`.
    pub fn dup(&self, coid: Coid) -> Result<Coid> {
        self.dup_from(coid, 0)
    }

    /// `fcntl(fd, F_DUPFD, min)`: as [`System::dup`], the lowest free coid >= `min`.
    ///
    /// # Errors
    ///
    /// As [`System::dup`]; `EINVAL` for a negative or side-channel `min`.
    #[doc(alias = "fcntl")]
    pub fn dup_from(&self, coid: Coid, min: i32) -> Result<Coid> {
        if min < 0 || min & SIDE_CHANNEL != 0 {
            return Err(Errno::INVAL);
        }
        if coid.0 < 0 || coid.0 & SIDE_CHANNEL != 0 {
            return Err(Errno::BADF);
        }
        let info = self
            .connect_server_info(Pid(0), coid)
            .map_err(|_| Errno::BADF)?;
        if info.coid != coid.0 {
            return Err(Errno::BADF);
        }
        let new = self.connect_attach(
            info.nd,
            Pid(info.pid),
            Chid(info.chid),
            min,
            crate::abi::cof::CLOEXEC,
        )?;
        let dup = iomsg::io_dup(&info);
        if let Err(e) = self.msg_send(new, &dup, &mut []) {
            let _ = self.connect_detach(new);
            return Err(e);
        }
        let _ = self.connect_flags(Pid(0), new, crate::abi::cof::CLOEXEC, 0);
        Ok(new)
    }

    /// `dup2(fd, fd2)`: closes `fd2` if open, then duplicates `fd` exactly onto `fd2`.
    ///
    /// # Errors
    ///
    /// - `EBADF`: `fd` is not a live fd-range connection (a dead server counts), `fd2` is
    ///   negative or a side channel, or the duplicate could not land on `fd2` (which is closed by
    ///   then, as in QNX).
    /// - `EINTR`: closing `fd2` was interrupted.
    pub fn dup2(&self, fd: Coid, fd2: Coid) -> Result<Coid> {
        if fd.0 < 0 || fd.0 & SIDE_CHANNEL != 0 {
            return Err(Errno::BADF);
        }
        match self.connect_server_info_live(Pid(0), fd) {
            Ok(i) if i.coid == fd.0 => {}
            _ => return Err(Errno::BADF),
        }
        if fd2.0 < 0 || fd2.0 & SIDE_CHANNEL != 0 {
            return Err(Errno::BADF);
        }
        if fd == fd2 {
            return Ok(fd);
        }
        if self.close(fd2) == Err(Errno::INTR) {
            return Err(Errno::INTR);
        }
        match self.dup_from(fd, fd2.0) {
            Ok(c) if c == fd2 => Ok(c),
            Ok(other) => {
                let _ = self.close(other);
                Err(Errno::BADF)
            }
            Err(Errno::INTR) => Err(Errno::INTR),
            Err(_) => Err(Errno::BADF),
        }
    }

    // ----- names --------------------------------------------------------------------------

    /// `name_attach(NULL, name, 0)`: creates a channel with `DISCONNECT | UNBLOCK` (and
    /// `COID_DISCONNECT` if the process has no death channel yet) and registers it as
    /// `/dev/name/local/<name>`.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: empty name, one starting with `/`, or one with a `..` component.
    /// - `ENAMETOOLONG`: the path is longer than the arena's name field.
    /// - `EEXIST`: the name is attached already.
    /// - `EAGAIN`: no channel or name entry left.
    pub fn name_attach(&self, name: &str) -> Result<NameAttach> {
        let path = name_path(name)?;
        let mut flags = chf::DISCONNECT | chf::UNBLOCK;
        if self.k().death_chid() == 0 {
            flags |= chf::COID_DISCONNECT;
        }
        let chid = self.channel_create(flags)?;
        if let Err(e) = self.k().name_register(&path, chid.0) {
            let _ = self.channel_destroy(chid);
            return Err(e);
        }
        Ok(NameAttach { chid, path })
    }

    /// `name_attach(dpp, name, 0)` with a dispatch that has a channel already: registers
    /// `/dev/name/local/<name>` for the caller's channel `chid` (a resource manager that also
    /// wants a name). Detach it with [`System::name_detach_keep`], or let
    /// [`System::name_detach`] destroy the channel too.
    ///
    /// # Errors
    ///
    /// As [`System::name_attach`]; `EINVAL` also if `chid` is not a channel of the caller.
    pub fn name_attach_on(&self, chid: Chid, name: &str) -> Result<NameAttach> {
        let path = name_path(name)?;
        self.k().name_register(&path, chid.0)?;
        Ok(NameAttach { chid, path })
    }

    /// `name_detach(attach, NAME_FLAG_DETACH_SAVEDPP)`: removes the name and keeps the channel.
    ///
    /// # Errors
    ///
    /// - `ENOENT`: the name is not attached; `EPERM`: another process holds it.
    pub fn name_detach_keep(&self, attach: &NameAttach) -> Result<()> {
        self.k().name_unregister(&attach.path)
    }

    /// `name_detach(attach, 0)`: removes the name and destroys its channel.
    ///
    /// # Errors
    ///
    /// - `ENOENT`: the name is not attached; `EPERM`: another process holds it.
    pub fn name_detach(&self, attach: NameAttach) -> Result<()> {
        self.k().name_unregister(&attach.path)?;
        let _ = self.channel_destroy(attach.chid);
        Ok(())
    }

    /// `name_open(name, 0)`: finds the server that attached `name`, connects a side channel to it
    /// and sends it `_IO_CONNECT`, which the server must answer with `EOK`.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: a bad name (as for [`System::name_attach`]).
    /// - `ENOENT`: no server has that name.
    /// - the errors of `connect_attach`, and any errno the server gives `_IO_CONNECT`.
    pub fn name_open(&self, name: &str) -> Result<Coid> {
        self.name_open_bounded(name, None)
    }

    /// [`System::name_open`] whose `_IO_CONNECT` waits at most `timeout` for the server's
    /// answer, so that a server that attached the name but does not receive cannot hold the
    /// caller. (QNX does this with `TimerTimeout` before `name_open`; here `connect_attach`
    /// would disarm that.)
    ///
    /// # Errors
    ///
    /// As [`System::name_open`], and `ETIMEDOUT` (the coid is released).
    pub fn name_open_timeout(&self, name: &str, timeout: Duration) -> Result<Coid> {
        self.name_open_bounded(name, Some(timeout))
    }

    fn name_open_bounded(&self, name: &str, timeout: Option<Duration>) -> Result<Coid> {
        let path = name_path(name)?;
        let (pid, chid) = self.k().name_lookup(&path)?;
        let coid = self
            .connect_attach(0, Pid(pid), Chid(chid), SIDE_CHANNEL, 0)
            .map_err(|e| if e == Errno::SRCH { Errno::NOENT } else { e })?;
        let msg = iomsg::IoConnect {
            subtype: iomsg::IO_CONNECT_OPEN,
            file_type: iomsg::FTYPE_NAME,
            handle: 0,
            ioflag: iomsg::ioflag_from_oflag(libc::O_RDWR),
            mode: 0,
            path: String::new(),
        }
        .encode();
        let sent = match timeout {
            Some(t) => self.msg_send_timeout(coid, &msg, &mut [], t),
            None => self.msg_send(coid, &msg, &mut []),
        };
        if let Err(e) = sent {
            let _ = self.connect_detach(coid);
            return Err(if e == Errno::BADF || e == Errno::SRCH {
                Errno::NOENT
            } else {
                e
            });
        }
        Ok(coid)
    }

    /// Waits until a server attaches `name` (woken by the attach, not polling), at most
    /// `timeout` (`None`: no limit), then [`System::name_open`]s it. What a recovery function
    /// does while a restarted server comes back.
    ///
    /// # Errors
    ///
    /// - `ETIMEDOUT`: nobody attached the name in time.
    /// - `EINVAL`, and the errors of [`System::name_open`].
    pub fn name_wait_open(&self, name: &str, timeout: Option<Duration>) -> Result<Coid> {
        let path = name_path(name)?;
        let deadline = timeout.and_then(deadline_after);
        loop {
            self.k().name_wait(&path, deadline)?;
            match self.name_open(name) {
                // The server went away again between the wait and the open: wait once more.
                Err(Errno::NOENT) => continue,
                other => return other,
            }
        }
    }

    /// `name_close(coid)`: just `connect_detach` (no `_IO_CLOSE`); the server sees a DISCONNECT
    /// pulse when the process's last connection to it goes.
    ///
    /// # Errors
    ///
    /// - `EINVAL`: no such coid.
    pub fn name_close(&self, coid: Coid) -> Result<()> {
        self.connect_detach(coid)
    }
}

fn name_path(name: &str) -> Result<String> {
    if name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|c| c == "..")
        || name.contains('\0')
    {
        return Err(Errno::INVAL);
    }
    let path = format!("{NAME_PREFIX}{name}");
    if path.len() > crate::kern::layout::NAME_MAX {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(path)
}

fn convert_received(r: kern::Received) -> Received {
    match r {
        kern::Received::Message { rcvid, info } => Received::Message {
            rcvid: Rcvid(rcvid),
            info,
        },
        kern::Received::Pulse(p) => Received::Pulse(p),
    }
}
