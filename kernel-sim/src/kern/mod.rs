//! The kernel's objects and their state machine: processes, thread slots, channels with their
//! priority-ordered send queues and LIFO receiver stacks, per-process coid tables, connections,
//! pulses and names. No `unsafe` and no OS calls here beyond the futex facade: everything goes
//! through the validated accessors of [`Arena`].
//!
//! Two kinds of update:
//!
//! - **Structural** (registering processes, creating channels and connections, names, cleanup):
//!   under the arena's structural lock (`Header::lock`), a robust lock whose word holds the
//!   owner's process index and generation, so a waiter that finds the owner dead breaks it.
//! - **The send path** (queueing, handing over, replying): under the channel's own lock for the
//!   few link updates only (never across a copy), and the slot protocol of [`proto`] for the rest.
//!
//! Every index read from the arena goes through an accessor that checks it against the limits;
//! a bad one reads as "no such object" (`EBADF`, `ESRCH` or `EINVAL`, as the call documents).

#[cfg(not(loom))]
pub mod layout;
pub mod proto;

#[cfg(all(test, loom))]
mod loom_send_reply;

#[cfg(not(loom))]
pub mod introspect;
#[cfg(not(loom))]
mod ops;
#[cfg(not(loom))]
mod paths;
#[cfg(not(loom))]
pub use ops::*;
#[cfg(not(loom))]
pub use paths::PathTarget;
