//! # benches: kernel-sim's round trips against this machine's floors
//!
//! Design principles:
//!
//! 1. **Baselines and peers run in the same binary and the same run**, under the same placement,
//!    so their ratios mean something on a shared, noisy machine.
//! 2. **Floors are the machine's, not ours**: [`floor`] uses raw std atomics and futex calls,
//!    nothing from kernel-sim, and copies the payload as often as kernel-sim's send path does
//!    (into shared memory and out again, each way).
//! 3. **Setup stays outside the timed loop**: a peer process is spawned and connected once per
//!    case; a criterion `iter_custom` routine times only the round trips.
//! 4. **Nothing outlives the bench**: peers die with it (SIGKILL on drop, and a parent-death
//!    signal), shared-memory files are removed by guards, and a [`process::Watchdog`] ends a case
//!    stuck in a hand-off.
//! 5. **A broken exchange is never a number**: every reply is checked to echo its request.
//!
//! Method (`benches/latency.rs`, group `rtt_8B_apart`): the bench process pins itself to CPU 0
//! and starts each case's server pinned to CPU 1 (see [`process::Placement::apart`]), then times
//! round trips of an 8-byte payload:
//!
//! - `msg_send`: kernel-sim `msg_send` / `msg_receive` / `msg_reply`, the system's default
//!   (adaptive) wait mode;
//! - `msg_send_blocking`: the same on a channel created with `ChannelWait::Blocking`;
//! - `futex_floor`: a shared-futex wake on every hand-off, no spinning;
//! - `spin_floor`: spinning on one shared cache line per direction.
//!
//! Group `rtt_payload_apart` then times `msg_send`, `futex_floor` and `spin_floor` the same way
//! with payloads of 256 B, 4 KiB and 64 KiB.
//!
//! Module map:
//!
//! - [`rtt`]: the round-trip clients ([`rtt::KernelPeer`], [`rtt::FloorPeer`]).
//! - [`role`]: the peer programs the clients start (this binary again, in another role).
//! - [`process`]: peer processes, CPU placement, the watchdog.
//! - [`summary`]: medians and the ratio table.
//! - [`floor`]: the floor protocol, shared mappings and Linux calls: the only `unsafe` here.
//! - [`error`]: the one error type, [`BenchError`].
#![deny(unsafe_code)]

pub mod error;
pub mod floor;
pub mod iox;
pub mod peers;
pub mod process;
pub mod report;
pub mod role;
pub mod rtt;
pub mod summary;
pub mod throughput;

pub use error::BenchError;
