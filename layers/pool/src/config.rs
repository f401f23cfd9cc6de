//! The pool's settings: plain data, checked by [`PoolConfig::validate`] when the limiter is
//! built.

use crate::algorithm::{AlgorithmConfig, check_positive, check_range};
use std::time::Duration;
use tollgate_core::error::ConfigError;

/// What a request does when every permit is in use.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)
)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtLimit {
    /// Fail at once with [`Overloaded`](tollgate_core::error::Overloaded) (the default).
    Reject,
    /// Wait in `poll_ready` (a real waker, woken when a permit frees up) for at most
    /// `max_wait`, then fail with `Overloaded`. Never waits for ever.
    Wait {
        /// The longest a request waits for a permit. Must be positive.
        #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
        max_wait: Duration,
    },
}

/// Settings of a [`Limiter`](crate::Limiter).
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The limit never goes below this. Default 1 request; at least 1.
    pub min_limit: usize,
    /// The limit never goes above this. Default 1000 requests.
    pub max_limit: usize,
    /// The limit before anything was learned. Default 20 requests; within the bounds.
    pub initial_limit: usize,
    /// What happens at the limit. Default [`AtLimit::Reject`].
    pub at_limit: AtLimit,
    /// The algorithm that moves the limit. Default [`AlgorithmConfig::Knee`].
    pub algorithm: AlgorithmConfig,
    /// RTT samples wanted per window. Default 64; at least `min_window_samples`. At low rates
    /// every request is timed; at higher rates one in `completions / samples_per_window` is
    /// (per thread), so the two clock reads of timing vanish from the average request.
    /// Outcomes, failures and cancellations are always counted.
    pub samples_per_window: u32,
    /// A window lasts this many recent RTTs. Default 2.0.
    pub window_rtts: f64,
    /// Shortest window. Default 10 ms.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub min_window: Duration,
    /// Longest window; a window closes after this long even with few samples. Default 1 s.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
    pub max_window: Duration,
    /// A window needs this many RTT samples to close before `max_window`. Default 10.
    pub min_window_samples: u32,
    /// Number of permit shards; 0 means one per core
    /// ([`shard_count`](tollgate_core::counter::shard_count)). Default 0.
    pub shards: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            min_limit: 1,
            max_limit: 1000,
            initial_limit: 20,
            at_limit: AtLimit::Reject,
            algorithm: AlgorithmConfig::default(),
            samples_per_window: 64,
            window_rtts: 2.0,
            min_window: Duration::from_millis(10),
            max_window: Duration::from_secs(1),
            min_window_samples: 10,
            shards: 0,
        }
    }
}

impl PoolConfig {
    /// Checks every field, the algorithm's included.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field (`min_limit` above `max_limit`, a zero,
    /// a NaN...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_limit == 0 {
            return Err(ConfigError::new("min_limit", "must be at least 1"));
        }
        if self.max_limit < self.min_limit {
            return Err(ConfigError::new("max_limit", "must be at least min_limit"));
        }
        if self.max_limit > isize::MAX as usize / 2 {
            return Err(ConfigError::new("max_limit", "is too large"));
        }
        if self.initial_limit < self.min_limit || self.initial_limit > self.max_limit {
            return Err(ConfigError::new(
                "initial_limit",
                "must be within [min_limit, max_limit]",
            ));
        }
        if let AtLimit::Wait { max_wait } = self.at_limit {
            check_positive("max_wait", max_wait)?;
        }
        if self.samples_per_window == 0 || self.samples_per_window < self.min_window_samples {
            return Err(ConfigError::new(
                "samples_per_window",
                "must be at least 1 and at least min_window_samples",
            ));
        }
        check_range("window_rtts", self.window_rtts, f64::MIN_POSITIVE, 1e6)?;
        check_positive("min_window", self.min_window)?;
        if self.max_window < self.min_window {
            return Err(ConfigError::new(
                "max_window",
                "must be at least min_window",
            ));
        }
        if self.shards > 1024 {
            return Err(ConfigError::new("shards", "must be at most 1024"));
        }
        self.algorithm.validate()
    }
}
