//! A process pair, in the image of Guardian's: a primary server and a backup. The primary
//! checkpoints its state to the backup (by message) before it replies to a request; when the
//! primary dies, the backup takes over the primary's name with the state of the last
//! checkpoint, starts a new backup of its own, and serves. Clients recover to it through the
//! ordinary HA covers (a `name_open` coid and `Ha::name_reopen`), and lose no acknowledged work:
//! every reply was preceded by a checkpoint.
//!
//! The state is a running total, and for each client the id and reply of its last request, so a
//! request the dead primary had applied (and checkpointed) but not answered is answered from the
//! state when the client sends it again, not applied twice.

use super::le;
use kernel_sim::{chf, iomsg, pulse_code, Chid, Coid, Errno, Received, Scoid, System};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// `{u16 type, u16 0, u32 id, i64 amount}`: add `amount`; the reply is the new total (`i64`).
pub const PAIR_ADD: u16 = 0x211;
/// `{u16 type, u16 0}`: the reply is the total.
pub const PAIR_GET: u16 = 0x212;
/// Primary to backup: the whole state, as JSON after the 4-byte header.
const CHECKPOINT: u16 = 0x213;

/// A [`PAIR_ADD`] request.
pub fn add(id: u32, amount: i64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..2].copy_from_slice(&PAIR_ADD.to_le_bytes());
    m[4..8].copy_from_slice(&id.to_le_bytes());
    m[8..].copy_from_slice(&amount.to_le_bytes());
    m
}

/// A [`PAIR_GET`] request.
pub fn get() -> [u8; 4] {
    let mut m = [0u8; 4];
    m[..2].copy_from_slice(&PAIR_GET.to_le_bytes());
    m
}

/// What the pair serves and checkpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The running total.
    pub total: i64,
    /// Per client pid: the id of its last request and the reply it was given.
    pub last: BTreeMap<i32, (u32, i64)>,
    /// Checkpoints taken.
    pub checkpoints: u64,
}

fn backup_name(name: &str) -> String {
    format!("{name}.backup")
}

/// Starts a backup process for the pair called `name` (this program, `run pair --backup`).
fn spawn_backup(sys: &System, name: &str) -> Option<std::process::Child> {
    let exe = std::env::current_exe().ok()?;
    std::process::Command::new(exe)
        .args(["run", "pair", "--name", name, "--backup"])
        .env("QSIM_SYSTEM", sys.name())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()
}

