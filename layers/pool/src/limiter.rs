//! The shared limiter: sharded permits, per-shard window statistics and the updater.
//!
//! # Ground rules
//!
//! - Permits are [`Tokens`] (see that module for the sharding and its orderings).
//! - Window statistics are per-shard counters, written `Relaxed` by the thread finishing a
//!   request on its own shard and drained (`swap(0)`) by the updater: they are statistics,
//!   a sample landing in the next window instead of this one is harmless.
//! - Only the updater, holding `updater` (a `Mutex` taken with `try_lock`, so no request ever
//!   waits for it; a request that finds it taken skips updating), writes `limit_bits`,
//!   `permits`, `next_update` and calls `Tokens::grow/shrink/settle`.
//! - Wake-ups: a task about to wait increments `waiters`, registers with `notify`, then sets
//!   the `WAITING` bit on every token shard (`Tokens::flag_all`) and retries if it saw a free
//!   token; a releaser's `fetch_add` returns the old shard word and it calls `notify_one` when
//!   the bit was set. Same-word read-modify-writes are totally ordered, so either the retry
//!   sees the token or the releaser sees the flag and calls `notify_one`: no lost wake-up. The
//!   last waiter to leave clears the flags (`WaiterCount`). Loom models of both protocols are
//!   in `src/tests/loom_tokens.rs`.

use crate::algorithm::{LimitAlgorithm, RttEstimates};
use crate::config::PoolConfig;
use crate::permit::Permit;
use crate::tokens::Tokens;
use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tollgate_core::Outcome;
use tollgate_core::counter::{shard_count, shard_index};
use tollgate_core::error::{ConfigError, Overloaded};

mod wait;
mod window;

pub(crate) use wait::WaitSlot;

#[derive(Debug, Default)]
struct ShardStats {
    successes: AtomicU64,
    failures: AtomicU64,
    dropped: AtomicU64,
    samples: AtomicU64,
    rtt_sum_ns: AtomicU64,
    /// Sum of squared RTTs, in microseconds squared (ns squared would overflow).
    rtt_sq_us: AtomicU64,
    /// The same three for calm samples only (see `Permit::calm`).
    calm_samples: AtomicU64,
    calm_rtt_sum_ns: AtomicU64,
    calm_rtt_sq_us: AtomicU64,
    limited: AtomicU64,
    rejected: AtomicU64,
    dropped_total: AtomicU64,
}

struct Updater {
    algorithm: Box<dyn LimitAlgorithm>,
    window_start: Instant,
    last_rtt: Option<Duration>,
    windows: u64,
}

impl fmt::Debug for Updater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updater")
            .field("algorithm", &self.algorithm)
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared {
    tokens: Tokens,
    stats: Box<[CachePadded<ShardStats>]>,
    waiters: CachePadded<AtomicUsize>,
    notify: Arc<Notify>,
    /// Nanoseconds after `epoch` when the current window may close.
    next_update: CachePadded<AtomicU64>,
    epoch: Instant,
    /// The limit as `f64` bits.
    limit_bits: AtomicU64,
    /// `floor(limit)`: the number of permits.
    permits: AtomicUsize,
    /// Time one request in this many (per thread); set by the updater from the last window's
    /// completions and `samples_per_window`.
    sample_every: CachePadded<AtomicU64>,
    /// A timed request that starts with at most this many in flight (itself included) is
    /// calm; from the algorithm's `calm_below` after each window (`usize::MAX`: all are).
    calm_below: CachePadded<AtomicUsize>,
    updater: Mutex<Updater>,
    config: PoolConfig,
}

