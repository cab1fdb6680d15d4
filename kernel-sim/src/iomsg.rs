//! The `_IO_*` message headers (QNX `sys/iomsg.h` numbers and layouts, little-endian) and the
//! helper that answers the connection bookkeeping messages (`_IO_CONNECT`, `_IO_DUP`,
//! `_IO_CLOSE`) for servers that are not resource managers.

use crate::abi::{MsgInfo, Rcvid};
use crate::{Errno, System};

/// `_IO_CONNECT`.
pub const IO_CONNECT: u16 = 0x100;
/// `_IO_READ`.
pub const IO_READ: u16 = 0x101;
/// `_IO_WRITE`.
pub const IO_WRITE: u16 = 0x102;
/// `_IO_STAT`.
pub const IO_STAT: u16 = 0x104;
/// `_IO_DEVCTL`.
pub const IO_DEVCTL: u16 = 0x106;
/// `_IO_LSEEK`.
pub const IO_LSEEK: u16 = 0x109;
/// `_IO_MSG`.
pub const IO_MSG: u16 = 0x113;
/// `_IO_DUP`.
pub const IO_DUP: u16 = 0x115;
/// `_IO_CLOSE`.
pub const IO_CLOSE: u16 = 0x116;
/// `_IO_MAX`: message types at or below this are I/O messages; servers use higher ones.
pub const IO_MAX: u16 = 0x1FF;

/// `_IO_CONNECT_OPEN` subtype.
pub const IO_CONNECT_OPEN: u16 = 2;
/// `_FTYPE_ANY`.
pub const FTYPE_ANY: u32 = 0;
/// `_FTYPE_NAME`: what `name_open` asks for.
pub const FTYPE_NAME: u32 = 12;
/// `_IO_FLAG_RD`.
pub const IO_FLAG_RD: u32 = 1;
/// `_IO_FLAG_WR`.
pub const IO_FLAG_WR: u32 = 2;

/// The message type of a message (its first two bytes), if it has them.
pub fn msg_type(msg: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*msg.first()?, *msg.get(1)?]))
}

/// `struct _io_close`: `{u16 type, u16 combine_len}`.
pub fn io_close() -> [u8; 4] {
    let mut b = [0u8; 4];
    b[0..2].copy_from_slice(&IO_CLOSE.to_le_bytes());
    b[2..4].copy_from_slice(&4u16.to_le_bytes());
    b
}

/// `struct _io_dup` (60 bytes): `{type, combine_len, struct _msg_info info (48 bytes),
/// u32 reserved, u32 key}`, carrying the old connection's identity.
pub fn io_dup(old: &crate::abi::ServerInfo) -> [u8; 60] {
    let mut b = [0u8; 60];
    b[0..2].copy_from_slice(&IO_DUP.to_le_bytes());
    b[2..4].copy_from_slice(&60u16.to_le_bytes());
    // _msg_info: nd, srcnd, pid, tid, chid, scoid, coid, msglen, srcmsglen, dstmsglen, prio, flags
    let fields: [i32; 7] = [old.nd as i32, 0, old.pid, 0, old.chid, old.scoid, old.coid];
    for (i, f) in fields.iter().enumerate() {
        b[4 + 4 * i..8 + 4 * i].copy_from_slice(&f.to_le_bytes());
    }
    b
}

/// `struct _io_connect` (40 bytes) followed by the NUL-terminated path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoConnect {
    /// `_IO_CONNECT_*` subtype.
    pub subtype: u16,
    /// `_FTYPE_*`.
    pub file_type: u32,
    /// Open flags (`O_*`), as `ioflag`.
    pub ioflag: u32,
    /// Creation mode.
    pub mode: u32,
    /// The path, relative to the server's mountpoint.
    pub path: String,
}

impl IoConnect {
    /// Size of the fixed header.
    pub const HEADER: usize = 40;

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let path = self.path.as_bytes();
        let mut b = vec![0u8; Self::HEADER + path.len() + 1];
        b[0..2].copy_from_slice(&IO_CONNECT.to_le_bytes());
        b[2..4].copy_from_slice(&self.subtype.to_le_bytes());
        b[4..8].copy_from_slice(&self.file_type.to_le_bytes());
        b[20..24].copy_from_slice(&self.ioflag.to_le_bytes());
        b[24..28].copy_from_slice(&self.mode.to_le_bytes());
        b[34..36].copy_from_slice(&((path.len() + 1) as u16).to_le_bytes());
        b[Self::HEADER..Self::HEADER + path.len()].copy_from_slice(path);
        b
    }

    /// Decodes and validates a message; `EINVAL` if it is short or malformed.
    pub fn decode(msg: &[u8]) -> Result<IoConnect, Errno> {
        if msg.len() < Self::HEADER || msg_type(msg) != Some(IO_CONNECT) {
            return Err(Errno::INVAL);
        }
        let u16at = |o: usize| u16::from_le_bytes([msg[o], msg[o + 1]]);
        let u32at = |o: usize| u32::from_le_bytes([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]]);
        let path_len = u16at(34) as usize;
        let end = Self::HEADER.checked_add(path_len).ok_or(Errno::INVAL)?;
        if path_len == 0 || end > msg.len() || msg[end - 1] != 0 {
            return Err(Errno::INVAL);
        }
        let path = std::str::from_utf8(&msg[Self::HEADER..end - 1])
            .map_err(|_| Errno::INVAL)?
            .to_owned();
        Ok(IoConnect {
            subtype: u16at(2),
            file_type: u32at(4),
            ioflag: u32at(20),
            mode: u32at(24),
            path,
        })
    }
}

/// Answers the connection bookkeeping messages a raw (non-resource-manager) server receives:
/// `_IO_CONNECT` (from `name_open`), `_IO_DUP` (from `dup`/`dup2`) and `_IO_CLOSE` (from `close`),
/// each with `EOK`, as QNX's documented plain `MsgReceive` servers do. Returns `Ok(true)` if the
/// message was one of these and has been answered, `Ok(false)` if the server must handle it.
///
/// # Errors
///
/// `ESRCH` from `msg_reply` if the client is gone.
pub fn answer_bookkeeping(
    sys: &System,
    rcvid: Rcvid,
    msg: &[u8],
    _info: &MsgInfo,
) -> Result<bool, Errno> {
    match msg_type(msg) {
        Some(IO_CONNECT) | Some(IO_DUP) | Some(IO_CLOSE) => {
            sys.msg_reply(rcvid, 0, &[])?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
