//! Exponentially weighted moving averages.
//!
//! [`Ewma`] is a plain value for code that already owns its state (a limit algorithm behind its
//! own lock-free snapshot); [`AtomicEwma`] is shared between threads without a lock.
//! [`time_decay`] gives the weight for averages that decay with elapsed time rather than with the
//! number of samples (peak-EWMA latency in the balancer).
//!
//! Invariant (checked by property tests): after any sequence of samples, the average lies
//! between the smallest and the largest sample seen.

use crate::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A moving average that weighs each new sample by `alpha`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    alpha: f64,
    value: Option<f64>,
}

impl Ewma {
    /// Creates an empty average.
    ///
    /// # Panics
    ///
    /// If `alpha` is not in `(0, 1]`; layers validate their config before building one.
    pub fn new(alpha: f64) -> Self {
        assert!(
            alpha > 0.0 && alpha <= 1.0,
            "ewma alpha must be in (0, 1], got {alpha}"
        );
        Self { alpha, value: None }
    }

    /// Adds a sample and returns the new average. The first sample becomes the average.
    pub fn update(&mut self, sample: f64) -> f64 {
        let next = match self.value {
            None => sample,
            Some(prev) => prev + self.alpha * (sample - prev),
        };
        self.value = Some(next);
        next
    }

    /// The current average, or `None` before the first sample.
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        self.value = None;
    }

    /// The weight of each new sample.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

/// Bits that mark an [`AtomicEwma`] with no sample yet (a NaN no arithmetic produces here).
const EMPTY: u64 = u64::MAX;

/// A moving average shared between threads, updated with a compare-and-swap loop.
///
/// All accesses are `Relaxed`: the average is a statistic, it guards no other memory, and a
/// concurrent update that retries simply folds its sample into the newer value.
#[derive(Debug)]
pub struct AtomicEwma {
    bits: AtomicU64,
}

impl Default for AtomicEwma {
    fn default() -> Self {
        Self::new()
    }
}

impl AtomicEwma {
    /// Creates an empty average.
    pub fn new() -> Self {
        Self {
            bits: AtomicU64::new(EMPTY),
        }
    }

    /// Creates an average that starts at `value`.
    pub fn with_value(value: f64) -> Self {
        Self {
            bits: AtomicU64::new(value.to_bits()),
        }
    }

    /// Folds `sample` in with weight `alpha` (in `(0, 1]`) and returns the new average.
    pub fn update(&self, sample: f64, alpha: f64) -> f64 {
        self.update_with(|prev| match prev {
            None => sample,
            Some(prev) => prev + alpha * (sample - prev),
        })
    }

    /// Replaces the average with `f(previous)`, retrying on contention; returns the new value.
    pub fn update_with(&self, mut f: impl FnMut(Option<f64>) -> f64) -> f64 {
        // Relaxed: statistics only, see the type's docs.
        let mut cur = self.bits.load(Ordering::Relaxed);
        loop {
            let prev = (cur != EMPTY).then(|| f64::from_bits(cur));
            let next = f(prev);
            match self.bits.compare_exchange_weak(
                cur,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The current average, or `None` before the first sample.
    pub fn value(&self) -> Option<f64> {
        // Relaxed: statistics only.
        let bits = self.bits.load(Ordering::Relaxed);
        (bits != EMPTY).then(|| f64::from_bits(bits))
    }

    /// Sets the average to `value`.
    pub fn set(&self, value: f64) {
        // Relaxed: statistics only.
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Forgets every sample.
    pub fn reset(&self) {
        // Relaxed: statistics only.
        self.bits.store(EMPTY, Ordering::Relaxed);
    }
}

/// The weight of a new sample in an average that forgets with time constant `tau`, after
/// `elapsed` has passed since the previous sample: `1 - e^(-elapsed / tau)`.
///
/// A zero `tau` gives 1 (only the newest sample counts).
pub fn time_decay(elapsed: Duration, tau: Duration) -> f64 {
    if tau.is_zero() {
        return 1.0;
    }
    1.0 - (-elapsed.as_secs_f64() / tau.as_secs_f64()).exp()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_sample_seeds_the_average() {
        let mut e = Ewma::new(0.5);
        assert_eq!(e.value(), None);
        assert_eq!(e.update(10.0), 10.0);
        assert_eq!(e.update(20.0), 15.0);
        e.reset();
        assert_eq!(e.value(), None);

        let a = AtomicEwma::new();
        assert_eq!(a.value(), None);
        assert_eq!(a.update(10.0, 0.5), 10.0);
        assert_eq!(a.update(20.0, 0.5), 15.0);
        a.reset();
        assert_eq!(a.value(), None);
    }

    #[test]
    fn time_decay_weights() {
        assert_eq!(time_decay(Duration::from_secs(1), Duration::ZERO), 1.0);
        assert_eq!(time_decay(Duration::ZERO, Duration::from_secs(1)), 0.0);
        let w = time_decay(Duration::from_secs(1), Duration::from_secs(1));
        assert!((w - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
    }

    #[test]
    #[should_panic(expected = "alpha")]
    fn rejects_bad_alpha() {
        let _ = Ewma::new(0.0);
    }

    proptest! {
        #[test]
        fn stays_within_its_samples(
            alpha in 0.001f64..=1.0,
            samples in proptest::collection::vec(-1e9f64..1e9, 1..200),
        ) {
            let mut e = Ewma::new(alpha);
            let a = AtomicEwma::new();
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for s in samples {
                lo = lo.min(s);
                hi = hi.max(s);
                let v = e.update(s);
                let w = a.update(s, alpha);
                let slack = 1e-6 * hi.abs().max(lo.abs()).max(1.0);
                prop_assert!(v >= lo - slack && v <= hi + slack, "{v} outside [{lo}, {hi}]");
                prop_assert!((v - w).abs() <= slack);
            }
        }
    }
}
