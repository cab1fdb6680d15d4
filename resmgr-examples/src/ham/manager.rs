//! The HA manager process: entities, conditions, actions, heartbeats, the state file and the
//! guardian.
//!
//! It is a resource manager of the framework ([`crate::resmgr`]) reached by name. Everything
//! that happens reaches it as a message or a pulse on its one channel, handled by one thread:
//!
//! - a started entity's exit: a thread per child waits for it and sends a pulse;
//! - an adopted entity's exit (a process it did not start, or one its dead predecessor
//!   started): a thread waits on a pidfd ([`kernel_sim::process::ProcessWatch`]);
//! - a self-attached entity's death: the DISCONNECT of its connection without a detach first;
//! - heartbeats: pulses from the entities, checked on a timer tick;
//! - a due restart: a pulse from the thread that waited out the backoff.
//!
//! Every event and action is written to the manager's journal before anything else happens,
//! so tests check order and counts there. The state file (JSON, rewritten after each change)
//! is what a guardian reads when it takes over.

use super::config::{ActionConfig, Condition, Config, EntityConfig};
use super::proto::{self, AttachSelf, EntityStatus, Notify, Stop};
use crate::journal::Journal;
use crate::resmgr::{Ctx, Dispatch, OpenRequest, ResourceManager};
use kernel_sim::process::{start_time, ProcessWatch};
use kernel_sim::{chf, pulse_code, Chid, Coid, Errno, Pid, Pulse, Received, System, SIDE_CHANNEL};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// A started entity's process exited (value: entity index << 16 | incarnation).
const CODE_EXIT: i8 = 1;
/// A restart's backoff is over (value as for `CODE_EXIT`).
const CODE_RESTART_DUE: i8 = 2;
/// Check the heartbeats.
const CODE_TICK: i8 = 3;
/// Stop, and kill the entities (stdin closed under `stop_on_eof`).
const CODE_STOP_ALL: i8 = 4;
/// The guardian exited (value: its pid).
const CODE_GUARDIAN_EXIT: i8 = 5;

/// How the manager runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The name it attaches (`/dev/name/local/<name>`).
    pub name: String,
    /// What it supervises.
    pub config: Config,
    /// Its journal (events and actions).
    pub journal: Option<PathBuf>,
    /// The state file a guardian takes over from (required with `guardian`).
    pub state: Option<PathBuf>,
    /// Keep a guardian: a standby process that takes over if this one dies.
    pub guardian: bool,
    /// The output of the entities it starts: inherited (else discarded).
    pub entity_output: bool,
    /// Stop, killing the entities, when stdin reaches end of file (so a program that runs the
    /// manager takes it and its entities down with it, even if it is killed).
    pub stop_on_eof: bool,
    /// Give each started entity a pipe as stdin whose other end only this manager holds, so
    /// an entity that exits on end of file (`--exit-on-eof`) goes when the manager goes. Not
    /// with a guardian, which needs the entities to outlive the manager.
    pub tether: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Kind {
    Started,
    Attached,
    #[serde(rename = "self")]
    SelfAttached,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Started => "started",
            Kind::Attached => "attached",
            Kind::SelfAttached => "self",
        }
    }
}

#[derive(Clone, Debug)]
struct Heartbeat {
    period: Duration,
    low: u32,
    high: u32,
    last: Instant,
    raised_low: bool,
    raised_high: bool,
}

struct Entity {
    cfg: EntityConfig,
    kind: Kind,
    pid: i32,
    start: u64,
    alive: bool,
    /// Incarnation: pulses about an older one are ignored.
    gen: u16,
    restarts: u32,
    gave_up: bool,
    /// The self-attached entity's connection (scoid), while attached.
    scoid: Option<i32>,
    hb: Option<Heartbeat>,
    notify: Vec<(i32, Notify)>,
    /// A watch on the current process, to kill it on a stop.
    watch: Option<Arc<ProcessWatch>>,
}

impl Entity {
    /// A new entity of `kind`, not running yet.
    fn new(cfg: EntityConfig, kind: Kind) -> Entity {
        Entity {
            cfg,
            kind,
            pid: 0,
            start: 0,
            alive: false,
            gen: 0,
            restarts: 0,
            gave_up: false,
            scoid: None,
            hb: None,
            notify: Vec::new(),
            watch: None,
        }
    }