/// An adaptive concurrency limit, shared by every clone (an `Arc` inside).
///
/// Use it through the [`PoolSizer`](crate::PoolSizer) service, or directly: take a
/// [`Permit`] with [`try_acquire`](Limiter::try_acquire) or [`acquire`](Limiter::acquire)
/// before the work and finish it with its outcome after; the RTT is measured from
/// [`Permit::start`] (or from the acquire) and the limit learns from it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use tollgate_pool::{Limiter, PoolConfig};
/// use tollgate_core::Outcome;
///
/// let limiter = Limiter::new(PoolConfig::default()).unwrap();
/// assert_eq!(limiter.limit(), 20);
/// let permit = limiter.try_acquire().expect("below the limit");
/// assert_eq!(limiter.in_flight(), 1);
/// // ... do the work ...
/// permit.finish(Outcome::Success);
/// assert_eq!(limiter.in_flight(), 0);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Limiter {
    /// One reference count for the whole limiter: a clone (one per request when a server
    /// clones its service stack) costs one increment.
    parts: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    core: Core,
    /// One handle per shard. A permit clones its shard's handle, not the limiter: the
    /// reference count it bumps lives on that shard's own cache line, so permits taken on
    /// different cores never write the same line (a shared `Arc` count would be the one
    /// contended word per request).
    handles: Box<[Arc<CachePadded<Handle>>]>,
}

/// The limiter's internals, reached from a [`Limiter`] or through a permit's [`Handle`].
#[derive(Debug, Clone)]
pub(crate) struct Core {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Handle {
    pub(crate) core: Core,
}

/// A point-in-time view of a [`Limiter`].
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The limit, with its fractional part (the number of permits is its floor).
    pub limit: f64,
    /// Requests holding a permit.
    pub in_flight: usize,
    /// Tasks waiting for a permit.
    pub waiting: usize,
    /// The algorithm's RTT estimates.
    pub rtt: RttEstimates,
    /// Requests refused so far (at the limit in reject mode, or after `max_wait`).
    pub rejected: u64,
    /// Requests whose future was dropped before it finished, so far.
    pub cancelled: u64,
    /// Windows closed so far (limit updates).
    pub windows: u64,
    /// The algorithm's name.
    pub algorithm: &'static str,
}

thread_local! {
    /// This thread's [`shard_index`], cached so the request path reads one plain
    /// thread-local (`usize::MAX` until first asked).
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard (see [`shard_index`]).
#[inline]
pub(crate) fn home() -> usize {
    HOME.with(|h| match h.get() {
        usize::MAX => {
            let i = shard_index();
            h.set(i);
            i
        }
        i => i,
    })
}

impl Limiter {
    /// A limiter with `config` and the algorithm it names.
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`PoolConfig::validate`].
    pub fn new(config: PoolConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let algorithm = config.algorithm.build();
        Ok(Self::wrap(Core::build(config, algorithm)))
    }

    /// A limiter with `config` and your own algorithm (`config.algorithm` is ignored).
    ///
    /// # Errors
    ///
    /// The [`ConfigError`] of [`PoolConfig::validate`].
    pub fn with_algorithm(
        config: PoolConfig,
        algorithm: impl LimitAlgorithm,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::wrap(Core::build(config, Box::new(algorithm))))
    }

    fn wrap(core: Core) -> Self {
        let n = core.shared.tokens.shard_mask() + 1;
        let handles = (0..n)
            .map(|_| Arc::new(CachePadded::new(Handle { core: core.clone() })))
            .collect();
        Self {
            parts: Arc::new(Parts { core, handles }),
        }
    }

    /// The shared state, for the [`Capacity`](tollgate_core::capacity::Capacity) impl.
    #[inline]
    pub(crate) fn core(&self) -> &Core {
        &self.parts.core
    }

    /// A permit for a token already taken on `home`'s shard.
    #[inline]
    pub(crate) fn permit(&self, home: usize) -> Permit {
        let handle = self.parts.handles[home & (self.parts.handles.len() - 1)].clone();
        Permit::new(handle)
    }

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        self.parts.core.config()
    }

    /// The number of permits (the limit's floor). One relaxed load.
    pub fn limit(&self) -> usize {
        self.parts.core.limit()
    }

    /// The limit with its fractional part. One relaxed load.
    pub fn limit_f64(&self) -> f64 {
        self.parts.core.limit_f64()
    }

    /// Requests holding a permit: `permits + debt − free tokens`, a few relaxed loads (one per
    /// shard). Exact when nothing runs concurrently.
    pub fn in_flight(&self) -> usize {
        self.parts.core.in_flight()
    }

    /// Takes a permit if one is free, without waiting. `None` counts as demand at the limit
    /// (the algorithm sees it) but not as a rejection: call [`Limiter::reject`] if you refuse
    /// the request because of it.
    #[inline]
    pub fn try_acquire(&self) -> Option<Permit> {
        self.parts.core.try_acquire().map(|home| self.permit(home))
    }

    /// Counts one refused request in the snapshot's `rejected`.
    pub fn reject(&self) {
        self.parts.core.reject();
    }

    /// Takes a permit, waiting as [`PoolConfig::at_limit`] says.
    ///
    /// # Errors
    ///
    /// [`Overloaded`] at the limit in reject mode, or after `max_wait` in wait mode.
    pub async fn acquire(&self) -> Result<Permit, Overloaded> {
        let mut slot = None;
        std::future::poll_fn(|cx| self.poll_acquire(cx, &mut slot)).await
    }

    /// Polls for a permit; `slot` keeps the wait registration between polls (start with
    /// `None`, keep it until this returns `Ready`).
    #[inline]
    pub(crate) fn poll_acquire(
        &self,
        cx: &mut Context<'_>,
        slot: &mut Option<Pin<Box<WaitSlot>>>,
    ) -> Poll<Result<Permit, Overloaded>> {
        self.parts
            .core
            .poll_acquire(cx, slot)
            .map_ok(|home| self.permit(home))
    }

    /// Finishes `permit` with an RTT you measured yourself (for callers that time requests
    /// differently, such as an admission layer).
    pub fn record(&self, permit: Permit, rtt: Duration, outcome: Outcome) {
        permit.finish_with_rtt(rtt, outcome);
    }

    /// A view of the limiter now. Briefly takes the updater's lock; not for the request path.
    pub fn snapshot(&self) -> Snapshot {
        self.parts.core.snapshot()
    }

    /// Closes the current window now, whatever its length (for tests and fuzzing).
    pub fn force_update(&self) {
        self.parts.core.force_update();
    }
}

