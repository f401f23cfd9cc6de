//! A lock-free latency histogram over a sliding window, for the hedge delay.
//!
//! Latencies go into log-linear buckets (16 per power of two, so a bucket is at most 6.25%
//! wide; 1 µs to about 68 s) of two histograms, each covering half the window; each bucket
//! also keeps the longest latency it holds, to the nanosecond. A histogram is reset when the
//! clock enters the half it is for again: the thread that wins a compare-and-swap on its half
//! number clears it. The percentile is recomputed by the thread whose sample is every
//! [`RECOMPUTE_EVERY`]th and cached in one atomic, so a request reads the hedge delay with two
//! loads.
//!
//! # The delay
//!
//! The delay is the longest latency of the percentile's bucket: the percentile itself where
//! latencies cluster (a service that answers in 10 ms is hedged at 10 ms, and an answer due in
//! the deadline's own timer tick wins, as the future polls its attempts before its timer), at
//! most a bucket (6.25%) above it otherwise. The bucket's upper edge, the earlier rule, put
//! the hedge of a 10 ms service a timer tick late, at 11 ms: every hedged answer then took
//! 21 ms, a 4.76x cut of a 100 ms tail where 20 ms (5x) is the best a hedge after the usual
//! answer can do.
//!
//! That alone hedges every call that queued for a moment wherever calls queue: a call due
//! 1 ms after the percentile is hedged, the hedge loses, and its load makes more calls queue
//! (on 10 backends of 2 workers at 55% utilization the p99.9 cut fell to 1.82x). So the delay
//! also learns from the hedges' outcomes. It starts a sixteenth of the percentile above it;
//! every [`JUDGE_EVERY`] hedges whose request ended, if fewer than half won (answered first),
//! it rises by another sixteenth (at most [`MAX_RAISE`] sixteenths, to twice the percentile),
//! and if seven in eight or more won, it comes down one. Only hedges sent since the delay last
//! changed are judged, so a burst of hedges sent at the old delay does not raise it again and
//! again. Where hedges go to calls that were only queued, the delay stays past the queueing;
//! where they go to the slow calls they are for, it comes down to the percentile. (Starting at
//! the percentile itself, or coming down at three wins in four, let the 10x2 backends above
//! hedge their queued calls often enough to set off bursts of losing hedges: a 1.79x cut.)

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
/// Hedge outcomes per judgement of the delay (see the module docs).
pub(crate) const JUDGE_EVERY: u32 = 16;
/// The most the delay rises above the percentile, in sixteenths of it.
pub(crate) const MAX_RAISE: u32 = 16;
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
    /// The longest latency in each bucket, in nanoseconds (0: none yet).
    longest: Box<[AtomicU64]>,
}

