//! The guaranteed-delivery rows: `gmd_memory`, `gmd_file_batch64` and `gmd_file_each`, the cost
//! per message of delivering a stream of 8-byte one-way messages through ha-lib's
//! [`GmdConn`] (informative: the report compares them with the `msg_send` 8 B round trip of the
//! same run, and checks no target).
//!
//! - The server is a `gmd-server` peer ([`Role::GmdServer`], this binary again, in another
//!   process): it attaches [`SERVER_NAME`] in a system of its own, answers the `_IO_CONNECT` of
//!   `name_open`, and answers every delivery with [`GmdReceiver::serve`] on a receiver log in the
//!   case's temporary directory ([`LOG_ENV`]), kept as the rows say: no payloads, synced every
//!   64 records ([`receiver_options`]). Its effect checks that the payload is the 8-byte
//!   sequence number of the message (the client sends exactly that), and refuses anything else.
//! - The client (the bench process) opens a [`GmdConn`] to the name, with a memory area or a
//!   file area in the same directory ([`GmdArea`]). A stream of N messages is timed from the
//!   first [`GmdConn::send`] to [`GmdConn::wait_idle`] returning with every message
//!   acknowledged; the sample is the time divided by N. One untimed stream of N / 4 first
//!   (the sender's `name_open` and the first sends stay outside the timing).
//! - Nothing broken is a number: each `send` must return the next sequence number, each stream
//!   must end with all N acknowledged and no failure event, and at the end the server reports
//!   (in its reply to [`STOP_MESSAGE`]) what it recorded, which must be every message sent,
//!   once each, and nothing refused.
//!
//! The system is `qsimtest-bench-<pid>-gmd-<area>-<n>` (an [`ArenaGuard`]), the directory
//! `<temp dir>/qsimtest-bench-<pid>-gmd-<n>` (a [`TempDir`]): both are removed when the peer is
//! dropped, on failure too, and by the crate's stale-file and signal clean-up otherwise.

use crate::error::{kernel, BenchError};
use crate::floor::SHM_PREFIX;
use crate::process::{remove_path, PeerProcess, Placement};
use crate::role::{env_required, say_ready, Role, SYSTEM_ENV};
use crate::rtt::{bench_limits, ArenaGuard, STOP_MESSAGE, STOP_TIMEOUT};
use ha_lib::gmd::{
    Accepted, Delivery, Durability, FailureAction, GmdConfig, GmdConn, GmdCounters, GmdReceiver,
    ReceiverOptions, Target,
};
use kernel_sim::{
    iomsg, pulse_code, Chid, Coid, Errno, Pid, Received, Scoid, System, SystemBuilder,
};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name the `gmd-server` attaches (one per system).
pub const SERVER_NAME: &str = "qsim-bench-gmd";

/// The receiver log a `gmd-server` opens (a path in the case's temporary directory).
pub const LOG_ENV: &str = "QSIM_BENCH_GMD_LOG";

/// Payload of every message: 8 bytes, the message's sequence number (little-endian).
pub const GMD_PAYLOAD: usize = 8;

/// The sender name of the bench's connection (it names a file area's file).
pub const SENDER: &str = "qsim-bench";

/// Records per `fdatasync` of the receiver log, and of the `gmd_file_batch64` area.
pub const BATCH: NonZeroU32 = NonZeroU32::MIN.saturating_add(63);

/// The longest one stream may take to be acknowledged (the case's watchdog ends a hang sooner).
const STREAM_LIMIT: Duration = Duration::from_secs(50);

/// Where a row's connection keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GmdArea {
    /// `gmd_memory`: a memory area.
    Memory,
    /// `gmd_file_batch64`: a file area synced every 64 messages ([`Durability::Batch`]).
    FileBatch64,
    /// `gmd_file_each`: a file area synced before each `send` returns
    /// ([`Durability::EachRecord`]).
    FileEach,
}

impl GmdArea {
    /// Every area, in the report's order.
    pub const ALL: [GmdArea; 3] = [GmdArea::Memory, GmdArea::FileBatch64, GmdArea::FileEach];

