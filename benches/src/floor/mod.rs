//! The machine's floors: what a round trip between two processes costs with nothing in the way
//! but the hand-off itself. Both floors copy the payload into a shared mapping and out again each
//! way, as kernel-sim's send path does, so the difference to `msg_send` is kernel-sim's own work.
//!
//! - [`Handoff::Spin`]: each side spins on the other direction's sequence word. The lower bound
//!   for any cross-core message passing on this machine (DESIGN.md: about 120 ns).
//! - [`Handoff::Futex`]: each side sleeps on a shared futex and is woken on every hand-off. The
//!   cost of a cross-core wake-up of a sleeping process (DESIGN.md: about 48 µs apart).
//!
//! [`counters`] holds the completion counters of the throughput clients (atomics in a shared
//! mapping, like the floors' lines).
//!
//! This is the crate's only module with `unsafe` (the mapping's atomics, the payload copies and a
//! handful of Linux calls in [`os`], among them the shared clock of the recovery rows), and the
//! only place outside kernel-sim's `sync` facade where raw std atomics are allowed: the floors
//! must not depend on the code they are a baseline for.
#![allow(unsafe_code)]
#![allow(clippy::disallowed_types)]

pub mod counters;
mod lines;
mod mapping;
pub mod os;

pub use counters::Counters;
pub use lines::{serve, FloorClient, Handoff, FLOOR_MAPPING_LEN, FLOOR_MAX_PAYLOAD};
pub use mapping::{SharedMapping, SHM_PREFIX};
