//! The shared admission state: capacity accounting, the fast path and statistics.
//!
//! # Ground rules
//!
//! - `hot.word` holds the number of requests in flight (low 32 bits) and the `WAITERS` flag
//!   (bit 63), set while any request is queued. Every decision about a slot is made from the
//!   result of one read-modify-write of this word, and those are totally ordered, so each may
//!   be `Relaxed`: no other memory is published through the word (the queues live under the
//!   `slow` mutex).
//! - Anyone may take a slot with a compare-and-swap while `WAITERS` is clear and the count is
//!   below the limit (the fast path). While `WAITERS` is set, only a holder of the `slow` lock
//!   raises the count (the fast path's CAS fails or is never tried), so slots go to queued
//!   requests in priority order.
//! - Anyone may lower the count (a request finished). If the flag was set when they did, they
//!   take the lock and dispatch, so a freed slot never sits idle while someone waits.
//! - `WAITERS` is set and cleared only under the lock, when the queues become non-empty or
//!   empty.
//! - `class_in_flight` (kept only when some class has a reservation) may lag `word` by a
//!   request that is between its two updates; reservations are then off by one for a moment.

use crate::capacity::{Capacity, FixedLimit};
use crate::config::{AdmissionConfig, CodelConfig, MAX_CLASSES};
use crate::error::{Reason, Rejected};
use crate::queue::Slow;
use crate::ratelimit::LocalLimiter;
use crate::stats::{ClassSnapshot, Snapshot};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard};
use crate::throttle::Throttle;
use crossbeam_utils::CachePadded;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use tollgate_core::counter::{shard_count, shard_index};
use tollgate_core::ewma::AtomicEwma;

pub(crate) const WAITERS: u64 = 1 << 63;
pub(crate) const COUNT: u64 = (1 << 32) - 1;
const LATENCY_ALPHA: f64 = 0.1;

/// Where the limit comes from; the fixed case avoids a virtual call on the fast path.
#[derive(Debug)]
pub(crate) enum LimitSource {
    Fixed(usize),
    Dynamic(Arc<dyn Capacity>),
}

#[derive(Debug)]
pub(crate) struct ClassInfo {
    pub(crate) name: Arc<str>,
    pub(crate) queue_capacity: usize,
    pub(crate) reserved: usize,
    /// The headrooms of the classes above this one, added up.
    pub(crate) headroom_above: usize,
}

/// What the fast path reads and writes, on one cache line.
#[derive(Debug)]
pub(crate) struct Hot {
    /// In flight (low 32 bits) and `WAITERS`; see the ground rules.
    pub(crate) word: AtomicU64,
    /// The fixed limit (unused with a dynamic capacity).
    fixed: FixedLimit,
}

/// The state every clone of the service, every response future and the handle share.
#[derive(Debug)]
pub(crate) struct Controller {
    pub(crate) hot: CachePadded<Hot>,
    pub(crate) dynamic: Option<Arc<dyn Capacity>>,
    wants_latency: bool,
    pub(crate) classes: Box<[ClassInfo]>,
    /// Whether any class has a reservation, so `class_in_flight` must be kept.
    pub(crate) track: bool,
    pub(crate) class_in_flight: Box<[CachePadded<AtomicUsize>]>,
    rejected: Box<[[std::sync::atomic::AtomicU64; 6]]>,
    latency_ns: AtomicEwma,
    /// The same average of the squared latency (nanoseconds squared), for its spread.
    latency_sq_ns: AtomicEwma,
    pub(crate) codel: CodelConfig,
    pub(crate) max_queued: usize,
    pub(crate) slow: Mutex<Slow>,
    pub(crate) rate: Option<LocalLimiter>,
    #[cfg(feature = "redis")]
    pub(crate) remote: Option<crate::remote::RemoteLimiter>,
    pub(crate) throttle: Option<Throttle>,
    /// Requests each shard admitted by `try_fast`, per class: one line per shard, written only
    /// by the threads of that shard, summed under the lock when a counting window closes (see
    /// `pressure`) and for snapshots.
    fast_admitted: Box<[CachePadded<[AtomicU64; MAX_CLASSES]>]>,
}

