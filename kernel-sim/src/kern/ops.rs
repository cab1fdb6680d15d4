//! The kernel calls, one function each, over a validated [`Arena`].

use super::layout::{obj_state, proc_state, Channel, ThreadSlot};
use super::proto::{self, st, Locked, SpinPolicy};
use crate::abi::{
    chf, cof, mi, pulse_code, ClientInfo, MsgInfo, Pulse, ServerInfo, PRIORITY_DEFAULT,
    SIDE_CHANNEL,
};
use crate::shm::{Arena, Buf};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::sync::{signal_flag, OsFutex, Wait};
use crate::Errno;
use std::time::{Duration, Instant};

const R: Ordering = Ordering::Acquire;
const W: Ordering = Ordering::Release;
const X: Ordering = Ordering::Relaxed;

// ---------------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------------

/// Kinds of coid-table and pool entries.
pub mod entry_kind {
    /// Unused.
    pub const FREE: u64 = 0;
    /// A client connection (fd-range or side-channel coid).
    pub const COID: u64 = 1;
    /// A channel.
    pub const CHID: u64 = 2;
    /// A server connection.
    pub const SCOID: u64 = 3;
    /// Pool slot 0, kept for the process manager as in QNX.
    pub const RESERVED: u64 = 4;
}
const ENTRY_CLOEXEC: u64 = 0x10;

/// A decoded coid-table or pool entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// One of [`entry_kind`].
    pub kind: u64,
    /// `_NTO_COF_CLOEXEC` for coids.
    pub cloexec: bool,
    /// Generation of the object named.
    pub gen: u32,
    /// Index of the object named.
    pub idx: u32,
}

impl Entry {
    fn encode(self) -> u64 {
        (self.idx as u64) << 32
            | ((self.gen as u64) & 0xFF_FFFF) << 8
            | if self.cloexec { ENTRY_CLOEXEC } else { 0 }
            | (self.kind & 0xF)
    }
    pub(crate) fn decode(v: u64) -> Entry {
        Entry {
            kind: v & 0xF,
            cloexec: v & ENTRY_CLOEXEC != 0,
            gen: ((v >> 8) & 0xFF_FFFF) as u32,
            idx: (v >> 32) as u32,
        }
    }
}

/// State word of channels, connections, pulses, names and processes: generation << 8 | state.
pub(crate) fn obj_word(gen: u32, state: u32) -> u32 {
    (gen << 8) | (state & 0xFF)
}
pub(crate) fn obj_gen(w: u32) -> u32 {
    (w >> 8) & 0xFF_FFFF
}
pub(crate) fn obj_st(w: u32) -> u32 {
    w & 0xFF
}

/// A send-queue node id: thread slot + 1, or a pulse with the top bit set; 0 is "none".
fn node_thread(slot: u32) -> u32 {
    slot + 1
}
fn node_pulse(p: u32) -> u32 {
    0x8000_0000 | p
}
/// Receiver hand-off markers (thread nodes are <= 0x7FFF).
const HANDOFF_PULSE: u32 = 0x4000_0000;
const HANDOFF_CHAN_GONE: u32 = 0x4000_0001;

/// Queue order: boosted kernel pulses first, then higher priority first, FIFO within a key.
fn queue_key(priority: u32, boost: bool) -> u32 {
    (priority & 0xFF) | if boost { 0x100 } else { 0 }
}

/// Packs an rcvid: thread slot + 1 in bits 16..30, the slot's 16-bit generation below.
pub fn rcvid_pack(slot: u32, gen: u16) -> i32 {
    (((slot + 1) << 16) | gen as u32) as i32
}

/// Unpacks an rcvid into (thread slot, generation); `None` if it cannot be one.
pub fn rcvid_unpack(rcvid: i32) -> Option<(u32, u16)> {
    if rcvid <= 0 {
        return None;
    }
    let hi = (rcvid as u32) >> 16;
    if hi == 0 {
        return None;
    }
    Some((hi - 1, rcvid as u16))
}

// ---------------------------------------------------------------------------------------------
// The kernel context
// ---------------------------------------------------------------------------------------------

/// Time constants of a process's view of a system.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// How often a lock waiter checks whether the holder died.
    pub lock_poll: Duration,
    /// How often the watcher looks for newly registered processes to watch (deaths of the ones
    /// it watches wake it at once, through their pidfds).
    pub watch_scan: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            lock_poll: Duration::from_millis(5),
            watch_scan: Duration::from_millis(20),
        }
    }
}

/// A process's view of the kernel: the arena, the caller's process slot and its lock tag.
#[derive(Clone, Copy, Debug)]
pub struct Kernel<'a> {
    /// The arena.
    pub a: &'a Arena,
    /// The caller's process slot.
    pub me: u32,
    /// The process-slot generation of `me`.
    pub me_gen: u32,
    /// Time constants.
    pub tuning: Tuning,
    /// The tag the caller writes into lock words: always the live calling process's own (see
    /// [`lock_tag`]), also while it cleans up after another process (`me` then names the dead
    /// one): a tag naming the dead would let waiters break a lock a live cleaner holds.
    pub lock_tag: u32,
}

/// The owner tag a process writes into lock words: slot index + 1 in the low 12 bits, 19 bits of
/// the slot's generation above. Never 0, bit 31 clear.
pub fn lock_tag(proc_idx: u32, proc_gen: u32) -> u32 {
    ((proc_idx + 1) & 0xFFF) | ((proc_gen & 0x7FFFF) << 12)
}

/// Whether the process that wrote `tag` into a lock word is gone (its slot was freed or reused,
/// or its OS process died).
pub fn tag_owner_dead(a: &Arena, tag: u32) -> bool {
    let idx = tag & 0xFFF;
    if idx == 0 {
        return true;
    }
    let Some(p) = a.proc(idx - 1) else {
        return true;
    };
    let w = p.state.load(R);
    if obj_st(w) == proc_state::FREE || (obj_gen(w) & 0x7FFFF) != tag >> 12 {
        return true;
    }
    !crate::sys::process_alive(p.pid.load(X) as i32, p.start_time.load(X))
}

/// A held structural lock; released on drop.
pub struct StructGuard<'a> {
    word: &'a AtomicU32,
}

impl Drop for StructGuard<'_> {
    fn drop(&mut self) {
        proto::unlock(self.word, &OsFutex);
    }
}

impl<'a> Kernel<'a> {
    fn take_lock(&self, word: &'a AtomicU32, what: &str) -> (StructGuard<'a>, bool) {
        let me = self.tag();
        // A lock word naming this very process that stays held for 200 polls (a second by
        // default) was not written by a live holder of ours (they hold locks for microseconds and
        // never block holding one): it is left over from a corrupted or hostile arena, and is
        // broken rather than waited on for ever.
        let own_polls = std::cell::Cell::new(0u32);
        let locked = proto::lock(word, &OsFutex, me, self.tuning.lock_poll, |t| {
            if t == me {
                own_polls.set(own_polls.get() + 1);
                return own_polls.get() > 200;
            }
            tag_owner_dead(self.a, t)
        });
        let broken = matches!(locked, Locked::FromDead(_));
        if let Locked::FromDead(h) = locked {
            note_broken(what, h);
        }
        (StructGuard { word }, broken)
    }
}

/// Where a process-death cleanup would repair a structure a dead lock holder left half-done.
/// Every structural update is ordered so that a half-done one is either invisible or complete
/// enough to finish by the cleanup of its dead author; the cleanup itself comes with the
/// death-handling stage, so for now a broken lock is logged and taken over.
fn note_broken(what: &str, holder: u32) {
    tracing::warn!(what, holder, "lock held by a dead process was broken");
}

/// Set in a queued client's protocol word when it has a deadline: the receiver that takes it
/// wakes it, so it can switch from its SEND to its REPLY deadline. Others are taken quietly (no
/// wake-up they do not need).
const WAKE_ON_TAKE: u32 = 0x20;

/// `ThreadSlot::mi_flags` bit: this blocked thread holds a link of its connection (its coid was
/// detached, or its process died, while it stayed blocked on an UNBLOCK channel).
const MI_LINK_HELD: u32 = 0x8000_0000;

/// `ThreadSlot::alloc` of a dead client's slot that lingers until its server replies.
pub(crate) const ALLOC_ORPHAN: u32 = u32::MAX;

/// Set in a queued client's protocol word when its REPLY timeout was immediate: a receiver that
/// reaches it drops it with `ETIMEDOUT` instead of receiving it (QNX never delivers it).
const IMMEDIATE_REPLY_TIMEOUT: u32 = 0x40;

/// `ThreadSlot::cpu` of a thread asleep in the kernel.
const CPU_SLEEPING: u32 = u32::MAX;
/// `ThreadSlot::cpu` of a thread that was asleep and has just been woken (set by the waker).
const CPU_WAKING: u32 = u32::MAX - 1;
/// How many spin budgets a waiter grants a peer that is waking up.
const WAKING_BUDGET_FACTOR: u32 = 4;

/// Wakes the thread of slot `t` sleeping on its protocol word, first marking it "waking" so
/// that a peer deciding whether to spin knows it is about to run.
fn wake_slot(t: &ThreadSlot) {
    let _ = t
        .cpu
        .compare_exchange(CPU_SLEEPING, CPU_WAKING, Ordering::Relaxed, X);
    OsFutex.wake(&t.state, u32::MAX);
}

/// Marks a waiting receiver RECV_HANDED (call under the channel lock, after filling its
/// hand-off); returns it if it must be woken (with [`wake_slot`], after the lock is released).
fn hand_over(rt: &ThreadSlot) -> Option<&ThreadSlot> {
    let rw = rt.state.load(R);
    let wake =
        proto::transition_deferred(&rt.state, proto::gen_of(rw), st::RECV_WAIT, st::RECV_HANDED);
    wake.unwrap_or(false).then_some(rt)
}

/// Moves a client slot from REPLY_BUSY to REPLIED and wakes it if it sleeps.
fn complete(ts: &ThreadSlot, gen: u16) {
    if proto::transition_deferred(&ts.state, gen, st::REPLY_BUSY, st::REPLIED) == Ok(true) {
        wake_slot(ts);
    }
}

/// Adaptive spinning: spin while the peer runs on another CPU, up to a budget; publishes this
/// thread's "running on CPU n / sleeping" for the peers' own decisions.
pub struct Adaptive<'a> {
    me: &'a ThreadSlot,
    peer: Option<&'a ThreadSlot>,
    my_cpu: u32,
    start: Option<Instant>,
    budget: Duration,
    rounds: u32,
}

impl<'a> Adaptive<'a> {
    /// A policy for thread slot `me` waiting on `peer`; `budget` zero means never spin.
    pub fn new(me: &'a ThreadSlot, peer: Option<&'a ThreadSlot>, budget: Duration) -> Self {
        let my_cpu = crate::sys::current_cpu();
        me.cpu.store(my_cpu, X);
        Adaptive {
            me,
            peer,
            my_cpu,
            start: None,
            budget,
            rounds: 0,
        }
    }
}

impl SpinPolicy for Adaptive<'_> {
    fn keep_spinning(&mut self) -> bool {
        let Some(peer) = self.peer else { return false };
        if self.budget.is_zero() {
            return false;
        }
        self.rounds = self.rounds.wrapping_add(1);
        if self.rounds % 32 == 1 {
            let start = *self.start.get_or_insert_with(Instant::now);
            let elapsed = start.elapsed();
            let pc = peer.cpu.load(X);
            // A peer we (or someone) just woke is about to run: waking a sleeping thread on
            // another core costs tens of microseconds, so it gets a longer allowance than a
            // running one. Without it both sides fall into a sleep cascade: each finds the other
            // "asleep" (it has not run yet to say otherwise) and goes to sleep at once.
            let allowance = if pc == CPU_WAKING {
                self.budget * WAKING_BUDGET_FACTOR
            } else {
                self.budget
            };
            if elapsed >= allowance {
                self.budget = Duration::ZERO;
                return false;
            }
            if pc == CPU_SLEEPING || pc == self.my_cpu {
                return false;
            }
        }
        true
    }
    fn before_sleep(&mut self) {
        self.me.cpu.store(CPU_SLEEPING, X);
    }
    fn after_wake(&mut self) {
        self.my_cpu = crate::sys::current_cpu();
        self.me.cpu.store(self.my_cpu, X);
        // After a sleep the peer has moved on; spinning again would only burn the budget twice.
        self.budget = Duration::ZERO;
    }
}

fn a_scoid(a: &Arena, ts: &ThreadSlot) -> i32 {
    a.conn(ts.conn.load(X))
        .map_or(-1, |c| SIDE_CHANNEL | c.scoid.load(X) as i32)
}

