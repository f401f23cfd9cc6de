//! [`KneeConfig`]: Knee's settings and their validation.

use super::super::{check_cut, check_fraction, check_positive, check_range};
use std::time::Duration;
use tollgate_core::error::ConfigError;

/// Settings of [`Knee`](super::Knee). The defaults need no tuning for the workload: every threshold is
/// relative (to the baseline RTT, to the limit) or scaled by the measured noise.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct KneeConfig {
    /// The queue the limit aims for under overload, as a fraction of the backend's
    /// concurrency: after a cut the limit is `throughput × baseline × (1 + target) + 2`. Default
    /// 0.25 (a quarter of a service time of queueing); in `[0, 10]`.
    pub target: f64,
    /// Queueing, as a fraction of the baseline RTT, above which the limit is cut: a saturated
    /// window whose mean RTT exceeds `baseline × (1 + tolerance)` by more than two standard
    /// errors of its own mean. Default 0.5; greater than `target`.
    pub tolerance: f64,
    /// Consecutive queued windows before a cut (one may be a burst). Default 2; at least 1.
    pub queued_windows: u32,
    /// Growth per saturated window without queueing, as a fraction of the limit. Default 0.05.
    pub increase_ratio: f64,
    /// Smallest growth per saturated window. Default 1.0 requests.
    pub increase_min: f64,
    /// The limit is multiplied by this after a window whose failure ratio reaches
    /// `failure_ratio`. Default 0.9; in `(0, 1)`.
    pub backoff: f64,
    /// Failure ratio that counts as loss. Default 0.05; in `(0, 1]`.
    pub failure_ratio: f64,
    /// Calm samples averaged into one baseline candidate. Enough that the candidate's mean is
    /// close to normal even for a skewed service time (a 5% tail at 10x shows up about 3
    /// times in 64). Default 64; at least 2.
    pub calm_samples: u32,
    /// How many baseline candidates are kept: the newest. Sustained overload yields none, so
    /// the baseline freezes instead of drifting. Default 8; at least 1.
    pub baseline_candidates: u32,
    /// The quantile of the candidates taken as the baseline. Default 0.5 (the median); in
    /// `[0, 1]`.
    pub baseline_quantile: f64,
    /// When no window has had calm samples for this long, or for `probe_rtts` baseline RTTs
    /// if that is longer, the limit is cut to `probe_factor` for `probe_windows` windows so
    /// the queue drains and calm requests measure the baseline. Default 4 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub probe_interval: Duration,
    /// The probe interval in baseline RTTs, when longer than `probe_interval`. Default 200.
    pub probe_rtts: u32,
    /// The limit during a probe, as a fraction of the limit. Default 0.5; in `(0, 1)`.
    pub probe_factor: f64,
    /// Windows a probe lasts; the first drains the queue, the others measure. Default 2; at
    /// least 2.
    pub probe_windows: u32,
}

impl Default for KneeConfig {
    fn default() -> Self {
        Self {
            target: 0.25,
            tolerance: 0.5,
            queued_windows: 2,
            increase_ratio: 0.05,
            increase_min: 1.0,
            backoff: 0.9,
            failure_ratio: 0.05,
            calm_samples: 64,
            baseline_candidates: 8,
            baseline_quantile: 0.5,
            probe_interval: Duration::from_secs(4),
            probe_rtts: 200,
            probe_factor: 0.5,
            probe_windows: 2,
        }
    }
}

impl KneeConfig {
    /// Checks the fields.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("target", self.target, 0.0, 10.0)?;
        check_range(
            "tolerance",
            self.tolerance,
            self.target + f64::EPSILON,
            100.0,
        )?;
        if self.queued_windows == 0 {
            return Err(ConfigError::new("queued_windows", "must be at least 1"));
        }
        check_range("increase_ratio", self.increase_ratio, 0.0, 10.0)?;
        check_range("increase_min", self.increase_min, f64::MIN_POSITIVE, 1e6)?;
        check_cut(self.backoff, self.failure_ratio)?;
        if self.calm_samples < 2 {
            return Err(ConfigError::new("calm_samples", "must be at least 2"));
        }
        if self.baseline_candidates == 0 {
            return Err(ConfigError::new(
                "baseline_candidates",
                "must be at least 1",
            ));
        }
        check_range("baseline_quantile", self.baseline_quantile, 0.0, 1.0)?;
        check_positive("probe_interval", self.probe_interval)?;
        check_fraction("probe_factor", self.probe_factor)?;
        if self.probe_windows < 2 {
            return Err(ConfigError::new("probe_windows", "must be at least 2"));
        }
        Ok(())
    }
}