/// Serves as the primary of pair `name`, starting from `state`, until killed. `say` reports
/// events (started, took over, backup started).
///
/// # Errors
///
/// The errno of the name's attach or of a failed receive.
pub fn primary(
    sys: &System,
    name: &str,
    mut state: State,
    chid: Option<Chid>,
    say: &dyn Fn(&str),
) -> Result<(), Errno> {
    let chid = match chid {
        Some(c) => c,
        None => sys.channel_create(chf::DISCONNECT)?,
    };
    sys.name_attach_on(chid, name)?;
    say(&format!("primary: pid {} serves {name}", sys.pid().0));
    let mut backup: Option<Coid> = None;
    let mut children = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        // Keep a backup: start one whenever there is none.
        if backup.is_none() {
            if let Ok(c) = sys.name_open(&backup_name(name)) {
                backup = Some(c);
            } else if let Some(child) = spawn_backup(sys, name) {
                say(&format!("primary: started a backup, pid {}", child.id()));
                children.push(child);
                backup = sys
                    .name_wait_open(&backup_name(name), Some(Duration::from_secs(10)))
                    .ok();
            }
            if let Some(b) = backup {
                // A new backup gets the whole state at once.
                if checkpoint(sys, b, &mut state).is_err() {
                    let _ = sys.name_close(b);
                    backup = None;
                }
            }
        }
        match sys.msg_receive(chid, &mut buf)? {
            Received::Pulse(p) if p.code == pulse_code::DISCONNECT => {
                let _ = sys.scoid_detach(Scoid(p.scoid));
            }
            Received::Pulse(_) => {}
            Received::Message { rcvid, info } => {
                let msg = &buf[..(info.msglen as usize).min(buf.len())];
                if iomsg::answer_bookkeeping(sys, rcvid, msg, &info).unwrap_or(true) {
                    continue;
                }
                match iomsg::msg_type(msg) {
                    Some(PAIR_GET) => {
                        let _ = sys.msg_reply(rcvid, 8, &state.total.to_le_bytes());
                    }
                    Some(PAIR_ADD) => {
                        let (Some(id), Some(amount)) = (
                            le::<4>(msg, 4).map(u32::from_le_bytes),
                            le::<8>(msg, 8).map(i64::from_le_bytes),
                        ) else {
                            let _ = sys.msg_error(rcvid, Errno::BADMSG);
                            continue;
                        };
                        // A request sent again after a takeover: answered from the state.
                        if let Some(&(last, reply)) = state.last.get(&info.pid) {
                            if last == id {
                                let _ = sys.msg_reply(rcvid, 8, &reply.to_le_bytes());
                                continue;
                            }
                        }
                        state.total += amount;
                        state.last.insert(info.pid, (id, state.total));
                        // The checkpoint before the reply: no acknowledged update is lost.
                        if let Some(b) = backup {
                            if checkpoint(sys, b, &mut state).is_err() {
                                let _ = sys.name_close(b);
                                backup = None;
                            }
                        }
                        if backup.is_none() {
                            // The backup died: a new one first, with the whole state.
                            if let Some(child) = spawn_backup(sys, name) {
                                say(&format!("primary: started a backup, pid {}", child.id()));
                                children.push(child);
                                backup = sys
                                    .name_wait_open(
                                        &backup_name(name),
                                        Some(Duration::from_secs(10)),
                                    )
                                    .ok();
                                if let Some(b) = backup {
                                    if checkpoint(sys, b, &mut state).is_err() {
                                        backup = None;
                                    }
                                }
                            }
                        }
                        let _ = sys.msg_reply(rcvid, 8, &state.total.to_le_bytes());
                    }
                    _ => {
                        let _ = sys.msg_error(rcvid, Errno::NOSYS);
                    }
                }
                // Reap backups that have gone (they are our children).
                children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            }
        }
    }
}

fn checkpoint(sys: &System, backup: Coid, state: &mut State) -> Result<(), Errno> {
    state.checkpoints += 1;
    let mut m = CHECKPOINT.to_le_bytes().to_vec();
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&serde_json::to_vec(state).map_err(|_| Errno::NOMEM)?);
    sys.msg_send(backup, &m, &mut []).map(|_| ())
}

/// Serves as the backup of pair `name`: takes checkpoints until the primary dies, then takes
/// over as the primary with the last checkpoint's state.
///
/// # Errors
///
/// The errno of a failed attach or receive; `ESRCH` if there is no primary to back up.
pub fn backup(sys: &System, name: &str, say: &dyn Fn(&str)) -> Result<(), Errno> {
    // One channel for the checkpoints and for the death of the primary (COID_DISCONNECT: a
    // pulse when a connection of ours dies with its server's channel).
    let chid = sys.channel_create(chf::DISCONNECT | chf::COID_DISCONNECT)?;
    let att = sys.name_attach_on(chid, &backup_name(name))?;
    // A plain connection (no `_IO_CONNECT`): the primary may be waiting on us right now, for
    // this very backup's name, and must not have to answer anything first.
    let path = format!("{}{name}", kernel_sim::NAME_PREFIX);
    let t = sys
        .path_resolve(&path)
        .ok()
        .and_then(|t| t.into_iter().next())
        .ok_or(Errno::SRCH)?;
    let primary = sys.connect_attach(
        0,
        kernel_sim::Pid(t.pid),
        Chid(t.chid),
        kernel_sim::SIDE_CHANNEL,
        0,
    )?;
    say(&format!("backup: pid {} backs up {name}", sys.pid().0));
    let mut state = State::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match sys.msg_receive(chid, &mut buf)? {
            Received::Pulse(p) if p.code == pulse_code::COIDDEATH && p.value == primary.0 => {
                break;
            }
            Received::Pulse(p) if p.code == pulse_code::DISCONNECT => {
                let _ = sys.scoid_detach(Scoid(p.scoid));
            }
            Received::Pulse(_) => {}
            Received::Message { rcvid, info } => {
                let msg = &buf[..(info.msglen as usize).min(buf.len())];
                if iomsg::answer_bookkeeping(sys, rcvid, msg, &info).unwrap_or(true) {
                    continue;
                }
                if iomsg::msg_type(msg) != Some(CHECKPOINT) {
                    let _ = sys.msg_error(rcvid, Errno::NOSYS);
                    continue;
                }
                // Only the primary checkpoints: anyone else's "state" is refused.
                if info.pid != t.pid {
                    let _ = sys.msg_error(rcvid, Errno::PERM);
                    continue;
                }
                match msg.get(4..).map(serde_json::from_slice::<State>) {
                    Some(Ok(s)) => {
                        state = s;
                        let _ = sys.msg_reply(rcvid, 0, &[]);
                    }
                    _ => {
                        let _ = sys.msg_error(rcvid, Errno::BADMSG);
                    }
                }
            }
        }
    }
    // The primary is gone: take over with the last checkpoint.
    let _ = sys.connect_detach(primary);
    let _ = sys.name_detach_keep(&att);
    say(&format!(
        "backup: pid {} takes over {name} at total {} ({} checkpoints)",
        sys.pid().0,
        state.total,
        state.checkpoints
    ));
    primary_on(sys, name, state, chid, say)
}

