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
/// sent; with `retry_after`, a 429 or 503 comes with that `Retry-After` (seconds).
fn status_breaker(
    config: BreakerConfig,
    retry_after: Option<&'static str>,
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
                if let Some(after) = retry_after.filter(|_| matches!(status, 429 | 503)) {
                    b = b.header("retry-after", after);
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
    let (handle, mut svc) = status_breaker(config, None);
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

fn small(wait: Duration) -> BreakerConfig {
    BreakerConfig {
        sliding_window: SlidingWindow::Count { size: 4 },
        minimum_calls: 4,
        wait_in_open: wait,
        permitted_calls_in_half_open: 1,
        ..BreakerConfig::default()
    }
}

/// How long an open breaker's refusal says is left.
async fn refusal<S>(svc: &mut S) -> Duration
where
    S: Service<u16, Response = http::Response<()>, Error = BoxError>,
{
    let err = get(svc, 200).await.unwrap_err();
    let open = err.downcast_ref::<Open>().expect("open");
    open.retry_after().expect("a wait")
}

/// A 503 with `Retry-After` is the upstream asking for a pause: the open breaker waits for the
/// later of its own `wait_in_open` and the pause before it lets a probe through.
#[tokio::test(start_paused = true)]
async fn a_503_with_retry_after_holds_the_breaker_open_that_long() {
    let (handle, mut svc) = status_breaker(small(Duration::from_secs(1)), Some("30"));
    for _ in 0..4 {
        assert_eq!(get(&mut svc, 503).await.unwrap().status(), 503);
    }
    assert_eq!(handle.state(), State::Open, "4 of 4 failed");
    // Past `wait_in_open`, but not past the 30 s the upstream asked for: still refused, and the
    // refusal says how long is left.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!handle.admits_now());
    let left = refusal(&mut svc).await;
    assert!(
        left > Duration::from_secs(27) && left <= Duration::from_secs(28),
        "{left:?}"
    );
    // After the pause, one probe; it succeeds and the breaker closes.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(handle.admits_now());
    assert_eq!(get(&mut svc, 200).await.unwrap().status(), 200);
    assert_eq!(handle.state(), State::Closed);
    // The pause belonged to that outage: the next open waits `wait_in_open` again.
    let (handle2, mut plain) = (handle.clone(), &mut svc);
    for _ in 0..4 {
        assert_eq!(get(plain, 500).await.unwrap().status(), 500);
    }
    assert_eq!(handle2.state(), State::Open);
    assert!(refusal(&mut plain).await <= Duration::from_secs(1));
}

/// A 429 is one client's quota, the client's doing as any 4xx, with or without `Retry-After`: it
/// neither fails the call nor holds the breaker open, so one client over its quota cannot shut
/// the upstream off for everyone.
#[tokio::test(start_paused = true)]
async fn a_429_is_the_clients_doing_even_with_retry_after() {
    for after in [None, Some("30")] {
        let (handle, mut svc) = status_breaker(small(Duration::from_secs(1)), after);
        for _ in 0..8 {
            assert_eq!(get(&mut svc, 429).await.unwrap().status(), 429);
        }
        assert_eq!(handle.state(), State::Closed, "Retry-After {after:?}");
        assert_eq!(handle.snapshot().failures, 0);
        // And its pause does not stretch a later open (two 500s make half of the last 4).
        for _ in 0..2 {
            assert_eq!(get(&mut svc, 500).await.unwrap().status(), 500);
        }
        assert_eq!(handle.state(), State::Open);
        assert!(refusal(&mut svc).await <= Duration::from_secs(1));
    }
}

/// A huge `Retry-After` is capped at the longest open wait (the backoff's `max_wait`, 10
/// minutes without a backoff): it cannot hold the breaker open for good.
#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_capped_at_the_longest_wait() {
    for after in ["18446744073", "99999999999999999"] {
        let (handle, mut svc) = status_breaker(small(Duration::from_secs(1)), Some(after));
        for _ in 0..4 {
            assert_eq!(get(&mut svc, 503).await.unwrap().status(), 503);
        }
        assert_eq!(handle.state(), State::Open);
        let left = refusal(&mut svc).await;
        assert!(left <= Duration::from_secs(600), "{after}: {left:?}");
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert!(handle.admits_now(), "{after}");
        assert_eq!(get(&mut svc, 200).await.unwrap().status(), 200);
        assert_eq!(handle.state(), State::Closed);
    }
}
