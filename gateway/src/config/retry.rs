//! `[clusters.retry]`: how many tries, each try's timeout, the retry budget and which failures
//! are retried. The retries themselves are `stack::retry`, spending tollgate-retry's `Budget`.
//!
//! The gateway's own section, not tollgate-retry's `RetryConfig`: which HTTP failures are worth
//! another try (`retry_on`) and the per-try timeout are the gateway's; hedging is not offered
//! here yet.

use super::error::ConfigError;
use serde::{Deserialize, Serialize};

/// What makes a try worth another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryOn {
    /// The connection to the endpoint could not be made (refused, connect timeout).
    #[serde(rename = "connect")]
    Connect,
    /// The connection failed after it was made (reset, closed early, garbage).
    #[serde(rename = "reset")]
    Reset,
    /// The try ran past `per_try_timeout_ms`.
    #[serde(rename = "timeout")]
    Timeout,
    /// The endpoint answered 5xx.
    #[serde(rename = "5xx")]
    ServerError,
    /// The endpoint answered 503.
    #[serde(rename = "503")]
    Unavailable,
}

/// `[clusters.retry]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Retries after the first try. Default 2.
    pub attempts: u32,
    /// Each try's timeout, ms. Default 0 (only the route's overall timeout).
    pub per_try_timeout_ms: u64,
    /// Retries may add at most this share of the requests as extra load, percent. Default 20.
    pub budget_percent: f64,
    /// Retries allowed per second whatever the traffic (so a quiet cluster can still retry).
    /// Default 10.
    pub budget_min_per_s: u32,
    /// Which failures are retried. Default `["connect", "reset", "timeout", "503"]`.
    pub retry_on: Vec<RetryOn>,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout_ms: 0,
            budget_percent: 20.0,
            budget_min_per_s: 10,
            retry_on: vec![
                RetryOn::Connect,
                RetryOn::Reset,
                RetryOn::Timeout,
                RetryOn::Unavailable,
            ],
        }
    }
}

impl RetrySection {
    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        if self.attempts > 10 {
            return e("attempts", "must be at most 10");
        }
        if self.per_try_timeout_ms > 86_400_000 {
            return e("per_try_timeout_ms", "must be at most 86400000 ms");
        }
        if !(0.0..=100.0).contains(&self.budget_percent) {
            return e("budget_percent", "must be a percentage from 0 to 100");
        }
        if self.budget_min_per_s > 1_000_000 {
            return e("budget_min_per_s", "must be at most 1000000");
        }
        Ok(())
    }
}