impl Controller {
    /// Builds the state for a validated config.
    pub(crate) fn new(config: &AdmissionConfig, limit: LimitSource) -> Self {
        let n = config.classes.len();
        let (fixed, dynamic) = match limit {
            LimitSource::Fixed(n) => (n, None),
            LimitSource::Dynamic(c) => (1, Some(c)),
        };
        Self {
            hot: CachePadded::new(Hot {
                word: AtomicU64::new(0),
                fixed: FixedLimit::new(fixed),
            }),
            wants_latency: dynamic.as_ref().is_some_and(|c| c.wants_latency()),
            dynamic,
            classes: config
                .classes
                .iter()
                .enumerate()
                .map(|(i, c)| ClassInfo {
                    name: c.name.as_str().into(),
                    queue_capacity: c.queue_capacity,
                    reserved: c.reserved,
                    headroom_above: config.classes[..i].iter().map(|h| h.headroom).sum(),
                })
                .collect(),
            track: config.classes.iter().any(|c| c.reserved > 0),
            class_in_flight: (0..n)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            rejected: (0..n).map(|_| Default::default()).collect(),
            latency_ns: AtomicEwma::new(),
            latency_sq_ns: AtomicEwma::new(),
            codel: config.codel,
            max_queued: config.max_queued,
            slow: Mutex::new(Slow::new(&config.classes)),
            rate: config
                .rate_limit
                .as_ref()
                .map(|r| LocalLimiter::new(r.burst, r.period, r.max_keys)),
            #[cfg(feature = "redis")]
            remote: config.rate_limit.as_ref().and_then(|r| {
                let redis = r.redis.as_ref()?;
                Some(crate::remote::RemoteLimiter::new(redis, r.burst, r.period))
            }),
            throttle: config.throttle.as_ref().map(Throttle::new),
            fast_admitted: (0..shard_count())
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }

    /// Requests of `class` admitted by `try_fast` so far, over all shards.
    pub(crate) fn fast_admitted(&self, class: usize) -> u64 {
        // Relaxed: statistics and an averaged rate (`pressure`); a reading a few requests
        // behind is fine.
        self.fast_admitted
            .iter()
            .map(|s| s[class].load(Ordering::Relaxed))
            .sum()
    }

    /// Requests admitted by `try_fast` so far, over all shards and classes: read under the
    /// queue's lock each time the overload rates close a counting window (see `pressure`).
    pub(crate) fn fast_admitted_total(&self) -> u64 {
        (0..self.classes.len()).map(|c| self.fast_admitted(c)).sum()
    }

    /// Tells a dynamic capacity that a request found the limit reached.
    #[inline]
    pub(crate) fn capacity_limited(&self) {
        if let Some(c) = &self.dynamic {
            c.on_limited();
        }
    }

    #[inline]
    pub(crate) fn limit(&self) -> usize {
        match &self.dynamic {
            None => self.hot.fixed.limit(),
            Some(c) => c.limit().max(1),
        }
    }

    /// The most in flight when a request of `class` may still take a slot: the limit less the
    /// headroom kept for the classes above it (at least 1).
    #[inline]
    pub(crate) fn class_limit(&self, class: usize, limit: usize) -> usize {
        limit
            .saturating_sub(self.classes[class].headroom_above)
            .max(1)
    }

    pub(crate) fn fixed(&self) -> Option<&FixedLimit> {
        self.dynamic.is_none().then_some(&self.hot.fixed)
    }

    /// Requests in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        // Relaxed: see the ground rules; this is a reading for statistics.
        (self.hot.word.load(Ordering::Relaxed) & COUNT) as usize
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Slow> {
        // The queue state is only changed in short steps that leave it consistent, and no user
        // code runs under the lock except waking wakers: a poisoned lock is still usable.
        self.slow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The average time in service of requests whose latency was measured, if any was.
    pub(crate) fn latency_estimate(&self) -> Duration {
        self.latency_ns
            .value()
            .map_or(Duration::ZERO, |ns| Duration::from_nanos(ns as u64))
    }

    /// The spread of the measured latency: its standard deviation over its mean (from the two
    /// averages; 0 before any latency was measured).
    pub(crate) fn latency_cv(&self) -> f64 {
        let (Some(mean), Some(sq)) = (self.latency_ns.value(), self.latency_sq_ns.value()) else {
            return 0.0;
        };
        if mean <= 0.0 {
            return 0.0;
        }
        // `max`: the two averages are updated one after the other, and by several threads;
        // for a moment they may disagree by a sample.
        (sq - mean * mean).max(0.0).sqrt() / mean
    }

    /// Whether a request due at `deadline` cannot finish if it starts at `now`.
    pub(crate) fn unmeetable(&self, deadline: Instant, now: Instant) -> bool {
        now.checked_add(self.latency_estimate())
            .is_none_or(|done| deadline <= done)
    }

    /// A suggested wait before retrying: about the time the queue ahead needs to drain, at
    /// least the CoDel target and at most 10 s.
    pub(crate) fn retry_hint(&self, queued: usize) -> Duration {
        let per_request = self.latency_estimate().max(self.codel.target);
        let n = (queued as u32).saturating_add(1);
        // `max` then `min`, not `clamp`: a CoDel target above 10 s must not panic.
        (per_request.saturating_mul(n) / self.limit().max(1) as u32)
            .max(self.codel.target)
            .min(Duration::from_secs(10))
    }

    /// Counts a rejection (the caller builds the error).
    pub(crate) fn count_rejection(&self, class: usize, reason: Reason) {
        // Relaxed: statistics only.
        self.rejected[class][reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts and builds a rejection.
    pub(crate) fn reject(
        &self,
        class: usize,
        reason: Reason,
        retry_after: Option<Duration>,
    ) -> Rejected {
        self.count_rejection(class, reason);
        Rejected::new(class, self.classes[class].name.clone(), reason, retry_after)
    }

    /// A snapshot of every class.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let fast: Vec<u64> = (0..self.classes.len())
            .map(|c| self.fast_admitted(c))
            .collect();
        let slow = self.lock();
        let classes = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let q = &slow.queues[i];
                let fast = fast[i];
                ClassSnapshot {
                    name: c.name.to_string(),
                    admitted: fast + q.admitted,
                    queued: q.len(),
                    // Relaxed: statistics only.
                    rejected_by_reason: std::array::from_fn(|r| {
                        self.rejected[i][r].load(Ordering::Relaxed)
                    }),
                    queue_wait: q.wait.waits(fast),
                }
            })
            .collect();
        Snapshot {
            classes,
            in_flight: self.in_flight(),
            limit: self.limit(),
            queued: slow.queued,
            rate_limit_keys: self.rate.as_ref().map_or(0, |r| r.keys()),
        }
    }
}

/// One shard's handle on the controller: what a response future holds.
///
/// Every request clones a reference to the controller, to give its slot back when it ends. If
/// all threads cloned one `Arc`, its reference count would be a second cache line written by
/// every core on every request; each thread instead clones the handle of its own shard
/// ([`shard_index`]), whose count and admission counters (the shard's line of the controller's
/// `fast_admitted`, where the queue's lock holder can sum them) no other core touches while
/// there are no more threads than shards.
///
/// The shard also keeps copies of the controller's settings that the fast path reads, so a
/// request touches only its shard's lines and the controller's hot line.
#[derive(Debug)]
pub(crate) struct Shard {
    ctrl: Arc<Controller>,
    pub(crate) flags: Flags,
    /// This shard's line in the controller's `fast_admitted`.
    index: usize,
}

/// Settings the fast path reads, copied into each shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flags {
    /// Some class has a reservation: keep `class_in_flight`.
    pub(crate) track: bool,
    /// The limit comes from a `Capacity`.
    pub(crate) dynamic: bool,
    /// Admitted requests carry their start time (the capacity wants latencies).
    pub(crate) wants_latency: bool,
    /// A rate limit or throttle is configured.
    pub(crate) prechecks: bool,
    /// Throttling is configured.
    pub(crate) throttle: bool,
    /// The lowest class's index.
    pub(crate) last_class: usize,
    /// Some class keeps headroom.
    pub(crate) headroom: bool,
    /// The rate limit lives in Redis.
    #[cfg(feature = "redis")]
    pub(crate) remote: bool,
}

