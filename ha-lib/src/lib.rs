//! # ha-lib: QNX's client-side HA library for kernel-sim
//!
//! A client keeps working across its server's death and restart without its application code
//! noticing. [`Ha::install`] puts the library in kernel-sim's send interposition point (one per
//! process and system), so, as linking QNX's libha replaces libc's `MsgSend*`, **every send** of
//! the process goes through it, including those inside `read`, `write`, `lseek`, `devctl` and
//! `close`:
//!
//! - a send that succeeds pays nothing more (one relaxed load);
//! - a send that fails with a **transient** error (`EAGAIN` from a bounded send queue, `ENXIO`
//!   from a cleanup in progress) is retried by the [`RetryPolicy`] (by default up to 1000 quick
//!   attempts, as RMR does; a zero-retry mode returns at once), on any coid;
//! - a send that fails with **`EBADF` or `ESRCH`** on an **HA-aware** coid ([`Ha::attach`],
//!   QNX's `ha_attach`) runs the client's recovery function, which reconnects (the same server
//!   restarted, or another) and must hand back the *same* coid ([`Ha::reopen`],
//!   [`Ha::reconnect_attach`], [`Ha::name_reopen`]); the library then sends the whole request
//!   again. Several threads on one broken coid run one recovery; the others wait for it and
//!   send again.
//!
//! What reaches the caller: the reply of the retransmitted request; or, if recovery is not
//! possible (no recovery function, suspended, a limit reached, the function failed or returned
//! another coid), the **original** `EBADF`/`ESRCH` of the first failed send, never what the
//! recovery function left behind. Any other error passes through unchanged. A caller's deadline
//! (`msg_send_timeout`, `timer_timeout`) bounds the whole call, retransmissions and the
//! library's own waits included.
//!
//! Recovery gives **at-least-once** delivery: a request the dead server had already received
//! is sent again to the new one, with no id and no deduplication (as QNX's covers do).
//! Exactly-once needs a request id the server side deduplicates.
//!
//! Differences from QNX's libha, and why:
//!
//! - one send runs at most 3 recoveries by default ([`HaCtrl::RecoveriesPerSend`]), so a
//!   recovery function that returns the coid without repairing it cannot loop for ever (QNX's
//!   limits default to unlimited);
//! - a failed recovery returns the original error in every form (QNX's errno covers leave the
//!   recovery function's errno);
//! - inside a recovery function, a send never waits for any recovery (its own thread's or
//!   another's, on any coid) and is never recovered or retried: its failure goes straight back
//!   to the recovery function, so recoveries that send on each other's coids cannot deadlock;
//! - the retry policy for transient errors comes from RMR; QNX's covers have none (its send
//!   queues are unbounded).
//!
//! Module map: [`ha`] (the table, the hook, attach/detach/control), [`policy`] (retries and
//! send states), `helpers` (the covers and the reconnect helpers, as methods of [`Ha`]),
//! [`class`] (Pathsend-style server classes: sends spread over members, and the outcome-unknown
//! error when a member dies holding a request that must not be repeated; dialogs), [`tx`] (the
//! transaction store that makes a reissued request exactly-once for the server's effects, and
//! transactions of several requests all-or-nothing), [`gmd`] (SmartSockets-style guaranteed
//! delivery: one-way messages kept in a delivery area until acknowledged, with delivery
//! timeouts and a failure callback). `docs/patterns.md` says which to use when.
#![forbid(unsafe_code)]

pub mod class;
pub mod gmd;
pub mod ha;
mod helpers;
pub mod policy;
pub mod tx;

#[cfg(test)]
mod test_support;

pub use ha::{Counters, Ha, HaCtrl, Limit, DEFAULT_RECOVERIES_PER_SEND, REPLACE_RECOVERY_FN};
pub use kernel_sim::{Coid, Errno};
pub use policy::{RetryPolicy, SendState};
