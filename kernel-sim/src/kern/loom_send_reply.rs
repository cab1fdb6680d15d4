//! Loom models of the slot protocol ([`proto`]) and the robust lock, at the level of the words
//! `ops.rs` moves: each model replays what `msg_send`, `msg_receive`, `pin`, `msg_reply`,
//! `msg_error`, `msg_read`, `fail_reply_blocked` and the timeouts do to the protocol words. The
//! message buffers are loom [`UnsafeCell`]s, so loom fails a model on any access to message bytes
//! that the protocol does not order (a data race); the side fields (`result`, `result_kind`,
//! `handoff`) are relaxed atomics, as in production, so only the state-word transitions can order
//! them, and a wrong value read through a missing edge fails an assertion. The channel's links are
//! reduced to one queued sender and one waiting receiver, in an `UnsafeCell` that only the channel
//! lock (`proto::lock`/`unlock`) may order.
//!
//! Run with (about 20 s on 2 cores):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p kernel-sim --lib --release loom
//! ```
//!
//! Two futexes. `YieldWait` (the facade's) turns every wait into a yield: data races and outcomes
//! are checked with it, but it cannot see a lost wake-up, and loom does not bound a schedule in
//! which two yielding waiters keep handing the CPU to each other (switching away from a yielding
//! thread is no preemption), so `YieldWait` models have at most one waiter at a time: where a
//! second one would wait, the client first joins the thread whose completion leaves its slot
//! REPLIED. [`StrictFutex`] sleeps for real until woken (value check and sleep atomic with respect
//! to `wake`, as the kernel's futex bucket lock makes them), so a transition that fails to wake a
//! sleeper that set `WAITERS` is a loom deadlock; its mutex adds ordering a real futex does not
//! promise, so it is for liveness. The `*_strict_futex` variants run the same models with it and
//! with every waiter concurrent.
//!
//! What each model proves, for every interleaving loom explores:
//!
//! 1. `send_receive_reply`: a client (send, wait for REPLIED) and a server (receive, copy out,
//!    RECV_COPY→REPLY_BLOCKED, pin REPLY_BLOCKED→REPLY_BUSY, write the reply, →REPLIED) meet
//!    through the channel lock in both orders, which the test asserts were both explored: receiver
//!    first (the sender pops it, goes RECV_COPY itself and hands over RECV_WAIT→RECV_HANDED) and
//!    sender first (queued SEND_BLOCKED, taken SEND_BLOCKED→RECV_COPY under the lock). The server
//!    reads exactly the request, the client exactly the reply and status, and the client may reuse
//!    its send buffer as soon as it sees REPLIED.
//! 2. `two_repliers_one_wins`, `reply_races_error`: two server threads `msg_reply` (or one
//!    `msg_reply` and one `msg_error`) to the same rcvid: exactly one succeeds, the other gets the
//!    "not REPLY_BLOCKED" failure (`ESRCH`), the client gets exactly the winner's reply or error,
//!    and the pin keeps the two writers of the reply buffer apart (no race). `msg_read_races_reply`:
//!    a `msg_read` and a `msg_reply` on one rcvid serialise through the pin (the later waits in
//!    `pin` while REPLY_BUSY); the reply always lands; a `msg_read` after it fails and never
//!    touches the send buffer the client is reusing. `fail_reply_blocked_races_reply`: channel
//!    teardown fails a client that a receiver is still copying from (RECV_COPY): it waits for the
//!    copy, then exactly one of {the reply, the teardown error} reaches the client.
//! 3. `client_gives_up_vs_reply`: a REPLY-blocked client gives up (REPLY_BLOCKED→IDLE with
//!    `transition`) while the server replies: exactly one of {the client got the reply, the client
//!    gave up and the server's pin failed}, both seen; after a give-up the server never touches the
//!    client's buffers, which the client reuses; a pinned server (REPLY_BUSY) makes the give-up
//!    fail and the client then waits for the reply. `client_gives_up_vs_read_then_reply`: the
//!    server does `msg_read` then `msg_reply` and the client retries its give-up once a `msg_read`
//!    unpins: exactly the outcomes {gave up before the read}, {between read and reply},
//!    {got the reply}, all seen. `client_reply_timeout_vs_reply`: the REPLY timeout as `ops.rs`
//!    now does it, the client failing itself with `fail_reply_blocked(ETIMEDOUT)`
//!    (REPLY_BLOCKED→REPLY_BUSY→REPLIED): exactly one of {reply, ETIMEDOUT}.
//!    `send_timeout_vs_receive`: a queued client's SEND timeout (`fail_queued`: off the queue under
//!    the lock, SEND_BLOCKED→REPLIED "not received") races a receiver taking it: exactly one wins,
//!    and a timed-out client's buffers are never read. `receive_timeout_vs_send`: a waiting
//!    receiver times out while a sender pops it: it leaves only if still on the stack, else waits
//!    for the hand-off, so a message is never lost nor invented.
//! 4. `stale_generation_cannot_pin`: a server holding an rcvid of generation g cannot pin the slot
//!    once the client has given up and sent again through another connection (generation g+1),
//!    though the slot is REPLY_BLOCKED again: the client's give-up at g+1 always succeeds and its
//!    buffers are never touched by the stale server.
//! 5. `lock_counter`: two threads increment a counter under `proto::lock`/`unlock` (mutual
//!    exclusion, and unlock→lock orders the counter). `lock_broken_from_dead_owner`: an owner takes
//!    the lock and dies holding it; the other thread, whose `owner_dead` reads the `dead` flag,
//!    breaks it, gets `Locked::FromDead(owner_tag)` and sees what the owner wrote; or it locked
//!    first (`Clean`) and the owner gets the lock after it; both outcomes seen.
//!    `lock_two_breakers_one_wins`: two threads find the lock held by a dead owner: exactly one
//!    gets `FromDead`, the other `Clean` after it. `lock_three_threads_no_lost_wakeup`: three
//!    contenders with a futex on which even the lock's polling waits sleep until woken: the
//!    `LOCK_WAITERS` bit and `unlock`'s single wake-up never strand a waiter.
//!
//! Not modelled: real deadlines (a timeout is modelled as firing at an arbitrary point, and the
//! bounded waits `ops.rs` puts on copy states are modelled unbounded), adaptive spinning (`NoSpin`
//! everywhere), pulses and UNBLOCK pulses, and queues or stacks longer than one entry.
// The message buffers are loom `UnsafeCell`s; reading and writing them needs raw-pointer derefs.
#![allow(unsafe_code)]

