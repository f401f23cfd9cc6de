//! A small circuit breaker around L3, so a sick Redis costs requests nothing.

use super::config::RedisConfig;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::time::Instant;

/// Opens after `threshold` failures in a row; after `cooldown` lets one operation probe.
///
/// Ground rules: `failures` and `open_until` are approximate (Relaxed): a lost update lets one
/// extra request try Redis or skip it, never fails a request.
#[derive(Debug)]
pub(super) struct Breaker {
    base: Instant,
    failures: AtomicU32,
    /// Milliseconds since `base` until which L3 is skipped; 0 when closed.
    open_until: AtomicU64,
    threshold: u32,
    cooldown_ms: u64,
}

impl Breaker {
    pub(super) fn new(cfg: &RedisConfig) -> Self {
        Self {
            base: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            threshold: cfg.breaker_failures,
            cooldown_ms: cfg.breaker_cooldown.as_millis().max(1) as u64,
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    pub(super) fn allow(&self) -> bool {
        // Relaxed: see the ground rules.
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        // Half-open: the one request that moves the deadline on probes Redis.
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + self.cooldown_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    pub(super) fn success(&self) {
        // Relaxed: see the ground rules.
        self.failures.store(0, Ordering::Relaxed);
        self.open_until.store(0, Ordering::Relaxed);
    }

    pub(super) fn failure(&self) {
        // Relaxed: see the ground rules.
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= self.threshold {
            self.open_until
                .store(self.now_ms() + self.cooldown_ms, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_failures_and_probes_after_cooldown() {
        let b = Breaker::new(&RedisConfig {
            breaker_failures: 2,
            ..RedisConfig::default()
        });
        assert!(b.allow());
        b.failure();
        assert!(b.allow());
        b.failure();
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.allow(), "one probe after the cooldown");
        assert!(!b.allow(), "only one");
        b.success();
        assert!(b.allow());
    }
}
