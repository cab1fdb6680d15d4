//! The HA manager's messages: a 4-byte header (`u16` type above `_IO_MAX`, `u16` 0) and a
//! JSON body, so a human can read them in a trace. Replies to requests that return data carry
//! JSON too.

use super::config::Condition;
use kernel_sim::Errno;
use serde::{Deserialize, Serialize};

/// `ham_attach_self`: body [`AttachSelf`].
pub const MSG_ATTACH_SELF: u16 = 0x0300;
/// `ham_detach_self`: no body.
pub const MSG_DETACH_SELF: u16 = 0x0301;
/// The entity table: reply body `Vec<`[`EntityStatus`]`>`.
pub const MSG_STATUS: u16 = 0x0302;
/// `ham_action_notify_pulse`, registered by the client that wants the pulse: body [`Notify`].
pub const MSG_NOTIFY: u16 = 0x0303;
/// Stops the manager: body [`Stop`].
pub const MSG_STOP: u16 = 0x0304;

/// `ham_heartbeat`: the pulse code a self-attached entity sends.
pub const PULSE_HEARTBEAT: i8 = 10;

/// The body of [`MSG_ATTACH_SELF`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachSelf {
    /// The entity's name.
    pub name: String,
    /// Heartbeat period in milliseconds (0: no heartbeat).
    pub heartbeat_ms: u64,
    /// Missed beats that raise `heartbeat-low`.
    pub low: u32,
    /// Missed beats that raise `heartbeat-high`.
    pub high: u32,
}

/// The body of [`MSG_NOTIFY`]: on `on` for `entity`, send the sender a pulse with `code` and
/// `value` through its channel `chid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    /// The entity watched.
    pub entity: String,
    /// The condition.
    pub on: Condition,
    /// The sender's channel that receives the pulse.
    pub chid: i32,
    /// Pulse code.
    pub code: i8,
    /// Pulse value.
    pub value: i32,
}

/// The body of [`MSG_STOP`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// Kill the entities the manager supervises too.
    pub kill_entities: bool,
}

/// One row of the entity table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityStatus {
    /// Name.
    pub name: String,
    /// `started`, `attached` or `self`.
    pub kind: String,
    /// Its current (or last) pid; 0 before it first ran.
    pub pid: i32,
    /// Whether it runs.
    pub alive: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// Its restart limit was reached: no more restarts.
    pub gave_up: bool,
}

/// A message: header and JSON body.
pub fn encode(ty: u16, body: &impl Serialize) -> Vec<u8> {
    let mut m = ty.to_le_bytes().to_vec();
    m.extend_from_slice(&[0, 0]);
    // Serializing these plain structs cannot fail.
    m.extend_from_slice(&serde_json::to_vec(body).unwrap_or_default());
    m
}

/// The body of a message, parsed.
///
/// # Errors
///
/// `EBADMSG` if it is not the JSON of a `T`.
pub fn body<'a, T: Deserialize<'a>>(msg: &'a [u8]) -> Result<T, Errno> {
    serde_json::from_slice(msg.get(4..).ok_or(Errno::BADMSG)?).map_err(|_| Errno::BADMSG)
}
