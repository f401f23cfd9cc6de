//! The configuration read from TOML with the `serde` feature: a documented example, the
//! defaults when a field is left out, readable durations, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;
use tollgate_retry::RetryConfig;

const EXAMPLE: &str = r#"
max_attempts = 4
max_pushback = "10s"
budget = { ratio = 0.05, min_per_second = 5 }
backoff = { base = "20ms", max = "1s" }
hedge = { percentile = 0.95, min_delay = "2ms" }
"#;

#[test]
fn reads_the_documented_form() {
    let c: RetryConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(c.max_attempts, 4);
    assert_eq!(c.max_pushback, Duration::from_secs(10));
    assert_eq!((c.budget.ratio, c.budget.min_per_second), (0.05, 5));
    assert_eq!(c.backoff.base, Duration::from_millis(20));
    let hedge = c.hedge.as_ref().unwrap();
    assert_eq!(hedge.percentile, Some(0.95));
    assert_eq!(hedge.min_delay, Duration::from_millis(2));
    c.validate().unwrap();
}

#[test]
fn an_empty_table_is_the_default() {
    let c: RetryConfig = toml::from_str("").unwrap();
    assert_eq!(c, RetryConfig::default());
}

#[test]
fn writes_what_it_reads() {
    for c in [RetryConfig::default(), toml::from_str(EXAMPLE).unwrap()] {
        let text = toml::to_string(&c).unwrap();
        let back: RetryConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }
}

#[test]
fn a_bad_value_names_its_field() {
    let err = toml::from_str::<RetryConfig>("max_attempts = \"four\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_attempts"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let err = toml::from_str::<RetryConfig>("budget = { rate = 0.1 }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate"), "{err}");
}
