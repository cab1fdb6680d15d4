//! The peer programs: a bench binary (or the report) started with [`ROLE_ENV`] set runs one of
//! these instead of the benchmarks. Call [`dispatch`] first thing in `main`.
//!
//! Every role first arms `PR_SET_PDEATHSIG` (so it dies with the bench), pins itself to the CPU
//! in [`CPU_ENV`] if one is given, then prints one line on stdout when it is ready to serve
//! (`ready ...`), and serves until told to stop or killed.

use crate::error::{kernel, BenchError};
use crate::floor::{self, Handoff, SharedMapping, FLOOR_MAPPING_LEN};
use crate::rtt::STOP_MESSAGE;
use kernel_sim::{iomsg, ChannelWait, Chid, Errno, Received, System, SystemBuilder};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Selects the role (see [`Role`]).
pub const ROLE_ENV: &str = "QSIM_BENCH_ROLE";
/// The kernel-sim system a `kernel-server` attaches to.
pub const SYSTEM_ENV: &str = "QSIM_BENCH_SYSTEM";
/// The wait mode of the `kernel-server`'s channel: `system` (the system's default, adaptive) or
/// `blocking`.
pub const WAIT_ENV: &str = "QSIM_BENCH_WAIT";
/// The floor mapping a `spin-server` or `futex-server` opens.
pub const SHM_ENV: &str = "QSIM_BENCH_SHM";
/// Set (to anything): the `kernel-server` receives messages but never replies, so its clients
/// stay REPLY-blocked (the death-detection benchmark kills it then).
pub const HOLD_ENV: &str = "QSIM_BENCH_HOLD";
/// Set: the `kernel-server` also registers its channel under this name (`name_attach`), answers
/// the `_IO_CONNECT` of `name_open`, and adds to its ready line the shared monotonic clock
/// ([`floor::os::monotonic_ns`]) the instant the name was attached: `ready <pid> <chid> <ns>`.
/// The HA rows' server ([`crate::ha`]).
pub const NAME_ENV: &str = "QSIM_BENCH_NAME";
/// The CPU a peer pins itself to (unset: not pinned).
pub const CPU_ENV: &str = "QSIM_BENCH_CPU";
/// The bench's pid, to check that the parent-death signal was armed in time.
pub const PARENT_ENV: &str = "QSIM_BENCH_PARENT";
/// How many threads of a `kernel-server` receive on its channel (default 1, at most
/// [`MAX_RECEIVERS`]).
pub const RECEIVERS_ENV: &str = "QSIM_BENCH_RECEIVERS";
/// Nanoseconds of CPU work (a busy loop against the clock) a `kernel-server` does per request
/// before replying (default 0, at most [`MAX_WORK_NS`]).
pub const WORK_ENV: &str = "QSIM_BENCH_WORK_NS";
/// Most receiving threads of a `kernel-server`.
pub const MAX_RECEIVERS: u32 = 8;
/// Most work per request of a `kernel-server`: 10 ms.
pub const MAX_WORK_NS: u64 = 10_000_000;

/// A peer program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Attaches to a kernel-sim system, creates a channel, echoes every message.
    KernelServer,
    /// Echoes on a floor mapping, spinning.
    SpinServer,
    /// Echoes on a floor mapping, sleeping on a shared futex.
    FutexServer,
    /// Echoes on inherited pipes or a Unix socket (see [`crate::peers`]).
    StreamServer,
    /// Echoes iceoryx2 requests, polling (see [`crate::iox`]).
    IceoryxServer,
    /// Sends to a `kernel-server` as fast as it can and counts (see [`crate::throughput`]).
    ThroughputClient,
    /// Receives guaranteed deliveries on a name and records them (see [`crate::gmd`]).
    GmdServer,
}

const ROLES: [Role; 7] = [
    Role::KernelServer,
    Role::SpinServer,
    Role::FutexServer,
    Role::StreamServer,
    Role::IceoryxServer,
    Role::ThroughputClient,
    Role::GmdServer,
];

impl Role {
    /// The value of [`ROLE_ENV`] that selects this role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::KernelServer => "kernel-server",
            Role::SpinServer => "spin-server",
            Role::FutexServer => "futex-server",
            Role::StreamServer => "stream-server",
            Role::IceoryxServer => "iceoryx2-server",
            Role::ThroughputClient => "throughput-client",
            Role::GmdServer => "gmd-server",
        }
    }

    /// The role [`ROLE_ENV`]'s value `s` selects.
    pub fn parse(s: &str) -> Option<Role> {
        ROLES.into_iter().find(|r| r.as_str() == s)
    }
}

