//! The one concurrency facade: every atomic, cell, spin and futex wait that crosses the arena goes
//! through here, so the slot protocol runs on std atomics with real shared futexes in production
//! and on loom's atomics, with waits turned into yields, under `--cfg loom`.
//!
//! The protocol code is generic over [`Word`] (the 32-bit state word) and [`Wait`] (how a thread
//! sleeps on it), as iceoryx2's lock strategies take their wait and wake as closures.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

/// Atomics: thin `#[repr(transparent)]` wrappers over std's in production and loom's under
/// `--cfg loom`, so the rest of the crate names only these types (clippy forbids the raw ones).
pub mod atomic {
    #[cfg(loom)]
    use loom::sync::atomic as imp;
    #[cfg(not(loom))]
    use std::sync::atomic as imp;

    pub use imp::{fence, Ordering};

    macro_rules! wrap {
        ($name:ident, $t:ty) => {
            #[doc = concat!("An atomic `", stringify!($t), "` of the facade (std or loom).")]
            #[repr(transparent)]
            #[derive(Debug, Default)]
            pub struct $name(imp::$name);

            impl $name {
                /// A new atomic holding `v`.
                #[cfg(not(loom))]
                pub const fn new(v: $t) -> Self {
                    $name(imp::$name::new(v))
                }
                /// A new atomic holding `v`.
                #[cfg(loom)]
                pub fn new(v: $t) -> Self {
                    $name(imp::$name::new(v))
                }
                /// Atomic load.
                #[inline]
                pub fn load(&self, o: Ordering) -> $t {
                    self.0.load(o)
                }
                /// Atomic store.
                #[inline]
                pub fn store(&self, v: $t, o: Ordering) {
                    crash_point();
                    self.0.store(v, o)
                }
                /// Atomic swap.
                #[inline]
                pub fn swap(&self, v: $t, o: Ordering) -> $t {
                    crash_point();
                    self.0.swap(v, o)
                }
                /// Atomic compare-and-exchange (strong).
                #[inline]
                pub fn compare_exchange(
                    &self,
                    current: $t,
                    new: $t,
                    s: Ordering,
                    f: Ordering,
                ) -> Result<$t, $t> {
                    crash_point();
                    self.0.compare_exchange(current, new, s, f)
                }
                /// Atomic add, returning the previous value.
                #[inline]
                pub fn fetch_add(&self, v: $t, o: Ordering) -> $t {
                    crash_point();
                    self.0.fetch_add(v, o)
                }
                /// Atomic bitwise or, returning the previous value.
                #[inline]
                pub fn fetch_or(&self, v: $t, o: Ordering) -> $t {
                    crash_point();
                    self.0.fetch_or(v, o)
                }
                /// Atomic read-modify-write with a closure, as std's `fetch_update`.
                #[inline]
                pub fn fetch_update(
                    &self,
                    s: Ordering,
                    f: Ordering,
                    g: impl FnMut($t) -> Option<$t>,
                ) -> Result<$t, $t> {
                    crash_point();
                    self.0.fetch_update(s, f, g)
                }
                /// A raw pointer to the value, for the futex system call.
                #[cfg(not(loom))]
                #[inline]
                pub fn as_ptr(&self) -> *mut $t {
                    self.0.as_ptr()
                }
            }
        };
    }
    wrap!(AtomicU32, u32);
    wrap!(AtomicU64, u64);

    #[inline(always)]
    fn crash_point() {
        #[cfg(all(feature = "crash-points", not(loom)))]
        super::crash::on_write();
    }
}

/// Crash points: with the `crash-points` feature, every atomic write through this facade (which
/// is every write to the arena's structures) is counted, and a process can be told to kill
/// itself with SIGKILL just before write number n. A test sweeps n over every write of a
/// scenario to prove that a death at any instruction that matters leaves the arena usable.
///
/// Counting starts at [`crash::arm`]; it is process-wide (all threads). Without the feature,
/// the hook compiles to nothing.
#[cfg(all(feature = "crash-points", not(loom)))]
pub mod crash {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    static COUNTING: AtomicU64 = AtomicU64::new(0);
    static WRITES: AtomicU64 = AtomicU64::new(0);
    static DIE_AT: AtomicU64 = AtomicU64::new(0);

    /// Starts counting writes from zero; with `die_at` = Some(n), the process kills itself
    /// (SIGKILL) just before its n-th write from now on.
    pub fn arm(die_at: Option<u64>) {
        WRITES.store(0, Relaxed);
        DIE_AT.store(die_at.unwrap_or(0), Relaxed);
        COUNTING.store(1, Relaxed);
    }

    /// Writes counted since [`arm`].
    pub fn writes() -> u64 {
        WRITES.load(Relaxed)
    }

    /// Stops counting.
    pub fn disarm() {
        COUNTING.store(0, Relaxed);
    }

    #[inline]
    pub(crate) fn on_write() {
        if COUNTING.load(Relaxed) == 0 {
            return;
        }
        let n = WRITES.fetch_add(1, Relaxed) + 1;
        if n == DIE_AT.load(Relaxed) {
            if std::env::var_os("QSIM_CRASH_TRACE").is_some() {
                eprintln!(
                    "crash point {n}:\n{}",
                    std::backtrace::Backtrace::force_capture()
                );
            }
            crate::sys::kill_self();
        }
    }
}

