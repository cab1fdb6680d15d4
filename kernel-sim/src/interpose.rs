//! The send interposition point: where a library such as the HA client library (ha-lib) takes
//! over a failed send, as QNX's libha does by replacing libc's `MsgSend*` symbols.
//!
//! Each process has one point per system, shared by all its [`System`] handles on that system
//! (but not across systems, so tests that use several systems in one process stay
//! independent). A library installs a [`SendHook`] there once. Every send of the process
//! (`msg_send` and all its variants, `msg_send_pulse`, and the sends inside the client helpers
//! `open`, `read`, `write`, `lseek`, `devctl`, `close`, `dup`) goes through the point:
//!
//! - a send that succeeds costs nothing more than one relaxed load (the [`System::send_epoch`]
//!   it started in);
//! - a send that fails is handed to the hook, whatever the coid, with a [`FailedSend`] that can
//!   send the very same request again ([`FailedSend::resend`]) under the caller's original
//!   deadline; what the hook returns is what the caller gets.
//!
//! The hook is also told when a coid is released ([`SendHook::coid_released`]: `connect_detach`,
//! `close`, the implicit close of `dup2`), so state it keeps per coid number never passes to an
//! unrelated connection that reuses the number.
//!
//! Sends the hook makes through [`FailedSend::resend`] go straight to the kernel. Other sends it
//! makes (or a callback of its own makes) come back through the hook: a hook must guard against
//! re-entering itself (ha-lib does, with a per-thread "inside recovery" mark).

use crate::api::System;
use crate::{Coid, Errno, Result};
use std::any::Any;
use std::time::Instant;

/// The interposition point of one process on one system.
#[derive(Default)]
pub(crate) struct Interposer {
    pub(crate) hook: std::sync::OnceLock<std::sync::Arc<dyn SendHook>>,
    pub(crate) epoch: crate::sync::atomic::AtomicU64,
}

/// What was being sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendKind {
    /// A message (`MsgSend*`): blocks for a reply.
    Message,
    /// A pulse (`MsgSendPulse`): never blocks.
    Pulse,
}

/// A library that takes over failed sends; see the module doc.
pub trait SendHook: Send + Sync + 'static {
    /// A send failed. Return what the caller must get: `failed.error()` to pass the failure
    /// through, or the result of a successful [`FailedSend::resend`].
    ///
    /// # Errors
    ///
    /// Whatever the caller of the send is to see.
    fn send_failed(&self, sys: &System, failed: &mut FailedSend<'_>) -> Result<i32>;

    /// `coid` was detached or closed by this process (not necessarily by the hook's own thread;
    /// a hook that releases coids itself can tell its own releases apart).
    fn coid_released(&self, sys: &System, coid: Coid) {
        let _ = (sys, coid);
    }

    /// The hook as [`Any`], so its library can find its own instance again
    /// ([`System::send_hook`]).
    fn as_any(&self) -> &dyn Any;
}

/// A failed send, as the hook sees it.
pub struct FailedSend<'a> {
    pub(crate) coid: Coid,
    pub(crate) error: Errno,
    pub(crate) kind: SendKind,
    pub(crate) epoch: u64,
    pub(crate) deadline: Option<Instant>,
    pub(crate) resend: &'a mut dyn FnMut() -> Result<i32>,
}

impl FailedSend<'_> {
    /// The coid the send was made on.
    pub fn coid(&self) -> Coid {
        self.coid
    }

    /// The error the send failed with (the first failure: resends do not change it).
    pub fn error(&self) -> Errno {
        self.error
    }

    /// Message or pulse.
    pub fn kind(&self) -> SendKind {
        self.kind
    }

    /// The [`System::send_epoch`] when the send started: a hook that advanced the epoch when it
    /// last repaired this coid can tell a send that started before the repair (just send it
    /// again) from one that failed after it.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The caller's deadline (`msg_send_timeout`, or a `timer_timeout` armed before the call),
    /// the earliest of its SEND and REPLY deadlines; `None` without one. Resends keep to it.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sends the same request again, straight to the kernel, with the caller's reply buffers,
    /// under the caller's original deadline (the time left is re-armed, not restarted).
    ///
    /// # Errors
    ///
    /// As the original send; `ETIMEDOUT` at once if the deadline has passed.
    pub fn resend(&mut self) -> Result<i32> {
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(Errno::TIMEDOUT);
        }
        (self.resend)()
    }
}

impl System {
    /// Installs `hook` as this process's send interposition on this system (see
    /// [`crate::interpose`]). Once installed it stays for the life of the process's handles.
    ///
    /// # Errors
    ///
    /// `EBUSY`: a hook is installed already (find it with [`System::send_hook`]).
    pub fn install_send_hook(&self, hook: std::sync::Arc<dyn SendHook>) -> Result<()> {
        self.interposer().hook.set(hook).map_err(|_| Errno::BUSY)
    }

    /// The installed send hook, if any.
    pub fn send_hook(&self) -> Option<std::sync::Arc<dyn SendHook>> {
        self.interposer().hook.get().cloned()
    }

    /// The send epoch: a counter the hook advances ([`System::advance_send_epoch`]) when it
    /// repairs a connection; every send notes it when it starts ([`FailedSend::epoch`]).
    pub fn send_epoch(&self) -> u64 {
        self.interposer()
            .epoch
            .load(crate::sync::atomic::Ordering::Acquire)
    }

    /// Advances the send epoch; returns the new value.
    pub fn advance_send_epoch(&self) -> u64 {
        self.interposer()
            .epoch
            .fetch_add(1, crate::sync::atomic::Ordering::AcqRel)
            + 1
    }
}