/// If [`ROLE_ENV`] is set, runs that role and returns the process's exit code (0: stopped when
/// asked; 1: failed; 2: unknown role); otherwise returns `None` at once.
pub fn dispatch() -> Option<i32> {
    let value = std::env::var_os(ROLE_ENV)?;
    let Some(role) = value.to_str().and_then(Role::parse) else {
        eprintln!("{ROLE_ENV}={value:?} names no role");
        return Some(2);
    };
    Some(match run(role) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{} (pid {}): {e}", role.as_str(), std::process::id());
            1
        }
    })
}

fn run(role: Role) -> Result<(), BenchError> {
    if let Some(parent) = env_opt(PARENT_ENV)? {
        let parent = parent
            .parse()
            .map_err(|_| BenchError::Config(format!("{PARENT_ENV}={parent:?}")))?;
        floor::os::die_with_parent(parent)
            .map_err(|e| BenchError::Config(format!("parent-death signal: {e}")))?;
    }
    if let Some(cpu) = env_opt(CPU_ENV)? {
        let cpu = cpu
            .parse()
            .map_err(|_| BenchError::Config(format!("{CPU_ENV}={cpu:?}")))?;
        if let Err(e) = floor::os::pin_current_thread(cpu) {
            eprintln!(
                "{}: cannot pin to CPU {cpu} ({e}); running unpinned",
                role.as_str()
            );
        }
    }
    match role {
        Role::KernelServer => kernel_server(),
        Role::SpinServer => floor_server(Handoff::Spin),
        Role::FutexServer => floor_server(Handoff::Futex),
        Role::StreamServer => crate::peers::serve_from_env(),
        Role::IceoryxServer => crate::iox::serve_from_env(),
        Role::ThroughputClient => crate::throughput::client_from_env(),
        Role::GmdServer => crate::gmd::serve_from_env(),
    }
}

pub(crate) fn env_opt(key: &str) -> Result<Option<String>, BenchError> {
    match std::env::var(key) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(BenchError::Config(format!("{key}: {e}"))),
    }
}

pub(crate) fn env_required(key: &str) -> Result<String, BenchError> {
    env_opt(key)?.ok_or_else(|| BenchError::Config(format!("{key} is not set")))
}

/// The number in `key`, `default` if unset; an error if it is malformed or outside `range`.
pub(crate) fn env_number<T>(
    key: &str,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T, BenchError>
where
    T: FromStr + PartialOrd + std::fmt::Display,
{
    let Some(v) = env_opt(key)? else {
        return Ok(default);
    };
    match v.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(BenchError::Config(format!(
            "{key}={v:?} is not a number in {}..={}",
            range.start(),
            range.end()
        ))),
    }
}

pub(crate) fn say_ready(rest: std::fmt::Arguments<'_>) -> Result<(), BenchError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {rest}")
        .and_then(|()| out.flush())
        .map_err(|e| BenchError::Config(format!("writing the ready line: {e}")))
}

/// Burns `work` of CPU time in a busy loop measured against the clock (never sleeping), as a
/// server that computes something per request would.
pub fn busy_for(work: Duration) {
    if work.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < work {
        std::hint::spin_loop();
    }
}

/// How long a restarted server retries a name its killed predecessor still holds (the kernel
/// reaps a dead holder on the spot, but SIGKILL takes a moment to make a process dead).
const NAME_RETRY: Duration = Duration::from_secs(2);

/// Registers `chid` as `name`, retrying while a dying predecessor holds it; returns the shared
/// clock the instant the name was attached.
fn attach_name(sys: &System, chid: Chid, name: &str) -> Result<u64, BenchError> {
    let start = Instant::now();
    loop {
        match sys.name_attach_on(chid, name) {
            Ok(_) => return Ok(floor::os::monotonic_ns()),
            Err(Errno::EXIST) if start.elapsed() < NAME_RETRY => {
                std::thread::sleep(Duration::from_micros(20));
            }
            Err(e) => return Err(kernel("name_attach")(e)),
        }
    }
}

/// Whether `msg` is a `name_open`'s `_IO_CONNECT`. No bench payload can pass for one: it needs
/// the 40-byte header, and the payloads of the named server's clients are 8 bytes.
fn is_io_connect(msg: &[u8]) -> bool {
    msg.len() >= iomsg::IoConnect::HEADER && iomsg::msg_type(msg) == Some(iomsg::IO_CONNECT)
}

