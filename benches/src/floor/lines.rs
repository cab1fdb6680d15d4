//! The floor protocol: one request line and one reply line in a [`SharedMapping`], each a
//! sequence word, a length word and the payload, handed over by spinning or by a shared futex.
//!
//! Layout (each direction starts on its own 128-byte boundary, so the adjacent-line prefetcher
//! does not pair the two directions' lines):
//!
//! ```text
//! offset 0               request: seq u32 | len u32 | payload (up to FLOOR_MAX_PAYLOAD bytes)
//! offset DIRECTION_STRIDE reply:   seq u32 | len u32 | payload
//! ```
//!
//! A payload of up to 56 bytes shares the 64-byte cache line of its sequence word, so an 8-byte
//! round trip moves one line each way, as the floor should.
//!
//! Ownership: the client owns the request payload while it has no request outstanding (every
//! request sequence number it published has been answered on the reply line); the server owns it
//! from the moment it observes a new request sequence number until it publishes the reply with
//! that number. The reply payload is the mirror image. Sequence words are stored with `Release`
//! after the payload and length are written and loaded with `Acquire` before they are read, so
//! each side's copy happens-after the other side's last access.

use super::mapping::SharedMapping;
use super::os;
use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

/// Largest payload either direction carries.
pub const FLOOR_MAX_PAYLOAD: usize = 1024 * 1024;

/// Sequence word and length word.
const HEADER: usize = 8;

/// Distance between the two directions: header plus payload, rounded up to 128 bytes.
const DIRECTION_STRIDE: usize = (HEADER + FLOOR_MAX_PAYLOAD).div_ceil(128) * 128;

/// The size of a floor mapping.
pub const FLOOR_MAPPING_LEN: usize = 2 * DIRECTION_STRIDE;

/// The length word's value that asks the server to exit.
const STOP: u32 = u32::MAX;

/// How one side tells the other that its line changed, and waits for the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handoff {
    /// Spin on the sequence word; never sleep, never enter the kernel.
    Spin,
    /// Sleep on the sequence word with a shared futex, wake the peer after every store; never
    /// spin.
    Futex,
}

impl Handoff {
    /// Publishes `seq` on `dir` (after its payload and length were written).
    fn publish(self, dir: &Direction<'_>, seq: u32) {
        dir.seq.store(seq, Ordering::Release);
        if self == Handoff::Futex {
            os::futex_wake_one(dir.seq);
        }
    }

    /// Waits until `dir`'s sequence word differs from `from`; returns the new value.
    fn await_change(self, dir: &Direction<'_>, from: u32) -> u32 {
        loop {
            let now = dir.seq.load(Ordering::Acquire);
            if now != from {
                return now;
            }
            match self {
                Handoff::Spin => std::hint::spin_loop(),
                Handoff::Futex => os::futex_wait(dir.seq, from),
            }
        }
    }
}

/// One direction of the mapping.
struct Direction<'a> {
    seq: &'a AtomicU32,
    len: &'a AtomicU32,
    payload: *mut u8,
    _map: PhantomData<&'a SharedMapping>,
}

impl<'a> Direction<'a> {
    /// The direction at `offset` (0 or [`DIRECTION_STRIDE`]); the mapping was checked to hold
    /// [`FLOOR_MAPPING_LEN`] bytes.
    fn at(map: &'a SharedMapping, offset: usize) -> Self {
        debug_assert!(offset + DIRECTION_STRIDE <= map.len());
        // SAFETY: `offset` and `offset + 4` are within the mapping (checked by `Lines::new`) and
        // 4-byte aligned (the base is page-aligned, the offsets multiples of 128 and 4). The bytes
        // are valid `AtomicU32`s (any bit pattern is; the file started zeroed), only ever accessed
        // atomically by both processes, and the mapping outlives `'a`.
        let (seq, len, payload) = unsafe {
            let base = map.base().add(offset);
            (
                &*base.cast::<AtomicU32>(),
                &*base.add(4).cast::<AtomicU32>(),
                base.add(HEADER),
            )
        };
        Direction {
            seq,
            len,
            payload,
            _map: PhantomData,
        }
    }

    /// Copies `src` (cut to [`FLOOR_MAX_PAYLOAD`]) into the payload and sets the length.
    ///
    /// # Safety
    ///
    /// The caller owns this direction's payload under the protocol (module docs): the peer is
    /// neither reading nor writing it now.
    unsafe fn put(&self, src: &[u8]) {
        let n = src.len().min(FLOOR_MAX_PAYLOAD);
        // SAFETY: the payload area holds FLOOR_MAX_PAYLOAD bytes inside the mapping and `n` is at
        // most that; `src` is private memory, so the ranges do not overlap; the caller guarantees
        // that no other access to the area is concurrent.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.payload, n) };
        self.len.store(n as u32, Ordering::Relaxed);
    }