impl Shard {
    /// The class index for a prioritizer's answer: past the last class means the last.
    #[inline]
    pub(crate) fn class_of(&self, class: usize) -> usize {
        class.min(self.flags.last_class)
    }

    /// Takes a slot if nobody is queued and the limit allows, and counts the admission. Never
    /// waits.
    #[inline]
    pub(crate) fn try_fast(&self, class: usize) -> bool {
        let hot = &self.ctrl.hot;
        // Relaxed (all accesses to `word`): see the ground rules in the module docs.
        let mut w = hot.word.load(Ordering::Relaxed);
        loop {
            let mut limit = if self.flags.dynamic {
                self.ctrl.limit()
            } else {
                hot.fixed.limit()
            };
            if self.flags.headroom {
                limit = self.ctrl.class_limit(class, limit);
            }
            if w & WAITERS != 0 || (w & COUNT) as usize >= limit {
                return false;
            }
            match hot
                .word
                .compare_exchange_weak(w, w + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => w = actual,
            }
        }
        if self.flags.track {
            // Relaxed: reservations are approximate by one request, see the ground rules.
            self.ctrl.class_in_flight[class].fetch_add(1, Ordering::Relaxed);
        }
        // Relaxed, and a load and a store rather than a locked add: statistics, and the
        // overload bound's averaged admission rate, which a lost increment barely moves. Each
        // thread has its own shard while there are no more threads than shards; past that,
        // two threads sharing a shard may rarely lose an increment.
        let cell = &self.ctrl.fast_admitted[self.index][class];
        cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        true
    }

