//! The configuration read from TOML with the `serde` feature: a documented example, the
//! defaults when a field is left out, readable durations, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;
use tollgate_cache::CacheConfig;

const EXAMPLE: &str = r#"
default_ttl = "30s"
stale_while_revalidate = "10s"
stale_if_error = "5m"
time_to_idle = "1h"
"#;

#[test]
fn reads_the_documented_form() {
    let c: CacheConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(c.default_ttl, Duration::from_secs(30));
    assert_eq!(c.stale_while_revalidate, Duration::from_secs(10));
    assert_eq!(c.stale_if_error, Duration::from_secs(300));
    assert_eq!(c.time_to_idle, Some(Duration::from_secs(3600)));
    assert_eq!(c.l1_slots, CacheConfig::default().l1_slots);
    c.validate().unwrap();
}

#[test]
fn an_empty_table_is_the_default() {
    let c: CacheConfig = toml::from_str("").unwrap();
    assert_eq!(c, CacheConfig::default());
}

#[test]
fn writes_what_it_reads() {
    for c in [CacheConfig::default(), toml::from_str(EXAMPLE).unwrap()] {
        let text = toml::to_string(&c).unwrap();
        let back: CacheConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }
}

#[test]
fn a_bad_value_names_its_field() {
    let err = toml::from_str::<CacheConfig>("default_ttl = 30")
        .unwrap_err()
        .to_string();
    assert!(err.contains("default_ttl"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let err = toml::from_str::<CacheConfig>("ttl = \"1s\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ttl"), "{err}");
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_tier_nests_the_one_redis_shape() {
    use tollgate_cache::redis::{RedisConfig, RedisTierConfig};
    let c: RedisTierConfig = toml::from_str(
        r#"
server = { url = "redis://127.0.0.1:6379", key_prefix = "app:", failures = 3 }
reconnect_interval = "2s"
"#,
    )
    .unwrap();
    let mut want = RedisTierConfig::with_server(RedisConfig {
        failures: 3,
        ..RedisConfig::new("redis://127.0.0.1:6379").with_key_prefix("app:")
    });
    want.reconnect_interval = std::time::Duration::from_secs(2);
    assert_eq!(c, want);
    assert_eq!(c.key_prefix(), "app:");
    c.validate().unwrap();
    let back: RedisTierConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
    // The settings every Redis user shares are refused at the tier's level, and vice versa.
    assert!(toml::from_str::<RedisTierConfig>("url = \"redis://h\"").is_err());
    assert!(
        toml::from_str::<RedisTierConfig>("server = { url = \"redis://h\", channel = \"x\" }")
            .is_err()
    );
}