    /// The row's name: `gmd_memory`, `gmd_file_batch64` or `gmd_file_each`.
    pub fn row(self) -> &'static str {
        match self {
            GmdArea::Memory => "gmd_memory",
            GmdArea::FileBatch64 => "gmd_file_batch64",
            GmdArea::FileEach => "gmd_file_each",
        }
    }

    /// A short tag for system names: `memory`, `batch64`, `each`.
    fn tag(self) -> &'static str {
        match self {
            GmdArea::Memory => "memory",
            GmdArea::FileBatch64 => "batch64",
            GmdArea::FileEach => "each",
        }
    }

    /// The connection's settings, a file area (if any) in `dir`; every failure event is
    /// counted and reported through `failures` (and the message deleted: the case fails).
    fn config(self, dir: &Path, failures: Arc<Mutex<Option<String>>>) -> GmdConfig {
        let cfg = match self {
            GmdArea::Memory => GmdConfig::new().sender(SENDER),
            GmdArea::FileBatch64 => GmdConfig::file(dir, SENDER, Durability::Batch(BATCH)),
            GmdArea::FileEach => GmdConfig::file(dir, SENDER, Durability::EachRecord),
        };
        cfg.on_failure(move |f| {
            let mut first = failures.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(|| {
                format!(
                    "message {} failed after {} attempts: {:?}",
                    f.seq, f.attempts, f.reason
                )
            });
            FailureAction::Delete
        })
    }
}

/// The receiver log's settings for every row: no payloads, synced every [`BATCH`] records.
pub fn receiver_options() -> ReceiverOptions {
    ReceiverOptions {
        keep_payloads: false,
        durability: Durability::Batch(BATCH),
        ..ReceiverOptions::default()
    }
}

/// What a `gmd-server` did, sent back in its reply to [`STOP_MESSAGE`] (three little-endian
/// `u64`s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverCounts {
    /// Deliveries recorded as new.
    pub new: u64,
    /// Deliveries acknowledged as duplicates (sent again after a lost acknowledgement).
    pub duplicates: u64,
    /// Messages refused: malformed, not a delivery, or a payload other than its sequence
    /// number.
    pub refused: u64,
}

impl ReceiverCounts {
    /// The reply's length.
    pub const LEN: usize = 24;

    /// The reply's bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..8].copy_from_slice(&self.new.to_le_bytes());
        b[8..16].copy_from_slice(&self.duplicates.to_le_bytes());
        b[16..].copy_from_slice(&self.refused.to_le_bytes());
        b
    }

    /// Decodes a reply; `None` unless it is exactly [`ReceiverCounts::LEN`] bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let word = |k: usize| {
            b.get(8 * k..8 * k + 8)
                .and_then(|w| w.try_into().ok())
                .map(u64::from_le_bytes)
        };
        if b.len() != Self::LEN {
            return None;
        }
        Some(ReceiverCounts {
            new: word(0)?,
            duplicates: word(1)?,
            refused: word(2)?,
        })
    }
}

/// The check of the server's effect: the payload is the 8-byte sequence number.
fn payload_is_seq(d: &Delivery<'_>) -> Result<(), Errno> {
    match <[u8; GMD_PAYLOAD]>::try_from(d.payload) {
        Ok(b) if u64::from_le_bytes(b) == d.seq => Ok(()),
        _ => Err(Errno::BADMSG),
    }
}

/// Serves guaranteed deliveries on [`SERVER_NAME`] in `sys` with a receiver log at `log`
/// ([`receiver_options`]) until a message equal to [`STOP_MESSAGE`] comes, which is answered
/// with the [`ReceiverCounts`]. `ready` is called once the name is attached, with the name's
/// channel (a client may send the stop message there with `connect_attach`).
///
/// # Errors
///
/// Opening the log, attaching the name, receiving, or `ready` failed.
pub fn serve(
    sys: &System,
    log: &Path,
    ready: impl FnOnce(Chid) -> Result<(), BenchError>,
) -> Result<ReceiverCounts, BenchError> {
    let mut rx = GmdReceiver::open(log, receiver_options())?;
    let att = sys
        .name_attach(SERVER_NAME)
        .map_err(kernel("name_attach"))?;
    let served = ready(att.chid).and_then(|()| receive_loop(sys, att.chid, &mut rx));
    let synced = rx
        .sync()
        .map_err(crate::error::io("syncing the receiver log"));
    let detached = sys.name_detach(att).map_err(kernel("name_detach"));
    let counts = served?;
    synced?;
    detached?;
    Ok(counts)
}

