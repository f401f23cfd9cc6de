//! Per-endpoint state, kept in atomics so that picking and finishing a request take no lock.
//!
//! # Ground rules
//!
//! - `in_flight` and `removed` form a Dekker pair: a picker increments `in_flight` and then
//!   reads `removed`; the writer that removes the endpoint sets `removed` and then reads
//!   `in_flight`, each side with a `SeqCst` fence between its write and its read. So either the picker sees the removal and backs out, or the
//!   writer sees the reservation and keeps the endpoint draining until it is given back. A
//!   removed endpoint that was once seen with nothing in flight never gets a new request.
//! - The latency and failure-rate estimates, counters and slow-start start are statistics:
//!   they guard no other memory and are read and written `Relaxed`; two completions racing on
//!   the estimate fold their samples in either order.
//! - `ejected_until` and `ejections` are written only under the ejection lock
//!   ([`Common::try_eject`](crate::common::Common::try_eject)); readers on the request path load them `Relaxed` (a pick racing
//!   with an ejection may still go to the endpoint, as if it had come a moment earlier).
//! - `healthy` and the check counters are written only by the health-check task.
//! - `backoff_until` only grows (`fetch_max`), written by completions whose answer asked to
//!   back off; picks read it `Relaxed` (a hint, like the ejection).
//!
//! Times are nanoseconds since the balancer's base instant ([`Common::now`](crate::common::Common::now)), so the
//! arithmetic here is pure and runs under loom and the fuzzer without a clock.

use crate::common::Common;
use crate::signal::EndpointSignal;
use crate::sync::Arc;
use crate::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use tollgate_core::Outcome;

/// No sample yet in a latency estimate.
const EMPTY: u64 = u64::MAX;
/// No slow-start ramp in progress.
const NO_RAMP: u64 = u64::MAX;
/// The smallest success rate the failure penalty divides by.
const MIN_SUCCESS: f64 = 1e-3;
/// How much dearer an endpoint looks while it asked to back off (429/503 with `Retry-After`):
/// it still gets requests when the other choice is as loaded or worse, but far fewer.
pub(crate) const BACK_OFF_PENALTY: f64 = 16.0;
/// The longest back-off an answer can ask for.
pub(crate) const MAX_BACK_OFF: std::time::Duration = std::time::Duration::from_secs(300);

/// The state of one endpoint. See the module's ground rules.
///
/// `repr(C)` keeps the fields every request reads or writes together at the start of one
/// cache line (the struct is line-aligned), and the rarely written ones after them, so two
/// threads sharing an endpoint move one line per request, not three.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Core {
    // Written by every request.
    pub(crate) in_flight: AtomicUsize,
    rtt: AtomicU64,
    rtt_at: AtomicU64,
    pub(crate) successes: AtomicU64,
    // Read by every pick.
    weight: AtomicU64,
    pub(crate) ejected_until: AtomicU64,
    pub(crate) common: Arc<Common>,
    pub(crate) removed: AtomicBool,
    pub(crate) healthy: AtomicBool,
    pub(crate) consecutive: AtomicU32,
    // Written on failures, cancellations, checks and sweeps.
    fail: AtomicU64,
    fail_at: AtomicU64,
    pub(crate) ramp_from: AtomicU64,
    /// Until when (ns) the endpoint asked to back off; 0 when it did not.
    backoff_until: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    swept_successes: AtomicU64,
    swept_failures: AtomicU64,
    /// The success rate of the last swept window (f64 bits; `EMPTY` when too few requests).
    window_rate: AtomicU64,
    pub(crate) ejections: AtomicU32,
    checks_passed: AtomicU32,
    checks_failed: AtomicU32,
    pub(crate) id: u64,
    signal: Option<std::sync::Arc<dyn EndpointSignal>>,
}

impl Core {
    /// A fresh endpoint that joined at `joined`; `ramp_from` starts its slow start at that
    /// time.
    pub(crate) fn new(
        id: u64,
        common: Arc<Common>,
        weight: f64,
        joined: u64,
        ramp_from: Option<u64>,
        signal: Option<std::sync::Arc<dyn EndpointSignal>>,
    ) -> Self {
        let ramp = match ramp_from {
            Some(t) if common.slow_start() => t,
            _ => NO_RAMP,
        };
        Self {
            id,
            common,
            weight: AtomicU64::new(weight.to_bits()),
            in_flight: AtomicUsize::new(0),
            removed: AtomicBool::new(false),
            rtt: AtomicU64::new(EMPTY),
            rtt_at: AtomicU64::new(joined),
            fail: AtomicU64::new(0f64.to_bits()),
            fail_at: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            cancelled: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            swept_successes: AtomicU64::new(0),
            swept_failures: AtomicU64::new(0),
            window_rate: AtomicU64::new(EMPTY),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            healthy: AtomicBool::new(true),
            checks_passed: AtomicU32::new(0),
            checks_failed: AtomicU32::new(0),
            ramp_from: AtomicU64::new(ramp),
            backoff_until: AtomicU64::new(0),
            signal,
        }
    }

