//! Invalid configurations are refused when the layer is built, naming the field.

use std::time::Duration;
use tollgate_breaker::{
    Backoff, BreakerConfig, BreakerLayer, KeyLimits, KeyedBreakerLayer, SlidingWindow,
};

#[test]
fn invalid_configs_name_the_field() {
    let d = BreakerConfig::default;
    let cases: Vec<(BreakerConfig, &str)> = vec![
        (
            BreakerConfig {
                sliding_window: SlidingWindow::Count { size: 0 },
                ..d()
            },
            "sliding_window.size",
        ),
        (
            BreakerConfig {
                sliding_window: SlidingWindow::Time {
                    length: Duration::from_secs(1),
                    buckets: 0,
                },
                ..d()
            },
            "sliding_window.buckets",
        ),
        (
            BreakerConfig {
                sliding_window: SlidingWindow::Time {
                    length: Duration::ZERO,
                    buckets: 4,
                },
                ..d()
            },
            "sliding_window.length",
        ),
        (
            BreakerConfig {
                minimum_calls: 0,
                ..d()
            },
            "minimum_calls",
        ),
        (
            BreakerConfig {
                failure_rate_threshold: 1.5,
                ..d()
            },
            "failure_rate_threshold",
        ),
        (
            BreakerConfig {
                failure_rate_threshold: -0.1,
                ..d()
            },
            "failure_rate_threshold",
        ),
        (
            BreakerConfig {
                failure_rate_threshold: f64::NAN,
                ..d()
            },
            "failure_rate_threshold",
        ),
        (
            BreakerConfig {
                slow_call_rate_threshold: f64::NAN,
                ..d()
            },
            "slow_call_rate_threshold",
        ),
        (
            // At zero every window would meet the threshold: open on successes, never close.
            BreakerConfig {
                failure_rate_threshold: 0.0,
                ..d()
            },
            "failure_rate_threshold",
        ),
        (
            BreakerConfig {
                slow_call_rate_threshold: 0.0,
                ..d()
            },
            "slow_call_rate_threshold",
        ),
        (
            BreakerConfig {
                slow_call_duration: Some(Duration::ZERO),
                ..d()
            },
            "slow_call_duration",
        ),
        (
            BreakerConfig {
                consecutive_failures: Some(0),
                ..d()
            },
            "consecutive_failures",
        ),
        (
            BreakerConfig {
                wait_in_open: Duration::ZERO,
                ..d()
            },
            "wait_in_open",
        ),
        (
            BreakerConfig {
                permitted_calls_in_half_open: 0,
                ..d()
            },
            "permitted_calls_in_half_open",
        ),
        (
            BreakerConfig {
                backoff: Some(Backoff {
                    multiplier: 0.5,
                    ..Backoff::default()
                }),
                ..d()
            },
            "backoff.multiplier",
        ),
        (
            BreakerConfig {
                backoff: Some(Backoff {
                    multiplier: f64::NAN,
                    ..Backoff::default()
                }),
                ..d()
            },
            "backoff.multiplier",
        ),
        (
            BreakerConfig {
                backoff: Some(Backoff {
                    max_wait: Duration::from_secs(1),
                    ..Backoff::default()
                }),
                ..d()
            },
            "backoff.max_wait",
        ),
        (
            BreakerConfig {
                backoff: Some(Backoff {
                    jitter: 2.0,
                    ..Backoff::default()
                }),
                ..d()
            },
            "backoff.jitter",
        ),
    ];
    for (config, field) in cases {
        let err = BreakerLayer::new(config).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
    }
    let err = KeyedBreakerLayer::new(
        d(),
        KeyLimits {
            max_keys: 0,
            ..KeyLimits::default()
        },
        |r: &u8| *r,
    )
    .unwrap_err();
    assert_eq!(err.field(), "max_keys");
    let err = KeyedBreakerLayer::new(
        d(),
        KeyLimits {
            idle_timeout: Duration::ZERO,
            ..KeyLimits::default()
        },
        |r: &u8| *r,
    )
    .unwrap_err();
    assert_eq!(err.field(), "idle_timeout");
}
