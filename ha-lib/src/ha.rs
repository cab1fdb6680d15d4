//! The HA-aware connection table, the hook that kernel-sim's interposition point calls on a
//! failed send, and the calls that model QNX's `ha_attach`, `ha_detach` and
//! `ha_connection_ctrl`.

use crate::policy::{RetryPolicy, SendState};
use kernel_sim::interpose::{FailedSend, SendHook, SendKind};
use kernel_sim::sync::atomic::{AtomicU64, Ordering};
use kernel_sim::{Coid, Errno, Pid, System};
use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `HAREPLACERECOVERYFN`: [`Ha::attach`] replaces the recovery function of a coid that has one.
pub const REPLACE_RECOVERY_FN: u32 = 0x0001;

/// The default limit of recoveries within one send (a deviation from QNX, whose limits default
/// to unlimited, so that a recovery function that never repairs the connection cannot make a
/// send loop for ever).
pub const DEFAULT_RECOVERIES_PER_SEND: u32 = 3;

/// How long the reconnect helpers wait, by default, for a restarting server's path or name.
pub const DEFAULT_WAIT_BUDGET: Duration = Duration::from_secs(5);

/// A limit that may be absent (QNX's negative values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// No limit.
    Unlimited,
    /// At most this many.
    At(u32),
}

impl Limit {
    fn reached(self, used: u64) -> bool {
        match self {
            Limit::Unlimited => false,
            Limit::At(n) => used >= u64::from(n),
        }
    }
}

/// The commands of [`Ha::connection_ctrl`] (QNX's `ha_connection_ctrl`, typed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaCtrl {
    /// `HA_RECOVERY_ACOUNT`: limit on the recovery-function calls over the connection's life,
    /// successful or not (default unlimited; `At(0)` disables recovery).
    RecoveryACount(Limit),
    /// `HA_RECOVERY_ICOUNT`: limit on consecutive failed recovery-function calls (default
    /// unlimited). Once reached, recovery stays off until `ResetICount`.
    RecoveryICount(Limit),
    /// `HA_RECOVERY_SUSPEND`: the coid behaves as a plain one until `Enable`.
    Suspend,
    /// `HA_RECOVERY_ENABLE`: recovery on again; the other settings stay.
    Enable,
    /// `HA_RECOVERY_RESET_ICOUNT`: the consecutive-failure count back to 0.
    ResetICount,
    /// `HA_RECOVERY_RESET_ACOUNT`: the total count back to 0.
    ResetACount,
    /// Ours: recoveries within one send (default [`DEFAULT_RECOVERIES_PER_SEND`];
    /// `Unlimited` is QNX's behaviour).
    RecoveriesPerSend(Limit),
}

/// Per-coid counters (shared by a coid's `dup`s). A healthy send touches none of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sends that failed with `EBADF` or `ESRCH`.
    pub failures: u64,
    /// Recovery-function calls that repaired the coid.
    pub recoveries: u64,
    /// Recovery-function calls that failed (or returned another coid).
    pub failed_recoveries: u64,
    /// Requests sent again after a recovery.
    pub retransmissions: u64,
    /// Attempts made by the retry policy after transient failures.
    pub retries: u64,
}

#[derive(Default)]
struct CounterCells {
    failures: AtomicU64,
    recoveries: AtomicU64,
    failed_recoveries: AtomicU64,
    retransmissions: AtomicU64,
    retries: AtomicU64,
}

