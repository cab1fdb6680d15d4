//! Guaranteed message delivery (GMD), in the image of SmartSockets': one-way messages that the
//! caller hands over without blocking, and that a background sender delivers until the receiver
//! acknowledges them, across server deaths and restarts and, with a file-backed area, across
//! restarts of the client too.
//!
//! - [`GmdConn::send`] puts a message in the connection's **delivery area** (memory, or a file in
//!   a directory of your choice, made durable before the call returns or in batches) and returns
//!   its sequence number at once.
//! - A background thread sends the messages of the area **in order**, each as an ordinary
//!   `MsgSend` whose reply is the acknowledgement ([`wire`]); an acknowledged message leaves
//!   the area. When the server is gone it reconnects (by name or path) every `retry_interval`
//!   and sends again what was not acknowledged.
//! - Each message has a **delivery timeout** (the connection's, or its own). When it passes
//!   unacknowledged, or the server refuses the message (`msg_error`), a failure event
//!   ([`GmdFailure`]: the message, the reason, the connection) goes to the connection's
//!   callback, which answers [`FailureAction::Resend`] (a new deadline; the message keeps its
//!   place) or [`FailureAction::Delete`]. The default callback, [`warn_and_delete`], warns
//!   through `tracing` and deletes, as SmartSockets' default does.
//! - Messages carry the sender's name, its area's incarnation and a sequence number; the
//!   server's [`GmdReceiver`] records the last one accepted from each sender durably and drops
//!   duplicates, so a message sent again after a lost acknowledgement is delivered once.
//!
//! What it guarantees: every message [`GmdConn::send`] accepted is, until its callback deletes
//! it, sent again until acknowledged; acknowledged messages were recorded by the receiver
//! once and in the order sent. With a file area, a message whose `send` returned survives the
//! kill of the client (and, with [`Durability::EachRecord`], a host crash). What it does not:
//! a deleted message may still have been delivered (its acknowledgement was what got lost);
//! a memory area dies with its process; the receiver's *effect* is exactly-once only if it is
//! the record itself or is keyed by the sequence number (see [`GmdReceiver::serve`]).

mod area;
pub mod receiver;
mod record;
pub mod wire;

pub use receiver::{Accepted, GmdReceiver, ReceiverOptions, Seen};
pub use record::{Damage, DamageKind};
pub use wire::Delivery;

use area::FileArea;
use kernel_sim::{Coid, Errno, SendOutcome, System};
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When a file area's records are made durable (`fdatasync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Each message before [`GmdConn::send`] returns: nothing acknowledged to the caller is lost
    /// even to a host crash. Costs a sync per message.
    EachRecord,
    /// Every n messages (and when the connection closes). A killed client still loses nothing
    /// (the records are in the page cache); a host crash may lose up to n - 1 messages.
    Batch(NonZeroU32),
}

/// Where a connection keeps the messages not yet acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Area {
    /// In the process: lost if it dies.
    Memory,
    /// In `<dir>/<sender>.gmd`: a restarted client with the same sender name picks up where the
    /// dead one stopped.
    File {
        /// The directory.
        dir: PathBuf,
        /// When records are made durable.
        durability: Durability,
    },
}

/// Whom the messages go to: a server found again after each restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A name attached with `name_attach` (connected with `name_open`).
    Name(String),
    /// A path in the path space (connected with `open`).
    Path(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(n) => write!(f, "name {n}"),
            Target::Path(p) => write!(f, "path {p}"),
        }
    }
}

/// Why a message failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// Its delivery timeout passed without an acknowledgement; `last_error` is what the last
    /// attempt met (`ENOENT`: no server by that name; `ESRCH`: it died; `ETIMEDOUT`: it did
    /// not answer), `None` if it was never attempted (a message behind one in trouble).
    Timeout {
        /// The last attempt's error.
        last_error: Option<Errno>,
    },
    /// The server answered it with an error (it received it and refused it).
    Refused(Errno),
    /// The kernel would not carry it to the server (`EMSGSIZE`: larger than the system's
    /// message limit, ...).
    Unsendable(Errno),
}

/// A failure event: what SmartSockets' `GMD_FAILURE` message carries.
#[derive(Clone, Debug)]
pub struct GmdFailure {
    /// The message's sequence number.
    pub seq: u64,
    /// The message.
    pub payload: Vec<u8>,
    /// Why it failed.
    pub reason: FailureReason,
    /// The connection's target.
    pub connection: String,
    /// The sender's name.
    pub sender: String,
    /// Attempts made to send it.
    pub attempts: u32,
}

/// What a failure callback decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Send it again, with a new deadline (`TipcConnGmdMsgResend`); it keeps its place in order.
    Resend,
    /// Take it out of the area (`TipcConnGmdMsgDelete`): it will not be sent again.
    Delete,
}

/// A failure callback. It runs on the connection's background sender, which waits for it.
pub type FailureCallback = Arc<dyn Fn(&GmdFailure) -> FailureAction + Send + Sync>;

/// The default failure callback (`TipcCbConnProcessGmdFailure`): a warning through `tracing`,
/// then [`FailureAction::Delete`].
pub fn warn_and_delete(f: &GmdFailure) -> FailureAction {
    tracing::warn!(
        seq = f.seq,
        sender = %f.sender,
        connection = %f.connection,
        reason = ?f.reason,
        attempts = f.attempts,
        "guaranteed delivery failed; message deleted"
    );
    FailureAction::Delete
}

/// A connection's settings. Every time constant is configurable, so tests can shrink them.
#[derive(Clone)]
pub struct GmdConfig {
    sender: Option<String>,
    area: Area,
    delivery_timeout: Option<Duration>,
    retry_interval: Duration,
    attempt_timeout: Duration,
    max_pending: usize,
    max_message: usize,
    compact_bytes: u64,
    on_failure: FailureCallback,
}

