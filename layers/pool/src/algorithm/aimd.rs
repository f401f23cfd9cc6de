//! Additive increase, multiplicative decrease.

use super::{LimitAlgorithm, RttEstimates, Window, check_cut, check_range};
use std::time::Duration;
use tollgate_core::error::ConfigError;

/// Settings of [`Aimd`].
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct AimdConfig {
    /// Added to the limit after each saturated window without trouble. Default 1.0 (requests).
    pub increase: f64,
    /// The limit is multiplied by this after a window with trouble. Default 0.9; in `(0, 1)`.
    pub backoff: f64,
    /// A window whose mean RTT exceeds this counts as trouble. Default `None`: only failures
    /// count, so AIMD cannot see queueing that does not cause failures.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub rtt_threshold: Option<Duration>,
    /// A window whose failure ratio reaches this counts as trouble. Default 0.05; in `(0, 1]`.
    pub failure_ratio: f64,
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self {
            increase: 1.0,
            backoff: 0.9,
            rtt_threshold: None,
            failure_ratio: 0.05,
        }
    }
}

impl AimdConfig {
    /// Checks the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("increase", self.increase, f64::MIN_POSITIVE, 1e6)?;
        check_cut(self.backoff, self.failure_ratio)?;
        if self.rtt_threshold.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "rtt_threshold",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// Additive increase / multiplicative decrease, as in TCP Reno and Netflix's `AIMDLimit`.
///
/// Grows by `increase` per saturated window; multiplies by `backoff` when a window's failure
/// ratio reaches `failure_ratio` or its mean RTT exceeds `rtt_threshold`.
///
/// **By design** AIMD learns no baseline: it sees queueing only through a fixed
/// `rtt_threshold` that the operator must choose for the workload. **With its defaults (no
/// threshold) it never shrinks on queueing**, only on failures. Measured on the matrix
/// (`tests/matrix`, `report_aimd`; reject mode, Poisson arrivals): it meets 131 of 192 cells.
/// It passes light load, restore and the latency shift everywhere (a limit that only grows
/// never rejects too much), but fails the step and the halving on 55 of 60 cells: on 10
/// workers x 10 ms ±20% it climbs to a limit of 78 after a step to 1.4x capacity (p99 far over
/// 2x the unloaded one), 60 for 5 workers after a halving, and after ten minutes at 1.2x its
/// p99 is 853 ms (unloaded: 13 ms). Only bursts of failures hold it back.
///
/// What to set instead: `rtt_threshold` at about 1.5x the unloaded RTT, which you must know
/// and which is wrong after the backend's own latency shifts; with it the sawtooth settles
/// around, not at, the Little's-law limit (it overshoots until the threshold trips: with 10
/// workers halved to 5 it holds about 8). Prefer the default, [`Knee`](super::Knee), unless
/// failures are the only signal you trust.
#[derive(Debug)]
pub struct Aimd {
    config: AimdConfig,
    last_rtt: Option<Duration>,
}

impl Aimd {
    /// An AIMD with `config` (validated by the limiter).
    pub fn new(config: AimdConfig) -> Self {
        Self {
            config,
            last_rtt: None,
        }
    }
}

impl LimitAlgorithm for Aimd {
    fn update(&mut self, w: &Window) -> f64 {
        if w.mean_rtt.is_some() {
            self.last_rtt = w.mean_rtt;
        }
        let slow = matches!((w.mean_rtt, self.config.rtt_threshold), (Some(r), Some(t)) if r > t);
        if slow || (w.failures > 0 && w.failure_ratio() >= self.config.failure_ratio) {
            w.limit * self.config.backoff
        } else if w.saturated() && w.samples > 0 {
            w.limit + self.config.increase
        } else {
            w.limit
        }
    }

    fn rtt(&self) -> RttEstimates {
        RttEstimates {
            short_term: self.last_rtt,
            ..RttEstimates::default()
        }
    }

    fn name(&self) -> &'static str {
        "aimd"
    }
}