impl CounterCells {
    fn snapshot(&self) -> Counters {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            failures: r(&self.failures),
            recoveries: r(&self.recoveries),
            failed_recoveries: r(&self.failed_recoveries),
            retransmissions: r(&self.retransmissions),
            retries: r(&self.retries),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A recovery function with its handle bound in.
type RecoveryFn = Arc<dyn Fn(&Ha, Coid) -> Result<Coid, Errno> + Send + Sync>;

struct State {
    recovery: Option<RecoveryFn>,
    acount: Limit,
    acount_used: u64,
    icount: Limit,
    icount_used: u64,
    per_send: Limit,
    suspended: bool,
    recovering: bool,
    /// The send epoch just after this coid's last successful recovery.
    recovered_epoch: u64,
}

/// The recovery mechanism of one HA-aware coid and its `dup`s.
struct Shared {
    state: Mutex<State>,
    done: Condvar,
    counters: CounterCells,
}

pub(crate) struct Core {
    table: Mutex<HashMap<i32, Arc<Shared>>>,
    policies: Mutex<HashMap<i32, RetryPolicy>>,
    global: Mutex<RetryPolicy>,
    wait_budget: Mutex<Duration>,
    process_counters: CounterCells,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The coids this thread's reconnect helpers are re-establishing: their releases keep the
    /// HA state (any other release drops it, even inside a recovery function).
    static KEEP: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Depth of recovery functions (and of this library's own reconnect helpers) on this thread.
    static INSIDE: Cell<u32> = const { Cell::new(0) };
    /// The deadline of the send whose recovery runs on this thread.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Marks the thread as inside recovery (sends fail fast, releases keep HA state) for its life.
pub(crate) struct Inside {
    prev_deadline: Option<Instant>,
}

impl Inside {
    pub(crate) fn enter(deadline: Option<Instant>) -> Inside {
        INSIDE.with(|c| c.set(c.get() + 1));
        let prev_deadline = DEADLINE.with(|d| {
            let prev = d.get();
            // An inner helper keeps the outer deadline unless it brings an earlier one.
            d.set(match (prev, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            });
            prev
        });
        Inside { prev_deadline }
    }

    /// Whether this thread is inside a recovery (or a helper of this library).
    pub(crate) fn active() -> bool {
        INSIDE.with(|c| c.get() > 0)
    }

    /// The deadline of the send being recovered on this thread, if any.
    pub(crate) fn deadline() -> Option<Instant> {
        DEADLINE.with(|d| d.get())
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.with(|c| c.set(c.get().saturating_sub(1)));
        DEADLINE.with(|d| d.set(self.prev_deadline));
    }
}

/// Marks coids whose releases keep their HA state (a reconnect helper re-establishing them),
/// for the guard's life.
pub(crate) struct Keep(usize);

impl Keep {
    pub(crate) fn coids(coids: &[Coid]) -> Keep {
        KEEP.with(|k| k.borrow_mut().extend(coids.iter().map(|c| c.0)));
        Keep(coids.len())
    }
}

impl Drop for Keep {
    fn drop(&mut self) {
        KEEP.with(|k| {
            let mut k = k.borrow_mut();
            let n = k.len().saturating_sub(self.0);
            k.truncate(n);
        });
    }
}

/// Clears `recovering` and wakes the waiters if the recovery function panics. On the normal
/// path the outcome is recorded and `recovering` cleared in one critical section (see
/// `Ha::recover`), so a waiter never sees the flag down before the epoch is up.
struct RecoveringFlag<'a>(&'a Shared);

impl Drop for RecoveringFlag<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        if st.recovering {
            st.recovering = false;
            drop(st);
            self.0.done.notify_all();
        }
    }
}

/// The hook installed in kernel-sim's interposition point.
struct Hook {
    core: Arc<Core>,
}

/// ha-lib installed on one system for this process: the HA table, the retry policies and the
/// helpers. Cheap to clone; every clone (and every [`Ha::install`] on the same system in this
/// process) is the same library instance.
#[derive(Clone)]
pub struct Ha {
    sys: System,
    core: Arc<Core>,
}

impl std::fmt::Debug for Ha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ha")
            .field("system", &self.sys.name())
            .finish()
    }
}