impl std::fmt::Debug for GmdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmdConfig")
            .field("sender", &self.sender)
            .field("area", &self.area)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("retry_interval", &self.retry_interval)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("max_pending", &self.max_pending)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

impl Default for GmdConfig {
    fn default() -> Self {
        GmdConfig {
            sender: None,
            area: Area::Memory,
            delivery_timeout: Some(Duration::from_secs(30)),
            retry_interval: Duration::from_millis(20),
            attempt_timeout: Duration::from_secs(1),
            max_pending: 100_000,
            max_message: 60 * 1024,
            compact_bytes: 1 << 20,
            on_failure: Arc::new(warn_and_delete),
        }
    }
}

impl GmdConfig {
    /// A memory area, a 30 s delivery timeout, reconnects every 20 ms, 1 s per attempt, at most
    /// 100 000 messages of up to 60 KiB waiting, and [`warn_and_delete`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A file area in `dir` for the sender called `sender` (required for a file area: it names
    /// the file, and a restarted client finds its area by it).
    pub fn file(dir: impl Into<PathBuf>, sender: &str, durability: Durability) -> Self {
        GmdConfig {
            sender: Some(sender.to_owned()),
            area: Area::File {
                dir: dir.into(),
                durability,
            },
            ..Self::default()
        }
    }

    /// Where the messages wait: [`Area::Memory`], or [`Area::File`] (which needs a
    /// [`GmdConfig::sender`]; [`GmdConfig::file`] sets both).
    pub fn area(mut self, area: Area) -> Self {
        self.area = area;
        self
    }

    /// The sender's name (for a memory area it defaults to `mem-<pid>`).
    pub fn sender(mut self, name: &str) -> Self {
        self.sender = Some(name.to_owned());
        self
    }

    /// The connection's delivery timeout (`None`: messages never time out).
    pub fn delivery_timeout(mut self, t: Option<Duration>) -> Self {
        self.delivery_timeout = t;
        self
    }

    /// How long the sender waits between attempts to reach a server that is not there (at
    /// least 1 ms).
    pub fn retry_interval(mut self, t: Duration) -> Self {
        self.retry_interval = t.max(Duration::from_millis(1));
        self
    }

    /// The longest one send waits for its acknowledgement before it is counted as a failed
    /// attempt (and sent again).
    pub fn attempt_timeout(mut self, t: Duration) -> Self {
        self.attempt_timeout = t;
        self
    }

    /// The most messages the area holds ([`GmdError::Full`] beyond).
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    /// The largest message (it must fit the receiver's buffer and the system's message limit).
    pub fn max_message(mut self, n: usize) -> Self {
        self.max_message = n;
        self
    }

    /// How much a file area grows before it is rewritten with just what is still pending.
    pub fn compact_bytes(mut self, n: u64) -> Self {
        self.compact_bytes = n;
        self
    }

    /// The failure callback.
    pub fn on_failure(
        mut self,
        f: impl Fn(&GmdFailure) -> FailureAction + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Arc::new(f);
        self
    }
}

/// Errors of guaranteed delivery's calls. [`GmdError::errno`] maps each to an errno.
#[derive(Debug, thiserror::Error)]
pub enum GmdError {
    /// Another live sender uses this area (or receiver log).
    #[error("{0} is in use by another live process")]
    InUse(PathBuf),
    /// The sender's name is not valid.
    #[error("sender name {0:?} is not valid (1 to 64 of A-Z a-z 0-9 . _ -, not starting with .)")]
    BadSender(String),
    /// A file area was asked for without a sender name.
    #[error("a file-backed delivery area needs a sender name")]
    NoSender,
    /// The area holds `max_pending` messages already: the message was not taken.
    #[error("the delivery area is full ({0} messages waiting)")]
    Full(usize),
    /// The message is larger than `max_message`: it was not taken.
    #[error("a message of {len} bytes is larger than the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection was closed.
    #[error("the connection has been closed")]
    Closed,
    /// The area's file could not be read or written: the message was not taken.
    #[error("delivery area I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl GmdError {
    /// The errno a C caller would get: `EBUSY`, `EINVAL`, `EINVAL`, `EAGAIN`, `EMSGSIZE`,
    /// `EBADF`, `EIO`.
    pub fn errno(&self) -> Errno {
        match self {
            GmdError::InUse(_) => Errno::BUSY,
            GmdError::BadSender(_) | GmdError::NoSender => Errno::INVAL,
            GmdError::Full(_) => Errno::AGAIN,
            GmdError::TooLarge { .. } => Errno::MSGSIZE,
            GmdError::Closed => Errno::BADF,
            GmdError::Io(_) => Errno::IO,
        }
    }
}

/// What a connection has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GmdCounters {
    /// Messages taken by `send`.
    pub queued: u64,
    /// Messages found in a file area when the connection opened.
    pub recovered: u64,
    /// Messages acknowledged.
    pub delivered: u64,
    /// Of those, acknowledged as duplicates (the receiver had them already).
    pub duplicates: u64,
    /// Sends made (first tries and retries).
    pub attempts: u64,
    /// Failure events raised.
    pub failures: u64,
    /// Messages resent by the callback.
    pub resent: u64,
    /// Messages deleted by the callback.
    pub deleted: u64,
    /// Connections made to the target.
    pub connects: u64,
}

struct Entry {
    payload: Arc<[u8]>,
    deadline_ms: Option<i64>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    attempts: u32,
    last_error: Option<Errno>,
}

struct State {
    pending: BTreeMap<u64, Entry>,
    /// The deadlines of the pending messages, earliest first (so that neither the next
    /// deadline nor the expired messages cost a walk over the whole area).
    deadlines: BTreeSet<(Instant, u64)>,
    next_seq: u64,
    file: Option<FileArea>,
    counters: GmdCounters,
    stop: bool,
}

impl State {
    fn add(&mut self, seq: u64, e: Entry) {
        if let Some(d) = e.deadline {
            self.deadlines.insert((d, seq));
        }
        self.pending.insert(seq, e);
    }