impl Core {
    fn build(config: PoolConfig, algorithm: Box<dyn LimitAlgorithm>) -> Self {
        let shards = if config.shards == 0 {
            shard_count()
        } else {
            config.shards
        };
        let tokens = Tokens::new(config.initial_limit, shards);
        let n = tokens.shard_mask() + 1;
        let now = Instant::now();
        let shared = Shared {
            tokens,
            stats: (0..n)
                .map(|_| CachePadded::new(ShardStats::default()))
                .collect(),
            waiters: CachePadded::new(AtomicUsize::new(0)),
            notify: Arc::new(Notify::new()),
            next_update: CachePadded::new(AtomicU64::new(config.min_window.as_nanos() as u64)),
            epoch: now,
            limit_bits: AtomicU64::new((config.initial_limit as f64).to_bits()),
            permits: AtomicUsize::new(config.initial_limit),
            sample_every: CachePadded::new(AtomicU64::new(1)),
            calm_below: CachePadded::new(AtomicUsize::new(usize::MAX)),
            updater: Mutex::new(Updater {
                algorithm,
                window_start: now,
                last_rtt: None,
                windows: 0,
            }),
            config,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The configuration.
    pub(crate) fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// The instant windows are counted from (timestamps in a capacity slot too).
    pub(crate) fn epoch(&self) -> Instant {
        self.shared.epoch
    }

    /// The number of permits (the limit's floor). One relaxed load.
    pub(crate) fn limit(&self) -> usize {
        // Relaxed: a statistic; the permits themselves are the tokens.
        self.shared.permits.load(Ordering::Relaxed)
    }

    /// The limit with its fractional part. One relaxed load.
    pub(crate) fn limit_f64(&self) -> f64 {
        // Relaxed: a statistic.
        f64::from_bits(self.shared.limit_bits.load(Ordering::Relaxed))
    }

    /// Requests holding a permit: `permits + debt − free tokens`, a few relaxed loads (one per
    /// shard). Exact when nothing runs concurrently.
    pub(crate) fn in_flight(&self) -> usize {
        let s = &self.shared;
        let total = self.limit() as isize + s.tokens.debt() as isize - s.tokens.free();
        total.max(0) as usize
    }

    #[inline]
    fn stats(&self, home: usize) -> &ShardStats {
        &self.shared.stats[home & self.shared.tokens.shard_mask()]
    }

    /// Takes a permit if one is free, without waiting. `None` counts as demand at the limit
    /// (the algorithm sees it) but not as a rejection: call [`Limiter::reject`] if you refuse
    /// the request because of it.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<usize> {
        let home = home();
        if self.shared.tokens.take(home) {
            Some(home)
        } else {
            // Relaxed: statistics.
            self.stats(home).limited.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Whether a request starting now (already holding its permit) is calm: few enough in
    /// flight that it cannot have queued at the backend. Only timed requests ask.
    #[inline]
    pub(crate) fn is_calm(&self) -> bool {
        // Relaxed: a threshold the updater moves once per window; any recent value will do.
        let below = self.shared.calm_below.load(Ordering::Relaxed);
        below == usize::MAX || self.in_flight() <= below
    }

    /// Counts demand at the limit without a permit taken (a layer that enforces the limit
    /// itself queued the request): the window sees it as `limited`.
    #[inline]
    pub(crate) fn limited(&self) {
        // Relaxed: statistics.
        self.stats(home()).limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one refused request in the snapshot's `rejected`.
    pub(crate) fn reject(&self) {
        // Relaxed: statistics.
        self.stats(home()).rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A view of the limiter now. Briefly takes the updater's lock; not for the request path.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let s = &self.shared;
        let (rtt, windows, algorithm) = {
            let u = s.updater.lock().unwrap_or_else(|e| e.into_inner());
            (u.algorithm.rtt(), u.windows, u.algorithm.name())
        };
        // Relaxed: statistics.
        let sum = |f: fn(&ShardStats) -> &AtomicU64| -> u64 {
            s.stats.iter().map(|st| f(st).load(Ordering::Relaxed)).sum()
        };
        Snapshot {
            limit: self.limit_f64(),
            in_flight: self.in_flight(),
            // Relaxed: statistics.
            waiting: s.waiters.load(Ordering::Relaxed),
            rtt,
            rejected: sum(|st| &st.rejected),
            cancelled: sum(|st| &st.dropped_total),
            windows,
            algorithm,
        }
    }

    /// Gives a permit's token back and wakes a waiter if there is one.
    #[inline]
    pub(crate) fn release(&self, home: usize) {
        // One `fetch_add`; it says whether tasks wait (module docs).
        if self.shared.tokens.give(home) == Some(true) {
            self.shared.notify.notify_one();
        }
    }

    /// `weight`: how many requests this one stands for in the window's success count (the
    /// sampling rate when timed, 0 when untimed, 1 when the caller supplied the RTT).
    /// `release`: give the permit back now (otherwise the caller still holds it).
    #[inline]
    pub(crate) fn finish(
        &self,
        rtt: Option<Duration>,
        outcome: Outcome,
        now: Option<Instant>,
        weight: u64,
        calm: bool,
        release: bool,
    ) {
        let home = home();
        let st = self.stats(home);
        // Relaxed everywhere: window statistics (see the ground rules).
        match outcome {
            Outcome::Success => {
                if weight > 0 {
                    st.successes.fetch_add(weight, Ordering::Relaxed);
                }
                if let Some(rtt) = rtt {
                    st.samples.fetch_add(1, Ordering::Relaxed);
                    st.rtt_sum_ns
                        .fetch_add(rtt.as_nanos() as u64, Ordering::Relaxed);
                    let us = rtt.as_micros().min(u128::from(u32::MAX)) as u64;
                    st.rtt_sq_us.fetch_add(us * us, Ordering::Relaxed);
                    if calm {
                        st.calm_samples.fetch_add(1, Ordering::Relaxed);
                        st.calm_rtt_sum_ns
                            .fetch_add(rtt.as_nanos() as u64, Ordering::Relaxed);
                        st.calm_rtt_sq_us.fetch_add(us * us, Ordering::Relaxed);
                    }
                }
            }
            Outcome::Failure => {
                st.failures.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Ignored => {}
        }
        if release {
            self.release(home);
        }
        if let Some(now) = now {
            self.maybe_update(now);
        }
    }

    pub(crate) fn cancelled(&self) {
        let home = home();
        let st = self.stats(home);
        // Relaxed: statistics.
        st.dropped.fetch_add(1, Ordering::Relaxed);
        st.dropped_total.fetch_add(1, Ordering::Relaxed);
        self.release(home);
    }
}
