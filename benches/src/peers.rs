//! The peers a user would pick instead of kernel-sim, as echo servers in another process: `pipe`
//! (two pipes, one per direction), `uds_stream` and `uds_seqpacket` (a connected pair of Unix
//! sockets). The bench creates the pair and the child inherits its ends: their numbers travel in
//! [`FDS_ENV`].
//!
//! Default buffer sizes, as a user would have them, except that a `uds_seqpacket` pair gets a
//! send buffer large enough for one record of the payload (Linux refuses a record larger than the
//! send buffer, 208 KiB by default; `net.core.wmem_max` caps what may be asked).
//! Byte streams carry no empty message, and a 0-byte record reads like end-of-file, so these
//! peers have no 0-byte case.

use crate::error::{io as io_err, BenchError};
use crate::floor::os::{self, PairKind};
use crate::process::{PeerProcess, Placement};
use crate::role::{env_number, env_required, say_ready, Role};
use crate::rtt::{Driver, Exchange, RoundTrip, STOP_TIMEOUT};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

/// The kind of the channel: `pipe`, `uds_stream` or `uds_seqpacket`.
pub const KIND_ENV: &str = "QSIM_BENCH_KIND";
/// The inherited descriptors: `<read> <write>` for a pipe pair, `<socket>` otherwise.
pub const FDS_ENV: &str = "QSIM_BENCH_FDS";
/// The payload length the server reads per request on a byte stream.
pub const LEN_ENV: &str = "QSIM_BENCH_LEN";
/// Largest payload of these peers: 64 MiB.
pub const MAX_LEN: usize = 64 << 20;

/// The case name of each kind.
pub fn kind_name(kind: PairKind) -> &'static str {
    match kind {
        PairKind::Pipe => "pipe",
        PairKind::UnixStream => "uds_stream",
        PairKind::UnixSeqpacket => "uds_seqpacket",
    }
}

fn parse_kind(s: &str) -> Option<PairKind> {
    [
        PairKind::Pipe,
        PairKind::UnixStream,
        PairKind::UnixSeqpacket,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == s)
}

/// Why `kind` cannot carry `len`-byte messages, if it cannot.
pub fn unsupported(kind: PairKind, len: usize) -> Option<&'static str> {
    match (kind, len) {
        (PairKind::UnixSeqpacket, 0) => Some("a 0-byte record reads like end-of-file"),
        (_, 0) => Some("a byte stream carries no empty message"),
        (_, l) if l > MAX_LEN => Some("payload above 64 MiB"),
        _ => None,
    }
}

/// This process's ends of the channel.
enum Ends {
    Pipe { tx: File, rx: File },
    Socket { sock: UnixStream, records: bool },
}

/// A pipe or socket echo server in its own process, and this process's ends.
pub struct StreamPeer {
    // The ends close first: the server sees end-of-file and exits.
    ends: Ends,
    server: PeerProcess,
}

impl StreamPeer {
    /// Creates the pair, starts a `stream-server` on the other ends and closes this process's
    /// copies of them.
    ///
    /// # Errors
    ///
    /// [`BenchError::Config`] if the kind cannot carry `len` bytes ([`unsupported`]); creating the
    /// pair or starting the server failed.
    pub fn start(kind: PairKind, len: usize, placement: &Placement) -> Result<Self, BenchError> {
        if let Some(why) = unsupported(kind, len) {
            return Err(BenchError::Config(format!("{}: {why}", kind_name(kind))));
        }
        let (ends, theirs): (Ends, Vec<OwnedFd>) = match kind {
            PairKind::Pipe => {
                let (req_r, req_w) = os::pipe().map_err(io_err("pipe"))?;
                let (rep_r, rep_w) = os::pipe().map_err(io_err("pipe"))?;
                (
                    Ends::Pipe {
                        tx: File::from(req_w),
                        rx: File::from(rep_r),
                    },
                    vec![req_r, rep_w],
                )
            }
            PairKind::UnixStream | PairKind::UnixSeqpacket => {
                let (ours, theirs) = os::socket_pair(kind).map_err(io_err("socketpair"))?;
                let records = kind == PairKind::UnixSeqpacket;
                if records && len > 64 * 1024 {
                    for fd in [ours.as_fd(), theirs.as_fd()] {
                        os::set_send_buffer(fd, len + 64 * 1024)
                            .map_err(io_err("setsockopt(SO_SNDBUF)"))?;
                    }
                }
                (
                    Ends::Socket {
                        sock: UnixStream::from(ours),
                        records,
                    },
                    vec![theirs],
                )
            }
        };
        let mut numbers = Vec::new();
        for fd in &theirs {
            os::set_inheritable(fd.as_fd(), true).map_err(io_err("fcntl(F_SETFD)"))?;
            numbers.push(fd.as_raw_fd().to_string());
        }
        let (server, _) = PeerProcess::spawn(
            Role::StreamServer,
            &[
                (KIND_ENV, kind_name(kind).to_owned()),
                (FDS_ENV, numbers.join(" ")),
                (LEN_ENV, len.to_string()),
            ],
            placement,
        )?;
        // Only the server holds its ends now, so its exit or our close is seen as end-of-file.
        drop(theirs);
        Ok(StreamPeer { ends, server })
    }
}