    fn take(&mut self, seq: u64) -> Option<Entry> {
        let e = self.pending.remove(&seq)?;
        if let Some(d) = e.deadline {
            self.deadlines.remove(&(d, seq));
        }
        Some(e)
    }

    fn set_deadline(&mut self, seq: u64, d: Option<Instant>) {
        if let Some(e) = self.pending.get_mut(&seq) {
            if let Some(old) = e.deadline {
                self.deadlines.remove(&(old, seq));
            }
            e.deadline = d;
            if let Some(d) = d {
                self.deadlines.insert((d, seq));
            }
        }
    }
}

struct Shared {
    st: Mutex<State>,
    cv: Condvar,
    sender: String,
    incarnation: u64,
    target: Target,
    cfg: GmdConfig,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in a failure callback poisons nothing we rely on: the state stays consistent
        // between statements.
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn new_incarnation() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 40)
}

/// What a sender's area file holds ([`read_area`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AreaContents {
    /// The area's incarnation (`None`: no record names one).
    pub incarnation: Option<u64>,
    /// The sequence number the next message would get.
    pub next_seq: u64,
    /// The messages not yet taken out, in order: sequence number and payload.
    pub pending: Vec<(u64, Vec<u8>)>,
    /// The damage found.
    pub damage: Vec<Damage>,
}

/// Reads a sender's area file (`<dir>/<sender>.gmd`) without opening the area: for tools
/// (`qsim gmd-log`) and post-mortems. It takes no lock and changes nothing.
///
/// # Errors
///
/// The I/O error of the read (a missing file is an empty area).
pub fn read_area(path: impl AsRef<std::path::Path>) -> std::io::Result<AreaContents> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let l = area::load(&bytes);
    Ok(AreaContents {
        incarnation: l.incarnation,
        next_seq: l.next_seq,
        pending: l.pending.into_iter().map(|(s, m)| (s, m.payload)).collect(),
        damage: l.damage,
    })
}

/// A guaranteed-delivery connection: a delivery area and the background sender that empties it.
/// Dropping it (or [`GmdConn::close`]) stops the sender; a file area keeps what was not
/// delivered for the next connection with the same sender name.
pub struct GmdConn {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    damage: Vec<Damage>,
}

