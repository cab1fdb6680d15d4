//! Does the adaptive mode sleep once its spin budget is spent? A `kernel-server` in the default
//! (adaptive) mode holds one message without replying and goes back to `msg_receive`, idle; this
//! process's client thread waits REPLY-blocked on it. Both are watched for a while through their
//! threads' CPU time (`/proc/.../schedstat`, nanoseconds on a CPU); then the server is killed and
//! the client wakes with `ESRCH`.

use crate::error::{kernel, BenchError};
use crate::process::{PeerProcess, Placement};
use crate::role::{Role, HOLD_ENV, SYSTEM_ENV, WAIT_ENV};
use crate::rtt::{bench_limits, parse_server_line, ArenaGuard};
use kernel_sim::SystemBuilder;
use std::time::{Duration, Instant};

/// CPU used while idle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleCpu {
    /// How long both were watched.
    pub watched: Duration,
    /// CPU time of the server's receiving thread over that time, ns.
    pub server_ns: u64,
    /// CPU time of the client thread while REPLY-blocked (from its send to its `ESRCH`), ns.
    pub client_ns: u64,
    /// How long the client was blocked.
    pub client_blocked: Duration,
}

/// The first field of a `schedstat` file: nanoseconds spent on a CPU.
fn cpu_ns(path: &str) -> Result<u64, BenchError> {
    let text = std::fs::read_to_string(path).map_err(crate::error::io("read schedstat"))?;
    text.split_ascii_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| BenchError::Config(format!("{path}: {text:?}")))
}

/// Watches an idle adaptive server and a REPLY-blocked client for `watch`, placed `apart`
/// (`placement` already applied to this thread).
///
/// # Errors
///
/// Setup failed, the client did not end with `ESRCH`, or schedstat was unreadable.
pub fn measure(watch: Duration, placement: &Placement) -> Result<IdleCpu, BenchError> {
    let arena = ArenaGuard::unique("idle");
    let sys = SystemBuilder::new()
        .name(arena.name())
        .limits(bench_limits())
        .create()?;
    let (server, ready) = PeerProcess::spawn(
        Role::KernelServer,
        &[
            (SYSTEM_ENV, arena.name().to_owned()),
            (WAIT_ENV, "system".to_owned()),
            (HOLD_ENV, "1".to_owned()),
        ],
        placement,
    )?;
    let (pid, chid) = parse_server_line(&ready)?;
    let coid = sys
        .connect_attach(0, pid, chid, 0, 0)
        .map_err(kernel("connect_attach"))?;
    let client = {
        let sys = sys.clone();
        std::thread::spawn(move || {
            let before = cpu_ns("/proc/thread-self/schedstat");
            let t0 = Instant::now();
            let sent = sys.msg_send(coid, b"held", &mut []);
            let blocked = t0.elapsed();
            let after = cpu_ns("/proc/thread-self/schedstat");
            (before, after, blocked, sent)
        })
    };
    // Let both settle into their waits (past any spin budget), then watch the server.
    std::thread::sleep(Duration::from_millis(50));
    let server_stat = format!("/proc/{}/schedstat", server.pid());
    let s0 = cpu_ns(&server_stat)?;
    std::thread::sleep(watch);
    let s1 = cpu_ns(&server_stat)?;
    crate::floor::os::sigkill(server.pid());
    let (before, after, blocked, sent) = client
        .join()
        .map_err(|_| BenchError::Config("the client thread panicked".into()))?;
    drop(server);
    drop(sys);
    drop(arena);
    if sent != Err(kernel_sim::Errno::SRCH) {
        return Err(BenchError::Exchange(format!(
            "the held send ended with {sent:?}, not ESRCH"
        )));
    }
    Ok(IdleCpu {
        watched: watch,
        server_ns: s1.saturating_sub(s0),
        client_ns: after?.saturating_sub(before?),
        client_blocked: blocked,
    })
}
