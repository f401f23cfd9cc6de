//! The contract every tollgate layer keeps.

use std::time::Duration;
use tollgate_cache::{CacheConfig, CacheLayer, Cacheability, FnPolicy, Freshness};
use tollgate_core::testing::{ProbeRequest, contract};
use tower_layer::Layer;

#[tokio::test(start_paused = true)]
async fn cache_keeps_the_contract() {
    let layer = CacheLayer::new(
        CacheConfig::default(),
        FnPolicy::new(
            |r: &ProbeRequest| Some(r.clone()),
            |_: &u64| Cacheability::Store(Freshness::ttl(Duration::from_secs(60))),
        ),
    )
    .unwrap();
    contract::check(|probe| layer.layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn cache_without_l1_keeps_the_contract() {
    let cfg = CacheConfig {
        l1_slots: 0,
        ..CacheConfig::default()
    };
    let layer = CacheLayer::new(
        cfg,
        FnPolicy::new(
            |r: &ProbeRequest| Some(r.clone()),
            |_: &u64| Cacheability::Pass,
        ),
    )
    .unwrap();
    contract::check(|probe| layer.layer(probe)).await;
}

#[tokio::test(start_paused = true)]
async fn bypass_keeps_the_contract() {
    let layer = CacheLayer::new(
        CacheConfig::default(),
        FnPolicy::new(|_: &ProbeRequest| None::<u8>, |_: &u64| Cacheability::Pass),
    )
    .unwrap();
    contract::check(|probe| layer.layer(probe)).await;
}
