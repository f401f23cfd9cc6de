//! The contract every tollgate layer keeps (readiness, clones start unready, dropped futures
//! and services free capacity, errors pass through, panics leave it working).

use tollgate_breaker::{BreakerConfig, BreakerLayer, KeyLimits, KeyedBreakerLayer};
use tollgate_core::testing::{ProbeRequest, contract};
use tower_layer::Layer;

fn config() -> BreakerConfig {
    // The contract's few failures and panics must not trip it on purpose.
    BreakerConfig {
        minimum_calls: 1000,
        sliding_window: tollgate_breaker::SlidingWindow::Count { size: 1000 },
        ..BreakerConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn breaker_keeps_the_contract() {
    contract::check(|probe| BreakerLayer::new(config()).unwrap().layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn breaker_with_slow_call_detection_keeps_the_contract() {
    let config = BreakerConfig {
        slow_call_duration: Some(std::time::Duration::from_secs(1)),
        ..config()
    };
    contract::check(|probe| BreakerLayer::new(config.clone()).unwrap().layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn keyed_breaker_keeps_the_contract() {
    contract::check(|probe| {
        KeyedBreakerLayer::new(config(), KeyLimits::default(), |r: &ProbeRequest| {
            matches!(r, ProbeRequest::Fail(_))
        })
        .unwrap()
        .layer(probe)
    })
    .await;
}
