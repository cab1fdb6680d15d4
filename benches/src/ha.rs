//! The HA rows of issue 7: `ha_msg_send` (a round trip on a coid that ha-lib really recovers)
//! and the recovery rows (`recovery_detect`, `restart`, `recovery_total`).
//!
//! Both use a named `kernel-server` ([`NAME_ENV`]): the client finds it with `name_open`, and
//! its recovery function finds the restarted one with [`Ha::name_reopen`], which puts the new
//! connection back on the old coid. A server is killed with SIGKILL and a new one started at
//! once, as a supervisor would.
//!
//! - [`HaPeer`]: the client process installs ha-lib ([`Ha::install`]) and HA-attaches the coid;
//!   before any timing, [`HaPeer::start`] checks that the coid is HA-aware and forces one recovery
//!   (kill, restart, one send), which the coid's counters must show. Its round trips go through
//!   the `MsgSend` cover, [`Ha::msg_send`].
//! - [`recovery_cycle`]: a client thread blocks in a send that a holding server never answers;
//!   the server is killed and a normal one started. Three intervals from the kill, all on the
//!   monotonic clock every process shares ([`floor::os::monotonic_ns`]): to the recovery
//!   function's first instruction (it runs the moment the send's failure is seen), to the new
//!   server's name being attached (the server reports the instant), and to the send's return.

use crate::error::{kernel, BenchError};
use crate::floor;
use crate::process::{PeerProcess, Placement, Watchdog};
use crate::role::{Role, HOLD_ENV, NAME_ENV, SYSTEM_ENV, WAIT_ENV};
use crate::rtt::{bench_limits, ArenaGuard, Driver, Exchange, RoundTrip, STOP_TIMEOUT};
use crate::rtt::{check_echo, stamp, STOP_MESSAGE};
use ha_lib::{Counters, Ha};
use kernel_sim::kern::introspect::ThreadState;
use kernel_sim::{Chid, Coid, Pid, System, SystemBuilder};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name the HA rows' server attaches (each system has one such server at a time).
pub const SERVER_NAME: &str = "qsim-bench-echo";

/// Payload of the HA rows: 8 bytes, as the issue asks.
pub const HA_PAYLOAD: usize = 8;

/// How long a client may take to become REPLY-blocked on a holding server.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A recovery cycle taking this long is a hang (a normal one takes a few ms).
const CYCLE_LIMIT: Duration = Duration::from_secs(30);

/// Parses a named `kernel-server`'s ready line, `<pid> <chid> <attached ns>`.
fn parse_named_line(ready: &str) -> Result<(Pid, Chid, u64), BenchError> {
    let mut words = ready.split_ascii_whitespace();
    let mut next = || words.next().map(str::parse::<u64>);
    if let (Some(Ok(pid)), Some(Ok(chid)), Some(Ok(at)), None) = (next(), next(), next(), next()) {
        if let (Ok(pid), Ok(chid)) = (i32::try_from(pid), i32::try_from(chid)) {
            return Ok((Pid(pid), Chid(chid), at));
        }
    }
    Err(BenchError::NotReady {
        role: Role::KernelServer.as_str(),
        detail: format!("ready line {ready:?} is not `<pid> <chid> <attached ns>`"),
    })
}

/// Starts a named `kernel-server` on system `system` (holding every request if `hold`); returns
/// it and the shared clock when it attached the name.
fn spawn_named(
    system: &str,
    hold: bool,
    placement: &Placement,
) -> Result<(PeerProcess, u64), BenchError> {
    let mut env = vec![
        (SYSTEM_ENV, system.to_owned()),
        (WAIT_ENV, "system".to_owned()),
        (NAME_ENV, SERVER_NAME.to_owned()),
    ];
    if hold {
        env.push((HOLD_ENV, "1".to_owned()));
    }
    let (server, ready) = PeerProcess::spawn(Role::KernelServer, &env, placement)?;
    let (_, _, attached) = parse_named_line(&ready)?;
    Ok((server, attached))
}

/// Opens [`SERVER_NAME`] and HA-attaches the coid with a recovery function that reopens the
/// name (waiting for a restarted server); `on_recovery` runs first thing in the recovery
/// function, the moment the failure is seen.
fn open_ha(ha: &Ha, on_recovery: impl Fn() + Send + Sync + 'static) -> Result<Coid, BenchError> {
    let coid = ha
        .sys()
        .name_open(SERVER_NAME)
        .map_err(kernel("name_open"))?;
    ha.attach(
        coid,
        move |ha: &Ha, old: Coid, name: &&'static str| {
            on_recovery();
            ha.name_reopen(old, name)
        },
        SERVER_NAME,
        0,
    )
    .map_err(kernel("ha_attach"))?;
    if !ha.is_ha(coid) {
        return Err(BenchError::Exchange(format!(
            "coid {} is not HA-aware after ha_attach",
            coid.0
        )));
    }
    Ok(coid)
}

