//! The tollgate contract, on a single-endpoint balancer around the probe.
//!
//! The readiness check applies as written: the balancer polls a clone of the probe (which
//! starts unready), so an unready probe leaves the balancer pending and its readiness wakes
//! the task. Ejection is turned off so the contract's failures and panics cannot trip it.

use tollgate_balance::{BalanceConfig, BalanceLayer, OutlierConfig};
use tollgate_core::testing::contract;
use tower::Layer;

#[tokio::test(start_paused = true)]
async fn a_single_endpoint_balancer_keeps_the_contract() {
    let config = BalanceConfig {
        outlier: OutlierConfig {
            consecutive_failures: 0,
            success_rate: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let layer = BalanceLayer::new(config).unwrap();
    contract::check(|probe| layer.layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn the_default_config_keeps_the_contract_too() {
    // With one endpoint, ejection is capped at zero endpoints, so defaults are safe as well.
    let layer = BalanceLayer::new(BalanceConfig::default()).unwrap();
    contract::check(|probe| layer.layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn a_hashing_balancer_keeps_the_contract() {
    let layer = BalanceLayer::new(BalanceConfig::default()).unwrap();
    contract::check(|probe| {
        layer
            .layer(probe)
            .hash_by(|_: &tollgate_core::testing::ProbeRequest| Some(7))
    })
    .await;
}
