//! Round-trip clients: each starts its peer process, connects, times a batch of round trips and
//! stops the peer. Setup and teardown stay outside [`RoundTrip::time_round_trips`], so a
//! criterion `iter_custom` times nothing but the round trips.

use crate::error::{kernel, BenchError};
use crate::floor::{FloorClient, Handoff, SharedMapping, FLOOR_MAPPING_LEN};
use crate::process::{PeerProcess, Placement};
use crate::role::{Role, SHM_ENV, SYSTEM_ENV, WAIT_ENV};
use kernel_sim::{ChannelWait, Chid, Coid, Limits, Pid, System, SystemBuilder};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The message that makes a `kernel-server` reply and exit. Its length (15) differs from every
/// payload the benches send, so no payload can be mistaken for it.
pub const STOP_MESSAGE: &[u8] = b"qsim-bench-stop";

/// How long a peer may take to exit once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits of every bench system: small, so the arena is small, and enough for the bench
/// process, one server and a spare.
pub fn bench_limits() -> Limits {
    Limits {
        max_processes: 4,
        threads_per_process: 4,
        max_msg_size: 64 * 1024,
        ..Default::default()
    }
}

/// Something that can time round trips to an echo peer.
pub trait RoundTrip {
    /// Does `iters` round trips of `len`-byte payloads (`len` >= 8: the first 8 bytes carry the
    /// iteration number, and each reply is checked to echo it) and returns the time they took.
    ///
    /// # Panics
    ///
    /// If a round trip fails or a reply is not the echo of its request: a bench must not report
    /// a number for a broken exchange.
    fn time_round_trips(&mut self, iters: u64, len: usize) -> Duration;

    /// The peer's pid and the shared-memory files of this setup, for a watchdog.
    fn resources(&self) -> (Vec<u32>, Vec<PathBuf>);

    /// Asks the peer to exit and waits for it; frees everything.
    ///
    /// # Errors
    ///
    /// The peer refused to stop or exited with a failure (it is killed either way).
    fn stop(self) -> Result<(), BenchError>;
}

/// Times `iters` calls of `one(msg, reply) -> reply length` with checked echoes.
fn timed_loop(iters: u64, len: usize, mut one: impl FnMut(&[u8], &mut [u8]) -> usize) -> Duration {
    assert!(len >= 8, "payloads carry an 8-byte iteration number");
    let mut msg = vec![0xA5u8; len];
    let mut reply = vec![0u8; len];
    let start = Instant::now();
    for i in 0..iters {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        let n = one(&msg, &mut reply);
        if n != len || reply[..8] != msg[..8] {
            panic!(
                "round trip {i}: reply of {n} bytes starting {:02x?} is no echo of the request",
                &reply[..8.min(n)]
            );
        }
    }
    start.elapsed()
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

/// A kernel-sim echo server in its own process, and this process's connection to it.
pub struct KernelPeer {
    // Dropped in this order: our registration, then the server, then the arena file.
    sys: System,
    coid: Coid,
    server: PeerProcess,
    arena: ArenaGuard,
}

impl KernelPeer {
    /// Creates system `qsimtest-bench-<pid>-<tag>` (default wait mode: adaptive), starts a
    /// `kernel-server` on it whose channel waits as `wait` says, and connects to its channel.
    ///
    /// # Errors
    ///
    /// Creating the system, starting the server, or `connect_attach` failed.
    pub fn start(tag: &str, wait: ChannelWait, placement: &Placement) -> Result<Self, BenchError> {
        let arena = ArenaGuard::new(format!(
            "{}{}-{tag}",
            crate::floor::SHM_PREFIX,
            std::process::id()
        ));
        let sys = SystemBuilder::new()
            .name(arena.name())
            .limits(bench_limits())
            .create()?;
        let wait_name = match wait {
            ChannelWait::System => "system",
            ChannelWait::Blocking => "blocking",
        };
        let (server, ready) = PeerProcess::spawn(
            Role::KernelServer,
            &[
                (SYSTEM_ENV, arena.name().to_owned()),
                (WAIT_ENV, wait_name.to_owned()),
            ],
            placement,
        )?;
        let bad_line = || BenchError::NotReady {
            role: Role::KernelServer.as_str(),
            detail: format!("ready line {ready:?} is not `<pid> <chid>`"),
        };
        let mut words = ready.split_ascii_whitespace().map(str::parse::<i32>);
        let (Some(Ok(pid)), Some(Ok(chid)), None) = (words.next(), words.next(), words.next())
        else {
            return Err(bad_line());
        };
        let coid = sys
            .connect_attach(0, Pid(pid), Chid(chid), 0, 0)
            .map_err(kernel("connect_attach"))?;
        Ok(KernelPeer {
            sys,
            coid,
            server,
            arena,
        })
    }
}

impl RoundTrip for KernelPeer {
    fn time_round_trips(&mut self, iters: u64, len: usize) -> Duration {
        let (sys, coid) = (&self.sys, self.coid);
        timed_loop(iters, len, |msg, reply| {
            match sys.msg_send(coid, msg, reply) {
                Ok(0) => msg.len().min(reply.len()),
                Ok(status) => panic!("msg_send: the server replied with status {status}"),
                Err(e) => panic!("msg_send failed: {e}"),
            }
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

impl RoundTrip for FloorPeer {
    fn time_round_trips(&mut self, iters: u64, len: usize) -> Duration {
        // A client per batch: it continues from the sequence number the last one left.
        let mut client = FloorClient::new(&self.map, self.handoff)
            .unwrap_or_else(|e| panic!("floor mapping: {e}"));
        timed_loop(iters, len, |msg, reply| client.round_trip(msg, reply))
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
