//! Backoff with full jitter, from a seeded, lock-free random sequence.

use crate::config::BackoffConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A lock-free stream of random numbers shared by every clone: each draw takes the next value
/// of a Weyl sequence with one `fetch_add` and mixes it (SplitMix64). The same seed and the
/// same order of draws give the same numbers.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(0u64)
        });
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&self) -> u64 {
        // Relaxed: every draw gets a distinct step of the sequence; nothing else is published.
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniformly random duration in `0..=cap`.
    pub(crate) fn up_to(&self, cap: Duration) -> Duration {
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        // Multiply-shift: uniform enough for jitter, no division.
        Duration::from_nanos(((u128::from(self.next_u64()) * (u128::from(nanos) + 1)) >> 64) as u64)
    }
}

/// The wait before retry `retry` (1 for the first): uniform in `0..=min(max, base * 2^(retry-1))`.
pub(crate) fn full_jitter(config: &BackoffConfig, retry: u32, jitter: &Jitter) -> Duration {
    let exp = retry.saturating_sub(1).min(32);
    let cap = config
        .base
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(config.max)
        .min(config.max);
    jitter.up_to(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_is_seeded_and_bounded() {
        let config = BackoffConfig {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let (a, b) = (Jitter::new(Some(7)), Jitter::new(Some(7)));
        for retry in 1..40 {
            let cap = Duration::from_millis((10u64 << (retry - 1).min(10)).min(100));
            let d = full_jitter(&config, retry, &a);
            assert!(d <= cap, "retry {retry}: {d:?} > {cap:?}");
            assert_eq!(d, full_jitter(&config, retry, &b), "same seed, same draws");
        }
        let c = Jitter::new(Some(8));
        let draws: Vec<_> = (0..8).map(|_| c.up_to(Duration::from_secs(1))).collect();
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let config = BackoffConfig {
            base: Duration::from_millis(100),
            max: Duration::from_millis(100),
        };
        let j = Jitter::new(Some(1));
        let n = 10_000;
        let mean: f64 = (0..n)
            .map(|_| full_jitter(&config, 1, &j).as_secs_f64())
            .sum::<f64>()
            / n as f64;
        assert!((0.045..0.055).contains(&mean), "mean {mean}");
        assert_eq!(
            full_jitter(
                &BackoffConfig {
                    base: Duration::ZERO,
                    max: Duration::ZERO
                },
                3,
                &j
            ),
            Duration::ZERO
        );
    }
}
