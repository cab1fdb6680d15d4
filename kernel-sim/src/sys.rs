//! Thin, safe wrappers over the few Linux system calls the kernel needs: shared futexes, CPU and
//! process identity, randomness. Every `unsafe` block here states why its contract holds.
#![allow(unsafe_code)]

use crate::sync::atomic::AtomicU32;
use crate::Errno;
use std::time::Duration;

/// `FUTEX_WAIT` (shared) on `word`: sleeps while it holds `expected`, at most `timeout`.
///
/// Returns `Ok` when woken (or spuriously), `EAGAIN` if the word did not hold `expected`,
/// `ETIMEDOUT`, or `EINTR`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Result<(), Errno> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, 4-byte aligned atomic (in the shared mapping or on the heap) for the
    // duration of the call; FUTEX_WAIT only reads it. Without FUTEX_PRIVATE_FLAG the kernel keys the
    // wait on the physical page, so waiters in other processes mapping the same file are matched.
    // `ts_ptr` is null or points at `ts`, which outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            core::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last_os_error())
    }
}

/// `FUTEX_WAKE` (shared): wakes up to `n` threads sleeping on `word`; returns how many woke.
pub fn futex_wake(word: &AtomicU32, n: u32) -> u32 {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not access the word's memory at all.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n.min(i32::MAX as u32),
            core::ptr::null::<libc::timespec>(),
            core::ptr::null::<u32>(),
            0u32,
        )
    };
    r.max(0) as u32
}

/// The CPU the calling thread runs on now (`sched_getcpu`, a vDSO call), or `u32::MAX`.
pub fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu takes no arguments and has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    if c < 0 {
        u32::MAX
    } else {
        c as u32
    }
}

/// The calling process's pid.
pub fn getpid() -> i32 {
    std::process::id() as i32
}

/// The calling thread's kernel thread id.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments or preconditions.
    unsafe { libc::gettid() }
}

/// Real and effective user and group ids of the caller.
pub fn ids() -> (u32, u32, u32, u32) {
    // SAFETY: these calls have no arguments or preconditions and cannot fail.
    unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
/// `None` if no such process exists. Together with the pid it names one process image's lifetime,
/// so pid reuse cannot fool a liveness check.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    // Allocation-free: this runs in lock waits and cleanups, which must not allocate.
    let mut path = [0u8; 32];
    let mut n = 0;
    for b in b"/proc/" {
        path[n] = *b;
        n += 1;
    }
    let mut digits = [0u8; 10];
    let mut d = 0;
    let mut v = pid as u32;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[n] = digits[d];
        n += 1;
    }
    for b in b"/stat" {
        path[n] = *b;
        n += 1;
    }
    let mut buf = [0u8; 1024];
    // SAFETY: `path` is NUL-terminated (at most 6 + 10 + 5 bytes of 32, the rest zeroes); the fd
    // is closed before return; `buf` is a writable local of the length passed to read.
    let len = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let r = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        r
    };
    if len <= 0 {
        return None;
    }
    let stat = &buf[..len as usize];
    // The command name (field 2) is in parentheses and may contain spaces and ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let mut fields = stat[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = fields.next()?;
    if state == b"Z" || state == b"X" {
        return None; // a zombie has exited: it holds nothing any more
    }
    // After ')' come field 3 (state) onwards; the start time is field 22, the 20th of these.
    let start = fields.nth(18)?;
    start.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add((b - b'0') as u64)
        } else {
            None
        }
    })
}

/// Whether the process that registered as (`pid`, `start_time`) is still running.
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    process_start_time(pid) == Some(start_time)
}

/// A random 64-bit value from the OS (`getrandom`), never 0.
pub fn random_u64() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: the buffer is a valid, writable 8-byte local; getrandom writes at most 8 bytes.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n != 8 {
        // Fall back to a mix of time and pid; the token only has to differ between images.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        v = t ^ ((getpid() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    }
    v.max(1)
}

/// Reserves `len` bytes for the file (`posix_fallocate`), so a full /dev/shm is an error now
/// rather than a SIGBUS on first touch later.
pub fn fallocate(file: &std::fs::File, len: u64) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for writing for the duration of the call (borrowed from `file`).
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(r))
    }
}

/// Registers `f` to run at normal process exit (`atexit`).
pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with no captured state, valid for the life of the program;
    // atexit only stores the pointer.
    unsafe {
        libc::atexit(f);
    }
}

