//! Peer processes: spawning one of this binary's roles, reading its ready line, killing it on
//! drop; CPU placement; and the watchdog that ends a run stuck in a hand-off.

use crate::error::BenchError;
use crate::floor::os;
use crate::role::{Role, CPU_ENV, PARENT_ENV, ROLE_ENV};
use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a peer may take from spawn to its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The CPUs this process may use, as they were the first time a placement was made (before any
/// pinning), so `none` can undo an earlier `apart` or `same`.
fn startup_cpus() -> &'static io::Result<Vec<usize>> {
    static CPUS: OnceLock<io::Result<Vec<usize>>> = OnceLock::new();
    CPUS.get_or_init(os::allowed_cpus)
}

/// The three placements of the issue: both sides on different CPUs, both on one, or left to the
/// scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementKind {
    /// Client pinned to CPU 0, server to CPU 1.
    Apart,
    /// Client and server both pinned to CPU 0.
    Same,
    /// Not pinned.
    None,
}

impl PlacementKind {
    /// The name in tables and JSON: `apart`, `same` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementKind::Apart => "apart",
            PlacementKind::Same => "same",
            PlacementKind::None => "none",
        }
    }

    /// The kind named `s` by [`PlacementKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            PlacementKind::Apart,
            PlacementKind::Same,
            PlacementKind::None,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Where the bench (client) and its peers (servers) run. Making one pins (or unpins) the calling
/// thread, and the threads and processes it creates later inherit that; peers pin themselves to
/// [`Placement::server_cpu`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// What was asked for.
    pub kind: PlacementKind,
    /// The CPU the calling thread was pinned to, if any.
    pub client_cpu: Option<usize>,
    /// The CPU each peer pins itself to, if any.
    pub server_cpu: Option<usize>,
    /// Why there is no pinning, if there is none.
    pub note: Option<String>,
}

impl Placement {
    /// "Apart": pins the calling thread (and the threads it creates later) to CPU 0 and makes
    /// peers pin themselves to CPU 1, so every hand-off crosses cores. Falls back to no pinning,
    /// with a note, when CPUs 0 and 1 are not both available.
    pub fn apart() -> Self {
        Self::pinned(PlacementKind::Apart, 0, 1)
    }

    /// "Same": pins the calling thread and makes peers pin themselves to CPU 0, so every
    /// hand-off is a switch on one core. Falls back to no pinning, with a note, when CPU 0 is not
    /// available.
    pub fn same() -> Self {
        Self::pinned(PlacementKind::Same, 0, 0)
    }

    /// No pinning at all: gives the calling thread back every CPU the process had at its first
    /// placement (so peers it spawns inherit them) and lets the scheduler place both sides.
    pub fn unpinned() -> Self {
        let note = match startup_cpus() {
            Ok(cpus) => match os::set_affinity(cpus) {
                Ok(()) => "not pinned".to_owned(),
                Err(e) => format!("not pinned (restoring CPUs {cpus:?} failed: {e})"),
            },
            Err(e) => format!("not pinned (sched_getaffinity failed: {e})"),
        };
        Placement {
            kind: PlacementKind::None,
            client_cpu: None,
            server_cpu: None,
            note: Some(note),
        }
    }

    /// The placement `kind`.
    pub fn of(kind: PlacementKind) -> Self {
        match kind {
            PlacementKind::Apart => Self::apart(),
            PlacementKind::Same => Self::same(),
            PlacementKind::None => Self::unpinned(),
        }
    }

    fn pinned(kind: PlacementKind, client: usize, server: usize) -> Self {
        let unpinned = |note: String| Placement {
            note: Some(note),
            kind,
            ..Self::unpinned()
        };
        let cpus = match startup_cpus() {
            Ok(c) => c,
            Err(e) => return unpinned(format!("sched_getaffinity failed ({e}); not pinned")),
        };
        if !(cpus.contains(&client) && cpus.contains(&server)) {
            return unpinned(format!(
                "CPUs {client} and {server} not both available (allowed: {cpus:?}); not pinned"
            ));
        }
        match os::pin_current_thread(client) {
            Ok(()) => Placement {
                kind,
                client_cpu: Some(client),
                server_cpu: Some(server),
                note: None,
            },
            Err(e) => unpinned(format!(
                "sched_setaffinity(CPU {client}) failed ({e}); not pinned"
            )),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.client_cpu, self.server_cpu, &self.note) {
            (Some(c), Some(s), _) => write!(f, "client on CPU {c}, server on CPU {s}"),
            (_, _, Some(note)) => f.write_str(note),
            _ => f.write_str("not pinned"),
        }
    }
}

/// A peer process running one of this binary's roles. Dropping it kills the process (SIGKILL)
/// and reaps it, so a bench that panics leaves nothing running.
#[derive(Debug)]
pub struct PeerProcess {
    child: Option<Child>,
    role: Role,
    pid: u32,
}

