//! The configuration read from TOML with the `serde` feature: a documented example, the
//! defaults when a field is left out, readable durations, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;
use tollgate_breaker::{Backoff, BreakerConfig, SlidingWindow};

const EXAMPLE: &str = r#"
name = "payments"
minimum_calls = 20
failure_rate_threshold = 0.4
slow_call_duration = "750ms"
wait_in_open = "5s"
sliding_window = { type = "time", length = "30s", buckets = 10 }
backoff = { max_wait = "2m" }
"#;

#[test]
fn reads_the_documented_form() {
    let c: BreakerConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(c.name, "payments");
    assert_eq!(c.minimum_calls, 20);
    assert_eq!(c.failure_rate_threshold, 0.4);
    assert_eq!(c.slow_call_duration, Some(Duration::from_millis(750)));
    assert_eq!(c.wait_in_open, Duration::from_secs(5));
    assert_eq!(
        c.sliding_window,
        SlidingWindow::Time {
            length: Duration::from_secs(30),
            buckets: 10
        }
    );
    assert_eq!(
        c.backoff,
        Some(Backoff {
            max_wait: Duration::from_secs(120),
            ..Backoff::default()
        })
    );
    assert_eq!(
        c.permitted_calls_in_half_open,
        BreakerConfig::default().permitted_calls_in_half_open
    );
    c.validate().unwrap();
}

#[test]
fn an_empty_table_is_the_default() {
    let c: BreakerConfig = toml::from_str("").unwrap();
    assert_eq!(c, BreakerConfig::default());
}

#[test]
fn writes_what_it_reads() {
    for c in [BreakerConfig::default(), toml::from_str(EXAMPLE).unwrap()] {
        let text = toml::to_string(&c).unwrap();
        let back: BreakerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }
}

#[test]
fn a_bad_value_names_its_field() {
    let err = toml::from_str::<BreakerConfig>("wait_in_open = 5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("wait_in_open"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let err = toml::from_str::<BreakerConfig>("minimum_calls = 10\nfailure_rate = 0.5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("failure_rate"), "{err}");
}
