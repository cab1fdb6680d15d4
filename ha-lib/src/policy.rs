//! Soft failures: the retry policy for transient send errors, and the classification of a
//! send's outcome into retryable and permanent states (in the spirit of RMR's states).

use kernel_sim::Errno;
use std::time::Duration;

/// How the library retries a send that failed with a transient error (`EAGAIN`: the server's
/// bounded send queue is full; `ENXIO`: the target is still being cleaned up). Permanent
/// failures are never retried.
///
/// Attempt `i` (from 0) first waits: a short spin for `i < spins`, a `yield` for
/// `i < spins + yields`, then a `sleep` of `sleep` each. The default makes up to 1000 attempts
/// (RMR's default); [`RetryPolicy::none`] returns the error at once (RMR's zero-retry mode).
/// The caller's deadline, if any, bounds the retries too.
///
/// What the default costs when the queue never drains (`cargo run --release -p ha-lib
/// --example retry_cost`, on this project's 2-vCPU VM): about 5.5 ms until `EAGAIN` reaches the
/// caller, of which the 950 spins and yields take about 0.5 ms and the 50 sleeps the rest (a
/// 20 µs sleep lasts about 100 µs there). A failed send in zero-retry mode costs about 0.1 µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first failure (0: none).
    pub attempts: u32,
    /// Attempts preceded by a short spin (about a microsecond).
    pub spins: u32,
    /// Then attempts preceded by `std::thread::yield_now`.
    pub yields: u32,
    /// The sleep before each later attempt.
    pub sleep: Duration,
    /// Whether pulse sends are retried too (default no: a pulse send never blocks, and a full
    /// pulse pool is better reported than waited out).
    pub retry_pulses: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1000,
            spins: 100,
            yields: 850,
            sleep: Duration::from_micros(20),
            retry_pulses: false,
        }
    }
}

impl RetryPolicy {
    /// The zero-retry mode: transient failures are returned at once.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        }
    }

    /// Waits before attempt `i` (from 0).
    pub(crate) fn pause(&self, i: u32) {
        if i < self.spins {
            for _ in 0..256 {
                std::hint::spin_loop();
            }
        } else if i < self.spins.saturating_add(self.yields) {
            std::thread::yield_now();
        } else {
            std::thread::sleep(self.sleep);
        }
    }
}

/// What a failed (or successful) send amounts to, mapped from its errno: whether trying again
/// can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendState {
    /// It worked.
    Ok,
    /// An argument was unusable (`EINVAL`, `EFAULT`, `EMSGSIZE`, `ENAMETOOLONG`, `EBADMSG`).
    BadArgument,
    /// No server at the other end (`EBADF`, `ESRCH`, `ENOENT`): recovery's business.
    NoEndpoint,
    /// A transient failure (`EAGAIN`, `ENXIO`): retrying can succeed.
    Retry,
    /// The caller's deadline passed (`ETIMEDOUT`).
    Timeout,
    /// A signal interrupted the call (`EINTR`).
    Interrupted,
    /// The server does not do that (`ENOSYS`, `ENOTTY`, `ENOTSUP`).
    NotSupported,
    /// Any other failure the server or the kernel reported.
    SendFailed,
}

impl SendState {
    /// The state of errno `e`.
    pub fn of_errno(e: Errno) -> SendState {
        match e {
            Errno::OK => SendState::Ok,
            Errno::INVAL | Errno::FAULT | Errno::MSGSIZE | Errno::NAMETOOLONG | Errno::BADMSG => {
                SendState::BadArgument
            }
            Errno::BADF | Errno::SRCH | Errno::NOENT => SendState::NoEndpoint,
            Errno::AGAIN | Errno::NXIO => SendState::Retry,
            Errno::TIMEDOUT => SendState::Timeout,
            Errno::INTR => SendState::Interrupted,
            Errno::NOSYS | Errno::NOTTY | Errno::NOTSUP => SendState::NotSupported,
            _ => SendState::SendFailed,
        }
    }

    /// The state of a call's result.
    pub fn of<T>(r: &Result<T, Errno>) -> SendState {
        match r {
            Ok(_) => SendState::Ok,
            Err(e) => SendState::of_errno(*e),
        }
    }

    /// Whether trying the same call again can succeed.
    pub fn is_retryable(self) -> bool {
        self == SendState::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_states() {
        assert_eq!(SendState::of_errno(Errno::AGAIN), SendState::Retry);
        assert!(SendState::of_errno(Errno::NXIO).is_retryable());
        assert!(!SendState::of_errno(Errno::BADF).is_retryable());
        assert_eq!(SendState::of::<()>(&Ok(())), SendState::Ok);
        assert_eq!(SendState::of_errno(Errno::IO), SendState::SendFailed);
        assert_eq!(RetryPolicy::none().attempts, 0);
        assert_eq!(RetryPolicy::default().attempts, 1000);
    }
}
