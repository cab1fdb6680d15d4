//! An HA manager in the image of QNX's HAM: a process of the system that supervises entities
//! (processes it starts, processes it attaches to, and processes that attach themselves), raises
//! conditions on them (death, restart, attach, detach, missed heartbeats) and runs actions
//! (restart with backoff and a limit, log, execute a command, wait for a path, notify a client
//! by pulse). A guardian, a standby process, takes over if the manager itself is killed, from
//! the state file the manager keeps, without losing the entities it supervised.
//!
//! - [`config`]: the configuration file (TOML).
//! - [`manager`]: the manager and the guardian.
//! - [`client`]: self-attach and heartbeats for entities; status, notify and stop for tools.
//! - [`proto`]: the messages.
//!
//! Differences from QNX's HAM, documented in `docs/ham.md`: the manager sees every death (QNX's
//! sees only those of session-1 processes, core dumps and self-attached entities); heartbeat
//! periods may be as short as 5 ms (QNX's minimum is 1 s); the configuration is a file, not
//! API calls; a `waitfor` action runs on a thread of its own.

pub mod client;
pub mod config;
pub mod manager;
pub mod proto;

pub use config::{Condition, Config};
pub use manager::{run, run_standby, Options};

/// The `qsim` arguments that run a manager owned by the calling program (`qsim demo`, `qsim
/// chaos`): on configuration file `config`, journaling to `journal`, stopping and killing its
/// entities when its stdin closes (give it a pipe), its entities tethered to it.
pub fn owned_manager_args(
    system: &str,
    config: &std::path::Path,
    journal: &std::path::Path,
) -> Vec<String> {
    [
        "ham",
        "--system",
        system,
        "--config",
        &config.display().to_string(),
        "--journal",
        &journal.display().to_string(),
        "--stop-on-eof",
        "--tether",
    ]
    .map(str::to_owned)
    .to_vec()
}
