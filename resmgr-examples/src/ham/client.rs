//! The entity side of the HA manager: self-attach with heartbeats (`ham_attach_self`,
//! `ham_heartbeat`, `ham_detach_self`), and the calls tools use (status, notification, stop).
//!
//! A self-attached entity's connection to the manager is HA-aware (ha-lib): if the manager is
//! killed and its guardian takes over, the connection's recovery finds the new manager by name
//! and attaches the entity again, so heartbeats carry on without the entity noticing.

use super::config::{check_name, Condition};
use super::proto::{self, AttachSelf, EntityStatus, Notify, Stop};
use ha_lib::Ha;
use kernel_sim::{Chid, Coid, Errno, System};
use std::time::Duration;

/// How long the calls here wait for the manager's name to appear.
const WAIT: Duration = Duration::from_secs(10);

/// A self-attached entity's handle (`ham_entity_t`).
#[derive(Debug)]
pub struct SelfAttached {
    sys: System,
    ha: Ha,
    coid: Coid,
}

fn send(sys: &System, coid: Coid, msg: &[u8], reply: &mut [u8]) -> Result<usize, Errno> {
    sys.msg_send(coid, msg, reply).map(|n| n.max(0) as usize)
}

/// `ham_attach_self(name, hp, hpdl, hpdh, 0)`: tells the manager called `ham` that this process
/// is entity `name`, with a heartbeat every `heartbeat` (`None`: none) of which `low` and
/// `high` missed ones raise the heartbeat conditions.
///
/// # Errors
///
/// - `EINVAL`: a bad name, or `low > high`.
/// - `ETIMEDOUT`: no manager called `ham` appeared within 10 s.
/// - `EEXIST`: a live process is that entity already.
pub fn attach_self(
    sys: &System,
    ham: &str,
    name: &str,
    heartbeat: Option<Duration>,
    low: u32,
    high: u32,
) -> Result<SelfAttached, Errno> {
    check_name(name).map_err(|_| Errno::INVAL)?;
    if low > high {
        return Err(Errno::INVAL);
    }
    let ha = Ha::install(sys)?;
    let coid = sys.name_wait_open(ham, Some(WAIT))?;
    let msg = proto::encode(
        proto::MSG_ATTACH_SELF,
        &AttachSelf {
            name: name.to_owned(),
            heartbeat_ms: heartbeat.map_or(0, |d| d.as_millis() as u64),
            low,
            high,
        },
    );
    if let Err(e) = send(sys, coid, &msg, &mut []) {
        let _ = sys.name_close(coid);
        return Err(e);
    }
    let ham_name = ham.to_owned();
    let again = msg.clone();
    ha.attach(
        coid,
        move |ha: &Ha, c: Coid, _: &()| {
            // A new manager (its guardian, or a restart): find it, and attach again.
            let c = ha.name_reopen(c, &ham_name)?;
            ha.sys().msg_send(c, &again, &mut [])?;
            Ok(c)
        },
        (),
        0,
    )?;
    Ok(SelfAttached {
        sys: sys.clone(),
        ha,
        coid,
    })
}

impl SelfAttached {
    /// `ham_heartbeat()`: one beat (a pulse; beats within one period count once).
    ///
    /// # Errors
    ///
    /// The original error if the manager is gone and no other took over.
    pub fn heartbeat(&self) -> Result<(), Errno> {
        self.sys
            .msg_send_pulse(self.coid, -1, proto::PULSE_HEARTBEAT, 0)
    }

    /// `ham_detach_self()`: a clean exit; the manager raises `detach`, not `death`.
    ///
    /// # Errors
    ///
    /// The errno of the send.
    pub fn detach(self) -> Result<(), Errno> {
        let r = send(
            &self.sys,
            self.coid,
            &proto::encode(proto::MSG_DETACH_SELF, &()),
            &mut [],
        );
        let _ = self.ha.connect_detach(self.coid);
        r.map(|_| ())
    }
}

fn with_manager<T>(
    sys: &System,
    ham: &str,
    f: impl FnOnce(Coid) -> Result<T, Errno>,
) -> Result<T, Errno> {
    with_manager_within(sys, ham, WAIT, f)
}

fn with_manager_within<T>(
    sys: &System,
    ham: &str,
    wait: Duration,
    f: impl FnOnce(Coid) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let coid = sys.name_wait_open(ham, Some(wait))?;
    let r = f(coid);
    let _ = sys.name_close(coid);
    r
}

/// The manager's entity table.
///
/// # Errors
///
/// `ETIMEDOUT` if there is no manager; `EBADMSG` if its answer does not parse.
pub fn status(sys: &System, ham: &str) -> Result<Vec<EntityStatus>, Errno> {
    with_manager(sys, ham, |coid| {
        let mut buf = vec![0u8; 60 * 1024];
        let n = send(sys, coid, &proto::encode(proto::MSG_STATUS, &()), &mut buf)?;
        serde_json::from_slice(&buf[..n.min(buf.len())]).map_err(|_| Errno::BADMSG)
    })
}

/// `ham_action_notify_pulse`, from the side of the process to notify: on condition `on` of
/// `entity`, the manager sends a pulse with `code` and `value` to this process's channel
/// `chid`.
///
/// # Errors
///
/// `ENOENT` if the manager has no such entity; `ETIMEDOUT` if there is no manager.
pub fn notify(
    sys: &System,
    ham: &str,
    entity: &str,
    on: Condition,
    chid: Chid,
    code: i8,
    value: i32,
) -> Result<(), Errno> {
    with_manager(sys, ham, |coid| {
        let msg = proto::encode(
            proto::MSG_NOTIFY,
            &Notify {
                entity: entity.to_owned(),
                on,
                chid: chid.0,
                code,
                value,
            },
        );
        send(sys, coid, &msg, &mut []).map(|_| ())
    })
}

/// Stops the manager (and its guardian); with `kill_entities`, the entities it supervises too.
///
/// # Errors
///
/// `ETIMEDOUT` if there is no manager.
pub fn stop(sys: &System, ham: &str, kill_entities: bool) -> Result<(), Errno> {
    stop_within(sys, ham, kill_entities, WAIT)
}

/// [`stop`], waiting at most `wait` for the manager's name.
///
/// # Errors
///
/// `ETIMEDOUT` if there is no manager.
pub fn stop_within(
    sys: &System,
    ham: &str,
    kill_entities: bool,
    wait: Duration,
) -> Result<(), Errno> {
    with_manager_within(sys, ham, wait, |coid| {
        let msg = proto::encode(proto::MSG_STOP, &Stop { kill_entities });
        send(sys, coid, &msg, &mut []).map(|_| ())
    })
}
