//! A member of a server class (see `ha_lib::class`): it attaches the class's mountpoint next to
//! the other members and answers numbered requests after a fixed amount of work.
//!
//! It records each request twice, durably: `received id=..` as soon as it has it, and
//! `done id=..` just before it replies. So the records tell, for a member killed in between,
//! that it had received the request (what the kernel tells the client, too).

use super::le;
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

/// A step of a multi-request transaction: `{u16 type, u16 0, u32 id, u64 txid, u32 step,
/// u32 account, i64 amount}`; the member adds `amount` to `acct-<account>` as step `step` of
/// transaction `txid` (once, however often it is reissued) and replies that account's balance.
/// A step that would change an account another open transaction changed is refused with
/// `EBUSY`; one of a committed transaction with `EEXIST`.
pub const TX_STEP: u16 = 0x204;
/// `{u16 type, u16 0, u32 id, u64 txid}`: commits `txid`; `ENOENT` if there is no such
/// transaction (it was aborted: its owner died, or an abort).
pub const TX_COMMIT: u16 = 0x205;
/// `{u16 type, u16 0, u32 id, u64 txid}`: aborts `txid` (its steps rolled back); the status
/// is 1 if it was open, 0 if there was none; `EEXIST` if it has committed.
pub const TX_ABORT: u16 = 0x206;

/// A [`TX_STEP`] request.
pub fn tx_step(id: u32, txid: u64, step: u32, account: u32, amount: i64) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[..2].copy_from_slice(&TX_STEP.to_le_bytes());
    m[4..8].copy_from_slice(&id.to_le_bytes());
    m[8..16].copy_from_slice(&txid.to_le_bytes());
    m[16..20].copy_from_slice(&step.to_le_bytes());
    m[20..24].copy_from_slice(&account.to_le_bytes());
    m[24..].copy_from_slice(&amount.to_le_bytes());
    m
}

/// A [`TX_COMMIT`] or [`TX_ABORT`] request (`kind`).
pub fn tx_end(kind: u16, id: u32, txid: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..2].copy_from_slice(&kind.to_le_bytes());
    m[4..8].copy_from_slice(&id.to_le_bytes());
    m[8..16].copy_from_slice(&txid.to_le_bytes());
    m
}

/// Adds `amount` to `key` and replies the new balance; an overflow refuses the step
/// (`EOVERFLOW`) and changes nothing.
fn add_to(st: &mut ha_lib::tx::State, key: String, amount: i64) -> Result<Vec<u8>, Errno> {
    let v = st.entry(key).or_default();
    *v = v.checked_add(amount).ok_or(Errno::OVERFLOW)?;
    Ok(v.to_le_bytes().to_vec())
}

/// The store's key of account `n`.
pub fn account_key(n: u32) -> String {
    format!("acct-{n}")
}

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
                        let (Some(store), Some(txid), Some(amount)) = (
                            store,
                            le::<8>(msg, 8).map(u64::from_le_bytes),
                            le::<8>(msg, 16).map(i64::from_le_bytes),
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
                        let out = store.apply(txid, |st| add_to(st, "acct".into(), amount));
                        let out = match out {
                            Ok(o) => o,
                            Err(e) => {
                                let _ = sys.msg_error(rcvid, e.errno());
                                continue;
                            }
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
                    Some(t @ (TX_STEP | TX_COMMIT | TX_ABORT)) => {
                        let (Some(store), Some(txid)) =
                            (store, le::<8>(msg, 8).map(u64::from_le_bytes))
                        else {
                            let _ = sys.msg_error(rcvid, Errno::BADMSG);
                            continue;
                        };
                        // The client: only it may step, commit or abort its transaction, and
                        // its death aborts it.
                        let owner = ha_lib::tx::Owner::of(info.pid);
                        let res = match t {
                            TX_STEP => {
                                let (Some(step), Some(acct), Some(amount)) = (
                                    le::<4>(msg, 16).map(u32::from_le_bytes),
                                    le::<4>(msg, 20).map(u32::from_le_bytes),
                                    le::<8>(msg, 24).map(i64::from_le_bytes),
                                ) else {
                                    let _ = sys.msg_error(rcvid, Errno::BADMSG);
                                    continue;
                                };
                                store
                                    .step(txid, step, owner, |st| {
                                        add_to(st, account_key(acct), amount)
                                    })
                                    .map(|o| (8, o.reply().to_vec()))
                            }
                            TX_COMMIT => match store.commit(txid, owner) {
                                Ok(true) => Ok((1, Vec::new())),
                                Ok(false) => {
                                    let _ = sys.msg_error(rcvid, Errno::NOENT);
                                    continue;
                                }
                                Err(e) => Err(e),
                            },
                            _ => store.abort(txid, owner).map(|a| (i32::from(a), Vec::new())),
                        };
                        if let Some(j) = journal {
                            let _ = j.record(
                                "txop",
                                &[
                                    ("member", &pid),
                                    ("id", &id),
                                    ("txid", &txid),
                                    ("type", &t),
                                    ("ok", &u8::from(res.is_ok())),
                                ],
                            );
                        }
                        let _ = match res {
                            Ok((status, body)) => sys.msg_reply(rcvid, status, &body),
                            Err(e) => sys.msg_error(rcvid, e.errno()),
                        };
                        continue;
                    }
                    Some(DIALOG_ADD) => {
                        let Some(amount) = le::<8>(msg, 8).map(i64::from_le_bytes) else {
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

/// Moves `amount` from account `from` to account `to` as transaction `txid` of the class: two
/// [`TX_STEP`]s and a [`TX_COMMIT`], each sent as `Send::Transaction(txid)` (a member's death
/// makes the library reissue it; the store answers a reissue from its record). `between` runs
/// after the first step (a client that stops there, or dies, leaves the transaction open, and
/// its death aborts it). A refused step (another open transaction holds the account) aborts
/// the transaction and returns the error, and so does a commit that fails otherwise than
/// because the transaction had been aborted.
///
/// # Errors
///
/// The class error of a step or the commit; `Server(ENOENT)` means the transaction had been
/// aborted (its steps rolled back), `Server(EPERM)` that another client owns its id.
pub fn transfer(
    class: &ha_lib::class::ServerClass,
    txid: u64,
    from: u32,
    to: u32,
    amount: i64,
    between: impl FnOnce(),
) -> Result<(), ha_lib::class::ClassError> {
    use ha_lib::class::Send;
    let id = (txid as u32).wrapping_mul(4);
    let mut r = [0u8; 8];
    let abort_on = |e| {
        let _ = class.send(
            &tx_end(TX_ABORT, id + 3, txid),
            &mut [0u8; 8],
            Send::Transaction(txid),
        );
        e
    };
    class
        .send(
            &tx_step(id, txid, 1, from, -amount),
            &mut r,
            Send::Transaction(txid),
        )
        .map_err(abort_on)?;
    between();
    class
        .send(
            &tx_step(id + 1, txid, 2, to, amount),
            &mut r,
            Send::Transaction(txid),
        )
        .map_err(abort_on)?;
    // A commit that failed for another reason than an abort (the class lost its members, ...)
    // is followed by an abort, so the transaction's locks do not outlive the failure; if the
    // commit had been applied after all, the abort is refused (EEXIST) and changes nothing.
    class
        .send(
            &tx_end(TX_COMMIT, id + 2, txid),
            &mut r,
            Send::Transaction(txid),
        )
        .map_err(|e| match e {
            ha_lib::class::ClassError::Server(Errno::NOENT) => e,
            e => abort_on(e),
        })?;
    Ok(())
}
