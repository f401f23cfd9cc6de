//! A per-endpoint circuit breaker as the balancer's external signal (feature `breaker`).
#![cfg(feature = "breaker")]

mod common;

use common::{Backend, load};
use std::time::Duration;
use tollgate_balance::{Balance, BalanceConfig, EndpointState};
use tollgate_breaker::{Breaker, BreakerConfig, BreakerLayer};
use tower::Layer;

#[tokio::test(start_paused = true)]
async fn an_open_breaker_takes_its_endpoint_out() {
    let backends: Vec<Backend> = (0..3)
        .map(|_| Backend::new(Duration::from_millis(5)))
        .collect();
    // Endpoint 0 gets no request before its breaker closes: assume it is fast until it answers.
    let config = BalanceConfig {
        seed: Some(3),
        default_rtt: Duration::from_millis(1),
        ..Default::default()
    };
    let svc: Balance<usize, Breaker<Backend>> = Balance::new([], config).unwrap();
    let handle = svc.handle();
    let mut breakers = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let layer = BreakerLayer::new(BreakerConfig::default()).unwrap();
        breakers.push(layer.handle());
        handle
            .insert_with_signal(i, layer.layer(b.clone()), 1.0, layer.handle())
            .unwrap();
    }
    breakers[0].force_open();
    assert_eq!(handle.endpoints()[0].state, EndpointState::Unavailable);
    let hour = Duration::from_secs(3600);
    let (_, failed) = load(&svc, Duration::from_millis(1), Duration::from_secs(2), hour).await;
    assert_eq!(failed, 0);
    assert_eq!(
        backends[0].hits(),
        0,
        "an endpoint with an open breaker got traffic"
    );
    breakers[0].reset();
    load(&svc, Duration::from_millis(1), Duration::from_secs(2), hour).await;
    assert!(backends[0].hits() > 0);
    assert_eq!(handle.endpoints()[0].state, EndpointState::Healthy);
}