    /// Gives back a slot taken by `try_fast` or granted from a queue.
    #[inline]
    /// Gives a slot back; `now` when the caller already read the clock (it timed the call).
    pub(crate) fn release(&self, class: usize, started: Option<Instant>, now: Option<Instant>) {
        let ctrl = &*self.ctrl;
        if self.flags.track {
            // Relaxed: see `try_fast`.
            ctrl.class_in_flight[class].fetch_sub(1, Ordering::Relaxed);
        }
        // Relaxed: see the ground rules.
        let prev = ctrl.hot.word.fetch_sub(1, Ordering::Relaxed);
        if prev & WAITERS == 0 && started.is_none() {
            return;
        }
        ctrl.released(prev & WAITERS != 0, started, now);
    }
}

impl Controller {
    /// The slow part of a release: dispatch to waiters, learn the latency.
    #[cold]
    fn released(&self, waiters: bool, started: Option<Instant>, now: Option<Instant>) {
        let now = now.or_else(|| (waiters || started.is_some()).then(Instant::now));
        if let Some(now) = now
            && waiters
        {
            let mut slow = self.lock();
            self.dispatch(&mut slow, now);
        }
        let latency = started
            .zip(now)
            .map(|(s, n)| n.saturating_duration_since(s));
        if let Some(l) = latency {
            let ns = l.as_nanos() as f64;
            self.latency_ns.update(ns, LATENCY_ALPHA);
            self.latency_sq_ns.update(ns * ns, LATENCY_ALPHA);
        }
    }
}

impl Deref for Shard {
    type Target = Controller;

    #[inline]
    fn deref(&self) -> &Controller {
        &self.ctrl
    }
}

/// A reference to the controller through one shard.
pub(crate) type ShardRef = Arc<CachePadded<Shard>>;

/// Every shard's handle. Services, layers and the admission handle hold this (the controller
/// does not, so there is no reference cycle).
#[derive(Debug)]
pub(crate) struct Shards {
    list: Box<[ShardRef]>,
}

impl Shards {
    pub(crate) fn new(ctrl: Controller) -> Self {
        let ctrl = Arc::new(ctrl);
        let n = ctrl.classes.len();
        let list = (0..shard_count())
            .map(|index| {
                Arc::new(CachePadded::new(Shard {
                    flags: Flags {
                        track: ctrl.track,
                        dynamic: ctrl.dynamic.is_some(),
                        wants_latency: ctrl.wants_latency,
                        prechecks: ctrl.rate.is_some() || ctrl.throttle.is_some(),
                        throttle: ctrl.throttle.is_some(),
                        last_class: n - 1,
                        headroom: ctrl.classes.iter().any(|c| c.headroom_above > 0),
                        #[cfg(feature = "redis")]
                        remote: ctrl.remote.is_some(),
                    },
                    ctrl: ctrl.clone(),
                    index,
                }))
            })
            .collect();
        Self { list }
    }

    /// This thread's shard.
    #[inline]
    pub(crate) fn local(&self) -> &ShardRef {
        &self.list[shard_index() & (self.list.len() - 1)]
    }

    pub(crate) fn ctrl(&self) -> &Controller {
        &self.list[0].ctrl
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.ctrl().snapshot()
    }
}
