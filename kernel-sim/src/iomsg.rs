//! The `_IO_*` message headers (QNX `sys/iomsg.h` numbers and layouts, little-endian): encoders
//! for the client helpers, [`IoMsg::decode`] that validates what a server received, the `devctl`
//! command encoding ([`dcmd`]), and the helper that answers the connection bookkeeping messages
//! (`_IO_CONNECT`, `_IO_DUP`, `_IO_CLOSE`) for servers that are not resource managers.

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
/// `_IO_BASE`: the first I/O message type.
pub const IO_BASE: u16 = 0x100;
/// `_IO_COMBINE_FLAG`: set in `combine_len` when another message follows (not supported here).
pub const IO_COMBINE_FLAG: u16 = 0x8000;
/// `_IO_XTYPE_NONE`: a plain read or write.
pub const IO_XTYPE_NONE: u32 = 0;

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

/// `_IO_CONNECT`'s `ioflag` for `open` flags `oflag` (the host's `O_*` values): the access mode
/// plus one, so that its low bits are [`IO_FLAG_RD`] and [`IO_FLAG_WR`], as QNX's libc does.
pub fn ioflag_from_oflag(oflag: i32) -> u32 {
    let acc = (oflag & libc::O_ACCMODE) as u32;
    ((oflag as u32) & !(libc::O_ACCMODE as u32)) | ((acc + 1) & libc::O_ACCMODE as u32)
}

/// `struct _io_connect` (40 bytes) followed by the NUL-terminated path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoConnect {
    /// `_IO_CONNECT_*` subtype.
    pub subtype: u16,
    /// `_FTYPE_*`.
    pub file_type: u32,
    /// The registration the path resolved to (a `resmgr_attach` handle), so the server knows
    /// which of its mountpoints was opened.
    pub handle: u32,
    /// Open flags as `ioflag` ([`ioflag_from_oflag`]): `_IO_FLAG_RD`/`_WR` in the low bits.
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
        b[16..20].copy_from_slice(&self.handle.to_le_bytes());
        b[20..24].copy_from_slice(&self.ioflag.to_le_bytes());
        b[24..28].copy_from_slice(&self.mode.to_le_bytes());
        b[34..36].copy_from_slice(&((path.len() + 1) as u16).to_le_bytes());
        b[Self::HEADER..Self::HEADER + path.len()].copy_from_slice(path);
        b
    }

    /// Decodes and validates a message.
    ///
    /// # Errors
    ///
    /// `EBADMSG`: it is short, not `_IO_CONNECT`, its path length lies or the path is not
    /// NUL-terminated UTF-8.
    pub fn decode(msg: &[u8]) -> Result<IoConnect, Errno> {
        if msg.len() < Self::HEADER || msg_type(msg) != Some(IO_CONNECT) {
            return Err(Errno::BADMSG);
        }
        let u16at = |o: usize| u16::from_le_bytes([msg[o], msg[o + 1]]);
        let u32at = |o: usize| u32::from_le_bytes([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]]);
        let path_len = u16at(34) as usize;
        let end = Self::HEADER.checked_add(path_len).ok_or(Errno::BADMSG)?;
        if path_len == 0 || end > msg.len() || msg[end - 1] != 0 {
            return Err(Errno::BADMSG);
        }
        let path = std::str::from_utf8(&msg[Self::HEADER..end - 1])
            .map_err(|_| Errno::BADMSG)?
            .to_owned();
        Ok(IoConnect {
            subtype: u16at(2),
            file_type: u32at(4),
            handle: u32at(16),
            ioflag: u32at(20),
            mode: u32at(24),
            path,
        })
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The 16-byte fd-based header `{u16 type, u16 combine_len = 16, then three 32-bit words}`
/// that `_io_read`, `_io_write`, `_io_lseek` and `_io_devctl` share.
fn header16(ty: u16, words: [u32; 3]) -> [u8; 16] {
    let mut b = [0u8; 16];
    put16(&mut b, 0, ty);
    put16(&mut b, 2, 16);
    for (i, w) in words.iter().enumerate() {
        put32(&mut b, 4 + 4 * i, *w);
    }
    b
}

/// `struct _io_read`: `{type, combine_len, i32 nbytes, u32 xtype, u32 zero}` (16 bytes). The
/// reply's status is the number of bytes read; the data is the reply body.
pub fn io_read(nbytes: u32) -> [u8; 16] {
    header16(IO_READ, [nbytes, IO_XTYPE_NONE, 0])
}

/// `struct _io_write`: `{type, combine_len, i32 nbytes, u32 xtype, u32 zero}` (16 bytes); the
/// data follows. The reply's status is the number of bytes written.
pub fn io_write(nbytes: u32) -> [u8; 16] {
    header16(IO_WRITE, [nbytes, IO_XTYPE_NONE, 0])
}

