//! Types shared by the kernel, the HA library and servers: errno values, handle newtypes, flag
//! constants, `_msg_info`, `_pulse` and pulse codes.
//!
//! Numbers follow QNX Neutrino 6.4.1 (`sys/neutrino.h`) where a client can observe them; errno
//! values are the host's (Linux) numbers, with QNX-only codes placed above Linux's range.

use core::fmt;

/// An error number, as QNX kernel calls return them (`-1` with `errno`, or `-errno` from `_r` forms).
///
/// A newtype over the raw value rather than a closed enum: `msg_error` relays any errno a server
/// chooses, and the client must see exactly that value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(i32);

macro_rules! errnos {
    ($($(#[$m:meta])* $name:ident = $val:expr, $c:literal;)*) => {
        impl Errno {
            $(
                $(#[$m])*
                #[doc = concat!("`", $c, "`")]
                #[doc(alias = $c)]
                pub const $name: Errno = Errno($val);
            )*

            /// The C name of this errno (`"ESRCH"`), or `None` for a value this crate does not name.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $(v if v == $val => Some($c),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    /// Success, as `MsgError(rcvid, EOK)` uses it.
    OK = 0, "EOK";
    PERM = libc::EPERM, "EPERM";
    NOENT = libc::ENOENT, "ENOENT";
    /// No such process, channel or receive id; the server died while the client was blocked.
    SRCH = libc::ESRCH, "ESRCH";
    INTR = libc::EINTR, "EINTR";
    IO = libc::EIO, "EIO";
    NXIO = libc::ENXIO, "ENXIO";
    /// Bad connection id, or one whose server's channel is gone.
    BADF = libc::EBADF, "EBADF";
    AGAIN = libc::EAGAIN, "EAGAIN";
    NOMEM = libc::ENOMEM, "ENOMEM";
    ACCES = libc::EACCES, "EACCES";
    FAULT = libc::EFAULT, "EFAULT";
    BUSY = libc::EBUSY, "EBUSY";
    EXIST = libc::EEXIST, "EEXIST";
    NOTDIR = libc::ENOTDIR, "ENOTDIR";
    INVAL = libc::EINVAL, "EINVAL";
    NFILE = libc::ENFILE, "ENFILE";
    MFILE = libc::EMFILE, "EMFILE";
    NOTTY = libc::ENOTTY, "ENOTTY";
    NOSPC = libc::ENOSPC, "ENOSPC";
    ROFS = libc::EROFS, "EROFS";
    NAMETOOLONG = libc::ENAMETOOLONG, "ENAMETOOLONG";
    NOSYS = libc::ENOSYS, "ENOSYS";
    /// A message larger than the system's message-size limit (a simulator limit; QNX has none).
    MSGSIZE = libc::EMSGSIZE, "EMSGSIZE";
    NOTSUP = libc::ENOTSUP, "ENOTSUP";
    TIMEDOUT = libc::ETIMEDOUT, "ETIMEDOUT";
    OVERFLOW = libc::EOVERFLOW, "EOVERFLOW";
    /// A malformed message: a header shorter than its type needs, or a length that lies.
    BADMSG = libc::EBADMSG, "EBADMSG";
    ISDIR = libc::EISDIR, "EISDIR";
    FBIG = libc::EFBIG, "EFBIG";
    SPIPE = libc::ESPIPE, "ESPIPE";
    /// QNX `ENOREMOTE`: a non-local node descriptor (no network manager). No Linux equivalent.
    NOREMOTE = 2001, "ENOREMOTE";
    /// QNX `ESRVRFAULT`: the server faulted on a transfer. No Linux equivalent; the simulator
    /// never produces it (Rust slices cannot fault).
    SRVRFAULT = 2002, "ESRVRFAULT";
    /// QNX `ERESTART`: a server's `MsgError(rcvid, ERESTART)` makes the client re-send.
    RESTART = 2003, "ERESTART";
}

impl Errno {
    /// Wraps a raw errno value.
    pub const fn from_raw(raw: i32) -> Self {
        Errno(raw)
    }

    /// The raw errno value.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The calling thread's current OS `errno`.
    pub fn last_os_error() -> Self {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let desc = match *self {
            Errno::NOREMOTE => "remote node not reachable".to_string(),
            Errno::SRVRFAULT => "server fault on message transfer".to_string(),
            Errno::RESTART => "restart the call".to_string(),
            Errno::OK => "success".to_string(),
            _ => std::io::Error::from_raw_os_error(self.0).to_string(),
        };
        match self.name() {
            Some(n) => write!(f, "{n}: {desc}"),
            None => write!(f, "errno {}: {desc}", self.0),
        }
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

/// The result of a kernel call.
pub type Result<T> = core::result::Result<T, Errno>;

/// An OS process id (`pid_t`). `Pid(0)` means "the caller's own process" where QNX allows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub i32);

/// A channel id, as `ChannelCreate` returns it (>= 1, from the per-process pool it shares with
/// scoids and side-channel coids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Chid(pub i32);

/// A connection id: an fd-range number (0, 1, 2, ...) or a side-channel number
/// (`0x4000_0000 | n`, n >= 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coid(pub i32);

/// A receive id naming a REPLY-blocked client thread (> 0), as `MsgReceive` returns it.
///
/// Layout (simulator's choice): bits 16..31 hold the client's thread-slot index + 1, bits 0..15
/// a 16-bit generation of that slot. The generation changes when the client thread exits or next
/// sends through a different connection, so the same thread sending again on the same connection
/// gets the same rcvid, as in QNX, and a stale rcvid gives `ESRCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rcvid(pub i32);

/// A server connection id, with the side-channel bit set, as pulses and `msg_info` report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scoid(pub i32);

/// The node descriptor of the local node (`ND_LOCAL_NODE`).
pub const ND_LOCAL_NODE: u32 = 0;

/// `_NTO_SIDE_CHANNEL`: the bit that marks side-channel coids (and scoids in pulses and infos).
pub const SIDE_CHANNEL: i32 = 0x4000_0000;

/// Channel flags (`_NTO_CHF_*`), QNX 6.4.1 values.
pub mod chf {
    /// `_NTO_CHF_FIXED_PRIORITY`: receivers do not take the sender's priority.
    pub const FIXED_PRIORITY: u32 = 0x0001;
    /// `_NTO_CHF_UNBLOCK`: a REPLY-blocked client that tries to unblock stays blocked and the
    /// server gets an UNBLOCK pulse.
    pub const UNBLOCK: u32 = 0x0002;
    /// `_NTO_CHF_THREAD_DEATH`: a pulse when a thread of this process dies.
    pub const THREAD_DEATH: u32 = 0x0004;
    /// `_NTO_CHF_DISCONNECT`: a pulse when a client connection's last link goes.
    pub const DISCONNECT: u32 = 0x0008;
    /// `_NTO_CHF_NET_MSG` (network manager only).
    pub const NET_MSG: u32 = 0x0010;
    /// `_NTO_CHF_SENDER_LEN`.
    pub const SENDER_LEN: u32 = 0x0020;
    /// `_NTO_CHF_COID_DISCONNECT`: a pulse when a connection of this process dies because its
    /// server's channel went away.
    pub const COID_DISCONNECT: u32 = 0x0040;
    /// `_NTO_CHF_REPLY_LEN`.
    pub const REPLY_LEN: u32 = 0x0080;
    /// `_NTO_CHF_STICKY`.
    pub const STICKY: u32 = 0x0100;
    /// `_NTO_CHF_ASYNC_NONBLOCK`.
    pub const ASYNC_NONBLOCK: u32 = 0x0200;
    /// `_NTO_CHF_ASYNC`.
    pub const ASYNC: u32 = 0x0400;
    /// `_NTO_CHF_GLOBAL`.
    pub const GLOBAL: u32 = 0x0800;
}

/// `resmgr_attach` flags (`_RESMGR_FLAG_*`), QNX 6.4.1 values. The simulator acts on
/// `BEFORE`, `AFTER` and `DIR`; the others are accepted and recorded (shown by `pidin`).
pub mod resmgr_flag {
    /// `_RESMGR_FLAG_BEFORE`: stay ahead of registrations made later at the same mountpoint.
    pub const BEFORE: u32 = 0x0001;
    /// `_RESMGR_FLAG_AFTER`: stay behind registrations made later at the same mountpoint.
    pub const AFTER: u32 = 0x0002;
    /// `_RESMGR_FLAG_OPAQUE`: do not resolve to servers at shorter mountpoints (recorded only).
    pub const OPAQUE: u32 = 0x0004;
    /// `_RESMGR_FLAG_FTYPEONLY` (recorded only).
    pub const FTYPEONLY: u32 = 0x0008;
    /// `_RESMGR_FLAG_FTYPEALL` (recorded only).
    pub const FTYPEALL: u32 = 0x0010;
    /// `_RESMGR_FLAG_DIR`: the mountpoint is a directory; longer paths below it resolve to
    /// this server, which receives the rest of the path in `_IO_CONNECT`.
    pub const DIR: u32 = 0x0100;
    /// `_RESMGR_FLAG_SELF` (recorded only).
    pub const SELF: u32 = 0x0200;
    /// Every valid flag.
    pub const MASK: u32 = 0x031f;
}

/// Connection flags (`_NTO_COF_*`), QNX 6.4.1 values.
pub mod cof {
    /// `_NTO_COF_CLOEXEC`.
    pub const CLOEXEC: u32 = 0x0001;
    /// `_NTO_COF_DEAD`: reported by `connect_server_info` for a connection whose server is gone.
    pub const DEAD: u32 = 0x0002;
    /// `_NTO_COF_NOSHARE`: do not share the server connection with other coids.
    pub const NOSHARE: u32 = 0x0040;
    /// `_NTO_COF_NETCON`.
    pub const NETCON: u32 = 0x0080;
    /// `_NTO_COF_NONBLOCK`.
    pub const NONBLOCK: u32 = 0x0100;
    /// `_NTO_COF_ASYNC`.
    pub const ASYNC: u32 = 0x0200;
    /// `_NTO_COF_GLOBAL`.
    pub const GLOBAL: u32 = 0x0400;
    /// Every flag bit `connect_attach` accepts; any other bit gives `EINVAL`.
    pub const ALL: u32 = CLOEXEC | DEAD | NOSHARE | NETCON | NONBLOCK | ASYNC | GLOBAL;
}

/// `_msg_info` flags (`_NTO_MI_*`).
pub mod mi {
    /// `_NTO_MI_UNBLOCK_REQ`: the client asked to unblock (channel with `_NTO_CHF_UNBLOCK`).
    pub const UNBLOCK_REQ: u32 = 0x100;
}

/// Kernel pulse codes (`_PULSE_CODE_*`). User codes are 0..=127.
pub mod pulse_code {
    /// `_PULSE_CODE_UNBLOCK`: value = the rcvid of the client that wants to unblock.
    pub const UNBLOCK: i8 = -32;
    /// `_PULSE_CODE_DISCONNECT`: value 0; the scoid field names the connection.
    pub const DISCONNECT: i8 = -33;
    /// `_PULSE_CODE_THREADDEATH`: value = the dead thread's tid.
    pub const THREADDEATH: i8 = -34;
    /// `_PULSE_CODE_COIDDEATH`: value = the coid whose server died.
    pub const COIDDEATH: i8 = -35;
    /// `_PULSE_CODE_MINAVAIL`.
    pub const MINAVAIL: i8 = 0;
    /// `_PULSE_CODE_MAXAVAIL`.
    pub const MAXAVAIL: i8 = 127;
}

/// A pulse as `MsgReceive` delivers it (`struct _pulse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pulse {
    /// The pulse code: a kernel code (negative) or a user code (0..=127).
    pub code: i8,
    /// The pulse value (`sigval`).
    pub value: i32,
    /// The server connection it came through, with the side-channel bit set; -1 for kernel
    /// pulses that name no connection (COIDDEATH, THREADDEATH).
    pub scoid: i32,
    /// The priority it was sent at.
    pub priority: u8,
}

impl Pulse {
    /// The size of `struct _pulse` in this simulator: a receive buffer smaller than this gets
    /// `EFAULT` when a pulse arrives (and the pulse is lost), as in QNX.
    pub const WIRE_SIZE: usize = 16;

    /// The pulse in its 16-byte wire form: `u16 type, u16 subtype, i8 code, u8 zero[3],
    /// i32 value, i32 scoid`, little-endian, as `_pulse` lays it out.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[4] = self.code as u8;
        b[8..12].copy_from_slice(&self.value.to_le_bytes());
        b[12..16].copy_from_slice(&self.scoid.to_le_bytes());
        b
    }

    /// Parses the 16-byte wire form; `None` if `bytes` is shorter.
    pub fn from_bytes(bytes: &[u8]) -> Option<Pulse> {
        if bytes.len() < 16 {
            return None;
        }
        Some(Pulse {
            code: bytes[4] as i8,
            value: i32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            scoid: i32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
            priority: 0,
        })
    }
}

/// What `MsgReceive` and `MsgInfo` tell a server about a message (`struct _msg_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MsgInfo {
    /// Node descriptor of the client (always the local node).
    pub nd: u32,
    /// Source node descriptor (always the local node).
    pub srcnd: u32,
    /// The client's OS pid.
    pub pid: i32,
    /// The client's thread id (its thread-slot number within its process + 1).
    pub tid: i32,
    /// The channel the message arrived on.
    pub chid: i32,
    /// The server connection, with the side-channel bit set.
    pub scoid: i32,
    /// The client's coid that the message was sent through.
    pub coid: i32,
    /// Bytes copied into the receive buffer.
    pub msglen: u32,
    /// Bytes the client sent (always filled, as the 6.4.1 kernel does).
    pub srcmsglen: u32,
    /// Bytes of reply buffer the client provided (always filled).
    pub dstmsglen: u32,
    /// The client thread's priority.
    pub priority: u8,
    /// `_NTO_MI_*` flags.
    pub flags: u32,
}

/// What `connect_server_info` reports about a connection (`struct _server_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServerInfo {
    /// Node descriptor (always local).
    pub nd: u32,
    /// The server's OS pid.
    pub pid: i32,
    /// The server's channel id.
    pub chid: i32,
    /// The server connection id, with the side-channel bit set.
    pub scoid: i32,
    /// The coid this information is about (may be higher than the one asked for).
    pub coid: i32,
    /// `_NTO_COF_*` flags; `cof::DEAD` when the server's channel is gone.
    pub flags: u32,
}

/// What `connect_client_info` reports about a client (`struct _client_info`, without groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClientInfo {
    /// Node descriptor (always local).
    pub nd: u32,
    /// The client's OS pid.
    pub pid: i32,
    /// Real user id of the client when it registered.
    pub ruid: u32,
    /// Effective user id of the client when it registered.
    pub euid: u32,
    /// Real group id.
    pub rgid: u32,
    /// Effective group id.
    pub egid: u32,
}

/// The lowest and highest simulated thread priorities (QNX: 1..=255 for ordinary threads).
pub const PRIORITY_MIN: u8 = 1;
/// See [`PRIORITY_MIN`].
pub const PRIORITY_MAX: u8 = 255;
/// The priority a thread starts with, as in QNX.
pub const PRIORITY_DEFAULT: u8 = 10;

/// A `struct sigevent`, as servers deliver it to clients (`MsgDeliverEvent`) and timers fire it.
/// Only the kinds the simulator can deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigEvent {
    /// `SIGEV_PULSE`: a pulse through `coid` (a coid of the process the event is delivered to),
    /// with `priority` (-1: that of the thread it is delivered for), `code` and `value`.
    Pulse {
        /// The connection the pulse goes through.
        coid: Coid,
        /// Pulse priority, -1 for the receiving thread's.
        priority: i32,
        /// Pulse code (0..=127 for user pulses).
        code: i8,
        /// Pulse value.
        value: i32,
    },
    /// `SIGEV_NONE`: nothing is delivered.
    None,
}