use super::proto::{self, st, Locked, NoSpin};
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::cell::UnsafeCell;
use crate::sync::{Wait, Woken, Word, YieldWait};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::AtomicBool as SeenFlag;
use std::time::Duration;

const R: Ordering = Ordering::Acquire;
const W: Ordering = Ordering::Release;
const X: Ordering = Ordering::Relaxed;

/// Lock polling period (only passed on to the `Wait`, which ignores it in models).
const POLL: Duration = Duration::from_millis(1);
/// The "not REPLY_BLOCKED" failure of `pin` (`ESRCH`).
const ESRCH: u32 = 3;
/// The error `fail_reply_blocked` delivers in the teardown model (`EBADF`).
const EBADF: u32 = 9;
/// `ETIMEDOUT`.
const ETIMEDOUT: u32 = 110;
/// `ops::result_kind`: how a send ended.
mod kind {
    pub const STATUS: u32 = 0;
    pub const ERR_RECEIVED: u32 = 1;
    pub const ERR_NOT_RECEIVED: u32 = 2;
}
/// The client's generation in the models.
const G: u16 = 7;
/// The receiver's own generation.
const RG: u16 = 3;
/// Client and server thread slot indices (the hand-off holds `slot + 1`).
const CLIENT: u32 = 0;
const SERVER: u32 = 1;
/// Lock owner tags.
const TAG_CLIENT: u32 = 1;
const TAG_SERVER: u32 = 2;

const REQ: u32 = 0x5e4d;
const NEXT_REQ: u32 = 0x4e58;
const REPLY: u32 = 0xbeef;
const REPLY_B: u32 = 0xcafe;
const STATUS: u32 = 42;
const CLOBBER: u32 = 0xdead;

/// Writes a message buffer.
fn put(c: &UnsafeCell<u32>, v: u32) {
    // SAFETY: loom checks every access to the cell against the others before calling the closure
    // and fails the model on an unordered one, so this write never races.
    c.with_mut(|p| unsafe { *p = v })
}

/// Reads a message buffer.
fn get(c: &UnsafeCell<u32>) -> u32 {
    // SAFETY: as in `put`: loom rejects an unordered access before the read happens.
    c.with(|p| unsafe { *p })
}

/// A futex that really sleeps: an untimed wait blocks on a condition variable until a wake, with
/// the value check and the sleep atomic with respect to `wake` (as the kernel's hash-bucket lock
/// makes them), so a missing wake-up leaves the waiter blocked and loom reports a deadlock. Timed
/// waits (the lock's polling) yield and time out, as `YieldWait` does. The mutex adds ordering a
/// real futex does not promise, so data races are checked with `YieldWait`; this one is for
/// liveness.
struct StrictFutex {
    m: loom::sync::Mutex<()>,
    cv: loom::sync::Condvar,
}

impl Default for StrictFutex {
    fn default() -> Self {
        StrictFutex {
            m: loom::sync::Mutex::new(()),
            cv: loom::sync::Condvar::new(),
        }
    }
}

impl<Wd: Word> Wait<Wd> for StrictFutex {
    fn wait(&self, word: &Wd, expected: u32, timeout: Option<Duration>) -> Woken {
        if timeout.is_some() {
            return YieldWait.wait(word, expected, timeout);
        }
        let g = self.m.lock().unwrap();
        if word.load(X) == expected {
            drop(self.cv.wait(g).unwrap());
        }
        Woken::Recheck
    }
    fn wake(&self, _word: &Wd, n: u32) {
        let _g = self.m.lock().unwrap();
        if n == 1 {
            self.cv.notify_one();
        } else {
            self.cv.notify_all();
        }
    }
}

/// The futex kinds a model runs with.
trait Fx: Wait<AtomicU32> + Default + Send + Sync + 'static {}
impl<F: Wait<AtomicU32> + Default + Send + Sync + 'static> Fx for F {}

/// A thread slot: its protocol word (with the futex that goes with it), its two message buffers
/// and the relaxed side fields the state transitions publish.
struct Slot<F> {
    state: AtomicU32,
    fx: F,
    send: UnsafeCell<u32>,
    reply: UnsafeCell<u32>,
    result: AtomicU32,
    result_kind: AtomicU32,
    handoff: AtomicU32,
}

impl<F: Fx> Slot<F> {
    fn new(gen: u16, state: u32) -> Self {
        Slot {
            state: AtomicU32::new(proto::make(gen, state)),
            fx: F::default(),
            send: UnsafeCell::new(0),
            reply: UnsafeCell::new(0),
            result: AtomicU32::new(0),
            result_kind: AtomicU32::new(0),
            handoff: AtomicU32::new(0),
        }
    }

    /// A client slot that a receiver has taken the request `REQ` from (REPLY_BLOCKED at `G`).
    fn reply_blocked() -> Self {
        let s = Self::new(G, st::REPLY_BLOCKED);
        put(&s.send, REQ);
        s
    }
}

/// The channel: its robust lock and the links it guards (one sender queue entry and one receiver
/// stack entry, as `slot + 1`, 0 for none).
struct Chan<F> {
    lock: AtomicU32,
    fx: F,
    links: UnsafeCell<Links>,
}

#[derive(Default)]
struct Links {
    sender: u32,
    receiver: u32,
}

impl<F: Fx> Chan<F> {
    fn new() -> Self {
        Chan {
            lock: AtomicU32::new(0),
            fx: F::default(),
            links: UnsafeCell::new(Links::default()),
        }
    }

