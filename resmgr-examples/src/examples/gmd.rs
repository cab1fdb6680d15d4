//! Guaranteed delivery, both ends: a server that keeps what it receives in a durable inbox
//! (ha-lib's [`GmdReceiver`] with payloads kept, so recording a message and delivering it are one
//! step, and duplicates are dropped across its restarts), and a client that hands numbered
//! messages to a [`GmdConn`] and never blocks on the server, even while it is down.

use ha_lib::gmd::wire::ack;
use ha_lib::gmd::{
    Accepted, Delivery, FailureAction, FailureReason, GmdConfig, GmdConn, GmdError, GmdReceiver,
    Target,
};
use kernel_sim::{iomsg, pulse_code, Errno, Received, Scoid, System};
use std::time::{Duration, Instant};

/// Serves guaranteed deliveries on `name`: each new message is recorded in `rx` (after
/// `work` of CPU time, so a kill can land while a message is in hand) and acknowledged;
/// duplicates are acknowledged and dropped. With `crash_after` = n, the process aborts right
/// (`SIGKILL` to itself) right after recording its n-th new message, before acknowledging it
/// (fault injection: the sender
/// must send it again, and the next server must drop it as a duplicate). Runs until killed;
/// `ready` is called once the name is attached.
///
/// # Errors
///
/// The errno of the name's attach or of a failed receive.
pub fn serve(
    sys: &System,
    name: &str,
    rx: &mut GmdReceiver,
    work: Duration,
    crash_after: Option<u64>,
    ready: impl FnOnce(),
) -> Result<(), Errno> {
    let att = sys.name_attach(name)?;
    ready();
    // Room for the largest message a default GmdConn sends (60 KiB) and its header.
    let mut buf = vec![0u8; 64 * 1024 + 128];
    let mut new = 0u64;
    loop {
        match sys.msg_receive(att.chid, &mut buf)? {
            Received::Pulse(p) if p.code == pulse_code::DISCONNECT => {
                let _ = sys.scoid_detach(Scoid(p.scoid));
            }
            Received::Pulse(_) => {}
            Received::Message { rcvid, info } => {
                if info.msglen as usize > buf.len() {
                    let _ = sys.msg_error(rcvid, Errno::MSGSIZE);
                    continue;
                }
                let msg = &buf[..info.msglen as usize];
                if iomsg::answer_bookkeeping(sys, rcvid, msg, &info).unwrap_or(true) {
                    continue;
                }
                let d = match Delivery::decode(msg) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = sys.msg_error(rcvid, e);
                        continue;
                    }
                };
                if rx.last_seq(d.sender, d.incarnation) < Some(d.seq) {
                    let t = Instant::now();
                    while t.elapsed() < work {
                        std::hint::spin_loop();
                    }
                }
                // The record is the delivery (the inbox keeps the payload): one step.
                let status = match rx.accept(&d) {
                    Ok(Accepted::New) => {
                        new += 1;
                        if crash_after == Some(new) {
                            eprintln!("gmd-server: crashing after recording message {}", d.seq);
                            // As `kill -9` would: no clean-up, no reply.
                            if let Ok(me) =
                                kernel_sim::process::ProcessWatch::new(std::process::id() as i32)
                            {
                                let _ = me.kill();
                            }
                            std::process::abort();
                        }
                        ack::NEW
                    }
                    Ok(Accepted::Duplicate) => ack::DUPLICATE,
                    Err(e) => {
                        // EAGAIN: the sender tries again later rather than give the message up.
                        eprintln!("gmd-server: cannot record: {e}");
                        let _ = sys.msg_error(rcvid, Errno::AGAIN);
                        continue;
                    }
                };
                let _ = sys.msg_reply(rcvid, status, &[]);
            }
        }
    }
}

/// What the client does when a message fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    /// Warn and delete it (SmartSockets' default).
    Delete,
    /// Send it again with a new deadline.
    Resend,
}

/// What [`client`] reports.
#[derive(Clone, Copy, Debug)]
pub struct ClientReport {
    /// Messages found in the area at the start (left by a previous run).
    pub recovered: u64,
    /// Messages queued by this run.
    pub queued: u64,
    /// Whether the area emptied.
    pub idle: bool,
    /// The connection's counters at the end.
    pub counters: ha_lib::gmd::GmdCounters,
}

/// Opens a guaranteed-delivery connection to `name` with `cfg`, queues the messages
/// `msg-<seq>` until sequence number `count` (continuing where a previous run on the same file
/// area stopped), `pace` apart, and waits up to `wait` for the area to empty. It prints each step on stdout
/// (`queued <seq>` once `send` has returned, `failure <seq> <reason>` from the callback).
///
/// # Errors
///
/// What opening the connection or queueing a message returned.
pub fn client(
    sys: &System,
    name: &str,
    cfg: GmdConfig,
    on_failure: OnFailure,
    count: u64,
    pace: Duration,
    wait: Option<Duration>,
) -> Result<ClientReport, GmdError> {
    let cfg = cfg.on_failure(move |f| {
        let reason = match f.reason {
            FailureReason::Timeout { last_error } => format!(
                "timeout (last error {})",
                last_error.map_or("none".into(), |e| e.to_string())
            ),
            FailureReason::Refused(e) => format!("refused ({e})"),
            FailureReason::Unsendable(e) => format!("unsendable ({e})"),
        };
        println!("failure {} {reason}", f.seq);
        match on_failure {
            OnFailure::Delete => FailureAction::Delete,
            OnFailure::Resend => FailureAction::Resend,
        }
    });
    let conn = GmdConn::open(sys, Target::Name(name.to_owned()), cfg)?;
    for d in conn.damage() {
        println!("gmd-client: area damaged: {d}; good records kept");
    }
    let recovered = conn.pending().len() as u64;
    println!(
        "gmd-client: sender {} incarnation {} recovered {recovered} next {}",
        conn.sender(),
        conn.incarnation(),
        conn.next_seq()
    );
    let mut queued = 0;
    while conn.next_seq() <= count {
        let seq = conn.send(format!("msg-{}", conn.next_seq()).as_bytes())?;
        queued += 1;
        println!("queued {seq}");
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    let idle = conn.wait_idle(wait);
    let counters = conn.counters();
    conn.close()?;
    Ok(ClientReport {
        recovered,
        queued,
        idle,
        counters,
    })
}
