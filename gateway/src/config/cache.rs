//! `[routes.cache]` and `[routes.cache.redis]`: plain data, checked once.
//!
//! The gateway's own section, not tollgate-cache's `CacheConfig`: an HTTP cache also needs the
//! response body limits, `Vary` fields and the origin timeout, and sizes its tiers in entries
//! and bytes; it builds a `CacheConfig` whose `validate` still decides. Its `redis` table is
//! tollgate-cache's own `RedisTierConfig` (tollgate-core's Redis settings nested as `server`,
//! the one shape every tollgate Redis user shares, plus the tier's `channel` and
//! `reconnect_interval`; durations as `"50ms"`).

use super::error::ConfigError;
use http::header::HeaderName;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tollgate_cache::CacheConfig;
use tollgate_cache::redis::RedisTierConfig;

/// A route's cache (`[routes.cache]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Freshness of a response that gives none (no `s-maxage`/`max-age`), ms. Default 10000.
    pub default_ttl_ms: u64,
    /// Upper bound of every freshness and stale window, a response's own included, ms.
    /// Default 3600000 (1 h); at most 30 days.
    pub max_ttl_ms: u64,
    /// Serve a response this long past its freshness while one background request refreshes
    /// it (RFC 5861), ms; a response's own `stale-while-revalidate` overrides it. Default 0.
    pub stale_while_revalidate_ms: u64,
    /// Serve a response this long past its freshness instead of an upstream failure (an error
    /// or a 5xx), ms; a response's own `stale-if-error` overrides it. Default 60000.
    pub stale_if_error_ms: u64,
    /// How long the upstream may take (to its answer's head, and for a stored answer to its
    /// whole body) before it counts as failed, so a stale answer can stand in for a hanging
    /// upstream too, ms. Keep it below the route's request timeout, which otherwise ends the
    /// request first (504, nothing stale). Default 0: no limit of its own.
    pub origin_timeout_ms: u64,
    /// Freshness of `404`/`410` answers that give none, ms; 0 stores none. Default 5000.
    pub negative_ttl_ms: u64,
    /// L2 holds at most this many entries (each counts as at least `max_bytes / max_entries`
    /// bytes), entries. Default 10000.
    pub max_entries: u64,
    /// L2 holds at most this many bytes of headers and bodies, bytes. Default 67108864 (64 MiB).
    pub max_bytes: u64,
    /// L1 slots per worker thread (copies sharing L2's bodies), entries: 0 (off) or a power of
    /// two up to 65536. Default 256.
    pub l1_entries: usize,
    /// Largest body stored, bytes; larger answers pass through uncached. Default 1048576 (1 MiB);
    /// at most `max_bytes`.
    pub max_body_bytes: u64,
    /// Request headers added to the key, so responses that `Vary` on them are stored (one entry
    /// per combination of values), e.g. `["accept-encoding"]`. `Host` is always in the key.
    /// Default none.
    pub vary: Vec<String>,
    /// A Redis L3 shared by several gateway instances: tollgate-cache's `RedisTierConfig`,
    /// `{ server = { url = "redis://host:port/db", key_prefix, connect_timeout,
    /// response_timeout, failures, cooldown }, channel, reconnect_interval }` (keys default to
    /// the prefix `"tollgate:cache:"`, the channel to `"tollgate:cache:invalidate"`). Default
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisTierConfig>,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            default_ttl_ms: 10_000,
            max_ttl_ms: 3_600_000,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 60_000,
            origin_timeout_ms: 0,
            negative_ttl_ms: 5_000,
            max_entries: 10_000,
            max_bytes: 64 << 20,
            l1_entries: 256,
            max_body_bytes: 1 << 20,
            vary: Vec::new(),
            redis: None,
        }
    }
}

pub(crate) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl CacheSection {
    /// The cache layer's configuration.
    pub fn to_config(&self) -> CacheConfig {
        CacheConfig {
            l1_slots: self.l1_entries,
            l2_capacity: self.max_bytes,
            default_ttl: ms(self.default_ttl_ms),
            max_ttl: ms(self.max_ttl_ms),
            negative_ttl: ms(self.negative_ttl_ms),
            stale_while_revalidate: ms(self.stale_while_revalidate_ms),
            stale_if_error: ms(self.stale_if_error_ms),
            ..CacheConfig::default()
        }
    }

    /// The `vary` names parsed, or the index of the first that is not a header name.
    pub(crate) fn vary_headers(&self) -> Result<Vec<HeaderName>, usize> {
        self.vary
            .iter()
            .enumerate()
            .map(|(i, v)| HeaderName::from_bytes(v.trim().as_bytes()).map_err(|_| i))
            .collect()
    }

    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        const MONTH_MS: u64 = 30 * 86_400_000;
        if !(1..=MONTH_MS).contains(&self.max_ttl_ms) {
            return e(
                "max_ttl_ms",
                "must be between 1 and 2592000000 ms (30 days)",
            );
        }
        if !(1..=self.max_ttl_ms).contains(&self.default_ttl_ms) {
            return e("default_ttl_ms", "must be between 1 ms and max_ttl_ms");
        }
        for (f, v) in [
            ("stale_while_revalidate_ms", self.stale_while_revalidate_ms),
            ("stale_if_error_ms", self.stale_if_error_ms),
            ("negative_ttl_ms", self.negative_ttl_ms),
        ] {
            if v > self.max_ttl_ms {
                return e(f, "must not exceed max_ttl_ms");
            }
        }
        if self.origin_timeout_ms > 3_600_000 {
            return e("origin_timeout_ms", "must be at most 3600000 ms");
        }
        if !(1..=100_000_000).contains(&self.max_entries) {
            return e("max_entries", "must be between 1 and 100000000");
        }
        if !(1024..=1 << 40).contains(&self.max_bytes) {
            return e("max_bytes", "must be between 1024 and 1099511627776 bytes");
        }
        if self.l1_entries != 0 && (!self.l1_entries.is_power_of_two() || self.l1_entries > 65_536)
        {
            return e("l1_entries", "must be 0 or a power of two up to 65536");
        }
        if !(1..=1 << 30).contains(&self.max_body_bytes) {
            return e("max_body_bytes", "must be between 1 and 1073741824 bytes");
        }
        if self.max_body_bytes > self.max_bytes {
            return e("max_body_bytes", "must not exceed max_bytes");
        }
        if let Err(i) = self.vary_headers() {
            return e(&format!("vary[{i}]"), "not a header name");
        }
        if let Some(r) = &self.redis {
            r.validate().map_err(|err| {
                ConfigError::new(format!("{at}.redis.{}", err.field()), err.problem())
            })?;
        }
        self.to_config()
            .validate()
            .map_err(|err| ConfigError::new(format!("{at}.(section)"), err.to_string()))
    }
}