impl std::fmt::Debug for GmdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmdConn")
            .field("sender", &self.shared.sender)
            .field("incarnation", &self.shared.incarnation)
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl GmdConn {
    /// Opens a connection to `target` on `sys` with `cfg`, and starts its background sender.
    /// A file area is read back first: its messages are sent again, in order, before new ones;
    /// damage found in it is reported ([`GmdConn::damage`], and a `tracing` warning), the
    /// damaged file kept as `<sender>.gmd.damaged`, and the good records kept.
    ///
    /// # Errors
    ///
    /// - [`GmdError::NoSender`], [`GmdError::BadSender`]: a file area without a valid name;
    /// - [`GmdError::InUse`]: a live process has the area open;
    /// - [`GmdError::Io`]: the area cannot be read or written, or the thread not started.
    pub fn open(sys: &System, target: Target, cfg: GmdConfig) -> Result<GmdConn, GmdError> {
        let sender = match (&cfg.sender, &cfg.area) {
            (Some(s), _) => s.clone(),
            (None, Area::Memory) => format!("mem-{}", std::process::id()),
            (None, Area::File { .. }) => return Err(GmdError::NoSender),
        };
        if !wire::valid_sender(&sender) {
            return Err(GmdError::BadSender(sender));
        }
        let mut damage = Vec::new();
        let mut pending = BTreeMap::new();
        let mut next_seq = 1;
        let mut incarnation = new_incarnation();
        let mut file = None;
        if let Area::File { dir, durability } = &cfg.area {
            let (mut f, loaded) = FileArea::open(dir, &sender, *durability, cfg.compact_bytes)?;
            for d in &loaded.damage {
                tracing::warn!(dir = %dir.display(), %sender, %d, "GMD area damaged; good records kept");
            }
            let fresh = loaded.incarnation.is_none();
            incarnation = loaded.incarnation.unwrap_or(incarnation);
            next_seq = loaded.next_seq;
            // A recovered message gets its whole delivery timeout again, from now: the time no
            // sender ran is not held against it (else a client restarted after a long outage
            // would delete its area unread).
            for (seq, s) in loaded.pending {
                let deadline = s.timeout.and_then(after);
                let timeout = deadline.and(s.timeout);
                pending.insert(
                    seq,
                    Entry {
                        payload: s.payload.into(),
                        deadline,
                        deadline_ms: timeout.map(|t| {
                            unix_ms()
                                .saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
                        }),
                        timeout,
                        attempts: 0,
                        last_error: None,
                    },
                );
            }
            if fresh || !loaded.damage.is_empty() {
                // A new area gets its base record; a damaged one is rewritten from what was good.
                f.compact(
                    incarnation,
                    next_seq,
                    pending
                        .iter()
                        .map(|(s, e)| (*s, e.deadline_ms, e.timeout, &e.payload[..])),
                )?;
            }
            damage = loaded.damage;
            file = Some(f);
        }
        let counters = GmdCounters {
            recovered: pending.len() as u64,
            ..GmdCounters::default()
        };
        let mut state = State {
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            next_seq,
            file,
            counters,
            stop: false,
        };
        for (seq, e) in pending {
            state.add(seq, e);
        }
        let shared = Arc::new(Shared {
            st: Mutex::new(state),
            cv: Condvar::new(),
            sender,
            incarnation,
            target,
            cfg,
        });
        let s2 = Arc::clone(&shared);
        let sys2 = sys.clone();
        let thread = std::thread::Builder::new()
            .name("gmd-sender".into())
            .spawn(move || Sender::new(sys2, s2).run())?;
        Ok(GmdConn {
            shared,
            thread: Some(thread),
            damage,
        })
    }

    /// Puts `payload` in the area with the connection's delivery timeout, and returns its
    /// sequence number without waiting for the delivery (`TipcConnMsgSend` with GMD).
    ///
    /// # Errors
    ///
    /// [`GmdError::TooLarge`], [`GmdError::Full`], [`GmdError::Closed`], [`GmdError::Io`] (the
    /// area's file could not be written): the message was not taken.
    pub fn send(&self, payload: &[u8]) -> Result<u64, GmdError> {
        self.send_with_timeout(payload, self.shared.cfg.delivery_timeout)
    }

    /// [`GmdConn::send`] with a delivery timeout of the message's own (`None`: never).
    ///
    /// # Errors
    ///
    /// As [`GmdConn::send`].
    pub fn send_with_timeout(
        &self,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> Result<u64, GmdError> {
        let max = self.shared.cfg.max_message;
        if payload.len() > max {
            return Err(GmdError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let mut st = self.shared.lock();
        if st.stop {
            return Err(GmdError::Closed);
        }
        if st.pending.len() >= self.shared.cfg.max_pending {
            return Err(GmdError::Full(st.pending.len()));
        }
        let seq = st.next_seq;
        // A timeout too long for an `Instant` is no deadline at all.
        let deadline = timeout.and_then(after);
        let timeout = deadline.and(timeout);
        let deadline_ms = timeout
            .map(|t| unix_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)));
        if let Some(f) = st.file.as_mut() {
            let inc = self.shared.incarnation;
            f.append(
                &area::message_record(seq, inc, deadline_ms, timeout, payload),
                true,
            )?;
        }
        st.next_seq += 1;
        st.add(
            seq,
            Entry {
                payload: payload.into(),
                deadline_ms,
                deadline,
                timeout,
                attempts: 0,
                last_error: None,
            },
        );
        st.counters.queued += 1;
        drop(st);
        self.shared.cv.notify_all();
        Ok(seq)
    }

    /// Waits until the area is empty (every message acknowledged or deleted), at most
    /// `timeout` (`None`: for as long as it takes). Returns whether it is.
    pub fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let until = timeout.and_then(after);
        let mut st = self.shared.lock();
        while !st.pending.is_empty() && !st.stop {
            st = match until {
                None => self.shared.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(u) => {
                    let left = u.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.shared
                        .cv
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        st.pending.is_empty()
    }

    /// The sequence numbers of the messages in the area, in order.
    pub fn pending(&self) -> Vec<u64> {
        self.shared.lock().pending.keys().copied().collect()
    }

    /// The sequence number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.lock().next_seq
    }

    /// What the connection has done.
    pub fn counters(&self) -> GmdCounters {
        self.shared.lock().counters
    }

    /// The damage found in the file area when it was opened (empty for a sound or memory area).
    pub fn damage(&self) -> &[Damage] {
        &self.damage
    }

    /// The sender's name.
    pub fn sender(&self) -> &str {
        &self.shared.sender
    }

    /// The area's incarnation (a new area starts its sequence numbers again at 1).
    pub fn incarnation(&self) -> u64 {
        self.shared.incarnation
    }

    /// Stops the background sender (after the attempt in progress: its connect and its send are
    /// each bounded by `attempt_timeout`, and the goodbye to a path's server once more) and
    /// makes the file area durable. It does **not** deliver what is pending (call
    /// [`GmdConn::wait_idle`] first for that): messages not delivered stay in a file area; in a
    /// memory area they are lost (a `tracing` warning says how many).
    ///
    /// # Errors
    ///
    /// The I/O error of the final sync of a file area.
    pub fn close(mut self) -> Result<(), GmdError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), GmdError> {
        self.shared.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut st = self.shared.lock();
        let left = st.pending.len();
        match st.file.as_mut() {
            Some(f) => f.sync()?,
            None if left > 0 => {
                tracing::warn!(sender = %self.shared.sender, left, "GMD memory area closed with undelivered messages; they are lost");
            }
            None => {}
        }
        Ok(())
    }
}

impl Drop for GmdConn {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(sender = %self.shared.sender, error = %e, "GMD area not synced at close");
        }
    }
}

/// `now + d`, or `None` if that is beyond what an `Instant` holds (no deadline).
fn after(d: Duration) -> Option<Instant> {
    Instant::now().checked_add(d)
}

/// What a failed send means for the message.
#[derive(Debug, PartialEq, Eq)]
enum SendFailure {
    /// The connection is useless: close it, connect again after the retry interval.
    Lost,
    /// Try again after the retry interval (a full queue, or a server's "not now": `EAGAIN`).
    Later,
    /// The attempt's time ran out: try again after the retry interval (the receiver drops a
    /// duplicate).
    TimedOut,
    /// The server refused the message.
    Refused,
    /// The kernel would not carry it.
    Unsendable,
}

/// Classifies a failed send by its errno and by whether the kernel had queued it
/// (`System::last_send_outcome`): a server's `msg_error` arrives as "received, no reply".
/// `ESRCH`, `EBADF` and `ENXIO` mean the server is gone, whoever says so; a server that wants
/// a message sent again later answers `EAGAIN`.
fn classify(e: Errno, outcome: SendOutcome) -> SendFailure {
    match e {
        Errno::BADF | Errno::SRCH | Errno::NXIO => SendFailure::Lost,
        Errno::TIMEDOUT => SendFailure::TimedOut,
        Errno::AGAIN | Errno::INTR | Errno::NOMEM => SendFailure::Later,
        _ if outcome == SendOutcome::NotSent => SendFailure::Unsendable,
        _ => SendFailure::Refused,
    }
}

/// What the background sender does next.
enum Next {
    Stop,
    Expired,
    /// Send this message (sequence number, payload, its own deadline).
    Send(u64, Arc<[u8]>, Option<Instant>),
}

/// Marks the connection stopped when the background sender ends, however it ends, so that
/// `send` and `wait_idle` do not wait on a thread that is gone.
struct Exit(Arc<Shared>);

