//! Round-trip clients: each starts its peer process, connects, times round trips and stops the
//! peer. Setup and teardown stay outside the timed loops, so a criterion `iter_custom` routine
//! and the report time nothing but round trips, with the same code ([`Timed`], [`Sampled`]).
//!
//! Every peer echoes; every reply is checked to echo its request (the first 8 bytes carry the
//! iteration number), and a reply that does not is an error, never a number.

use crate::error::{kernel, BenchError};
use crate::floor::{FloorClient, Handoff, SharedMapping, FLOOR_MAPPING_LEN};
use crate::process::{PeerProcess, Placement};
use crate::role::{Role, SHM_ENV, SYSTEM_ENV, WAIT_ENV};
use kernel_sim::{ChannelWait, Chid, Coid, Limits, Pid, System, SystemBuilder};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The message that makes a `kernel-server` thread reply and exit. Its length (15) differs from
/// every payload the benches send, so no payload can be mistaken for it.
pub const STOP_MESSAGE: &[u8] = b"qsim-bench-stop";

/// How long a peer may take to exit once asked.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The smallest message-size limit of a bench system (kernel-sim's default).
const MIN_MSG_LIMIT: usize = 64 * 1024;

/// The limits of every bench system: small, so the arena is small, and enough for the bench
/// process, one server and a spare.
pub fn bench_limits() -> Limits {
    Limits {
        max_processes: 4,
        threads_per_process: 4,
        max_msg_size: MIN_MSG_LIMIT as u32,
        ..Default::default()
    }
}

/// [`bench_limits`] with a message-size limit that admits `payload` bytes (1 MiB needs more than
/// the default 64 KiB; the arena grows by two buffers of the limit per thread slot).
pub fn bench_limits_for(payload: usize) -> Limits {
    Limits {
        max_msg_size: payload.max(MIN_MSG_LIMIT) as u32,
        ..bench_limits()
    }
}

/// One round trip to an echo peer.
pub trait Exchange {
    /// Sends `msg`, waits for the peer's answer and copies it into `reply`; returns the answer's
    /// length.
    ///
    /// # Errors
    ///
    /// [`BenchError::Exchange`] (or the peer's own error) if the round trip failed.
    fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError>;
}

/// Something to do with an [`Exchange`]: a loop of round trips. Generic, so each peer's round
/// trip is inlined into the loop.
pub trait Driver {
    /// What the loop produces.
    type Output;
    /// Runs the loop on `e`.
    fn drive<E: Exchange>(self, e: &mut E) -> Self::Output;
}

/// Something that can run round trips to an echo peer.
pub trait RoundTrip {
    /// Runs `driver` on this peer's exchange.
    fn with_exchange<D: Driver>(&mut self, driver: D) -> D::Output;

    /// The peer's pid and the shared-memory files (or directories) of this setup, for a
    /// watchdog.
    fn resources(&self) -> (Vec<u32>, Vec<PathBuf>);

    /// Asks the peer to exit and waits for it; frees everything.
    ///
    /// # Errors
    ///
    /// The peer refused to stop or exited with a failure (it is killed either way).
    fn stop(self) -> Result<(), BenchError>;

    /// Does `iters` round trips of `len`-byte payloads and returns the time they took.
    ///
    /// # Errors
    ///
    /// A round trip failed or a reply was not the echo of its request.
    fn time_round_trips(&mut self, iters: u64, len: usize) -> Result<Duration, BenchError>
    where
        Self: Sized,
    {
        self.with_exchange(Timed { iters, len })
    }
}

/// Writes the low bytes of iteration `i` at the start of `msg` (as many as fit, up to 8).
pub(crate) fn stamp(msg: &mut [u8], i: u64) {
    let k = msg.len().min(8);
    msg[..k].copy_from_slice(&i.to_le_bytes()[..k]);
}

/// Checks that `reply[..n]` echoes `msg` (its length, and its stamped bytes).
pub(crate) fn check_echo(i: u64, msg: &[u8], reply: &[u8], n: usize) -> Result<(), BenchError> {
    let k = msg.len().min(8);
    if n == msg.len() && reply.get(..k) == Some(&msg[..k]) {
        return Ok(());
    }
    Err(BenchError::Exchange(format!(
        "round trip {i}: a reply of {n} bytes starting {:02x?} is no echo of the {}-byte request",
        &reply[..k.min(n).min(reply.len())],
        msg.len()
    )))
}

