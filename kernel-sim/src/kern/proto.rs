//! The slot protocol and the arena lock, generic over the word they work on ([`Word`]) and over
//! how a thread sleeps ([`Wait`]), so the same code runs on arena atomics with shared futexes and
//! on loom's atomics in the models (`kern::loom_send_reply`).
//!
//! A thread slot's protocol word holds `generation << 16 | WAITERS | state`:
//!
//! ```text
//!  client:   IDLE ─queue─▶ SEND_BLOCKED ─receiver takes─▶ RECV_COPY ─copied─▶ REPLY_BLOCKED
//!            IDLE ─receiver waiting─▶ RECV_COPY (handed over directly)
//!  server:   REPLY_BLOCKED ─pin─▶ REPLY_BUSY ─(msg_read/msg_write)─▶ REPLY_BLOCKED
//!                                 REPLY_BUSY ─(msg_reply/msg_error)─▶ REPLIED ─client─▶ IDLE
//!  receiver: IDLE ─wait on channel─▶ RECV_WAIT ─sender hands over─▶ RECV_HANDED ─▶ IDLE
//! ```
//!
//! Who may move the word: the owner thread moves IDLE↔SEND_BLOCKED/RECV_WAIT and consumes
//! REPLIED/RECV_HANDED; a receiver moves SEND_BLOCKED→RECV_COPY (under the channel lock) and
//! RECV_COPY→REPLY_BLOCKED; a replier pins REPLY_BLOCKED→REPLY_BUSY with a CAS that also checks the
//! generation, so only one server thread touches the client's buffers at a time and a stale rcvid
//! (another generation) can never pin the slot. `WAITERS` is set by a thread about to sleep on the
//! word; whoever clears it wakes the sleepers.

use crate::sync::atomic::Ordering;
use crate::sync::{spin_hint, Wait, Woken, Word};
use std::time::{Duration, Instant};

/// Slot states (low 4 bits of the protocol word).
pub mod st {
    /// Not in a kernel call.
    pub const IDLE: u32 = 0;
    /// Queued on a channel, waiting for a receiver.
    pub const SEND_BLOCKED: u32 = 1;
    /// A receiver is copying the request out.
    pub const RECV_COPY: u32 = 2;
    /// The server has the request; waiting for the reply.
    pub const REPLY_BLOCKED: u32 = 3;
    /// A server thread is reading or writing the client's buffers.
    pub const REPLY_BUSY: u32 = 4;
    /// The reply (or error) is in the slot; the client has not consumed it yet.
    pub const REPLIED: u32 = 5;
    /// Waiting on a channel for a message or pulse.
    pub const RECV_WAIT: u32 = 6;
    /// A sender handed this waiting receiver a message, a pulse or an error.
    pub const RECV_HANDED: u32 = 7;
}

/// Set in the word by a thread that sleeps (or is about to sleep) on it.
pub const WAITERS: u32 = 0x10;
const STATE_MASK: u32 = 0xF;
const GEN_SHIFT: u32 = 16;

/// The state part of a protocol word.
#[inline]
pub fn state_of(w: u32) -> u32 {
    w & STATE_MASK
}

/// The generation part of a protocol word.
#[inline]
pub fn gen_of(w: u32) -> u16 {
    (w >> GEN_SHIFT) as u16
}

/// A protocol word with no waiters.
#[inline]
pub fn make(gen: u16, state: u32) -> u32 {
    ((gen as u32) << GEN_SHIFT) | (state & STATE_MASK)
}

/// Moves the word from `from` to `to` if it holds generation `gen` and state `from` (whatever the
/// waiters bit), clears the waiters bit and wakes the sleepers. Returns the word it found on
/// failure.
pub fn transition<W: Word, F: Wait<W>>(
    word: &W,
    futex: &F,
    gen: u16,
    from: u32,
    to: u32,
) -> Result<(), u32> {
    if transition_deferred(word, gen, from, to)? {
        futex.wake(word, u32::MAX);
    }
    Ok(())
}

/// [`transition`] without the wake: returns whether sleepers must be woken (call
/// `futex.wake(word, u32::MAX)` then), so the move can be made under a lock and the (slow) wake
/// after it is released.
pub fn transition_deferred<W: Word>(word: &W, gen: u16, from: u32, to: u32) -> Result<bool, u32> {
    let new = make(gen, to);
    let mut cur = word.load(Ordering::Acquire);
    loop {
        if state_of(cur) != from || gen_of(cur) != gen {
            return Err(cur);
        }
        match word.cas(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(cur & WAITERS != 0),
            Err(actual) => cur = actual,
        }
    }
}

/// Moves the word from `from` to `to` like [`transition`] but keeps the waiters bit and wakes
/// nobody: for intermediate states a sleeper is not waiting for (a queued client taken by a
/// receiver still waits for its reply), so it is not woken for nothing; the move that ends its
/// wait sees the bit and wakes it.
pub fn transition_quiet<W: Word>(word: &W, gen: u16, from: u32, to: u32) -> Result<(), u32> {
    let mut cur = word.load(Ordering::Acquire);
    loop {
        if state_of(cur) != from || gen_of(cur) != gen {
            return Err(cur);
        }
        match word.cas(
            cur,
            make(gen, to) | (cur & WAITERS),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(()),
            Err(actual) => cur = actual,
        }
    }
}

/// Sets the word to `gen`/`to` unconditionally (the owner's own moves and forced moves), waking
/// sleepers if the waiters bit was set. Returns the previous word.
pub fn force<W: Word, F: Wait<W>>(word: &W, futex: &F, gen: u16, to: u32) -> u32 {
    let prev = word.swap(make(gen, to), Ordering::AcqRel);
    if prev & WAITERS != 0 {
        futex.wake(word, u32::MAX);
    }
    prev
}