impl Drop for Exit {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        if !st.stop {
            tracing::error!(sender = %self.0.sender, "GMD background sender ended unexpectedly");
            st.stop = true;
        }
        drop(st);
        self.0.cv.notify_all();
    }
}

/// The background sender.
struct Sender {
    sys: System,
    sh: Arc<Shared>,
    coid: Option<Coid>,
    /// No attempt before this (the server was not there, or asked for later).
    hold_until: Option<Instant>,
}

impl Sender {
    fn new(sys: System, sh: Arc<Shared>) -> Sender {
        Sender {
            sys,
            sh,
            coid: None,
            hold_until: None,
        }
    }

    fn hold(&mut self) {
        self.hold_until = after(self.sh.cfg.retry_interval);
    }

    /// Connects with the `_IO_CONNECT` bounded by `limit`, so a server that attached but does
    /// not receive cannot hold the sender past a deadline.
    fn connect(&self, limit: Duration) -> Result<Coid, Errno> {
        match &self.sh.target {
            Target::Name(n) => self.sys.name_open_timeout(n, limit),
            Target::Path(p) => self.sys.open_timeout(p, libc::O_WRONLY, limit),
        }
    }

    fn disconnect(&mut self) {
        if let Some(c) = self.coid.take() {
            if let Target::Path(_) = self.sh.target {
                // `close` would wait for the server's answer to `_IO_CLOSE` without a limit.
                let limit = self.sh.cfg.attempt_timeout;
                let _ =
                    self.sys
                        .msg_send_timeout(c, &kernel_sim::iomsg::io_close(), &mut [], limit);
            }
            let _ = self.sys.connect_detach(c);
        }
    }

    fn run(mut self) {
        let _exit = Exit(Arc::clone(&self.sh));
        // Expired messages first: their callbacks decide before anything else is sent.
        while let Some(expired) = self.take_expired() {
            for (seq, reason) in &expired {
                self.fail(*seq, *reason);
            }
            if !expired.is_empty() {
                continue;
            }
            match self.next() {
                Next::Stop => break,
                Next::Expired => continue,
                Next::Send(seq, payload, deadline) => self.attempt(seq, &payload, deadline),
            }
        }
        self.disconnect();
    }