/// Interior-mutable cells with loom's `with`/`with_mut` interface, so loom can detect data races on
/// message bytes in the models.
pub mod cell {
    #[cfg(loom)]
    pub use loom::cell::UnsafeCell;

    /// `std::cell::UnsafeCell` with loom's closure-based access.
    #[cfg(not(loom))]
    #[derive(Debug, Default)]
    pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        /// Wraps `v`.
        pub const fn new(v: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(v))
        }
        /// Calls `f` with a shared raw pointer to the value.
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        /// Calls `f` with a mutable raw pointer to the value.
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

use atomic::{AtomicU32, Ordering};

/// One step of a busy wait: a CPU spin hint in production, a yield to the model checker under loom
/// (a spinning loom thread must let the others run).
#[inline]
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// A 32-bit word the protocol works on: an arena atomic in production, a loom atomic in models.
pub trait Word: Sync {
    /// Atomic load.
    fn load(&self, o: Ordering) -> u32;
    /// Atomic store.
    fn store(&self, v: u32, o: Ordering);
    /// Atomic compare-and-exchange (strong).
    fn cas(&self, current: u32, new: u32, success: Ordering, failure: Ordering)
        -> Result<u32, u32>;
    /// Atomic swap.
    fn swap(&self, v: u32, o: Ordering) -> u32;
}

impl Word for AtomicU32 {
    #[inline]
    fn load(&self, o: Ordering) -> u32 {
        AtomicU32::load(self, o)
    }
    #[inline]
    fn store(&self, v: u32, o: Ordering) {
        AtomicU32::store(self, v, o)
    }
    #[inline]
    fn cas(&self, current: u32, new: u32, s: Ordering, f: Ordering) -> Result<u32, u32> {
        AtomicU32::compare_exchange(self, current, new, s, f)
    }
    #[inline]
    fn swap(&self, v: u32, o: Ordering) -> u32 {
        AtomicU32::swap(self, v, o)
    }
}

/// Why a wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// Woken, or the word no longer held the expected value, or a spurious wake-up: re-check.
    Recheck,
    /// The timeout passed.
    TimedOut,
    /// A signal handler ran during the sleep (a handler installed without `SA_RESTART`).
    Interrupted,
}

/// The per-thread "a signal arrived" flag that [`crate::signal::unblock_on`]'s handler sets, so
/// a blocked call notices a signal that arrived while it was spinning (when no futex sleep is
/// there to be interrupted).
#[cfg(not(loom))]
pub mod signal_flag {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    thread_local! {
        static PENDING: AtomicBool = const { AtomicBool::new(false) };
    }

    /// Sets the calling thread's flag (async-signal-safe: a const-initialised thread-local).
    pub fn set() {
        let _ = PENDING.try_with(|p| p.store(true, Relaxed));
    }

    /// Takes (and clears) the calling thread's flag.
    pub fn take() -> bool {
        PENDING
            .try_with(|p| p.swap(false, Relaxed))
            .unwrap_or(false)
    }
}

/// How a thread sleeps on a [`Word`] and wakes sleepers: shared futexes in production, yields in
/// models. Implementations may return spuriously; callers re-check the word.
pub trait Wait<W: Word + ?Sized> {
    /// Sleeps while `word == expected`, at most `timeout` (`None`: no limit).
    fn wait(&self, word: &W, expected: u32, timeout: Option<Duration>) -> Woken;
    /// Wakes up to `n` threads sleeping on `word`.
    fn wake(&self, word: &W, n: u32);
}

/// Real shared (not `FUTEX_PRIVATE`) futexes on arena words.
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug, Default)]
pub struct OsFutex;

#[cfg(not(loom))]
impl Wait<AtomicU32> for OsFutex {
    fn wait(&self, word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Woken {
        match crate::sys::futex_wait(word, expected, timeout) {
            Err(e) if e == crate::Errno::TIMEDOUT => Woken::TimedOut,
            Err(e) if e == crate::Errno::INTR => Woken::Interrupted,
            _ => Woken::Recheck,
        }
    }
    fn wake(&self, word: &AtomicU32, n: u32) {
        crate::sys::futex_wake(word, n);
    }
}

/// The model checker's stand-in for a futex: a wait is a yield (a spurious wake-up, which the
/// protocol must tolerate); a wake does nothing.
#[cfg(loom)]
#[derive(Clone, Copy, Debug, Default)]
pub struct YieldWait;

#[cfg(loom)]
impl<W: Word> Wait<W> for YieldWait {
    fn wait(&self, word: &W, expected: u32, timeout: Option<Duration>) -> Woken {
        if word.load(Ordering::Acquire) == expected {
            loom::thread::yield_now();
        }
        if timeout.is_some() {
            Woken::TimedOut
        } else {
            Woken::Recheck
        }
    }
    fn wake(&self, _word: &W, _n: u32) {}
}
