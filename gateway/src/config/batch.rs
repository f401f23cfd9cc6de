//! `[routes.batch]`: the batch route's settings and their validation.
//!
//! The gateway's own section, not tollgate-batch's `BatchConfig`: a batch route also names the
//! upstream path its JSON arrays go to and the body and answer limits; it builds a
//! `BatchConfig` whose `validate` still decides.

use super::error::ConfigError;
use http::Uri;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tollgate_batch::{BatchConfig, Overflow};

/// `[routes.batch]`: how a batch route gathers requests and where it sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    /// Path (with an optional query) of the upstream's batch endpoint, sent a `POST` with the
    /// JSON array. Default `/batch`.
    pub upstream_path: String,
    /// The most requests in one batch call. Default 32.
    pub max_items: usize,
    /// The longest the oldest request of a batch waits for company, ms. The layer lingers less
    /// when arrivals say the batch fills sooner, and not at all when the upstream is idle and
    /// requests are sparse. Default 5; 0 sends whatever has gathered at once.
    pub max_linger_ms: u64,
    /// The largest client body, bytes; a larger one is answered 413. Default 65536.
    pub max_body_bytes: usize,
    /// The largest upstream answer to one batch, bytes; a larger one fails the batch (502).
    /// Default 4194304 (4 MiB).
    pub max_response_bytes: usize,
    /// Batch calls in flight at once; while they are busy requests keep gathering. Default 2.
    pub max_in_flight: usize,
    /// Requests waiting to be sent; a request that finds the queue full is answered 503 with
    /// `Retry-After`. Default 1024.
    pub queue_capacity: usize,
    /// A batch call (sending and reading the whole answer) that takes longer fails its callers
    /// with 504, ms. Default 5000.
    pub timeout_ms: u64,
}

impl Default for BatchSection {
    fn default() -> Self {
        Self {
            upstream_path: "/batch".into(),
            max_items: 32,
            max_linger_ms: 5,
            max_body_bytes: 65_536,
            max_response_bytes: 4 << 20,
            max_in_flight: 2,
            queue_capacity: 1024,
            timeout_ms: 5_000,
        }
    }
}

impl BatchSection {
    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        if self.upstream_uri().is_none() {
            return e(
                "upstream_path",
                "must be a path starting with / (an optional query allowed)",
            );
        }
        if !(1..=10_000).contains(&self.max_items) {
            return e("max_items", "must be between 1 and 10000");
        }
        if self.max_linger_ms > 60_000 {
            return e("max_linger_ms", "must be at most 60000 ms");
        }
        if !(1..=16 << 20).contains(&self.max_body_bytes) {
            return e("max_body_bytes", "must be between 1 and 16777216 bytes");
        }
        if !(2..=1 << 30).contains(&self.max_response_bytes) {
            return e(
                "max_response_bytes",
                "must be between 2 and 1073741824 bytes",
            );
        }
        if !(1..=1024).contains(&self.max_in_flight) {
            return e("max_in_flight", "must be between 1 and 1024");
        }
        if !(1..=1_000_000).contains(&self.queue_capacity) {
            return e("queue_capacity", "must be between 1 and 1000000");
        }
        if !(1..=3_600_000).contains(&self.timeout_ms) {
            return e("timeout_ms", "must be between 1 and 3600000 ms");
        }
        self.to_config()
            .validate()
            .map_err(|err| ConfigError::new(format!("{at}.{}", err.field()), err.problem()))
    }

    /// The batch layer's configuration: a full queue rejects at once (503) rather than making
    /// the caller wait, since admission is where the gateway queues.
    pub fn to_config(&self) -> BatchConfig {
        BatchConfig {
            max_items: self.max_items,
            max_linger: Duration::from_millis(self.max_linger_ms),
            max_in_flight: self.max_in_flight,
            queue_capacity: self.queue_capacity,
            overflow: Overflow::Reject,
            ..BatchConfig::default()
        }
    }

    /// `upstream_path` as an origin-form URI, `None` when it is not one.
    pub(crate) fn upstream_uri(&self) -> Option<Uri> {
        if !self.upstream_path.starts_with('/') {
            return None;
        }
        let uri: Uri = self.upstream_path.parse().ok()?;
        (uri.scheme().is_none() && uri.authority().is_none()).then_some(uri)
    }
}
