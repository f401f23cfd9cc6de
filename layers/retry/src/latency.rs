//! A lock-free latency histogram over a sliding window, for the hedge delay.
//!
//! Latencies go into log-linear buckets (16 per power of two, so a bucket is at most 6.25%
//! wide; 1 µs to about 68 s) of two histograms, each covering half the window. A histogram is
//! reset when the clock enters the half it is for again: the thread that wins a
//! compare-and-swap on its half number clears it. The percentile is recomputed by the thread
//! whose sample is every [`RECOMPUTE_EVERY`]th and cached in one atomic, so a request reads the
//! hedge delay with one load.
//!
//! # Ground rules
//!
//! Everything here is statistics: a sample recorded while its histogram is being cleared may
//! be lost, and a reader may see a delay computed a few samples ago. Every operation is
//! `Relaxed` for that reason; a wrong delay costs a hedge sent a little early or late, never
//! a wrong answer.

use crate::config::HedgeConfig;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Samples are kept in units of 1024 ns (about a microsecond).
const UNIT_SHIFT: u32 = 10;
/// The largest exponent kept: 2^26 units, about 68 s.
const MAX_MSB: u32 = 26;
const BUCKETS: usize = (MAX_MSB as usize - SUB_BITS as usize + 2) * SUB;
/// The cached delay is recomputed every this many samples.
pub(crate) const RECOMPUTE_EVERY: u64 = 16;
const UNKNOWN: u64 = u64::MAX;

pub(crate) fn bucket_of(latency: Duration) -> usize {
    let v = (latency.as_nanos().min(u128::from(u64::MAX)) as u64) >> UNIT_SHIFT;
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = (63 - v.leading_zeros()).min(MAX_MSB);
    if v >= 1 << (MAX_MSB + 1) {
        return BUCKETS - 1;
    }
    let mantissa = (v >> (msb - SUB_BITS)) as usize; // in SUB..2 * SUB
    (msb - SUB_BITS + 1) as usize * SUB + (mantissa - SUB)
}

/// The smallest latency above every latency of bucket `i` (its exclusive upper edge).
pub(crate) fn upper_edge(i: usize) -> Duration {
    let units = if i < SUB {
        i as u64 + 1
    } else {
        let msb = (i / SUB) as u32 + SUB_BITS - 1;
        let mantissa = (i % SUB + SUB) as u64;
        (mantissa + 1) << (msb - SUB_BITS)
    };
    Duration::from_nanos(units << UNIT_SHIFT)
}

struct Half {
    /// Which half-window number this histogram holds.
    number: AtomicU64,
    buckets: Box<[AtomicU32]>,
}

impl Half {
    fn new(number: u64) -> Self {
        Self {
            number: AtomicU64::new(number),
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// Learns the hedge delay from the latencies of successful attempts.
pub(crate) struct LatencyEstimator {
    halves: [Half; 2],
    origin: Instant,
    half_nanos: u64,
    percentile: Option<f64>,
    min_delay: Duration,
    max_delay: Duration,
    min_samples: u64,
    delay_nanos: AtomicU64,
    samples: AtomicU64,
}

impl std::fmt::Debug for LatencyEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyEstimator")
            .field("percentile", &self.percentile)
            .field("delay", &self.delay())
            .finish_non_exhaustive()
    }
}

impl LatencyEstimator {
    pub(crate) fn new(config: &HedgeConfig) -> Self {
        Self {
            // Half u64::MAX - 1 is never current, so both start empty and are claimed on use.
            halves: [Half::new(u64::MAX - 1), Half::new(u64::MAX - 1)],
            origin: Instant::now(),
            half_nanos: ((config.window / 2).as_nanos() as u64).max(1),
            percentile: config.percentile,
            min_delay: config.min_delay,
            max_delay: config.max_delay,
            min_samples: u64::from(config.min_samples),
            delay_nanos: AtomicU64::new(UNKNOWN),
            samples: AtomicU64::new(0),
        }
    }