/// Times `iters` checked round trips of `len` bytes in one batch (criterion's `iter_custom`).
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    /// Round trips.
    pub iters: u64,
    /// Payload bytes, each way.
    pub len: usize,
}

impl Driver for Timed {
    type Output = Result<Duration, BenchError>;

    fn drive<E: Exchange>(self, e: &mut E) -> Self::Output {
        let mut msg = vec![0xA5u8; self.len];
        let mut reply = vec![0u8; self.len];
        let start = Instant::now();
        for i in 0..self.iters {
            stamp(&mut msg, i);
            let n = e.round_trip(&msg, &mut reply)?;
            check_echo(i, &msg, &reply, n)?;
        }
        Ok(start.elapsed())
    }
}

/// Times each round trip on its own (for medians and p99s): round trips for `warm_up`
/// untimed, then for `budget` (or until `max` samples), pushing one sample per round trip, in
/// nanoseconds, onto `out`. Returns the number of untimed warm-up round trips.
///
/// One clock read per round trip: sample k is the time between the end of round trip k-1 and
/// the end of round trip k, so it includes one `Instant::now` (about 20 ns with the TSC clock)
/// and the echo check.
#[derive(Debug)]
pub struct Sampled<'a> {
    /// Payload bytes, each way.
    pub len: usize,
    /// Untimed round trips first, for this long.
    pub warm_up: Duration,
    /// Then sample for this long.
    pub budget: Duration,
    /// At most this many samples.
    pub max: usize,
    /// Where the samples go.
    pub out: &'a mut Vec<f64>,
}

impl Driver for Sampled<'_> {
    type Output = Result<u64, BenchError>;

    fn drive<E: Exchange>(self, e: &mut E) -> Self::Output {
        let mut msg = vec![0xA5u8; self.len];
        let mut reply = vec![0u8; self.len];
        let mut i = 0u64;
        let mut one = |i: u64| {
            stamp(&mut msg, i);
            let n = e.round_trip(&msg, &mut reply)?;
            check_echo(i, &msg, &reply, n)
        };
        let warm_end = Instant::now() + self.warm_up;
        while Instant::now() < warm_end {
            one(i)?;
            i += 1;
        }
        let warm = i;
        let mut t0 = Instant::now();
        let end = t0 + self.budget;
        let mut taken = 0;
        while taken < self.max {
            one(i)?;
            i += 1;
            let t1 = Instant::now();
            self.out.push((t1 - t0).as_nanos() as f64);
            taken += 1;
            if t1 >= end {
                break;
            }
            t0 = t1;
        }
        Ok(warm)
    }
}

/// Removes a kernel-sim system's arena file when dropped.
#[derive(Debug)]
pub struct ArenaGuard {
    name: String,
}

impl ArenaGuard {
    /// Guards system `name` (whether or not its file exists yet).
    pub fn new(name: String) -> Self {
        ArenaGuard { name }
    }

    /// Guards a new system name of this process, `qsimtest-bench-<pid>-<tag>-<n>`.
    pub fn unique(tag: &str) -> Self {
        static NEXT: Mutex<u32> = Mutex::new(0);
        let n = {
            let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
            *next = next.wrapping_add(1);
            *next
        };
        ArenaGuard::new(format!(
            "{}{}-{tag}-{n}",
            crate::floor::SHM_PREFIX,
            std::process::id()
        ))
    }

    /// The system's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ArenaGuard {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.name);
    }
}

/// What a [`KernelPeer`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelCase {
    /// How the server's channel waits (and so both sides of every exchange on it).
    pub wait: ChannelWait,
    /// The largest payload the case sends (sets the system's message-size limit).
    pub max_payload: usize,
    /// 1: `msg_send`; more: `msg_sendv` with this many gather and scatter parts.
    pub parts: usize,
}

impl KernelCase {
    /// `msg_send` on a channel that waits as `wait` says, payloads up to `max_payload`.
    pub fn send(wait: ChannelWait, max_payload: usize) -> Self {
        KernelCase {
            wait,
            max_payload,
            parts: 1,
        }
    }
}

/// The name of a wait mode in the `kernel-server`'s environment.
pub fn wait_name(wait: ChannelWait) -> &'static str {
    match wait {
        ChannelWait::System => "system",
        ChannelWait::Blocking => "blocking",
    }
}

