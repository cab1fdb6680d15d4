//! A member of a server class (see `ha_lib::class`): it attaches the class's mountpoint next to
//! the other members and answers numbered requests after a fixed amount of work.
//!
//! It records each request twice, durably: `received id=..` as soon as it has it, and
//! `done id=..` just before it replies. So the records tell, for a member killed in between,
//! that it had received the request (what the kernel tells the client, too).

use crate::journal::Journal;
use kernel_sim::{iomsg, pulse_code, Errno, Received, Scoid, System};
use std::time::{Duration, Instant};

/// A dialog request: `{u16 type, u16 0, u32 id, i64 amount}`; the member adds `amount` to the
/// dialog's running sum (its context, kept per connection) and replies the new sum (an `i64`).
pub const DIALOG_ADD: u16 = 0x201;
/// A request whose reply is the member's pid (what a replay on another member cannot repeat).
pub const WHOAMI: u16 = 0x202;

/// A transaction: `{u16 type, u16 0, u32 id, u64 txid, i64 amount}`; the member adds `amount`
/// to the account `acct` of the shared transaction store, once per `txid` across all members,
/// and replies the balance (the recorded one if `txid` was applied before).
pub const TX_ADD: u16 = 0x203;

/// A [`TX_ADD`] request.
pub fn tx_add(id: u32, txid: u64, amount: i64) -> [u8; 24] {
    let mut m = [0u8; 24];
    m[..2].copy_from_slice(&TX_ADD.to_le_bytes());
    m[4..8].copy_from_slice(&id.to_le_bytes());
    m[8..16].copy_from_slice(&txid.to_le_bytes());
    m[16..].copy_from_slice(&amount.to_le_bytes());
    m
}

/// A [`DIALOG_ADD`] request.
pub fn dialog_add(id: u32, amount: i64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..2].copy_from_slice(&DIALOG_ADD.to_le_bytes());
    m[4..8].copy_from_slice(&id.to_le_bytes());
    m[8..].copy_from_slice(&amount.to_le_bytes());
    m
}

/// The request id of a class request: the `u32` at bytes 4..8 (as the echo client's).
pub fn request_id(msg: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(msg.get(4..8)?.try_into().ok()?))
}

/// Serves as a member of class `class` until killed: each request costs `work` of CPU. `ready`
/// runs once the member has attached.
///
/// # Errors
///
/// The errno of the attach or of a failed receive.
pub fn serve(
    sys: &System,
    class: &str,
    work: Duration,
    journal: Option<&Journal>,
    store: Option<&ha_lib::tx::TxStore>,
    ready: impl FnOnce(),
) -> Result<(), Errno> {
    let chid = sys.channel_create(kernel_sim::chf::DISCONNECT)?;
    sys.resmgr_attach(chid, &ha_lib::class::class_path(class), 0)?;
    ready();
    let pid = sys.pid().0;
    let note = |op: &str, id: u32| match journal {
        Some(j) => j
            .record(op, &[("member", &pid), ("id", &id)])
            .map_err(|_| Errno::IO),
        None => Ok(()),
    };
    let mut buf = vec![0u8; 4096];
    // Dialog contexts: the running sum of each dialog connection (scoid).
    let mut sums: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    loop {
        match sys.msg_receive(chid, &mut buf)? {
            Received::Pulse(p) if p.code == pulse_code::DISCONNECT => {
                sums.remove(&p.scoid);
                let _ = sys.scoid_detach(Scoid(p.scoid));
            }
            Received::Pulse(_) => {}
            Received::Message { rcvid, info } => {
                let msg = &buf[..(info.msglen as usize).min(buf.len())];
                if iomsg::answer_bookkeeping(sys, rcvid, msg, &info).unwrap_or(true) {
                    continue;
                }
                let Some(id) = request_id(msg) else {
                    let _ = sys.msg_error(rcvid, Errno::BADMSG);
                    continue;
                };
                match iomsg::msg_type(msg) {
                    Some(WHOAMI) => {
                        let _ = sys.msg_reply(rcvid, 4, &pid.to_le_bytes());
                        continue;
                    }
                    Some(TX_ADD) => {
                        let field =
                            |at: usize| -> Option<[u8; 8]> { msg.get(at..at + 8)?.try_into().ok() };
                        let (Some(store), Some(txid), Some(amount)) = (
                            store,
                            field(8).map(u64::from_le_bytes),
                            field(16).map(i64::from_le_bytes),
                        ) else {
                            let _ = sys.msg_error(rcvid, Errno::BADMSG);
                            continue;
                        };
                        if note("received", id).is_err() {
                            let _ = sys.msg_error(rcvid, Errno::IO);
                            continue;
                        }
                        // Work on both sides of the atomic step, so a kill can land before it
                        // (the transaction is aborted: nothing recorded) or after it (recorded,
                        // not answered: a reissue is answered from the record).
                        let spin = |d: Duration| {
                            let t = Instant::now();
                            while t.elapsed() < d {
                                std::hint::spin_loop();
                            }
                        };
                        spin(work / 2);
                        let out = store.apply(txid, |st| {
                            let v = st.entry("acct".into()).or_default();
                            *v += amount;
                            v.to_le_bytes().to_vec()
                        });
                        let Ok(out) = out else {
                            let _ = sys.msg_error(rcvid, Errno::IO);
                            continue;
                        };
                        let fresh = matches!(out, ha_lib::tx::Outcome::Applied(_));
                        if let Some(j) = journal {
                            let _ = j.record(
                                "tx",
                                &[
                                    ("member", &pid),
                                    ("id", &id),
                                    ("txid", &txid),
                                    ("applied", &u8::from(fresh)),
                                ],
                            );
                        }
                        spin(work / 2);
                        let _ = sys.msg_reply(rcvid, 8, out.reply());
                        continue;
                    }
                    Some(DIALOG_ADD) => {
                        let Some(amount) = msg
                            .get(8..16)
                            .and_then(|b| b.try_into().ok())
                            .map(i64::from_le_bytes)
                        else {
                            let _ = sys.msg_error(rcvid, Errno::BADMSG);
                            continue;
                        };
                        let sum = sums.entry(info.scoid).or_default();
                        *sum = sum.wrapping_add(amount);
                        let sum = *sum;
                        let recorded = match journal {
                            Some(j) => {
                                j.record("dialog", &[("member", &pid), ("id", &id), ("sum", &sum)])
                            }
                            None => Ok(()),
                        };
                        let _ = match recorded {
                            Ok(()) => sys.msg_reply(rcvid, 8, &sum.to_le_bytes()),
                            Err(_) => sys.msg_error(rcvid, Errno::IO),
                        };
                        continue;
                    }
                    _ => {}
                }
                if note("received", id).is_err() {
                    let _ = sys.msg_error(rcvid, Errno::IO);
                    continue;
                }
                let t = Instant::now();
                while t.elapsed() < work {
                    std::hint::spin_loop();
                }
                if note("done", id).is_err() {
                    let _ = sys.msg_error(rcvid, Errno::IO);
                    continue;
                }
                let _ = sys.msg_reply(rcvid, pid, &pid.to_le_bytes());
            }
        }
    }
}