    fn half_number(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_nanos() as u64 / self.half_nanos
    }

    /// Records the latency of one successful attempt that finished at `now`.
    pub(crate) fn record(&self, latency: Duration, now: Instant) {
        if self.percentile.is_none() {
            return;
        }
        let number = self.half_number(now);
        let half = &self.halves[(number % 2) as usize];
        let held = half.number.load(Ordering::Relaxed);
        if held != number {
            if held != u64::MAX - 1 && held > number {
                return; // this thread's clock reading is stale; drop the sample
            }
            if half
                .number
                .compare_exchange(held, number, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                for b in half.buckets.iter() {
                    b.store(0, Ordering::Relaxed);
                }
            }
        }
        half.buckets[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        if self.samples.fetch_add(1, Ordering::Relaxed) % RECOMPUTE_EVERY == RECOMPUTE_EVERY - 1
            || self.delay_nanos.load(Ordering::Relaxed) == UNKNOWN
        {
            self.recompute(number);
        }
    }

    fn recompute(&self, number: u64) {
        let Some(p) = self.percentile else { return };
        let mut counts = [0u64; BUCKETS];
        let mut total = 0u64;
        for half in &self.halves {
            let n = half.number.load(Ordering::Relaxed);
            if n == number || n.wrapping_add(1) == number {
                for (c, b) in counts.iter_mut().zip(half.buckets.iter()) {
                    let v = u64::from(b.load(Ordering::Relaxed));
                    *c += v;
                    total += v;
                }
            }
        }
        if total < self.min_samples {
            self.delay_nanos.store(UNKNOWN, Ordering::Relaxed);
            return;
        }
        let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let mut at = BUCKETS - 1;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                at = i;
                break;
            }
        }
        let delay = upper_edge(at).clamp(self.min_delay, self.max_delay);
        self.delay_nanos
            .store(delay.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The hedge delay now, or `None` while too few latencies are known.
    pub(crate) fn delay(&self) -> Option<Duration> {
        if self.percentile.is_none() {
            return Some(self.min_delay);
        }
        match self.delay_nanos.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_narrow() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let d = Duration::from_nanos(us << UNIT_SHIFT);
            let b = bucket_of(d);
            assert!(b >= last, "buckets must not go down");
            assert!(upper_edge(b) > d, "{d:?} at or above its bucket's edge");
            if us >= SUB as u64 {
                let width = upper_edge(b).as_nanos() as f64 / d.as_nanos() as f64;
                assert!(width <= 1.0 + 1.0 / SUB as f64 + 1e-9, "{d:?}: {width}");
            }
            last = b;
        }
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        assert!(upper_edge(BUCKETS - 1) > Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn learns_the_percentile_and_forgets_the_old_half() {
        let config = HedgeConfig {
            min_samples: 10,
            window: Duration::from_secs(2),
            ..HedgeConfig::default()
        };
        let est = LatencyEstimator::new(&config);
        assert_eq!(est.delay(), None);
        let now = Instant::now();
        for i in 0..96u64 {
            // 1..=96 ms: the 95th percentile is the 92nd, 92 ms (recomputed at the 96th).
            est.record(Duration::from_millis(i + 1), now);
        }
        let d = est.delay().unwrap();
        assert!(
            d > Duration::from_millis(92) && d <= Duration::from_millis(98),
            "{d:?}"
        );
        // Two half-windows later only new samples count.
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..32 {
            est.record(Duration::from_millis(5), Instant::now());
        }
        let d = est.delay().unwrap();
        assert!(
            d > Duration::from_millis(5) && d < Duration::from_millis(6),
            "{d:?}"
        );
    }

    #[test]
    fn a_fixed_delay_needs_no_samples() {
        let est = LatencyEstimator::new(&HedgeConfig {
            percentile: None,
            min_delay: Duration::from_millis(7),
            ..HedgeConfig::default()
        });
        assert_eq!(est.delay(), Some(Duration::from_millis(7)));
    }
}
