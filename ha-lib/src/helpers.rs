//! The explicit covers, the HA-aware versions of the calls that make and release coids, and
//! the reconnect helpers a recovery function uses to put a new connection on the old number.

use crate::ha::{Ha, Inside, Keep};
use crate::policy::SendState;
use kernel_sim::{Chid, Coid, Errno, Pid, SIDE_CHANNEL};
use std::time::{Duration, Instant};

impl Ha {
    // ----- covers ---------------------------------------------------------------------------

    /// The `MsgSend` cover: [`kernel_sim::System::msg_send`], with recovery and retries (the
    /// same as calling it on the system: the interposition covers every send; this form is for
    /// code that wants to say so).
    ///
    /// # Errors
    ///
    /// As `msg_send`; after a failed recovery, the original `EBADF`/`ESRCH`.
    pub fn msg_send(&self, coid: Coid, smsg: &[u8], rmsg: &mut [u8]) -> Result<i32, Errno> {
        self.sys().msg_send(coid, smsg, rmsg)
    }

    /// The `MsgSendv` cover.
    ///
    /// # Errors
    ///
    /// As [`Ha::msg_send`].
    pub fn msg_sendv(
        &self,
        coid: Coid,
        siov: &[&[u8]],
        riov: &mut [&mut [u8]],
    ) -> Result<i32, Errno> {
        self.sys().msg_sendv(coid, siov, riov)
    }

    /// The `MsgSendsv` cover.
    ///
    /// # Errors
    ///
    /// As [`Ha::msg_send`].
    pub fn msg_sendsv(
        &self,
        coid: Coid,
        smsg: &[u8],
        riov: &mut [&mut [u8]],
    ) -> Result<i32, Errno> {
        self.sys().msg_sendsv(coid, smsg, riov)
    }

    /// The `MsgSendvs` cover.
    ///
    /// # Errors
    ///
    /// As [`Ha::msg_send`].
    pub fn msg_sendvs(&self, coid: Coid, siov: &[&[u8]], rmsg: &mut [u8]) -> Result<i32, Errno> {
        self.sys().msg_sendvs(coid, siov, rmsg)
    }

    /// `TimerTimeout` + the `MsgSend` cover: `timeout` bounds the whole call, recovery and
    /// retransmissions included.
    ///
    /// # Errors
    ///
    /// As [`Ha::msg_send`], and `ETIMEDOUT`.
    pub fn msg_send_timeout(
        &self,
        coid: Coid,
        smsg: &[u8],
        rmsg: &mut [u8],
        timeout: Duration,
    ) -> Result<i32, Errno> {
        self.sys().msg_send_timeout(coid, smsg, rmsg, timeout)
    }

    /// The `MsgSendPulse` cover: a pulse sent on a broken HA coid is recovered and delivered
    /// to the new server (pulses already queued at the dead one are lost, as in QNX).
    ///
    /// # Errors
    ///
    /// As `msg_send_pulse`; after a failed recovery, the original `EBADF`/`ESRCH`.
    pub fn msg_send_pulse(
        &self,
        coid: Coid,
        priority: i32,
        code: i8,
        value: i32,
    ) -> Result<(), Errno> {
        self.sys().msg_send_pulse(coid, priority, code, value)
    }

    // ----- making and releasing HA coids ----------------------------------------------------

    /// `ha_ConnectAttach(nd, pid, chid, index, flags, rfn, rhdl, haflags)`: `connect_attach`,
    /// then [`Ha::attach`]; if the attach fails, the coid is detached again.
    ///
    /// # Errors
    ///
    /// Those of `connect_attach` and of [`Ha::attach`].
    #[allow(clippy::too_many_arguments)]
    pub fn connect_attach<H, F>(
        &self,
        nd: u32,
        pid: Pid,
        chid: Chid,
        index: i32,
        flags: u32,
        recovery: F,
        handle: H,
        haflags: u32,
    ) -> Result<Coid, Errno>
    where
        H: Send + Sync + 'static,
        F: Fn(&Ha, Coid, &H) -> Result<Coid, Errno> + Send + Sync + 'static,
    {
        let coid = self.sys().connect_attach(nd, pid, chid, index, flags)?;
        if let Err(e) = self.attach(coid, recovery, handle, haflags) {
            let _ = self.sys().connect_detach(coid);
            return Err(e);
        }
        Ok(coid)
    }

    /// `ha_open(path, oflag, rfn, rhdl, haflags)`: `open`, then [`Ha::attach`]; if the attach
    /// fails, the file is closed again.
    ///
    /// # Errors
    ///
    /// Those of `open` and of [`Ha::attach`].
    pub fn open<H, F>(
        &self,
        path: &str,
        oflag: i32,
        recovery: F,
        handle: H,
        haflags: u32,
    ) -> Result<Coid, Errno>
    where
        H: Send + Sync + 'static,
        F: Fn(&Ha, Coid, &H) -> Result<Coid, Errno> + Send + Sync + 'static,
    {
        let fd = self.sys().open(path, oflag)?;
        if let Err(e) = self.attach(fd, recovery, handle, haflags) {
            let _ = self.sys().close(fd);
            return Err(e);
        }
        Ok(fd)
    }