/// Checks that `coid`'s counters show at least one recovery and one retransmission.
fn check_recovered(ha: &Ha, coid: Coid) -> Result<Counters, BenchError> {
    let c = ha.counters(coid).ok_or_else(|| {
        BenchError::Exchange(format!("coid {} lost its HA state in recovery", coid.0))
    })?;
    if c.recoveries == 0 || c.retransmissions == 0 {
        return Err(BenchError::Exchange(format!(
            "the forced recovery does not show in coid {}'s counters: {c:?}",
            coid.0
        )));
    }
    Ok(c)
}

/// One checked 8-byte round trip through the `MsgSend` cover.
fn ha_round_trip(ha: &Ha, coid: Coid, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError> {
    match ha.msg_send(coid, msg, reply) {
        Ok(0) => Ok(msg.len()),
        Ok(status) => Err(BenchError::Exchange(format!(
            "the server replied with status {status}"
        ))),
        Err(errno) => Err(BenchError::Kernel {
            call: "ha_msg_send",
            errno,
        }),
    }
}

/// A named kernel-sim echo server in its own process, and this process's HA-attached coid to it,
/// already recovered once.
pub struct HaPeer {
    // Dropped in this order: ha-lib and our registration, then the server, then the arena file.
    ha: Ha,
    sys: System,
    coid: Coid,
    forced: Counters,
    server: PeerProcess,
    arena: ArenaGuard,
}

impl std::fmt::Debug for HaPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaPeer")
            .field("system", &self.arena.name())
            .field("coid", &self.coid)
            .field("server", &self.server.pid())
            .field("forced", &self.forced)
            .finish()
    }
}

impl HaPeer {
    /// Creates system `qsimtest-bench-<pid>-<tag>-<n>`, starts a named server (adaptive mode)
    /// placed as `placement` says, installs ha-lib in this process and HA-attaches a coid to the
    /// server; then kills the server (SIGKILL), starts another and sends once, so the coid is
    /// recovered once before any timing.
    ///
    /// # Errors
    ///
    /// Setup failed; the coid is not HA-aware; the forced recovery's send failed or did not show
    /// in the coid's counters (at least one recovery and one retransmission).
    pub fn start(tag: &str, placement: &Placement) -> Result<Self, BenchError> {
        let arena = ArenaGuard::unique(tag);
        let sys = SystemBuilder::new()
            .name(arena.name())
            .limits(bench_limits())
            .create()?;
        let (first, _) = spawn_named(arena.name(), false, placement)?;
        let ha = Ha::install(&sys).map_err(kernel("Ha::install"))?;
        let coid = open_ha(&ha, || {})?;
        // Force a recovery: the old server dies (SIGKILL; dropping the guard reaps it), a new
        // one attaches the name, and the next send fails on the dead connection and recovers.
        drop(first);
        let (server, _) = spawn_named(arena.name(), false, placement)?;
        let mut msg = [0x5Au8; HA_PAYLOAD];
        let mut reply = [0u8; HA_PAYLOAD];
        stamp(&mut msg, u64::MAX);
        let n = ha_round_trip(&ha, coid, &msg, &mut reply)?;
        check_echo(u64::MAX, &msg, &reply, n)?;
        let forced = check_recovered(&ha, coid)?;
        Ok(HaPeer {
            ha,
            sys,
            coid,
            forced,
            server,
            arena,
        })
    }

    /// The coid's counters after the forced recovery.
    pub fn forced_recovery(&self) -> Counters {
        self.forced
    }
}

/// `ha_msg_send` on the HA-attached coid.
struct HaExchange<'a> {
    ha: &'a Ha,
    coid: Coid,
}

impl Exchange for HaExchange<'_> {
    #[inline]
    fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError> {
        ha_round_trip(self.ha, self.coid, msg, reply)
    }
}

impl RoundTrip for HaPeer {
    fn with_exchange<D: Driver>(&mut self, driver: D) -> D::Output {
        driver.drive(&mut HaExchange {
            ha: &self.ha,
            coid: self.coid,
        })
    }

    fn resources(&self) -> (Vec<u32>, Vec<PathBuf>) {
        (
            vec![self.server.pid()],
            vec![kernel_sim::system_path(self.arena.name())],
        )
    }

    fn stop(self) -> Result<(), BenchError> {
        let HaPeer {
            ha,
            sys,
            coid,
            server,
            arena,
            ..
        } = self;
        let sent = ha.msg_send(coid, STOP_MESSAGE, &mut []);
        let _ = ha.connect_detach(coid);
        drop(ha);
        drop(sys);
        sent.map_err(kernel("msg_send(stop)"))?;
        let exited = server.wait_exit(STOP_TIMEOUT);
        drop(arena);
        exited
    }
}

/// One kill-and-restart, timed on the shared monotonic clock from just before the SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryTimes {
    /// To the first instruction of the client's recovery function (the failure seen), ns.
    pub detect_ns: u64,
    /// To the new server's name being attached, ns.
    pub restart_ns: u64,
    /// To the client's send returning with the new server's reply, ns.
    pub total_ns: u64,
}