impl Half {
    fn new(number: u64) -> Self {
        Self {
            number: AtomicU64::new(number),
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            longest: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
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
    /// The percentile's delay (before the raise), in nanoseconds, or `UNKNOWN`.
    delay_nanos: AtomicU64,
    samples: AtomicU64,
    /// Hedge outcomes since the last judgement: wins in the high 32 bits, hedges in the low.
    outcomes: AtomicU64,
    /// How far the delay sits above the percentile, in sixteenths of it (low 32 bits), and
    /// how many times it changed (high 32 bits: the epoch hedges are sent in).
    raise: AtomicU64,
}

impl std::fmt::Debug for LatencyEstimator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyEstimator")
            .field("percentile", &self.percentile)
            .field("delay", &self.delay())
            .field("raise", &(self.raise.load(Ordering::Relaxed) as u32))
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
            outcomes: AtomicU64::new(0),
            // A sixteenth above the percentile until hedges show they win there.
            raise: AtomicU64::new(1),
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
                for l in half.longest.iter() {
                    l.store(0, Ordering::Relaxed);
                }
            }
        }
        let b = bucket_of(latency);
        half.buckets[b].fetch_add(1, Ordering::Relaxed);
        let nanos = latency.as_nanos().min(u128::from(u64::MAX - 1)) as u64;
        // Read first: once a bucket's longest is known, most samples do not write (and do not
        // take the cache line from the other cores).
        let longest = &half.longest[b];
        if longest.load(Ordering::Relaxed) < nanos {
            longest.fetch_max(nanos, Ordering::Relaxed);
        }
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
        let mut live = [false; 2];
        for (half, live) in self.halves.iter().zip(live.iter_mut()) {
            let n = half.number.load(Ordering::Relaxed);
            if n == number || n.wrapping_add(1) == number {
                *live = true;
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
        // The bucket's longest latency; its edge if a reset raced the count (0 then).
        let longest = self
            .halves
            .iter()
            .zip(live)
            .filter(|(_, live)| *live)
            .map(|(h, _)| h.longest[at].load(Ordering::Relaxed))
            .max()
            .filter(|&n| n > 0)
            .map_or_else(|| upper_edge(at), Duration::from_nanos);
        let delay = longest.clamp(self.min_delay, self.max_delay);
        self.delay_nanos
            .store(delay.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The epoch a hedge sent now is sent in, for [`hedge_outcome`](Self::hedge_outcome).
    pub(crate) fn epoch(&self) -> u32 {
        (self.raise.load(Ordering::Relaxed) >> 32) as u32
    }

    /// Counts the outcome of one hedge, sent in `epoch`, whose request ended: `won`, its
    /// answer was the one used. Every [`JUDGE_EVERY`] outcomes the delay's raise is judged
    /// (see the module docs): up one sixteenth if fewer than half won, down one if seven in
    /// eight did. Hedges sent before the raise last changed are not counted: they
    /// went out at the old delay, and a burst of them losing would otherwise raise it again
    /// and again before one hedge at the new delay had ended.
    pub(crate) fn hedge_outcome(&self, won: bool, epoch: u32) {
        if self.percentile.is_none() || epoch != self.epoch() {
            return;
        }
        let add = 1 | (u64::from(won) << 32);
        let now = self
            .outcomes
            .fetch_add(add, Ordering::Relaxed)
            .wrapping_add(add);
        let (wins, hedges) = ((now >> 32) as u32, now as u32);
        // Whoever takes the tally to the mark judges it; outcomes counted meanwhile are lost
        // with the tally, which is statistics.
        if hedges < JUDGE_EVERY
            || self
                .outcomes
                .compare_exchange(now, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let word = self.raise.load(Ordering::Relaxed);
        let (epoch, raise) = ((word >> 32) as u32, word as u32);
        let next = if wins * 2 < hedges {
            (raise + 1).min(MAX_RAISE)
        } else if wins * 8 >= hedges * 7 {
            raise.saturating_sub(1)
        } else {
            raise
        };
        if next != raise {
            let word = (u64::from(epoch.wrapping_add(1)) << 32) | u64::from(next);
            self.raise.store(word, Ordering::Relaxed);
            // Outcomes of the old epoch counted since the judgement are dropped with it.
            self.outcomes.store(0, Ordering::Relaxed);
        }
    }

    /// The hedge delay now, or `None` while too few latencies are known.
    pub(crate) fn delay(&self) -> Option<Duration> {
        if self.percentile.is_none() {
            return Some(self.min_delay);
        }
        match self.delay_nanos.load(Ordering::Relaxed) {
            UNKNOWN => None,
            n => {
                let raise = u64::from(self.raise.load(Ordering::Relaxed) as u32);
                let raised = Duration::from_nanos(n.saturating_add(n / 16 * raise));
                Some(raised.min(self.max_delay))
            }
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
        // Its bucket also holds 89 to 91 ms; had it held a longer one, that would be the delay.
        // The longest latency of the 92nd's bucket (88.1 to 92.3 ms): 92 ms, the percentile
        // (and a sixteenth above it until hedges are judged).
        let sixteenth_above = |d: Duration| Some(d + d / 16);
        assert_eq!(est.delay(), sixteenth_above(Duration::from_millis(92)));
        // Two half-windows later only new samples count.
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..32 {
            est.record(Duration::from_millis(5), Instant::now());
        }
        // Latencies that cluster give the percentile exactly.
        assert_eq!(est.delay(), sixteenth_above(Duration::from_millis(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_that_lose_raise_the_delay_and_hedges_that_win_bring_it_back() {
        let est = LatencyEstimator::new(&HedgeConfig::default());
        for _ in 0..32 {
            est.record(Duration::from_millis(16), Instant::now());
        }
        let ms = |n: f64| Some(Duration::from_secs_f64(n / 1000.0));
        // A sixteenth above the percentile to begin with.
        assert_eq!(est.delay(), ms(17.0));
        let judge = |wins: u32| {
            let epoch = est.epoch();
            for i in 0..JUDGE_EVERY {
                est.hedge_outcome(i < wins, epoch);
            }
        };
        // Most lost: a sixteenth higher each time, up to twice the percentile.
        judge(7);
        assert_eq!(est.delay(), ms(18.0));
        judge(0);
        assert_eq!(est.delay(), ms(19.0));
        // Half or more won, but not seven in eight: it stays.
        judge(8);
        judge(13);
        assert_eq!(est.delay(), ms(19.0));
        // Hedges sent before the last change do not count.
        let old = est.epoch();
        judge(0);
        assert_eq!(est.delay(), ms(20.0));
        for _ in 0..JUDGE_EVERY {
            est.hedge_outcome(false, old);
        }
        assert_eq!(est.delay(), ms(20.0));
        // Seven in eight won: a sixteenth lower.
        judge(14);
        assert_eq!(est.delay(), ms(19.0));
        for _ in 0..40 {
            judge(0);
        }
        assert_eq!(est.delay(), ms(32.0));
        for _ in 0..40 {
            judge(JUDGE_EVERY);
        }
        assert_eq!(est.delay(), ms(16.0));
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
