//! The few Linux calls the floors and the peer programs need: shared futexes, CPU affinity, a
//! parent-death signal, SIGKILL and `_exit`, the monotonic clock as a number all processes share
//! (for the recovery rows), and the pipes and socket pairs of the peers (with the descriptor
//! handling that passes one end to a child process).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;

/// `FUTEX_WAIT` without `FUTEX_PRIVATE_FLAG`: sleeps while `word` holds `expected`.
///
/// Returns when woken, spuriously, on `EINTR`, or at once (`EAGAIN`) if the word changed; the
/// caller re-checks the word in every case, so the result carries no information.
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a live, 4-byte aligned atomic for the duration of the call (it borrows the
    // mapping); FUTEX_WAIT only reads it. Without FUTEX_PRIVATE_FLAG the kernel keys the wait on
    // the backing page, so a waker in the other process that maps the same file matches it. The
    // timeout pointer is null (wait indefinitely) and the remaining arguments are ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            core::ptr::null::<libc::timespec>(),
            core::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// `FUTEX_WAKE` without `FUTEX_PRIVATE_FLAG`: wakes up to one thread sleeping on `word`.
pub fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not access the word's memory at all.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1i32,
            core::ptr::null::<libc::timespec>(),
            core::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), in ascending order.
///
/// # Errors
///
/// The OS error of `sched_getaffinity`.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed; pid 0 is the caller.
    let r =
        unsafe { libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cpus = Vec::new();
    for cpu in 0..8 * core::mem::size_of::<libc::cpu_set_t>() {
        // SAFETY: `cpu` is below the set's size in bits, the bound CPU_ISSET indexes within.
        if unsafe { libc::CPU_ISSET(cpu, &set) } {
            cpus.push(cpu);
        }
    }
    Ok(cpus)
}

/// Pins the calling thread to `cpu` (`sched_setaffinity`); threads it creates later inherit it.
///
/// # Errors
///
/// `InvalidInput` if `cpu` is beyond what a `cpu_set_t` holds; the OS error of
/// `sched_setaffinity` (`EINVAL` if the CPU is not online or not allowed).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * core::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} does not fit a cpu_set_t"),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: `cpu` was checked above to be below the set's size in bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to SIGKILL this process when the thread that forked it exits
/// (`PR_SET_PDEATHSIG`), then checks that the parent is still `expected_parent`: if it died before
/// the call, the signal would never come.
///
/// # Errors
///
/// The OS error of `prctl`; `Other` if the parent is gone already.
pub fn die_with_parent(expected_parent: u32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and reads no memory; the unused arguments are
    // zero as the man page asks.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if std::os::unix::process::parent_id() != expected_parent {
        return Err(io::Error::other(
            "the parent exited before the death signal was armed",
        ));
    }
    Ok(())
}

/// Sends SIGKILL to process `pid`, ignoring errors (it may be gone already).
pub fn sigkill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return; // 0 and negative values name process groups, never one child
    }
    // SAFETY: kill(2) reads no memory; a positive pid names exactly one process.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Ends the process at once with `code` (`_exit`): no destructors and no `atexit` handlers, which
/// a watchdog needs when the main thread may hold locks those handlers would take.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions and does not return.
    unsafe { libc::_exit(code) }
}

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: the one clock every process on the machine
/// shares. std's `Instant` reads the same clock but keeps its value private, so a timestamp taken
/// in one process (a server's "name attached") could not be compared with one taken in another
/// (the bench's "killed"); these numbers can, passed between processes as plain integers.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that lives across the call, and clock_gettime
    // writes nothing else; CLOCK_MONOTONIC exists on every Linux, so the call cannot fail (EINVAL
    // is its only error for a valid pointer) and `ts` is always filled in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // The monotonic clock counts from boot: both fields are non-negative.
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Restricts the calling thread to `cpus` (`sched_setaffinity`); threads and processes it
/// creates later inherit the set.
///
/// # Errors
///
/// `InvalidInput` if `cpus` is empty or names a CPU beyond what a `cpu_set_t` holds; the OS error
/// of `sched_setaffinity`.
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    let bits = 8 * core::mem::size_of::<libc::cpu_set_t>();
    if cpus.is_empty() || cpus.iter().any(|&c| c >= bits) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot make a cpu_set_t of {cpus:?}"),
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: every `cpu` was checked above to be below the set's size in bits.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kind of a byte channel between two processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairKind {
    /// Two pipes, one per direction (`pipe2`).
    Pipe,
    /// A connected `AF_UNIX` `SOCK_STREAM` pair (`socketpair`).
    UnixStream,
    /// A connected `AF_UNIX` `SOCK_SEQPACKET` pair (`socketpair`).
    UnixSeqpacket,
}