/// Waits until a thread of this process is REPLY-blocked on `server`.
fn wait_reply_blocked(sys: &System, server: Pid) -> Result<(), BenchError> {
    let me = sys.pid().0;
    let start = Instant::now();
    loop {
        let snap = sys.snapshot();
        let blocked = snap
            .processes
            .iter()
            .filter(|p| p.pid == me)
            .flat_map(|p| &p.threads)
            .any(|t| matches!(t.state, ThreadState::Reply { pid, .. } if pid == server.0));
        if blocked {
            return Ok(());
        }
        if start.elapsed() > BLOCK_TIMEOUT {
            return Err(BenchError::Exchange(format!(
                "the client did not become REPLY-blocked on pid {} within {BLOCK_TIMEOUT:?}",
                server.0
            )));
        }
        std::thread::yield_now();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One recovery cycle (see the module doc), in a system of its own, placed as `placement` says
/// (the issue runs it unpinned). The new server is started `restart_delay` after the kill (the
/// issue's "at once" is zero; a delay shows what the restart's own start-up costs the detection
/// on a machine with few CPUs).
///
/// # Errors
///
/// Setup failed; the client's send did not end with the echo of its request; the recovery
/// function did not run or the counters do not show the recovery.
pub fn recovery_cycle(
    placement: &Placement,
    restart_delay: Duration,
) -> Result<RecoveryTimes, BenchError> {
    let arena = ArenaGuard::unique("recovery");
    let sys = SystemBuilder::new()
        .name(arena.name())
        .limits(bench_limits())
        .create()?;
    let (held, _) = spawn_named(arena.name(), true, placement)?;
    let watchdog = Watchdog::arm(
        "recovery cycle".to_owned(),
        CYCLE_LIMIT,
        vec![held.pid()],
        vec![kernel_sim::system_path(arena.name())],
    );
    let ha = Ha::install(&sys).map_err(kernel("Ha::install"))?;
    let detected: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
    let coid = {
        let detected = detected.clone();
        open_ha(&ha, move || {
            let now = floor::os::monotonic_ns();
            lock(&detected).get_or_insert(now);
        })?
    };
    let client = {
        let ha = ha.clone();
        std::thread::spawn(move || {
            let mut msg = [0xA5u8; HA_PAYLOAD];
            let mut reply = [0u8; HA_PAYLOAD];
            stamp(&mut msg, 7);
            let r = ha_round_trip(&ha, coid, &msg, &mut reply)
                .and_then(|n| check_echo(7, &msg, &reply, n));
            (floor::os::monotonic_ns(), r)
        })
    };
    let blocked = wait_reply_blocked(&sys, Pid(held.pid() as i32));
    // Kill and restart at once; the timing starts just before the signal.
    let killed = floor::os::monotonic_ns();
    if blocked.is_ok() {
        floor::os::sigkill(held.pid());
    }
    if blocked.is_ok() && !restart_delay.is_zero() {
        std::thread::sleep(restart_delay);
    }
    let restarted = blocked.and_then(|()| spawn_named(arena.name(), false, placement));
    if restarted.is_err() {
        // Unblock the client (its server dies; no new one comes, so its recovery gives up
        // after ha-lib's wait budget) before joining it.
        floor::os::sigkill(held.pid());
    }
    let (done, sent) = client
        .join()
        .map_err(|_| BenchError::Config("the client thread panicked".into()))?;
    let (server, attached) = restarted?;
    sent?;
    let counters = check_recovered(&ha, coid)?;
    let detect = (*lock(&detected)).ok_or_else(|| {
        BenchError::Exchange(format!(
            "the send recovered but the recovery function never ran: {counters:?}"
        ))
    })?;
    let stopped = ha.msg_send(coid, STOP_MESSAGE, &mut []);
    let _ = ha.connect_detach(coid);
    drop(ha);
    drop(sys);
    stopped.map_err(kernel("msg_send(stop)"))?;
    let exited = server.wait_exit(STOP_TIMEOUT);
    drop(held);
    drop(watchdog);
    drop(arena);
    exited?;
    let since = |t: u64| {
        t.checked_sub(killed).ok_or_else(|| {
            BenchError::Exchange(format!(
                "an event at {t} ns came before the kill at {killed} ns"
            ))
        })
    };
    Ok(RecoveryTimes {
        detect_ns: since(detect)?,
        restart_ns: since(attached)?,
        total_ns: since(done)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_ready_line_has_pid_chid_and_the_attach_instant() {
        assert_eq!(
            parse_named_line("12 1 998877").unwrap(),
            (Pid(12), Chid(1), 998877)
        );
        assert!(parse_named_line("12 1").is_err());
        assert!(parse_named_line("12 1 5 6").is_err());
        assert!(parse_named_line("12 x 5").is_err());
    }

    #[test]
    fn the_shared_clock_moves_forward() {
        let a = floor::os::monotonic_ns();
        std::thread::sleep(Duration::from_millis(1));
        let b = floor::os::monotonic_ns();
        assert!(b >= a + 1_000_000, "{a} then {b}");
    }
}
