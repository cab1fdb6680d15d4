//! Server classes, in the image of NonStop Pathsend: a named class served by several server
//! processes, reached through an explicit API of its own (a class send does not go through the
//! silent retransmission of the interposition).
//!
//! **Membership** lives in the path space: each member attaches the mountpoint
//! `/class/<name>` ([`class_path`]); several servers at one mountpoint is what QNX's path space
//! allows, and resolving the path lists them all ([`kernel_sim::System::path_resolve`]).
//!
//! **A context-free send** ([`ServerClass::send`]) goes to a live member, the members taken in
//! turn so the load spreads. When the member dies with the request outstanding, the kernel says
//! whether it had received the request ([`kernel_sim::System::last_send_outcome`]):
//!
//! - not received: the request is sent to another member, silently;
//! - received: it is sent again to another member only if the caller marked it repeatable
//!   ([`Send::Repeatable`]); otherwise the caller gets [`ClassError::OutcomeUnknown`]: the
//!   server failed while the request was outstanding, and whether it acted is unknown
//!   (Pathsend's error 904).
//!
//! **Dialogs** ([`ServerClass::dialog`]) bind a conversation to one member, on a connection of
//! its own. A member that dies holding a dialog's request gives [`ClassError::OutcomeUnknown`];
//! one that dies between its sends (or with the request still queued) makes the send fail with
//! [`ClassError::DialogAborted`] (Pathsend's 929). A dialog begun [`Replay::Replayable`] is
//! instead replayed whole on a new member, each reply compared with the one the caller already
//! had; a difference aborts it with [`ClassError::ReplayDiverged`] rather than hide it.
//!
//! **Limits**: too many concurrent sends to one class is transient, waited out briefly
//! ([`ClassError::Busy`] if it lasts); a class with no members, an unknown class and too many
//! open classes are configuration errors, returned at once.

use kernel_sim::sync::atomic::{AtomicU32, Ordering};
use kernel_sim::{Chid, Coid, Errno, Pid, SendOutcome, System, SIDE_CHANNEL};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the members of class `name` attach.
pub fn class_path(name: &str) -> String {
    format!("/class/{name}")
}

/// Classes one process may have open at once.
pub const MAX_CLASSES: u32 = 64;

/// Open classes of this process (for [`ClassError::TooManyClasses`]).
static OPEN_CLASSES: Mutex<u32> = Mutex::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a request may be executed more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    /// Executing it twice does no harm (a read, an idempotent update): if its member dies after
    /// receiving it, it is sent to another member.
    Repeatable,
    /// It must not be executed twice: if its member dies after receiving it, the caller gets
    /// [`ClassError::OutcomeUnknown`].
    NotRepeatable,
    /// It carries this transaction id, which the members deduplicate through a shared
    /// [`crate::tx::TxStore`]: reissuing it is safe, so it is sent again like a repeatable one,
    /// and its effect happens once.
    Transaction(u64),
}

/// What a class send can fail with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassError {
    /// The member serving the request died after it had received it; the request was not
    /// repeatable, so it was not sent again: it may or may not have been acted on (Pathsend's
    /// error 904).
    OutcomeUnknown {
        /// The member that died.
        member: i32,
    },
    /// The class has no live member (a configuration error: not retried).
    NoMembers,
    /// No class of that name (no member has attached it): a configuration error.
    UnknownClass,
    /// This process has [`MAX_CLASSES`] classes open: a configuration error.
    TooManyClasses,
    /// Too many sends to the class at once, for longer than the class's busy wait (transient,
    /// retried until then).
    Busy,
    /// The member answered with this errno (the server's own error, passed through).
    Server(Errno),
    /// The dialog's member died between sends (or with the request still queued), so the
    /// dialog's context is gone; the dialog is over (Pathsend's error 929).
    DialogAborted {
        /// The member that died.
        member: i32,
    },
    /// A replayable dialog was replayed on a new member, and the reply to exchange `exchange`
    /// (from 0) differed from the one the caller had already been given: the dialog was
    /// aborted rather than hide it.
    ReplayDiverged {
        /// The first exchange whose reply differed.
        exchange: usize,
    },
}

