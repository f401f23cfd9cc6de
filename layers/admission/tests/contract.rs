//! The tollgate contract, in both ready modes.

use std::future::poll_fn;
use std::time::Duration;
use tollgate_admission::{AdmissionConfig, AdmissionLayer, ReadyMode};
use tollgate_core::testing::{Probe, ProbeRequest, contract};
use tower_layer::Layer;
use tower_service::Service;

#[tokio::test(start_paused = true)]
async fn keeps_the_contract() {
    let layer = AdmissionLayer::new(AdmissionConfig {
        limit: 1,
        ..Default::default()
    })
    .unwrap();
    contract::check(|probe| layer.layer(probe)).await;
    assert_eq!(layer.handle().in_flight(), 0);
}

/// Always ready means `poll_ready` does not follow the inner service (that is the point), so
/// that check is replaced by one on the response future; every other check applies as is.
#[tokio::test(start_paused = true)]
async fn keeps_the_contract_when_always_ready() {
    let config = AdmissionConfig {
        limit: 1,
        ready_mode: ReadyMode::Always,
        ..Default::default()
    };
    let layer = AdmissionLayer::new(config).unwrap();
    let make = |probe| layer.layer(probe);
    contract::clones_start_unready(&make).await;
    contract::dropped_futures_free_capacity(&make).await;
    contract::dropped_services_free_capacity(&make).await;
    contract::errors_pass_through(&make).await;
    contract::panics_leave_it_working(&make).await;
    assert_eq!(layer.handle().in_flight(), 0);

    // The response future waits for the inner service's readiness, holding its slot.
    let (probe, handle) = Probe::new();
    let mut svc = layer.layer(probe);
    handle.set_ready(false);
    poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(ProbeRequest::Ok(9)));
    assert!(fut.poll().is_pending());
    assert_eq!(layer.handle().in_flight(), 1);
    handle.set_ready(true);
    assert!(fut.is_woken());
    let out = tokio::time::timeout(Duration::from_secs(3600), fut)
        .await
        .unwrap();
    assert_eq!(out.unwrap(), 9);
    assert_eq!(layer.handle().in_flight(), 0);
}