    /// A self-attached entity known only by its name (not in the configuration).
    fn named(name: &str) -> Entity {
        Entity::new(
            EntityConfig {
                name: name.to_owned(),
                command: Vec::new(),
                pid: None,
                restart: None,
                action: Vec::new(),
            },
            Kind::SelfAttached,
        )
    }
}

/// What the state file holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Saved {
    config: Config,
    entities: Vec<SavedEntity>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedEntity {
    name: String,
    kind: Kind,
    pid: i32,
    start: u64,
    alive: bool,
    restarts: u32,
    gave_up: bool,
    /// Notification registrations (registrant pid, request).
    #[serde(default)]
    notify: Vec<(i32, Notify)>,
}

struct State {
    entities: Vec<Entity>,
    ticking: bool,
}

/// The manager (a [`ResourceManager`] on its own channel).
pub struct Manager {
    sys: System,
    opts: Options,
    journal: Option<Journal>,
    st: Mutex<State>,
    self_coid: OnceLock<Coid>,
    /// The scoid its own pulses carry: the internal codes are obeyed only from it.
    self_scoid: OnceLock<i32>,
    guardian: Mutex<Option<std::process::Child>>,
    stopping: Mutex<Option<Stop>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn word(idx: usize, gen: u16) -> i32 {
    ((idx as i32) << 16) | i32::from(gen)
}

impl Manager {
    fn new(sys: &System, opts: Options, saved: Option<Saved>) -> Result<Manager, String> {
        let journal = match &opts.journal {
            Some(p) => Some(Journal::open(p).map_err(|e| format!("journal {}: {e}", p.display()))?),
            None => None,
        };
        let mut entities: Vec<Entity> = opts
            .config
            .entity
            .iter()
            .map(|cfg| {
                let kind = if !cfg.command.is_empty() {
                    Kind::Started
                } else if cfg.pid.is_some() {
                    Kind::Attached
                } else {
                    Kind::SelfAttached
                };
                Entity::new(cfg.clone(), kind)
            })
            .collect();
        if let Some(saved) = &saved {
            for s in &saved.entities {
                let i = match entities.iter().position(|e| e.cfg.name == s.name) {
                    Some(i) => i,
                    None => {
                        // Self-attached entities are not in the configuration: take them over
                        // too, to be re-attached by their processes.
                        entities.push(Entity::named(&s.name));
                        entities.len() - 1
                    }
                };
                let e = &mut entities[i];
                e.pid = s.pid;
                e.start = s.start;
                e.alive = s.alive;
                e.restarts = s.restarts;
                e.gave_up = s.gave_up;
                e.kind = s.kind;
                e.notify = s.notify.clone();
            }
        }
        if entities.len() > 0x7FFF {
            return Err("too many entities".into());
        }
        Ok(Manager {
            sys: sys.clone(),
            opts,
            journal,
            st: Mutex::new(State {
                entities,
                ticking: false,
            }),
            self_coid: OnceLock::new(),
            self_scoid: OnceLock::new(),
            guardian: Mutex::new(None),
            stopping: Mutex::new(None),
        })
    }

    fn record(&self, op: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
        if let Some(j) = &self.journal {
            let _ = j.record(op, fields);
        }
        let mut line = format!("ham: {op}");
        for (k, v) in fields {
            line.push_str(&format!(" {k}={v}"));
        }
        tracing::info!("{line}");
    }

    /// Sends a pulse to the manager's own channel (from a helper thread).
    fn pulse_self(sys: &System, coid: Coid, code: i8, value: i32) {
        let _ = sys.msg_send_pulse(coid, -1, code, value);
    }

    fn self_coid(&self) -> Coid {
        self.self_coid.get().copied().unwrap_or(Coid(-1))
    }