    /// Runs `f` on the links under the channel lock (`lock_chan` + the guard's drop).
    fn locked<T>(&self, tag: u32, f: impl FnOnce(&mut Links) -> T) -> T {
        assert_eq!(
            proto::lock(&self.lock, &self.fx, tag, POLL, |_| false),
            Locked::Clean
        );
        // SAFETY: loom checks the access (the lock must order it), as in `put`.
        let r = self.links.with_mut(|l| f(unsafe { &mut *l }));
        proto::unlock(&self.lock, &self.fx);
        r
    }
}

/// What the client found in its slot when it consumed the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Got {
    kind: u32,
    result: u32,
    reply: u32,
}

/// `msg_send`'s tail: waits for REPLIED, reads the result and the reply buffer, goes IDLE.
fn await_reply<F: Fx>(c: &Slot<F>, gen: u16) -> Got {
    let w = proto::wait_for(
        &c.state,
        &c.fx,
        |x| proto::state_of(x) == st::REPLIED,
        &mut NoSpin,
        None,
    )
    .expect("no deadline");
    assert_eq!(proto::gen_of(w), gen);
    let got = Got {
        kind: c.result_kind.load(X),
        result: c.result.load(X),
        reply: get(&c.reply),
    };
    c.state.store(proto::make(gen, st::IDLE), W);
    got
}

/// `pin`: REPLY_BLOCKED → REPLY_BUSY at `gen`, waiting while another server thread has the slot
/// pinned; `ESRCH` if the slot is in any other state or generation.
fn pin<F: Fx>(c: &Slot<F>, gen: u16) -> Result<(), u32> {
    loop {
        match proto::transition(&c.state, &c.fx, gen, st::REPLY_BLOCKED, st::REPLY_BUSY) {
            Ok(()) => return Ok(()),
            Err(w) if proto::gen_of(w) == gen && proto::state_of(w) == st::REPLY_BUSY => {
                let _ = proto::wait_for(
                    &c.state,
                    &c.fx,
                    |x| proto::state_of(x) != st::REPLY_BUSY || proto::gen_of(x) != gen,
                    &mut NoSpin,
                    None,
                );
            }
            Err(_) => return Err(ESRCH),
        }
    }
}

/// `msg_reply`.
fn msg_reply<F: Fx>(c: &Slot<F>, gen: u16, status: u32, reply: u32) -> Result<(), u32> {
    pin(c, gen)?;
    put(&c.reply, reply);
    c.result.store(status, X);
    c.result_kind.store(kind::STATUS, X);
    proto::transition(&c.state, &c.fx, gen, st::REPLY_BUSY, st::REPLIED)
        .expect("a pinned slot stays REPLY_BUSY");
    Ok(())
}

/// `msg_error`.
fn msg_error<F: Fx>(c: &Slot<F>, gen: u16, err: u32) -> Result<(), u32> {
    pin(c, gen)?;
    c.result.store(err, X);
    c.result_kind.store(kind::ERR_RECEIVED, X);
    proto::transition(&c.state, &c.fx, gen, st::REPLY_BUSY, st::REPLIED)
        .expect("a pinned slot stays REPLY_BUSY");
    Ok(())
}

/// `msg_read`: pins, reads the send buffer, unpins.
fn msg_read<F: Fx>(c: &Slot<F>, gen: u16) -> Result<u32, u32> {
    pin(c, gen)?;
    let v = get(&c.send);
    proto::transition(&c.state, &c.fx, gen, st::REPLY_BUSY, st::REPLY_BLOCKED)
        .expect("a pinned slot stays REPLY_BUSY");
    Ok(v)
}

/// `fail_reply_blocked` (with the teardown's poll deadline dropped: loom has no clock, and the
/// loop re-checks the word either way).
fn fail_reply_blocked<F: Fx>(c: &Slot<F>, err: u32) -> bool {
    loop {
        let w = c.state.load(R);
        let g = proto::gen_of(w);
        match proto::state_of(w) {
            st::REPLY_BLOCKED => {
                if proto::transition(&c.state, &c.fx, g, st::REPLY_BLOCKED, st::REPLY_BUSY).is_ok()
                {
                    c.result_kind.store(kind::ERR_RECEIVED, X);
                    c.result.store(err, X);
                    let _ = proto::transition(&c.state, &c.fx, g, st::REPLY_BUSY, st::REPLIED);
                    return true;
                }
            }
            st::RECV_COPY | st::REPLY_BUSY => {
                let _ = proto::wait_for(
                    &c.state,
                    &c.fx,
                    |x| x & !proto::WAITERS != w & !proto::WAITERS,
                    &mut NoSpin,
                    None,
                );
            }
            _ => return false,
        }
    }
}

/// The client gives up a REPLY-blocked send (a timeout): REPLY_BLOCKED → IDLE.
fn give_up<F: Fx>(c: &Slot<F>, gen: u16) -> Result<(), u32> {
    proto::transition(&c.state, &c.fx, gen, st::REPLY_BLOCKED, st::IDLE)
}

/// After giving up, the client owns its buffers again: it reuses both. Loom reports a race if a
/// server still reads or writes them.
fn reuse_buffers<F: Fx>(c: &Slot<F>) {
    put(&c.send, NEXT_REQ);
    put(&c.reply, CLOBBER);
}

// ---------------------------------------------------------------------------------------------
// 1. send → receive → reply
// ---------------------------------------------------------------------------------------------

/// Which order the exchange of model 1 took.
struct Seen {
    handed: SeenFlag,
    queued: SeenFlag,
}