impl std::fmt::Display for ClassError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassError::OutcomeUnknown { member } => write!(
                f,
                "server class member {member} failed while the request was outstanding; outcome unknown"
            ),
            ClassError::NoMembers => write!(f, "the server class has no members"),
            ClassError::UnknownClass => write!(f, "no such server class"),
            ClassError::TooManyClasses => write!(f, "too many server classes open"),
            ClassError::Busy => write!(f, "too many concurrent sends to the server class"),
            ClassError::Server(e) => write!(f, "the server answered {e}"),
            ClassError::DialogAborted { member } => {
                write!(f, "dialog aborted: its server class member {member} died")
            }
            ClassError::ReplayDiverged { exchange } => write!(
                f,
                "dialog aborted: replayed on a new member, exchange {exchange} got another reply"
            ),
        }
    }
}

impl std::error::Error for ClassError {}

/// Counters of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounters {
    /// Requests answered.
    pub answered: u64,
    /// Requests sent again to another member after a member died without receiving them.
    pub rerouted: u64,
    /// Repeatable requests sent again after a member died holding them.
    pub repeated: u64,
    /// Requests that ended in [`ClassError::OutcomeUnknown`].
    pub outcome_unknown: u64,
    /// Dialogs replayed whole on a new member.
    pub replays: u64,
}

struct Member {
    pid: i32,
    chid: i32,
    coid: Option<Coid>,
}

/// An open server class (`SERVERCLASS_SEND_`'s target).
pub struct ServerClass {
    sys: System,
    name: String,
    members: Mutex<Vec<Member>>,
    next: AtomicU32,
    in_flight: AtomicU32,
    max_in_flight: u32,
    busy_wait: Duration,
    counters: Mutex<ClassCounters>,
}

impl std::fmt::Debug for ServerClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClass")
            .field("name", &self.name)
            .finish()
    }
}

/// Decrements the in-flight count on drop.
struct Flight<'a>(&'a AtomicU32);
impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            })
            .ok();
    }
}

impl ServerClass {
    /// Opens class `name`: at least one member must have attached it.
    ///
    /// # Errors
    ///
    /// [`ClassError::UnknownClass`] (also for a name with `/`, empty, or over 64 bytes),
    /// [`ClassError::TooManyClasses`].
    pub fn open(sys: &System, name: &str) -> Result<ServerClass, ClassError> {
        if name.is_empty() || name.len() > 64 || name.contains('/') {
            return Err(ClassError::UnknownClass);
        }
        {
            let mut n = lock(&OPEN_CLASSES);
            if *n >= MAX_CLASSES {
                return Err(ClassError::TooManyClasses);
            }
            *n += 1;
        }
        let c = ServerClass {
            sys: sys.clone(),
            name: name.to_owned(),
            members: Mutex::new(Vec::new()),
            next: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            max_in_flight: 64,
            busy_wait: Duration::from_millis(100),
            counters: Mutex::new(ClassCounters::default()),
        };
        if c.refresh() == 0 {
            return Err(ClassError::UnknownClass);
        }
        Ok(c)
    }

    /// Sets the transient limit: at most `max` sends in flight at once, a send over it waiting
    /// up to `wait` for room ([`ClassError::Busy`] after).
    pub fn set_concurrency(&mut self, max: u32, wait: Duration) {
        self.max_in_flight = max.max(1);
        self.busy_wait = wait;
    }

    /// The class's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What has happened so far.
    pub fn counters(&self) -> ClassCounters {
        *lock(&self.counters)
    }

    /// The live members' pids, as last seen.
    pub fn members(&self) -> Vec<i32> {
        lock(&self.members).iter().map(|m| m.pid).collect()
    }

