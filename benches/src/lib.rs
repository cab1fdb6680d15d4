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
//! Two programs use the same ping-pong code ([`rtt`], [`peers`], [`iox`], [`throughput`]):
//!
//! - `latency-report` (`src/bin/latency-report.rs`, [`report`]): every case of issue 7 in one
//!   table, repeated and interleaved, with ratios to the floors, JSON, an SVG plot and the
//!   issue's targets checked;
//! - `benches/latency.rs` (criterion): groups `rtt_8B_apart`, `rtt_payload_apart` and
//!   `rtt_8B_same`; `benches/death.rs`: death detection.
//!
//! Cases: `msg_send` (adaptive) and `msg_send_blocking`, `msg_sendv` (4 parts), the floors
//! (`spin_floor`, `futex_floor`, `memcpy`), the peers (`pipe`, `uds_stream`, `uds_seqpacket`,
//! `iceoryx2`), `throughput_<mode>_c<clients>_r<receivers>`, `ha_msg_send` (timed interleaved
//! with `msg_send_paired`), the recovery rows (`recovery_detect`, `restart`,
//! `recovery_total`) and the guaranteed-delivery rows (`gmd_memory`, `gmd_file_batch64`,
//! `gmd_file_each`: ns per message of a stream, beside `msg_send`; informative), in placements
//! `apart` (client CPU 0, server CPU 1), `same` (both CPU 0) and `none`
//! ([`process::Placement`]). The method is in `docs/benchmarks.md`.
//!
//! Module map:
//!
//! - [`rtt`]: the round-trip drivers and the kernel-sim and floor clients.
//! - [`peers`]: pipe and Unix-socket echo peers; [`iox`]: the iceoryx2 request-response peer.
//! - [`throughput`]: several client processes against one server.
//! - [`ha`]: `ha_msg_send` on a coid ha-lib recovers, and the kill-and-restart recovery rows.
//! - [`gmd`]: the guaranteed-delivery rows: a `gmd-server` peer (ha-lib's `GmdReceiver`), the
//!   client's `GmdConn` streams, and the temporary directory of their log and area.
//! - [`role`]: the peer programs the clients start (this binary again, in another role).
//! - [`process`]: peer processes, CPU placement, the watchdog, cleanup of shared files.
//! - [`report`]: the report's cases, statistics, table, JSON, SVG and targets.
//! - [`summary`]: medians of criterion's samples and its ratio table.
//! - [`floor`]: the floor protocol, counters, shared mappings and Linux calls: the only `unsafe`
//!   here.
//! - [`error`]: the one error type, [`BenchError`].
#![deny(unsafe_code)]

pub mod error;
pub mod floor;
pub mod gmd;
pub mod ha;
pub mod iox;
pub mod peers;
pub mod process;
pub mod report;
pub mod role;
pub mod rtt;
pub mod summary;
pub mod throughput;

pub use error::BenchError;