    /// `ha_dup(fd)`: `dup`, and the new fd shares `fd`'s recovery mechanism (replacing the
    /// recovery function on one replaces it for both; it lives until the last of them is
    /// closed).
    ///
    /// # Errors
    ///
    /// `EBADF` if `fd` is not HA-aware; the errors of `dup`.
    pub fn dup(&self, fd: Coid) -> Result<Coid, Errno> {
        if !self.is_ha(fd) {
            return Err(Errno::BADF);
        }
        let new = self.sys().dup(fd)?;
        if let Err(e) = self.share(fd, new) {
            let _ = self.sys().close(new);
            return Err(e);
        }
        Ok(new)
    }

    /// `ha_close(fd)`: [`Ha::detach`], then `close`. A coid that is not HA-aware is left open.
    ///
    /// # Errors
    ///
    /// `EBADF` if `fd` is not HA-aware (nothing is closed); the errors of `close`.
    pub fn close(&self, fd: Coid) -> Result<(), Errno> {
        self.detach(fd)?;
        self.sys().close(fd)
    }

    /// `ha_ConnectDetach(coid)`: [`Ha::detach`], then `connect_detach`. A coid that is not
    /// HA-aware is left attached.
    ///
    /// # Errors
    ///
    /// `EBADF` if `coid` is not HA-aware; the errors of `connect_detach`.
    pub fn connect_detach(&self, coid: Coid) -> Result<(), Errno> {
        self.detach(coid)?;
        self.sys().connect_detach(coid)
    }

    // ----- reconnect helpers, for recovery functions ----------------------------------------

    /// Calls `f` until it gives something other than a transient error (`ENFILE`: the system
    /// is out of connections; `EAGAIN`: out of pulses or thread slots; `ENXIO`: the target is
    /// still being cleaned up), with the retry policy's pauses, within the wait budget.
    fn retrying<T>(&self, mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
        let end = Instant::now().checked_add(self.wait_left()?);
        let mut i = 0u32;
        loop {
            match f() {
                Err(e) if SendState::of_errno(e).is_retryable() || e == Errno::NFILE => {
                    if end.is_some_and(|end| Instant::now() >= end) {
                        return Err(e);
                    }
                    // The default policy's pauses, whatever the number of attempts.
                    crate::RetryPolicy::default().pause(i.min(600));
                    i = i.saturating_add(1);
                }
                other => return other,
            }
        }
    }

    /// `ha_ReConnectAttach(old, nd, pid, chid, index, flags)`, for recovery functions: detaches
    /// `old` (and its `dup`s), connects to (`pid`, `chid`) and puts the new connection exactly on
    /// `old`'s number. For a side channel, placeholder connections hold the lower free side
    /// slots until the kernel hands out `old`'s; for an fd-range coid, `dup2` moves it there
    /// (the server sees `_IO_DUP`). The `dup`s are re-pointed with `dup2`.
    ///
    /// # Errors
    ///
    /// - `EBADF`: the number could not be had back (another thread took the slot).
    /// - the errors of `connect_attach` (after the retry policy for `EAGAIN`/`ENXIO`) or `dup2`.
    pub fn reconnect_attach(
        &self,
        old: Coid,
        nd: u32,
        pid: Pid,
        chid: Chid,
        index: i32,
        flags: u32,
    ) -> Result<Coid, Errno> {
        let _inside = Inside::enter(None);
        let sys = self.sys();
        let siblings = self.siblings(old);
        let _keep = Keep::coids(&[&[old][..], &siblings].concat());
        let _ = sys.connect_detach(old);
        for s in &siblings {
            let _ = sys.connect_detach(*s);
        }
        let new = self.retrying(|| sys.connect_attach(nd, pid, chid, index, flags))?;
        if new != old {
            if old.0 & SIDE_CHANNEL != 0 {
                self.land_side(old, new, nd, pid, chid, flags)?;
            } else {
                let moved = sys.dup2(new, old);
                let _ = sys.close(new);
                moved?;
            }
        }
        for s in siblings {
            let _ = sys.dup2(old, s);
        }
        tracing::info!(coid = old.0, pid = pid.0, chid = chid.0, "reconnected");
        Ok(old)
    }

