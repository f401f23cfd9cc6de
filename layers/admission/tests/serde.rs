//! The configuration read from TOML with the `serde` feature: a documented example, the
//! defaults when a field is left out, readable durations, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;
use tollgate_admission::{AdmissionConfig, ClassConfig};

const EXAMPLE: &str = r#"
limit = 64
max_queued = 256
classes = [
  { name = "interactive", reserved = 8 },
  { name = "batch", queue_capacity = 16 },
]
codel = { target = "5ms", interval = "100ms" }
rate_limit = { burst = 20, period = "1s" }
"#;

#[test]
fn reads_the_documented_form() {
    let c: AdmissionConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!((c.limit, c.max_queued), (64, 256));
    assert_eq!(
        c.classes,
        vec![
            ClassConfig::new("interactive").with_reserved(8),
            ClassConfig::new("batch").with_queue_capacity(16),
        ]
    );
    assert_eq!(c.codel.target, Duration::from_millis(5));
    let rl = c.rate_limit.as_ref().unwrap();
    assert_eq!((rl.burst, rl.period), (20, Duration::from_secs(1)));
    assert_eq!(
        rl.max_keys,
        tollgate_admission::RateLimitConfig::new(1, Duration::from_secs(1)).max_keys
    );
    c.validate().unwrap();
}

#[test]
fn an_empty_table_is_the_default() {
    let c: AdmissionConfig = toml::from_str("").unwrap();
    assert_eq!(c, AdmissionConfig::default());
}

#[test]
fn writes_what_it_reads() {
    for c in [AdmissionConfig::default(), toml::from_str(EXAMPLE).unwrap()] {
        let text = toml::to_string(&c).unwrap();
        let back: AdmissionConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }
}

#[test]
fn a_bad_value_names_its_field() {
    let err = toml::from_str::<AdmissionConfig>("classes = [{ queue_capacity = 3 }]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("name"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let err = toml::from_str::<AdmissionConfig>("limit = 4\nlimits = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits"), "{err}");
}

#[cfg(feature = "redis")]
#[test]
fn the_shared_quota_takes_the_one_redis_shape() {
    let c: AdmissionConfig = toml::from_str(
        r#"rate_limit = { burst = 100, period = "1m", redis = { url = "redis://127.0.0.1:6379", response_timeout = "20ms" } }"#,
    )
    .unwrap();
    let redis = c.rate_limit.as_ref().unwrap().redis.as_ref().unwrap();
    assert_eq!(
        *redis,
        tollgate_admission::RedisConfig {
            response_timeout: Duration::from_millis(20),
            ..tollgate_admission::RedisConfig::new("redis://127.0.0.1:6379")
        }
    );
    c.validate().unwrap();
    // The old names are gone: an unknown field is refused.
    assert!(
        toml::from_str::<AdmissionConfig>(
            r#"rate_limit = { burst = 1, period = "1s", redis = { url = "redis://h", retry_after = "1s" } }"#,
        )
        .is_err()
    );
    // And a bad value is named under the rate limit.
    let c: AdmissionConfig = toml::from_str(
        r#"rate_limit = { burst = 1, period = "1s", redis = { url = "redis://h", failures = 0 } }"#,
    )
    .unwrap();
    assert_eq!(
        c.validate().unwrap_err().field(),
        "rate_limit.redis.failures"
    );
}
