//! Signals that unblock kernel calls, as in QNX: a signal delivered to a thread blocked in a
//! kernel call, with a handler installed without `SA_RESTART`, makes a SEND-blocked call return
//! `EINTR` at once (the server never sees the request), a REPLY-blocked one return `EINTR` at
//! once, unless the channel has `_NTO_CHF_UNBLOCK` (then the server gets an UNBLOCK pulse and the
//! client waits for its answer), and a RECEIVE-blocked one return `EINTR`.
//!
//! Which signals: any signal whose handler [`unblock_on`] installed. Such a handler sets a flag
//! of the thread it runs on, which a blocked call checks on every round of its spin phase and
//! before it sleeps; a signal that arrives during the sleep interrupts the futex wait itself.
//! A handler of the application's own, installed without `SA_RESTART`, interrupts the sleep
//! phase only (a signal it handles while the thread spins is not seen).

use crate::Errno;

/// Installs a handler for `sig` that unblocks the kernel call of the thread it is delivered
/// to (see the module documentation). Replaces any handler the process had for `sig`.
///
/// # Errors
///
/// `EINVAL`: a signal that cannot be caught (`SIGKILL`, `SIGSTOP`) or out of range.
pub fn unblock_on(sig: i32) -> Result<(), Errno> {
    crate::sys::install_unblock_handler(sig)
}

/// Sends `sig` to thread `tid` of this process (`pthread_kill` by OS thread id).
///
/// # Errors
///
/// `ESRCH`: no such thread; `EINVAL`: a bad signal.
pub fn thread_kill(tid: i32, sig: i32) -> Result<(), Errno> {
    crate::sys::thread_kill(tid, sig)
}

/// The calling thread's OS thread id.
pub fn gettid() -> i32 {
    crate::sys::gettid()
}