fn primary_on(
    sys: &System,
    name: &str,
    state: State,
    chid: Chid,
    say: &dyn Fn(&str),
) -> Result<(), Errno> {
    primary(sys, name, state, Some(chid), say)
}

/// What [`client`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientReport {
    /// Updates acknowledged.
    pub acked: u32,
    /// The sum of the amounts acknowledged (what the pair's total must have grown by).
    pub sum: i64,
    /// The pair's total at the end, as it answered.
    pub total: i64,
    /// Recoveries ha-lib ran on the client's connection (one per takeover it met).
    pub recoveries: u64,
}

/// An HA client of pair `name`: sends `count` updates (`add(id, id)`, ids from 1), `pace`
/// apart, through a `name_open` coid that ha-lib recovers with `Ha::name_reopen` when the
/// primary dies; checks each reply against the running total it expects from the total
/// read at the start; `say` reports progress every `count / 10` updates.
///
/// # Errors
///
/// The errno of the open, of a send that recovery could not save, or `EIO` if a reply is
/// not the total the client expected (an update lost or applied twice).
pub fn client(
    sys: &System,
    name: &str,
    count: u32,
    pace: Duration,
    say: &dyn Fn(&str),
) -> Result<ClientReport, Errno> {
    let ha = ha_lib::Ha::install(sys)?;
    let coid = sys.name_open(name)?;
    let n = name.to_owned();
    ha.attach(
        coid,
        move |ha: &ha_lib::Ha, c: Coid, _: &()| ha.name_reopen(c, &n),
        (),
        0,
    )?;
    let total = |sys: &System| -> Result<i64, Errno> {
        let mut r = [0u8; 8];
        sys.msg_send(coid, &get(), &mut r)?;
        Ok(i64::from_le_bytes(r))
    };
    let start = total(sys)?;
    let mut sum = 0i64;
    let step = (count / 10).max(1);
    for id in 1..=count {
        let mut r = [0u8; 8];
        sys.msg_send(coid, &add(id, i64::from(id)), &mut r)?;
        sum += i64::from(id);
        if i64::from_le_bytes(r) != start + sum {
            say(&format!(
                "pair-client: update {id}: the pair answered {}, expected {}",
                i64::from_le_bytes(r),
                start + sum
            ));
            return Err(Errno::IO);
        }
        if id % step == 0 {
            let rec = ha.counters(coid).map_or(0, |c| c.recoveries);
            say(&format!(
                "pair-client: {id} updates acknowledged, total {}, {rec} recoveries",
                start + sum
            ));
        }
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    let end = total(sys)?;
    let recoveries = ha.counters(coid).map_or(0, |c| c.recoveries);
    let _ = ha.connect_detach(coid);
    Ok(ClientReport {
        acked: count,
        sum,
        total: end - start,
        recoveries,
    })
}
