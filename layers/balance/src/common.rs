//! Settings, the clock and the ejection bookkeeping shared by every endpoint of a balancer.
//!
//! Ejection decisions are rare (a failure streak, a sweep), so they take a short lock here: it
//! keeps the cap on the ejected share exact. Nothing on the request path takes it.

use crate::config::{BalanceConfig, HealthConfig, OutlierConfig};
use crate::endpoint::Core;
use crate::sync::atomic::Ordering;
use crate::sync::{Mutex, lock};
use tokio::time::Instant;
use tollgate_core::Outcome;
use tollgate_core::counter::{shard_count, shard_index};

/// Picks on one thread closer together than this (nanoseconds) make it a busy thread.
const BUSY_GAP_NS: u64 = 20_000;
/// On a busy thread, one successful request in this many is timed to its end.
const TIME_ONE_IN: u32 = 8;

/// One shard's view of how busy its thread is, for [`Common::time_to_end`]. Aligned to its
/// own cache lines so threads never write each other's.
///
/// Plain `std` atomics, loaded and stored `Relaxed` (no read-modify-write): a heuristic on a
/// line only its own thread writes while there are no more threads than shards; two threads
/// sharing a shard only time a request more or less.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Sampler {
    last_pick: std::sync::atomic::AtomicU64,
    left: std::sync::atomic::AtomicU32,
}

/// Settings and shared state every endpoint of one balancer refers to.
#[derive(Debug)]
pub(crate) struct Common {
    pub(crate) base: Instant,
    pub(crate) decay_ns: f64,
    pub(crate) default_rtt_ns: f64,
    pub(crate) failure_weight: f64,
    pub(crate) failure_decay_ns: f64,
    pub(crate) failure_penalty: f64,
    pub(crate) cancel_failure_ns: u64,
    pub(crate) slow_start_ns: u64,
    pub(crate) slow_start_min: f64,
    pub(crate) panic_threshold: f64,
    pub(crate) outlier: OutlierConfig,
    pub(crate) health: HealthConfig,
    /// `hash.load_factor`: the bound on a hashed endpoint's load.
    pub(crate) load_factor: f64,
    /// `hash.vnodes`: ring points per endpoint of average weight.
    pub(crate) vnodes: u32,
    ejections: Mutex<Ejections>,
    /// One per shard ([`shard_index`]).
    samplers: Box<[Sampler]>,
}

/// Which endpoints are ejected now, for the cap on the ejected share.
#[derive(Debug, Default)]
struct Ejections {
    /// Endpoints in the current set.
    total: usize,
    /// `(endpoint id, ejected until)`; entries in the past are pruned lazily.
    ejected: Vec<(u64, u64)>,
}

pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Common {
    pub(crate) fn new(config: &BalanceConfig, base: Instant) -> Self {
        Self {
            base,
            decay_ns: config.decay.as_nanos() as f64,
            default_rtt_ns: config.default_rtt.as_nanos() as f64,
            failure_weight: config.failure_weight,
            failure_decay_ns: config.failure_decay.as_nanos() as f64,
            failure_penalty: config.failure_penalty,
            cancel_failure_ns: nanos(config.cancel_failure_after),
            slow_start_ns: nanos(config.slow_start),
            slow_start_min: config.slow_start_min_weight,
            panic_threshold: config.panic_threshold,
            outlier: config.outlier.clone(),
            health: config.health.clone(),
            load_factor: config.hash.load_factor,
            vnodes: config.hash.vnodes,
            ejections: Mutex::new(Ejections::default()),
            samplers: (0..shard_count()).map(|_| Sampler::default()).collect(),
        }
    }

    /// Nanoseconds since the base instant, on tokio's (possibly paused) clock.
    pub(crate) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    /// Whether a request sent at `now` (a fresh clock read) on this thread should read the
    /// clock again when it succeeds, to sample its latency. Yes, unless the thread is busy:
    /// its picks come less than `BUSY_GAP_NS` apart (but not at the very same instant, as
    /// they do under tokio's paused clock); then one request in `TIME_ONE_IN` is timed, and
    /// the others save the second clock read. At that rate the timed ones still feed every
    /// endpoint's estimate many times a second, and the load factor of the cost sees every
    /// request. Failures and cancellations are timed whatever this says.
    pub(crate) fn time_to_end(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.samplers[shard_index() & (self.samplers.len() - 1)];
        // Relaxed (all here): a heuristic, see `Sampler`.
        let last = s.last_pick.load(Relaxed);
        s.last_pick.store(now, Relaxed);
        let gap = now.wrapping_sub(last);
        if now <= last || gap >= BUSY_GAP_NS {
            s.left.store(0, Relaxed);
            return true;
        }
        match s.left.load(Relaxed) {
            0 => {
                s.left.store(TIME_ONE_IN - 1, Relaxed);
                true
            }
            left => {
                s.left.store(left - 1, Relaxed);
                false
            }
        }
    }

    /// How a request dropped unfinished after `elapsed` nanoseconds counts.
    pub(crate) fn cancelled(&self, elapsed: u64) -> Outcome {
        if elapsed >= self.cancel_failure_ns {
            Outcome::Failure
        } else {
            Outcome::Ignored
        }
    }

    /// Whether slow start is on.
    pub(crate) fn slow_start(&self) -> bool {
        self.slow_start_ns > 0
    }

    /// Records the size of the endpoint set and forgets ejections of endpoints not in it.
    pub(crate) fn set_members(&self, total: usize, keep: impl Fn(u64) -> bool) {
        let mut st = lock(&self.ejections);
        st.total = total;
        st.ejected.retain(|(id, _)| keep(*id));
    }

    /// Ejects `core` if it is not ejected already and the cap allows; returns whether it did.
    pub(crate) fn try_eject(&self, core: &Core, now: u64) -> bool {
        let o = &self.outlier;
        let mut st = lock(&self.ejections);
        // Relaxed: the lock orders every write of the ejection fields.
        let prev_until = core.ejected_until.load(Ordering::Relaxed);
        if now < prev_until || core.removed.load(Ordering::Relaxed) {
            return false;
        }
        st.ejected.retain(|(_, until)| *until > now);
        let cap = (o.max_ejection_share * st.total as f64 + 1e-9).floor() as usize;
        if st.ejected.len() >= cap {
            core.consecutive.store(0, Ordering::Relaxed);
            return false;
        }
        // The repeat count goes down by one for every interval spent clear of ejection.
        let interval = nanos(o.interval).max(1);
        let prev = core.ejections.load(Ordering::Relaxed);
        let cleared = u32::try_from(now.saturating_sub(prev_until) / interval).unwrap_or(u32::MAX);
        let count = if prev_until == 0 {
            1
        } else {
            prev.saturating_sub(cleared).saturating_add(1)
        };
        let time = o
            .base_ejection_time
            .saturating_mul(count)
            .min(o.max_ejection_time);
        let until = now.saturating_add(nanos(time)).max(1);
        core.ejections.store(count, Ordering::Relaxed);
        core.ejected_until.store(until, Ordering::Relaxed);
        core.consecutive.store(0, Ordering::Relaxed);
        if self.slow_start() {
            core.ramp_from.store(until, Ordering::Relaxed);
        }
        st.ejected.push((core.id, until));
        tracing::trace!(
            endpoint = core.id,
            ejections = count,
            ?time,
            "endpoint ejected"
        );
        true
    }

    /// Endpoints ejected at `now`.
    pub(crate) fn ejected_now(&self, now: u64) -> usize {
        lock(&self.ejections)
            .ejected
            .iter()
            .filter(|(_, until)| *until > now)
            .count()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn common() -> Common {
        Common::new(&BalanceConfig::default(), Instant::now())
    }

    #[test]
    fn picks_at_one_instant_are_all_timed() {
        // Tokio's paused clock: every pick at the same time, so every request is timed.
        let c = common();
        assert!((0..100).all(|_| c.time_to_end(5_000)));
    }

    #[test]
    fn a_busy_thread_times_one_request_in_eight() {
        let c = common();
        let timed = (1..=800u64)
            .filter(|i| c.time_to_end(1_000_000 + i * 1_000))
            .count();
        // The first pick (nothing before it to compare) and then one in eight.
        assert_eq!(timed, 1 + 100);
    }

    #[test]
    fn a_pause_or_a_slow_thread_times_everything() {
        let c = common();
        for i in 1..=20u64 {
            c.time_to_end(i * 1_000);
        }
        // A gap of the busy threshold or more: timed, and the countdown starts again.
        assert!(c.time_to_end(20_000 + BUSY_GAP_NS));
        assert!((1..=50u64).all(|i| c.time_to_end(20_000 + BUSY_GAP_NS * (i + 1))));
        // A clock that went backwards (another thread on this shard): timed.
        assert!(c.time_to_end(1));
    }
}
