//! Client-side adaptive throttling, from the Google SRE book, "Handling Overload".
//!
//! Over a sliding window the layer counts `requests` (everything it was asked to send, including
//! what it turned away itself) and `accepts` (answers from the inner service that were not an
//! overload rejection). It rejects locally with probability
//! `max(0, (requests - K * accepts) / (requests + 1))`: while the backend accepts everything,
//! nothing is throttled; when it rejects most requests, most are turned away here, without a
//! round trip.
//!
//! The window is split into 8 buckets of tokio time; the generator is splitmix64 over one
//! atomic word, seeded from the config, so single-threaded tests are deterministic.

use crate::config::ThrottleConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

const BUCKETS: u64 = 8;

#[derive(Debug, Default)]
struct Bucket {
    epoch: AtomicU64,
    requests: AtomicU64,
    accepts: AtomicU64,
}

/// The throttle's counters. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Throttle {
    k: f64,
    base: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS as usize],
    rng: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(config: &ThrottleConfig) -> Self {
        Self {
            k: config.k,
            base: Instant::now(),
            bucket_nanos: (config.window.as_nanos() as u64 / BUCKETS).max(1),
            buckets: Default::default(),
            rng: AtomicU64::new(config.seed),
        }
    }

    /// The current epoch's bucket, cleared if it last held an older epoch.
    fn bucket(&self, now: Instant) -> (&Bucket, u64) {
        // Epochs start at 1 so a fresh bucket (epoch 0) is never current.
        let epoch =
            now.saturating_duration_since(self.base).as_nanos() as u64 / self.bucket_nanos + 1;
        let b = &self.buckets[(epoch % BUCKETS) as usize];
        // Relaxed: statistics only; a count racing with the reset may land either side of it.
        let old = b.epoch.load(Ordering::Relaxed);
        if old != epoch
            && b.epoch
                .compare_exchange(old, epoch, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            b.requests.store(0, Ordering::Relaxed);
            b.accepts.store(0, Ordering::Relaxed);
        }
        (b, epoch)
    }

    /// Requests and accepts over the window ending at `epoch`.
    fn totals(&self, epoch: u64) -> (u64, u64) {
        let mut total = (0, 0);
        for b in &self.buckets {
            // Relaxed: statistics only.
            let e = b.epoch.load(Ordering::Relaxed);
            if e + BUCKETS > epoch && e <= epoch {
                total.0 += b.requests.load(Ordering::Relaxed);
                total.1 += b.accepts.load(Ordering::Relaxed);
            }
        }
        total
    }

    /// The probability of rejecting the next request.
    #[cfg(test)]
    pub(crate) fn probability(&self, now: Instant) -> f64 {
        let (_, epoch) = self.bucket(now);
        let (requests, accepts) = self.totals(epoch);
        ((requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
    }

    /// Counts one request and decides whether to send it (`true`) or throttle it.
    pub(crate) fn admit(&self, now: Instant) -> bool {
        let (b, epoch) = self.bucket(now);
        let (requests, accepts) = self.totals(epoch);
        // Relaxed: statistics only.
        b.requests.fetch_add(1, Ordering::Relaxed);
        let p = (requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0);
        p <= 0.0 || self.uniform() >= p
    }

    /// Counts one answer from the inner service that was not an overload rejection.
    pub(crate) fn accepted(&self, now: Instant) {
        // Relaxed: statistics only.
        self.bucket(now).0.accepts.fetch_add(1, Ordering::Relaxed);
    }

    /// A uniform number in `[0, 1)` from splitmix64.
    fn uniform(&self) -> f64 {
        // Relaxed: each caller gets a distinct state; nothing else is published.
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn throttles_in_proportion_to_rejections() {
        let t = Throttle::new(&ThrottleConfig {
            k: 2.0,
            window: Duration::from_secs(8),
            seed: 7,
        });
        // A healthy backend: nothing is throttled.
        for _ in 0..1000 {
            assert!(t.admit(Instant::now()));
            t.accepted(Instant::now());
        }
        assert_eq!(t.probability(Instant::now()), 0.0);
        // The window slides past the healthy period; now the backend accepts 1 in 10.
        tokio::time::advance(Duration::from_secs(9)).await;
        let mut sent = 0;
        for i in 0..10_000 {
            if t.admit(Instant::now()) {
                sent += 1;
                if sent % 10 == 0 {
                    t.accepted(Instant::now());
                }
            }
            if i == 9_999 {
                // p = (req - 2 acc) / (req + 1) with acc = sent / 10.
                let p = t.probability(Instant::now());
                assert!(p > 0.5, "{p}");
            }
        }
        // Roughly K * accepts get through: sent ≈ 2 * sent / 10 + a margin while it adapted.
        assert!(sent < 3_000, "{sent}");
        // Everything expires after the window.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(t.probability(Instant::now()), 0.0);
    }
}
