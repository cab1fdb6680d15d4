//! The one error type of the bench setup code.

use kernel_sim::{Errno, SystemError};
use std::fmt;
use std::io;

/// Why a bench peer could not be set up, run or stopped.
#[derive(Debug)]
pub enum BenchError {
    /// Spawning the peer process failed.
    Spawn(io::Error),
    /// The peer exited, timed out or said something unexpected instead of its ready line.
    NotReady {
        /// The peer's role.
        role: &'static str,
        /// What happened.
        detail: String,
    },
    /// The peer did not exit cleanly when asked to stop.
    BadExit {
        /// The peer's role.
        role: &'static str,
        /// Its exit status, or why there is none.
        detail: String,
    },
    /// A floor mapping could not be created or opened.
    Mapping(io::Error),
    /// A kernel-sim system could not be created or attached.
    System(SystemError),
    /// A kernel-sim call failed.
    Kernel {
        /// The call.
        call: &'static str,
        /// Its errno.
        errno: Errno,
    },
    /// The peer program was started with missing or malformed settings.
    Config(String),
    /// A round trip failed, or its reply was not the echo of its request.
    Exchange(String),
    /// A pipe or socket call failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        error: io::Error,
    },
    /// An iceoryx2 call failed.
    Iceoryx(String),
    /// A guaranteed-delivery call (ha-lib's `gmd`) failed.
    Gmd(ha_lib::gmd::GmdError),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Spawn(e) => write!(f, "cannot spawn the peer process: {e}"),
            BenchError::NotReady { role, detail } => write!(f, "{role} peer not ready: {detail}"),
            BenchError::BadExit { role, detail } => write!(f, "{role} peer did not stop: {detail}"),
            BenchError::Mapping(e) => write!(f, "floor mapping: {e}"),
            BenchError::System(e) => write!(f, "kernel-sim system: {e}"),
            BenchError::Kernel { call, errno } => write!(f, "{call} failed: {errno}"),
            BenchError::Config(s) => write!(f, "bad peer settings: {s}"),
            BenchError::Exchange(s) => write!(f, "broken exchange: {s}"),
            BenchError::Io { what, error } => write!(f, "{what}: {error}"),
            BenchError::Iceoryx(s) => write!(f, "iceoryx2: {s}"),
            BenchError::Gmd(e) => write!(f, "guaranteed delivery: {e}"),
        }
    }
}

impl std::error::Error for BenchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BenchError::Spawn(e) | BenchError::Mapping(e) => Some(e),
            BenchError::Io { error, .. } => Some(error),
            BenchError::System(e) => Some(e),
            BenchError::Kernel { errno, .. } => Some(errno),
            BenchError::Gmd(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SystemError> for BenchError {
    fn from(e: SystemError) -> Self {
        BenchError::System(e)
    }
}

impl From<ha_lib::gmd::GmdError> for BenchError {
    fn from(e: ha_lib::gmd::GmdError) -> Self {
        BenchError::Gmd(e)
    }
}

/// Tags a kernel-sim errno with the call that produced it.
pub(crate) fn kernel(call: &'static str) -> impl FnOnce(Errno) -> BenchError {
    move |errno| BenchError::Kernel { call, errno }
}

/// Tags an I/O error with what was being done.
pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> BenchError {
    move |error| BenchError::Io { what, error }
}