/// Parses a `kernel-server` ready line, `<pid> <chid>`.
pub(crate) fn parse_server_line(ready: &str) -> Result<(Pid, Chid), BenchError> {
    let mut words = ready.split_ascii_whitespace().map(str::parse::<i32>);
    match (words.next(), words.next(), words.next()) {
        (Some(Ok(pid)), Some(Ok(chid)), None) => Ok((Pid(pid), Chid(chid))),
        _ => Err(BenchError::NotReady {
            role: Role::KernelServer.as_str(),
            detail: format!("ready line {ready:?} is not `<pid> <chid>`"),
        }),
    }
}

/// A kernel-sim echo server in its own process, and this process's connection to it.
pub struct KernelPeer {
    // Dropped in this order: our registration, then the server, then the arena file.
    sys: System,
    coid: Coid,
    parts: usize,
    server: PeerProcess,
    arena: ArenaGuard,
}

impl KernelPeer {
    /// Creates system `qsimtest-bench-<pid>-<tag>-<n>` (default wait mode: adaptive), starts a
    /// `kernel-server` on it as `case` says, and connects to its channel.
    ///
    /// # Errors
    ///
    /// Creating the system, starting the server, or `connect_attach` failed.
    pub fn start(tag: &str, case: KernelCase, placement: &Placement) -> Result<Self, BenchError> {
        let arena = ArenaGuard::unique(tag);
        let sys = SystemBuilder::new()
            .name(arena.name())
            .limits(bench_limits_for(case.max_payload))
            .create()?;
        let (server, ready) = PeerProcess::spawn(
            Role::KernelServer,
            &[
                (SYSTEM_ENV, arena.name().to_owned()),
                (WAIT_ENV, wait_name(case.wait).to_owned()),
            ],
            placement,
        )?;
        let (pid, chid) = parse_server_line(&ready)?;
        let coid = sys
            .connect_attach(0, pid, chid, 0, 0)
            .map_err(kernel("connect_attach"))?;
        Ok(KernelPeer {
            sys,
            coid,
            parts: case.parts.max(1),
            server,
            arena,
        })
    }
}

/// `msg_send`, or `msg_sendv` with `parts` parts each way.
struct KernelExchange<'a> {
    sys: &'a System,
    coid: Coid,
    parts: usize,
}

/// Where part `k` of `parts` nearly equal parts of `len` bytes starts.
fn part_start(len: usize, parts: usize, k: usize) -> usize {
    len * k / parts
}

impl Exchange for KernelExchange<'_> {
    #[inline]
    fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError> {
        let status = if self.parts <= 1 {
            self.sys.msg_send(self.coid, msg, reply)
        } else {
            const MAX_PARTS: usize = 8;
            let parts = self.parts.min(MAX_PARTS);
            let mut siov: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
            for (k, part) in siov.iter_mut().enumerate().take(parts) {
                *part = &msg[part_start(msg.len(), parts, k)..part_start(msg.len(), parts, k + 1)];
            }
            let mut riov: [&mut [u8]; MAX_PARTS] = Default::default();
            let mut rest = reply;
            let len = rest.len();
            for (k, part) in riov.iter_mut().enumerate().take(parts) {
                let size = part_start(len, parts, k + 1) - part_start(len, parts, k);
                let (head, tail) = rest.split_at_mut(size);
                *part = head;
                rest = tail;
            }
            self.sys
                .msg_sendv(self.coid, &siov[..parts], &mut riov[..parts])
        };
        match status {
            Ok(0) => Ok(msg.len()),
            Ok(status) => Err(BenchError::Exchange(format!(
                "the server replied with status {status}"
            ))),
            Err(errno) => Err(BenchError::Kernel {
                call: "msg_send",
                errno,
            }),
        }
    }
}

impl RoundTrip for KernelPeer {
    fn with_exchange<D: Driver>(&mut self, driver: D) -> D::Output {
        driver.drive(&mut KernelExchange {
            sys: &self.sys,
            coid: self.coid,
            parts: self.parts,
        })
    }

    fn resources(&self) -> (Vec<u32>, Vec<PathBuf>) {
        (
            vec![self.server.pid()],
            vec![kernel_sim::system_path(self.arena.name())],
        )
    }

    fn stop(self) -> Result<(), BenchError> {
        let KernelPeer {
            sys,
            coid,
            server,
            arena,
            ..
        } = self;
        let sent = sys.msg_send(coid, STOP_MESSAGE, &mut []);
        let _ = sys.connect_detach(coid);
        drop(sys);
        sent.map_err(kernel("msg_send(stop)"))?;
        let exited = server.wait_exit(STOP_TIMEOUT);
        drop(arena);
        exited
    }
}

