//! Throughput: several client processes send 8-byte messages as fast as they can to one
//! `kernel-server` with one or more receiving threads, each request costing the server a fixed
//! amount of CPU work (a busy loop against the clock, not a sleep, so a second receiving thread
//! has work to share). Clients count their completed round trips in a shared
//! [`Counters`] mapping; the bench reads the sum once per window and
//! records nanoseconds per completed round trip, all clients together.
//!
//! Everything runs unpinned (placement `none`): the scheduler spreads the processes.

use crate::error::{kernel, BenchError};
use crate::floor::counters::{self, Counters, MAX_COUNTERS};
use crate::peers::LEN_ENV;
use crate::process::{PeerProcess, Placement};
use crate::role::{
    env_number, env_required, say_ready, Role, MAX_RECEIVERS, RECEIVERS_ENV, SYSTEM_ENV, WAIT_ENV,
    WORK_ENV,
};
use crate::rtt::{
    bench_limits, check_echo, parse_server_line, stamp, wait_name, ArenaGuard, STOP_MESSAGE,
    STOP_TIMEOUT,
};
use kernel_sim::{ChannelWait, Chid, Coid, Limits, Pid, System, SystemBuilder};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The server a `throughput-client` sends to: `<pid> <chid>`.
pub const SERVER_ENV: &str = "QSIM_BENCH_SERVER";
/// A `throughput-client`'s counter: `<path> <index> <count>`.
pub const COUNTERS_ENV: &str = "QSIM_BENCH_COUNTERS";

/// One throughput configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThroughputCase {
    /// The server channel's wait mode.
    pub wait: ChannelWait,
    /// Client processes.
    pub clients: usize,
    /// Receiving threads in the server.
    pub receivers: u32,
    /// CPU work per request in the server.
    pub work: Duration,
    /// Payload bytes each way.
    pub payload: usize,
}

impl ThroughputCase {
    /// `throughput_<mode>_c<clients>_r<receivers>`, mode `adaptive` or `blocking`.
    pub fn name(&self) -> String {
        let mode = match self.wait {
            ChannelWait::System => "adaptive",
            ChannelWait::Blocking => "blocking",
        };
        format!("throughput_{mode}_c{}_r{}", self.clients, self.receivers)
    }
}

/// A server, its clients and their counters, ready to run.
pub struct ThroughputRig {
    // Dropped in this order: clients and server are killed if still running, then the files go.
    clients: Vec<PeerProcess>,
    sys: System,
    coid: Coid,
    receivers: u32,
    server: PeerProcess,
    counters: Counters,
    arena: ArenaGuard,
}

impl ThroughputRig {
    /// Creates a system, starts the server and the clients (they connect, then wait for the
    /// start signal).
    ///
    /// # Errors
    ///
    /// A bad case (no clients, more than 64, more receivers than a server runs), or setting up
    /// the system, the counters or a process failed.
    pub fn start(case: &ThroughputCase, placement: &Placement) -> Result<Self, BenchError> {
        if case.clients == 0 || case.clients > MAX_COUNTERS {
            return Err(BenchError::Config(format!("{} clients", case.clients)));
        }
        if case.receivers == 0 || case.receivers > MAX_RECEIVERS {
            return Err(BenchError::Config(format!("{} receivers", case.receivers)));
        }
        let arena = ArenaGuard::unique("throughput");
        let limits = Limits {
            // This process, the server, the clients and a spare.
            max_processes: case.clients as u32 + 3,
            threads_per_process: case.receivers + 2,
            ..bench_limits()
        };
        let sys = SystemBuilder::new()
            .name(arena.name())
            .limits(limits)
            .create()?;
        let (server, ready) = PeerProcess::spawn(
            Role::KernelServer,
            &[
                (SYSTEM_ENV, arena.name().to_owned()),
                (WAIT_ENV, wait_name(case.wait).to_owned()),
                (RECEIVERS_ENV, case.receivers.to_string()),
                (WORK_ENV, case.work.as_nanos().to_string()),
            ],
            placement,
        )?;
        let (pid, chid) = parse_server_line(&ready)?;
        let coid = sys
            .connect_attach(0, pid, chid, 0, 0)
            .map_err(kernel("connect_attach"))?;
        let counters = Counters::create(case.clients).map_err(BenchError::Mapping)?;
        let path = counters
            .path()
            .to_str()
            .ok_or_else(|| BenchError::Config("counters path is not UTF-8".into()))?
            .to_owned();
        let mut clients = Vec::with_capacity(case.clients);
        for i in 0..case.clients {
            let (client, _) = PeerProcess::spawn(
                Role::ThroughputClient,
                &[
                    (SYSTEM_ENV, arena.name().to_owned()),
                    (SERVER_ENV, ready.clone()),
                    (COUNTERS_ENV, format!("{path} {i} {}", case.clients)),
                    (LEN_ENV, case.payload.to_string()),
                ],
                placement,
            )?;
            clients.push(client);
        }
        Ok(ThroughputRig {
            clients,
            sys,
            coid,
            receivers: case.receivers,
            server,
            counters,
            arena,
        })
    }

