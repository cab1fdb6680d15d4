//! The HA manager's configuration file (TOML): the entities it supervises, the conditions it
//! watches on each, and the actions it runs. See `docs/ham.md` for the format with examples.

use serde::{Deserialize, Serialize};

/// The smallest heartbeat period accepted, in milliseconds. QNX's `HAMHBEATMIN` is 1 s; the
/// simulator accepts much shorter periods so that tests and demos stay short.
pub const HEARTBEAT_MIN_MS: u64 = 5;

fn default_tick_ms() -> u64 {
    10
}
fn default_limit() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    100
}
fn default_backoff_max_ms() -> u64 {
    5000
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How often heartbeats are checked, in milliseconds (default 10).
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// The supervised entities.
    #[serde(default)]
    pub entity: Vec<EntityConfig>,
}

/// One entity (`ham_attach`): a process the manager starts (`command`), one it attaches to
/// (`pid`), or a name that a process will claim with a self-attach (neither).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityConfig {
    /// Unique name.
    pub name: String,
    /// The command line that starts (and restarts) it; a first word `qsim` means this very
    /// program. It runs with `QSIM_SYSTEM` set to the manager's system.
    #[serde(default)]
    pub command: Vec<String>,
    /// A running process to attach to instead.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Restart it when it dies (`ham_action_restart` on its death condition).
    #[serde(default)]
    pub restart: Option<RestartConfig>,
    /// Other actions, each on one condition.
    #[serde(default)]
    pub action: Vec<ActionConfig>,
}

/// How restarts are paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// Restarts in all, after which the entity is given up (default 5).
    #[serde(default = "default_limit")]
    pub limit: u32,
    /// The wait before the first restart, doubled before each next one (default 100 ms).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// The longest wait between restarts (default 5000 ms).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
}

impl RestartConfig {
    /// The wait before restart number `n` (from 0).
    pub fn backoff(&self, n: u32) -> std::time::Duration {
        let ms = self
            .backoff_ms
            .saturating_mul(1u64 << n.min(32))
            .min(self.backoff_max_ms.max(self.backoff_ms));
        std::time::Duration::from_millis(ms)
    }
}

/// The conditions the manager raises (QNX's `CONDDEATH`, `CONDRESTART`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// The entity's process died (a self-attached one without detaching first).
    Death,
    /// The entity was restarted.
    Restart,
    /// A self-attached entity attached.
    Attach,
    /// A self-attached entity detached (a clean exit).
    Detach,
    /// It missed its low count of heartbeats.
    HeartbeatLow,
    /// It missed its high count of heartbeats.
    HeartbeatHigh,
}

impl Condition {
    /// The name used in the file and the journal.
    pub fn word(self) -> &'static str {
        match self {
            Condition::Death => "death",
            Condition::Restart => "restart",
            Condition::Attach => "attach",
            Condition::Detach => "detach",
            Condition::HeartbeatLow => "heartbeat-low",
            Condition::HeartbeatHigh => "heartbeat-high",
        }
    }
}

/// One action: exactly one of `log`, `execute` and `waitfor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The condition that runs it.
    pub on: Condition,
    /// Write this message to the manager's log and journal (`ham_action_log`).
    #[serde(default)]
    pub log: Option<String>,
    /// Run this command line (`ham_action_execute`).
    #[serde(default)]
    pub execute: Option<Vec<String>>,
    /// Wait for this path (or `/dev/name/local/<name>`) to appear (`ham_action_waitfor`), at
    /// most `waitfor_ms`.
    #[serde(default)]
    pub waitfor: Option<String>,
    /// The waitfor's limit in milliseconds (> 0; default 5000).
    #[serde(default)]
    pub waitfor_ms: Option<u64>,
}

impl Config {
    /// Parses and checks a configuration.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong: TOML syntax, an unknown key, a duplicate or bad entity
    /// name, an entity with both `command` and `pid`, an action with not exactly one of
    /// `log`/`execute`/`waitfor`, a `waitfor_ms` of 0, a `tick_ms` below the heartbeat minimum.
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        c.check()?;
        Ok(c)
    }

    /// Checks a configuration built in code.
    ///
    /// # Errors
    ///
    /// As [`Config::parse`].
    pub fn check(&self) -> Result<(), String> {
        if self.tick_ms < HEARTBEAT_MIN_MS {
            return Err(format!(
                "tick_ms = {} is below the minimum of {HEARTBEAT_MIN_MS}",
                self.tick_ms
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.entity {
            check_name(&e.name)?;
            if !seen.insert(e.name.as_str()) {
                return Err(format!("entity {:?} is defined twice", e.name));
            }
            if !e.command.is_empty() && e.pid.is_some() {
                return Err(format!("entity {:?} has both a command and a pid", e.name));
            }
            if e.pid.is_some_and(|p| p <= 0) {
                return Err(format!("entity {:?}: pid must be positive", e.name));
            }
            for a in &e.action {
                let n =
                    a.log.is_some() as u8 + a.execute.is_some() as u8 + a.waitfor.is_some() as u8;
                if n != 1 {
                    return Err(format!(
                        "entity {:?}: each action needs exactly one of log, execute, waitfor",
                        e.name
                    ));
                }
                if a.waitfor_ms == Some(0) {
                    return Err(format!("entity {:?}: waitfor_ms must be > 0", e.name));
                }
                if a.execute.as_ref().is_some_and(|c| c.is_empty()) {
                    return Err(format!("entity {:?}: an empty execute command", e.name));
                }
            }
        }
        Ok(())
    }
}

/// Entity names: not empty, no `/`, at most 64 bytes (as QNX refuses `/`).
///
/// # Errors
///
/// A message saying why.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.contains('/')
        || name.len() > 64
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "bad entity name {name:?}: 1 to 64 bytes, no '/' and no spaces"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_and_bad_ones_say_why() {
        let c = Config::parse(
            r#"
            tick_ms = 20
            [[entity]]
            name = "files"
            command = ["qsim", "run", "file-server", "--root", "/tmp"]
            restart = { limit = 3, backoff_ms = 10 }
            [[entity.action]]
            on = "restart"
            waitfor = "/files"
            waitfor_ms = 2000
            [[entity.action]]
            on = "death"
            log = "the file server died"
            "#,
        )
        .unwrap();
        assert_eq!(c.entity[0].restart.unwrap().limit, 3);
        assert_eq!(c.entity[0].restart.unwrap().backoff(0).as_millis(), 10);
        assert_eq!(c.entity[0].restart.unwrap().backoff(2).as_millis(), 40);
        assert_eq!(c.entity[0].action[0].on, Condition::Restart);
        for (bad, why) in [
            ("tick_ms = 1", "minimum"),
            ("[[entity]]\nname = \"a/b\"", "bad entity name"),
            ("[[entity]]\nname = \"a\"\n[[entity]]\nname = \"a\"", "twice"),
            ("[[entity]]\nname = \"a\"\ncommand = [\"x\"]\npid = 3", "both"),
            (
                "[[entity]]\nname = \"a\"\n[[entity.action]]\non = \"death\"",
                "exactly one",
            ),
            ("[[entity]]\nname = \"a\"\nfrobnicate = 1", "unknown field"),
            (
                "[[entity]]\nname = \"a\"\n[[entity.action]]\non = \"death\"\nwaitfor = \"/x\"\nwaitfor_ms = 0",
                "> 0",
            ),
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
