//! The peer programs: a bench binary started with [`ROLE_ENV`] set runs one of these instead of
//! the benchmarks. Call [`dispatch`] first thing in `main`.
//!
//! Every role first arms `PR_SET_PDEATHSIG` (so it dies with the bench), pins itself to the CPU
//! in [`CPU_ENV`] if one is given, then prints one line on stdout when it is ready to serve
//! (`ready ...`), and serves until told to stop or killed.

use crate::error::{kernel, BenchError};
use crate::floor::{self, Handoff, SharedMapping, FLOOR_MAPPING_LEN};
use crate::rtt::{bench_limits, STOP_MESSAGE};
use kernel_sim::{ChannelWait, Received, SystemBuilder};
use std::io::Write;
use std::path::Path;

/// Selects the role: `kernel-server`, `spin-server` or `futex-server`.
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
/// The CPU a peer pins itself to (unset: not pinned).
pub const CPU_ENV: &str = "QSIM_BENCH_CPU";
/// The bench's pid, to check that the parent-death signal was armed in time.
pub const PARENT_ENV: &str = "QSIM_BENCH_PARENT";

/// A peer program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Attaches to a kernel-sim system, creates a channel, echoes every message.
    KernelServer,
    /// Echoes on a floor mapping, spinning.
    SpinServer,
    /// Echoes on a floor mapping, sleeping on a shared futex.
    FutexServer,
}

impl Role {
    /// The value of [`ROLE_ENV`] that selects this role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::KernelServer => "kernel-server",
            Role::SpinServer => "spin-server",
            Role::FutexServer => "futex-server",
        }
    }

    /// The role [`ROLE_ENV`]'s value `s` selects.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::KernelServer, Role::SpinServer, Role::FutexServer]
            .into_iter()
            .find(|r| r.as_str() == s)
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
    }
}

fn env_opt(key: &str) -> Result<Option<String>, BenchError> {
    match std::env::var(key) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(BenchError::Config(format!("{key}: {e}"))),
    }
}

fn env_required(key: &str) -> Result<String, BenchError> {
    env_opt(key)?.ok_or_else(|| BenchError::Config(format!("{key} is not set")))
}

fn say_ready(rest: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {rest}")?;
    out.flush()
}

/// Prints `ready <pid> <chid>`, then replies to every message with its own bytes; a message equal
/// to [`STOP_MESSAGE`] is answered and ends the loop. Pulses are ignored.
fn kernel_server() -> Result<(), BenchError> {
    let name = env_required(SYSTEM_ENV)?;
    let wait = match env_required(WAIT_ENV)?.as_str() {
        "system" => ChannelWait::System,
        "blocking" => ChannelWait::Blocking,
        other => return Err(BenchError::Config(format!("{WAIT_ENV}={other:?}"))),
    };
    let sys = SystemBuilder::new()
        .name(name)
        .limits(bench_limits())
        .attach()?;
    let chid = sys
        .channel_create_with(0, wait)
        .map_err(kernel("channel_create"))?;
    say_ready(format_args!("{} {}", std::process::id(), chid.0))
        .map_err(|e| BenchError::Config(format!("writing the ready line: {e}")))?;
    let mut buf = vec![0u8; bench_limits().max_msg_size as usize];
    let hold = env_opt(HOLD_ENV)?.is_some();
    loop {
        match sys
            .msg_receive(chid, &mut buf)
            .map_err(kernel("msg_receive"))?
        {
            Received::Message { .. } if hold => {}
            Received::Message { rcvid, info } => {
                let n = (info.msglen as usize).min(buf.len());
                let msg = &buf[..n];
                sys.msg_reply(rcvid, 0, msg).map_err(kernel("msg_reply"))?;
                if msg == STOP_MESSAGE {
                    break;
                }
            }
            Received::Pulse(_) => {}
        }
    }
    sys.channel_destroy(chid)
        .map_err(kernel("channel_destroy"))?;
    Ok(())
}

/// Prints `ready <pid>` once it has read the mapping's state, then echoes until the client sends
/// stop.
fn floor_server(handoff: Handoff) -> Result<(), BenchError> {
    let path = env_required(SHM_ENV)?;
    let map =
        SharedMapping::open(Path::new(&path), FLOOR_MAPPING_LEN).map_err(BenchError::Mapping)?;
    floor::serve(&map, handoff, || {
        say_ready(format_args!("{}", std::process::id()))
    })
    .map_err(BenchError::Mapping)?;
    Ok(())
}
