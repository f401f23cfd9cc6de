//! Snapshots of what the layer did, per class.

use crate::error::Reason;
use std::time::Duration;

const BUCKETS: usize = 256;

/// A log-linear histogram of microseconds: four buckets per power of two (about 19% wide).
/// Kept under the queue lock, so plain integers suffice.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    buckets: Box<[u64; BUCKETS]>,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Box::new([0; BUCKETS]),
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < 4 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize; // >= 2
    let sub = ((v >> (e - 2)) & 3) as usize;
    4 + (e - 2) * 4 + sub
}

fn upper_of(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let e = (i - 4) / 4 + 2;
    let sub = ((i - 4) % 4) as u64;
    let upper = (u128::from(4 + sub + 1) << (e - 2)) - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

impl Histogram {
    pub(crate) fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)] += 1;
        self.max = self.max.max(us);
    }

    /// The `q` quantile over these samples plus `zeros` samples of zero.
    fn quantile(&self, zeros: u64, q: f64) -> Duration {
        let total = zeros + self.buckets.iter().sum::<u64>();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        if rank <= zeros {
            return Duration::ZERO;
        }
        let mut seen = zeros;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(upper_of(i).min(self.max));
            }
        }
        Duration::from_micros(self.max)
    }

    pub(crate) fn waits(&self, zeros: u64) -> QueueWait {
        QueueWait {
            p50: self.quantile(zeros, 0.5),
            p90: self.quantile(zeros, 0.9),
            p99: self.quantile(zeros, 0.99),
            max: Duration::from_micros(self.max),
        }
    }
}

/// Queue-wait percentiles of admitted requests (those admitted without waiting count as zero).
/// Precise to about 19% (microsecond buckets, four per power of two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueWait {
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// What one class saw since the layer was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSnapshot {
    /// The class's name.
    pub name: String,
    /// Requests admitted (sent to the inner service).
    pub admitted: u64,
    /// Requests waiting now.
    pub queued: usize,
    /// Requests rejected, indexed like [`Reason::ALL`]; see [`rejected`](Self::rejected).
    pub rejected_by_reason: [u64; 6],
    /// Queue-wait percentiles of admitted requests.
    pub queue_wait: QueueWait,
}

impl ClassSnapshot {
    /// Requests rejected for `reason`.
    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected_by_reason[reason.index()]
    }

    /// Requests rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected_by_reason.iter().sum()
    }
}

/// A snapshot of the whole layer, from [`AdmissionHandle::snapshot`](crate::AdmissionHandle::snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// One entry per class, highest priority first.
    pub classes: Vec<ClassSnapshot>,
    /// Requests in flight now.
    pub in_flight: usize,
    /// The limit now.
    pub limit: usize,
    /// Requests waiting now, over all classes.
    pub queued: usize,
    /// Rate-limit keys tracked now (0 without a rate limit).
    pub rate_limit_keys: usize,
}

impl Snapshot {
    /// The class named `name`.
    pub fn class(&self, name: &str) -> Option<&ClassSnapshot> {
        self.classes.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        for v in [
            0u64,
            1,
            3,
            4,
            5,
            7,
            8,
            9,
            100,
            1000,
            12_345,
            1 << 40,
            u64::MAX,
        ] {
            let b = bucket_of(v);
            assert!(upper_of(b) >= v, "{v}");
            if b > 0 {
                assert!(upper_of(b - 1) < v, "{v}");
            }
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_count_zero_waits() {
        let mut h = Histogram::default();
        for ms in 1..=10 {
            h.record(Duration::from_millis(ms));
        }
        let w = h.waits(90);
        assert_eq!(w.p50, Duration::ZERO);
        assert!(
            w.p99 >= Duration::from_millis(9) && w.p99 <= Duration::from_millis(10),
            "{w:?}"
        );
        assert_eq!(w.max, Duration::from_millis(10));
        assert_eq!(Histogram::default().waits(0), QueueWait::default());
    }
}
