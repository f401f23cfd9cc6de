//! The breaker with tollgate-core's HTTP classifier: a 5xx response counts as a failure, a 4xx
//! does not, and responses pass through unchanged.

use std::time::Duration;
use tollgate_breaker::{BreakerConfig, BreakerLayer, Open, SlidingWindow, State};
use tollgate_core::BoxError;
use tollgate_core::classify::ServerErrorsAreFailures;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

async fn get<S>(svc: &mut S, status: u16) -> Result<http::Response<()>, BoxError>
where
    S: Service<u16, Response = http::Response<()>, Error = BoxError>,
{
    let fut = async { svc.ready().await?.call(status).await };
    tokio::time::timeout(Duration::from_secs(3600), fut)
        .await
        .expect("answered")
}

#[tokio::test(start_paused = true)]
async fn server_errors_trip_the_breaker_and_client_errors_do_not() {
    let config = BreakerConfig {
        sliding_window: SlidingWindow::Count { size: 10 },
        minimum_calls: 10,
        ..BreakerConfig::default()
    };
    let layer = BreakerLayer::new(config)
        .unwrap()
        .with_classifier(ServerErrorsAreFailures);
    let handle = layer.handle();
    let mut svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|status: u16| async move {
                Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
            }));
    for _ in 0..10 {
        assert_eq!(get(&mut svc, 404).await.unwrap().status(), 404);
    }
    assert_eq!(handle.snapshot().failures, 0, "4xx is the client's doing");
    for _ in 0..5 {
        assert_eq!(get(&mut svc, 503).await.unwrap().status(), 503);
    }
    assert_eq!(handle.state(), State::Open, "5 of the last 10 were 5xx");
    let err = get(&mut svc, 200).await.unwrap_err();
    assert!(err.is::<Open>());
}
