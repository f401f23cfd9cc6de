//! The configuration read from TOML with the `serde` feature: a documented example, the
//! defaults when a field is left out, readable durations, and errors that name the field.
#![cfg(feature = "serde")]

use std::time::Duration;
use tollgate_batch::{BatchConfig, Overflow};

const EXAMPLE: &str = r#"
max_items = 32
max_linger = "2ms"
overflow = "reject"
"#;

#[test]
fn reads_the_documented_form() {
    let c: BatchConfig = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(c.max_items, 32);
    assert_eq!(c.max_linger, Duration::from_millis(2));
    assert_eq!(c.overflow, Overflow::Reject);
    assert_eq!(c.queue_capacity, BatchConfig::default().queue_capacity);
    c.validate().unwrap();
}

#[test]
fn an_empty_table_is_the_default() {
    let c: BatchConfig = toml::from_str("").unwrap();
    assert_eq!(c, BatchConfig::default());
}

#[test]
fn writes_what_it_reads() {
    for c in [BatchConfig::default(), toml::from_str(EXAMPLE).unwrap()] {
        let text = toml::to_string(&c).unwrap();
        let back: BatchConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c, "{text}");
    }
}

#[test]
fn a_bad_value_names_its_field() {
    let err = toml::from_str::<BatchConfig>("overflow = \"drop\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("drop"), "{err}");
}

#[test]
fn an_unknown_field_is_refused() {
    let err = toml::from_str::<BatchConfig>("max_item = 3")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_item"), "{err}");
}
