//! `[clusters.retry]`: how many tries, each try's timeout, the retry budget, which failures are
//! retried, the backoff, body replay, and hedging. The retries themselves are tollgate-retry's
//! `Retry` layer (`stack::retry`), built by [`RetrySection::retry_config`].
//!
//! The gateway's own section rather than tollgate-retry's `RetryConfig`: which HTTP failures
//! are worth another try (`retry_on`, `grpc_codes`, `non_idempotent`), the per-try timeout and
//! the replay buffer are the gateway's; the backoff and hedging sections are the layer's
//! `BackoffConfig` and `HedgeConfig`, written as the layer's serde config
//! (`hedge = { percentile = 0.95, min_delay = "5ms" }`).

use super::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tollgate_retry::{BackoffConfig, BudgetConfig, HedgeConfig, MAX_ATTEMPTS, RetryConfig};

/// How far back the budget looks: the retries of the last ten seconds against the requests of
/// those ten seconds.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// What makes a try worth another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryOn {
    /// The connection to the endpoint could not be made (refused, connect timeout, TLS
    /// handshake): nothing was sent, so any method is retried.
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
    /// Retries after the first try (hedges count as retries), at most 7. Default 2.
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
    /// gRPC status codes retried when an answer carries one in its headers (a Trailers-Only
    /// answer, before any message), whatever the method. Default `[14]` (UNAVAILABLE).
    pub grpc_codes: Vec<u32>,
    /// Whether requests that are not idempotent (`POST`, `PATCH`, without an
    /// `Idempotency-Key` header) are retried after any `retry_on` failure. Default `false`:
    /// they are retried only when the connection could not be made, so nothing was sent.
    pub non_idempotent: bool,
    /// The largest request body buffered so that it can be sent again, bytes; a larger body
    /// (or one of unknown length) is streamed and sent once. Default 65536.
    pub replay_limit_bytes: usize,
    /// The longest `Retry-After` or `grpc-retry-pushback-ms` the gateway waits for before a
    /// retry; a longer one returns the answer to the client. Default 10000 ms.
    pub max_pushback_ms: u64,
    /// The wait before each retry: full jitter up to `base * 2^(n-1)`, at most `max`.
    /// Default `{ base = "25ms", max = "1s" }`.
    pub backoff: BackoffConfig,
    /// Hedging: a second try while the first is still unanswered after a learned latency
    /// percentile, from the same budget; the slower try is cancelled. Off by default.
    pub hedge: Option<HedgeConfig>,
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
            grpc_codes: vec![14],
            non_idempotent: false,
            replay_limit_bytes: 64 * 1024,
            max_pushback_ms: 10_000,
            backoff: BackoffConfig::default(),
            hedge: None,
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
        if self.attempts > MAX_ATTEMPTS - 1 {
            return e("attempts", "must be at most 7");
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
        if let Some(i) = self.grpc_codes.iter().position(|c| *c > 16) {
            return Err(ConfigError::new(
                format!("{at}.grpc_codes[{i}]"),
                "must be a gRPC status code from 0 to 16",
            ));
        }
        if self.replay_limit_bytes > 16 * 1024 * 1024 {
            return e("replay_limit_bytes", "must be at most 16777216 (16 MiB)");
        }
        if self.max_pushback_ms > 3_600_000 {
            return e("max_pushback_ms", "must be at most 3600000 ms");
        }
        self.retry_config().validate().map_err(|err| {
            let field = match err.field() {
                "max_attempts" => "attempts",
                f => f,
            };
            let problem = match err.field() {
                "max_attempts" => "must be at least 1 with hedging on".to_owned(),
                _ => err.problem().to_owned(),
            };
            ConfigError::new(format!("{at}.{field}"), problem)
        })
    }

    /// Whether `other` sizes its budget the same way (`budget_percent`, `budget_min_per_s`):
    /// a route's override then draws on its cluster's budget.
    pub fn same_budget(&self, other: &RetrySection) -> bool {
        self.budget_percent == other.budget_percent
            && self.budget_min_per_s == other.budget_min_per_s
    }

    /// The tollgate-retry configuration of this section (not validated).
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            max_attempts: self.attempts.saturating_add(1),
            budget: BudgetConfig {
                ratio: self.budget_percent / 100.0,
                min_per_second: self.budget_min_per_s,
                window: BUDGET_WINDOW,
            },
            backoff: self.backoff.clone(),
            max_pushback: Duration::from_millis(self.max_pushback_ms),
            hedge: self.hedge.clone(),
            seed: None,
        }
    }
}