/// The receive loop of [`serve`].
fn receive_loop(
    sys: &System,
    chid: Chid,
    rx: &mut GmdReceiver,
) -> Result<ReceiverCounts, BenchError> {
    let mut counts = ReceiverCounts::default();
    let mut buf = vec![0u8; sys.limits().max_msg_size as usize];
    loop {
        match sys
            .msg_receive(chid, &mut buf)
            .map_err(kernel("msg_receive"))?
        {
            Received::Pulse(p) if p.code == pulse_code::DISCONNECT => {
                let _ = sys.scoid_detach(Scoid(p.scoid));
            }
            Received::Pulse(_) => {}
            Received::Message { rcvid, info } => {
                if info.msglen as usize > buf.len() {
                    counts.refused += 1;
                    let _ = sys.msg_error(rcvid, Errno::MSGSIZE);
                    continue;
                }
                let msg = &buf[..info.msglen as usize];
                if msg == STOP_MESSAGE {
                    sys.msg_reply(rcvid, 0, &counts.encode())
                        .map_err(kernel("msg_reply"))?;
                    return Ok(counts);
                }
                if iomsg::answer_bookkeeping(sys, rcvid, msg, &info).unwrap_or(true) {
                    continue;
                }
                match rx.serve(sys, rcvid, msg, payload_is_seq) {
                    Ok((Accepted::New, _)) => counts.new += 1,
                    Ok((Accepted::Duplicate, _)) => counts.duplicates += 1,
                    Err(_) => counts.refused += 1,
                }
            }
        }
    }
}

/// The `gmd-server` role: attaches to the system in [`SYSTEM_ENV`], prints
/// `ready <pid> <chid>` once [`SERVER_NAME`] is attached, serves with the log in [`LOG_ENV`]
/// until told to stop.
pub(crate) fn serve_from_env() -> Result<(), BenchError> {
    let system = env_required(SYSTEM_ENV)?;
    let log = PathBuf::from(env_required(LOG_ENV)?);
    let sys = SystemBuilder::new().name(system).attach()?;
    serve(&sys, &log, |chid| {
        say_ready(format_args!("{} {}", std::process::id(), chid.0))
    })?;
    Ok(())
}

/// Parses a `gmd-server`'s ready line, `<pid> <chid>`.
fn parse_ready(ready: &str) -> Result<(Pid, Chid), BenchError> {
    let mut words = ready.split_ascii_whitespace().map(str::parse::<i32>);
    match (words.next(), words.next(), words.next()) {
        (Some(Ok(pid)), Some(Ok(chid)), None) => Ok((Pid(pid), Chid(chid))),
        _ => Err(BenchError::NotReady {
            role: Role::GmdServer.as_str(),
            detail: format!("ready line {ready:?} is not `<pid> <chid>`"),
        }),
    }
}