    /// Looks the members up again (keeping the connections to those still there); how many.
    fn refresh(&self) -> usize {
        let found = self
            .sys
            .path_resolve(&class_path(&self.name))
            .unwrap_or_default();
        let mut m = lock(&self.members);
        let mut next: Vec<Member> = Vec::new();
        for t in found.iter().filter(|t| t.rest.is_empty()) {
            if next.iter().any(|x| x.pid == t.pid && x.chid == t.chid) {
                continue;
            }
            let coid = m
                .iter_mut()
                .find(|x| x.pid == t.pid && x.chid == t.chid)
                .and_then(|x| x.coid.take());
            next.push(Member {
                pid: t.pid,
                chid: t.chid,
                coid,
            });
        }
        for old in m.drain(..) {
            if let Some(c) = old.coid {
                let _ = self.sys.connect_detach(c);
            }
        }
        *m = next;
        m.len()
    }

    /// A connection to the next member in turn: (member pid, coid).
    fn pick(&self) -> Option<(i32, Coid)> {
        let mut m = lock(&self.members);
        let n = m.len();
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % n;
            let mem = &mut m[i];
            if mem.coid.is_none() {
                mem.coid = self
                    .sys
                    .connect_attach(0, Pid(mem.pid), Chid(mem.chid), SIDE_CHANNEL, 0)
                    .ok();
            }
            if let Some(c) = mem.coid {
                return Some((mem.pid, c));
            }
        }
        None
    }

    /// Forgets member `pid` (it died).
    fn drop_member(&self, pid: i32) {
        let mut m = lock(&self.members);
        m.retain_mut(|x| {
            if x.pid == pid {
                if let Some(c) = x.coid.take() {
                    let _ = self.sys.connect_detach(c);
                }
                false
            } else {
                true
            }
        });
    }

    /// A context-free send (`SERVERCLASS_SEND_`): `req` to a live member, its reply in `reply`;
    /// the reply's status. See the module doc for what happens when a member dies.
    ///
    /// # Errors
    ///
    /// [`ClassError::OutcomeUnknown`], [`ClassError::NoMembers`], [`ClassError::Busy`],
    /// [`ClassError::Server`].
    pub fn send(&self, req: &[u8], reply: &mut [u8], kind: Send) -> Result<i32, ClassError> {
        // The transient limit: wait briefly for room.
        let end = Instant::now() + self.busy_wait;
        loop {
            let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
            if n < self.max_in_flight {
                break;
            }
            self.in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(1))
                })
                .ok();
            if Instant::now() >= end {
                return Err(ClassError::Busy);
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let _flight = Flight(&self.in_flight);
        // Each member may die once under this request; a bound so a class whose members keep
        // dying cannot hold the caller for ever.
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > 64 {
                return Err(ClassError::NoMembers);
            }
            let Some((member, coid)) = self.pick().or_else(|| {
                self.refresh();
                self.pick()
            }) else {
                return Err(ClassError::NoMembers);
            };
            match self.sys.msg_send(coid, req, reply) {
                Ok(status) => {
                    lock(&self.counters).answered += 1;
                    return Ok(status);
                }
                Err(Errno::BADF) | Err(Errno::SRCH) => {
                    let received = self.sys.last_send_outcome() == SendOutcome::ReceivedNoReply;
                    self.drop_member(member);
                    self.refresh();
                    if received && matches!(kind, Send::NotRepeatable) {
                        lock(&self.counters).outcome_unknown += 1;
                        tracing::warn!(class = self.name, member, "member died holding a request");
                        return Err(ClassError::OutcomeUnknown { member });
                    }
                    let mut c = lock(&self.counters);
                    if received {
                        c.repeated += 1;
                    } else {
                        c.rerouted += 1;
                    }
                    tracing::debug!(
                        class = self.name,
                        member,
                        received,
                        "member died; sending elsewhere"
                    );
                }
                Err(e) => return Err(ClassError::Server(e)),
            }
        }
    }
}

/// Whether a dialog may be replayed on another member if its member dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Replay it whole on a new member (each earlier request sent again, in order, and each
    /// reply compared with the one already returned), then go on.
    Replayable,
    /// A member's death ends the dialog.
    Never,
}