/// A floor echo server in its own process and the mapping it shares with this process.
pub struct FloorPeer {
    server: PeerProcess,
    map: SharedMapping,
    handoff: Handoff,
}

impl FloorPeer {
    /// Creates a floor mapping and starts a `spin-server` or `futex-server` (as `handoff` says)
    /// on it.
    ///
    /// # Errors
    ///
    /// Creating the mapping or starting the server failed.
    pub fn start(handoff: Handoff, placement: &Placement) -> Result<Self, BenchError> {
        let (role, tag) = match handoff {
            Handoff::Spin => (Role::SpinServer, "spin"),
            Handoff::Futex => (Role::FutexServer, "futex"),
        };
        let map = SharedMapping::create(tag, FLOOR_MAPPING_LEN).map_err(BenchError::Mapping)?;
        let path =
            map.path().to_str().map(str::to_owned).ok_or_else(|| {
                BenchError::Config(format!("{} is not UTF-8", map.path().display()))
            })?;
        let (server, _) = PeerProcess::spawn(role, &[(SHM_ENV, path)], placement)?;
        Ok(FloorPeer {
            server,
            map,
            handoff,
        })
    }
}

impl Exchange for FloorClient<'_> {
    #[inline]
    fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError> {
        Ok(FloorClient::round_trip(self, msg, reply))
    }
}

impl RoundTrip for FloorPeer {
    fn with_exchange<D: Driver>(&mut self, driver: D) -> D::Output {
        // A client per loop: it continues from the sequence number the last one left. The
        // mapping was created with FLOOR_MAPPING_LEN bytes, so this cannot fail.
        match FloorClient::new(&self.map, self.handoff) {
            Ok(mut client) => driver.drive(&mut client),
            Err(e) => driver.drive(&mut Failed(e.to_string())),
        }
    }

    fn resources(&self) -> (Vec<u32>, Vec<PathBuf>) {
        (vec![self.server.pid()], vec![self.map.path().to_owned()])
    }

    fn stop(self) -> Result<(), BenchError> {
        FloorClient::new(&self.map, self.handoff)
            .map_err(BenchError::Mapping)?
            .stop();
        self.server.wait_exit(STOP_TIMEOUT)
    }
}

/// An exchange that could not be set up: every round trip fails with the reason.
pub(crate) struct Failed(pub(crate) String);

impl Exchange for Failed {
    fn round_trip(&mut self, _: &[u8], _: &mut [u8]) -> Result<usize, BenchError> {
        Err(BenchError::Exchange(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes, or answers wrongly from round trip `bad_from` on.
    struct Echo {
        calls: u64,
        bad_from: u64,
    }

    impl Exchange for Echo {
        fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError> {
            reply[..msg.len()].copy_from_slice(msg);
            self.calls += 1;
            if self.calls > self.bad_from && !msg.is_empty() {
                reply[0] ^= 1;
            }
            Ok(msg.len())
        }
    }

    #[test]
    fn a_timed_loop_accepts_echoes_of_every_size_including_empty() {
        for len in [0, 1, 8, 300] {
            let mut e = Echo {
                calls: 0,
                bad_from: u64::MAX,
            };
            assert!(Timed { iters: 5, len }.drive(&mut e).is_ok(), "{len} bytes");
            assert_eq!(e.calls, 5);
        }
    }

    #[test]
    fn a_reply_that_is_no_echo_is_an_error_not_a_number() {
        let mut e = Echo {
            calls: 0,
            bad_from: 3,
        };
        let r = Timed { iters: 10, len: 8 }.drive(&mut e);
        assert!(matches!(r, Err(BenchError::Exchange(_))), "{r:?}");
        assert_eq!(e.calls, 4);
    }

    #[test]
    fn sampling_stops_at_the_sample_cap() {
        let mut out = Vec::new();
        let mut e = Echo {
            calls: 0,
            bad_from: u64::MAX,
        };
        Sampled {
            len: 8,
            warm_up: Duration::ZERO,
            budget: Duration::from_secs(10),
            max: 100,
            out: &mut out,
        }
        .drive(&mut e)
        .unwrap();
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn parts_cover_the_payload_without_gaps() {
        for len in [0, 2, 8, 4096, 1001] {
            assert_eq!(part_start(len, 4, 0), 0);
            assert_eq!(part_start(len, 4, 4), len);
            assert!((0..4).all(|k| part_start(len, 4, k) <= part_start(len, 4, k + 1)));
        }
    }
}