/// `struct _io_lseek`: `{type, combine_len, i16 whence, u16 zero, u64 offset}` (16 bytes). The
/// reply body is the new offset (u64).
pub fn io_lseek(whence: i16, offset: i64) -> [u8; 16] {
    let off = offset as u64;
    header16(
        IO_LSEEK,
        [whence as u16 as u32, off as u32, (off >> 32) as u32],
    )
}

/// `struct _io_devctl`: `{type, combine_len, i32 dcmd, i32 nbytes, i32 zero}` (16 bytes); the
/// data follows when the command sends any ([`dcmd::DIR_TO`]).
pub fn io_devctl(dcmd: u32, nbytes: u32) -> [u8; 16] {
    header16(IO_DEVCTL, [dcmd, nbytes, 0])
}

/// `struct _io_devctl_reply`: `{u32 zero, i32 ret_val, i32 nbytes, i32 zero2}` (16 bytes); the
/// data follows when the command returns any ([`dcmd::DIR_FROM`]).
pub fn io_devctl_reply(ret_val: i32, nbytes: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    put32(&mut b, 4, ret_val as u32);
    put32(&mut b, 8, nbytes);
    b
}

/// (`ret_val`, `nbytes`) of a `_io_devctl_reply` header; `None` if it is short.
pub fn decode_devctl_reply(b: &[u8]) -> Option<(i32, u32)> {
    (b.len() >= 16).then(|| (get32(b, 4) as i32, get32(b, 8)))
}

/// `devctl` command words, QNX `devctl.h`: the direction in the top two bits, the size of the
/// data in bits 16 to 29, a class in bits 8 to 15 and the command in bits 0 to 7.
pub mod dcmd {
    /// `_POSIX_DEVDIR_NONE`: no data either way.
    pub const DIR_NONE: u32 = 0;
    /// `_POSIX_DEVDIR_TO`: the client sends data to the driver.
    pub const DIR_TO: u32 = 0x8000_0000;
    /// `_POSIX_DEVDIR_FROM`: the driver returns data to the client.
    pub const DIR_FROM: u32 = 0x4000_0000;
    /// `_POSIX_DEVDIR_TOFROM`: both.
    pub const DIR_TOFROM: u32 = DIR_TO | DIR_FROM;
    /// `_DCMD_ALL`: commands every resource manager may support.
    pub const CLASS_ALL: u8 = 0x01;
    /// `_DCMD_MISC`: the class for an application's own commands.
    pub const CLASS_MISC: u8 = 0x05;

    const fn make(class: u8, cmd: u8, size: usize, dir: u32) -> u32 {
        (((size as u32) & 0x3FFF) << 16) | ((class as u32) << 8) | cmd as u32 | dir
    }
    /// `__DION(class, cmd)`: a command without data.
    pub const fn dion(class: u8, cmd: u8) -> u32 {
        make(class, cmd, 0, DIR_NONE)
    }
    /// `__DIOF(class, cmd, data)`: the driver returns `size` bytes.
    pub const fn diof(class: u8, cmd: u8, size: usize) -> u32 {
        make(class, cmd, size, DIR_FROM)
    }
    /// `__DIOT(class, cmd, data)`: the client sends `size` bytes.
    pub const fn diot(class: u8, cmd: u8, size: usize) -> u32 {
        make(class, cmd, size, DIR_TO)
    }
    /// `__DIOTF(class, cmd, data)`: `size` bytes each way.
    pub const fn diotf(class: u8, cmd: u8, size: usize) -> u32 {
        make(class, cmd, size, DIR_TOFROM)
    }
    /// The direction bits of `dcmd` (`get_device_direction`).
    pub const fn direction(dcmd: u32) -> u32 {
        dcmd & DIR_TOFROM
    }
    /// The data size encoded in `dcmd`.
    pub const fn size(dcmd: u32) -> usize {
        ((dcmd >> 16) & 0x3FFF) as usize
    }
    /// `DCMD_ALL_GETFLAGS`: the open's flags (an `i32`), answered by the framework's default.
    pub const ALL_GETFLAGS: u32 = diof(CLASS_ALL, 1, 4);
    /// `DCMD_ALL_SETFLAGS`: sets the open's `O_APPEND`/`O_NONBLOCK`/... flags (an `i32`).
    pub const ALL_SETFLAGS: u32 = diot(CLASS_ALL, 2, 4);
}

/// The `_msg_info` an `_IO_DUP` carries: the old connection the new one duplicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DupInfo {
    /// The server's pid.
    pub pid: i32,
    /// The server's chid.
    pub chid: i32,
    /// The old connection's scoid.
    pub scoid: i32,
    /// The old coid.
    pub coid: i32,
}