impl Ha {
    /// Installs ha-lib in this process's interposition point on `sys` (once; later calls return
    /// the same instance). From then on every send of the process on this system goes through
    /// the retry policy, and sends on HA-aware coids through recovery.
    ///
    /// # Errors
    ///
    /// `EBUSY`: another library's hook is installed on this system.
    pub fn install(sys: &System) -> Result<Ha, Errno> {
        loop {
            if let Some(h) = sys.send_hook() {
                let hook = h.as_any().downcast_ref::<Hook>().ok_or(Errno::BUSY)?;
                return Ok(Ha {
                    sys: sys.clone(),
                    core: hook.core.clone(),
                });
            }
            let core = Arc::new(Core {
                table: Mutex::new(HashMap::new()),
                policies: Mutex::new(HashMap::new()),
                global: Mutex::new(RetryPolicy::default()),
                wait_budget: Mutex::new(DEFAULT_WAIT_BUDGET),
                process_counters: CounterCells::default(),
            });
            match sys.install_send_hook(Arc::new(Hook { core })) {
                Ok(()) => continue,
                Err(Errno::BUSY) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The system.
    pub fn sys(&self) -> &System {
        &self.sys
    }

    fn shared(&self, coid: Coid) -> Option<Arc<Shared>> {
        lock(&self.core.table).get(&coid.0).cloned()
    }

    /// `ha_attach(coid, rfn, rhdl, flags)`: makes `coid` HA-aware. When a send on it fails with
    /// `EBADF` or `ESRCH` (its server died), `recovery(ha, coid, &handle)` runs in the failing
    /// thread; if it returns exactly `coid` (re-established with [`Ha::reconnect_attach`],
    /// [`Ha::reopen`], ...), the request is sent again. `handle` is whatever state the client
    /// keeps for it (a path, an offset, a list of servers); share it with an `Arc` to update it
    /// from outside.
    ///
    /// # Errors
    ///
    /// - `EBADF`: `coid` is no connection of this process, or [`REPLACE_RECOVERY_FN`] was given
    ///   for a coid that is not HA-aware.
    /// - `EEXIST`: `coid` is HA-aware already and `REPLACE_RECOVERY_FN` was not given.
    pub fn attach<H, F>(&self, coid: Coid, recovery: F, handle: H, flags: u32) -> Result<(), Errno>
    where
        H: Send + Sync + 'static,
        F: Fn(&Ha, Coid, &H) -> Result<Coid, Errno> + Send + Sync + 'static,
    {
        if coid.0 < 0 || self.sys.connect_server_info(Pid(0), coid).is_err() {
            return Err(Errno::BADF);
        }
        let rfn: RecoveryFn = Arc::new(move |ha: &Ha, c: Coid| recovery(ha, c, &handle));
        let mut table = lock(&self.core.table);
        match (table.get(&coid.0), flags & REPLACE_RECOVERY_FN != 0) {
            (Some(sh), true) => {
                lock(&sh.state).recovery = Some(rfn);
                Ok(())
            }
            (Some(_), false) => Err(Errno::EXIST),
            (None, true) => Err(Errno::BADF),
            (None, false) => {
                table.insert(
                    coid.0,
                    Arc::new(Shared {
                        state: Mutex::new(State {
                            recovery: Some(rfn),
                            acount: Limit::Unlimited,
                            acount_used: 0,
                            icount: Limit::Unlimited,
                            icount_used: 0,
                            per_send: Limit::At(DEFAULT_RECOVERIES_PER_SEND),
                            suspended: false,
                            recovering: false,
                            recovered_epoch: 0,
                        }),
                        done: Condvar::new(),
                        counters: CounterCells::default(),
                    }),
                );
                Ok(())
            }
        }
    }

    /// `ha_detach(coid)`: `coid` is a plain coid again (its `dup`s keep the mechanism).
    ///
    /// # Errors
    ///
    /// `EBADF`: `coid` is not HA-aware.
    pub fn detach(&self, coid: Coid) -> Result<(), Errno> {
        lock(&self.core.table)
            .remove(&coid.0)
            .map(|_| ())
            .ok_or(Errno::BADF)
    }

    /// Whether `coid` is HA-aware.
    pub fn is_ha(&self, coid: Coid) -> bool {
        lock(&self.core.table).contains_key(&coid.0)
    }

    /// The counters of an HA-aware coid (shared with its `dup`s).
    pub fn counters(&self, coid: Coid) -> Option<Counters> {
        self.shared(coid).map(|s| s.counters.snapshot())
    }

    /// The retry-policy attempts made on coids that are not HA-aware.
    pub fn process_counters(&self) -> Counters {
        self.core.process_counters.snapshot()
    }

    /// `ha_connection_ctrl(coid, command, value)`.
    ///
    /// # Errors
    ///
    /// `EBADF`: `coid` is not HA-aware.
    pub fn connection_ctrl(&self, coid: Coid, cmd: HaCtrl) -> Result<(), Errno> {
        let sh = self.shared(coid).ok_or(Errno::BADF)?;
        let mut st = lock(&sh.state);
        match cmd {
            HaCtrl::RecoveryACount(l) => st.acount = l,
            HaCtrl::RecoveryICount(l) => st.icount = l,
            HaCtrl::Suspend => st.suspended = true,
            HaCtrl::Enable => st.suspended = false,
            HaCtrl::ResetICount => st.icount_used = 0,
            HaCtrl::ResetACount => st.acount_used = 0,
            HaCtrl::RecoveriesPerSend(l) => st.per_send = l,
        }
        Ok(())
    }

    /// The retry policy for transient failures on every coid without a policy of its own.
    pub fn set_retry_policy(&self, policy: RetryPolicy) {
        *lock(&self.core.global) = policy;
    }

    /// The retry policy of one coid (HA-aware or not); `None` goes back to the global one. It
    /// is forgotten when the coid is closed or detached.
    pub fn set_coid_retry_policy(&self, coid: Coid, policy: Option<RetryPolicy>) {
        let mut p = lock(&self.core.policies);
        match policy {
            Some(policy) => p.insert(coid.0, policy),
            None => p.remove(&coid.0),
        };
    }

    /// How long the reconnect helpers wait for a restarting server (default
    /// [`DEFAULT_WAIT_BUDGET`]); the deadline of the send being recovered, if earlier, wins.
    pub fn set_wait_budget(&self, budget: Duration) {
        *lock(&self.core.wait_budget) = budget;
    }

    /// The time the reconnect helpers may wait now: the budget, cut to the recovered send's
    /// deadline.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT`: that deadline has passed.
    pub(crate) fn wait_left(&self) -> Result<Duration, Errno> {
        let budget = *lock(&self.core.wait_budget);
        match Inside::deadline() {
            None => Ok(budget),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(left.min(budget)),
                _ => Err(Errno::TIMEDOUT),
            },
        }
    }

    /// The coids that share `coid`'s recovery mechanism (its `dup`s), `coid` excluded.
    pub(crate) fn siblings(&self, coid: Coid) -> Vec<Coid> {
        let table = lock(&self.core.table);
        let Some(me) = table.get(&coid.0) else {
            return Vec::new();
        };
        let mut v: Vec<Coid> = table
            .iter()
            .filter(|(&c, s)| c != coid.0 && Arc::ptr_eq(s, me))
            .map(|(&c, _)| Coid(c))
            .collect();
        v.sort_by_key(|c| c.0);
        v
    }

    /// Makes `new` share `coid`'s recovery mechanism (what `ha_dup` does).
    ///
    /// # Errors
    ///
    /// `EBADF`: `coid` is not HA-aware.
    pub(crate) fn share(&self, coid: Coid, new: Coid) -> Result<(), Errno> {
        let mut table = lock(&self.core.table);
        let sh = table.get(&coid.0).cloned().ok_or(Errno::BADF)?;
        table.insert(new.0, sh);
        Ok(())
    }

    fn policy_for(&self, coid: Coid) -> RetryPolicy {
        lock(&self.core.policies)
            .get(&coid.0)
            .copied()
            .unwrap_or_else(|| *lock(&self.core.global))
    }

    /// Runs (or waits for) the recovery of `coid`. `Ok` means "send it again".
    fn recover(
        &self,
        coid: Coid,
        trigger: Errno,
        sh: &Shared,
        started: u64,
        deadline: Option<Instant>,
        recoveries: &mut u64,
    ) -> Result<(), Give> {
        let mut st = lock(&sh.state);
        while st.recovering {
            st = match deadline {
                None => sh.done.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d
                        .checked_duration_since(Instant::now())
                        .filter(|l| !l.is_zero())
                        .ok_or(Give::TimedOut)?;
                    sh.done
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        // Repaired (by another thread) since this send started: just send it again.
        if st.recovered_epoch > started {
            tracing::debug!(coid = coid.0, "coid repaired meanwhile; sending again");
            return Ok(());
        }
        let Some(rfn) = st.recovery.clone() else {
            return Err(Give::Up);
        };
        if st.suspended
            || st.acount.reached(st.acount_used)
            || st.icount.reached(st.icount_used)
            || st.per_send.reached(*recoveries)
        {
            tracing::debug!(coid = coid.0, "recovery not allowed (suspended or limit)");
            return Err(Give::Up);
        }
        st.recovering = true;
        drop(st);
        *recoveries += 1;
        tracing::info!(
            coid = coid.0,
            error = ?trigger,
            "server gone: running the recovery function"
        );
        let flag = RecoveringFlag(sh);
        let res = {
            let _inside = Inside::enter(deadline);
            rfn(self, coid)
        };
        let mut st = lock(&sh.state);
        st.acount_used += 1;
        let out = if res == Ok(coid) {
            st.icount_used = 0;
            st.recovered_epoch = self.sys.advance_send_epoch();
            bump(&sh.counters.recoveries);
            tracing::info!(coid = coid.0, "recovered; sending the request again");
            Ok(())
        } else {
            st.icount_used += 1;
            bump(&sh.counters.failed_recoveries);
            tracing::warn!(coid = coid.0, result = ?res, "recovery failed");
            Err(Give::Up)
        };
        // The outcome and the end of the recovery, seen together by the waiters.
        st.recovering = false;
        drop(st);
        sh.done.notify_all();
        drop(flag);
        out
    }

    /// Whether this thread's last send failed before its request was queued.
    fn not_sent(&self) -> bool {
        self.sys.last_send_outcome() == kernel_sim::SendOutcome::NotSent
    }

    /// What the interposition does with a failed send (see the crate doc).
    fn on_failure(&self, f: &mut FailedSend<'_>) -> Result<i32, Errno> {
        if Inside::active() {
            // Inside a recovery: never wait, never recover, never retry.
            return Err(f.error());
        }
        let coid = f.coid();
        let shared = self.shared(coid);
        let counters = shared
            .as_ref()
            .map_or(&self.core.process_counters, |s| &s.counters);
        let mut err = f.error();
        let mut first_dead: Option<Errno> = None;
        let mut started = f.epoch();
        let mut recoveries = 0u64;
        loop {
            match SendState::of_errno(err) {
                SendState::Retry => {
                    let policy = self.policy_for(coid);
                    if f.kind() == SendKind::Pulse && !policy.retry_pulses {
                        return Err(err);
                    }
                    // Only a request that never left (the kernel's full queue, a cleanup in
                    // progress) is sent again; an EAGAIN the server itself answered stands.
                    if f.kind() == SendKind::Message && !self.not_sent() {
                        return Err(err);
                    }
                    let mut r = Err(err);
                    for i in 0..policy.attempts {
                        policy.pause(i);
                        bump(&counters.retries);
                        started = self.sys.send_epoch();
                        r = f.resend();
                        let again = matches!(r, Err(e) if SendState::of_errno(e).is_retryable())
                            && (f.kind() == SendKind::Pulse || self.not_sent());
                        if !again {
                            break;
                        }
                    }
                    match r {
                        Ok(v) => return Ok(v),
                        Err(e) if SendState::of_errno(e).is_retryable() => return Err(e),
                        Err(e) => err = e,
                    }
                    continue;
                }
                SendState::NoEndpoint if err != Errno::NOENT => {
                    let dead = *first_dead.get_or_insert(err);
                    let Some(sh) = &shared else {
                        return Err(dead);
                    };
                    bump(&sh.counters.failures);
                    match self.recover(coid, err, sh, started, f.deadline(), &mut recoveries) {
                        Ok(()) => {}
                        // The caller's deadline passed meanwhile: that is what it gets.
                        Err(Give::Up) if f.deadline().is_some_and(|d| d <= Instant::now()) => {
                            return Err(Errno::TIMEDOUT)
                        }
                        Err(Give::Up) => return Err(dead),
                        Err(Give::TimedOut) => return Err(Errno::TIMEDOUT),
                    }
                    bump(&sh.counters.retransmissions);
                    started = self.sys.send_epoch();
                    match f.resend() {
                        Ok(v) => return Ok(v),
                        Err(e) => err = e,
                    }
                }
                _ => return Err(err),
            }
        }
    }
}

/// Why recovery stopped.
enum Give {
    /// Not allowed, or the recovery function failed: the original error goes back.
    Up,
    /// The caller's deadline passed while waiting for another thread's recovery.
    TimedOut,
}

impl SendHook for Hook {
    fn send_failed(&self, sys: &System, failed: &mut FailedSend<'_>) -> kernel_sim::Result<i32> {
        let ha = Ha {
            sys: sys.clone(),
            core: self.core.clone(),
        };
        ha.on_failure(failed)
    }

    fn coid_released(&self, _sys: &System, coid: Coid) {
        // The reconnect helpers' own releases keep the HA state: the number is about to be
        // re-established.
        if KEEP.with(|k| k.borrow().contains(&coid.0)) {
            return;
        }
        lock(&self.core.table).remove(&coid.0);
        lock(&self.core.policies).remove(&coid.0);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