/// Decides whether a waiter keeps spinning before it sleeps.
pub trait SpinPolicy {
    /// Called on every round; `true` to spin once more, `false` to sleep.
    fn keep_spinning(&mut self) -> bool;
    /// Called just before the waiter sleeps (to publish "not running").
    fn before_sleep(&mut self) {}
    /// Called when the waiter wakes from a sleep (to publish "running again").
    fn after_wake(&mut self) {}
}

/// Never spin: sleep at once (the blocking mode; also used in models).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSpin;

impl SpinPolicy for NoSpin {
    fn keep_spinning(&mut self) -> bool {
        false
    }
}

/// Why [`wait_for`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

/// Why [`wait_for_interruptible`] gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// The deadline passed.
    TimedOut,
    /// A signal arrived (`interrupted()` said so, or the futex sleep was interrupted).
    Interrupted,
}

/// Waits until `done(word)` holds: spins while `spin` says so, then sleeps with the waiters bit
/// set. Returns the word that satisfied `done`, or `TimedOut` at `deadline` (the word was checked
/// once more after the timeout). Signals do not end this wait.
pub fn wait_for<W: Word, F: Wait<W>, S: SpinPolicy>(
    word: &W,
    futex: &F,
    done: impl Fn(u32) -> bool,
    spin: &mut S,
    deadline: Option<Instant>,
) -> Result<u32, TimedOut> {
    loop {
        match wait_for_interruptible(word, futex, &done, spin, deadline, || false) {
            Ok(w) => return Ok(w),
            Err(WaitEnd::TimedOut) => return Err(TimedOut),
            Err(WaitEnd::Interrupted) => continue,
        }
    }
}

/// [`wait_for`] that also ends when a signal arrives: `interrupted()` is asked on every round
/// (it reports a signal handled while spinning), and a futex sleep a signal handler cut short
/// ends it too. The word is checked once more first: a wait that is done is never interrupted.
pub fn wait_for_interruptible<W: Word, F: Wait<W>, S: SpinPolicy>(
    word: &W,
    futex: &F,
    done: impl Fn(u32) -> bool,
    spin: &mut S,
    deadline: Option<Instant>,
    interrupted: impl Fn() -> bool,
) -> Result<u32, WaitEnd> {
    loop {
        let cur = word.load(Ordering::Acquire);
        if done(cur) {
            return Ok(cur);
        }
        if interrupted() {
            return Err(WaitEnd::Interrupted);
        }
        if spin.keep_spinning() {
            spin_hint();
            continue;
        }
        if cur & WAITERS == 0
            && word
                .cas(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            continue;
        }
        let timeout = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    let last = word.load(Ordering::Acquire);
                    return if done(last) {
                        Ok(last)
                    } else {
                        Err(WaitEnd::TimedOut)
                    };
                }
                Some(d - now)
            }
        };
        spin.before_sleep();
        let woken = futex.wait(word, cur | WAITERS, timeout);
        spin.after_wake();
        if woken == Woken::Interrupted {
            let last = word.load(Ordering::Acquire);
            return if done(last) {
                Ok(last)
            } else {
                Err(WaitEnd::Interrupted)
            };
        }
    }
}

/// The waiters bit of a lock word (the owner tag never uses bit 31).
pub const LOCK_WAITERS: u32 = 0x8000_0000;

/// How a lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locked {
    /// From a live owner (or free).
    Clean,
    /// Broken from a dead owner, whose tag is given: the caller must repair what it guarded.
    FromDead(u32),
}

/// Takes the lock in `word` for owner tag `me` (non-zero, bit 31 clear). `owner_dead(tag)` is asked
/// about the holder every `poll` of waiting; a dead holder's lock is broken and reported.
pub fn lock<W: Word, F: Wait<W>>(
    word: &W,
    futex: &F,
    me: u32,
    poll: Duration,
    owner_dead: impl Fn(u32) -> bool,
) -> Locked {
    debug_assert!(me != 0 && me & LOCK_WAITERS == 0);
    if word
        .cas(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        return Locked::Clean;
    }
    for _ in 0..64 {
        spin_hint();
        if word.load(Ordering::Relaxed) == 0
            && word
                .cas(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Locked::Clean;
        }
    }
    // Contended: from now on take it as "locked with waiters", so our unlock wakes the next one.
    // The holder's liveness is asked (which may cost a system call) only after a wait of `poll`
    // passed without a wake-up: a live holder releases a lock within microseconds.
    let mut suspicious = false;
    loop {
        let cur = word.load(Ordering::Relaxed);
        if cur == 0 {
            if word
                .cas(0, me | LOCK_WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Locked::Clean;
            }
            continue;
        }
        let holder = cur & !LOCK_WAITERS;
        if suspicious && owner_dead(holder) {
            if word
                .cas(cur, me | LOCK_WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Locked::FromDead(holder);
            }
            continue;
        }
        if cur & LOCK_WAITERS == 0
            && word
                .cas(
                    cur,
                    cur | LOCK_WAITERS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            continue;
        }
        suspicious = futex.wait(word, cur | LOCK_WAITERS, Some(poll)) == Woken::TimedOut;
    }
}

/// Releases a lock taken by [`lock`], waking one waiter if any.
pub fn unlock<W: Word, F: Wait<W>>(word: &W, futex: &F) {
    if word.swap(0, Ordering::Release) & LOCK_WAITERS != 0 {
        futex.wake(word, 1);
    }
}
