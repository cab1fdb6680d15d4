//! The echo server and client: the smallest useful pair of QNX programs.
//!
//! The server `name_attach`es a name and replies to every message with the same bytes (status =
//! their length). It answers the connection bookkeeping (`_IO_CONNECT` from `name_open`,
//! `_IO_DUP`, `_IO_CLOSE`) with the kernel's helper, detaches the scoid of a client that went
//! away (DISCONNECT pulse), and stops on a pulse with code [`STOP_PULSE`].

use crate::journal::Journal;
use kernel_sim::{iomsg, pulse_code, Errno, Received, Scoid, System};
use std::time::{Duration, Instant};

/// The message type the echo client puts first in its generated messages: above `_IO_MAX`
/// (0x1FF), as QNX servers' private message types are. (A message whose first two bytes are an
/// `_IO_*` type is taken as that message.)
pub const ECHO_MSG_TYPE: u16 = 0x200;

/// The pulse code that asks the echo server to stop.
pub const STOP_PULSE: i8 = 1;

/// What a served session amounted to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Messages echoed.
    pub echoed: u64,
    /// Clients that went away (DISCONNECT pulses).
    pub disconnects: u64,
}

/// The request id of an echo message: the little-endian `u32` at bytes 4..8 of a message of a
/// server-defined type (what the echo client and the tests put there), if it has one.
pub fn request_id(msg: &[u8]) -> Option<u32> {
    if iomsg::msg_type(msg)? <= iomsg::IO_MAX {
        return None;
    }
    Some(u32::from_le_bytes(msg.get(4..8)?.try_into().ok()?))
}

/// Serves `name` until a stop pulse arrives. `ready` is called once the name is attached. With
/// a `journal`, every echoed message is recorded (`echo pid=.. id=.. len=..`) before the reply.
/// With `hold_after`, after that many echoes the next message is held unanswered for ever.
///
/// # Errors
///
/// The errno of `name_attach` (`EEXIST` if another server has the name) or of a failed receive.
pub fn serve(
    sys: &System,
    name: &str,
    journal: Option<&Journal>,
    hold_after: Option<u64>,
    ready: impl FnOnce(),
) -> Result<ServeStats, Errno> {
    let att = sys.name_attach(name)?;
    ready();
    let mut stats = ServeStats::default();
    let mut buf = vec![0u8; sys.limits().max_msg_size as usize];
    loop {
        match sys.msg_receive(att.chid, &mut buf)? {
            Received::Pulse(p) if p.code == STOP_PULSE => break,
            Received::Pulse(p) if p.code == pulse_code::DISCONNECT => {
                stats.disconnects += 1;
                let _ = sys.scoid_detach(Scoid(p.scoid));
            }
            Received::Pulse(_) => {}
            Received::Message { rcvid, info } => {
                let msg = &buf[..info.msglen as usize];
                if iomsg::answer_bookkeeping(sys, rcvid, msg, &info)? {
                    continue;
                }
                if hold_after.is_some_and(|n| stats.echoed >= n) {
                    // Hold this request for ever: the client stays REPLY-blocked until we die.
                    println!("echo-server: holding a request from pid {}", info.pid);
                    loop {
                        std::thread::park();
                    }
                }
                if let Some(j) = journal {
                    let id = request_id(msg).map_or_else(|| "-".to_string(), |i| i.to_string());
                    if j.record(
                        "echo",
                        &[("pid", &info.pid), ("id", &id), ("len", &msg.len())],
                    )
                    .is_err()
                    {
                        // No record, no reply: the client sees the failure.
                        let _ = sys.msg_error(rcvid, Errno::IO);
                        continue;
                    }
                }
                // The whole request may be larger than our buffer; what we echo is what fits.
                let _ = sys.msg_reply(rcvid, msg.len() as i32, msg);
                stats.echoed += 1;
            }
        }
    }
    sys.name_detach(att)?;
    Ok(stats)
}

/// One round trip the client made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echoed {
    /// What was sent.
    pub sent: Vec<u8>,
    /// What came back.
    pub reply: Vec<u8>,
    /// How long the round trip took.
    pub rtt: Duration,
}

/// Opens `name`, sends each message and collects the replies; with `stop`, then asks the server
/// to stop. Waits up to `wait` for the name to appear.
///
/// # Errors
///
/// `ETIMEDOUT` if the name does not appear in time; the errno of a failed send.
pub fn client(
    sys: &System,
    name: &str,
    messages: &[Vec<u8>],
    stop: bool,
    wait: Duration,
) -> Result<Vec<Echoed>, Errno> {
    let coid = sys.name_wait_open(name, Some(wait))?;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let mut reply = vec![0u8; m.len()];
        let t = Instant::now();
        let n = sys.msg_send(coid, m, &mut reply)?;
        let rtt = t.elapsed();
        reply.truncate(n.max(0) as usize);
        out.push(Echoed {
            sent: m.clone(),
            reply,
            rtt,
        });
    }
    if stop {
        sys.msg_send_pulse(coid, -1, STOP_PULSE, 0)?;
    }
    sys.name_close(coid)?;
    Ok(out)
}