    /// Copies the payload out into `dst` (as much as fits); returns the payload's length, cut to
    /// [`FLOOR_MAX_PAYLOAD`] (the length word comes from the other process).
    ///
    /// # Safety
    ///
    /// As for [`Direction::put`].
    unsafe fn take(&self, dst: &mut [u8]) -> usize {
        let n = (self.len.load(Ordering::Relaxed) as usize).min(FLOOR_MAX_PAYLOAD);
        let copy = n.min(dst.len());
        // SAFETY: `copy` is at most FLOOR_MAX_PAYLOAD, the size of the payload area, and at most
        // `dst.len()`; `dst` is private memory, so the ranges do not overlap; the caller
        // guarantees that no other access to the area is concurrent.
        unsafe { core::ptr::copy_nonoverlapping(self.payload, dst.as_mut_ptr(), copy) };
        n
    }
}

/// Both directions of a floor mapping.
struct Lines<'a> {
    request: Direction<'a>,
    reply: Direction<'a>,
}

impl<'a> Lines<'a> {
    fn new(map: &'a SharedMapping) -> io::Result<Self> {
        if map.len() < FLOOR_MAPPING_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a floor mapping needs {FLOOR_MAPPING_LEN} bytes, {} has {}",
                    map.path().display(),
                    map.len()
                ),
            ));
        }
        Ok(Lines {
            request: Direction::at(map, 0),
            reply: Direction::at(map, DIRECTION_STRIDE),
        })
    }
}

/// The client side of a floor: sends a payload, waits for the echo.
pub struct FloorClient<'a> {
    lines: Lines<'a>,
    handoff: Handoff,
    seq: u32,
}

impl<'a> FloorClient<'a> {
    /// A client on `map` (at least [`FLOOR_MAPPING_LEN`] bytes) whose server runs [`serve`] with
    /// the same `handoff`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if the mapping is too small.
    pub fn new(map: &'a SharedMapping, handoff: Handoff) -> io::Result<Self> {
        let lines = Lines::new(map)?;
        // Continue from whatever an earlier client on this mapping left (0 on a fresh one).
        let seq = lines.request.seq.load(Ordering::Acquire);
        Ok(FloorClient {
            lines,
            handoff,
            seq,
        })
    }

    /// One round trip: copies `msg` into the request line, hands it over, waits for the reply
    /// and copies it into `reply`. Returns the reply's length.
    ///
    /// Blocks (spinning or sleeping) until the server answers; a dead server is never noticed,
    /// so run it under a watchdog.
    pub fn round_trip(&mut self, msg: &[u8], reply: &mut [u8]) -> usize {
        let seq = self.seq.wrapping_add(1);
        // SAFETY: every earlier request was answered (this method returns only after the reply
        // to its own request), so the client owns the request payload.
        unsafe { self.lines.request.put(msg) };
        self.handoff.publish(&self.lines.request, seq);
        // The reply word moves only from our previous number to this one.
        while self.handoff.await_change(&self.lines.reply, self.seq) != seq {}
        self.seq = seq;
        // SAFETY: the server published the reply to `seq` (observed with Acquire) and touches
        // the reply payload again only after our next request.
        unsafe { self.lines.reply.take(reply) }
    }

    /// Asks the server to exit, without waiting for it.
    pub fn stop(&mut self) {
        let seq = self.seq.wrapping_add(1);
        self.lines.request.len.store(STOP, Ordering::Relaxed);
        self.handoff.publish(&self.lines.request, seq);
        self.seq = seq;
    }
}

/// The server side of a floor: echoes every request until the client sends stop. Returns the
/// number of requests echoed.
///
/// `ready` runs once the server has read the current sequence number, so the client may start
/// right after it (the bench's peer prints its ready line there).
///
/// # Errors
///
/// `InvalidInput` if the mapping is too small; whatever `ready` returns.
pub fn serve(
    map: &SharedMapping,
    handoff: Handoff,
    ready: impl FnOnce() -> io::Result<()>,
) -> io::Result<u64> {
    let lines = Lines::new(map)?;
    let mut buf = vec![0u8; FLOOR_MAX_PAYLOAD];
    let mut last = lines.request.seq.load(Ordering::Acquire);
    ready()?;
    let mut echoed = 0u64;
    loop {
        last = handoff.await_change(&lines.request, last);
        if lines.request.len.load(Ordering::Relaxed) == STOP {
            return Ok(echoed);
        }
        // SAFETY: we observed request number `last` with Acquire and the client waits for the
        // reply with that number before touching the request line again.
        let n = unsafe { lines.request.take(&mut buf) };
        // SAFETY: the client copied the previous reply out before sending request `last`, and
        // touches the reply payload again only after we publish reply `last`.
        unsafe { lines.reply.put(&buf[..n]) };
        handoff.publish(&lines.reply, last);
        echoed += 1;
    }
}
