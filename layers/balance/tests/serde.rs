//! The configuration read from TOML with the `serde` feature: a documented example, the
//! defaults when a field is left out, readable durations, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;
use tollgate_balance::BalanceConfig;

const EXAMPLE: &str = r#"
default_rtt = "5ms"
slow_start = "30s"
panic_threshold = 0.3
[outlier]
consecutive_failures = 3
base_ejection_time = "10s"
[health]
interval = "2s"
[hash]
load_factor = 1.5
header = "x-user-id"
"#;

#[test]
fn reads_the_documented_form() {
    let c: BalanceConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(c.default_rtt, Duration::from_millis(5));
    assert_eq!(c.slow_start, Duration::from_secs(30));
    assert_eq!(c.panic_threshold, 0.3);
    assert_eq!(c.outlier.consecutive_failures, 3);
    assert_eq!(c.outlier.base_ejection_time, Duration::from_secs(10));
    assert_eq!(
        c.outlier.max_ejection_time,
        BalanceConfig::default().outlier.max_ejection_time
    );
    assert_eq!(c.health.interval, Duration::from_secs(2));
    assert_eq!(c.hash.load_factor, 1.5);
    assert_eq!(c.hash.vnodes, 128);
    assert_eq!(c.hash.header.as_deref(), Some("x-user-id"));
    c.validate().unwrap();
}

#[test]
fn an_empty_table_is_the_default() {
    let c: BalanceConfig = toml::from_str("").unwrap();
    assert_eq!(c, BalanceConfig::default());
}

#[test]
fn writes_what_it_reads() {
    for c in [BalanceConfig::default(), toml::from_str(EXAMPLE).unwrap()] {
        let text = toml::to_string(&c).unwrap();
        let back: BalanceConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }
}

#[test]
fn a_bad_value_names_its_field() {
    let err = toml::from_str::<BalanceConfig>("decay = -1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("decay"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let err = toml::from_str::<BalanceConfig>("[outlier]\nconsecutive = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("consecutive"), "{err}");
}

#[test]
fn a_hash_section_with_two_keys_names_the_section() {
    let c: BalanceConfig = toml::from_str("hash = { header = \"x\", path = true }").unwrap();
    assert_eq!(c.validate().unwrap_err().field(), "hash");
}
