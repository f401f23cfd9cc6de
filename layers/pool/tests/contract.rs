//! The tollgate layer contract, for both modes.

use std::time::Duration;
use tollgate_core::testing::contract;
use tollgate_pool::{AtLimit, PoolConfig, PoolSizerLayer};
use tower::Layer;

fn config(at_limit: AtLimit) -> PoolConfig {
    // A few failures and panics must not trip the limit below what the checks need (1).
    PoolConfig {
        initial_limit: 4,
        at_limit,
        ..PoolConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn pool_sizer_rejecting_keeps_the_contract() {
    contract::check(|probe| {
        PoolSizerLayer::from_config(config(AtLimit::Reject))
            .unwrap()
            .layer(probe)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn pool_sizer_waiting_keeps_the_contract() {
    let wait = AtLimit::Wait {
        max_wait: Duration::from_secs(1),
    };
    contract::check(|probe| {
        PoolSizerLayer::from_config(config(wait))
            .unwrap()
            .layer(probe)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn deferred_pool_sizer_keeps_the_contract() {
    let wait = AtLimit::Wait {
        max_wait: Duration::from_secs(1),
    };
    contract::check(|probe| {
        PoolSizerLayer::from_config(config(wait))
            .unwrap()
            .deferred()
            .layer(probe)
    })
    .await;
}
