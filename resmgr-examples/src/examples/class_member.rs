//! A member of a server class (see `ha_lib::class`): it attaches the class's mountpoint next to
//! the other members and answers numbered requests after a fixed amount of work.
//!
//! It records each request twice, durably: `received id=..` as soon as it has it, and
//! `done id=..` just before it replies. So the records tell, for a member killed in between,
//! that it had received the request (what the kernel tells the client, too).

use crate::journal::Journal;
use kernel_sim::{iomsg, pulse_code, Errno, Received, Scoid, System};
use std::time::{Duration, Instant};

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
    loop {
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
                let Some(id) = request_id(msg) else {
                    let _ = sys.msg_error(rcvid, Errno::BADMSG);
                    continue;
                };
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