impl Exchange for Ends {
    #[inline]
    fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> Result<usize, BenchError> {
        let len = msg.len();
        let room = reply.len();
        let short = || BenchError::Exchange(format!("reply buffer of {room} < {len}"));
        match self {
            Ends::Pipe { tx, rx } => {
                tx.write_all(msg).map_err(io_err("write(pipe)"))?;
                let dst = reply.get_mut(..len).ok_or_else(short)?;
                rx.read_exact(dst).map_err(io_err("read(pipe)"))?;
                Ok(len)
            }
            Ends::Socket {
                sock,
                records: false,
            } => {
                sock.write_all(msg).map_err(io_err("write(uds_stream)"))?;
                let dst = reply.get_mut(..len).ok_or_else(short)?;
                sock.read_exact(dst).map_err(io_err("read(uds_stream)"))?;
                Ok(len)
            }
            Ends::Socket {
                sock,
                records: true,
            } => {
                let sent = sock.write(msg).map_err(io_err("write(uds_seqpacket)"))?;
                if sent != len {
                    return Err(BenchError::Exchange(format!(
                        "a {len}-byte record went out as {sent} bytes"
                    )));
                }
                sock.read(reply).map_err(io_err("read(uds_seqpacket)"))
            }
        }
    }
}

impl RoundTrip for StreamPeer {
    fn with_exchange<D: Driver>(&mut self, driver: D) -> D::Output {
        driver.drive(&mut self.ends)
    }

    fn resources(&self) -> (Vec<u32>, Vec<PathBuf>) {
        (vec![self.server.pid()], Vec::new())
    }

    fn stop(self) -> Result<(), BenchError> {
        let StreamPeer { ends, server } = self;
        drop(ends);
        server.wait_exit(STOP_TIMEOUT)
    }
}

/// Reads into `buf` until it is full; `Ok(false)` on end-of-file before the first byte.
fn read_message(rx: &mut impl Read, buf: &mut [u8]) -> Result<bool, BenchError> {
    let mut got = 0;
    while got < buf.len() {
        match rx.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(BenchError::Exchange(format!(
                    "end-of-file after {got} of {} bytes",
                    buf.len()
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read")(e)),
        }
    }
    Ok(true)
}

/// The `stream-server` role: takes the inherited ends named in [`FDS_ENV`], prints
/// `ready <pid>`, and echoes until the bench closes its ends.
pub(crate) fn serve_from_env() -> Result<(), BenchError> {
    let kind_s = env_required(KIND_ENV)?;
    let kind =
        parse_kind(&kind_s).ok_or_else(|| BenchError::Config(format!("{KIND_ENV}={kind_s:?}")))?;
    let len = env_number(LEN_ENV, 0, 1..=MAX_LEN)?;
    let fds_s = env_required(FDS_ENV)?;
    let numbers: Vec<i32> = fds_s
        .split_ascii_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| BenchError::Config(format!("{FDS_ENV}={fds_s:?}")))?;
    let take = |raw: i32| os::take_inherited_fd(raw, kind).map_err(io_err("inherited descriptor"));
    let mut buf = vec![0u8; len];
    match (kind, numbers.as_slice()) {
        (PairKind::Pipe, &[r, w]) => {
            let (mut rx, mut tx) = (File::from(take(r)?), File::from(take(w)?));
            say_ready(format_args!("{}", std::process::id()))?;
            while read_message(&mut rx, &mut buf)? {
                tx.write_all(&buf).map_err(io_err("write"))?;
            }
        }
        (PairKind::UnixStream, &[s]) => {
            let mut sock = UnixStream::from(take(s)?);
            say_ready(format_args!("{}", std::process::id()))?;
            while read_message(&mut sock, &mut buf)? {
                sock.write_all(&buf).map_err(io_err("write"))?;
            }
        }
        (PairKind::UnixSeqpacket, &[s]) => {
            let mut sock = UnixStream::from(take(s)?);
            say_ready(format_args!("{}", std::process::id()))?;
            loop {
                let n = match sock.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err("read")(e)),
                };
                let sent = sock.write(&buf[..n]).map_err(io_err("write"))?;
                if sent != n {
                    return Err(BenchError::Exchange(format!(
                        "a {n}-byte record went out as {sent} bytes"
                    )));
                }
            }
        }
        _ => {
            return Err(BenchError::Config(format!(
                "{FDS_ENV}={fds_s:?} for {kind_s}"
            )))
        }
    }
    Ok(())
}