    /// Starts entity `idx`'s command; a thread reports its exit.
    fn spawn(&self, st: &mut State, idx: usize) -> Result<(), String> {
        let e = &mut st.entities[idx];
        let argv = &e.cfg.command;
        let Some(first) = argv.first() else {
            return Err("no command".into());
        };
        let program = if first == "qsim" {
            std::env::current_exe().map_err(|e| e.to_string())?
        } else {
            PathBuf::from(first)
        };
        let mut cmd = Command::new(program);
        cmd.args(&argv[1..])
            .env("QSIM_SYSTEM", self.sys.name())
            .stdin(if self.opts.tether {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        if !self.opts.entity_output {
            cmd.stdout(Stdio::null());
        }
        let mut child = cmd.spawn().map_err(|err| err.to_string())?;
        let pid = child.id() as i32;
        e.gen = e.gen.wrapping_add(1);
        e.pid = pid;
        e.start = start_time(pid).unwrap_or(0);
        e.alive = true;
        e.kind = Kind::Started;
        e.watch = ProcessWatch::new(pid).ok().map(Arc::new);
        let (sys, coid, value) = (self.sys.clone(), self.self_coid(), word(idx, e.gen));
        std::thread::spawn(move || {
            // The tether (if any) is the child's stdin, held here until it exits (taken out
            // first: `Child::wait` would close it).
            let tether = child.stdin.take();
            let _ = child.wait();
            drop(tether);
            Manager::pulse_self(&sys, coid, CODE_EXIT, value);
        });
        Ok(())
    }

    /// Watches a process this manager did not start (attached, or adopted from a dead
    /// predecessor); `false` if it is gone already.
    fn adopt(&self, st: &mut State, idx: usize) -> bool {
        let e = &mut st.entities[idx];
        let w = if e.start != 0 {
            ProcessWatch::new_checked(e.pid, e.start)
        } else {
            ProcessWatch::new(e.pid)
        };
        let Ok(w) = w else {
            return false;
        };
        if e.start == 0 {
            e.start = start_time(e.pid).unwrap_or(0);
        }
        e.gen = e.gen.wrapping_add(1);
        e.alive = true;
        let w = Arc::new(w);
        e.watch = Some(w.clone());
        let (sys, coid, value) = (self.sys.clone(), self.self_coid(), word(idx, e.gen));
        std::thread::spawn(move || {
            w.wait(None);
            Manager::pulse_self(&sys, coid, CODE_EXIT, value);
        });
        true
    }

    /// Starts or adopts every configured entity (at start, or when taking over).
    fn start_all(&self) {
        let mut st = lock(&self.st);
        for idx in 0..st.entities.len() {
            let (kind, alive, name) = {
                let e = &st.entities[idx];
                (e.kind, e.alive, e.cfg.name.clone())
            };
            if alive && st.entities[idx].pid > 0 {
                // Running under a previous manager: watch it from here on.
                if self.adopt(&mut st, idx) {
                    let pid = st.entities[idx].pid;
                    self.record("adopt", &[("entity", &name), ("pid", &pid)]);
                } else {
                    st.entities[idx].alive = false;
                    let pid = st.entities[idx].pid;
                    self.record("death", &[("entity", &name), ("pid", &pid)]);
                    self.raise(&mut st, idx, Condition::Death);
                }
                continue;
            }
            match kind {
                // Dead under a previous manager: its restart (if it has one) is due now, within
                // its limit; without one it stays dead, as it would have.
                Kind::Started if st.entities[idx].pid > 0 && !st.entities[idx].gave_up => {
                    self.schedule_restart(&mut st, idx);
                }
                Kind::Started if st.entities[idx].pid > 0 => {}
                Kind::Started if !st.entities[idx].gave_up => match self.spawn(&mut st, idx) {
                    Ok(()) => {
                        let pid = st.entities[idx].pid;
                        self.record("start", &[("entity", &name), ("pid", &pid)]);
                    }
                    Err(err) => {
                        // As good as a death at birth: the restart action (if any) retries.
                        self.record("start-failed", &[("entity", &name), ("error", &err)]);
                        self.raise(&mut st, idx, Condition::Death);
                    }
                },
                Kind::Attached => {
                    st.entities[idx].pid = st.entities[idx].cfg.pid.unwrap_or(0);
                    if self.adopt(&mut st, idx) {
                        let pid = st.entities[idx].pid;
                        self.record("attach", &[("entity", &name), ("pid", &pid)]);
                    } else {
                        self.record("attach-failed", &[("entity", &name)]);
                    }
                }
                _ => {}
            }
        }
        self.save(&st);
    }

    /// Raises `cond` on entity `idx`: its actions (in order), the notifications registered for
    /// it, then, on a death, the restart.
    fn raise(&self, st: &mut State, idx: usize, cond: Condition) {
        let name = st.entities[idx].cfg.name.clone();
        self.record("condition", &[("entity", &name), ("on", &cond.word())]);
        let actions: Vec<ActionConfig> = st.entities[idx]
            .cfg
            .action
            .iter()
            .filter(|a| a.on == cond)
            .cloned()
            .collect();
        for a in actions {
            self.act(&name, &a);
        }
        let notes: Vec<(i32, Notify)> = st.entities[idx]
            .notify
            .iter()
            .filter(|(_, n)| n.on == cond)
            .cloned()
            .collect();
        let mut gone = Vec::new();
        for (pid, n) in notes {
            let sent = self
                .sys
                .connect_attach(0, Pid(pid), Chid(n.chid), SIDE_CHANNEL, 0)
                .and_then(|c| {
                    let r = self.sys.msg_send_pulse(c, -1, n.code, n.value);
                    let _ = self.sys.connect_detach(c);
                    r
                });
            self.record(
                "notify",
                &[
                    ("entity", &name),
                    ("on", &cond.word()),
                    ("pid", &pid),
                    ("code", &n.code),
                    ("ok", &sent.is_ok()),
                ],
            );
            if matches!(sent, Err(Errno::SRCH) | Err(Errno::BADF)) {
                // The registrant (or its channel) is gone: forget it.
                gone.push(pid);
            }
        }
        st.entities[idx].notify.retain(|(p, _)| !gone.contains(p));
        if cond == Condition::Death {
            self.schedule_restart(st, idx);
        }
    }

    fn act(&self, name: &str, a: &ActionConfig) {
        if let Some(msg) = &a.log {
            self.record("log", &[("entity", &name), ("msg", &msg.replace(' ', "_"))]);
            println!("ham: {name}: {msg}");
        } else if let Some(argv) = &a.execute {
            let program = match argv[0].as_str() {
                "qsim" => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("qsim")),
                p => PathBuf::from(p),
            };
            let spawned = Command::new(program)
                .args(&argv[1..])
                .env("QSIM_SYSTEM", self.sys.name())
                .stdin(Stdio::null())
                .spawn();
            self.record(
                "execute",
                &[
                    ("entity", &name),
                    ("cmd", &argv[0]),
                    ("ok", &spawned.is_ok()),
                ],
            );
            if let Ok(mut c) = spawned {
                std::thread::spawn(move || {
                    let _ = c.wait();
                });
            }
        } else if let Some(path) = &a.waitfor {
            let limit = Duration::from_millis(a.waitfor_ms.unwrap_or(5000));
            let path = if path.starts_with('/') {
                path.clone()
            } else {
                format!("{}{path}", kernel_sim::NAME_PREFIX)
            };
            // QNX runs a waitfor inside the condition's action list; here it runs on a thread
            // of its own, so the manager keeps serving while it waits.
            let (sys, journal_path, name) =
                (self.sys.clone(), self.opts.journal.clone(), name.to_owned());
            std::thread::spawn(move || {
                let r = sys.path_wait(&path, Some(limit));
                if let Some(j) = journal_path.and_then(|p| Journal::open(p).ok()) {
                    let _ = j.record(
                        "waitfor",
                        &[("entity", &name), ("path", &path), ("ok", &r.is_ok())],
                    );
                }
            });
        }
    }

    fn schedule_restart(&self, st: &mut State, idx: usize) {
        let e = &mut st.entities[idx];
        let Some(rc) = e.cfg.restart else {
            return;
        };
        if e.cfg.command.is_empty() {
            self.record(
                "restart-impossible",
                &[("entity", &e.cfg.name), ("why", &"no_command")],
            );
            return;
        }
        if e.restarts >= rc.limit {
            e.gave_up = true;
            self.record(
                "restart-limit",
                &[("entity", &e.cfg.name), ("restarts", &e.restarts)],
            );
            return;
        }
        let delay = rc.backoff(e.restarts);
        self.record(
            "restart-scheduled",
            &[
                ("entity", &e.cfg.name),
                ("n", &(e.restarts + 1)),
                ("backoff_ms", &delay.as_millis()),
            ],
        );
        let (sys, coid, value) = (self.sys.clone(), self.self_coid(), word(idx, e.gen));
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            Manager::pulse_self(&sys, coid, CODE_RESTART_DUE, value);
        });
    }