fn send_receive_reply_model<F: Fx>(seen: &'static Seen) {
    loom::model(move || {
        let ch = Arc::new(Chan::<F>::new());
        let client = Arc::new(Slot::<F>::new(G, st::IDLE));
        let server = Arc::new(Slot::<F>::new(RG, st::IDLE));

        let srv = {
            let (ch, c, rt) = (ch.clone(), client.clone(), server.clone());
            thread::spawn(move || {
                // msg_receive.
                let my_gen = proto::gen_of(rt.state.load(R));
                let taken = ch.locked(TAG_SERVER, |l| {
                    if l.sender != 0 {
                        let s = l.sender - 1;
                        l.sender = 0;
                        let w = c.state.load(R);
                        proto::transition(
                            &c.state,
                            &c.fx,
                            proto::gen_of(w),
                            st::SEND_BLOCKED,
                            st::RECV_COPY,
                        )
                        .expect("a queued sender is SEND_BLOCKED");
                        Some(s)
                    } else {
                        rt.handoff.store(0, X);
                        rt.state.store(proto::make(my_gen, st::RECV_WAIT), W);
                        l.receiver = SERVER + 1;
                        None
                    }
                });
                let s = match taken {
                    Some(s) => s,
                    None => {
                        proto::wait_for(
                            &rt.state,
                            &rt.fx,
                            |x| proto::state_of(x) == st::RECV_HANDED,
                            &mut NoSpin,
                            None,
                        )
                        .expect("no deadline");
                        let h = rt.handoff.load(X);
                        rt.state.store(proto::make(my_gen, st::IDLE), W);
                        assert!(h >= 1, "hand-off without a sender");
                        h - 1
                    }
                };
                assert_eq!(s, CLIENT);
                // Copy the request out (RECV_COPY), then REPLY_BLOCKED.
                assert_eq!(get(&c.send), REQ);
                let gen = proto::gen_of(c.state.load(R));
                assert_eq!(gen, G);
                proto::transition(&c.state, &c.fx, gen, st::RECV_COPY, st::REPLY_BLOCKED)
                    .expect("only the receiver moves RECV_COPY");
                // msg_reply on the rcvid (CLIENT, gen).
                msg_reply(&c, gen, STATUS, REPLY).expect("the only replier");
            })
        };

        // msg_send.
        let (c, rt) = (&*client, &*server);
        put(&c.send, REQ);
        let handed = ch.locked(TAG_CLIENT, |l| {
            if l.receiver != 0 {
                let r = l.receiver - 1;
                l.receiver = 0;
                assert_eq!(r, SERVER);
                c.state.store(proto::make(G, st::RECV_COPY), W);
                rt.handoff.store(CLIENT + 1, X);
                true
            } else {
                c.state.store(proto::make(G, st::SEND_BLOCKED), W);
                l.sender = CLIENT + 1;
                false
            }
        });
        if handed {
            seen.handed.store(true, X);
            let rw = rt.state.load(R);
            proto::transition(
                &rt.state,
                &rt.fx,
                proto::gen_of(rw),
                st::RECV_WAIT,
                st::RECV_HANDED,
            )
            .expect("a popped receiver is RECV_WAIT");
        } else {
            seen.queued.store(true, X);
        }
        let got = await_reply(c, G);
        assert_eq!(
            got,
            Got {
                kind: kind::STATUS,
                result: STATUS,
                reply: REPLY
            }
        );
        // The next send reuses the buffer: no race with the server's copy.
        put(&c.send, NEXT_REQ);
        srv.join().unwrap();
        assert_eq!(proto::state_of(c.state.load(R)), st::IDLE);
        assert_eq!(proto::state_of(rt.state.load(R)), st::IDLE);
    });
    assert!(seen.handed.load(X), "receiver-first order not explored");
    assert!(seen.queued.load(X), "sender-first order not explored");
}

#[test]
fn send_receive_reply() {
    static SEEN: Seen = Seen {
        handed: SeenFlag::new(false),
        queued: SeenFlag::new(false),
    };
    send_receive_reply_model::<YieldWait>(&SEEN);
}

#[test]
fn send_receive_reply_strict_futex() {
    static SEEN: Seen = Seen {
        handed: SeenFlag::new(false),
        queued: SeenFlag::new(false),
    };
    send_receive_reply_model::<StrictFutex>(&SEEN);
}

// ---------------------------------------------------------------------------------------------
// 2. Racing repliers, msg_error, msg_read, teardown
// ---------------------------------------------------------------------------------------------
//
// With `YieldWait` every waiter spins, and loom does not bound a schedule in which two spinners
// keep yielding to each other while the thread they wait for never runs (switching away from a
// yielding thread is not a preemption). So in these models the client first joins the thread
// whose completion leaves the slot REPLIED, then consumes the reply while the other server thread
// may still run: one spinner at a time, and the late server still races with the client's reads
// and reuse of its buffers. The `StrictFutex` variants (waiters block) also run the client's wait
// concurrently with both servers.

/// What the second server thread does in [`racing_servers_model`].
#[derive(Clone, Copy)]
enum Second {
    Reply,
    Error,
}

/// Two server threads act on the same rcvid: A replies (`REPLY`, `STATUS`), B replies
/// (`REPLY_B`, `STATUS + 1`) or calls `msg_error(EBADF)`. `await_first`: the client waits for the
/// reply concurrently with both (only with a blocking futex, see above).
fn racing_servers_model<F: Fx>(second: Second, await_first: bool) {
    loom::model(move || {
        let c = Arc::new(Slot::<F>::reply_blocked());
        let a = {
            let c = c.clone();
            thread::spawn(move || msg_reply(&c, G, STATUS, REPLY))
        };
        let b = {
            let c = c.clone();
            thread::spawn(move || match second {
                Second::Reply => msg_reply(&c, G, STATUS + 1, REPLY_B),
                Second::Error => msg_error(&c, G, EBADF),
            })
        };
        let (got, ra) = if await_first {
            let got = await_reply(&c, G);
            (got, a.join().unwrap())
        } else {
            // A has replied, or failed because B had replied: the slot is REPLIED either way.
            let ra = a.join().unwrap();
            (await_reply(&c, G), ra)
        };
        // The next send reuses the buffers; B may still be running.
        put(&c.send, NEXT_REQ);
        let rb = b.join().unwrap();
        let a_won = Got {
            kind: kind::STATUS,
            result: STATUS,
            reply: REPLY,
        };
        let b_won = match second {
            Second::Reply => Got {
                kind: kind::STATUS,
                result: STATUS + 1,
                reply: REPLY_B,
            },
            Second::Error => Got {
                kind: kind::ERR_RECEIVED,
                result: EBADF,
                reply: 0,
            },
        };
        match (ra, rb) {
            (Ok(()), Err(ESRCH)) => assert_eq!(got, a_won),
            (Err(ESRCH), Ok(())) => assert_eq!(got, b_won),
            other => panic!("not exactly one winner: {other:?}"),
        }
    });
}

