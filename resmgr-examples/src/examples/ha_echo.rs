//! An HA echo client: numbered requests to the echo server through an HA-aware connection, so
//! that a server killed and restarted (by the HA manager) costs the client a recovery, not an
//! error. What `qsim demo` and `qsim chaos` run.
//!
//! Each request carries its id (bytes 4..8), which the echo server records before it replies:
//! the servers' records, not the client's belief, say what was done.

use crate::echo::ECHO_MSG_TYPE;
use ha_lib::Ha;
use kernel_sim::sync::atomic::{AtomicU32, Ordering};
use kernel_sim::{Coid, Errno, Pid, SendOutcome, System};
use std::time::{Duration, Instant};

/// What happened to a client, for its printout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A send failed because the server died; recovery starts.
    ServerGone {
        /// The request in flight.
        id: u32,
        /// Whether the dead server had received it (it may have acted on it: the resend makes
        /// delivery at-least-once).
        received: bool,
    },
    /// Recovery reconnected to a server (the same coid, a new server process).
    Reconnected {
        /// The new server's pid.
        pid: i32,
        /// Since the failure.
        took: Duration,
    },
    /// A request was answered after a recovery (it was sent again).
    Retransmitted {
        /// The request.
        id: u32,
    },
    /// `n` requests answered so far.
    Progress {
        /// Answered.
        n: u64,
    },
}

/// The totals of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Requests sent (the last may have failed).
    pub sent: u64,
    /// Requests answered with the right echo.
    pub answered: u64,
    /// Answered after at least one recovery.
    pub recovered: u64,
    /// Recoveries run.
    pub recoveries: u64,
    /// The request that failed, if one did (the run stops there).
    pub failed: Option<u32>,
}

/// The id carried by request `seq` of the client with `base`.
pub fn request(id: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..2].copy_from_slice(&ECHO_MSG_TYPE.to_le_bytes());
    m[4..].copy_from_slice(&id.to_le_bytes());
    m
}

/// How a client runs.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// The echo server's name.
    pub name: &'a str,
    /// The first request id.
    pub base: u32,
    /// Requests to send (ids `base..base + count`).
    pub count: u32,
    /// Pause between requests.
    pub pace: Duration,
    /// How long recovery waits for the server to come back.
    pub budget: Duration,
    /// The client's own record: `sent id=..` before each send, `answered id=.. recovered=..`
    /// after each reply, `failed id=.. error=..` (what `qsim chaos` counts from).
    pub journal: Option<&'a crate::journal::Journal>,
    /// Stop (after the request in flight) once this is set.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
    /// Recoveries allowed within one send (`None`: unlimited; ha-lib's default is 3).
    pub recoveries_per_send: Option<u32>,
}

/// Sends the plan's requests to its echo server, reporting events to `on`.
///
/// # Errors
///
/// The errno of the first request that failed for good (its id is in the totals too), or of
/// the first open.
pub fn run(
    sys: &System,
    plan: &Plan<'_>,
    on: impl Fn(Event) + Send + Sync + 'static,
) -> Result<Totals, (Errno, Totals)> {
    let Plan {
        name,
        base,
        count,
        pace,
        budget,
        journal,
        stop,
        recoveries_per_send,
    } = *plan;
    let note = |op: &str, fields: &[(&str, &dyn std::fmt::Display)]| {
        if let Some(j) = journal {
            let _ = j.record(op, fields);
        }
    };
    let on = std::sync::Arc::new(on);
    let ha = Ha::install(sys).map_err(|e| (e, Totals::default()))?;
    ha.set_wait_budget(budget);
    let coid = sys
        .name_wait_open(name, Some(budget))
        .map_err(|e| (e, Totals::default()))?;
    let (cb, name2) = (on.clone(), name.to_owned());
    let current = std::sync::Arc::new(AtomicU32::new(base));
    ha.attach(
        coid,
        move |ha: &Ha, c: Coid, current: &std::sync::Arc<AtomicU32>| {
            let t = Instant::now();
            let received = ha.sys().last_send_outcome() == SendOutcome::ReceivedNoReply;
            cb(Event::ServerGone {
                id: current.load(Ordering::Relaxed),
                received,
            });
            let c = ha.name_reopen(c, &name2)?;
            let pid = ha.sys().connect_server_info(Pid(0), c).map_or(0, |i| i.pid);
            cb(Event::Reconnected {
                pid,
                took: t.elapsed(),
            });
            Ok(c)
        },
        current.clone(),
        0,
    )
    .map_err(|e| (e, Totals::default()))?;
    let limit = recoveries_per_send.map_or(ha_lib::Limit::Unlimited, ha_lib::Limit::At);
    ha.connection_ctrl(coid, ha_lib::HaCtrl::RecoveriesPerSend(limit))
        .map_err(|e| (e, Totals::default()))?;
    let mut t = Totals::default();
    for id in base..base.saturating_add(count) {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Acquire)) {
            break;
        }
        current.store(id, Ordering::Relaxed);
        note("sent", &[("id", &id)]);
        let before = ha.counters(coid).map_or(0, |c| c.recoveries);
        let req = request(id);
        let mut reply = [0u8; 8];
        t.sent += 1;
        let r = sys.msg_send(coid, &req, &mut reply);
        let c = ha.counters(coid).unwrap_or_default();
        t.recoveries = c.recoveries;
        match r {
            Ok(8) if reply == req => {
                t.answered += 1;
                note(
                    "answered",
                    &[("id", &id), ("recovered", &u8::from(c.recoveries > before))],
                );
                if c.recoveries > before {
                    t.recovered += 1;
                    on(Event::Retransmitted { id });
                }
                if t.answered % 1000 == 0 {
                    on(Event::Progress { n: t.answered });
                }
            }
            Ok(_) => {
                t.failed = Some(id);
                note("failed", &[("id", &id), ("error", &"EIO")]);
                return Err((Errno::IO, t));
            }
            Err(e) => {
                t.failed = Some(id);
                note(
                    "failed",
                    &[("id", &id), ("error", &e.name().unwrap_or("?"))],
                );
                return Err((e, t));
            }
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    let _ = ha.close(coid);
    Ok(t)
}