/// One pipe (`pipe2` with `O_CLOEXEC`): returns (read end, write end).
///
/// # Errors
///
/// The OS error of `pipe2`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are new open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of Unix sockets of `kind` (`UnixStream` or `UnixSeqpacket`), both
/// `SOCK_CLOEXEC`.
///
/// # Errors
///
/// `InvalidInput` for [`PairKind::Pipe`]; the OS error of `socketpair`.
pub fn socket_pair(kind: PairKind) -> io::Result<(OwnedFd, OwnedFd)> {
    let ty = match kind {
        PairKind::UnixStream => libc::SOCK_STREAM,
        PairKind::UnixSeqpacket => libc::SOCK_SEQPACKET,
        PairKind::Pipe => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a pipe is no socket pair",
            ))
        }
    };
    let mut fds = [-1i32; 2];
    // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
    let r =
        unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both are new open descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets or clears `FD_CLOEXEC` on `fd`: a descriptor without it is inherited by the processes
/// this one spawns.
///
/// # Errors
///
/// The OS error of `fcntl`.
pub fn set_inheritable(fd: BorrowedFd<'_>, inheritable: bool) -> io::Result<()> {
    let flags = if inheritable { 0 } else { libc::FD_CLOEXEC };
    // SAFETY: F_SETFD takes an int and reads no memory; `fd` is open for the call (borrowed).
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for a send buffer of `bytes` on socket `fd` (`SO_SNDBUF`; Linux doubles the value and
/// caps it at `net.core.wmem_max`). A Unix `SOCK_SEQPACKET` record must fit in it.
///
/// # Errors
///
/// `InvalidInput` if `bytes` does not fit an int; the OS error of `setsockopt`.
pub fn set_send_buffer(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "send buffer too large"))?;
    // SAFETY: `value` is an int that lives across the call and its size is passed; `fd` is open
    // for the call (borrowed).
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&value as *const libc::c_int).cast(),
            core::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes ownership of descriptor `raw`, which this process inherited from its parent (its number
/// came in an environment variable): checks that it is open, above stdin/stdout/stderr, and a
/// pipe (for [`PairKind::Pipe`]) or a socket (otherwise), and marks it close-on-exec.
///
/// Call it once per descriptor, at startup: ownership is sound only while nothing else in this
/// process uses `raw`.
///
/// # Errors
///
/// `InvalidInput` for a number at or below 2, a descriptor of another type; `EBADF` (the OS
/// error) if it is not open.
pub fn take_inherited_fd(raw: i32, kind: PairKind) -> io::Result<OwnedFd> {
    if raw <= 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {raw} is not an inherited one"),
        ));
    }
    // SAFETY: `stat` is plain data; all zeroes is a valid value, overwritten by fstat.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: fstat writes only into `st`, a valid, writable `stat`; an unknown descriptor gives
    // EBADF and nothing else.
    if unsafe { libc::fstat(raw, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let want = match kind {
        PairKind::Pipe => libc::S_IFIFO,
        PairKind::UnixStream | PairKind::UnixSeqpacket => libc::S_IFSOCK,
    };
    if st.st_mode & libc::S_IFMT != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {raw} is not a {kind:?} end"),
        ));
    }
    // SAFETY: `raw` is open (fstat succeeded) and the caller guarantees, as documented, that
    // nothing else in this process owns or uses it: it was inherited and is taken once.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_inheritable(fd.as_fd(), false)?;
    Ok(fd)
}

/// Makes SIGINT, SIGTERM and SIGHUP end the process through `on_signal` instead of at once:
/// blocks them in the calling thread (and so in every thread it starts later; call this first
/// thing in `main`) and starts a thread that waits for one (`sigwait`), runs `on_signal` with its
/// number and exits with 128 + the number. A peer process spawned later starts with an empty
/// signal mask (std's spawn resets it), and dies with the bench by its parent-death signal.
///
/// # Errors
///
/// The OS error of `pthread_sigmask`.
pub fn on_termination_signal(on_signal: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    // SAFETY: `sigset_t` is plain data; sigemptyset initialises it below before any other use.
    let mut set: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    // SAFETY: `set` is an initialised sigset_t; the old mask is not asked for (null).
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised sigset_t (moved into this thread by value) and `sig`
        // a writable int; these signals are blocked in every thread, so sigwait receives them.
        let r = unsafe { libc::sigwait(&set, &mut sig) };
        if r == 0 {
            on_signal(sig);
            exit_now(128 + sig);
        }
    });
    Ok(())
}