#[test]
fn two_repliers_one_wins() {
    racing_servers_model::<YieldWait>(Second::Reply, false);
}

#[test]
fn two_repliers_one_wins_strict_futex() {
    racing_servers_model::<StrictFutex>(Second::Reply, true);
}

#[test]
fn reply_races_error() {
    racing_servers_model::<YieldWait>(Second::Error, false);
}

#[test]
fn reply_races_error_strict_futex() {
    racing_servers_model::<StrictFutex>(Second::Error, true);
}

#[test]
fn msg_read_races_reply() {
    static READ: SeenFlag = SeenFlag::new(false);
    static LATE: SeenFlag = SeenFlag::new(false);
    loom::model(|| {
        let c = Arc::new(Slot::<YieldWait>::reply_blocked());
        let reader = {
            let c = c.clone();
            thread::spawn(move || msg_read(&c, G))
        };
        let replier = {
            let c = c.clone();
            thread::spawn(move || msg_reply(&c, G, STATUS, REPLY))
        };
        // The reply always goes through (a msg_read only delays it).
        assert_eq!(replier.join().unwrap(), Ok(()));
        assert_eq!(
            await_reply(&c, G),
            Got {
                kind: kind::STATUS,
                result: STATUS,
                reply: REPLY
            }
        );
        // The next send reuses the send buffer: a msg_read after the reply must not touch it.
        put(&c.send, NEXT_REQ);
        match reader.join().unwrap() {
            Ok(v) => {
                assert_eq!(v, REQ);
                READ.store(true, X);
            }
            Err(e) => {
                assert_eq!(e, ESRCH);
                LATE.store(true, X);
            }
        }
    });
    assert!(READ.load(X) && LATE.load(X), "an outcome not explored");
}

/// A receiver is copying the request out (RECV_COPY) when the channel is torn down
/// (`fail_reply_blocked(EBADF)`); the receiver then replies. `await_first` as in
/// [`racing_servers_model`].
fn fail_reply_blocked_model<F: Fx>(await_first: bool) {
    loom::model(move || {
        let c = Arc::new(Slot::<F>::new(G, st::RECV_COPY));
        put(&c.send, REQ);
        let server = {
            let c = c.clone();
            thread::spawn(move || {
                assert_eq!(get(&c.send), REQ);
                proto::transition(&c.state, &c.fx, G, st::RECV_COPY, st::REPLY_BLOCKED)
                    .expect("only the receiver moves RECV_COPY");
                msg_reply(&c, G, STATUS, REPLY)
            })
        };
        let teardown = {
            let c = c.clone();
            thread::spawn(move || fail_reply_blocked(&c, EBADF))
        };
        let (got, replied) = if await_first {
            let got = await_reply(&c, G);
            (got, server.join().unwrap())
        } else {
            // The server has replied, or failed after the teardown had: REPLIED either way.
            let replied = server.join().unwrap();
            (await_reply(&c, G), replied)
        };
        put(&c.send, NEXT_REQ);
        match (replied, teardown.join().unwrap()) {
            (Ok(()), false) => assert_eq!(
                got,
                Got {
                    kind: kind::STATUS,
                    result: STATUS,
                    reply: REPLY
                }
            ),
            (Err(ESRCH), true) => assert_eq!(
                got,
                Got {
                    kind: kind::ERR_RECEIVED,
                    result: EBADF,
                    reply: 0
                }
            ),
            other => panic!("not exactly one winner: {other:?}"),
        }
    });
}

#[test]
fn fail_reply_blocked_races_reply() {
    fail_reply_blocked_model::<YieldWait>(false);
}

#[test]
fn fail_reply_blocked_races_reply_strict_futex() {
    fail_reply_blocked_model::<StrictFutex>(true);
}

// ---------------------------------------------------------------------------------------------
// 3. The client gives up
// ---------------------------------------------------------------------------------------------

/// Which outcomes of model 3 were seen.
struct Outcomes {
    gave_up: SeenFlag,
    replied: SeenFlag,
}

fn client_gives_up_vs_reply_model<F: Fx>(seen: &'static Outcomes) {
    loom::model(move || {
        let c = Arc::new(Slot::<F>::reply_blocked());
        let server = {
            let c = c.clone();
            thread::spawn(move || msg_reply(&c, G, STATUS, REPLY))
        };
        let gave_up = match give_up(&c, G) {
            Ok(()) => {
                reuse_buffers(&c);
                true
            }
            Err(w) => {
                // A server has pinned (or already replied): the client must take the reply.
                assert_eq!(proto::gen_of(w), G);
                assert!(matches!(proto::state_of(w), st::REPLY_BUSY | st::REPLIED));
                let got = await_reply(&c, G);
                assert_eq!(got.reply, REPLY);
                assert_eq!(got.result, STATUS);
                false
            }
        };
        let r = server.join().unwrap();
        if gave_up {
            seen.gave_up.store(true, X);
            assert_eq!(r, Err(ESRCH));
            assert_eq!(get(&c.reply), CLOBBER);
        } else {
            seen.replied.store(true, X);
            assert_eq!(r, Ok(()));
        }
        assert_eq!(proto::state_of(c.state.load(R)), st::IDLE);
    });
    assert!(
        seen.gave_up.load(X) && seen.replied.load(X),
        "an outcome not explored"
    );
}

#[test]
fn client_gives_up_vs_reply() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    client_gives_up_vs_reply_model::<YieldWait>(&SEEN);
}

#[test]
fn client_gives_up_vs_reply_strict_futex() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    client_gives_up_vs_reply_model::<StrictFutex>(&SEEN);
}

/// The three outcomes of [`client_gives_up_vs_read_then_reply_model`].
struct ReadOutcomes {
    before_read: SeenFlag,
    after_read: SeenFlag,
    replied: SeenFlag,
}