/// How a send ended, as the client's thread slot records it (`ThreadSlot::result_kind`): what a
/// higher layer asks after a failure to tell "never delivered, safe to resend" from "outcome
/// unknown".
pub mod result_kind {
    /// The server replied (`result` is the status).
    pub const STATUS: u32 = 0;
    /// Failed after a server received the request (`result` is the errno): outcome unknown.
    pub const ERR_RECEIVED: u32 = 1;
    /// Failed while queued: no server saw the request.
    pub const ERR_NOT_RECEIVED: u32 = 2;
    /// Failed before it was queued (bad coid, too large, channel gone).
    pub const NOT_SENT: u32 = 3;
}

/// Deadlines of a blocking call, as QNX's `TimerTimeout` arms them per blocked state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// While SEND-blocked (queued): `ETIMEDOUT`, and the server never sees the request.
    pub send: Option<Instant>,
    /// While REPLY-blocked: `ETIMEDOUT` (or an UNBLOCK pulse on `_NTO_CHF_UNBLOCK` channels).
    pub reply: Option<Instant>,
    /// While RECEIVE-blocked: `ETIMEDOUT`.
    pub receive: Option<Instant>,
}

/// How a blocked call waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// Spin up to the budget while the peer runs on another CPU, then sleep on a futex.
    Adaptive(Duration),
    /// Sleep on a futex at once.
    Blocking,
}

/// What a receive produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A message: the rcvid to reply to and what the kernel tells about it.
    Message {
        /// The receive id.
        rcvid: i32,
        /// The `_msg_info`.
        info: MsgInfo,
    },
    /// A pulse (rcvid 0).
    Pulse(Pulse),
}

/// A connection's resolved target, for sends.
#[derive(Clone, Copy, Debug)]
struct Target {
    conn: u32,
    conn_gen: u32,
    chan: u32,
    chan_gen: u32,
}

impl<'a> Kernel<'a> {
    // ----- locks --------------------------------------------------------------------------

    fn tag(&self) -> u32 {
        self.lock_tag
    }

