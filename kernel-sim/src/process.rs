//! Watching another process's exit, for supervisors such as the HA manager: a pidfd, checked
//! against the process's start time so that a reused pid is never taken for the process that
//! was meant. (QNX's HAM learns of deaths from the process manager; on Linux a pidfd is the
//! event-driven equivalent for a process that is not our child.)

use crate::sys::{PidFd, PollSet};
use crate::Errno;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// A watch on one process's exit.
#[derive(Debug)]
pub struct ProcessWatch {
    fd: PidFd,
    pid: i32,
}

/// The start time of process `pid` (clock ticks since boot, as `/proc/<pid>/stat` gives it),
/// or `None` if there is no such process. With the pid it names one process for good.
pub fn start_time(pid: i32) -> Option<u64> {
    crate::sys::process_start_time(pid)
}

impl ProcessWatch {
    /// Watches process `pid`.
    ///
    /// # Errors
    ///
    /// `ESRCH`: no such process; `EMFILE`/`ENFILE`: no file descriptor left.
    pub fn new(pid: i32) -> Result<ProcessWatch, Errno> {
        if pid <= 0 {
            return Err(Errno::SRCH);
        }
        Ok(ProcessWatch {
            fd: PidFd::open(pid)?,
            pid,
        })
    }

    /// Watches process `pid` if it is still the one that started at `start` ([`start_time`]).
    ///
    /// # Errors
    ///
    /// `ESRCH`: the process is gone, or `pid` now names another process.
    pub fn new_checked(pid: i32, start: u64) -> Result<ProcessWatch, Errno> {
        let w = ProcessWatch::new(pid)?;
        // Checked after the pidfd is open: from then on the pidfd pins this very process.
        if start_time(pid) != Some(start) {
            return Err(Errno::SRCH);
        }
        Ok(w)
    }

    /// The pid watched.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits until the process has exited (`true`) or `timeout` passes (`false`); `None` waits
    /// as long as it takes.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let end = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut set = PollSet::new(&[self.fd.0.as_fd()]);
        loop {
            let left = match end {
                None => Duration::from_secs(3600),
                Some(e) => e.saturating_duration_since(Instant::now()),
            };
            set.wait(left);
            if set.ready(0) {
                return true;
            }
            if end.is_some_and(|e| Instant::now() >= e) {
                return false;
            }
        }
    }

    /// Kills the process with `SIGKILL` (through the pidfd: never a process that reuses the
    /// pid).
    ///
    /// # Errors
    ///
    /// `ESRCH` if it has exited already.
    pub fn kill(&self) -> Result<(), Errno> {
        self.fd.send_signal(libc::SIGKILL)
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&self) -> bool {
        self.wait(Some(Duration::ZERO))
    }
}
