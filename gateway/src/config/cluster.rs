//! The cluster's layer sections. `[clusters.breaker]`, `[clusters.endpoint_breaker]`,
//! `[clusters.pool]` and `[clusters.balance]` are the layers' own configuration types, read with
//! their `serde` feature: one set of defaults and one validation, the layer's, with the section's
//! path in front of the field a layer names. Durations are written `"250ms"`, `"5s"`, `"1m"`.
//!
//! `[clusters.balance] hash` turns on consistent hashing with bounded load:
//! `{ header = "x-user-id" }`, `{ cookie = "session" }` or `{ path = true }` names the request's
//! key (tollgate-balance's `HttpKey`, read from the `http::Request` the gateway forwards), with
//! `load_factor` and `vnodes` beside it. The key's source lives in the layer's own section, not
//! in a gateway-side field: tollgate-balance reads it with its `http` feature, so axum and tonic
//! users of the layer configure it the same way.
//!
//! What only the gateway knows stays here: the breakers' names (the cluster's, and
//! `cluster/endpoint` per endpoint), and the path of the active health check (`health_check`,
//! whose timing is `[clusters.balance.health]`).

use super::error::ConfigError;
use serde::{Deserialize, Serialize};
pub use tollgate_balance::{BalanceConfig, HealthConfig, OutlierConfig};
pub use tollgate_breaker::{Backoff, BreakerConfig, SlidingWindow};
pub use tollgate_pool::algorithm::AlgorithmConfig;
pub use tollgate_pool::{AtLimit, PoolConfig};

/// `[clusters.health_check]`: active HTTP health checks of the cluster's endpoints. Their
/// interval, timeout and thresholds are `[clusters.balance.health]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Path requested with `GET`; a 2xx answer passes. Default `/healthz`.
    pub path: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/healthz".into(),
        }
    }
}

impl HealthCheck {
    /// Checks the path; `at` is the section's path in the file.
    ///
    /// # Errors
    /// A path that is not one.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') || self.path.parse::<http::Uri>().is_err() {
            return Err(ConfigError::new(
                format!("{at}.path"),
                "must be a path starting with /",
            ));
        }
        Ok(())
    }
}

/// A layer's refusal as the gateway's error: `at` (the section's path) before the field the
/// layer names.
pub(crate) fn layer_error(at: &str, err: &tollgate_core::error::ConfigError) -> ConfigError {
    ConfigError::new(format!("{at}.{}", err.field()), err.problem())
}

/// `config` named `name` unless the file named it (its name is other than the default).
pub(crate) fn named(config: &BreakerConfig, name: &str) -> BreakerConfig {
    let mut c = config.clone();
    if c.name == BreakerConfig::default().name {
        c.name = name.to_owned();
    }
    c
}

/// An endpoint breaker's config: named `<name>/<addr>` (the file's name for it, else the
/// cluster's), and with its own seed when the file gave one (the seed mixed with the address),
/// so the endpoints' probes are not jittered in step and their events tell them apart.
pub(crate) fn for_endpoint(
    config: &BreakerConfig,
    cluster: &str,
    addr: std::net::SocketAddr,
) -> BreakerConfig {
    use std::hash::{Hash, Hasher};
    let mut c = named(config, cluster);
    c.name = format!("{}/{addr}", c.name);
    if let Some(seed) = c.seed {
        // A fixed-key hasher: the same file and address give the same seed on every run.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (seed, addr).hash(&mut h);
        c.seed = Some(h.finish());
    }
    c
}

/// Checks a breaker section.
///
/// # Errors
/// The first field the breaker refuses.
pub(crate) fn validate_breaker(c: &BreakerConfig, at: &str) -> Result<(), ConfigError> {
    c.validate().map_err(|e| layer_error(at, &e))
}

/// Checks a pool section.
///
/// # Errors
/// The first field the limiter refuses.
pub(crate) fn validate_pool(c: &PoolConfig, at: &str) -> Result<(), ConfigError> {
    c.validate().map_err(|e| layer_error(at, &e))
}

/// Checks a balance section, its hash key (`hash.header` must be a header name) included.
///
/// # Errors
/// The first field the balancer refuses.
pub(crate) fn validate_balance(c: &BalanceConfig, at: &str) -> Result<(), ConfigError> {
    c.validate().map_err(|e| layer_error(at, &e))?;
    tollgate_balance::HttpKey::from_config(&c.hash).map_err(|e| layer_error(at, &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_breaker_has_its_own_name_and_seed() {
        let a: std::net::SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let b: std::net::SocketAddr = "127.0.0.1:9002".parse().unwrap();
        let unnamed = BreakerConfig::default();
        assert_eq!(for_endpoint(&unnamed, "api", a).name, "api/127.0.0.1:9001");
        assert_eq!(
            for_endpoint(&unnamed, "api", a).seed,
            None,
            "random when not given"
        );
        let file = BreakerConfig {
            name: "edge".into(),
            seed: Some(7),
            ..BreakerConfig::default()
        };
        let (ca, cb) = (for_endpoint(&file, "api", a), for_endpoint(&file, "api", b));
        assert_eq!(
            (ca.name.as_str(), cb.name.as_str()),
            ("edge/127.0.0.1:9001", "edge/127.0.0.1:9002")
        );
        assert_ne!(ca.seed, cb.seed, "the endpoints' jitter is not in step");
        assert_eq!(
            ca.seed,
            for_endpoint(&file, "api", a).seed,
            "and the same on every run"
        );
    }
}