    fn restart_due(&self, idx: usize, gen: u16) {
        let mut st = lock(&self.st);
        let Some(e) = st.entities.get(idx) else {
            return;
        };
        if e.gen != gen || e.alive || self.is_stopping() {
            return;
        }
        let name = e.cfg.name.clone();
        st.entities[idx].restarts += 1;
        let n = st.entities[idx].restarts;
        match self.spawn(&mut st, idx) {
            Ok(()) => {
                let pid = st.entities[idx].pid;
                self.record("restart", &[("entity", &name), ("pid", &pid), ("n", &n)]);
                self.save(&st);
                self.raise(&mut st, idx, Condition::Restart);
            }
            Err(err) => {
                self.record("restart-failed", &[("entity", &name), ("error", &err)]);
                self.schedule_restart(&mut st, idx);
            }
        }
        self.save(&st);
    }

    fn died(&self, idx: usize, gen: u16) {
        let mut st = lock(&self.st);
        let Some(e) = st.entities.get_mut(idx) else {
            return;
        };
        if e.gen != gen || !e.alive {
            return;
        }
        e.alive = false;
        e.scoid = None;
        e.hb = None;
        let (name, pid) = (e.cfg.name.clone(), e.pid);
        if self.is_stopping() {
            self.record("exit", &[("entity", &name), ("pid", &pid)]);
            self.save(&st);
            return;
        }
        self.record("death", &[("entity", &name), ("pid", &pid)]);
        self.raise(&mut st, idx, Condition::Death);
        self.save(&st);
    }