fn client_gives_up_vs_read_then_reply_model<F: Fx>(seen: &'static ReadOutcomes) {
    loom::model(move || {
        let c = Arc::new(Slot::<F>::reply_blocked());
        let server = {
            let c = c.clone();
            thread::spawn(move || (msg_read(&c, G), msg_reply(&c, G, STATUS, REPLY)))
        };
        // A timed-out client: retries the give-up while a msg_read has the slot pinned.
        let gave_up = loop {
            match give_up(&c, G) {
                Ok(()) => {
                    reuse_buffers(&c);
                    break true;
                }
                Err(w) if proto::state_of(w) == st::REPLIED => {
                    assert_eq!(await_reply(&c, G).reply, REPLY);
                    break false;
                }
                Err(w) => {
                    assert_eq!(proto::state_of(w), st::REPLY_BUSY);
                    let _ = proto::wait_for(
                        &c.state,
                        &c.fx,
                        |x| proto::state_of(x) != st::REPLY_BUSY,
                        &mut NoSpin,
                        None,
                    );
                }
            }
        };
        let (read, replied) = server.join().unwrap();
        let flag = match (read, replied, gave_up) {
            // Gave up before the read, or between the read and the reply.
            (Err(ESRCH), Err(ESRCH), true) => &seen.before_read,
            (Ok(REQ), Err(ESRCH), true) => &seen.after_read,
            // Got the reply (a give-up during the read waited for it and retried).
            (Ok(REQ), Ok(()), false) => &seen.replied,
            other => panic!("impossible outcome: {other:?}"),
        };
        flag.store(true, X);
    });
    assert!(
        seen.before_read.load(X) && seen.after_read.load(X) && seen.replied.load(X),
        "an outcome not explored"
    );
}

#[test]
fn client_gives_up_vs_read_then_reply() {
    static SEEN: ReadOutcomes = ReadOutcomes {
        before_read: SeenFlag::new(false),
        after_read: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    client_gives_up_vs_read_then_reply_model::<YieldWait>(&SEEN);
}

#[test]
fn client_gives_up_vs_read_then_reply_strict_futex() {
    static SEEN: ReadOutcomes = ReadOutcomes {
        before_read: SeenFlag::new(false),
        after_read: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    client_gives_up_vs_read_then_reply_model::<StrictFutex>(&SEEN);
}

/// The production REPLY timeout (no `_NTO_CHF_UNBLOCK`): the client fails itself with
/// `fail_reply_blocked(ETIMEDOUT)` (REPLY_BLOCKED → REPLY_BUSY → REPLIED, error) and consumes that,
/// while the server replies.
fn client_reply_timeout_model<F: Fx>(seen: &'static Outcomes) {
    loom::model(move || {
        let c = Arc::new(Slot::<F>::reply_blocked());
        let server = {
            let c = c.clone();
            thread::spawn(move || msg_reply(&c, G, STATUS, REPLY))
        };
        let failed_self = fail_reply_blocked(&c, ETIMEDOUT);
        let got = await_reply(&c, G);
        reuse_buffers(&c);
        match (failed_self, server.join().unwrap()) {
            (true, Err(ESRCH)) => {
                assert_eq!((got.kind, got.result), (kind::ERR_RECEIVED, ETIMEDOUT));
                seen.gave_up.store(true, X);
            }
            (false, Ok(())) => {
                assert_eq!(
                    got,
                    Got {
                        kind: kind::STATUS,
                        result: STATUS,
                        reply: REPLY
                    }
                );
                seen.replied.store(true, X);
            }
            other => panic!("not exactly one winner: {other:?}"),
        }
    });
    assert!(
        seen.gave_up.load(X) && seen.replied.load(X),
        "an outcome not explored"
    );
}

#[test]
fn client_reply_timeout_vs_reply() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    client_reply_timeout_model::<YieldWait>(&SEEN);
}

#[test]
fn client_reply_timeout_vs_reply_strict_futex() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    client_reply_timeout_model::<StrictFutex>(&SEEN);
}

/// The SEND timeout (`fail_queued`): a queued client takes itself off the queue under the channel
/// lock while a receiver takes it. Exactly one wins: the client fails with ETIMEDOUT, "not
/// received", and the receiver finds the queue empty; or the receiver has it and the client waits
/// for the reply. The receiver never reads the send buffer the timed-out client reuses.
fn send_timeout_model<F: Fx>(seen: &'static Outcomes) {
    loom::model(move || {
        let ch = Arc::new(Chan::<F>::new());
        let client = Arc::new(Slot::<F>::new(G, st::IDLE));
        // msg_send, queued: no receiver was waiting.
        put(&client.send, REQ);
        ch.locked(TAG_CLIENT, |l| {
            client.state.store(proto::make(G, st::SEND_BLOCKED), W);
            l.sender = CLIENT + 1;
        });
        let receiver = {
            let (ch, c) = (ch.clone(), client.clone());
            thread::spawn(move || {
                let taken = ch.locked(TAG_SERVER, |l| {
                    if l.sender == 0 {
                        return false;
                    }
                    l.sender = 0;
                    let w = c.state.load(R);
                    proto::transition(
                        &c.state,
                        &c.fx,
                        proto::gen_of(w),
                        st::SEND_BLOCKED,
                        st::RECV_COPY,
                    )
                    .expect("a queued sender is SEND_BLOCKED");
                    true
                });
                if taken {
                    assert_eq!(get(&c.send), REQ);
                    proto::transition(&c.state, &c.fx, G, st::RECV_COPY, st::REPLY_BLOCKED)
                        .expect("only the receiver moves RECV_COPY");
                    msg_reply(&c, G, STATUS, REPLY).expect("the only replier");
                }
                taken
            })
        };
        // The SEND deadline passes: fail_queued.
        let c = &*client;
        let removed = ch.locked(TAG_CLIENT, |l| {
            let mine = l.sender == CLIENT + 1;
            if mine {
                l.sender = 0;
            }
            mine
        });
        if removed {
            let g = proto::gen_of(c.state.load(R));
            c.result_kind.store(kind::ERR_NOT_RECEIVED, X);
            c.result.store(ETIMEDOUT, X);
            proto::transition(&c.state, &c.fx, g, st::SEND_BLOCKED, st::REPLIED)
                .expect("a queued client stays SEND_BLOCKED");
        }
        let got = await_reply(c, G);
        reuse_buffers(c);
        match (removed, receiver.join().unwrap()) {
            (true, false) => {
                assert_eq!((got.kind, got.result), (kind::ERR_NOT_RECEIVED, ETIMEDOUT));
                seen.gave_up.store(true, X);
            }
            (false, true) => {
                assert_eq!((got.kind, got.reply), (kind::STATUS, REPLY));
                seen.replied.store(true, X);
            }
            other => panic!("not exactly one winner: {other:?}"),
        }
    });
    assert!(
        seen.gave_up.load(X) && seen.replied.load(X),
        "an outcome not explored"
    );
}