impl PeerProcess {
    /// Starts this executable in `role` with the extra environment `env`, pinned as `placement`
    /// says, and waits (at most [`READY_TIMEOUT`]) for the line it prints on stdout once it is
    /// ready: `ready<rest>`. Returns the process and `<rest>`, trimmed.
    ///
    /// # Errors
    ///
    /// - [`BenchError::Spawn`]: the process could not be started.
    /// - [`BenchError::NotReady`]: it exited, printed something else, or timed out (it is killed).
    pub fn spawn(
        role: Role,
        env: &[(&str, String)],
        placement: &Placement,
    ) -> Result<(Self, String), BenchError> {
        let exe = std::env::current_exe().map_err(BenchError::Spawn)?;
        let mut cmd = Command::new(exe);
        cmd.env(ROLE_ENV, role.as_str())
            .env(PARENT_ENV, std::process::id().to_string())
            .env_remove(CPU_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(cpu) = placement.server_cpu {
            cmd.env(CPU_ENV, cpu.to_string());
        }
        let mut child = cmd.spawn().map_err(BenchError::Spawn)?;
        let stdout = child.stdout.take();
        let mut peer = PeerProcess {
            pid: child.id(),
            child: Some(child),
            role,
        };
        let not_ready = |detail: String| BenchError::NotReady {
            role: role.as_str(),
            detail,
        };
        let stdout = stdout.ok_or_else(|| not_ready("no stdout pipe".to_owned()))?;
        // Read in a thread so a peer that hangs before its ready line cannot hang the bench.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(not_ready(format!("reading its stdout: {e}"))),
            Err(_) => {
                // Kill it now: the reader thread then sees EOF and ends.
                peer.kill();
                return Err(not_ready(format!("no ready line within {READY_TIMEOUT:?}")));
            }
        };
        match line.trim().strip_prefix("ready") {
            Some(rest) => Ok((peer, rest.trim().to_owned())),
            None if line.is_empty() => {
                let status = peer.wait_timeout(Duration::from_secs(1));
                Err(not_ready(format!(
                    "exited before its ready line ({status})"
                )))
            }
            None => Err(not_ready(format!(
                "printed {line:?} instead of its ready line"
            ))),
        }
    }

    /// The peer's OS pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits up to `timeout` for the peer to exit on its own (after it was asked to stop), then
    /// kills it.
    ///
    /// # Errors
    ///
    /// [`BenchError::BadExit`] if it had to be killed or exited with a failure status.
    pub fn wait_exit(mut self, timeout: Duration) -> Result<(), BenchError> {
        let role = self.role.as_str();
        match self.try_wait_for(timeout) {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(BenchError::BadExit {
                role,
                detail: status.to_string(),
            }),
            None => {
                self.kill();
                Err(BenchError::BadExit {
                    role,
                    detail: format!("still running after {timeout:?}; killed"),
                })
            }
        }
    }

    fn try_wait_for(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                _ => return None,
            }
        }
    }

    /// Describes how the peer ended within `timeout`, for an error message.
    fn wait_timeout(&mut self, timeout: Duration) -> String {
        match self.try_wait_for(timeout) {
            Some(status) => status.to_string(),
            None => "still running".to_owned(),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill is SIGKILL on Unix; wait reaps it, so no zombie stays behind.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Ends the whole bench if a case runs longer than its limit: a hand-off that never completes
/// (a lost wake-up, a dead peer) would otherwise hang `cargo bench` forever. On firing it kills
/// the case's peers, removes its shared-memory files (and every other `/dev/shm` file of this
/// process, see [`remove_own_shm_files`]) and exits with status 3, without running destructors
/// (the stuck thread may hold what they need). Disarmed when dropped.
#[derive(Debug)]
pub struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for `what` that fires after `limit`, killing the processes `pids` and
    /// removing the files (or directories, with their contents) `files`.
    pub fn arm(what: String, limit: Duration, pids: Vec<u32>, files: Vec<PathBuf>) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return; // disarmed
            }
            eprintln!(
                "watchdog: {what} still running after {limit:?}; killing peers {pids:?}, \
                 removing {files:?}, exiting"
            );
            for pid in &pids {
                os::sigkill(*pid);
            }
            for f in &files {
                remove_path(f);
            }
            remove_own_shm_files();
            os::exit_now(3);
        });
        Watchdog {
            disarm: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Removes `path`, a file or a directory with everything in it; errors are ignored (it may be
/// gone already).
pub fn remove_path(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// The `/dev/shm` files of this process: every file this crate creates there, including the
/// kernel-sim arenas and iceoryx2's segments, is named `qsimtest-bench-<pid>-...`.
pub fn own_shm_files() -> Vec<PathBuf> {
    let prefix = format!("{}{}-", crate::floor::SHM_PREFIX, std::process::id());
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect()
}

/// Removes [`own_shm_files`]; returns what it removed (empty when every guard did its job).
pub fn remove_own_shm_files() -> Vec<PathBuf> {
    let files = own_shm_files();
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    files
}

/// Removes what earlier bench processes that no longer run left behind (one stopped by SIGINT or
/// SIGKILL runs no destructor): `/dev/shm/qsimtest-bench-<pid>-*` and
/// `<temp dir>/qsimtest-bench-<pid>-*` whose `<pid>` names no running process. Returns what it
/// removed.
pub fn remove_stale_files() -> Vec<PathBuf> {
    let prefix = crate::floor::SHM_PREFIX;
    let mut removed = Vec::new();
    for dir in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                remove_path(&e.path());
                removed.push(e.path());
            }
        }
    }
    removed
}

/// Removes this process's `/dev/shm` files and temp directories and exits when SIGINT, SIGTERM
/// or SIGHUP arrives (peers die with it by their parent-death signal), so a bench stopped with
/// Ctrl-C leaves nothing behind. Call first thing in `main`, after role dispatch.
pub fn clean_up_on_termination_signal() {
    let armed = os::on_termination_signal(|sig| {
        remove_own_shm_files();
        let prefix = format!("{}{}-", crate::floor::SHM_PREFIX, std::process::id());
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for e in entries.filter_map(Result::ok) {
                if e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
                {
                    remove_path(&e.path());
                }
            }
        }
        eprintln!("signal {sig}: removed this run's shared files; exiting");
    });
    if let Err(e) = armed {
        eprintln!("cannot catch termination signals ({e}); Ctrl-C may leave files behind");
    }
}