    /// Waits for something to do: the first message to send (when not holding off after a
    /// failed attempt), a deadline that passes, or the stop.
    fn next(&mut self) -> Next {
        let mut st = self.sh.lock();
        loop {
            if st.stop {
                return Next::Stop;
            }
            let now = Instant::now();
            if expirable(&st).next().is_some_and(|(d, _)| d <= now) {
                return Next::Expired;
            }
            let hold = self.hold_until.filter(|h| *h > now);
            let earliest = expirable(&st).next().map(|(d, _)| d);
            let wake = match (st.pending.is_empty(), hold) {
                (true, _) => None,
                (false, None) => {
                    let State {
                        pending, counters, ..
                    } = &mut *st;
                    if let Some((seq, e)) = pending.iter_mut().next() {
                        e.attempts = e.attempts.saturating_add(1);
                        counters.attempts += 1;
                        return Next::Send(*seq, Arc::clone(&e.payload), e.deadline);
                    }
                    None
                }
                (false, Some(h)) => Some(earliest.map_or(h, |d| d.min(h))),
            };
            st = match wake {
                None => self.sh.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(w) => {
                    self.sh
                        .cv
                        .wait_timeout(st, w.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The messages whose deadline has passed, with their failure reasons (`None`: stopping).
    fn take_expired(&self) -> Option<Vec<(u64, FailureReason)>> {
        let st = self.sh.lock();
        if st.stop {
            return None;
        }
        let now = Instant::now();
        Some(
            expirable(&st)
                .take_while(|(d, _)| *d <= now)
                .map(|(_, s)| {
                    (
                        s,
                        FailureReason::Timeout {
                            last_error: st.pending.get(&s).and_then(|e| e.last_error),
                        },
                    )
                })
                .collect(),
        )
    }

    /// One send of message `seq` (connecting first if need be), bounded by the attempt
    /// timeout and the message's own deadline.
    fn attempt(&mut self, seq: u64, payload: &[u8], deadline: Option<Instant>) {
        let limit = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(self.sh.cfg.attempt_timeout)
            .min(self.sh.cfg.attempt_timeout)
            .max(Duration::from_millis(1));
        let coid = match self.coid {
            Some(c) => c,
            None => match self.connect(limit) {
                Ok(c) => {
                    self.sh.lock().counters.connects += 1;
                    self.coid = Some(c);
                    c
                }
                Err(e) => {
                    self.note_error(seq, e);
                    self.hold();
                    return;
                }
            },
        };
        let head = Delivery::head(&self.sh.sender, self.sh.incarnation, seq, payload.len());
        match self
            .sys
            .msg_sendv_timeout(coid, &[&head, payload], &mut [], limit)
        {
            Ok(status) => {
                let mut st = self.sh.lock();
                if st.take(seq).is_some() {
                    st.counters.delivered += 1;
                    if status == wire::ack::DUPLICATE {
                        st.counters.duplicates += 1;
                    }
                    self.taken_out(&mut st, seq, 1);
                }
                // Only `wait_idle` waits for messages to go, and only for the last one.
                let idle = st.pending.is_empty();
                drop(st);
                if idle {
                    self.sh.cv.notify_all();
                }
            }
            Err(e) => {
                self.note_error(seq, e);
                match classify(e, self.sys.last_send_outcome()) {
                    SendFailure::Lost => {
                        self.disconnect();
                        self.hold();
                    }
                    // After a timeout too: a server that answers ETIMEDOUT itself must not
                    // make the sender spin.
                    SendFailure::Later | SendFailure::TimedOut => self.hold(),
                    SendFailure::Refused => self.fail(seq, FailureReason::Refused(e)),
                    SendFailure::Unsendable => self.fail(seq, FailureReason::Unsendable(e)),
                }
            }
        }
    }

    fn note_error(&self, seq: u64, e: Errno) {
        if let Some(en) = self.sh.lock().pending.get_mut(&seq) {
            en.last_error = Some(e);
        }
    }

    /// Writes that message `seq` left the area (`how`: 1 acknowledged, 2 deleted), and rewrites
    /// the file when it has grown enough.
    fn taken_out(&self, st: &mut State, seq: u64, how: u8) {
        let State {
            file,
            pending,
            next_seq,
            ..
        } = st;
        let Some(f) = file.as_mut() else {
            return;
        };
        if f.wants_compaction() {
            let r = f.compact(
                self.sh.incarnation,
                *next_seq,
                pending
                    .iter()
                    .map(|(s, e)| (*s, e.deadline_ms, e.timeout, &e.payload[..])),
            );
            match r {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(sender = %self.sh.sender, error = %e, "GMD area not rewritten; appending");
                    f.defer_compaction();
                }
            }
        }
        let rec = record::encode(record::kind::DONE, &[&seq.to_le_bytes(), &[how]]);
        if let Err(e) = f.append(&rec, false) {
            // Not fatal: the message would be sent again after a restart, and dropped by the
            // receiver as a duplicate (or sent again, if it was deleted).
            tracing::warn!(sender = %self.sh.sender, seq, error = %e, "GMD area not updated");
        }
    }

    /// Raises the failure event of message `seq` and applies the callback's decision. A
    /// callback that panics keeps the message (as `Resend`), with a logged error.
    fn fail(&mut self, seq: u64, reason: FailureReason) {
        let event = {
            let mut st = self.sh.lock();
            let Some(e) = st.pending.get(&seq) else {
                return;
            };
            let ev = GmdFailure {
                seq,
                payload: e.payload.to_vec(),
                reason,
                connection: self.sh.target.to_string(),
                sender: self.sh.sender.clone(),
                attempts: e.attempts,
            };
            st.counters.failures += 1;
            ev
        };
        let cb = &self.sh.cfg.on_failure;
        let action = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&event)))
            .unwrap_or_else(|_| {
                tracing::error!(seq, sender = %self.sh.sender, "GMD failure callback panicked; message kept");
                FailureAction::Resend
            });
        let mut st = self.sh.lock();
        match action {
            FailureAction::Delete => {
                if st.take(seq).is_some() {
                    st.counters.deleted += 1;
                    self.taken_out(&mut st, seq, 2);
                }
            }
            FailureAction::Resend => {
                // The new deadline is at least a retry interval away, so that a zero timeout
                // cannot make the callback spin.
                let timeout = st
                    .pending
                    .get(&seq)
                    .and_then(|e| e.timeout)
                    .map(|t| t.max(self.sh.cfg.retry_interval));
                let deadline = timeout.and_then(after);
                let deadline_ms = deadline.and(timeout).map(|t| {
                    unix_ms().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
                });
                st.set_deadline(seq, deadline);
                if let Some(e) = st.pending.get_mut(&seq) {
                    e.deadline_ms = deadline_ms;
                    e.attempts = 0;
                    st.counters.resent += 1;
                    if let Some(f) = st.file.as_mut() {
                        let rec = record::encode(
                            record::kind::RESENT,
                            &[&seq.to_le_bytes(), &area::ms_field(deadline_ms)],
                        );
                        if let Err(e) = f.append(&rec, false) {
                            tracing::warn!(seq, error = %e, "GMD area not updated");
                        }
                    }
                }
            }
        }
        let idle = st.pending.is_empty();
        drop(st);
        // A message refused and resent is tried again after the retry interval, not at once.
        if action == FailureAction::Resend && !matches!(reason, FailureReason::Timeout { .. }) {
            self.hold();
        }
        if idle {
            self.sh.cv.notify_all();
        }
    }
}

/// The deadlines that can expire now, earliest first: every message's but the head's while it
/// has not been attempted yet (a message is given at least one try before it is failed).
fn expirable(st: &State) -> impl Iterator<Item = (Instant, u64)> + '_ {
    let head = st
        .pending
        .iter()
        .next()
        .filter(|(_, e)| e.attempts == 0)
        .map(|(s, _)| *s);
    st.deadlines
        .iter()
        .filter(move |(_, s)| Some(*s) != head)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_sim::{iomsg, pulse_code, Received, Scoid, SystemBuilder};

    /// A system of the test's own, removed on drop.
    struct Sys(System, String);
    impl Sys {
        fn new(tag: &str) -> Sys {
            let name = format!("qsimtest-gmd-{tag}-{}", std::process::id());
            let _ = kernel_sim::remove_system(&name);
            let sys = SystemBuilder::new().name(&name).create().expect("system");
            Sys(sys, name)
        }
    }
    impl Drop for Sys {
        fn drop(&mut self) {
            let _ = kernel_sim::remove_system(&self.1);
        }
    }

    fn tmp(tag: &str) -> (PathBuf, crate::test_support::Rm) {
        crate::test_support::tmp("qsim-gmd-unit", tag)
    }