#[test]
fn send_timeout_vs_receive() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    send_timeout_model::<YieldWait>(&SEEN);
}

#[test]
fn send_timeout_vs_receive_strict_futex() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    send_timeout_model::<StrictFutex>(&SEEN);
}

/// The receive timeout: a receiver waiting on the channel (RECV_WAIT, on the receiver stack)
/// times out while a sender pops it. It leaves only if it is still on the stack (under the lock);
/// otherwise the sender is handing it a message, which it must wait for and not lose. Exactly one
/// of {the receiver got the request, the receiver timed out and the sender is queued}.
fn receive_timeout_model<F: Fx>(seen: &'static Outcomes) {
    loom::model(move || {
        let ch = Arc::new(Chan::<F>::new());
        let client = Arc::new(Slot::<F>::new(G, st::IDLE));
        let server = Arc::new(Slot::<F>::new(RG, st::IDLE));
        // msg_receive: nothing queued, so wait on the stack.
        ch.locked(TAG_SERVER, |l| {
            server.handoff.store(0, X);
            server.state.store(proto::make(RG, st::RECV_WAIT), W);
            l.receiver = SERVER + 1;
        });
        let sender = {
            let (ch, c, rt) = (ch.clone(), client.clone(), server.clone());
            thread::spawn(move || {
                put(&c.send, REQ);
                let handed = ch.locked(TAG_CLIENT, |l| {
                    if l.receiver != 0 {
                        l.receiver = 0;
                        c.state.store(proto::make(G, st::RECV_COPY), W);
                        rt.handoff.store(CLIENT + 1, X);
                        true
                    } else {
                        c.state.store(proto::make(G, st::SEND_BLOCKED), W);
                        l.sender = CLIENT + 1;
                        false
                    }
                });
                if handed {
                    let rw = rt.state.load(R);
                    proto::transition(
                        &rt.state,
                        &rt.fx,
                        proto::gen_of(rw),
                        st::RECV_WAIT,
                        st::RECV_HANDED,
                    )
                    .expect("a popped receiver is RECV_WAIT");
                }
                handed
            })
        };
        // The receive deadline passes: the wait's last check, then leave the stack if still on it.
        let rt = &*server;
        let handed = |x| proto::state_of(x) == st::RECV_HANDED;
        let got_it = handed(rt.state.load(R)) || {
            let left = ch.locked(TAG_SERVER, |l| {
                let mine = l.receiver == SERVER + 1;
                if mine {
                    l.receiver = 0;
                }
                mine
            });
            if !left {
                proto::wait_for(&rt.state, &rt.fx, handed, &mut NoSpin, None).expect("no deadline");
            }
            !left
        };
        rt.state.store(proto::make(RG, st::IDLE), W);
        let c = &*client;
        if got_it {
            assert_eq!(rt.handoff.load(X), CLIENT + 1);
            assert_eq!(get(&c.send), REQ);
            proto::transition(&c.state, &c.fx, G, st::RECV_COPY, st::REPLY_BLOCKED)
                .expect("only the receiver moves RECV_COPY");
            msg_reply(c, G, STATUS, REPLY).expect("the only replier");
        }
        let sender_handed = sender.join().unwrap();
        assert_eq!(got_it, sender_handed, "a hand-off was lost or invented");
        if got_it {
            assert_eq!(await_reply(c, G).reply, REPLY);
            seen.replied.store(true, X);
        } else {
            assert_eq!(proto::state_of(c.state.load(R)), st::SEND_BLOCKED);
            ch.locked(TAG_SERVER, |l| assert_eq!(l.sender, CLIENT + 1));
            seen.gave_up.store(true, X);
        }
    });
    assert!(
        seen.gave_up.load(X) && seen.replied.load(X),
        "an outcome not explored"
    );
}

#[test]
fn receive_timeout_vs_send() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    receive_timeout_model::<YieldWait>(&SEEN);
}

#[test]
fn receive_timeout_vs_send_strict_futex() {
    static SEEN: Outcomes = Outcomes {
        gave_up: SeenFlag::new(false),
        replied: SeenFlag::new(false),
    };
    receive_timeout_model::<StrictFutex>(&SEEN);
}

// ---------------------------------------------------------------------------------------------
// 4. Stale generation
// ---------------------------------------------------------------------------------------------

fn stale_generation_model<F: Fx>() {
    loom::model(|| {
        let c = Arc::new(Slot::<F>::reply_blocked());
        // A server still holding rcvid (CLIENT, G).
        let stale = {
            let c = c.clone();
            thread::spawn(move || msg_reply(&c, G, STATUS, REPLY))
        };
        let next = G.wrapping_add(1);
        match give_up(&c, G) {
            Ok(()) => {
                // Send again through another connection: a new generation. A receiver there took
                // the request, so the slot is REPLY_BLOCKED again, at G+1.
                put(&c.send, NEXT_REQ);
                c.state.store(proto::make(next, st::REPLY_BLOCKED), W);
                // The stale rcvid never pins it: giving up at G+1 always succeeds, and the
                // buffers are the client's alone (loom would report the stale server's write).
                give_up(&c, next).expect("the stale server pinned generation G+1");
                reuse_buffers(&c);
                assert_eq!(stale.join().unwrap(), Err(ESRCH));
            }
            Err(_) => {
                // The stale server pinned at G first: that exchange completes normally.
                assert_eq!(await_reply(&c, G).reply, REPLY);
                assert_eq!(stale.join().unwrap(), Ok(()));
            }
        }
    });
}

#[test]
fn stale_generation_cannot_pin() {
    stale_generation_model::<YieldWait>();
}

