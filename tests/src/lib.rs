//! Shared pieces of the cross-process tests: systems named per test and removed on drop, helper
//! processes that are killed on drop, a watchdog, and the payload pattern both sides check.
//!
//! Every test system's name starts with [`PREFIX`], so `.ci/run` can remove what a test killed by
//! the runner's timeout could not.
#![forbid(unsafe_code)]

use kernel_sim::{Limits, System, SystemBuilder};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The common prefix of every test system's name.
pub const PREFIX: &str = "qsimtest-";

/// A system of the test's own, removed (with its arena file) on drop, even when the test fails.
pub struct TestSystem {
    /// The handle.
    pub sys: System,
    /// The system's name.
    pub name: String,
}

impl TestSystem {
    /// Creates `qsimtest-<tag>-<pid>` with `limits`.
    pub fn new(tag: &str, limits: Limits) -> TestSystem {
        let name = format!("{PREFIX}{tag}-{}", std::process::id());
        let _ = kernel_sim::remove_system(&name);
        let sys = SystemBuilder::new()
            .name(&name)
            .limits(limits)
            .create()
            .expect("create test system");
        TestSystem { sys, name }
    }
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        let _ = kernel_sim::remove_system(&self.name);
    }
}

/// A scratch directory `<tmp>/qsimtest-<tag>-<pid>`, created empty and removed on drop, even
/// when the test fails.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates it (emptied if a killed run left it).
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("{PREFIX}{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    /// `name` inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Small limits for tests that do not move big messages.
pub fn small_limits() -> Limits {
    Limits {
        max_processes: 8,
        threads_per_process: 4,
        max_channels: 16,
        max_coids: 32,
        max_msg_size: 64 * 1024,
        max_pulses: 64,
        max_names: 8,
    }
}

/// A helper process, killed (and reaped) on drop. Its stdin stays open while the guard lives; the
/// helper exits when it reads end-of-file, so it cannot outlive a test process that was aborted.
pub struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<String>,
    /// The helper's pid.
    pub pid: i32,
}

impl Helper {
    /// Starts `bin` with `args`.
    pub fn spawn(bin: &str, args: &[&str]) -> Helper {
        Self::spawn_cmd(Command::new(bin).args(args))
    }

    /// Starts a prepared command (stdin and stdout are taken over).
    pub fn spawn_cmd(cmd: &mut Command) -> Helper {
        Self::try_spawn_cmd(cmd).expect("spawn helper")
    }

    /// [`Helper::spawn_cmd`] that returns the spawn error.
    pub fn try_spawn_cmd(cmd: &mut Command) -> std::io::Result<Helper> {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().expect("helper stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[helper] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as i32;
        Ok(Helper {
            child,
            stdin,
            out: rx,
            pid,
        })
    }

    /// The next line the helper prints (panics after `timeout`, naming what was awaited).
    pub fn line(&self, what: &str) -> String {
        self.out
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "helper {} printed no line while waiting for {what}",
                    self.pid
                )
            })
    }

    /// Waits for a line starting with `prefix` and returns the rest of it, split at spaces.
    pub fn expect(&self, prefix: &str) -> Vec<String> {
        loop {
            let l = self.line(prefix);
            if let Some(rest) = l.strip_prefix(prefix) {
                return rest.split_whitespace().map(str::to_owned).collect();
            }
        }
    }

    /// Like [`Helper::expect`], but returns None when the helper's output ends (it exited or
    /// was killed) before such a line.
    pub fn try_expect(&self, prefix: &str) -> Option<Vec<String>> {
        loop {
            match self.out.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Some(rest.split_whitespace().map(str::to_owned).collect());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "helper {} printed nothing for 60 s while waiting for {prefix}",
                        self.pid
                    )
                }
            }
        }
    }

    /// Sends a line to the helper's stdin.
    pub fn say(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    /// Kills the helper with SIGKILL (no cooperation: `kill -9`) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the helper to exit on its own (its stdin stays open) and returns its exit code,
    /// or None if a signal killed it.
    pub fn wait_exit(mut self) -> Option<i32> {
        self.child.wait().expect("wait helper").code()
    }

    /// Closes the helper's stdin (which makes it exit), waits for it and returns its exit code (None if killed by a signal).
    pub fn wait(mut self) -> Option<i32> {
        self.stdin.take();
        self.child.wait().expect("wait helper").code()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `helper`'s `send` mode: a client in another process that connects to channel `chid`
/// of process `pid` and sends one patterned request of `len` bytes at priority `prio`, with a
/// reply buffer of `rbytes`; it prints `SENDING <coid>`, then `STATUS ...` or `ERR ...`.
pub fn send_one(
    helper: &str,
    system: &str,
    pid: &str,
    chid: &str,
    len: usize,
    rbytes: usize,
    prio: u8,
) -> Helper {
    Helper::spawn(
        helper,
        &[
            "send",
            system,
            pid,
            chid,
            &len.to_string(),
            &rbytes.to_string(),
            &prio.to_string(),
        ],
    )
}

/// Aborts the whole test binary if the test is still running after `secs` (a hung blocking call
/// must fail the run, not stall it); the helpers then see end-of-file on stdin and exit.
pub struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    /// Arms the watchdog for the test `name`.
    pub fn new(name: &'static str, secs: u64) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs))
            {
                eprintln!("watchdog: test {name} still running after {secs} s; aborting");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The payload pattern: byte `i` of a message of `len` bytes from client `seed`. Both sides
/// check every byte, so a message that reached the wrong server, was cut short or mixed with
/// another client's shows up as a mismatch.
pub fn pattern(seed: u32, len: usize, i: usize) -> u8 {
    let x = (i as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(seed.wrapping_mul(40_503))
        .wrapping_add(len as u32);
    (x >> 13) as u8
}

/// The message type test requests start with: above `_IO_MAX`, as a QNX server's private
/// types are, so a server never takes a request for an `_IO_CONNECT`/`_IO_DUP`/`_IO_CLOSE`.
pub const TEST_MSG_TYPE: u16 = 0x0200;

/// Fills a request: from 8 bytes on, the type [`TEST_MSG_TYPE`] in bytes 0..2 and the seed in
/// bytes 4..8; the pattern everywhere else.
pub fn fill_request(seed: u32, buf: &mut [u8]) {
    let len = buf.len();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, len, i);
    }
    if len >= 8 {
        buf[..2].copy_from_slice(&TEST_MSG_TYPE.to_le_bytes());
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..8].copy_from_slice(&seed.to_le_bytes());
    }
}

/// Checks a request filled by [`fill_request`]; returns its seed (0 for requests under 8 bytes).
pub fn check_request(buf: &[u8]) -> Option<u32> {
    let len = buf.len();
    if len < 8 {
        return (0..len).all(|i| buf[i] == pattern(0, len, i)).then_some(0);
    }
    if buf[..4] != [0x00, 0x02, 0, 0] {
        return None;
    }
    let seed = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    (8..len)
        .all(|i| buf[i] == pattern(seed, len, i))
        .then_some(seed)
}

/// The reply to a request: every byte inverted.
pub fn reply_for(req: &[u8]) -> Vec<u8> {
    req.iter().map(|b| !b).collect()
}