/// An I/O message a server received, decoded and validated by [`IoMsg::decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum IoMsg<'m> {
    /// `_IO_CONNECT` (from `open` or `name_open`).
    Connect(IoConnect),
    /// `_IO_READ` of `nbytes`.
    Read {
        /// Bytes asked for.
        nbytes: u32,
        /// `_IO_XTYPE_*` (only `NONE` is defined here).
        xtype: u32,
    },
    /// `_IO_WRITE` of `nbytes`; `data` is the part that arrived with the message (the rest, if
    /// the receive buffer was shorter, is read with `msg_read` from offset 16).
    Write {
        /// Bytes to write.
        nbytes: u32,
        /// `_IO_XTYPE_*`.
        xtype: u32,
        /// The data received so far.
        data: &'m [u8],
    },
    /// `_IO_LSEEK`.
    Lseek {
        /// `SEEK_SET`, `SEEK_CUR` or `SEEK_END` (0, 1, 2).
        whence: i16,
        /// The offset.
        offset: i64,
    },
    /// `_IO_DEVCTL`; `data` is what arrived with the message.
    Devctl {
        /// The command.
        dcmd: u32,
        /// The size of the client's data buffer.
        nbytes: u32,
        /// The data received (when the command sends any).
        data: &'m [u8],
    },
    /// `_IO_CLOSE`.
    Close,
    /// `_IO_DUP`: the connection it arrived on duplicates `0`.
    Dup(DupInfo),
    /// Another I/O message type (`_IO_STAT`, ...), not decoded here.
    Other(u16),
    /// A type above `_IO_MAX`: a server-defined message.
    Private(u16),
}

impl<'m> IoMsg<'m> {
    /// Decodes a received message. `msg` is what the receive buffer holds and `srclen` the
    /// length the client sent (`MsgInfo::srcmsglen`), so a length field that promises more than
    /// the client sent is caught.
    ///
    /// # Errors
    ///
    /// `EBADMSG`: no type, a header shorter than its type needs, a `combine_len` that is not
    /// the header's size (combined messages are not supported), or a byte count beyond what the
    /// client sent. `EINVAL`: a negative byte count.
    pub fn decode(msg: &'m [u8], srclen: usize) -> Result<IoMsg<'m>, Errno> {
        let ty = msg_type(msg).ok_or(Errno::BADMSG)?;
        if ty > IO_MAX {
            return Ok(IoMsg::Private(ty));
        }
        if ty == IO_CONNECT {
            return IoConnect::decode(msg).map(IoMsg::Connect);
        }
        let header = match ty {
            IO_READ | IO_WRITE | IO_LSEEK | IO_DEVCTL => 16,
            IO_CLOSE => 4,
            IO_DUP => 60,
            _ => return Ok(IoMsg::Other(ty)),
        };
        if msg.len() < header || srclen < header || get16(msg, 2) as usize != header {
            return Err(Errno::BADMSG);
        }
        let (w1, w2, w3) = if header == 16 {
            (get32(msg, 4), get32(msg, 8), get32(msg, 12))
        } else {
            (0, 0, 0)
        };
        let sent = srclen - header;
        let body = |n: usize| &msg[header..msg.len().min(header + n)];
        Ok(match ty {
            IO_READ | IO_WRITE if (w1 as i32) < 0 => return Err(Errno::INVAL),
            IO_READ => IoMsg::Read {
                nbytes: w1,
                xtype: w2,
            },
            IO_WRITE if w1 as usize > sent => return Err(Errno::BADMSG),
            IO_WRITE => IoMsg::Write {
                nbytes: w1,
                xtype: w2,
                data: body(w1 as usize),
            },
            IO_LSEEK => IoMsg::Lseek {
                whence: w1 as u16 as i16,
                offset: (w2 as u64 | ((w3 as u64) << 32)) as i64,
            },
            IO_DEVCTL => {
                let to = dcmd::direction(w1) & dcmd::DIR_TO != 0;
                if (w2 as i32) < 0 || (to && w2 as usize > sent) {
                    return Err(Errno::BADMSG);
                }
                IoMsg::Devctl {
                    dcmd: w1,
                    nbytes: w2,
                    data: if to { body(w2 as usize) } else { &[] },
                }
            }
            IO_CLOSE => IoMsg::Close,
            _ => {
                // _IO_DUP: _msg_info {nd, srcnd, pid, tid, chid, scoid, coid, ...} at 4.
                let at = |k: usize| get32(msg, 4 + 4 * k) as i32;
                IoMsg::Dup(DupInfo {
                    pid: at(2),
                    chid: at(4),
                    scoid: at(5),
                    coid: at(6),
                })
            }
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
