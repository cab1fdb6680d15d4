//! The few Linux calls the floors and the peer programs need: shared futexes, CPU affinity, a
//! parent-death signal, SIGKILL and `_exit`.

use std::io;
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
