//! # kernel-sim: a QNX Neutrino-like message-passing kernel in user space
//!
//! Separate OS processes share one *system*: a file under `/dev/shm` (the arena) that each maps
//! and in which the whole kernel state lives. There is no daemon: the first user creates it, every
//! process runs the kernel code in-process, and the calls behave as QNX's do: `MsgSend`,
//! `MsgReceive`, `MsgReply`, pulses, connections with QNX's coid numbering, `dup`/`dup2`/`close`,
//! names.
//!
//! Design principles:
//!
//! 1. **Observable behaviour is QNX's**: return values, errno values, who wakes with which error,
//!    the order of queued messages, lowest-free coid allocation. Internal layouts are ours.
//! 2. **Nothing from another process is trusted.** Every index, length and state read from the
//!    arena is validated before use; a corrupted arena gives an error, never a panic or undefined
//!    behaviour.
//! 3. **No pointers in the arena**: indices plus generations, so a stale handle can never reach a
//!    reused object.
//! 4. **The send path does not allocate and holds no lock across a copy**: a channel lock guards
//!    only queue links; the copies happen under the slot protocol's ownership rules.
//! 5. **Every wait ends**: by the peer, by the caller's deadline, or (with the death handling of a
//!    later stage) by the peer's death.
//! 6. **Unsafe code lives in `shm` and `sys` only**, each block with its reason.
//!
//! Module map (arrows point down):
//!
//! - [`api`]: [`System`] and the QNX-shaped calls (`channel_create`, `msg_send`, ...).
//! - [`fileio`]: the path space (`resmgr_attach`, path resolution) and the client helpers
//!   `open`, `read`, `write`, `lseek`, `devctl`, each an ordinary send of an `_IO_*` message.
//! - [`interpose`]: the send interposition point a library (ha-lib) installs a hook in.
//! - [`iomsg`]: the `_IO_*` message headers and the helper that answers `_IO_CONNECT`,
//!   `_IO_DUP` and `_IO_CLOSE` for raw servers.
//! - [`process`]: watching another process's exit (for supervisors).
//! - [`kern`]: objects and state machine; [`kern::proto`] is the slot protocol and lock.
//! - [`sync`]: atomics, cells, spin and futex wait/wake: the loom facade.
//! - `shm`, `sys`: the mapping and the system calls.
//! - [`abi`]: types shared with the HA library and servers.
#![deny(unsafe_code)]

pub mod abi;
pub mod kern;
pub mod sync;

#[cfg(not(loom))]
pub mod api;
#[cfg(not(loom))]
pub mod fileio;
#[cfg(not(loom))]
pub mod interpose;
#[cfg(not(loom))]
pub mod iomsg;
#[cfg(not(loom))]
pub mod process;
#[cfg(not(loom))]
pub mod shm;
#[cfg(not(loom))]
pub mod signal;
#[cfg(not(loom))]
mod sys;

pub use abi::*;
#[cfg(not(loom))]
pub use api::*;
#[cfg(not(loom))]
pub use fileio::PathId;
#[cfg(not(loom))]
pub use kern::layout::Limits;
#[cfg(not(loom))]
pub use shm::SystemError;