#[test]
fn stale_generation_cannot_pin_strict_futex() {
    stale_generation_model::<StrictFutex>();
}

// ---------------------------------------------------------------------------------------------
// 5. The robust lock
// ---------------------------------------------------------------------------------------------

#[test]
fn lock_counter() {
    loom::model(|| {
        let lock = Arc::new(AtomicU32::new(0));
        let counter = Arc::new(UnsafeCell::new(0u32));
        let bump = |tag: u32, lock: &AtomicU32, counter: &UnsafeCell<u32>| {
            assert_eq!(
                proto::lock(lock, &YieldWait, tag, POLL, |_| false),
                Locked::Clean
            );
            put(counter, get(counter) + 1);
            proto::unlock(lock, &YieldWait);
        };
        let t = {
            let (lock, counter) = (lock.clone(), counter.clone());
            thread::spawn(move || bump(TAG_SERVER, &lock, &counter))
        };
        bump(TAG_CLIENT, &lock, &counter);
        t.join().unwrap();
        assert_eq!(get(&counter), 2);
        assert_eq!(lock.load(R), 0);
    });
}

#[test]
fn lock_broken_from_dead_owner() {
    static BROKEN: SeenFlag = SeenFlag::new(false);
    static CLEAN: SeenFlag = SeenFlag::new(false);
    const OWNER: u32 = 5;
    const OTHER: u32 = 6;
    loom::model(|| {
        let lock = Arc::new(AtomicU32::new(0));
        let data = Arc::new(UnsafeCell::new(0u32));
        let dead = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let owner = {
            let (lock, data, dead) = (lock.clone(), data.clone(), dead.clone());
            thread::spawn(move || {
                assert_eq!(
                    proto::lock(&*lock, &YieldWait, OWNER, POLL, |_| false),
                    Locked::Clean
                );
                // A half-done update, then death with the lock held.
                put(&data, get(&data) + 1);
                dead.store(true, W);
            })
        };
        let how = proto::lock(&*lock, &YieldWait, OTHER, POLL, |t| {
            t == OWNER && dead.load(R)
        });
        match how {
            Locked::FromDead(tag) => {
                assert_eq!(tag, OWNER);
                // The dead owner's write is visible to the one who repairs.
                assert_eq!(get(&data), 1);
                BROKEN.store(true, X);
            }
            Locked::Clean => {
                // Taken before the owner: the owner takes it after our unlock.
                assert_eq!(get(&data), 0);
                CLEAN.store(true, X);
            }
        }
        put(&data, get(&data) + 10);
        proto::unlock(&*lock, &YieldWait);
        owner.join().unwrap();
        assert_eq!(get(&data), 11);
        assert!(dead.load(R));
        // The owner died holding the lock, or we broke it and released it.
        let held = lock.load(R) & !proto::LOCK_WAITERS;
        assert_eq!(
            held,
            if matches!(how, Locked::Clean) {
                OWNER
            } else {
                0
            }
        );
    });
    assert!(BROKEN.load(X) && CLEAN.load(X), "an outcome not explored");
}

#[test]
fn lock_two_breakers_one_wins() {
    const DEAD: u32 = 5;
    loom::model(|| {
        let lock = Arc::new(AtomicU32::new(0));
        let data = Arc::new(UnsafeCell::new(0u32));
        let dead = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        // The owner took the lock, half-did its update and died.
        assert_eq!(
            proto::lock(&*lock, &YieldWait, DEAD, POLL, |_| false),
            Locked::Clean
        );
        put(&data, 1);
        dead.store(true, W);
        let contender = |tag: u32| {
            let (lock, data, dead) = (lock.clone(), data.clone(), dead.clone());
            thread::spawn(move || {
                let how = proto::lock(&*lock, &YieldWait, tag, POLL, |t| t == DEAD && dead.load(R));
                if let Locked::FromDead(t) = how {
                    assert_eq!(t, DEAD);
                    // The repair: finish the dead owner's update.
                    assert_eq!(get(&data), 1);
                    put(&data, 2);
                }
                put(&data, get(&data) + 10);
                proto::unlock(&*lock, &YieldWait);
                how
            })
        };
        let (a, b) = (contender(TAG_CLIENT), contender(TAG_SERVER));
        let hows = [a.join().unwrap(), b.join().unwrap()];
        let broken = hows
            .iter()
            .filter(|h| matches!(h, Locked::FromDead(_)))
            .count();
        assert_eq!(broken, 1, "{hows:?}");
        assert_eq!(get(&data), 22);
        assert_eq!(lock.load(R), 0);
    });
}

/// A futex on which even timed waits sleep until woken (the lock's polling never fires): with
/// live owners only, the lock's `LOCK_WAITERS` bit and `unlock`'s single wake-up must be enough.
#[derive(Default)]
struct NoPollFutex(StrictFutex);

impl<Wd: Word> Wait<Wd> for NoPollFutex {
    fn wait(&self, word: &Wd, expected: u32, _timeout: Option<Duration>) -> Woken {
        self.0.wait(word, expected, None)
    }
    fn wake(&self, word: &Wd, n: u32) {
        self.0.wake(word, n)
    }
}

#[test]
fn lock_three_threads_no_lost_wakeup() {
    loom::model(|| {
        let lock = Arc::new((AtomicU32::new(0), NoPollFutex::default()));
        let counter = Arc::new(UnsafeCell::new(0u32));
        let bump = |tag: u32, lock: &(AtomicU32, NoPollFutex), counter: &UnsafeCell<u32>| {
            assert_eq!(
                proto::lock(&lock.0, &lock.1, tag, POLL, |_| false),
                Locked::Clean
            );
            put(counter, get(counter) + 1);
            proto::unlock(&lock.0, &lock.1);
        };
        let spawn = |tag: u32| {
            let (lock, counter) = (lock.clone(), counter.clone());
            thread::spawn(move || bump(tag, &lock, &counter))
        };
        let (a, b) = (spawn(TAG_SERVER), spawn(TAG_SERVER + 1));
        bump(TAG_CLIENT, &lock, &counter);
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(get(&counter), 3);
        assert_eq!(lock.0.load(R), 0);
    });
}