/// One request and the reply the caller was given.
struct Exchange {
    req: Vec<u8>,
    status: i32,
    reply: Vec<u8>,
}

/// A context-sensitive conversation bound to one member of a class (Pathsend's dialogs:
/// `SERVERCLASS_DIALOG_BEGIN_`, `_SEND_`, `_END_`, `_ABORT_`). Its requests travel on a
/// connection of its own (`_NTO_COF_NOSHARE`), so the member can keep the dialog's context per
/// connection and drop it at the connection's DISCONNECT.
pub struct Dialog<'c> {
    class: &'c ServerClass,
    member: i32,
    coid: Option<Coid>,
    replay: Replay,
    log: Vec<Exchange>,
    aborted: Option<ClassError>,
}

impl ServerClass {
    /// Begins a dialog with a live member (`SERVERCLASS_DIALOG_BEGIN_`).
    ///
    /// # Errors
    ///
    /// [`ClassError::NoMembers`].
    pub fn dialog(&self, replay: Replay) -> Result<Dialog<'_>, ClassError> {
        let (member, coid) = self.dialog_connection()?;
        Ok(Dialog {
            class: self,
            member,
            coid: Some(coid),
            replay,
            log: Vec::new(),
            aborted: None,
        })
    }

    /// A connection of its own to the next live member: (member pid, coid).
    fn dialog_connection(&self) -> Result<(i32, Coid), ClassError> {
        for _ in 0..2 {
            let picks: Vec<(i32, i32)> = {
                let m = lock(&self.members);
                let n = m.len();
                (0..n)
                    .map(|_| {
                        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % n;
                        (m[i].pid, m[i].chid)
                    })
                    .collect()
            };
            for (pid, chid) in picks {
                if let Ok(c) = self.sys.connect_attach(
                    0,
                    Pid(pid),
                    Chid(chid),
                    SIDE_CHANNEL,
                    kernel_sim::cof::NOSHARE,
                ) {
                    return Ok((pid, c));
                }
                self.drop_member(pid);
            }
            self.refresh();
        }
        Err(ClassError::NoMembers)
    }
}