/// A temporary directory, `<temp dir>/qsimtest-bench-<pid>-<tag>-<n>`, removed with everything
/// in it when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a new, empty one.
    ///
    /// # Errors
    ///
    /// The directory could not be created (or one of that name exists already).
    pub fn unique(tag: &str) -> Result<Self, BenchError> {
        static NEXT: Mutex<u32> = Mutex::new(0);
        let n = {
            let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
            *next = next.wrapping_add(1);
            *next
        };
        let path =
            std::env::temp_dir().join(format!("{SHM_PREFIX}{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir(&path).map_err(crate::error::io("creating the temp directory"))?;
        Ok(TempDir { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_path(&self.path);
    }
}

/// The client side: a [`GmdConn`] and what is needed to check what it delivers.
pub struct GmdStream {
    conn: GmdConn,
    next: u64,
    failures: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GmdStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmdStream")
            .field("conn", &self.conn)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl GmdStream {
    /// Opens a connection to [`SERVER_NAME`] on `sys`, its area as `area` says (a file area in
    /// `dir`, which must hold no area yet: numbering starts at 1).
    ///
    /// # Errors
    ///
    /// The connection could not be opened, or its area was not new.
    pub fn open(sys: &System, area: GmdArea, dir: &Path) -> Result<Self, BenchError> {
        let failures = Arc::new(Mutex::new(None));
        let conn = GmdConn::open(
            sys,
            Target::Name(SERVER_NAME.to_owned()),
            area.config(dir, Arc::clone(&failures)),
        )?;
        if conn.next_seq() != 1 || !conn.pending().is_empty() {
            return Err(BenchError::Exchange(format!(
                "the {} area is not new: next sequence number {}, {} pending",
                area.row(),
                conn.next_seq(),
                conn.pending().len()
            )));
        }
        Ok(GmdStream {
            conn,
            next: 1,
            failures,
        })
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.next - 1
    }

    /// Sends `n` messages (each its own sequence number) and waits until all are acknowledged;
    /// returns the time from the first `send` to the end of the wait.
    ///
    /// # Errors
    ///
    /// A `send` failed or returned an unexpected sequence number, a message raised a failure
    /// event, or the stream was not acknowledged within 50 s.
    pub fn deliver(&mut self, n: u64) -> Result<Duration, BenchError> {
        let before = self.conn.counters();
        let start = Instant::now();
        for _ in 0..n {
            let seq = self.conn.send(&self.next.to_le_bytes())?;
            if seq != self.next {
                return Err(BenchError::Exchange(format!(
                    "send returned sequence number {seq}, expected {}",
                    self.next
                )));
            }
            self.next += 1;
        }
        let idle = self.conn.wait_idle(Some(STREAM_LIMIT));
        let took = start.elapsed();
        let after = self.conn.counters();
        self.check(&before, &after, n, idle)?;
        Ok(took)
    }

    /// Checks a stream's counters.
    fn check(
        &self,
        before: &GmdCounters,
        after: &GmdCounters,
        n: u64,
        idle: bool,
    ) -> Result<(), BenchError> {
        if after.failures != before.failures {
            let first = self
                .failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(BenchError::Exchange(format!(
                "{} failure events in a stream of {n}: {first}",
                after.failures - before.failures
            )));
        }
        if !idle {
            return Err(BenchError::Exchange(format!(
                "{} of {n} messages still unacknowledged after {STREAM_LIMIT:?}",
                self.conn.pending().len()
            )));
        }
        let delivered = after.delivered - before.delivered;
        if delivered != n {
            return Err(BenchError::Exchange(format!(
                "{delivered} messages acknowledged in a stream of {n}"
            )));
        }
        Ok(())
    }

    /// Closes the connection (a file area is synced); returns its counters.
    ///
    /// # Errors
    ///
    /// The final sync of a file area failed.
    pub fn close(self) -> Result<GmdCounters, BenchError> {
        let counters = self.conn.counters();
        self.conn.close()?;
        Ok(counters)
    }
}

/// What a [`GmdPeer`] delivered, for the progress line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The connection's counters at the end.
    pub client: GmdCounters,
    /// What the server recorded.
    pub server: ReceiverCounts,
}

/// A `gmd-server` in its own process, and this process's [`GmdStream`] to it.
pub struct GmdPeer {
    // Dropped in this order: the connection (its sender thread stops), our registration, the
    // server (SIGKILL if still running), the arena file, the directory with the log and area.
    stream: GmdStream,
    sys: System,
    stop_coid: Coid,
    server: PeerProcess,
    arena: ArenaGuard,
    dir: TempDir,
}

impl std::fmt::Debug for GmdPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmdPeer")
            .field("system", &self.arena.name())
            .field("dir", &self.dir.path())
            .field("server", &self.server.pid())
            .field("stream", &self.stream)
            .finish()
    }
}

impl GmdPeer {
    /// Creates system `qsimtest-bench-<pid>-gmd-<area>-<n>` and a temporary directory, starts a
    /// `gmd-server` placed as `placement` says with its log in the directory, and opens a
    /// connection to it (`area`: a memory area, or a file area in the directory).
    ///
    /// # Errors
    ///
    /// Setting up the system, the directory, the server or the connection failed.
    pub fn start(area: GmdArea, placement: &Placement) -> Result<Self, BenchError> {
        let dir = TempDir::unique("gmd")?;
        let arena = ArenaGuard::unique(&format!("gmd-{}", area.tag()));
        let sys = SystemBuilder::new()
            .name(arena.name())
            .limits(bench_limits())
            .create()?;
        let log = dir.path().join("receiver.log");
        let log = log
            .to_str()
            .ok_or_else(|| BenchError::Config(format!("{} is not UTF-8", log.display())))?
            .to_owned();
        let (server, ready) = PeerProcess::spawn(
            Role::GmdServer,
            &[(SYSTEM_ENV, arena.name().to_owned()), (LOG_ENV, log)],
            placement,
        )?;
        let (pid, chid) = parse_ready(&ready)?;
        let stop_coid = sys
            .connect_attach(0, pid, chid, 0, 0)
            .map_err(kernel("connect_attach"))?;
        let stream = GmdStream::open(&sys, area, &dir.path().join("area"))?;
        Ok(GmdPeer {
            stream,
            sys,
            stop_coid,
            server,
            arena,
            dir,
        })
    }

    /// One untimed stream of `messages / 4` (at least 1), then `streams` timed streams of
    /// `messages` each: one sample per stream, in nanoseconds per message, pushed onto `out`.
    ///
    /// # Errors
    ///
    /// As [`GmdStream::deliver`].
    pub fn measure(
        &mut self,
        messages: u64,
        streams: usize,
        out: &mut Vec<f64>,
    ) -> Result<(), BenchError> {
        let messages = messages.max(1);
        self.stream.deliver((messages / 4).max(1))?;
        for _ in 0..streams.max(1) {
            let took = self.stream.deliver(messages)?;
            out.push(took.as_nanos() as f64 / messages as f64);
        }
        Ok(())
    }

    /// The server's pid, the arena file and the directory, for a watchdog.
    pub fn resources(&self) -> (Vec<u32>, Vec<PathBuf>) {
        (
            vec![self.server.pid()],
            vec![
                kernel_sim::system_path(self.arena.name()),
                self.dir.path().to_owned(),
            ],
        )
    }

    /// Closes the connection, stops the server and checks that it recorded every message sent,
    /// once, and refused none; frees everything.
    ///
    /// # Errors
    ///
    /// Closing or stopping failed, or the server's counts do not match what was sent.
    pub fn stop(self) -> Result<Delivered, BenchError> {
        let GmdPeer {
            stream,
            sys,
            stop_coid,
            server,
            arena,
            dir,
        } = self;
        let sent = stream.sent();
        let closed = stream.close();
        let mut reply = [0u8; ReceiverCounts::LEN];
        let stopped = sys.msg_send(stop_coid, STOP_MESSAGE, &mut reply);
        let _ = sys.connect_detach(stop_coid);
        drop(sys);
        let exited = server.wait_exit(STOP_TIMEOUT);
        drop(arena);
        drop(dir);
        let client = closed?;
        match stopped.map_err(kernel("msg_send(stop)"))? {
            0 => {}
            status => {
                return Err(BenchError::Exchange(format!(
                    "the gmd-server answered stop with status {status}"
                )))
            }
        }
        exited?;
        let server = ReceiverCounts::decode(&reply).ok_or_else(|| {
            BenchError::Exchange("the gmd-server's counts are malformed".to_owned())
        })?;
        if server.new != sent || server.refused != 0 {
            return Err(BenchError::Exchange(format!(
                "sent {sent} messages; the server recorded {} new, {} duplicates, refused {}",
                server.new, server.duplicates, server.refused
            )));
        }
        Ok(Delivered { client, server })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_tags_and_counts() {
        let rows: Vec<&str> = GmdArea::ALL.iter().map(|a| a.row()).collect();
        assert_eq!(rows, ["gmd_memory", "gmd_file_batch64", "gmd_file_each"]);
        assert_eq!(BATCH.get(), 64);
        let c = ReceiverCounts {
            new: 7,
            duplicates: 1,
            refused: u64::MAX,
        };
        assert_eq!(ReceiverCounts::decode(&c.encode()), Some(c));
        assert_eq!(ReceiverCounts::decode(&c.encode()[..23]), None);
        assert_eq!(ReceiverCounts::decode(&[0u8; 25]), None);
        assert_eq!(parse_ready("12 3").unwrap(), (Pid(12), Chid(3)));
        assert!(parse_ready("12").is_err() && parse_ready("12 3 4").is_err());
    }

    #[test]
    fn the_effect_accepts_only_the_sequence_number() {
        fn d(seq: u64, payload: &[u8]) -> Delivery<'_> {
            Delivery {
                sender: SENDER,
                incarnation: 1,
                seq,
                payload,
            }
        }
        let five = 5u64.to_le_bytes();
        assert_eq!(payload_is_seq(&d(5, &five)), Ok(()));
        assert_eq!(payload_is_seq(&d(6, &five)), Err(Errno::BADMSG));
        assert_eq!(payload_is_seq(&d(5, &five[..7])), Err(Errno::BADMSG));
    }

    /// A `gmd-server` loop in a thread of this process, on a system and directory of its own.
    struct InProcess {
        server: std::thread::JoinHandle<Result<ReceiverCounts, BenchError>>,
        chid: Chid,
        sys: System,
        arena: ArenaGuard,
        dir: TempDir,
    }

    impl InProcess {
        fn start() -> InProcess {
            let dir = TempDir::unique("gmd-test").unwrap();
            let arena = ArenaGuard::unique("gmd-test");
            let sys = SystemBuilder::new()
                .name(arena.name())
                .limits(bench_limits())
                .create()
                .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let server = {
                let sys = sys.clone();
                let log = dir.path().join("receiver.log");
                std::thread::spawn(move || {
                    serve(&sys, &log, |chid| {
                        tx.send(chid).map_err(|e| BenchError::Config(e.to_string()))
                    })
                })
            };
            let chid = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            InProcess {
                server,
                chid,
                sys,
                arena,
                dir,
            }
        }

        /// Stops the server; returns its counts (checked against its reply) and the log.
        fn stop(self) -> (ReceiverCounts, Vec<ha_lib::gmd::Seen>) {
            let coid = self
                .sys
                .connect_attach(0, self.sys.pid(), self.chid, 0, 0)
                .unwrap();
            let mut reply = [0u8; ReceiverCounts::LEN];
            assert_eq!(self.sys.msg_send(coid, STOP_MESSAGE, &mut reply), Ok(0));
            let counts = self.server.join().unwrap().unwrap();
            assert_eq!(ReceiverCounts::decode(&reply), Some(counts));
            let (seen, damage) =
                GmdReceiver::read_log(self.dir.path().join("receiver.log")).unwrap();
            assert!(damage.is_empty());
            let _ = self.sys.connect_detach(coid);
            drop(self.sys);
            drop(self.arena);
            let path = self.dir.path().to_owned();
            drop(self.dir);
            assert!(!path.exists());
            (counts, seen)
        }
    }

    /// The server loop and the client against it: every area delivers its streams, checked,
    /// and the server's counts match; nothing is left behind.
    #[test]
    fn streams_are_delivered_and_counted_in_process() {
        for area in GmdArea::ALL {
            let rig = InProcess::start();
            let mut stream = GmdStream::open(&rig.sys, area, &rig.dir.path().join("area")).unwrap();
            for n in [1, 40, 100] {
                assert!(stream.deliver(n).unwrap() > Duration::ZERO);
            }
            assert_eq!(stream.sent(), 141);
            let client = stream.close().unwrap();
            assert_eq!((client.delivered, client.failures), (141, 0));
            let (counts, seen) = rig.stop();
            assert_eq!(
                counts,
                ReceiverCounts {
                    new: 141,
                    duplicates: 0,
                    refused: 0
                }
            );
            assert_eq!(seen.len(), 141);
            assert!(seen.iter().all(|s| s.payload.is_empty()));
        }
    }

    /// A message the server refuses is an error of the stream (and counted by the server), and
    /// a sequence number out of step is an error too: never a number.
    #[test]
    fn a_refused_message_or_a_lost_step_fails_the_stream() {
        let rig = InProcess::start();
        let mut stream =
            GmdStream::open(&rig.sys, GmdArea::Memory, &rig.dir.path().join("area")).unwrap();
        let before = stream.conn.counters();
        // Sequence number 1 with a payload that is not 1: the server's effect refuses it.
        assert_eq!(stream.conn.send(&0u64.to_le_bytes()).unwrap(), 1);
        stream.next = 2;
        let idle = stream.conn.wait_idle(Some(Duration::from_secs(10)));
        let after = stream.conn.counters();
        let e = stream
            .check(&before, &after, 1, idle)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 failure events") && e.contains("Refused"),
            "{e}"
        );
        stream.next = 7;
        let e = stream.deliver(1).unwrap_err().to_string();
        assert!(e.contains("sequence number 2, expected 7"), "{e}");
        // That message (sequence number 2, payload 7) went out too, and is refused as well.
        assert!(stream.conn.wait_idle(Some(Duration::from_secs(10))));
        stream.close().unwrap();
        let (counts, seen) = rig.stop();
        assert_eq!((counts.new, counts.refused), (0, 2));
        assert!(seen.is_empty());
    }
}