    /// The processes and files of this rig, for a watchdog.
    pub fn resources(&self) -> (Vec<u32>, Vec<PathBuf>) {
        let mut pids: Vec<u32> = self.clients.iter().map(PeerProcess::pid).collect();
        pids.push(self.server.pid());
        (
            pids,
            vec![
                kernel_sim::system_path(self.arena.name()),
                self.counters.path().to_owned(),
            ],
        )
    }

    /// Starts the clients, lets them run for `warm_up`, then for `budget` records, once per
    /// `window`, the nanoseconds per completed round trip (all clients together) of that window;
    /// a window in which none completed counts as one round trip (a lower bound).
    pub fn measure(&mut self, warm_up: Duration, budget: Duration, window: Duration) -> Vec<f64> {
        let mut out = Vec::new();
        self.counters.set_control(counters::RUN);
        std::thread::sleep(warm_up);
        let mut t0 = Instant::now();
        let mut c0 = self.counters.total();
        let end = t0 + budget;
        loop {
            std::thread::sleep(window);
            let (t1, c1) = (Instant::now(), self.counters.total());
            let done = c1.wrapping_sub(c0);
            let ns = (t1 - t0).as_nanos();
            out.push(ns as f64 / done.max(1) as f64);
            (t0, c0) = (t1, c1);
            if t1 >= end {
                return out;
            }
        }
    }

    /// Stops the clients (each finishes its round trip and exits), then every receiving thread
    /// of the server, and waits for all of them.
    ///
    /// # Errors
    ///
    /// A client or the server failed or did not exit (all are killed either way).
    pub fn stop(self) -> Result<(), BenchError> {
        let ThroughputRig {
            clients,
            sys,
            coid,
            receivers,
            server,
            counters,
            arena,
        } = self;
        counters.set_control(counters::STOP);
        let mut result = Ok(());
        for c in clients {
            result = result.and(c.wait_exit(STOP_TIMEOUT));
        }
        for _ in 0..receivers {
            if let Err(errno) = sys.msg_send(coid, STOP_MESSAGE, &mut []) {
                result = result.and(Err(BenchError::Kernel {
                    call: "msg_send(stop)",
                    errno,
                }));
                break;
            }
        }
        let _ = sys.connect_detach(coid);
        drop(sys);
        result = result.and(server.wait_exit(STOP_TIMEOUT));
        drop(counters);
        drop(arena);
        result
    }
}

/// The `throughput-client` role: attaches, connects to [`SERVER_ENV`], prints `ready <pid>`,
/// waits for the start signal, then sends and counts until told to stop.
pub(crate) fn client_from_env() -> Result<(), BenchError> {
    let name = env_required(SYSTEM_ENV)?;
    let (pid, chid): (Pid, Chid) = parse_server_line(&env_required(SERVER_ENV)?)?;
    let spec = env_required(COUNTERS_ENV)?;
    let bad = || BenchError::Config(format!("{COUNTERS_ENV}={spec:?}"));
    let words: Vec<&str> = spec.split_ascii_whitespace().collect();
    let &[path, index, count] = words.as_slice() else {
        return Err(bad());
    };
    let (index, count): (usize, usize) = (
        index.parse().map_err(|_| bad())?,
        count.parse().map_err(|_| bad())?,
    );
    if index >= count {
        return Err(bad());
    }
    let counters = Counters::open(Path::new(path), count).map_err(BenchError::Mapping)?;
    let len = env_number(LEN_ENV, 8, 0..=64 * 1024)?;
    let sys = SystemBuilder::new().name(name).attach()?;
    let coid = sys
        .connect_attach(0, pid, chid, 0, 0)
        .map_err(kernel("connect_attach"))?;
    say_ready(format_args!("{}", std::process::id()))?;
    while counters.control() == counters::IDLE {
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut msg = vec![0xA5u8; len];
    let mut reply = vec![0u8; len];
    let mut done = 0u64;
    while counters.control() == counters::RUN {
        stamp(&mut msg, done);
        match sys.msg_send(coid, &msg, &mut reply) {
            Ok(0) => {}
            Ok(status) => {
                return Err(BenchError::Exchange(format!(
                    "the server replied with status {status}"
                )))
            }
            Err(errno) => {
                return Err(BenchError::Kernel {
                    call: "msg_send",
                    errno,
                })
            }
        }
        check_echo(done, &msg, &reply, len)?;
        done += 1;
        counters.store(index, done);
    }
    let _ = sys.connect_detach(coid);
    Ok(())
}