    /// The same caller, acting on process slot `slot` (generation `gen`): for cleanups.
    fn acting_on(&self, slot: u32, gen: u32) -> Kernel<'a> {
        Kernel {
            me: slot,
            me_gen: gen,
            ..*self
        }
    }

    /// Takes the structural lock.
    pub fn lock_struct(&self) -> StructGuard<'a> {
        self.take_lock(&self.a.header().lock, "structural").0
    }

    fn lock_chan(&self, c: &'a Channel) -> StructGuard<'a> {
        let (g, broken) = self.take_lock(&c.lock, "channel");
        if broken {
            self.repair_channel_locked(c);
        }
        g
    }

    /// Repairs a channel whose lock was broken from a dead holder (lock held). Its queue and
    /// receiver stack are linked with single stores, so they are whole; what a holder killed
    /// mid-update can leave is a receiver it popped from the stack but never handed anything
    /// (still RECEIVE-blocked, in no stack: it goes back on the stack) and a stale count.
    fn repair_channel_locked(&self, c: &Channel) {
        let a = self.a;
        let Some(idx) =
            (0..a.limits().max_channels).find(|&i| a.chan(i).is_some_and(|x| std::ptr::eq(x, c)))
        else {
            return;
        };
        let mut in_stack = vec![false; a.limits().thread_slots() as usize];
        let mut r = c.recv_top.load(X);
        let mut guard = 0;
        while r != 0 && guard <= a.limits().thread_slots() {
            guard += 1;
            if let Some(f) = in_stack.get_mut(r as usize - 1) {
                *f = true;
            }
            r = a.thread(r - 1).map_or(0, |t| t.recv_next.load(X));
        }
        for s in 0..a.limits().thread_slots() {
            let Some(t) = a.thread(s) else { continue };
            let lost = t.alloc.load(R) != 0
                && proto::state_of(t.state.load(R)) == st::RECV_WAIT
                && t.recv_chan.load(X) == idx
                && !in_stack.get(s as usize).copied().unwrap_or(true);
            if lost {
                tracing::debug!(slot = s, "re-queueing a receiver a dead sender had popped");
                t.recv_next.store(c.recv_top.load(X), X);
                c.recv_top.store(s + 1, X);
            }
        }
        let mut n = 0;
        let mut node = c.q_head.load(X);
        while node != 0 && n <= a.limits().thread_slots() + a.limits().max_pulses {
            n += 1;
            node = self.node_key_next(node).map_or(0, |(_, next)| next.load(X));
        }
        c.q_len.store(n, X);
    }

    // ----- processes ----------------------------------------------------------------------

    /// Registers the calling OS process; returns its slot and generation, or `None` if the
    /// process table is full of live processes. Releases first any record of the same pid under
    /// another incarnation token (an earlier image, as after `exec`).
    ///
    /// The slot is claimed lock-free first (FREE → CLAIMING), so the structural lock is then
    /// taken under a tag that names a real, live slot. When no slot is free, the slot of a process
    /// that is gone is taken over (its state word CAS'd, so no other cleaner touches it) and its
    /// old contents are released under the new owner's lock.
    pub fn register(
        a: &'a Arena,
        pid: i32,
        start_time: u64,
        incarnation: u64,
        tuning: Tuning,
    ) -> Option<(u32, u32)> {
        let n = a.limits().max_processes;
        let claim = |i: u32, want: &dyn Fn(u32) -> bool| {
            let p = a.proc(i)?;
            let w = p.state.load(R);
            if !want(w) {
                return None;
            }
            let gen = (obj_gen(w) + 1) & 0xFF_FFFF;
            p.state
                .compare_exchange(w, obj_word(gen, proc_state::CLAIMING), Ordering::AcqRel, X)
                .ok()?;
            Some((i, gen, p, obj_gen(w), obj_st(w) != proc_state::FREE))
        };
        let free = |w: u32| obj_st(w) == proc_state::FREE;
        let claimed = (0..n).find_map(|i| claim(i, &free)).or_else(|| {
            (0..n).find_map(|i| {
                let p = a.proc(i)?;
                let dead = move |w: u32| {
                    matches!(obj_st(w), proc_state::ALIVE | proc_state::CLEANING)
                        && !crate::sys::process_alive(p.pid.load(X) as i32, p.start_time.load(X))
                };
                claim(i, &dead)
            })
        });
        let (i, gen, p, old_gen, stolen) = claimed?;
        p.pid.store(pid as u32, X);
        p.start_time.store(start_time, X);
        p.incarnation.store(incarnation, W);
        let k = Kernel {
            a,
            me: i,
            me_gen: gen,
            tuning,
            lock_tag: lock_tag(i, gen),
        };
        let _g = k.lock_struct();
        if stolen {
            tracing::debug!(slot = i, "taking over the slot of a process that is gone");
            k.acting_on(i, old_gen).release_resources_locked();
        }
        k.release_old_images_locked(pid, incarnation);
        let (ruid, euid, rgid, egid) = crate::sys::ids();
        for (slot, v) in p.ids.iter().zip([ruid, euid, rgid, egid]) {
            slot.store(v, X);
        }
        p.fd_count.store(0, X);
        p.side_count.store(0, X);
        p.death_chid.store(0, X);
        let c = a.limits().max_coids;
        for e in (0..c)
            .filter_map(|n| a.fd_entry(i, n))
            .chain((0..c).filter_map(|n| a.pool_entry(i, n)))
        {
            e.store(0, X);
        }
        // Pool slot 0 belongs to the process manager, as in QNX.
        if let Some(e) = a.pool_entry(i, 0) {
            e.store(
                Entry {
                    kind: entry_kind::RESERVED,
                    cloexec: false,
                    gen: 0,
                    idx: 0,
                }
                .encode(),
                X,
            );
        }
        p.state.store(obj_word(gen, proc_state::ALIVE), W);
        Some((i, gen))
    }

    /// Releases records of our own pid under another incarnation token: an earlier image of
    /// this process (as after `exec`). Structural lock held.
    fn release_old_images_locked(&self, pid: i32, incarnation: u64) {
        for i in 0..self.a.limits().max_processes {
            let Some(p) = self.a.proc(i) else { continue };
            let w = p.state.load(R);
            if i == self.me
                || !matches!(obj_st(w), proc_state::ALIVE | proc_state::CLEANING)
                || p.pid.load(X) as i32 != pid
                || p.incarnation.load(X) == incarnation
            {
                continue;
            }
            tracing::debug!(
                slot = i,
                pid,
                "releasing the record of an earlier image of this pid"
            );
            self.acting_on(i, obj_gen(w)).release_locked();
            self.wake_pending_locked();
        }
    }

    /// [`Kernel::reap_if_dead`] with the structural lock already held.
    pub(super) fn reap_locked_if_dead(&self, slot: u32) -> bool {
        let Some(p) = self.a.proc(slot) else {
            return false;
        };
        let w = p.state.load(R);
        let st = obj_st(w);
        if slot == self.me
            || !matches!(
                st,
                proc_state::ALIVE | proc_state::CLEANING | proc_state::CLAIMING
            )
        {
            return false;
        }
        let pid = p.pid.load(X) as i32;
        // A CLAIMING slot without a pid yet: its claimant is between two stores; leave it.
        if (st == proc_state::CLAIMING && pid == 0)
            || crate::sys::process_alive(pid, p.start_time.load(X))
        {
            return false;
        }
        tracing::debug!(
            slot,
            pid = p.pid.load(X),
            "cleaning up after a dead process"
        );
        self.acting_on(slot, obj_gen(w)).release_locked();
        self.wake_pending_locked();
        true
    }

    /// Wakes every thread whose protocol word says it has something to consume (a reply, or a
    /// message handed to it). A thread moves its peer's word under the channel lock and wakes
    /// the peer after releasing it (the move clears the waiters bit), so one killed in between
    /// leaves its peer asleep on a word that says "go": found by `qsim-tests`' random kills,
    /// a server asleep in RECV_HANDED beside its dead client. Spurious wakes are harmless (a
    /// woken thread reads its word again), so after a death every such thread is woken.
    fn wake_pending_locked(&self) {
        let a = self.a;
        for s in 0..a.limits().thread_slots() {
            let Some(ts) = a.thread(s) else { continue };
            if matches!(
                proto::state_of(ts.state.load(R)),
                st::RECV_HANDED | st::REPLIED
            ) {
                wake_slot(ts);
            }
        }
    }

    /// Tears down process slot `slot` if its OS process is gone (what every watcher and every
    /// caller that meets a dead peer does). Idempotent: a slot another cleaner already released,
    /// or one a cleaner died in the middle of (state CLEANING), is handled once. Returns whether
    /// this call released it.
    pub fn reap_if_dead(&self, slot: u32) -> bool {
        let alive = self
            .a
            .proc(slot)
            .is_none_or(|p| crate::sys::process_alive(p.pid.load(X) as i32, p.start_time.load(X)));
        if slot == self.me || alive {
            return false;
        }
        let _g = self.lock_struct();
        self.reap_locked_if_dead(slot)
    }

    /// (slot, generation, pid, start time) of every other registered process.
    pub fn peers(&self) -> Vec<(u32, u32, i32, u64)> {
        (0..self.a.limits().max_processes)
            .filter(|&i| i != self.me)
            .filter_map(|i| {
                let p = self.a.proc(i)?;
                let w = p.state.load(R);
                let pid = p.pid.load(X) as i32;
                // A CLAIMING slot with a pid: its claimant may have died registering.
                (matches!(obj_st(w), proc_state::ALIVE | proc_state::CLEANING)
                    || (obj_st(w) == proc_state::CLAIMING && pid != 0))
                    .then(|| (i, obj_gen(w), pid, p.start_time.load(X)))
            })
            .collect()
    }

    /// (slot, pid, state) of every process slot in use.
    pub fn process_table(&self) -> Vec<(u32, i32, u32)> {
        (0..self.a.limits().max_processes)
            .filter_map(|i| {
                let p = self.a.proc(i)?;
                let st = obj_st(p.state.load(R));
                (st != proc_state::FREE).then(|| (i, p.pid.load(X) as i32, st))
            })
            .collect()
    }

    /// Whether this process's registration is still the one we made.
    pub fn still_registered(&self) -> bool {
        self.a
            .proc(self.me)
            .is_some_and(|p| p.state.load(R) == obj_word(self.me_gen, proc_state::ALIVE))
    }

    /// Releases everything the process holds: channels (their clients get `ESRCH`), names,
    /// connections (servers get DISCONNECT pulses), thread slots, and the process slot.
    pub fn release(&self) {
        let _g = self.lock_struct();
        if self.still_registered() {
            self.release_locked();
        }
    }

    fn release_locked(&self) {
        let Some(p) = self.a.proc(self.me) else {
            return;
        };
        p.state
            .store(obj_word(self.me_gen, proc_state::CLEANING), W);
        self.release_resources_locked();
        // pid 0 tells a CLAIMING slot whose claimant has not written its pid yet.
        p.pid.store(0, X);
        p.state.store(obj_word(self.me_gen, proc_state::FREE), W);
    }

    /// Everything `release_locked` does but the process slot's own state.
    fn release_resources_locked(&self) {
        let a = self.a;
        let c = a.limits().max_coids;
        // Channels first, as QNX's termer destroys channels before it closes connections.
        for n in 0..c {
            let Some(e) = a.pool_entry(self.me, n) else {
                continue;
            };
            let ent = Entry::decode(e.load(R));
            if ent.kind == entry_kind::CHID {
                self.destroy_channel_locked(ent.idx, ent.gen, true);
                e.store(0, W);
            }
        }
        self.drop_names_of(self.me);
        self.orphan_unblock_waiters_locked();
        // Unlink before clearing the entry: a cleaner killed in between leaves an entry whose
        // unlink is redone, which is harmless (all links of a client's connection are its own).
        for n in 0..c {
            for e in [a.fd_entry(self.me, n), a.pool_entry(self.me, n)]
                .into_iter()
                .flatten()
            {
                let ent = Entry::decode(e.load(R));
                if ent.kind == entry_kind::COID {
                    self.unlink_conn_locked(ent.idx, ent.gen);
                }
                e.store(0, W);
            }
        }
        // Connections of ours that no coid names any more: a process killed inside
        // connect_attach (or a cleaner killed inside this loop) leaves them behind.
        // (A lingering orphan thread keeps its connection's link: that one stays.)
        let t = a.limits().threads_per_process;
        let kept_by_orphan = |conn: u32| {
            (self.me * t..(self.me + 1) * t).any(|s| {
                a.thread(s)
                    .is_some_and(|ts| ts.alloc.load(R) == ALLOC_ORPHAN && ts.conn.load(X) == conn)
            })
        };
        for i in 0..a.limits().max_conns() {
            let Some(cn) = a.conn(i) else { continue };
            let w = cn.state.load(R);
            if cn.client.load(X) == self.me
                && matches!(obj_st(w), obj_state::LIVE | obj_state::DEAD)
                && !kept_by_orphan(i)
            {
                cn.links.store(1, X);
                self.unlink_conn_locked(i, obj_gen(w));
            }
        }
        for s in self.me * t..(self.me + 1) * t {
            self.free_thread_slot_locked(s);
        }
        self.audit_pulses_locked();
    }

    /// The dead process's threads REPLY-blocked on another process's `_NTO_CHF_UNBLOCK` channel
    /// linger, as in QNX: each slot becomes an orphan that keeps its connection's link, its server
    /// gets one UNBLOCK pulse (value = rcvid), and the server's reply, which succeeds and is
    /// discarded, completes the teardown (the DISCONNECT pulse follows it). Structural lock held.
    fn orphan_unblock_waiters_locked(&self) {
        let a = self.a;
        let t = a.limits().threads_per_process;
        for s in self.me * t..(self.me + 1) * t {
            let Some(ts) = a.thread(s) else { continue };
            let w = ts.state.load(R);
            if ts.alloc.load(R) != self.me + 1
                || !matches!(
                    proto::state_of(w),
                    st::RECV_COPY | st::REPLY_BLOCKED | st::REPLY_BUSY
                )
            {
                continue;
            }
            let Some(c) = a.chan(ts.chan.load(X)) else {
                continue;
            };
            let cw = c.state.load(R);
            if obj_st(cw) != obj_state::LIVE
                || c.flags.load(X) & chf::UNBLOCK == 0
                || c.owner.load(X) == self.me
            {
                continue;
            }
            ts.alloc.store(ALLOC_ORPHAN, W);
            // The orphan keeps one link (it may hold one already, from a detach under it).
            if ts.mi_flags.fetch_or(MI_LINK_HELD, X) & MI_LINK_HELD == 0 {
                if let Some(cn) = a.conn(ts.conn.load(X)) {
                    if cn.state.load(R) == obj_word(ts.conn_gen.load(X), obj_state::LIVE) {
                        cn.links.fetch_add(1, X);
                    }
                }
            }
            tracing::debug!(
                slot = s,
                "a dead client lingers REPLY-blocked on an UNBLOCK channel"
            );
            let first = ts.mi_flags.fetch_update(X, X, |f| {
                (f & mi::UNBLOCK_REQ == 0).then_some(f | mi::UNBLOCK_REQ)
            });
            if first.is_ok() {
                let rcvid = rcvid_pack(s, proto::gen_of(w));
                let prio = ts.priority.load(X);
                let scoid = a_scoid(a, ts);
                if self
                    .deliver_pulse(
                        ts.chan.load(X),
                        obj_gen(cw),
                        pulse_code::UNBLOCK,
                        rcvid,
                        scoid,
                        prio,
                        false,
                    )
                    .is_err()
                {
                    // No pulse object: nobody will ask the server; release the slot now.
                    self.fail_reply_blocked(ts, Errno::SRCH, true);
                    self.finish_orphan(ts, true);
                }
            }
        }
    }

    /// Completes the teardown of an orphan slot (see `orphan_unblock_waiters_locked`) once its
    /// server answered: frees the slot and drops the connection link it kept.
    fn finish_orphan(&self, ts: &ThreadSlot, locked: bool) {
        if ts.alloc.load(R) != ALLOC_ORPHAN {
            return;
        }
        let _g = if locked {
            None
        } else {
            Some(self.lock_struct())
        };
        if ts
            .alloc
            .compare_exchange(ALLOC_ORPHAN, ALLOC_ORPHAN - 1, Ordering::AcqRel, X)
            .is_err()
        {
            return;
        }
        let w = ts.state.load(R);
        proto::force(
            &ts.state,
            &OsFutex,
            proto::gen_of(w).wrapping_add(1),
            st::IDLE,
        );
        let (conn, gen) = (ts.conn.load(X), ts.conn_gen.load(X));
        ts.alloc.store(0, W);
        self.unlink_conn_locked(conn, gen);
    }

    /// Frees every pulse that no live channel's queue holds (structural lock held): what a
    /// process killed between taking a pulse off a queue and freeing it, or a cleaner killed
    /// while draining a destroyed channel, leaves behind. Pulses are allocated, queued, dequeued
    /// and freed only under their channel's lock, so with every channel lock held (taken in
    /// index order; nothing else holds two) each pulse in use is in some queue.
    fn audit_pulses_locked(&self) {
        let a = self.a;
        let mut guards = Vec::new();
        let mut queued = vec![false; a.limits().max_pulses as usize];
        for i in 0..a.limits().max_channels {
            let Some(c) = a.chan(i) else { continue };
            if obj_st(c.state.load(R)) == obj_state::FREE {
                continue;
            }
            guards.push(self.lock_chan(c));
            if obj_st(c.state.load(R)) != obj_state::LIVE {
                continue;
            }
            let mut node = c.q_head.load(X);
            let mut guard = 0;
            while node != 0 && guard <= a.limits().thread_slots() + a.limits().max_pulses {
                guard += 1;
                if node & 0x8000_0000 != 0 {
                    if let Some(q) = queued.get_mut((node & 0x7FFF_FFFF) as usize) {
                        *q = true;
                    }
                }
                let Some((_, next)) = self.node_key_next(node) else {
                    break;
                };
                node = next.load(X);
            }
        }
        for (i, q) in queued.iter().enumerate() {
            let Some(p) = a.pulse(i as u32) else { continue };
            if !q && obj_st(p.state.load(R)) != obj_state::FREE {
                tracing::debug!(pulse = i, "freeing a pulse no queue holds");
                self.pulse_free(p);
            }
        }
        drop(guards);
    }

    // ----- thread slots -------------------------------------------------------------------

    /// Gives the calling thread a slot of this process (`EAGAIN` when all are taken, as QNX's
    /// thread creation fails).
    pub fn alloc_thread_slot(&self, tid: i32) -> Result<u32, Errno> {
        let t = self.a.limits().threads_per_process;
        for s in self.me * t..(self.me + 1) * t {
            let Some(ts) = self.a.thread(s) else { continue };
            if ts
                .alloc
                .compare_exchange(0, self.me + 1, Ordering::AcqRel, X)
                .is_ok()
            {
                let gen = proto::gen_of(ts.state.load(X)).wrapping_add(1);
                ts.state.store(proto::make(gen, st::IDLE), W);
                ts.tid.store(tid as u32, X);
                ts.priority.store(PRIORITY_DEFAULT as u32, X);
                ts.cpu.store(crate::sys::current_cpu(), X);
                ts.conn.store(u32::MAX, X);
                ts.chan.store(u32::MAX, X);
                ts.served_by.store(0, X);
                return Ok(s);
            }
        }
        tracing::debug!(proc = self.me, "no free thread slot");
        Err(Errno::AGAIN)
    }

    /// Returns a thread slot (its thread exited).
    pub fn free_thread_slot(&self, slot: u32) {
        let death = {
            let _g = self.lock_struct();
            let prio = self
                .a
                .thread(slot)
                .map_or(PRIORITY_DEFAULT as u32, |t| t.priority.load(X));
            let owned = self
                .a
                .thread(slot)
                .is_some_and(|t| t.alloc.load(R) == self.me + 1);
            self.free_thread_slot_locked(slot);
            owned.then_some(prio)
        };
        // `_NTO_CHF_THREAD_DEATH`: a pulse on the death channel when a thread of the process
        // dies, value = its tid, at its priority, scoid -1.
        let Some(prio) = death else { return };
        let chid = self.death_chid();
        let Some((idx, gen, c)) = (chid != 0).then(|| self.own_chan(chid as i32)).flatten() else {
            return;
        };
        if c.flags.load(X) & chf::THREAD_DEATH != 0 {
            let tid = (slot % self.a.limits().threads_per_process + 1) as i32;
            let _ = self.deliver_pulse(idx, gen, pulse_code::THREADDEATH, tid, -1, prio, false);
        }
    }

    fn free_thread_slot_locked(&self, slot: u32) {
        let Some(ts) = self.a.thread(slot) else {
            return;
        };
        if ts.alloc.load(R) != self.me + 1 {
            return;
        }
        let w = ts.state.load(R);
        if proto::state_of(w) == st::SEND_BLOCKED {
            if let Some(c) = self.a.chan(ts.chan.load(X)) {
                let _cg = self.lock_chan(c);
                self.queue_remove(c, node_thread(slot));
            }
        }
        if proto::state_of(w) == st::RECV_WAIT {
            if let Some(c) = self.a.chan(ts.recv_chan.load(X)) {
                let _cg = self.lock_chan(c);
                self.recv_stack_remove(c, slot);
            }
        }
        // A new generation makes every rcvid naming this slot stale.
        proto::force(
            &ts.state,
            &OsFutex,
            proto::gen_of(w).wrapping_add(1),
            st::IDLE,
        );
        ts.alloc.store(0, W);
    }

    /// The thread slot's simulated priority.
    pub fn set_priority(&self, slot: u32, prio: u8) {
        if let Some(ts) = self.a.thread(slot) {
            ts.priority.store(prio as u32, X);
        }
    }

    // ----- pools --------------------------------------------------------------------------

    fn pool_lowest_free(&self, p: u32) -> Option<u32> {
        (1..self.a.limits().max_coids)
            .find(|&n| self.a.pool_entry(p, n).is_some_and(|e| e.load(R) == 0))
    }

    fn pid_to_proc(&self, pid: i32) -> Result<u32, Errno> {
        if pid == 0 {
            return Ok(self.me);
        }
        for i in 0..self.a.limits().max_processes {
            let Some(p) = self.a.proc(i) else { continue };
            if obj_st(p.state.load(R)) == proc_state::ALIVE && p.pid.load(X) as i32 == pid {
                return Ok(i);
            }
        }
        Err(Errno::SRCH)
    }

    // ----- channels -----------------------------------------------------------------------

    /// `ChannelCreate(flags)`: see [`crate::System::channel_create`].
    pub fn channel_create(&self, flags: u32, wait_mode: u32) -> Result<i32, Errno> {
        let _g = self.lock_struct();
        let p = self.a.proc(self.me).ok_or(Errno::INVAL)?;
        let death = flags & (chf::THREAD_DEATH | chf::COID_DISCONNECT) != 0;
        if death && p.death_chid.load(X) != 0 {
            tracing::debug!(proc = self.me, "a death channel exists already");
            return Err(Errno::BUSY);
        }
        let idx = (0..self.a.limits().max_channels)
            .find(|&i| {
                self.a
                    .chan(i)
                    .is_some_and(|c| obj_st(c.state.load(R)) == obj_state::FREE)
            })
            .ok_or_else(|| {
                tracing::debug!("channel table full");
                Errno::AGAIN
            })?;
        let n = self.pool_lowest_free(self.me).ok_or(Errno::AGAIN)?;
        let c = self.a.chan(idx).ok_or(Errno::AGAIN)?;
        let gen = (obj_gen(c.state.load(R)) + 1) & 0xFF_FFFF;
        c.owner.store(self.me, X);
        c.chid.store(n, X);
        c.flags.store(flags, X);
        c.wait_mode.store(wait_mode, X);
        c.q_head.store(0, X);
        c.q_len.store(0, X);
        c.recv_top.store(0, X);
        c.last_sender.store(0, X);
        c.last_receiver.store(0, X);
        c.queue_limit.store(0, X);
        // The pool entry first: a process killed between the two stores leaves an entry naming a
        // channel that never went live, which its cleanup clears; the other order would leave a
        // live channel nobody owns.
        if let Some(e) = self.a.pool_entry(self.me, n) {
            e.store(
                Entry {
                    kind: entry_kind::CHID,
                    cloexec: false,
                    gen,
                    idx,
                }
                .encode(),
                W,
            );
        }
        c.state.store(obj_word(gen, obj_state::LIVE), W);
        if death {
            p.death_chid.store(n, X);
        }
        Ok(n as i32)
    }

    /// Looks up one of the caller's chids: (channel index, generation).
    pub fn own_chan(&self, chid: i32) -> Option<(u32, u32, &'a Channel)> {
        if chid <= 0 || chid & SIDE_CHANNEL != 0 {
            return None;
        }
        let e = Entry::decode(self.a.pool_entry(self.me, chid as u32)?.load(R));
        if e.kind != entry_kind::CHID {
            return None;
        }
        let c = self.a.chan(e.idx)?;
        (c.state.load(R) == obj_word(e.gen, obj_state::LIVE) && c.owner.load(X) == self.me)
            .then_some((e.idx, e.gen, c))
    }

    /// `ChannelDestroy(chid)`: see [`crate::System::channel_destroy`].
    pub fn channel_destroy(&self, chid: i32) -> Result<(), Errno> {
        let _g = self.lock_struct();
        let (idx, gen, _) = self.own_chan(chid).ok_or_else(|| {
            tracing::debug!(chid, "channel_destroy: no such channel");
            Errno::INVAL
        })?;
        self.destroy_channel_locked(idx, gen, false);
        self.drop_names_of_chan(idx, gen);
        if let Some(e) = self.a.pool_entry(self.me, chid as u32) {
            e.store(0, W);
        }
        Ok(())
    }

    /// Destroys a channel (structural lock held): senders, receivers and REPLY-blocked clients get
    /// `ESRCH`; queued pulses are dropped; client connections die (`EBADF` later) and clients with
    /// a `_NTO_CHF_COID_DISCONNECT` channel get a COIDDEATH pulse per coid.
    fn destroy_channel_locked(&self, idx: u32, gen: u32, force_copies: bool) {
        let a = self.a;
        let Some(c) = a.chan(idx) else { return };
        let owner = c.owner.load(X);
        {
            let _cg = self.lock_chan(c);
            // DEAD with our generation: a cleaner was killed in the middle of this; finish it.
            let w = c.state.load(R);
            if w != obj_word(gen, obj_state::LIVE) && w != obj_word(gen, obj_state::DEAD) {
                return;
            }
            // From here on senders re-checking under the channel lock see a dead channel.
            c.state.store(obj_word(gen, obj_state::DEAD), W);
            let mut node = c.q_head.swap(0, X);
            let mut guard = 0;
            while node != 0 && guard <= a.limits().thread_slots() + a.limits().max_pulses {
                guard += 1;
                if node & 0x8000_0000 != 0 {
                    let Some(p) = a.pulse(node & 0x7FFF_FFFF) else {
                        break;
                    };
                    node = p.next.load(X);
                    self.pulse_free(p);
                } else {
                    let Some(ts) = a.thread(node - 1) else { break };
                    node = ts.next.load(X);
                    let w = ts.state.load(R);
                    if proto::state_of(w) == st::SEND_BLOCKED {
                        ts.result_kind.store(result_kind::ERR_NOT_RECEIVED, X);
                        ts.result.store(Errno::SRCH.raw() as u32, X);
                        ts.reply_len.store(0, X);
                        let _ = proto::transition(
                            &ts.state,
                            &OsFutex,
                            proto::gen_of(w),
                            st::SEND_BLOCKED,
                            st::REPLIED,
                        );
                    }
                }
            }
            c.q_len.store(0, X);
            let mut r = c.recv_top.swap(0, X);
            guard = 0;
            while r != 0 && guard <= a.limits().thread_slots() {
                guard += 1;
                let Some(rt) = a.thread(r - 1) else { break };
                r = rt.recv_next.load(X);
                let w = rt.state.load(R);
                if proto::state_of(w) == st::RECV_WAIT {
                    rt.handoff.store(HANDOFF_CHAN_GONE, X);
                    let _ = proto::transition(
                        &rt.state,
                        &OsFutex,
                        proto::gen_of(w),
                        st::RECV_WAIT,
                        st::RECV_HANDED,
                    );
                }
            }
        }
        // Clients that the server already received from: REPLY-blocked (or being copied).
        for s in 0..a.limits().thread_slots() {
            let Some(ts) = a.thread(s) else { continue };
            if ts.alloc.load(R) == 0 || ts.chan.load(X) != idx {
                continue;
            }
            self.fail_reply_blocked(ts, Errno::SRCH, force_copies);
            self.finish_orphan(ts, true);
        }
        // Connections to the channel die.
        for i in 0..a.limits().max_conns() {
            let Some(cn) = a.conn(i) else { continue };
            let w = cn.state.load(R);
            let s = obj_st(w);
            if (s != obj_state::LIVE && s != obj_state::DISCONNECTED)
                || cn.chan.load(X) != idx
                || cn.chan_gen.load(X) != gen
            {
                continue;
            }
            if let Some(e) = a.pool_entry(owner, cn.scoid.load(X)) {
                e.store(0, W);
            }
            if s == obj_state::DISCONNECTED {
                cn.state.store(obj_word(obj_gen(w), obj_state::FREE), W);
                continue;
            }
            cn.state.store(obj_word(obj_gen(w), obj_state::DEAD), W);
            self.coid_death_pulses(cn.client.load(X), i, obj_gen(w));
        }
        if let Some(p) = a.proc(owner) {
            let chid = c.chid.load(X);
            if p.death_chid.load(X) == chid {
                p.death_chid.store(0, X);
            }
        }
        // Free it; the next user bumps the generation.
        c.state.store(obj_word(gen, obj_state::FREE), W);
    }

    /// Fails a client that is REPLY-blocked (or being received from) with `err`. A live server
    /// thread that is copying finishes its copy first.
    fn fail_reply_blocked(&self, ts: &ThreadSlot, err: Errno, copier_gone: bool) {
        // A live copier finishes in microseconds; a slot stuck in a copy state for this long
        // belongs to a dead or misbehaving process, and is failed all the same. When the copier's
        // process is the one being torn down, there is nobody to wait for.
        // The copier is the channel's owner. If its process is gone there is nobody to wait for;
        // if it lives, its copy ends in microseconds, and is waited for (a long bound only keeps a
        // hostile arena from hanging us: a copier stopped that long is failed under it).
        let owner_gone = self
            .a
            .chan(ts.chan.load(X))
            .and_then(|c| self.a.proc(c.owner.load(X)))
            .is_none_or(|p| !crate::sys::process_alive(p.pid.load(X) as i32, p.start_time.load(X)));
        let give_up = if copier_gone || owner_gone {
            Instant::now()
        } else {
            Instant::now() + self.tuning.lock_poll * 1000
        };
        loop {
            let w = ts.state.load(R);
            let g = proto::gen_of(w);
            match proto::state_of(w) {
                st::REPLY_BLOCKED => {
                    if proto::transition(&ts.state, &OsFutex, g, st::REPLY_BLOCKED, st::REPLY_BUSY)
                        .is_ok()
                    {
                        self.complete_with_error(ts, g, err);
                        return;
                    }
                }
                st::RECV_COPY | st::REPLY_BUSY if Instant::now() >= give_up => {
                    tracing::warn!(
                        state = proto::state_of(w),
                        "a copy never finished; failing the client anyway"
                    );
                    // A new generation, so the stale copier's own moves of this slot fail; keep the
                    // waiters bit: the move to REPLIED below must wake the client.
                    let g2 = g.wrapping_add(1);
                    let busy = proto::make(g2, st::REPLY_BUSY) | (w & proto::WAITERS);
                    if ts
                        .state
                        .compare_exchange(w, busy, Ordering::AcqRel, R)
                        .is_ok()
                    {
                        if proto::state_of(w) == st::RECV_COPY {
                            // Handed to a receiver that never finished taking it (it died in
                            // its receive): no server code ever saw the request.
                            ts.result_kind.store(result_kind::ERR_NOT_RECEIVED, X);
                            ts.result.store(err.raw() as u32, X);
                            ts.reply_len.store(0, X);
                            complete(ts, g2);
                        } else {
                            self.complete_with_error(ts, g2, err);
                        }
                        return;
                    }
                }
                st::RECV_COPY | st::REPLY_BUSY => {
                    let _ = proto::wait_for(
                        &ts.state,
                        &OsFutex,
                        |x| x & !proto::WAITERS != w & !proto::WAITERS,
                        &mut proto::NoSpin,
                        Some(Instant::now() + self.tuning.lock_poll),
                    );
                }
                _ => return,
            }
        }
    }

    /// Completes a pinned (REPLY_BUSY) client with an error.
    fn complete_with_error(&self, ts: &ThreadSlot, gen: u16, err: Errno) {
        ts.result_kind.store(result_kind::ERR_RECEIVED, X);
        ts.result.store(err.raw() as u32, X);
        ts.reply_len.store(0, X);
        complete(ts, gen);
    }

    /// Releases this process's other threads blocked through `coid` (it is being detached):
    /// SEND-blocked ones and REPLY-blocked ones get `EBADF`, except REPLY-blocked ones on a
    /// `_NTO_CHF_UNBLOCK` channel: their server gets an UNBLOCK pulse and they wait for its reply.
    fn release_blocked_through(&self, coid: i32) {
        let a = self.a;
        let t = a.limits().threads_per_process;
        for s in self.me * t..(self.me + 1) * t {
            let Some(ts) = a.thread(s) else { continue };
            if ts.alloc.load(R) != self.me + 1 || ts.coid.load(X) != coid as u32 {
                continue;
            }
            let w = ts.state.load(R);
            let Some(c) = a.chan(ts.chan.load(X)) else {
                continue;
            };
            let state = proto::state_of(w);
            // A SEND-blocked thread leaves the queue with EBADF; if a receiver took it meanwhile
            // it is (or is becoming) REPLY-blocked, and is handled as such.
            let dequeued = state == st::SEND_BLOCKED && self.fail_queued(ts, s, c, Errno::BADF);
            if !dequeued
                && matches!(
                    state,
                    st::SEND_BLOCKED | st::RECV_COPY | st::REPLY_BLOCKED | st::REPLY_BUSY
                )
            {
                self.unblock_or_fail(ts, s, c, Errno::BADF);
                // Still blocked (an UNBLOCK channel): as in QNX, a blocked thread counts as a
                // link, so the connection (and the server's DISCONNECT) waits for its reply.
                let still = matches!(
                    proto::state_of(ts.state.load(R)),
                    st::RECV_COPY | st::REPLY_BLOCKED | st::REPLY_BUSY
                );
                if still && ts.mi_flags.fetch_or(MI_LINK_HELD, X) & MI_LINK_HELD == 0 {
                    if let Some(cn) = a.conn(ts.conn.load(X)) {
                        cn.links.fetch_add(1, X);
                    }
                }
            }
        }
    }

    fn unblock_or_fail(&self, ts: &ThreadSlot, slot: u32, c: &Channel, err: Errno) {
        if c.flags.load(X) & chf::UNBLOCK == 0 {
            self.fail_reply_blocked(ts, err, false);
            return;
        }
        // A server that already holds the slot (replying) or has answered needs no pulse. (A reply
        // that pins the slot right after this check can still leave the pulse behind it: the
        // server then receives an UNBLOCK for an rcvid that is no longer blocked, and its
        // msg_reply/msg_error to it gives ESRCH, or lands on the thread's next request on the
        // same connection, as a stale reply does in QNX.)
        if !matches!(
            proto::state_of(ts.state.load(R)),
            st::REPLY_BLOCKED | st::RECV_COPY
        ) {
            return;
        }
        // One UNBLOCK pulse per REPLY-blocked period.
        let prev = ts.mi_flags.fetch_update(X, X, |f| {
            (f & mi::UNBLOCK_REQ == 0).then_some(f | mi::UNBLOCK_REQ)
        });
        if prev.is_err() {
            return;
        }
        let w = ts.state.load(R);
        let rcvid = rcvid_pack(slot, proto::gen_of(w));
        let scoid = a_scoid(self.a, ts);
        let chan = ts.chan.load(X);
        let chan_gen = obj_gen(c.state.load(R));
        if self
            .deliver_pulse(
                chan,
                chan_gen,
                pulse_code::UNBLOCK,
                rcvid,
                scoid,
                ts.priority.load(X),
                false,
            )
            .is_err()
        {
            // QNX: a pulse that cannot be delivered releases the client as if the server had.
            self.fail_reply_blocked(ts, err, false);
        }
    }

    fn coid_death_pulses(&self, client: u32, conn: u32, conn_gen: u32) {
        let a = self.a;
        let Some(p) = a.proc(client) else { return };
        let death = p.death_chid.load(X);
        if death == 0 {
            return;
        }
        let Some(de) = a.pool_entry(client, death) else {
            return;
        };
        let de = Entry::decode(de.load(R));
        if de.kind != entry_kind::CHID {
            return;
        }
        let Some(dc) = a.chan(de.idx) else { return };
        if dc.flags.load(X) & chf::COID_DISCONNECT == 0 {
            return;
        }
        for n in 0..a.limits().max_coids {
            for (side, e) in [
                (false, a.fd_entry(client, n)),
                (true, a.pool_entry(client, n)),
            ] {
                let Some(e) = e else { continue };
                let ent = Entry::decode(e.load(R));
                if ent.kind == entry_kind::COID && ent.idx == conn && ent.gen == conn_gen {
                    let coid = if side {
                        SIDE_CHANNEL | n as i32
                    } else {
                        n as i32
                    };
                    let _ = self.deliver_pulse(
                        de.idx,
                        de.gen,
                        pulse_code::COIDDEATH,
                        coid,
                        -1,
                        PRIORITY_DEFAULT as u32,
                        false,
                    );
                }
            }
        }
    }

    // ----- connections --------------------------------------------------------------------

    fn coid_entry(&self, coid: i32) -> Option<&'a AtomicU64> {
        if coid < 0 {
            return None;
        }
        if coid & SIDE_CHANNEL != 0 {
            self.a.pool_entry(self.me, (coid & !SIDE_CHANNEL) as u32)
        } else {
            self.a.fd_entry(self.me, coid as u32)
        }
    }

    /// `ConnectAttach(nd, pid, chid, index, flags)`: see [`crate::System::connect_attach`].
    pub fn connect_attach(
        &self,
        nd: u32,
        pid: i32,
        chid: i32,
        index: i32,
        flags: u32,
    ) -> Result<i32, Errno> {
        let a = self.a;
        let max = a.limits().max_coids;
        let side = index & SIDE_CHANNEL != 0;
        if flags & !cof::ALL != 0 || (!side && (index < 0 || index as u32 >= max)) {
            tracing::debug!(flags, index, "connect_attach: bad flags or index");
            return Err(Errno::INVAL);
        }
        let _g = self.lock_struct();
        let p = a.proc(self.me).ok_or(Errno::INVAL)?;
        if p.fd_count.load(X).saturating_add(p.side_count.load(X)) >= max {
            tracing::debug!(proc = self.me, "connect_attach: coid limit");
            return Err(Errno::MFILE);
        }
        let fd = if side {
            None
        } else {
            Some(
                (index as u32..max)
                    .find(|&n| a.fd_entry(self.me, n).is_some_and(|e| e.load(R) == 0))
                    .ok_or(Errno::MFILE)?,
            )
        };
        if nd != 0 {
            return Err(Errno::NOREMOTE);
        }
        let server = self.pid_to_proc(pid)?;
        if chid <= 0 || chid & SIDE_CHANNEL != 0 {
            return Err(Errno::SRCH);
        }
        let ce = a
            .pool_entry(server, chid as u32)
            .map(|e| Entry::decode(e.load(R)))
            .ok_or(Errno::SRCH)?;
        if ce.kind != entry_kind::CHID {
            return Err(Errno::SRCH);
        }
        let chan = a.chan(ce.idx).ok_or(Errno::SRCH)?;
        if chan.state.load(R) != obj_word(ce.gen, obj_state::LIVE) {
            return Err(Errno::SRCH);
        }
        // Share an existing connection to the same channel unless either side asks not to.
        let mut shared = None;
        if flags & cof::NOSHARE == 0 {
            shared = (0..a.limits().max_conns()).find(|&i| {
                a.conn(i).is_some_and(|cn| {
                    obj_st(cn.state.load(R)) == obj_state::LIVE
                        && cn.client.load(X) == self.me
                        && cn.chan.load(X) == ce.idx
                        && cn.chan_gen.load(X) == ce.gen
                        && cn.flags.load(X) & cof::NOSHARE == 0
                })
            });
        }
        let (conn_idx, conn_gen) = match shared {
            Some(i) => {
                let cn = a.conn(i).ok_or(Errno::NFILE)?;
                cn.links.fetch_add(1, X);
                (i, obj_gen(cn.state.load(R)))
            }
            None => {
                let i = (0..a.limits().max_conns())
                    .find(|&i| {
                        a.conn(i)
                            .is_some_and(|cn| obj_st(cn.state.load(R)) == obj_state::FREE)
                    })
                    .ok_or(Errno::NFILE)?;
                let scoid = self.pool_lowest_free(server).ok_or(Errno::AGAIN)?;
                let cn = a.conn(i).ok_or(Errno::NFILE)?;
                let gen = (obj_gen(cn.state.load(R)) + 1) & 0xFF_FFFF;
                cn.client.store(self.me, X);
                cn.chan.store(ce.idx, X);
                cn.chan_gen.store(ce.gen, X);
                cn.server.store(server, X);
                cn.scoid.store(scoid, X);
                cn.links.store(1, X);
                cn.flags.store(flags, X);
                cn.state.store(obj_word(gen, obj_state::LIVE), W);
                if let Some(e) = a.pool_entry(server, scoid) {
                    e.store(
                        Entry {
                            kind: entry_kind::SCOID,
                            cloexec: false,
                            gen,
                            idx: i,
                        }
                        .encode(),
                        W,
                    );
                }
                (i, gen)
            }
        };
        let entry = Entry {
            kind: entry_kind::COID,
            cloexec: flags & cof::CLOEXEC != 0,
            gen: conn_gen,
            idx: conn_idx,
        }
        .encode();
        let coid = match fd {
            Some(n) => {
                a.fd_entry(self.me, n).ok_or(Errno::MFILE)?.store(entry, W);
                p.fd_count.fetch_add(1, X);
                n as i32
            }
            None => {
                let Some(n) = self.pool_lowest_free(self.me) else {
                    self.unlink_conn_locked(conn_idx, conn_gen);
                    return Err(Errno::AGAIN);
                };
                a.pool_entry(self.me, n)
                    .ok_or(Errno::AGAIN)?
                    .store(entry, W);
                p.side_count.fetch_add(1, X);
                SIDE_CHANNEL | n as i32
            }
        };
        Ok(coid)
    }

    /// `ConnectDetach(coid)`: see [`crate::System::connect_detach`].
    pub fn connect_detach(&self, coid: i32) -> Result<(), Errno> {
        let _g = self.lock_struct();
        let e = self.coid_entry(coid).ok_or(Errno::INVAL)?;
        let ent = Entry::decode(e.load(R));
        match ent.kind {
            entry_kind::COID => {
                self.release_blocked_through(coid);
                e.store(0, W);
                if let Some(p) = self.a.proc(self.me) {
                    let count = if coid & SIDE_CHANNEL != 0 {
                        &p.side_count
                    } else {
                        &p.fd_count
                    };
                    let _ = count.fetch_update(X, X, |v| v.checked_sub(1));
                }
                self.unlink_conn_locked(ent.idx, ent.gen);
                Ok(())
            }
            entry_kind::SCOID if coid & SIDE_CHANNEL != 0 => {
                // A server detaching a scoid: allowed once its last client link is gone.
                let cn = self.a.conn(ent.idx).ok_or(Errno::INVAL)?;
                let w = cn.state.load(R);
                if w != obj_word(ent.gen, obj_state::DISCONNECTED) {
                    tracing::debug!(coid, "connect_detach: scoid still has client links");
                    return Err(Errno::INVAL);
                }
                e.store(0, W);
                cn.state.store(obj_word(ent.gen, obj_state::FREE), W);
                Ok(())
            }
            _ => {
                tracing::debug!(coid, "connect_detach: no such connection");
                Err(Errno::INVAL)
            }
        }
    }

    /// Drops one client link of a connection (structural lock held). The last link of a live
    /// connection frees it, with a DISCONNECT pulse first where the channel asks for one.
    fn unlink_conn_locked(&self, idx: u32, gen: u32) {
        let a = self.a;
        let Some(cn) = a.conn(idx) else { return };
        let w = cn.state.load(R);
        if obj_gen(w) != gen {
            return;
        }
        let left = cn
            .links
            .fetch_update(X, X, |v| v.checked_sub(1))
            .map(|v| v - 1)
            .unwrap_or(0);
        if left > 0 {
            return;
        }
        match obj_st(w) {
            obj_state::LIVE => {
                let chan = cn.chan.load(X);
                let chan_gen = cn.chan_gen.load(X);
                let scoid = cn.scoid.load(X);
                let server = cn.server.load(X);
                let wants = a.chan(chan).is_some_and(|c| {
                    c.state.load(R) == obj_word(chan_gen, obj_state::LIVE)
                        && c.flags.load(X) & chf::DISCONNECT != 0
                });
                if wants {
                    cn.state.store(obj_word(gen, obj_state::DISCONNECTED), W);
                    let prio = PRIORITY_DEFAULT as u32;
                    if self
                        .deliver_pulse(
                            chan,
                            chan_gen,
                            pulse_code::DISCONNECT,
                            0,
                            SIDE_CHANNEL | scoid as i32,
                            prio,
                            true,
                        )
                        .is_err()
                    {
                        tracing::warn!(
                            scoid,
                            "DISCONNECT pulse could not be queued (pulse pool full)"
                        );
                    }
                } else {
                    if let Some(e) = a.pool_entry(server, scoid) {
                        if Entry::decode(e.load(R)).idx == idx {
                            e.store(0, W);
                        }
                    }
                    cn.state.store(obj_word(gen, obj_state::FREE), W);
                }
            }
            obj_state::DEAD => cn.state.store(obj_word(gen, obj_state::FREE), W),
            _ => {}
        }
    }

    fn resolve(&self, coid: i32) -> Result<Target, Errno> {
        let a = self.a;
        let e = self.coid_entry(coid).ok_or(Errno::BADF)?;
        let ent = Entry::decode(e.load(R));
        if ent.kind != entry_kind::COID {
            return Err(Errno::BADF);
        }
        let cn = a.conn(ent.idx).ok_or(Errno::BADF)?;
        if cn.state.load(R) != obj_word(ent.gen, obj_state::LIVE) {
            return Err(Errno::BADF);
        }
        let chan = cn.chan.load(X);
        let chan_gen = cn.chan_gen.load(X);
        let c = a.chan(chan).ok_or(Errno::BADF)?;
        if c.state.load(R) != obj_word(chan_gen, obj_state::LIVE) {
            return Err(Errno::BADF);
        }
        Ok(Target {
            conn: ent.idx,
            conn_gen: ent.gen,
            chan,
            chan_gen,
        })
    }

    /// `ConnectServerInfo(pid, coid, info)`: the first client connection at or above `coid`
    /// (fd range, then side channels); `skip_dead` is the `info == NULL` form.
    pub fn connect_server_info(
        &self,
        pid: i32,
        coid: i32,
        skip_dead: bool,
    ) -> Result<ServerInfo, Errno> {
        let a = self.a;
        let p = self.pid_to_proc(pid)?;
        let max = a.limits().max_coids;
        let (fd_start, side_start) = if coid < 0 {
            (0, 0)
        } else if coid & SIDE_CHANNEL != 0 {
            (max, (coid & !SIDE_CHANNEL) as u32)
        } else {
            (coid as u32, 0)
        };
        let candidates = (fd_start..max)
            .map(|n| (n as i32, a.fd_entry(p, n)))
            .chain((side_start..max).map(|n| (SIDE_CHANNEL | n as i32, a.pool_entry(p, n))));
        for (c, e) in candidates {
            let Some(e) = e else { continue };
            let ent = Entry::decode(e.load(R));
            if ent.kind != entry_kind::COID {
                continue;
            }
            let Some(cn) = a.conn(ent.idx) else { continue };
            let w = cn.state.load(R);
            if obj_gen(w) != ent.gen {
                continue;
            }
            let dead = obj_st(w) != obj_state::LIVE
                || a.chan(cn.chan.load(X)).is_none_or(|ch| {
                    ch.state.load(R) != obj_word(cn.chan_gen.load(X), obj_state::LIVE)
                });
            if dead && skip_dead {
                continue;
            }
            let server = cn.server.load(X);
            let spid = a.proc(server).map_or(0, |sp| sp.pid.load(X) as i32);
            let chid = a
                .chan(cn.chan.load(X))
                .map_or(0, |ch| ch.chid.load(X) as i32);
            let mut flags =
                if ent.cloexec { cof::CLOEXEC } else { 0 } | (cn.flags.load(X) & cof::NOSHARE);
            if dead {
                flags |= cof::DEAD;
            }
            return Ok(ServerInfo {
                nd: 0,
                pid: spid,
                chid,
                scoid: SIDE_CHANNEL | cn.scoid.load(X) as i32,
                coid: c,
                flags,
            });
        }
        Err(Errno::INVAL)
    }

    /// `ConnectClientInfo(scoid, info, 0)`.
    pub fn connect_client_info(&self, scoid: i32) -> Result<ClientInfo, Errno> {
        let a = self.a;
        let proc_info = |i: u32| -> Result<ClientInfo, Errno> {
            let p = a.proc(i).ok_or(Errno::INVAL)?;
            Ok(ClientInfo {
                nd: 0,
                pid: p.pid.load(X) as i32,
                ruid: p.ids[0].load(X),
                euid: p.ids[1].load(X),
                rgid: p.ids[2].load(X),
                egid: p.ids[3].load(X),
            })
        };
        if scoid == -1 {
            return proc_info(self.me);
        }
        if scoid & SIDE_CHANNEL == 0 || scoid < 0 {
            return Err(Errno::INVAL);
        }
        let ent = Entry::decode(
            a.pool_entry(self.me, (scoid & !SIDE_CHANNEL) as u32)
                .ok_or(Errno::INVAL)?
                .load(R),
        );
        if ent.kind != entry_kind::SCOID {
            return Err(Errno::INVAL);
        }
        let cn = a.conn(ent.idx).ok_or(Errno::INVAL)?;
        let w = cn.state.load(R);
        if obj_gen(w) != ent.gen || !matches!(obj_st(w), obj_state::LIVE | obj_state::DISCONNECTED)
        {
            return Err(Errno::INVAL);
        }
        proc_info(cn.client.load(X))
    }

    /// `ConnectFlags(pid, coid, mask, bits)`: returns the previous flags.
    pub fn connect_flags(&self, pid: i32, coid: i32, mask: u32, bits: u32) -> Result<u32, Errno> {
        let p = self.pid_to_proc(pid)?;
        if p != self.me {
            // Another process's table is its own business; QNX allows it, but our tables are
            // written only by their owner (and its cleaner).
            return Err(Errno::PERM);
        }
        let _g = self.lock_struct();
        let e = self.coid_entry(coid).ok_or(Errno::BADF)?;
        let mut ent = Entry::decode(e.load(R));
        if ent.kind != entry_kind::COID {
            return Err(Errno::BADF);
        }
        let prev = if ent.cloexec { cof::CLOEXEC } else { 0 };
        if mask & cof::CLOEXEC != 0 {
            ent.cloexec = bits & cof::CLOEXEC != 0;
            e.store(ent.encode(), W);
        }
        Ok(prev)
    }

    // ----- queues -------------------------------------------------------------------------

    fn node_key_next(&self, node: u32) -> Option<(u32, &'a AtomicU32)> {
        if node & 0x8000_0000 != 0 {
            let p = self.a.pulse(node & 0x7FFF_FFFF)?;
            Some((p.key.load(X), &p.next))
        } else {
            let t = self.a.thread(node.checked_sub(1)?)?;
            Some((t.key.load(X), &t.next))
        }
    }

    /// Inserts `node` with `key` after every node whose key is >= it (channel lock held).
    fn queue_insert(&self, c: &Channel, node: u32, key: u32) -> bool {
        let Some((_, my_next)) = self.node_key_next(node) else {
            return false;
        };
        let mut prev: Option<&AtomicU32> = None;
        let mut cur = c.q_head.load(X);
        let mut guard = 0;
        while cur != 0 && guard <= self.a.limits().thread_slots() + self.a.limits().max_pulses {
            guard += 1;
            let Some((k, next)) = self.node_key_next(cur) else {
                break;
            };
            if k < key {
                break;
            }
            prev = Some(next);
            cur = next.load(X);
        }
        my_next.store(cur, X);
        match prev {
            Some(p) => p.store(node, X),
            None => c.q_head.store(node, X),
        }
        c.q_len.fetch_add(1, X);
        true
    }

    /// Unlinks the first node accepted by `want` (channel lock held).
    fn queue_take(&self, c: &Channel, want: impl Fn(u32) -> bool) -> Option<u32> {
        let mut prev: Option<&AtomicU32> = None;
        let mut cur = c.q_head.load(X);
        let mut guard = 0;
        while cur != 0 && guard <= self.a.limits().thread_slots() + self.a.limits().max_pulses {
            guard += 1;
            let (_, next) = self.node_key_next(cur)?;
            let after = next.load(X);
            if want(cur) {
                match prev {
                    Some(p) => p.store(after, X),
                    None => c.q_head.store(after, X),
                }
                let _ = c.q_len.fetch_update(X, X, |v| v.checked_sub(1));
                return Some(cur);
            }
            prev = Some(next);
            cur = after;
        }
        None
    }

    fn queue_remove(&self, c: &Channel, node: u32) -> bool {
        self.queue_take(c, |n| n == node).is_some()
    }

    /// Pops the most recent waiting receiver that accepts this kind of node (channel lock held).
    fn recv_stack_pop(&self, c: &Channel, pulse: bool) -> Option<u32> {
        // MsgReceive waiters first (newest first); a pulse goes to a MsgReceivePulse waiter only
        // when no MsgReceive waiter is there, as QNX queues those behind.
        self.recv_stack_pop_kind(c, false).or_else(|| {
            if pulse {
                self.recv_stack_pop_kind(c, true)
            } else {
                None
            }
        })
    }

    fn recv_stack_pop_kind(&self, c: &Channel, pulse_only: bool) -> Option<u32> {
        self.recv_stack_find(c, true, |_, rt| {
            (rt.recv_pulse_only.load(X) != 0) == pulse_only
        })
    }

    /// Whether a MsgReceive (not pulse-only) waiter is on the stack (channel lock held).
    fn has_message_receiver(&self, c: &Channel) -> bool {
        self.recv_stack_find(c, false, |_, rt| rt.recv_pulse_only.load(X) == 0)
            .is_some()
    }

    /// Takes `slot` off the receiver stack (channel lock held); false if it was not there (a
    /// sender popped it and is handing it something).
    fn recv_stack_remove(&self, c: &Channel, slot: u32) -> bool {
        self.recv_stack_find(c, true, |s, _| s == slot).is_some()
    }

    /// Walks the receiver stack from the top (newest first; channel lock held) to the first
    /// waiter `want` accepts, and unlinks it if `unlink`. The walk is bounded by the number of
    /// thread slots and stops at an invalid link, whatever the arena holds.
    fn recv_stack_find(
        &self,
        c: &Channel,
        unlink: bool,
        want: impl Fn(u32, &ThreadSlot) -> bool,
    ) -> Option<u32> {
        let mut prev: Option<&AtomicU32> = None;
        let mut cur = c.recv_top.load(X);
        let mut guard = 0;
        while cur != 0 && guard <= self.a.limits().thread_slots() {
            guard += 1;
            let rt = self.a.thread(cur - 1)?;
            let after = rt.recv_next.load(X);
            if want(cur - 1, rt) {
                if unlink {
                    match prev {
                        Some(p) => p.store(after, X),
                        None => c.recv_top.store(after, X),
                    }
                }
                return Some(cur - 1);
            }
            prev = Some(&rt.recv_next);
            cur = after;
        }
        None
    }

    // ----- pulses -------------------------------------------------------------------------

    fn pulse_alloc(&self) -> Option<u32> {
        let n = self.a.limits().max_pulses;
        // Start from a per-process spot so processes rarely collide on the same objects.
        let start = (self.me * 61) % n;
        (0..n).map(|i| (start + i) % n).find(|&i| {
            self.a.pulse(i).is_some_and(|p| {
                let w = p.state.load(R);
                obj_st(w) == obj_state::FREE
                    && p.state
                        .compare_exchange(
                            w,
                            obj_word(obj_gen(w) + 1, obj_state::LIVE),
                            Ordering::AcqRel,
                            X,
                        )
                        .is_ok()
            })
        })
    }

    fn pulse_free(&self, p: &super::layout::PulseObj) {
        let w = p.state.load(R);
        p.state.store(obj_word(obj_gen(w), obj_state::FREE), W);
    }

    /// Delivers a pulse to channel `chan`: straight to a waiting receiver, else queued.
    #[allow(clippy::too_many_arguments)]
    fn deliver_pulse(
        &self,
        chan: u32,
        chan_gen: u32,
        code: i8,
        value: i32,
        scoid: i32,
        prio: u32,
        boost: bool,
    ) -> Result<(), Errno> {
        let a = self.a;
        let c = a.chan(chan).ok_or(Errno::BADF)?;
        let woke = {
            // The pulse is allocated under the channel lock, so a pulse in use is always in a
            // queue except while its channel's lock is held (see `audit_pulses_locked`).
            let _cg = self.lock_chan(c);
            if c.state.load(R) != obj_word(chan_gen, obj_state::LIVE) {
                return Err(Errno::BADF);
            }
            let data = [code as u8 as u32, value as u32, scoid as u32, prio];
            match self.recv_stack_pop(c, true) {
                // A waiting receiver takes it directly: no pulse object needed.
                Some(r) => {
                    let rt = a.thread(r).ok_or(Errno::BADF)?;
                    for (d, v) in rt.pulse.iter().zip(data) {
                        d.store(v, X);
                    }
                    rt.handoff.store(HANDOFF_PULSE, X);
                    hand_over(rt)
                }
                None => {
                    let pi = self.pulse_alloc().ok_or_else(|| {
                        tracing::debug!("pulse pool exhausted");
                        Errno::AGAIN
                    })?;
                    let p = a.pulse(pi).ok_or(Errno::AGAIN)?;
                    for (d, v) in p.data.iter().zip(data) {
                        d.store(v, X);
                    }
                    p.chan.store(chan, X);
                    p.key.store(queue_key(prio, boost), X);
                    self.queue_insert(c, node_pulse(pi), queue_key(prio, boost));
                    None
                }
            }
        };
        if let Some(rt) = woke {
            wake_slot(rt);
        }
        Ok(())
    }

    /// `MsgDeliverEvent(rcvid, &event)` for a `SIGEV_PULSE` event: the pulse goes through
    /// `coid` as resolved in the **client's** process (the one `rcvid` names), at `priority`
    /// (-1: the client thread's). The client need not be blocked.
    pub fn msg_deliver_pulse(
        &self,
        rcvid: i32,
        coid: i32,
        priority: i32,
        code: i8,
        value: i32,
    ) -> Result<(), Errno> {
        let a = self.a;
        let (s, gen) = rcvid_unpack(rcvid).ok_or(Errno::SRCH)?;
        let ts = a.thread(s).ok_or(Errno::SRCH)?;
        let owner = ts.alloc.load(R);
        if owner == 0 || owner == ALLOC_ORPHAN || proto::gen_of(ts.state.load(R)) != gen {
            return Err(Errno::SRCH);
        }
        let client = owner - 1;
        let cgen = a
            .proc(client)
            .map(|p| obj_gen(p.state.load(R)))
            .ok_or(Errno::SRCH)?;
        let k = self.acting_on(client, cgen);
        // Not a connection at all: ESRCH; a connection whose channel is gone: EBADF.
        let e = k
            .coid_entry(coid)
            .map(|e| Entry::decode(e.load(R)))
            .ok_or(Errno::SRCH)?;
        if e.kind != entry_kind::COID {
            return Err(Errno::SRCH);
        }
        let t = k.resolve(coid)?;
        let prio = match priority {
            -1 => ts.priority.load(X),
            p if p & 0xFF == 0 => return Err(Errno::INVAL),
            p => (p as u32) & 0xFF,
        };
        self.pulse_through(t, code, value, prio)
    }

    /// Delivers a user pulse through a resolved connection (its scoid in the pulse).
    fn pulse_through(&self, t: Target, code: i8, value: i32, prio: u32) -> Result<(), Errno> {
        let scoid = self.a.conn(t.conn).map_or(0, |c| c.scoid.load(X));
        self.deliver_pulse(
            t.chan,
            t.chan_gen,
            code,
            value,
            SIDE_CHANNEL | scoid as i32,
            prio,
            false,
        )
    }

    /// `MsgSendPulse(coid, priority, code, value)`: see [`crate::System::msg_send_pulse`].
    pub fn msg_send_pulse(
        &self,
        slot: u32,
        coid: i32,
        priority: i32,
        code: i8,
        value: i32,
    ) -> Result<(), Errno> {
        let prio = if priority == -1 {
            self.a
                .thread(slot)
                .map_or(PRIORITY_DEFAULT as u32, |t| t.priority.load(X))
        } else {
            (priority as u32) & 0xFF
        };
        if prio == 0 {
            return Err(Errno::INVAL);
        }
        let t = self.resolve(coid)?;
        self.pulse_through(t, code, value, prio)
    }

    // ----- messages -----------------------------------------------------------------------

    fn wait_mode_of(&self, c: &Channel, system: WaitMode) -> WaitMode {
        match c.wait_mode.load(X) {
            1 => WaitMode::Blocking,
            _ => system,
        }
    }

    /// `MsgSendv(coid, siov, riov)`: the client side of a message exchange. Gathers `sparts`,
    /// blocks until the reply and scatters it into `rparts`. Returns the reply status.
    #[allow(clippy::too_many_arguments)]
    pub fn msg_send(
        &self,
        slot: u32,
        coid: i32,
        sparts: &[&[u8]],
        rparts: &mut [&mut [u8]],
        mode: WaitMode,
        timeouts: Timeouts,
    ) -> Result<i32, Errno> {
        let a = self.a;
        let ts = a.thread(slot).ok_or(Errno::AGAIN)?;
        ts.result_kind.store(result_kind::NOT_SENT, X);
        // A signal handled before this call does not interrupt it.
        signal_flag::take();
        let max = a.limits().max_msg_size as usize;
        let slen: usize = sparts.iter().map(|p| p.len()).sum();
        if slen > max {
            tracing::debug!(coid, slen, max, "msg_send: message too large");
            return Err(Errno::MSGSIZE);
        }
        let rcap = rparts.iter().map(|p| p.len()).sum::<usize>().min(max);
        loop {
            ts.result_kind.store(result_kind::NOT_SENT, X);
            let t = self.resolve(coid).inspect_err(|e| {
                tracing::debug!(coid, error = ?e, "msg_send: no live connection");
            })?;
            let c = a.chan(t.chan).ok_or(Errno::BADF)?;
            let w = ts.state.load(R);
            let mut gen = proto::gen_of(w);
            // A new connection gives the thread a new generation: rcvids name (thread, connection).
            if ts.conn.load(X) != t.conn || ts.conn_gen.load(X) != t.conn_gen {
                gen = gen.wrapping_add(1);
                ts.conn.store(t.conn, X);
                ts.conn_gen.store(t.conn_gen, X);
            }
            let mut off = 0;
            for p in sparts {
                off += a.buf_write(slot, Buf::Send, off, p);
            }
            ts.send_len.store(slen as u32, X);
            ts.reply_cap.store(rcap as u32, X);
            ts.reply_len.store(0, X);
            ts.result.store(0, X);
            ts.mi_flags.store(0, X);
            ts.coid.store(coid as u32, X);
            ts.chan.store(t.chan, X);
            ts.served_by.store(0, X);
            let key = queue_key(ts.priority.load(X), false);
            ts.key.store(key, X);
            let handed = {
                let _cg = self.lock_chan(c);
                // Re-check both under the lock: a detach or a destroy may have raced the lookup.
                let conn_live = a
                    .conn(t.conn)
                    .is_some_and(|cn| cn.state.load(R) == obj_word(t.conn_gen, obj_state::LIVE));
                if c.state.load(R) != obj_word(t.chan_gen, obj_state::LIVE) || !conn_live {
                    ts.state.store(proto::make(gen, st::IDLE), W);
                    return Err(Errno::BADF);
                }
                c.last_sender.store(slot + 1, X);
                // QNX: an immediate REPLY timeout never delivers the message: with a receiver
                // waiting the send fails before the copy; queued, it is dropped when a receiver
                // reaches it.
                let immediate = timeouts.reply.is_some_and(|d| d <= Instant::now());
                let receiver = if immediate {
                    None
                } else {
                    self.recv_stack_pop(c, false)
                };
                if immediate && self.has_message_receiver(c) {
                    ts.state.store(proto::make(gen, st::IDLE), W);
                    ts.result_kind.store(result_kind::ERR_NOT_RECEIVED, X);
                    return Err(Errno::TIMEDOUT);
                }
                match receiver {
                    Some(r) => {
                        let rt = a.thread(r).ok_or(Errno::BADF)?;
                        ts.state.store(proto::make(gen, st::RECV_COPY), W);
                        ts.served_by.store(r + 1, X);
                        rt.handoff.store(node_thread(slot), X);
                        // Under the lock: a receiver off the stack is never left RECEIVE-blocked
                        // by a live sender (see `repair_channel_locked`); the wake comes after.
                        hand_over(rt)
                    }
                    None if c.queue_limit.load(X) != 0
                        && c.q_len.load(X) >= c.queue_limit.load(X) =>
                    {
                        // The bounded send queue is full (a simulator extension): the request
                        // is not sent; the caller may try again.
                        ts.state.store(proto::make(gen, st::IDLE), W);
                        return Err(Errno::AGAIN);
                    }
                    None => {
                        let flag = if timeouts.send.is_some() || timeouts.reply.is_some() {
                            WAKE_ON_TAKE
                        } else {
                            0
                        } | if immediate {
                            IMMEDIATE_REPLY_TIMEOUT
                        } else {
                            0
                        };
                        ts.state.store(proto::make(gen, st::SEND_BLOCKED) | flag, W);
                        self.queue_insert(c, node_thread(slot), key);
                        None
                    }
                }
            };
            if let Some(rt) = handed {
                wake_slot(rt);
            }
            let peer = match ts.served_by.load(X) {
                0 => c
                    .last_receiver
                    .load(X)
                    .checked_sub(1)
                    .and_then(|r| a.thread(r)),
                r => a.thread(r - 1),
            };
            let budget = match self.wait_mode_of(c, mode) {
                WaitMode::Adaptive(b) => b,
                WaitMode::Blocking => Duration::ZERO,
            };
            let mut spin = Adaptive::new(ts, peer, budget);
            self.wait_reply(ts, slot, c, &mut spin, timeouts);
            let kind = ts.result_kind.load(X);
            let result = ts.result.load(X) as i32;
            let rlen = (ts.reply_len.load(X) as usize).min(rcap);
            let mut roff = 0;
            for p in rparts.iter_mut() {
                if roff >= rlen {
                    break;
                }
                let want = p.len().min(rlen - roff);
                roff += a.buf_read(slot, Buf::Reply, roff, rlen, &mut p[..want]);
            }
            // The generation of the REPLIED word: a forced completion may have moved it on.
            let gen = proto::gen_of(ts.state.load(R));
            ts.state.store(proto::make(gen, st::IDLE), W);
            if ts.mi_flags.load(X) & MI_LINK_HELD != 0 {
                // Our coid was detached while we waited: drop the link we kept.
                let _g = self.lock_struct();
                ts.mi_flags.store(0, X);
                self.unlink_conn_locked(ts.conn.load(X), ts.conn_gen.load(X));
            }
            if kind == result_kind::STATUS {
                return Ok(result);
            }
            match Errno::from_raw(result) {
                Errno::OK => return Ok(0),
                Errno::RESTART => continue,
                e => {
                    tracing::debug!(coid, errno = ?e, "msg_send failed");
                    return Err(e);
                }
            }
        }
    }

    /// Waits until the slot is REPLIED, applying the SEND and REPLY timeouts: a SEND-blocked
    /// client that times out leaves the queue (the server never sees it); a REPLY-blocked one is
    /// failed with `ETIMEDOUT`, unless the channel has `_NTO_CHF_UNBLOCK`: then the server gets an
    /// UNBLOCK pulse and the client waits for its answer, as in QNX.
    fn wait_reply(
        &self,
        ts: &ThreadSlot,
        slot: u32,
        c: &Channel,
        spin: &mut Adaptive<'_>,
        mut t: Timeouts,
    ) {
        loop {
            let w = ts.state.load(R);
            let (deadline, sending) = match proto::state_of(w) {
                st::REPLIED => return,
                st::SEND_BLOCKED => (t.send, true),
                _ => (t.reply, false),
            };
            // Leaving the queue matters only to a client with a deadline (the REPLY deadline
            // takes over): it queues with WAKE_ON_TAKE, and receivers wake only those.
            let done = |x: u32| {
                let s = proto::state_of(x);
                s == st::REPLIED || (sending && s != st::SEND_BLOCKED)
            };
            let end = match proto::wait_for_interruptible(
                &ts.state,
                &OsFutex,
                done,
                spin,
                deadline,
                signal_flag::take,
            ) {
                Ok(_) => continue,
                Err(proto::WaitEnd::TimedOut) => Errno::TIMEDOUT,
                Err(proto::WaitEnd::Interrupted) => Errno::INTR,
            };
            // SEND-blocked: withdraw the request at once. If a receiver took it meanwhile (or
            // while REPLY-blocked), the REPLY rules apply: released at once, or, on an UNBLOCK
            // channel, an UNBLOCK pulse and the wait goes on.
            if sending && self.fail_queued(ts, slot, c, end) {
                continue;
            }
            if sending && end == Errno::TIMEDOUT {
                // The REPLY deadline takes over.
                t.send = None;
                continue;
            }
            self.unblock_or_fail(ts, slot, c, end);
            if end == Errno::TIMEDOUT {
                t.reply = None;
            }
        }
    }

    /// Takes a SEND-blocked client off the queue and fails it with `err` (nobody received it).
    /// Returns false if a receiver took it first.
    fn fail_queued(&self, ts: &ThreadSlot, slot: u32, c: &Channel, err: Errno) -> bool {
        let removed = {
            let _cg = self.lock_chan(c);
            self.queue_remove(c, node_thread(slot))
        };
        if removed {
            let g = proto::gen_of(ts.state.load(R));
            ts.result_kind.store(result_kind::ERR_NOT_RECEIVED, X);
            ts.result.store(err.raw() as u32, X);
            ts.reply_len.store(0, X);
            let _ = proto::transition(&ts.state, &OsFutex, g, st::SEND_BLOCKED, st::REPLIED);
        }
        removed
    }

    /// How the calling thread's last send ended ([`result_kind`]).
    pub fn last_send_kind(&self, slot: u32) -> u32 {
        self.a
            .thread(slot)
            .map_or(result_kind::NOT_SENT, |t| t.result_kind.load(X))
    }

    /// `MsgReceivev(chid, iov, info)` (and `MsgReceivePulsev` with `pulse_only`): the server side.
    pub fn msg_receive(
        &self,
        slot: u32,
        chid: i32,
        parts: &mut [&mut [u8]],
        pulse_only: bool,
        mode: WaitMode,
        deadline: Option<Instant>,
    ) -> Result<Received, Errno> {
        let a = self.a;
        let (cidx, cgen, c) = self.own_chan(chid).ok_or_else(|| {
            tracing::debug!(chid, "msg_receive: no such channel");
            Errno::SRCH
        })?;
        let rt = a.thread(slot).ok_or(Errno::AGAIN)?;
        let my_gen = proto::gen_of(rt.state.load(R));
        signal_flag::take();
        enum Got {
            /// A client's slot and the generation it was taken at.
            Thread(u32, u16),
            Pulse([u32; 4]),
        }
        let got = {
            let cg = self.lock_chan(c);
            if c.state.load(R) != obj_word(cgen, obj_state::LIVE) {
                return Err(Errno::SRCH);
            }
            c.last_receiver.store(slot + 1, X);
            let mut node = self.queue_take(c, |n| !pulse_only || n & 0x8000_0000 != 0);
            // Senders with an immediate REPLY timeout are dropped (ETIMEDOUT) when reached.
            let mut guard = 0;
            while let Some(n) = node.filter(|&n| n & 0x8000_0000 == 0) {
                let Some(ts) = a.thread(n - 1) else { break };
                let w = ts.state.load(R);
                if w & IMMEDIATE_REPLY_TIMEOUT == 0 || guard > a.limits().thread_slots() {
                    break;
                }
                guard += 1;
                ts.result_kind.store(result_kind::ERR_NOT_RECEIVED, X);
                ts.result.store(Errno::TIMEDOUT.raw() as u32, X);
                let _ = proto::transition(
                    &ts.state,
                    &OsFutex,
                    proto::gen_of(w),
                    st::SEND_BLOCKED,
                    st::REPLIED,
                );
                node = self.queue_take(c, |n| !pulse_only || n & 0x8000_0000 != 0);
            }
            match node {
                Some(n) if n & 0x8000_0000 != 0 => {
                    let p = a.pulse(n & 0x7FFF_FFFF).ok_or(Errno::SRCH)?;
                    let d = [
                        p.data[0].load(X),
                        p.data[1].load(X),
                        p.data[2].load(X),
                        p.data[3].load(X),
                    ];
                    self.pulse_free(p);
                    Some(Got::Pulse(d))
                }
                Some(n) => {
                    let s = n - 1;
                    let ts = a.thread(s).ok_or(Errno::SRCH)?;
                    let w = ts.state.load(R);
                    let taken = if w & WAKE_ON_TAKE != 0 {
                        proto::transition(
                            &ts.state,
                            &OsFutex,
                            proto::gen_of(w),
                            st::SEND_BLOCKED,
                            st::RECV_COPY,
                        )
                    } else {
                        proto::transition_quiet(
                            &ts.state,
                            proto::gen_of(w),
                            st::SEND_BLOCKED,
                            st::RECV_COPY,
                        )
                    };
                    if taken.is_err() {
                        // Not a sender in the state the queue implies: a corrupted queue. Drop it.
                        tracing::warn!(slot = s, "queued thread slot was not SEND-blocked");
                        return Err(Errno::INTR);
                    }
                    ts.served_by.store(slot + 1, X);
                    Some(Got::Thread(s, proto::gen_of(w)))
                }
                None => {
                    rt.recv_next.store(c.recv_top.load(X), X);
                    rt.recv_chan.store(cidx, X);
                    rt.recv_pulse_only.store(pulse_only as u32, X);
                    rt.handoff.store(0, X);
                    rt.state.store(proto::make(my_gen, st::RECV_WAIT), W);
                    c.recv_top.store(slot + 1, X);
                    drop(cg);
                    None
                }
            }
        };
        let got = match got {
            Some(g) => g,
            None => {
                let peer = c
                    .last_sender
                    .load(X)
                    .checked_sub(1)
                    .and_then(|s| a.thread(s));
                let budget = match self.wait_mode_of(c, mode) {
                    WaitMode::Adaptive(b) => b,
                    WaitMode::Blocking => Duration::ZERO,
                };
                let mut spin = Adaptive::new(rt, peer, budget);
                let handed = |x| proto::state_of(x) == st::RECV_HANDED;
                let waited = proto::wait_for_interruptible(
                    &rt.state,
                    &OsFutex,
                    handed,
                    &mut spin,
                    deadline,
                    signal_flag::take,
                );
                if let Err(end) = waited {
                    // Timed out or interrupted, unless a sender popped us from the stack
                    // meanwhile: then it has handed us something, which must not be lost.
                    let left = {
                        let _cg = self.lock_chan(c);
                        self.recv_stack_remove(c, slot)
                    };
                    if left {
                        rt.state.store(proto::make(my_gen, st::IDLE), W);
                        return Err(if end == proto::WaitEnd::Interrupted {
                            Errno::INTR
                        } else {
                            Errno::TIMEDOUT
                        });
                    }
                    let _ = proto::wait_for(&rt.state, &OsFutex, handed, &mut proto::NoSpin, None);
                }
                let h = rt.handoff.load(X);
                rt.state.store(proto::make(my_gen, st::IDLE), W);
                match h {
                    HANDOFF_PULSE => Got::Pulse([
                        rt.pulse[0].load(X),
                        rt.pulse[1].load(X),
                        rt.pulse[2].load(X),
                        rt.pulse[3].load(X),
                    ]),
                    HANDOFF_CHAN_GONE => return Err(Errno::SRCH),
                    n if n >= 1 && n <= a.limits().thread_slots() => {
                        let g = a
                            .thread(n - 1)
                            .map_or(0, |t| proto::gen_of(t.state.load(R)));
                        Got::Thread(n - 1, g)
                    }
                    _ => {
                        tracing::warn!(handoff = h, "corrupted receiver hand-off");
                        return Err(Errno::INTR);
                    }
                }
            }
        };
        match got {
            Got::Pulse(d) => {
                let pulse = Pulse {
                    code: d[0] as u8 as i8,
                    value: d[1] as i32,
                    scoid: d[2] as i32,
                    priority: d[3] as u8,
                };
                // QNX: the first buffer must hold the whole `_pulse`.
                let room = parts.first().map_or(0, |p| p.len());
                if room < Pulse::WIRE_SIZE {
                    return Err(Errno::FAULT);
                }
                let bytes = pulse.to_bytes();
                let mut off = 0;
                for p in parts.iter_mut() {
                    let n = p.len().min(bytes.len() - off);
                    p[..n].copy_from_slice(&bytes[off..off + n]);
                    off += n;
                    if off == bytes.len() {
                        break;
                    }
                }
                Ok(Received::Pulse(pulse))
            }
            Got::Thread(s, gen) => {
                let ts = a.thread(s).ok_or(Errno::SRCH)?;
                let slen = (ts.send_len.load(X) as usize).min(a.limits().max_msg_size as usize);
                let mut off = 0;
                for p in parts.iter_mut() {
                    if off >= slen {
                        break;
                    }
                    off += a.buf_read(s, Buf::Send, off, slen, p);
                }
                let mut info = self.info_of(s, ts);
                info.msglen = off as u32;
                let _ = proto::transition_quiet(&ts.state, gen, st::RECV_COPY, st::REPLY_BLOCKED);
                Ok(Received::Message {
                    rcvid: rcvid_pack(s, gen),
                    info,
                })
            }
        }
    }

    fn info_of(&self, s: u32, ts: &ThreadSlot) -> MsgInfo {
        let a = self.a;
        let t = a.limits().threads_per_process;
        let cn = a.conn(ts.conn.load(X));
        let client = cn.map_or(u32::MAX, |c| c.client.load(X));
        MsgInfo {
            nd: 0,
            srcnd: 0,
            pid: a.proc(client).map_or(0, |p| p.pid.load(X) as i32),
            tid: (s % t + 1) as i32,
            chid: a.chan(ts.chan.load(X)).map_or(0, |c| c.chid.load(X) as i32),
            scoid: cn.map_or(0, |c| SIDE_CHANNEL | c.scoid.load(X) as i32),
            coid: ts.coid.load(X) as i32,
            msglen: 0,
            srcmsglen: ts.send_len.load(X),
            dstmsglen: ts.reply_cap.load(X),
            priority: ts.priority.load(X) as u8,
            flags: ts.mi_flags.load(X) & mi::UNBLOCK_REQ,
        }
    }

    /// Pins the client slot named by `rcvid` (REPLY_BLOCKED → REPLY_BUSY), checking that it is
    /// blocked on one of the caller's channels. `ESRCH` otherwise.
    fn pin(&self, rcvid: i32) -> Result<(u32, u16, &'a ThreadSlot), Errno> {
        let a = self.a;
        let bad = || {
            tracing::debug!(rcvid, "no client is REPLY-blocked on this rcvid");
            Errno::SRCH
        };
        let (s, gen) = rcvid_unpack(rcvid).ok_or_else(bad)?;
        let ts = a.thread(s).ok_or_else(bad)?;
        loop {
            match proto::transition(&ts.state, &OsFutex, gen, st::REPLY_BLOCKED, st::REPLY_BUSY) {
                Ok(()) => break,
                Err(w) if proto::gen_of(w) == gen && proto::state_of(w) == st::REPLY_BUSY => {
                    // Another of our threads is using this rcvid; wait for it (a bounded time:
                    // a slot busy for that long was left so by a dead or misbehaving process).
                    proto::wait_for(
                        &ts.state,
                        &OsFutex,
                        |x| proto::state_of(x) != st::REPLY_BUSY || proto::gen_of(x) != gen,
                        &mut proto::NoSpin,
                        Some(Instant::now() + self.tuning.lock_poll * 100),
                    )
                    .map_err(|_| bad())?;
                }
                Err(_) => return Err(bad()),
            }
        }
        let owner_ok = a.chan(ts.chan.load(X)).is_some_and(|c| {
            obj_st(c.state.load(R)) == obj_state::LIVE && c.owner.load(X) == self.me
        });
        if !owner_ok || ts.alloc.load(R) == 0 {
            let _ = proto::transition(&ts.state, &OsFutex, gen, st::REPLY_BUSY, st::REPLY_BLOCKED);
            return Err(bad());
        }
        Ok((s, gen, ts))
    }

    /// Takes back a queued UNBLOCK pulse for `rcvid` (the server answered first).
    fn withdraw_unblock(&self, ts: &ThreadSlot, rcvid: i32) {
        if ts.mi_flags.load(X) & mi::UNBLOCK_REQ == 0 {
            return;
        }
        let Some(c) = self.a.chan(ts.chan.load(X)) else {
            return;
        };
        let _cg = self.lock_chan(c);
        let taken = self.queue_take(c, |n| {
            n & 0x8000_0000 != 0
                && self.a.pulse(n & 0x7FFF_FFFF).is_some_and(|p| {
                    p.data[0].load(X) as u8 as i8 == pulse_code::UNBLOCK
                        && p.data[1].load(X) as i32 == rcvid
                })
        });
        if let Some(p) = taken.and_then(|n| self.a.pulse(n & 0x7FFF_FFFF)) {
            self.pulse_free(p);
        }
    }

    /// `MsgReplyv(rcvid, status, iov)`.
    pub fn msg_reply(&self, rcvid: i32, status: i32, parts: &[&[u8]]) -> Result<(), Errno> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.a.limits().max_msg_size as usize {
            return Err(Errno::MSGSIZE);
        }
        let (s, gen, ts) = self.pin(rcvid)?;
        self.withdraw_unblock(ts, rcvid);
        let cap = ts.reply_cap.load(X) as usize;
        let mut off = 0;
        for p in parts {
            if off >= cap {
                break;
            }
            let n = p.len().min(cap - off);
            off += self.a.buf_write(s, Buf::Reply, off, &p[..n]);
        }
        ts.reply_len
            .store((ts.reply_len.load(X) as usize).max(off) as u32, X);
        ts.result.store(status as u32, X);
        ts.result_kind.store(result_kind::STATUS, X);
        complete(ts, gen);
        self.finish_orphan(ts, false);
        Ok(())
    }

    /// `MsgError(rcvid, err)`.
    pub fn msg_error(&self, rcvid: i32, err: Errno) -> Result<(), Errno> {
        let (_, gen, ts) = self.pin(rcvid)?;
        self.withdraw_unblock(ts, rcvid);
        ts.result.store(err.raw() as u32, X);
        ts.result_kind.store(result_kind::ERR_RECEIVED, X);
        complete(ts, gen);
        self.finish_orphan(ts, false);
        Ok(())
    }

    /// `MsgRead(rcvid, msg, bytes, offset)`.
    pub fn msg_read(&self, rcvid: i32, offset: usize, buf: &mut [u8]) -> Result<usize, Errno> {
        let (s, gen, ts) = self.pin(rcvid)?;
        let n = self
            .a
            .buf_read(s, Buf::Send, offset, ts.send_len.load(X) as usize, buf);
        let _ = proto::transition(&ts.state, &OsFutex, gen, st::REPLY_BUSY, st::REPLY_BLOCKED);
        Ok(n)
    }

    /// `MsgWrite(rcvid, msg, bytes, offset)`.
    pub fn msg_write(&self, rcvid: i32, offset: usize, data: &[u8]) -> Result<usize, Errno> {
        let (s, gen, ts) = self.pin(rcvid)?;
        let cap = ts.reply_cap.load(X) as usize;
        let n = if offset >= cap {
            0
        } else {
            self.a
                .buf_write(s, Buf::Reply, offset, &data[..data.len().min(cap - offset)])
        };
        if n > 0 {
            ts.reply_len
                .store((ts.reply_len.load(X) as usize).max(offset + n) as u32, X);
        }
        let _ = proto::transition(&ts.state, &OsFutex, gen, st::REPLY_BUSY, st::REPLY_BLOCKED);
        Ok(n)
    }

    /// `MsgInfo(rcvid, info)`.
    pub fn msg_info(&self, rcvid: i32) -> Result<MsgInfo, Errno> {
        let (s, gen, ts) = self.pin(rcvid)?;
        let mut info = self.info_of(s, ts);
        info.msglen = info.srcmsglen;
        let _ = proto::transition(&ts.state, &OsFutex, gen, st::REPLY_BUSY, st::REPLY_BLOCKED);
        Ok(info)
    }

    /// (queued messages and pulses, waiting receivers) of one of the caller's channels.
    pub fn channel_stats(&self, pid: i32, chid: i32) -> Result<(u32, u32), Errno> {
        let owner = self.pid_to_proc(pid).map_err(|_| Errno::INVAL)?;
        if chid <= 0 || chid & SIDE_CHANNEL != 0 {
            return Err(Errno::INVAL);
        }
        let e = Entry::decode(
            self.a
                .pool_entry(owner, chid as u32)
                .ok_or(Errno::INVAL)?
                .load(R),
        );
        let c = self.a.chan(e.idx).ok_or(Errno::INVAL)?;
        if e.kind != entry_kind::CHID || c.state.load(R) != obj_word(e.gen, obj_state::LIVE) {
            return Err(Errno::INVAL);
        }
        let _cg = self.lock_chan(c);
        let mut receivers = 0;
        let mut r = c.recv_top.load(X);
        while r != 0 && receivers <= self.a.limits().thread_slots() {
            receivers += 1;
            r = self.a.thread(r - 1).map_or(0, |t| t.recv_next.load(X));
        }
        Ok((c.q_len.load(X), receivers))
    }

    /// Bounds the send queue of the caller's channel `chid` to `limit` entries (0: no bound).
    pub fn channel_queue_limit(&self, chid: i32, limit: u32) -> Result<(), Errno> {
        let (_, _, c) = self.own_chan(chid).ok_or(Errno::INVAL)?;
        c.queue_limit.store(limit, X);
        Ok(())
    }

    /// The caller's death channel chid (0 if none).
    pub fn death_chid(&self) -> u32 {
        self.a.proc(self.me).map_or(0, |p| p.death_chid.load(X))
    }
}
