//! The breaker with tollgate-core's HTTP classifier: a 5xx response counts as a failure, a 4xx
//! does not, and responses pass through unchanged.

use std::time::Duration;
use tollgate_breaker::{BreakerConfig, BreakerHandle, BreakerLayer, Open, SlidingWindow, State};
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

/// A breaker with `config` and the HTTP classifier over a service answering the status it is
/// sent; with `retry_after`, a 429 comes with `Retry-After: 30`.
fn status_breaker(
    config: BreakerConfig,
    retry_after: bool,
) -> (
    BreakerHandle,
    impl Service<u16, Response = http::Response<()>, Error = BoxError>,
) {
    let layer = BreakerLayer::new(config)
        .unwrap()
        .with_classifier(ServerErrorsAreFailures);
    let handle = layer.handle();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |status: u16| async move {
                let mut b = http::Response::builder().status(status);
                if retry_after && status == 429 {
                    b = b.header("retry-after", "30");
                }
                Ok::<_, BoxError>(b.body(()).unwrap())
            }));
    (handle, svc)
}

#[tokio::test(start_paused = true)]
async fn server_errors_trip_the_breaker_and_client_errors_do_not() {
    let config = BreakerConfig {
        sliding_window: SlidingWindow::Count { size: 10 },
        minimum_calls: 10,
        ..BreakerConfig::default()
    };
    let (handle, mut svc) = status_breaker(config, false);
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

/// A 429 or 503 with `Retry-After` is the upstream asking for a pause: the call counts as
/// failed (a 429 otherwise would not), and the open breaker waits for the later of its own
/// `wait_in_open` and the pause before it lets a probe through.
#[tokio::test(start_paused = true)]
async fn retry_after_fails_the_call_and_holds_the_breaker_open() {
    let config = BreakerConfig {
        sliding_window: SlidingWindow::Count { size: 4 },
        minimum_calls: 4,
        wait_in_open: Duration::from_secs(1),
        permitted_calls_in_half_open: 1,
        ..BreakerConfig::default()
    };
    let (handle, mut svc) = status_breaker(config, true);
    // A plain 429 (no Retry-After) is the client's doing, as any 4xx.
    let (plain_handle, mut plain) = status_breaker(
        BreakerConfig {
            sliding_window: SlidingWindow::Count { size: 4 },
            minimum_calls: 4,
            ..BreakerConfig::default()
        },
        false,
    );
    for _ in 0..4 {
        assert_eq!(get(&mut plain, 429).await.unwrap().status(), 429);
    }
    assert_eq!(plain_handle.state(), State::Closed);
    assert_eq!(plain_handle.snapshot().failures, 0);

    for _ in 0..4 {
        assert_eq!(get(&mut svc, 429).await.unwrap().status(), 429);
    }
    assert_eq!(handle.state(), State::Open, "4 of 4 asked for a pause");
    // Past `wait_in_open`, but not past the 30 s the upstream asked for: still refused, and the
    // refusal says how long is left.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!handle.admits_now());
    let err = get(&mut svc, 200).await.unwrap_err();
    let open = err.downcast_ref::<Open>().expect("open");
    let left = open.retry_after().expect("a wait");
    assert!(
        left > Duration::from_secs(27) && left <= Duration::from_secs(28),
        "{left:?}"
    );
    // After the pause, one probe; it succeeds and the breaker closes.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(handle.admits_now());
    assert_eq!(get(&mut svc, 200).await.unwrap().status(), 200);
    assert_eq!(handle.state(), State::Closed);
}
