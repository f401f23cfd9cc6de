//! The configuration read from TOML with the `serde` feature: a documented example, the
//! defaults when a field is left out, readable durations, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;
use tollgate_pool::algorithm::{AlgorithmConfig, VegasConfig};
use tollgate_pool::{AtLimit, PoolConfig};

const EXAMPLE: &str = r#"
min_limit = 4
max_limit = 500
initial_limit = 16
at_limit = { type = "wait", max_wait = "50ms" }
algorithm = { type = "vegas", queued_windows = 3 }
max_window = "2s"
"#;

#[test]
fn reads_the_documented_form() {
    let c: PoolConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!((c.min_limit, c.max_limit, c.initial_limit), (4, 500, 16));
    assert_eq!(
        c.at_limit,
        AtLimit::Wait {
            max_wait: Duration::from_millis(50)
        }
    );
    assert_eq!(
        c.algorithm,
        AlgorithmConfig::Vegas(VegasConfig {
            queued_windows: 3,
            ..VegasConfig::default()
        })
    );
    assert_eq!(c.max_window, Duration::from_secs(2));
    c.validate().unwrap();
    // The short form: a name with that algorithm's defaults.
    let named: PoolConfig = toml::from_str("algorithm = \"aimd\"").unwrap();
    assert!(matches!(named.algorithm, AlgorithmConfig::Aimd(_)));
    let err = toml::from_str::<PoolConfig>("algorithm = \"fifo\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fifo") && err.contains("knee"), "{err}");
}

#[test]
fn an_empty_table_is_the_default() {
    let c: PoolConfig = toml::from_str("").unwrap();
    assert_eq!(c, PoolConfig::default());
}

#[test]
fn writes_what_it_reads() {
    for c in [PoolConfig::default(), toml::from_str(EXAMPLE).unwrap()] {
        let text = toml::to_string(&c).unwrap();
        let back: PoolConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }
}

#[test]
fn a_bad_value_names_its_field() {
    let err = toml::from_str::<PoolConfig>("max_window = \"two seconds\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_window"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let err = toml::from_str::<PoolConfig>("min_limt = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("min_limt"), "{err}");
}
