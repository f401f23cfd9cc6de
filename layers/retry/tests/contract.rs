//! The contract every tollgate layer keeps (readiness, clones start unready, dropped futures
//! and services free capacity, errors pass through, panics leave it working), with retries
//! and with hedging.

use std::time::Duration;
use tollgate_core::testing::contract;
use tollgate_retry::{HedgeConfig, RetryConfig, RetryLayer};
use tower_layer::Layer;

#[tokio::test(start_paused = true)]
async fn retry_keeps_the_contract() {
    let layer = RetryLayer::new(RetryConfig {
        seed: Some(1),
        ..RetryConfig::default()
    })
    .unwrap();
    contract::check(|probe| layer.layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn hedging_keeps_the_contract() {
    let layer = RetryLayer::new(RetryConfig {
        hedge: Some(HedgeConfig {
            percentile: None,
            min_delay: Duration::from_millis(5),
            ..HedgeConfig::default()
        }),
        seed: Some(1),
        ..RetryConfig::default()
    })
    .unwrap();
    contract::check(|probe| layer.layer(probe)).await;
}
