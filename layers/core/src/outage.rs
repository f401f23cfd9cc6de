//! A small outage guard for a shared backing store (Redis): after `failures` failures in a
//! row it keeps callers away for `cooldown`, then lets exactly one operation probe; a success
//! closes it.
//!
//! It is the breaker a layer puts around a dependency that is *optional* for its requests
//! (the admission layer's shared rate limit falls back to its local one, the cache goes on
//! without its L3): while the guard is open, requests skip the store and cost nothing, so an
//! outage costs `failures` timeouts, not one per request.
//!
//! Time is passed in as `now`, the time since any fixed origin the caller keeps (for example a
//! `tokio::time::Instant` taken when the layer was built), so the guard does no I/O and its
//! tests need no clock.
//!
//! # Ground rules
//!
//! `failures` and `open_until` are hints, read and written `Relaxed`: a lost update lets one
//! extra operation try the store or skip it, and never fails a request. Only the caller whose
//! compare-exchange moves `open_until` on after the cooldown probes.

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Keeps callers away from a failing store; see the [module docs](self).
#[derive(Debug)]
pub struct OutageGuard {
    failures: AtomicU32,
    /// Milliseconds (plus one) after the caller's origin until which the store is skipped;
    /// 0 while closed.
    open_until: AtomicU64,
    threshold: u32,
    cooldown_ms: u64,
}

/// Milliseconds since the origin, plus one so that no time reads as "closed" (0).
fn ms(now: Duration) -> u64 {
    u64::try_from(now.as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

impl OutageGuard {
    /// Opens after `failures` failures in a row (at least 1 is used) and stays open for
    /// `cooldown` (rounded up to a whole millisecond) before one probe.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        let cooldown_ms = u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX / 2);
        Self {
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            threshold: failures.max(1),
            cooldown_ms: cooldown_ms.max(1),
        }
    }

    /// Whether an operation may use the store now. While open, `false` until the cooldown
    /// has passed; then `true` for exactly one caller (the probe), whose outcome must be
    /// reported with [`success`](Self::success) or [`failure`](Self::failure).
    pub fn allow(&self, now: Duration) -> bool {
        // Relaxed: see the ground rules.
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = ms(now);
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now.saturating_add(self.cooldown_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Whether the guard keeps callers away at `now` (without taking the probe).
    pub fn is_open(&self, now: Duration) -> bool {
        // Relaxed: see the ground rules.
        let until = self.open_until.load(Ordering::Relaxed);
        until != 0 && ms(now) < until
    }

    /// The store answered: the outage, if any, is over.
    pub fn success(&self) {
        // Relaxed: see the ground rules.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Relaxed);
        }
    }

    /// The store failed (an error or a timeout) at `now`; the `failures`-th failure in a row
    /// (or a failed probe) opens the guard for the cooldown.
    pub fn failure(&self, now: Duration) {
        // Relaxed: see the ground rules.
        if self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
            >= self.threshold
        {
            self.open_until
                .store(ms(now).saturating_add(self.cooldown_ms), Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_failures_in_a_row_and_probes_once_after_the_cooldown() {
        let g = OutageGuard::new(2, S);
        let t = |ms| Duration::from_millis(ms);
        assert!(g.allow(t(0)));
        g.failure(t(0));
        assert!(g.allow(t(1)), "one failure is not an outage");
        g.failure(t(1));
        assert!(!g.allow(t(2)));
        assert!(g.is_open(t(1000)));
        assert!(!g.allow(t(1000)), "still cooling down");
        assert!(g.allow(t(1001)), "one probe after the cooldown");
        assert!(!g.allow(t(1001)), "only one");
        g.success();
        assert!(!g.is_open(t(1002)));
        assert!(g.allow(t(1002)));
        assert!(g.allow(t(1002)));
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let g = OutageGuard::new(1, S);
        g.failure(Duration::ZERO);
        assert!(!g.allow(Duration::from_millis(500)));
        assert!(g.allow(S + Duration::from_millis(1)));
        g.failure(S + Duration::from_millis(1));
        assert!(!g.allow(S * 2));
        assert!(g.allow(S * 2 + Duration::from_millis(2)));
    }

    #[test]
    fn a_success_between_failures_resets_the_count() {
        let g = OutageGuard::new(3, S);
        for _ in 0..10 {
            g.failure(Duration::ZERO);
            g.failure(Duration::ZERO);
            g.success();
        }
        assert!(g.allow(Duration::ZERO));
        assert!(!g.is_open(Duration::ZERO));
    }
}