/// A pidfd (`pidfd_open`): readable once the process has exited.
#[derive(Debug)]
pub struct PidFd(pub std::os::fd::OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`; `ESRCH` if there is no such process.
    pub fn open(pid: i32) -> Result<PidFd, Errno> {
        // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Errno::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us; nobody else owns it.
        Ok(PidFd(unsafe {
            std::os::fd::FromRawFd::from_raw_fd(fd as i32)
        }))
    }
}

impl PidFd {
    /// Sends signal `sig` to the process (`pidfd_send_signal`): never to a process that merely
    /// reuses the pid.
    pub fn send_signal(&self, sig: i32) -> Result<(), Errno> {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal takes an fd we own, a signal number, a null siginfo pointer
        // (allowed: the kernel fills in a default one) and flags 0; it reads no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(Errno::last_os_error());
        }
        Ok(())
    }
}

/// A pipe whose write end, when dropped, wakes a `poll` on the read end (POLLHUP).
#[derive(Debug)]
pub struct WakePipe {
    /// The end the waiter polls.
    pub read: std::os::fd::OwnedFd,
    /// The end whose drop (or a byte written) wakes it.
    pub write: std::os::fd::OwnedFd,
}

impl WakePipe {
    /// A new close-on-exec, non-blocking pipe.
    pub fn new() -> Result<WakePipe, Errno> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid, writable array of two ints for pipe2 to fill.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if r != 0 {
            return Err(Errno::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are fresh and owned by us alone.
        let (read, write) = unsafe {
            (
                std::os::fd::FromRawFd::from_raw_fd(fds[0]),
                std::os::fd::FromRawFd::from_raw_fd(fds[1]),
            )
        };
        Ok(WakePipe { read, write })
    }
}

/// A set of fds to wait on for readability, built before the wait so the wait itself allocates
/// nothing (the watcher sleeps in it while a process measures its send path).
pub struct PollSet(Vec<libc::pollfd>);

impl PollSet {
    /// The set of `fds`, all waited on for readability.
    pub fn new(fds: &[std::os::fd::BorrowedFd<'_>]) -> PollSet {
        use std::os::fd::AsRawFd;
        PollSet(
            fds.iter()
                .map(|f| libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect(),
        )
    }

    /// Waits until one is readable (or hung up), at most `timeout`.
    pub fn wait(&mut self, timeout: std::time::Duration) {
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        for p in self.0.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: the vector holds `len()` valid pollfd structs for the duration of the call; the
        // caller keeps the fds open while it uses the set (they were borrowed to build it and
        // belong to the caller's own objects, which outlive the wait).
        let r = unsafe { libc::poll(self.0.as_mut_ptr(), self.0.len() as libc::nfds_t, ms) };
        if r <= 0 {
            for p in self.0.iter_mut() {
                p.revents = 0;
            }
        }
    }

    /// Whether fd `i` of the set was readable (or hung up) after the last wait.
    pub fn ready(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|p| p.revents != 0)
    }
}

/// Kills the calling process with SIGKILL (crash points).
#[cfg(feature = "crash-points")]
pub fn kill_self() -> ! {
    // SAFETY: kill with our own pid and SIGKILL has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught or ignored; this is only reached if kill itself failed.
    std::process::abort()
}

extern "C" fn on_unblock_signal(_sig: libc::c_int) {
    crate::sync::signal_flag::set();
}

/// Installs, for `sig`, a handler (without `SA_RESTART`) that sets the calling thread's
/// signal flag; `EINVAL` for a signal that cannot be caught.
pub fn install_unblock_handler(sig: i32) -> Result<(), Errno> {
    // SAFETY: `sa` is a zeroed, then filled, sigaction that lives across the call; the handler
    // is a plain extern "C" function whose body only stores to a const-initialised thread-local
    // atomic, which is async-signal-safe. No SA_RESTART, so a futex wait it interrupts returns
    // EINTR.
    let r = unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = on_unblock_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        libc::sigaction(sig, &sa, core::ptr::null_mut())
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last_os_error())
    }
}

/// Sends `sig` to thread `tid` of this process (`tgkill`).
pub fn thread_kill(tid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: tgkill takes three integers by value and has no memory-safety preconditions.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last_os_error())
    }
}

/// Writes one byte to a non-blocking pipe (a nudge); a full pipe already holds a nudge.
pub fn nudge(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let b = [1u8];
    // SAFETY: `b` is a valid 1-byte buffer for the call; the fd is borrowed, so open.
    let _ = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 1) };
}

/// Reads what a non-blocking pipe holds: `Some(n)` bytes (0 = the write end is closed), `None`
/// if nothing was there.
pub fn drain(fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 64];
    // SAFETY: `b` is a valid, writable buffer of the length passed; the fd is borrowed, so open.
    let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    (n >= 0).then_some(n as usize)
}