/// Prints `ready <pid> <chid>` (with [`NAME_ENV`]: `ready <pid> <chid> <attached ns>`), then
/// replies to every message with its own bytes, from [`RECEIVERS_ENV`] threads, each after
/// [`WORK_ENV`] of CPU work; a message equal to [`STOP_MESSAGE`] is answered and ends the thread
/// that received it (so stopping takes one per thread). Pulses are ignored.
fn kernel_server() -> Result<(), BenchError> {
    let name = env_required(SYSTEM_ENV)?;
    let wait = match env_required(WAIT_ENV)?.as_str() {
        "system" => ChannelWait::System,
        "blocking" => ChannelWait::Blocking,
        other => return Err(BenchError::Config(format!("{WAIT_ENV}={other:?}"))),
    };
    let receivers = env_number(RECEIVERS_ENV, 1, 1..=MAX_RECEIVERS)?;
    let work = Duration::from_nanos(env_number(WORK_ENV, 0, 0..=MAX_WORK_NS)?);
    let hold = env_opt(HOLD_ENV)?.is_some();
    // The bench created the system; attach with whatever limits it chose.
    let sys = SystemBuilder::new().name(name).attach()?;
    let chid = sys
        .channel_create_with(0, wait)
        .map_err(kernel("channel_create"))?;
    // A plain channel of the same wait mode as the unnamed server's, so a named server differs
    // from it only by the name.
    let named = match env_opt(NAME_ENV)? {
        Some(name) => {
            let attached = attach_name(&sys, chid, &name)?;
            say_ready(format_args!("{} {} {attached}", std::process::id(), chid.0))?;
            true
        }
        None => {
            say_ready(format_args!("{} {}", std::process::id(), chid.0))?;
            false
        }
    };
    let serve = Serve { hold, work, named };
    let others: Vec<_> = (1..receivers)
        .map(|_| {
            let sys = sys.clone();
            std::thread::spawn(move || echo_messages(&sys, chid, serve))
        })
        .collect();
    let mut result = echo_messages(&sys, chid, serve);
    for t in others {
        let r = t
            .join()
            .unwrap_or_else(|_| Err(BenchError::Config("a receiving thread panicked".into())));
        result = result.and(r);
    }
    sys.channel_destroy(chid)
        .map_err(kernel("channel_destroy"))?;
    result
}

/// How a `kernel-server` thread serves.
#[derive(Clone, Copy, Debug)]
struct Serve {
    /// Receive messages but never reply.
    hold: bool,
    /// CPU work per request.
    work: Duration,
    /// Answer `_IO_CONNECT` (the server attached a name).
    named: bool,
}

/// One receiving thread of a `kernel-server`.
fn echo_messages(sys: &System, chid: Chid, serve: Serve) -> Result<(), BenchError> {
    let Serve { hold, work, named } = serve;
    let mut buf = vec![0u8; sys.limits().max_msg_size as usize];
    loop {
        match sys
            .msg_receive(chid, &mut buf)
            .map_err(kernel("msg_receive"))?
        {
            // A holding server still lets clients open its name, so they can block on it.
            Received::Message { rcvid, info }
                if named && is_io_connect(&buf[..info_len(&info, &buf)]) =>
            {
                sys.msg_reply(rcvid, 0, &[]).map_err(kernel("msg_reply"))?;
            }
            Received::Message { .. } if hold => {}
            Received::Message { rcvid, info } => {
                let n = info_len(&info, &buf);
                let msg = &buf[..n];
                if msg == STOP_MESSAGE {
                    sys.msg_reply(rcvid, 0, msg).map_err(kernel("msg_reply"))?;
                    return Ok(());
                }
                busy_for(work);
                sys.msg_reply(rcvid, 0, msg).map_err(kernel("msg_reply"))?;
            }
            Received::Pulse(_) => {}
        }
    }
}

/// The received length of a message: what its info says, at most what the buffer holds.
fn info_len(info: &kernel_sim::MsgInfo, buf: &[u8]) -> usize {
    (info.msglen as usize).min(buf.len())
}

/// Prints `ready <pid>` once it has read the mapping's state, then echoes until the client sends
/// stop.
fn floor_server(handoff: Handoff) -> Result<(), BenchError> {
    let path = env_required(SHM_ENV)?;
    let map =
        SharedMapping::open(Path::new(&path), FLOOR_MAPPING_LEN).map_err(BenchError::Mapping)?;
    floor::serve(&map, handoff, || {
        say_ready(format_args!("{}", std::process::id())).map_err(std::io::Error::other)
    })
    .map_err(BenchError::Mapping)?;
    Ok(())
}
