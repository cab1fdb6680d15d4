//! The delivery message a GMD sender sends, and the reply that acknowledges it.
//!
//! ```text
//! 0   u16  type GMD_DELIVER (a server-defined type, above _IO_MAX)
//! 2   u16  sender name length (1..=64)
//! 4   u32  payload length
//! 8   u64  incarnation of the sender's area
//! 16  u64  sequence number (1, 2, ... per incarnation)
//! 24  sender name (UTF-8), then the payload
//! ```
//!
//! The reply is the acknowledgement: a status of [`ack::NEW`] or [`ack::DUPLICATE`] and no
//! body. A server that refuses the message answers with `msg_error`; the sender then raises a
//! failure event with [`super::FailureReason::Refused`].

use kernel_sim::Errno;

/// The message type of a delivery (`_IO_MAX + 0x41`).
pub const GMD_DELIVER: u16 = kernel_sim::iomsg::IO_MAX + 0x41;
/// The fixed header's length.
pub const HEADER: usize = 24;
/// The longest sender name.
pub const MAX_SENDER: usize = 64;

/// Reply statuses.
pub mod ack {
    /// The receiver recorded the message now.
    pub const NEW: i32 = 0;
    /// The receiver had recorded it before (a resend after a lost acknowledgement): dropped.
    pub const DUPLICATE: i32 = 1;
}

/// Whether `name` may name a sender: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and
/// `-`, not starting with `.` (it names the area's file).
pub fn valid_sender(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SENDER
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A decoded delivery message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The sender's name.
    pub sender: &'a str,
    /// The incarnation of the sender's area (a new area starts its sequence again at 1).
    pub incarnation: u64,
    /// The sequence number.
    pub seq: u64,
    /// The message.
    pub payload: &'a [u8],
}

impl<'a> Delivery<'a> {
    /// The header and sender name of a delivery (the payload goes as a second part of the send,
    /// uncopied).
    pub fn head(sender: &str, incarnation: u64, seq: u64, payload_len: usize) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER + sender.len());
        h.extend_from_slice(&GMD_DELIVER.to_le_bytes());
        h.extend_from_slice(&(sender.len() as u16).to_le_bytes());
        h.extend_from_slice(&u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes());
        h.extend_from_slice(&incarnation.to_le_bytes());
        h.extend_from_slice(&seq.to_le_bytes());
        h.extend_from_slice(sender.as_bytes());
        h
    }

    /// Decodes a whole delivery message (as received: the server reads all of it first).
    ///
    /// # Errors
    ///
    /// - `ENOSYS`: not a delivery (another type);
    /// - `EBADMSG`: shorter than its header says, longer, a bad sender name or sequence 0.
    pub fn decode(msg: &'a [u8]) -> Result<Delivery<'a>, Errno> {
        let t = msg.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if t != Some(GMD_DELIVER) {
            return Err(Errno::NOSYS);
        }
        if msg.len() < HEADER {
            return Err(Errno::BADMSG);
        }
        let slen = u16::from_le_bytes([msg[2], msg[3]]) as usize;
        let plen = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]) as usize;
        let incarnation = super::record::u64_at(msg, 8).ok_or(Errno::BADMSG)?;
        let seq = super::record::u64_at(msg, 16).ok_or(Errno::BADMSG)?;
        if msg.len() != HEADER + slen + plen || seq == 0 {
            return Err(Errno::BADMSG);
        }
        let sender = std::str::from_utf8(&msg[HEADER..HEADER + slen]).map_err(|_| Errno::BADMSG)?;
        if !valid_sender(sender) {
            return Err(Errno::BADMSG);
        }
        Ok(Delivery {
            sender,
            incarnation,
            seq,
            payload: &msg[HEADER + slen..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_round_trips_and_bad_ones_are_refused() {
        let mut m = Delivery::head("sensor-7", 99, 5, 3);
        m.extend_from_slice(b"abc");
        let d = Delivery::decode(&m).unwrap();
        assert_eq!(
            d,
            Delivery {
                sender: "sensor-7",
                incarnation: 99,
                seq: 5,
                payload: b"abc"
            }
        );
        assert_eq!(Delivery::decode(&m[..m.len() - 1]), Err(Errno::BADMSG));
        assert_eq!(
            Delivery::decode(&[m.clone(), vec![0]].concat()),
            Err(Errno::BADMSG)
        );
        assert_eq!(Delivery::decode(&m[..10]), Err(Errno::BADMSG));
        assert_eq!(Delivery::decode(&[1, 2, 3, 4]), Err(Errno::NOSYS));
        let mut z = Delivery::head("s", 1, 0, 0);
        assert_eq!(Delivery::decode(&z), Err(Errno::BADMSG));
        z = Delivery::head("../x", 1, 1, 0);
        assert_eq!(Delivery::decode(&z), Err(Errno::BADMSG));
        assert!(!valid_sender("") && !valid_sender(".hidden") && !valid_sender("a/b"));
        assert!(valid_sender("client_1.area-2"));
    }
}