    /// A receiving server thread on name `name`, keeping payloads in `log`, until a pulse.
    fn server(sys: &System, name: &str, log: PathBuf) -> (std::thread::JoinHandle<()>, Coid) {
        let att = sys.name_attach(name).expect("name_attach");
        let stop = sys
            .connect_attach(0, sys.pid(), att.chid, kernel_sim::SIDE_CHANNEL, 0)
            .expect("stop coid");
        let s = sys.clone();
        let t = std::thread::spawn(move || {
            let opts = ReceiverOptions {
                keep_payloads: true,
                ..ReceiverOptions::default()
            };
            let mut rx = GmdReceiver::open(&log, opts).expect("receiver");
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.msg_receive(att.chid, &mut buf).expect("receive") {
                    Received::Pulse(p) if p.code == pulse_code::DISCONNECT => {
                        let _ = s.scoid_detach(Scoid(p.scoid));
                    }
                    Received::Pulse(p) if p.code == 1 => break,
                    Received::Pulse(_) => {}
                    Received::Message { rcvid, info } => {
                        let msg = &buf[..(info.msglen as usize).min(buf.len())];
                        if iomsg::answer_bookkeeping(&s, rcvid, msg, &info).unwrap_or(true) {
                            continue;
                        }
                        let _ = rx.serve(&s, rcvid, msg, |d| {
                            if d.payload == b"refuse me" {
                                Err(Errno::PERM)
                            } else {
                                Ok(())
                            }
                        });
                    }
                }
            }
            let _ = s.name_detach(att);
        });
        (t, stop)
    }

    #[test]
    fn messages_are_delivered_in_order_and_a_refusal_reaches_the_callback() {
        let sys = Sys::new("order");
        let (dir, _rm) = tmp("order");
        let log = dir.join("rx.log");
        let (t, stop) = server(&sys.0, "gmd-order", log.clone());
        let refused = Arc::new(Mutex::new(Vec::new()));
        let r2 = Arc::clone(&refused);
        let conn = GmdConn::open(
            &sys.0,
            Target::Name("gmd-order".into()),
            GmdConfig::new().sender("unit").on_failure(move |f| {
                r2.lock().unwrap().push((f.seq, f.reason));
                FailureAction::Delete
            }),
        )
        .unwrap();
        for i in 0..200u32 {
            let p = if i == 50 {
                b"refuse me".to_vec()
            } else {
                i.to_le_bytes().to_vec()
            };
            assert_eq!(conn.send(&p).unwrap(), u64::from(i) + 1);
        }
        assert!(conn.wait_idle(Some(Duration::from_secs(60))));
        let c = conn.counters();
        assert_eq!((c.queued, c.delivered, c.deleted), (200, 199, 1));
        assert_eq!(
            *refused.lock().unwrap(),
            [(51, FailureReason::Refused(Errno::PERM))]
        );
        drop(conn);
        sys.0.msg_send_pulse(stop, -1, 1, 0).unwrap();
        t.join().unwrap();
        let (seen, damage) = GmdReceiver::read_log(&log).unwrap();
        assert!(damage.is_empty());
        let seqs: Vec<u64> = seen.iter().map(|s| s.seq).collect();
        let want: Vec<u64> = (1..=200).filter(|s| *s != 51).collect();
        assert_eq!(seqs, want);
        assert_eq!(seen[0].payload, 0u32.to_le_bytes());
        assert!(seen.iter().all(|s| s.sender == "unit"));
    }

    #[test]
    fn a_file_area_comes_back_after_close_and_damage_is_reported_with_good_records_kept() {
        let sys = Sys::new("area");
        let (dir, _rm) = tmp("area");
        let cfg = || {
            GmdConfig::file(&dir, "area-unit", Durability::EachRecord)
                .delivery_timeout(None)
                .retry_interval(Duration::from_millis(1))
        };
        // Nobody serves the name: everything stays in the area.
        let conn = GmdConn::open(&sys.0, Target::Name("gmd-nobody".into()), cfg()).unwrap();
        let inc = conn.incarnation();
        for p in [&b"one"[..], b"two", b"three"] {
            conn.send(p).unwrap();
        }
        // A second live sender on the same area is refused.
        assert!(matches!(
            GmdConn::open(&sys.0, Target::Name("gmd-nobody".into()), cfg()),
            Err(GmdError::InUse(_))
        ));
        conn.close().unwrap();
        let conn = GmdConn::open(&sys.0, Target::Name("gmd-nobody".into()), cfg()).unwrap();
        assert_eq!(conn.pending(), [1, 2, 3]);
        assert_eq!((conn.incarnation(), conn.next_seq()), (inc, 4));
        assert!(conn.damage().is_empty());
        conn.close().unwrap();
        // Corrupt the middle message and tear a record on at the end.
        let path = dir.join("area-unit.gmd");
        let mut bytes = std::fs::read(&path).unwrap();
        let pos = bytes.windows(3).position(|w| w == b"two").unwrap();
        bytes[pos] = b'T';
        bytes.extend_from_slice(&record::encode(record::kind::MESSAGE, &[&[0u8; 30]])[..20]);
        std::fs::write(&path, &bytes).unwrap();
        let conn = GmdConn::open(&sys.0, Target::Name("gmd-nobody".into()), cfg()).unwrap();
        assert_eq!(conn.pending(), [1, 3]);
        let kinds: Vec<DamageKind> = conn.damage().iter().map(|d| d.kind).collect();
        assert_eq!(kinds, [DamageKind::Corrupt, DamageKind::Truncated]);
        // Numbering goes on above anything the damaged bytes may have named.
        let next = conn.next_seq();
        assert!(next > 4, "{next}");
        assert!(dir.join("area-unit.gmd.damaged").exists());
        conn.close().unwrap();
        // The rewritten area is sound.
        let conn = GmdConn::open(&sys.0, Target::Name("gmd-nobody".into()), cfg()).unwrap();
        assert!(conn.damage().is_empty());
        assert_eq!(conn.pending(), [1, 3]);
        assert_eq!(conn.next_seq(), next);
        // Bad input loses nothing.
        assert!(matches!(
            conn.send(&vec![0; 61 * 1024]),
            Err(GmdError::TooLarge { .. })
        ));
        assert_eq!(conn.pending(), [1, 3]);
        drop(conn);
        assert!(matches!(
            GmdConn::open(
                &sys.0,
                Target::Name("x".into()),
                GmdConfig::file(&dir, "../evil", Durability::EachRecord)
            ),
            Err(GmdError::BadSender(_))
        ));
    }

    #[test]
    fn a_hung_server_times_out_and_a_panicking_callback_loses_nothing() {
        let sys = Sys::new("hung");
        // A server that attached the name and never receives.
        let att = sys.0.name_attach("gmd-hung").unwrap();
        let calls = Arc::new(Mutex::new(0u32));
        let c2 = Arc::clone(&calls);
        let conn = GmdConn::open(
            &sys.0,
            Target::Name("gmd-hung".into()),
            GmdConfig::new()
                .delivery_timeout(Some(Duration::from_millis(20)))
                .attempt_timeout(Duration::from_millis(20))
                .retry_interval(Duration::from_millis(1))
                .on_failure(move |f| {
                    let n = {
                        let mut n = c2.lock().unwrap();
                        *n += 1;
                        *n
                    };
                    // The first call panics: the message must be kept, and the sender live on.
                    assert!(n > 1, "callback panics on purpose for message {}", f.seq);
                    FailureAction::Delete
                }),
        )
        .unwrap();
        conn.send(b"x").unwrap();
        assert!(conn.wait_idle(Some(Duration::from_secs(60))));
        assert_eq!(*calls.lock().unwrap(), 2);
        let c = conn.counters();
        assert_eq!((c.failures, c.deleted, c.resent), (2, 1, 1));
        // Still sending after the panic; a timeout too long for an Instant is no deadline.
        assert_eq!(
            conn.send_with_timeout(b"y", Some(Duration::MAX)).unwrap(),
            2
        );
        assert!(!conn.wait_idle(Some(Duration::from_millis(1))));
        // close returns though the server holds the connect or the send.
        conn.close().unwrap();
        let _ = sys.0.name_detach(att);
    }

    #[test]
    fn a_recovered_message_past_its_deadline_is_tried_before_it_is_failed() {
        let sys = Sys::new("late");
        let (dir, _rm) = tmp("late");
        let cfg = |target_cb: bool| {
            let c = GmdConfig::file(&dir, "late-unit", Durability::EachRecord)
                .delivery_timeout(Some(Duration::from_millis(5)))
                .retry_interval(Duration::from_millis(1));
            if target_cb {
                c.on_failure(|_| FailureAction::Resend)
            } else {
                c
            }
        };
        // Queued while nobody serves, kept by resends, then the client stops.
        let conn = GmdConn::open(&sys.0, Target::Name("gmd-late".into()), cfg(true)).unwrap();
        conn.send(b"late").unwrap();
        while conn.counters().failures == 0 {
            std::thread::yield_now();
        }
        conn.close().unwrap();
        // Its stored deadline has passed; the server is up now. With the default callback
        // (delete), it must still be delivered: a restart gives it a new timeout and a try.
        let log = dir.join("rx.log");
        let (t, stop) = server(&sys.0, "gmd-late", log.clone());
        let conn = GmdConn::open(&sys.0, Target::Name("gmd-late".into()), cfg(false)).unwrap();
        assert!(conn.wait_idle(Some(Duration::from_secs(60))));
        assert_eq!((conn.counters().delivered, conn.counters().deleted), (1, 0));
        drop(conn);
        sys.0.msg_send_pulse(stop, -1, 1, 0).unwrap();
        t.join().unwrap();
        assert_eq!(GmdReceiver::read_log(&log).unwrap().0[0].payload, b"late");
    }

    /// A small xorshift generator: the same bytes every run, no dependency.
    fn rng(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn mangled_files_and_messages_never_panic_and_keep_what_checks() {
        let mut next = rng(0x9E37_79B9_7F4A_7C15);
        // An area of 40 messages, half of them taken out.
        let mut area = record::encode(
            record::kind::BASE,
            &[&7u64.to_le_bytes(), &1u64.to_le_bytes()],
        );
        for seq in 1..=40u64 {
            let payload = vec![seq as u8; (seq % 13) as usize];
            area.extend(area::message_record(seq, 7, Some(1), None, &payload));
            if seq % 2 == 0 {
                area.extend(record::encode(
                    record::kind::DONE,
                    &[&seq.to_le_bytes(), &[1]],
                ));
            }
        }
        let clean = area::load(&area);
        assert_eq!(clean.pending.len(), 20);
        let written: BTreeMap<u64, Vec<u8>> = (1..=40u64)
            .map(|seq| (seq, vec![seq as u8; (seq % 13) as usize]))
            .collect();
        for round in 0..2000 {
            let mut f = area.clone();
            // Flip, cut, or splice in garbage.
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % f.len();
                        f[i] ^= 1 << (next() % 8);
                    }
                }
                1 => f.truncate((next() as usize) % f.len()),
                _ => {
                    let at = (next() as usize) % f.len();
                    let junk: Vec<u8> = (0..next() % 64).map(|_| next() as u8).collect();
                    f.splice(at..at, junk);
                }
            }
            let l = area::load(&f);
            // Whatever survives was written: no message invented, none changed (a lost DONE
            // record may bring an acknowledged one back: the receiver drops it).
            for (seq, m) in &l.pending {
                assert_eq!(
                    written.get(seq),
                    Some(&m.payload),
                    "round {round}: message {seq}"
                );
            }
            // Damage is always noticed: an undamaged file of full length is the clean area.
            if l.damage.is_empty() && f.len() == area.len() {
                assert_eq!(l.pending.len(), 20, "round {round}");
                assert_eq!(l.next_seq, 41, "round {round}");
            }
            // Numbering never goes back below what a surviving record names.
            if let Some(max) = l.pending.keys().last() {
                assert!(l.next_seq > *max, "round {round}");
            }
            let _ = record::scan(&f);
            // The same bytes as a delivery message or a receiver record: an error, not a panic.
            let _ = Delivery::decode(&f[..f.len().min(200)]);
        }
        // Random messages with a delivery's type.
        for _ in 0..2000 {
            let mut m: Vec<u8> = (0..next() % 96).map(|_| next() as u8).collect();
            if m.len() >= 2 {
                m[..2].copy_from_slice(&wire::GMD_DELIVER.to_le_bytes());
            }
            if let Ok(d) = Delivery::decode(&m) {
                assert!(d.seq > 0 && wire::valid_sender(d.sender));
            }
        }
    }
}