    /// The configured weight.
    pub(crate) fn weight(&self) -> f64 {
        // Relaxed: a plain setting; a pick may use the old one a moment longer.
        f64::from_bits(self.weight.load(Ordering::Relaxed))
    }

    pub(crate) fn set_weight(&self, weight: f64) {
        // Relaxed: see `weight`.
        self.weight.store(weight.to_bits(), Ordering::Relaxed);
    }

    /// Whether the endpoint passes its health checks, is not ejected at `now` and its
    /// external signal (if any) lets it take requests.
    pub(crate) fn admitted(&self, now: u64) -> bool {
        // Relaxed: see the ground rules; a stale answer only moves one pick.
        self.healthy.load(Ordering::Relaxed)
            && now >= self.ejected_until.load(Ordering::Relaxed)
            && self.signalled()
    }

    /// Whether the external signal, if any, lets the endpoint take requests.
    pub(crate) fn signalled(&self) -> bool {
        self.signal.as_ref().is_none_or(|s| s.is_available())
    }

    /// Whether the endpoint is ejected at `now`.
    pub(crate) fn ejected(&self, now: u64) -> bool {
        // Relaxed: see `admitted`.
        now < self.ejected_until.load(Ordering::Relaxed)
    }

    /// Requests reserved or running.
    pub(crate) fn in_flight(&self) -> usize {
        // Relaxed: statistics only (the drain check has its own fence and Acquire load).
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency estimate at `now`, in nanoseconds; it decays towards zero while
    /// no sample arrives, so an idle endpoint is tried again.
    pub(crate) fn latency(&self, now: u64) -> f64 {
        // Relaxed: statistics only.
        let bits = self.rtt.load(Ordering::Relaxed);
        // Before the first sample, `rtt_at` is when the endpoint joined: the default decays like
        // an estimate, so an endpoint never tried is tried eventually.
        let at = self.rtt_at.load(Ordering::Relaxed);
        let value = if bits == EMPTY {
            self.common.default_rtt_ns
        } else {
            f64::from_bits(bits)
        };
        value * self.decay(now.saturating_sub(at), self.common.decay_ns)
    }

    /// The failure rate at `now`, in `[0, 1]`, decayed towards zero since its last sample.
    pub(crate) fn failure_rate(&self, now: u64) -> f64 {
        // Relaxed: statistics only.
        let f = f64::from_bits(self.fail.load(Ordering::Relaxed));
        if f == 0.0 {
            return 0.0;
        }
        let at = self.fail_at.load(Ordering::Relaxed);
        f * self.decay(now.saturating_sub(at), self.common.failure_decay_ns)
    }

    /// `e^(-elapsed / tau)`, with a series for the short gaps between requests (most calls):
    /// its error there is below 2e-10, and it costs a few multiplications instead of `exp`.
    fn decay(&self, elapsed: u64, tau: f64) -> f64 {
        let x = elapsed as f64 / tau;
        if x < 1e-3 {
            1.0 - x + 0.5 * x * x
        } else if x > 64.0 {
            0.0
        } else {
            (-x).exp()
        }
    }

    /// Requests sent to the endpoint: finished, cancelled or in flight.
    pub(crate) fn requests(&self) -> u64 {
        // Relaxed: statistics only.
        self.successes.load(Ordering::Relaxed)
            + self.failures.load(Ordering::Relaxed)
            + self.cancelled.load(Ordering::Relaxed)
            + self.in_flight() as u64
    }

    /// The share of its weight the endpoint has at `now` (slow start), in `(0, 1]`.
    pub(crate) fn ramp(&self, now: u64) -> f64 {
        // Relaxed: statistics only; a racing reset of the ramp moves one pick.
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == NO_RAMP {
            return 1.0;
        }
        let c = &self.common;
        let elapsed = now.saturating_sub(from);
        if elapsed >= c.slow_start_ns {
            return 1.0;
        }
        c.slow_start_min + (1.0 - c.slow_start_min) * (elapsed as f64 / c.slow_start_ns as f64)
    }

    /// Whether slow start is in progress at `now`.
    pub(crate) fn in_slow_start(&self, now: u64) -> bool {
        self.ramp(now) < 1.0
    }

    /// `latency × (in flight + 1) ÷ (weight × ramp) ÷ success rate^penalty`: lower is better.
    pub(crate) fn cost(&self, now: u64) -> f64 {
        let c = &self.common;
        let load = (self.in_flight() + 1) as f64;
        let mut cost = self.latency(now).max(1.0) * load / (self.weight() * self.ramp(now));
        if c.failure_penalty > 0.0 {
            let f = self.failure_rate(now);
            if f > 0.0 {
                cost /= (1.0 - f).max(MIN_SUCCESS).powf(c.failure_penalty);
            }
        }
        if self.backing_off(now) {
            cost *= BACK_OFF_PENALTY;
        }
        cost
    }

    /// Records that the endpoint asked, at `now`, for no requests during `wait` (at most
    /// [`MAX_BACK_OFF`]); a longer request already recorded stands.
    pub(crate) fn back_off(&self, now: u64, wait: std::time::Duration) {
        let until = now.saturating_add(crate::common::nanos(wait.min(MAX_BACK_OFF)));
        // Relaxed: a hint for picks; it guards no other memory.
        self.backoff_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether the endpoint's last back-off request still holds at `now`.
    pub(crate) fn backing_off(&self, now: u64) -> bool {
        // Relaxed: see `back_off`.
        self.backoff_until.load(Ordering::Relaxed) > now
    }

    /// Takes a slot for a new request unless the endpoint was removed; see the ground rules.
    pub(crate) fn reserve(&self) -> bool {
        // Relaxed increment, then a SeqCst fence: pairs with the fence between the store of
        // `removed` and the load of `in_flight` in `Fleet::retire`/`Fleet::prune`. Of two
        // "write; fence; read" sequences, at least one read sees the other's write, so either
        // we see the removal or the writer sees our slot. (Fences rather than SeqCst accesses:
        // the same guarantee, and the form loom checks.)
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence above.
        if self.removed.load(Ordering::Relaxed) {
            self.release();
            return false;
        }
        true
    }

    /// Gives back a slot taken by `reserve`.
    pub(crate) fn release(&self) {
        // Release: pairs with the Acquire load in `Fleet::prune`; whoever sees the endpoint
        // drained also sees everything this request did to it.
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    /// Folds a latency sample in: a sample above the estimate replaces it (the peak), a lower
    /// one is averaged in with a weight that grows with the time since the last sample, unless
    /// `only_raise` (failures and cancellations), which keep the estimate as it is.
    fn sample_latency(&self, now: u64, rtt: f64, only_raise: bool) {
        // Relaxed: statistics only, see the ground rules.
        let mut cur = self.rtt.load(Ordering::Relaxed);
        loop {
            let next = if cur == EMPTY {
                if only_raise {
                    rtt.max(self.common.default_rtt_ns)
                } else {
                    rtt
                }
            } else {
                let prev = f64::from_bits(cur);
                if rtt > prev {
                    rtt
                } else if only_raise {
                    // Keep the estimate and restamp it: a failing endpoint is not idle, so its
                    // estimate must not decay towards zero and make it look fast.
                    prev
                } else {
                    let at = self.rtt_at.load(Ordering::Relaxed);
                    let d = self.decay(now.saturating_sub(at), self.common.decay_ns);
                    prev * d + rtt * (1.0 - d)
                }
            };
            match self.rtt.compare_exchange_weak(
                cur,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.rtt_at.store(now, Ordering::Relaxed);
    }

    fn sample_failure(&self, now: u64, failed: bool) {
        let target = if failed { 1.0 } else { 0.0 };
        let prev = self.failure_rate(now);
        if !failed && prev == 0.0 {
            return;
        }
        let next = prev + self.common.failure_weight * (target - prev);
        // Relaxed: statistics only; racing samples may overwrite each other, which only loses
        // one sample's weight.
        let next = if next < 1e-6 { 0.0 } else { next };
        self.fail.store(next.to_bits(), Ordering::Relaxed);
        self.fail_at.store(now, Ordering::Relaxed);
    }

    /// Records a finished request started at `start`. Returns whether the endpoint reached its
    /// consecutive-failure limit (the caller then tries to eject it).
    pub(crate) fn finish(&self, now: u64, start: u64, outcome: Outcome) -> bool {
        if let Some(signal) = &self.signal {
            signal.outcome(
                outcome,
                std::time::Duration::from_nanos(now.saturating_sub(start)),
            );
        }
        let rtt = now.saturating_sub(start) as f64;
        // Relaxed (all below): statistics only.
        match outcome {
            Outcome::Success => {
                self.sample_latency(now, rtt, false);
                self.sample_failure(now, false);
                self.successes.fetch_add(1, Ordering::Relaxed);
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                false
            }
            Outcome::Failure => {
                // A failure never makes the endpoint look faster.
                self.sample_latency(now, rtt, true);
                self.sample_failure(now, true);
                self.failures.fetch_add(1, Ordering::Relaxed);
                let n = self
                    .consecutive
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                let limit = self.common.outlier.consecutive_failures;
                limit > 0 && n >= limit && !self.ejected(now)
            }
            Outcome::Ignored => {
                // A cancelled request took at least this long.
                self.sample_latency(now, rtt, true);
                self.cancelled.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records a success that was not timed to its end ([`Common::time_to_end`]): counted,
    /// with no latency sample. `start` (when it was sent) stands in for the time.
    pub(crate) fn succeed_untimed(&self, start: u64) {
        self.sample_failure(start, false);
        // Relaxed (both): statistics only.
        self.successes.fetch_add(1, Ordering::Relaxed);
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
    }

    /// Whether an external signal wants every outcome with its duration.
    pub(crate) fn has_signal(&self) -> bool {
        self.signal.is_some()
    }

    /// Records a health check; returns the new health when it changed.
    pub(crate) fn check(
        &self,
        now: u64,
        passed: bool,
        unhealthy_after: u32,
        healthy_after: u32,
    ) -> Option<bool> {
        // Relaxed (all below): only the health-check task writes these.
        let healthy = self.healthy.load(Ordering::Relaxed);
        if passed {
            self.checks_failed.store(0, Ordering::Relaxed);
            let n = self
                .checks_passed
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if !healthy && n >= healthy_after {
                if self.common.slow_start() {
                    self.ramp_from.store(now, Ordering::Relaxed);
                }
                self.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.checks_passed.store(0, Ordering::Relaxed);
            let n = self
                .checks_failed
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            if healthy && n >= unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// Success rate since the previous call, when at least `min_requests` finished; resets
    /// the window and keeps the rate for [`window_rate`](Self::window_rate). Only the sweeper
    /// calls this.
    pub(crate) fn take_window(&self, min_requests: u32) -> Option<f64> {
        // Relaxed: statistics only; the sweep runs on one thread at a time.
        let ok = self.successes.load(Ordering::Relaxed);
        let failed = self.failures.load(Ordering::Relaxed);
        let ok_d = ok - self.swept_successes.swap(ok, Ordering::Relaxed).min(ok);
        let failed_d = failed
            - self
                .swept_failures
                .swap(failed, Ordering::Relaxed)
                .min(failed);
        let total = ok_d + failed_d;
        let rate = (total >= u64::from(min_requests.max(1))).then(|| ok_d as f64 / total as f64);
        self.window_rate
            .store(rate.map_or(EMPTY, f64::to_bits), Ordering::Relaxed);
        rate
    }

    /// The rate the last [`take_window`](Self::take_window) returned.
    pub(crate) fn window_rate(&self) -> Option<f64> {
        // Relaxed: written and read by the sweeper only.
        let bits = self.window_rate.load(Ordering::Relaxed);
        (bits != EMPTY).then(|| f64::from_bits(bits))
    }
}

/// One endpoint: its key, its service and its state.
#[derive(Debug)]
pub(crate) struct Endpoint<K, S> {
    pub(crate) key: K,
    pub(crate) service: S,
    pub(crate) core: Arc<Core>,
    /// One reference to `core` per shard (thread), each in its own allocation: a request
    /// clones its thread's, so threads sharing an endpoint do not fight over one reference
    /// count.
    handles: Box<[Arc<CoreRef>]>,
}

/// A reference to an endpoint's state owned by one shard; see `Endpoint::handle`.
#[derive(Debug)]
pub(crate) struct CoreRef(Arc<Core>);

impl std::ops::Deref for CoreRef {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0
    }
}

impl<K, S> Endpoint<K, S> {
    pub(crate) fn new(key: K, service: S, core: Arc<Core>) -> Self {
        let shards = tollgate_core::counter::shard_count();
        let handles = (0..shards)
            .map(|_| Arc::new(CoreRef(core.clone())))
            .collect();
        Self {
            key,
            service,
            core,
            handles,
        }
    }

    /// A reference to the endpoint's state for a request on this thread.
    pub(crate) fn handle(&self) -> Arc<CoreRef> {
        let i = tollgate_core::counter::shard_index() & (self.handles.len() - 1);
        self.handles[i].clone()
    }
}