    /// Takes side-channel connections until one lands on `old`; the ones below it are released.
    fn land_side(
        &self,
        old: Coid,
        first: Coid,
        nd: u32,
        pid: Pid,
        chid: Chid,
        flags: u32,
    ) -> Result<(), Errno> {
        let sys = self.sys();
        let mut held = Vec::new();
        let mut cur = first;
        let res = loop {
            if cur == old {
                break Ok(());
            }
            if cur.0 > old.0 {
                let _ = sys.connect_detach(cur);
                break Err(Errno::BADF);
            }
            held.push(cur);
            match sys.connect_attach(nd, pid, chid, SIDE_CHANNEL, flags) {
                Ok(c) => cur = c,
                Err(e) => break Err(e),
            }
        };
        for h in held {
            let _ = sys.connect_detach(h);
        }
        res
    }

    /// `ha_reopen(old, path, oflag)`, for recovery functions: detaches `old` (no `_IO_CLOSE` to
    /// the dead server) and its `dup`s, opens `path` again (waiting, within the wait budget and
    /// the recovered send's deadline, for a restarting server to attach it), moves the new open
    /// onto `old` with `dup2` (the server sees `_IO_DUP`) and re-points the `dup`s. Not for
    /// `name_open` coids (side channels): use [`Ha::name_reopen`].
    ///
    /// # Errors
    ///
    /// - `EBADF`: `old` is a side channel.
    /// - `ETIMEDOUT`: no server attached the path in time.
    /// - the errors of `open` and `dup2`.
    pub fn reopen(&self, old: Coid, path: &str, oflag: i32) -> Result<Coid, Errno> {
        if old.0 < 0 || old.0 & SIDE_CHANNEL != 0 {
            return Err(Errno::BADF);
        }
        // One deadline for all the attempts (each attempt's own waits are cut to it).
        let _inside = Inside::enter(Instant::now().checked_add(self.wait_left()?));
        let sys = self.sys();
        let siblings = self.siblings(old);
        let _keep = Keep::coids(&[&[old][..], &siblings].concat());
        let _ = sys.connect_detach(old);
        for s in &siblings {
            let _ = sys.connect_detach(*s);
        }
        loop {
            let new = self.retrying(|| sys.open_wait(path, oflag, Some(self.wait_left()?)))?;
            if new == old {
                break;
            }
            let moved = sys.dup2(new, old);
            let _ = sys.close(new);
            match moved {
                Ok(_) => break,
                // The new server went away between the open and the dup: wait for the next.
                Err(e) if vanished(e) && self.wait_left().is_ok() => {
                    tracing::debug!(coid = old.0, path, error = ?e, "server gone again; waiting");
                }
                Err(e) => return Err(e),
            }
        }
        for s in siblings {
            let _ = sys.dup2(old, s);
        }
        tracing::info!(coid = old.0, path, "reopened");
        Ok(old)
    }

    /// For recovery functions of `name_open` coids (QNX's recipe: `name_open` to find the new
    /// server, then `ha_ReConnectAttach` onto the old number): waits (within the wait budget and
    /// the recovered send's deadline) for a server to attach `name`, opens it, and puts a
    /// connection to it on `old`'s side-channel number.
    ///
    /// # Errors
    ///
    /// - `ETIMEDOUT`: nobody attached the name in time.
    /// - the errors of `name_open` and [`Ha::reconnect_attach`].
    pub fn name_reopen(&self, old: Coid, name: &str) -> Result<Coid, Errno> {
        // One deadline for all the attempts (each attempt's own waits are cut to it).
        let _inside = Inside::enter(Instant::now().checked_add(self.wait_left()?));
        // The old number keeps its HA state through every release of it until it is back (a
        // temporary open that lands on it and fails releases it too).
        let _keep = Keep::coids(&[old]);
        let sys = self.sys();
        loop {
            let tmp = self.retrying(|| sys.name_wait_open(name, Some(self.wait_left()?)))?;
            if tmp == old {
                // An earlier attempt released the old number and this open landed on it: a
                // connection to the new server on the old coid is what was wanted.
                return Ok(old);
            }
            let info = sys.connect_server_info(Pid(0), tmp);
            let res = info.and_then(|i| {
                let index = if old.0 & SIDE_CHANNEL != 0 {
                    SIDE_CHANNEL
                } else {
                    old.0
                };
                self.reconnect_attach(old, 0, Pid(i.pid), Chid(i.chid), index, 0)
            });
            let _ = sys.connect_detach(tmp);
            match res {
                // The server it found went away again before the connection was made (a
                // server restarted and killed at once): wait for the next one.
                Err(e) if vanished(e) && self.wait_left().is_ok() => {
                    tracing::debug!(coid = old.0, name, error = ?e, "server gone again; waiting");
                }
                other => return other,
            }
        }
    }
}

/// Whether `e` says the server being reconnected to went away meanwhile.
fn vanished(e: Errno) -> bool {
    matches!(e, Errno::SRCH | Errno::BADF | Errno::NOENT | Errno::NXIO)
}
