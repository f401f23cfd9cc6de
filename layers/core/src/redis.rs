//! One shape for the Redis settings of every layer that keeps state in Redis (the admission
//! layer's shared rate limit, the cache's L3), so a user writes them the same way everywhere.
//!
//! Plain data, with no Redis client here: each layer opens its own connection from these
//! settings and, while Redis fails, keeps away from it with an
//! [`OutageGuard`](crate::outage::OutageGuard) built from [`RedisConfig::failures`] and
//! [`RedisConfig::cooldown`].
//!
//! With feature `serde`, durations read as `"50ms"`, `"1s"`, left-out fields take their
//! defaults and unknown fields are refused:
//!
//! ```toml
//! redis = { url = "redis://127.0.0.1:6379", response_timeout = "20ms" }
//! ```

use crate::error::ConfigError;
use std::time::Duration;

/// Where a layer's shared state lives, and how long it waits for it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The server: `redis://[user:password@]host[:port][/db]`, `rediss://...` (TLS, where
    /// the layer's client supports it) or `redis+unix:///path`. No default.
    pub url: String,
    /// Prepended to every key the layer writes. Default none: the layer's own prefix
    /// (`"tollgate:rl:"` for rate limits, `"tollgate:cache:"` for the cache), so two layers
    /// on one server never share a key.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub key_prefix: Option<String>,
    /// The longest a connection attempt may take. Default 250 ms; not zero.
    #[cfg_attr(
        feature = "serde",
        serde(with = "humantime_serde", default = "defaults::connect_timeout")
    )]
    pub connect_timeout: Duration,
    /// The longest one command may take before it counts as failed and the layer goes on
    /// without Redis. Default 50 ms; not zero.
    #[cfg_attr(
        feature = "serde",
        serde(with = "humantime_serde", default = "defaults::response_timeout")
    )]
    pub response_timeout: Duration,
    /// Failures in a row (errors or timeouts) after which Redis is left alone for
    /// `cooldown`. Default 5; at least 1.
    #[cfg_attr(feature = "serde", serde(default = "defaults::failures"))]
    pub failures: u32,
    /// How long Redis is left alone after `failures` failures in a row; then one operation
    /// probes it, and a success closes the outage. Default 1 s; not zero.
    #[cfg_attr(
        feature = "serde",
        serde(with = "humantime_serde", default = "defaults::cooldown")
    )]
    pub cooldown: Duration,
}

impl RedisConfig {
    /// The defaults, talking to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: None,
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(50),
            failures: 5,
            cooldown: Duration::from_secs(1),
        }
    }

    /// Sets [`key_prefix`](Self::key_prefix).
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// The key prefix: the configured one, else the layer's `default`.
    pub fn key_prefix_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key_prefix.as_deref().unwrap_or(default)
    }

    /// Checks every field. The URL's scheme and host are checked here; a layer's Redis client
    /// may refuse more (an unsupported scheme) when it is built.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad field (`url`, `connect_timeout`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url(&self.url).map_err(|p| ConfigError::new("url", p))?;
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("cooldown", self.cooldown),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must not be zero"));
            }
        }
        if self.failures == 0 {
            return Err(ConfigError::new("failures", "must be at least 1"));
        }
        Ok(())
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("must be set (redis://host:port/db)".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a Redis URL (redis://host:port/db)"));
    };
    match scheme {
        "redis" | "rediss" | "valkey" | "valkeys" => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            if host.is_empty() {
                return Err(format!("`{url}` names no host"));
            }
            Ok(())
        }
        "redis+unix" | "unix" if rest.starts_with('/') => Ok(()),
        "redis+unix" | "unix" => Err(format!("`{url}` names no socket path")),
        _ => Err(format!(
            "`{scheme}` is not a Redis scheme (redis, rediss, redis+unix)"
        )),
    }
}

/// Defaults of the fields a config read with `serde` may leave out: the same values as
/// [`RedisConfig::new`]'s.
#[cfg(feature = "serde")]
mod defaults {
    use std::time::Duration;

    pub(super) fn connect_timeout() -> Duration {
        super::RedisConfig::new("").connect_timeout
    }

    pub(super) fn response_timeout() -> Duration {
        super::RedisConfig::new("").response_timeout
    }

    pub(super) fn failures() -> u32 {
        super::RedisConfig::new("").failures
    }

    pub(super) fn cooldown() -> Duration {
        super::RedisConfig::new("").cooldown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_with_a_url_are_valid() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://user:pw@cache.internal/2",
            "rediss://h",
            "redis+unix:///run/redis.sock",
        ] {
            RedisConfig::new(url).validate().unwrap();
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let ok = || RedisConfig::new("redis://127.0.0.1/");
        let cases = [
            ("url", RedisConfig::new("")),
            ("url", RedisConfig::new("http://x")),
            ("url", RedisConfig::new("redis://")),
            ("url", RedisConfig::new("127.0.0.1:6379")),
            ("url", RedisConfig::new("redis+unix://relative")),
            (
                "connect_timeout",
                RedisConfig {
                    connect_timeout: Duration::ZERO,
                    ..ok()
                },
            ),
            (
                "response_timeout",
                RedisConfig {
                    response_timeout: Duration::ZERO,
                    ..ok()
                },
            ),
            (
                "cooldown",
                RedisConfig {
                    cooldown: Duration::ZERO,
                    ..ok()
                },
            ),
            (
                "failures",
                RedisConfig {
                    failures: 0,
                    ..ok()
                },
            ),
        ];
        for (field, c) in cases {
            assert_eq!(c.validate().unwrap_err().field(), field, "{c:?}");
        }
    }

    #[test]
    fn the_layer_prefix_stands_in_for_a_missing_one() {
        let c = RedisConfig::new("redis://h");
        assert_eq!(c.key_prefix_or("tollgate:rl:"), "tollgate:rl:");
        let c = c.with_key_prefix("app:");
        assert_eq!(c.key_prefix_or("tollgate:rl:"), "app:");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reads_from_toml_with_defaults_and_refuses_unknown_fields() {
        let c: RedisConfig = toml::from_str(
            "url = \"redis://127.0.0.1:6379\"\nresponse_timeout = \"20ms\"\ncooldown = \"2s\"",
        )
        .unwrap();
        assert_eq!(
            c,
            RedisConfig {
                response_timeout: Duration::from_millis(20),
                cooldown: Duration::from_secs(2),
                ..RedisConfig::new("redis://127.0.0.1:6379")
            }
        );
        assert!(toml::from_str::<RedisConfig>("url = \"redis://h\"\ntimeout = \"1s\"").is_err());
        assert!(
            toml::from_str::<RedisConfig>("key_prefix = \"a:\"").is_err(),
            "url is required"
        );
        let back = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<RedisConfig>(&back).unwrap(), c);
    }
}
