//! A per-endpoint circuit breaker as the balancer's external signal (its handle implements
//! `tollgate_core::signal::EndpointSignal`).

mod common;

use common::{Backend, load};
use std::time::Duration;
use tollgate_balance::{Balance, BalanceConfig, EndpointState};
use tollgate_breaker::{Breaker, BreakerConfig, BreakerLayer, State};
use tower::{Layer, ServiceExt};

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

/// A breaker that opened on failures is not left out for ever: once its wait in open is over
/// the balancer sends the endpoint its probe (the breaker's state still reads `Open` until that
/// call arrives), and a healthy probe closes it. Regression: the signal used to read the state
/// alone, so an endpoint whose breaker opened never got the call that would move it on.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_gets_its_probe_when_the_wait_is_over() {
    let backends: Vec<Backend> = (0..2)
        .map(|_| Backend::new(Duration::from_millis(5)))
        .collect();
    let config = BalanceConfig {
        seed: Some(11),
        default_rtt: Duration::from_millis(1),
        ..Default::default()
    };
    let svc: Balance<usize, Breaker<Backend>> = Balance::new([], config).unwrap();
    let handle = svc.handle();
    let wait = Duration::from_secs(3);
    let mut breakers = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        let layer = BreakerLayer::new(BreakerConfig {
            minimum_calls: 4,
            sliding_window: tollgate_breaker::SlidingWindow::Count { size: 10 },
            wait_in_open: wait,
            permitted_calls_in_half_open: 1,
            ..Default::default()
        })
        .unwrap();
        breakers.push(layer.handle());
        let endpoint = layer.layer(b.clone());
        if i == 0 {
            // Trip it through its own breaker: four failed calls (the balancer would steer
            // away from a failing endpoint before its breaker had seen enough of them).
            b.set_failing(true);
            for _ in 0..4 {
                assert!(endpoint.clone().oneshot(()).await.is_err());
            }
        }
        handle
            .insert_with_signal(i, endpoint, 1.0, layer.handle())
            .unwrap();
    }
    let hour = Duration::from_secs(3600);
    assert_eq!(breakers[0].state(), State::Open);
    assert!(!breakers[0].admits_now());
    assert_eq!(handle.endpoints()[0].state, EndpointState::Unavailable);

    // Heals while out; nothing reaches it until the wait is over.
    backends[0].set_failing(false);
    let before = backends[0].hits();
    tokio::time::sleep(wait).await;
    assert_eq!(backends[0].hits(), before);
    assert_eq!(
        breakers[0].state(),
        State::Open,
        "no call has moved it on yet"
    );
    assert!(breakers[0].admits_now());
    assert_ne!(handle.endpoints()[0].state, EndpointState::Unavailable);

    let (_, failed) = load(
        &svc,
        Duration::from_millis(10),
        Duration::from_secs(2),
        hour,
    )
    .await;
    assert_eq!(failed, 0);
    assert!(
        backends[0].hits() > before,
        "the healed endpoint never got its probe"
    );
    assert_eq!(breakers[0].state(), State::Closed);
    assert_eq!(handle.endpoints()[0].state, EndpointState::Healthy);
}

/// While half-open with its one probe slot taken, the endpoint is out of rotation: a second
/// request is sent elsewhere instead of being rejected by the breaker.
#[tokio::test(start_paused = true)]
async fn a_half_open_breaker_with_its_probe_taken_is_left_out() {
    let layer = BreakerLayer::new(BreakerConfig {
        minimum_calls: 2,
        sliding_window: tollgate_breaker::SlidingWindow::Count { size: 2 },
        wait_in_open: Duration::from_secs(1),
        permitted_calls_in_half_open: 1,
        ..Default::default()
    })
    .unwrap();
    let backend = Backend::new(Duration::from_millis(100));
    backend.set_failing(true);
    let breaker = layer.handle();
    let svc = layer.layer(backend.clone());
    for _ in 0..2 {
        let _ = svc.clone().oneshot(()).await;
    }
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(breaker.admits_now());
    backend.set_failing(false);
    let probe = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(!breaker.admits_now(), "the only probe slot is taken");
    probe.await.unwrap().unwrap();
    assert_eq!(breaker.state(), State::Closed);
    assert!(breaker.admits_now());
}