    fn tick(&self) {
        let mut st = lock(&self.st);
        let now = Instant::now();
        for idx in 0..st.entities.len() {
            let Some(hb) = st.entities[idx].hb.as_mut() else {
                continue;
            };
            let missed = (now.duration_since(hb.last).as_nanos() / hb.period.as_nanos().max(1))
                .min(u32::MAX as u128) as u32;
            let mut raise = Vec::new();
            if missed >= hb.low && !hb.raised_low {
                hb.raised_low = true;
                raise.push(Condition::HeartbeatLow);
            }
            if missed >= hb.high && !hb.raised_high {
                hb.raised_high = true;
                raise.push(Condition::HeartbeatHigh);
            }
            for c in raise {
                let name = st.entities[idx].cfg.name.clone();
                self.record(
                    "heartbeat-missed",
                    &[("entity", &name), ("missed", &missed)],
                );
                self.raise(&mut st, idx, c);
            }
        }
    }

    fn save(&self, st: &State) {
        let Some(path) = &self.opts.state else { return };
        let saved = Saved {
            config: self.opts.config.clone(),
            entities: st
                .entities
                .iter()
                .map(|e| SavedEntity {
                    name: e.cfg.name.clone(),
                    kind: e.kind,
                    pid: e.pid,
                    start: e.start,
                    alive: e.alive,
                    restarts: e.restarts,
                    gave_up: e.gave_up,
                    notify: e.notify.clone(),
                })
                .collect(),
        };
        let tmp = path.with_extension("tmp");
        let ok = serde_json::to_vec_pretty(&saved)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|()| std::fs::rename(&tmp, path).ok());
        if ok.is_none() {
            tracing::warn!(path = %path.display(), "cannot write the state file");
        }
    }

    fn is_stopping(&self) -> bool {
        lock(&self.stopping).is_some()
    }

    fn status(&self) -> Vec<EntityStatus> {
        lock(&self.st)
            .entities
            .iter()
            .map(|e| EntityStatus {
                name: e.cfg.name.clone(),
                kind: e.kind.word().into(),
                pid: e.pid,
                alive: e.alive,
                restarts: e.restarts,
                gave_up: e.gave_up,
            })
            .collect()
    }

    fn attach_self(&self, info_pid: i32, scoid: i32, a: AttachSelf) -> Result<(), Errno> {
        if a.heartbeat_ms != 0 && a.heartbeat_ms < super::config::HEARTBEAT_MIN_MS {
            return Err(Errno::INVAL);
        }
        super::config::check_name(&a.name).map_err(|_| Errno::INVAL)?;
        let mut st = lock(&self.st);
        let idx = match st.entities.iter().position(|e| e.cfg.name == a.name) {
            Some(i) => {
                let e = &st.entities[i];
                // Another live process holds the name (a re-attach of the same pid is fine:
                // that is a self-attached entity finding a new manager).
                if e.alive && e.pid != info_pid && e.watch.as_ref().is_some_and(|w| !w.has_exited())
                {
                    return Err(Errno::EXIST);
                }
                i
            }
            None => {
                if st.entities.len() >= 0x7FFF {
                    return Err(Errno::NOSPC);
                }
                st.entities.push(Entity::named(&a.name));
                st.entities.len() - 1
            }
        };
        let e = &mut st.entities[idx];
        let again = e.alive && e.pid == info_pid;
        e.kind = Kind::SelfAttached;
        e.pid = info_pid;
        e.start = start_time(info_pid).unwrap_or(0);
        e.alive = true;
        e.scoid = Some(scoid);
        if !again {
            e.gen = e.gen.wrapping_add(1);
        }
        e.watch = ProcessWatch::new(info_pid).ok().map(Arc::new);
        e.hb = (a.heartbeat_ms > 0).then(|| Heartbeat {
            period: Duration::from_millis(a.heartbeat_ms),
            low: a.low,
            high: a.high.max(a.low),
            last: Instant::now(),
            raised_low: false,
            raised_high: false,
        });
        let name = e.cfg.name.clone();
        self.record(
            if again { "reattach" } else { "attach" },
            &[("entity", &name), ("pid", &info_pid)],
        );
        let ticking = st.ticking;
        if a.heartbeat_ms > 0 && !ticking {
            st.ticking = true;
            let (sys, coid, period) = (
                self.sys.clone(),
                self.self_coid(),
                Duration::from_millis(self.opts.config.tick_ms),
            );
            let id = sys.timer_create(kernel_sim::SigEvent::Pulse {
                coid,
                priority: -1,
                code: CODE_TICK,
                value: 0,
            });
            if let Ok(id) = id {
                let _ = sys.timer_settime(id, Some(period), Some(period));
            }
        }
        if !again {
            self.raise(&mut st, idx, Condition::Attach);
        }
        self.save(&st);
        Ok(())
    }

    fn by_scoid(st: &State, scoid: i32) -> Option<usize> {
        st.entities.iter().position(|e| e.scoid == Some(scoid))
    }

    fn spawn_guardian(&self) {
        if !self.opts.guardian {
            return;
        }
        let Some(state) = &self.opts.state else {
            return;
        };
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut cmd = Command::new(exe);
        cmd.args(["ham", "--standby", "--name", &self.opts.name, "--state"])
            .arg(state)
            .env("QSIM_SYSTEM", self.sys.name())
            .stdin(Stdio::null());
        if let Some(j) = &self.opts.journal {
            cmd.arg("--journal").arg(j);
        }
        if self.opts.entity_output {
            cmd.arg("--entity-output");
        }
        match cmd.spawn() {
            Ok(c) => {
                let pid = c.id();
                // A pidfd, not the Child: the Child stays here to be killed at a stop.
                if let Ok(w) = ProcessWatch::new(pid as i32) {
                    let (sys, coid) = (self.sys.clone(), self.self_coid());
                    std::thread::spawn(move || {
                        w.wait(None);
                        Manager::pulse_self(&sys, coid, CODE_GUARDIAN_EXIT, pid as i32);
                    });
                }
                *lock(&self.guardian) = Some(c);
                self.record("guardian", &[("pid", &pid)]);
            }
            Err(e) => self.record("guardian-failed", &[("error", &e)]),
        }
    }

    /// Ends the run: the guardian first (so it does not take over), then, if asked, the
    /// entities.
    fn shut_down(&self, stop: Stop) {
        if let Some(mut g) = lock(&self.guardian).take() {
            let _ = g.kill();
            let _ = g.wait();
        }
        let st = lock(&self.st);
        if stop.kill_entities {
            for e in st.entities.iter().filter(|e| e.alive) {
                if let Some(w) = &e.watch {
                    let _ = w.kill();
                    w.wait(Some(Duration::from_secs(10)));
                }
            }
        }
        self.record("stop", &[("kill_entities", &stop.kill_entities)]);
        if let Some(path) = &self.opts.state {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl ResourceManager for Manager {
    type Ocb = ();

    fn open(&self, _ctx: &Ctx<'_>, _req: &OpenRequest<'_>) -> Result<(), Errno> {
        Err(Errno::NOENT)
    }

    fn msg(&self, ctx: &Ctx<'_>, msg: &[u8], out: &mut Vec<u8>) -> Result<i32, Errno> {
        let info = ctx.info();
        match kernel_sim::iomsg::msg_type(msg) {
            Some(proto::MSG_ATTACH_SELF) => {
                self.attach_self(info.pid, info.scoid, proto::body(msg)?)?;
                Ok(0)
            }
            Some(proto::MSG_DETACH_SELF) => {
                let mut st = lock(&self.st);
                let idx = Manager::by_scoid(&st, info.scoid).ok_or(Errno::NOENT)?;
                let e = &mut st.entities[idx];
                e.alive = false;
                e.scoid = None;
                e.hb = None;
                e.gen = e.gen.wrapping_add(1);
                let name = e.cfg.name.clone();
                self.record("detach", &[("entity", &name), ("pid", &info.pid)]);
                self.raise(&mut st, idx, Condition::Detach);
                self.save(&st);
                Ok(0)
            }
            Some(proto::MSG_STATUS) => {
                *out = serde_json::to_vec(&self.status()).map_err(|_| Errno::NOMEM)?;
                Ok(out.len() as i32)
            }
            Some(proto::MSG_NOTIFY) => {
                let n: Notify = proto::body(msg)?;
                let mut st = lock(&self.st);
                let e = st
                    .entities
                    .iter_mut()
                    .find(|e| e.cfg.name == n.entity)
                    .ok_or(Errno::NOENT)?;
                e.notify.push((info.pid, n));
                self.save(&st);
                Ok(0)
            }
            Some(proto::MSG_STOP) => {
                let stop: Stop = proto::body(msg)?;
                *lock(&self.stopping) = Some(stop);
                // The reply goes before the loop stops; the stop pulse ends it.
                let _ = self
                    .sys
                    .msg_send_pulse(self.self_coid(), -1, crate::resmgr::STOP_CODE, 0);
                Ok(0)
            }
            _ => Err(Errno::NOSYS),
        }
    }

    fn disconnect(&self, _sys: &System, scoid: i32) {
        let (idx, gen) = {
            let st = lock(&self.st);
            match Manager::by_scoid(&st, scoid) {
                Some(i) => (i, st.entities[i].gen),
                None => return,
            }
        };
        self.died(idx, gen);
    }

    fn pulse(&self, _sys: &System, p: &Pulse) {
        let (idx, gen) = ((p.value >> 16) as usize, (p.value & 0xFFFF) as u16);
        // The manager's own codes come through its own connection only: a client (any process
        // that opened the manager's name) cannot fake a death, a restart or a stop.
        if p.code != proto::PULSE_HEARTBEAT && self.self_scoid.get() != Some(&p.scoid) {
            tracing::debug!(code = p.code, scoid = p.scoid, "a client's pulse ignored");
            return;
        }
        match p.code {
            CODE_EXIT => self.died(idx, gen),
            CODE_RESTART_DUE => self.restart_due(idx, gen),
            CODE_TICK => self.tick(),
            CODE_GUARDIAN_EXIT if !self.is_stopping() => {
                let mut g = lock(&self.guardian);
                if g.as_ref().is_some_and(|c| c.id() as i32 == p.value) {
                    if let Some(mut c) = g.take() {
                        let _ = c.wait();
                    }
                    drop(g);
                    self.record("guardian-lost", &[("pid", &p.value)]);
                    self.spawn_guardian();
                }
            }
            CODE_STOP_ALL => {
                *lock(&self.stopping) = Some(Stop {
                    kill_entities: true,
                });
                let _ = self
                    .sys
                    .msg_send_pulse(self.self_coid(), -1, crate::resmgr::STOP_CODE, 0);
            }
            proto::PULSE_HEARTBEAT => {
                let mut st = lock(&self.st);
                if let Some(i) = Manager::by_scoid(&st, p.scoid) {
                    if let Some(hb) = st.entities[i].hb.as_mut() {
                        hb.last = Instant::now();
                        hb.raised_low = false;
                        hb.raised_high = false;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Runs the HA manager until a stop message (or its death). `ready` runs once its name is
/// attached and its entities are started.
///
/// # Errors
///
/// A message: the name is taken (`EEXIST`), the journal or state file cannot be written, the
/// configuration is bad.
pub fn run(sys: &System, opts: Options, ready: impl FnOnce()) -> Result<(), String> {
    run_with(sys, opts, None, ready)
}

fn run_with(
    sys: &System,
    opts: Options,
    saved: Option<Saved>,
    ready: impl FnOnce(),
) -> Result<(), String> {
    opts.config.check()?;
    if opts.guardian && opts.state.is_none() {
        return Err("a guardian needs a state file (--state)".into());
    }
    if opts.guardian && opts.tether {
        return Err("--tether and --guardian do not go together: a guardian needs the entities to outlive the manager".into());
    }
    let name = opts.name.clone();
    let mgr = Manager::new(sys, opts, saved)?;
    let mut d = Dispatch::new(sys, mgr).map_err(|e| format!("channel: {e}"))?;
    let _ = d.resource().self_coid.set(d.self_coid());
    let _ = d.resource().self_scoid.set(d.self_scoid());
    d.attach_name(&name)
        .map_err(|e| format!("name {name}: {e}"))?;
    d.resource()
        .record("ham", &[("pid", &sys.pid().0), ("name", &name)]);
    d.resource().start_all();
    d.resource().spawn_guardian();
    if d.resource().opts.stop_on_eof {
        let (sys, coid) = (sys.clone(), d.self_coid());
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
            let _ = sys.msg_send_pulse(coid, -1, CODE_STOP_ALL, 0);
        });
    }
    ready();
    let res = d.run(1);
    let stop = lock(&d.resource().stopping).unwrap_or(Stop {
        kill_entities: false,
    });
    d.resource().shut_down(stop);
    res.map(|_| ()).map_err(|e| format!("receive: {e}"))
}

/// Runs a guardian: waits for the manager called `name` to die, then takes over with the state
/// it left in `state` (adopting the entities that still run, restarting those that died) and
/// starts a guardian of its own. Returns when the manager it became is stopped, or at once if
/// the manager it guards stops cleanly.
///
/// # Errors
///
/// A message if there is no manager to guard or the state file cannot be read.
pub fn run_standby(
    sys: &System,
    name: &str,
    state: &Path,
    journal: Option<PathBuf>,
    entity_output: bool,
) -> Result<(), String> {
    let coid = sys
        .name_wait_open(name, Some(Duration::from_secs(10)))
        .map_err(|e| format!("no manager {name} to guard: {e}"))?;
    // A channel with COID_DISCONNECT: the manager's channel going away sends it a pulse.
    let chid = sys
        .channel_create(chf::COID_DISCONNECT)
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    loop {
        match sys.msg_receive(chid, &mut buf) {
            Ok(Received::Pulse(p)) if p.code == pulse_code::COIDDEATH && p.value == coid.0 => break,
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let _ = sys.connect_detach(coid);
    let _ = sys.channel_destroy(chid);
    let text = std::fs::read(state).map_err(|e| format!("state {}: {e}", state.display()))?;
    let saved: Saved = serde_json::from_slice(&text).map_err(|e| format!("state: {e}"))?;
    if let Some(j) = journal.as_ref().and_then(|p| Journal::open(p).ok()) {
        let _ = j.record("takeover", &[("pid", &sys.pid().0), ("name", &name)]);
    }
    let opts = Options {
        name: name.to_owned(),
        config: saved.config.clone(),
        journal,
        state: Some(state.to_path_buf()),
        guardian: true,
        entity_output,
        stop_on_eof: false,
        tether: false,
    };
    run_with(sys, opts, Some(saved), || {})
}
