//! Completion counters that throughput clients in other processes bump and the bench reads: one
//! control word, then one 64-bit counter per client, each on its own 64-byte line so clients do
//! not share a line.
//!
//! ```text
//! offset 0          control u32 (IDLE, RUN or STOP, written by the bench only)
//! offset 64*(i+1)   counter of client i, u64 (written by client i only)
//! ```
//!
//! Values only: nothing here guards memory, so `Relaxed` suffices everywhere (a reader may see a
//! count a little late, which only shifts one completion into the next window).

use super::mapping::SharedMapping;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Control word: clients connect and wait.
pub const IDLE: u32 = 0;
/// Control word: clients send as fast as they can.
pub const RUN: u32 = 1;
/// Control word: clients finish their current round trip and exit.
pub const STOP: u32 = 2;

const LINE: usize = 64;

/// Most counters a mapping holds.
pub const MAX_COUNTERS: usize = 64;

/// The size of a mapping with `n` counters.
pub fn counters_len(n: usize) -> usize {
    LINE * (n + 1)
}

/// A counters mapping: the bench creates it, each client opens it.
#[derive(Debug)]
pub struct Counters {
    map: SharedMapping,
    n: usize,
}

impl Counters {
    /// Creates a zeroed mapping of `n` counters (control word [`IDLE`]).
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `n` is 0 or above [`MAX_COUNTERS`]; the errors of
    /// [`SharedMapping::create`].
    pub fn create(n: usize) -> io::Result<Self> {
        Self::check(n)?;
        Ok(Counters {
            map: SharedMapping::create("counters", counters_len(n))?,
            n,
        })
    }

    /// Opens the mapping at `path`, which must hold exactly `n` counters.
    ///
    /// # Errors
    ///
    /// As [`Counters::create`], and those of [`SharedMapping::open`] (a file of another size).
    pub fn open(path: &Path, n: usize) -> io::Result<Self> {
        Self::check(n)?;
        Ok(Counters {
            map: SharedMapping::open(path, counters_len(n))?,
            n,
        })
    }

    fn check(n: usize) -> io::Result<()> {
        if n == 0 || n > MAX_COUNTERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{n} counters (1..={MAX_COUNTERS} allowed)"),
            ));
        }
        Ok(())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.map.path()
    }

    /// How many counters the mapping holds.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Never: a mapping holds at least one counter.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn control_word(&self) -> &AtomicU32 {
        // SAFETY: offset 0 is inside the mapping (its length was set or checked to
        // `counters_len(n)` >= 128) and page-aligned; any bit pattern is a valid AtomicU32, both
        // processes only access it atomically, and the mapping lives as long as `self`.
        unsafe { &*self.map.base().cast::<AtomicU32>() }
    }

    fn counter(&self, i: usize) -> Option<&AtomicU64> {
        if i >= self.n {
            return None;
        }
        // SAFETY: `i < n`, so `LINE * (i + 1) + 8 <= counters_len(n)`: the word is inside the
        // mapping, and 8-byte aligned (page-aligned base, offset a multiple of 64). Any bit
        // pattern is a valid AtomicU64, both processes only access it atomically, and the mapping
        // lives as long as `self`.
        Some(unsafe { &*self.map.base().add(LINE * (i + 1)).cast::<AtomicU64>() })
    }

    /// The control word.
    pub fn control(&self) -> u32 {
        self.control_word().load(Ordering::Relaxed)
    }

    /// Sets the control word.
    pub fn set_control(&self, value: u32) {
        self.control_word().store(value, Ordering::Relaxed);
    }

    /// Sets counter `i` (ignored if there is no counter `i`).
    pub fn store(&self, i: usize, value: u64) {
        if let Some(c) = self.counter(i) {
            c.store(value, Ordering::Relaxed);
        }
    }

    /// The sum of all counters.
    pub fn total(&self) -> u64 {
        (0..self.n)
            .filter_map(|i| self.counter(i))
            .map(|c| c.load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}