impl Dialog<'_> {
    /// The member the dialog is bound to.
    pub fn member(&self) -> i32 {
        self.member
    }

    /// A dialog send (`SERVERCLASS_DIALOG_SEND_`): `req` to the dialog's member.
    ///
    /// # Errors
    ///
    /// - [`ClassError::OutcomeUnknown`]: the member died holding this request (not replayable).
    /// - [`ClassError::DialogAborted`]: the member died before this request reached it (not
    ///   replayable), or the dialog was aborted earlier (the same error again).
    /// - [`ClassError::ReplayDiverged`]: a replay on a new member got another reply.
    /// - [`ClassError::NoMembers`]: no member left to replay on; [`ClassError::Server`].
    pub fn send(&mut self, req: &[u8], reply: &mut [u8]) -> Result<i32, ClassError> {
        if let Some(e) = self.aborted {
            return Err(e);
        }
        let sys = &self.class.sys;
        for _ in 0..64 {
            let Some(coid) = self.coid else {
                return Err(ClassError::NoMembers);
            };
            match sys.msg_send(coid, req, reply) {
                Ok(status) => {
                    let n = (status.max(0) as usize).min(reply.len());
                    // Only a replayable dialog needs its history.
                    if self.replay == Replay::Replayable {
                        self.log.push(Exchange {
                            req: req.to_vec(),
                            status,
                            reply: reply[..n].to_vec(),
                        });
                    }
                    lock(&self.class.counters).answered += 1;
                    return Ok(status);
                }
                Err(Errno::BADF) | Err(Errno::SRCH) => {
                    let received = sys.last_send_outcome() == SendOutcome::ReceivedNoReply;
                    let dead = self.member;
                    let _ = sys.connect_detach(coid);
                    self.coid = None;
                    self.class.drop_member(dead);
                    self.class.refresh();
                    if self.replay == Replay::Never {
                        let e = if received {
                            lock(&self.class.counters).outcome_unknown += 1;
                            ClassError::OutcomeUnknown { member: dead }
                        } else {
                            ClassError::DialogAborted { member: dead }
                        };
                        self.aborted = Some(ClassError::DialogAborted { member: dead });
                        return Err(e);
                    }
                    if let Err(e) = self.replay_all() {
                        self.aborted = Some(e);
                        return Err(e);
                    }
                }
                Err(e) => return Err(ClassError::Server(e)),
            }
        }
        Err(ClassError::NoMembers)
    }

    /// Replays the dialog's exchanges on a new member, comparing each reply.
    fn replay_all(&mut self) -> Result<(), ClassError> {
        let (member, coid) = self.class.dialog_connection()?;
        self.member = member;
        self.coid = Some(coid);
        lock(&self.class.counters).replays += 1;
        tracing::info!(
            class = self.class.name,
            member,
            exchanges = self.log.len(),
            "replaying a dialog"
        );
        let sys = &self.class.sys;
        let mut buf = Vec::new();
        for (i, x) in self.log.iter().enumerate() {
            buf.clear();
            buf.resize(x.reply.len().max(1), 0);
            match sys.msg_send(coid, &x.req, &mut buf) {
                Ok(status) => {
                    let n = (status.max(0) as usize).min(buf.len());
                    if status != x.status || buf[..n] != x.reply[..] {
                        return Err(ClassError::ReplayDiverged { exchange: i });
                    }
                }
                // The new member died too: the caller's loop replays again.
                Err(Errno::BADF) | Err(Errno::SRCH) => return Ok(()),
                Err(e) => return Err(ClassError::Server(e)),
            }
        }
        Ok(())
    }

    /// Ends the dialog (`SERVERCLASS_DIALOG_END_`): the connection goes, and with it the
    /// member's context.
    pub fn end(mut self) {
        self.close();
    }

    /// Aborts the dialog (`SERVERCLASS_DIALOG_ABORT_`); for the member, the same as an end:
    /// its context goes with the connection.
    pub fn abort(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(c) = self.coid.take() {
            let _ = self.class.sys.connect_detach(c);
        }
    }
}

impl Drop for Dialog<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for ServerClass {
    fn drop(&mut self) {
        for m in lock(&self.members).drain(..) {
            if let Some(c) = m.coid {
                let _ = self.sys.connect_detach(c);
            }
        }
        let mut n = lock(&OPEN_CLASSES);
        *n = n.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel_sim::SystemBuilder;

    #[test]
    fn a_process_may_have_64_classes_open_and_no_more() {
        let name = format!("qsimtest-class-limit-{}", std::process::id());
        let _ = kernel_sim::remove_system(&name);
        struct Rm(String);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = kernel_sim::remove_system(&self.0);
            }
        }
        let _rm = Rm(name.clone());
        let sys = SystemBuilder::new().name(&name).create().unwrap();
        // A member (opening a class only resolves its members; nobody needs to receive).
        let chid = sys.channel_create(0).unwrap();
        sys.resmgr_attach(chid, &class_path("many"), 0).unwrap();
        let mut open: Vec<ServerClass> = (0..MAX_CLASSES)
            .map(|i| ServerClass::open(&sys, "many").unwrap_or_else(|e| panic!("class {i}: {e}")))
            .collect();
        assert!(matches!(
            ServerClass::open(&sys, "many"),
            Err(ClassError::TooManyClasses)
        ));
        // A configuration error is not counted; closing one makes room.
        assert!(matches!(
            ServerClass::open(&sys, "nobody"),
            Err(ClassError::TooManyClasses)
        ));
        open.pop();
        assert!(matches!(
            ServerClass::open(&sys, "nobody"),
            Err(ClassError::UnknownClass)
        ));
        assert!(ServerClass::open(&sys, "many").is_ok());
    }
}
