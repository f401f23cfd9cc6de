//! Tollgate layers in a real axum server on loopback, called by a real hyper client: the status
//! codes and `Retry-After` headers a client sees when the service is overloaded, its breaker is
//! open, it is rate limited or too slow; and one breaker shared by two routes.
//!
//! No test sleeps: the handlers report when they start and wait for a release signal, so every
//! request is in a known state before the next one is sent. Each test is bounded by a timeout.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tollgate::ServiceBuilderExt;
use tollgate::admission::http::HttpPrioritizer;
use tollgate::admission::{
    AdmissionConfig, AdmissionLayer, ClassConfig, RateLimitConfig, ReadyMode,
};
use tollgate::breaker::{BreakerConfig, BreakerLayer, State};
use tollgate::core::classify::ServerErrorsAreFailures;
use tollgate::http::RejectionLayer;
use tower::ServiceBuilder;

/// Bounds every test: a hung request fails the test instead of hanging CI.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test timed out")
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: String,
}

async fn get_path(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let retry_after = res.headers().get(http::header::RETRY_AFTER).map(|v| {
        v.to_str()
            .unwrap()
            .parse::<u64>()
            .expect("Retry-After is whole seconds")
    });
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        retry_after,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[tokio::test]
async fn overloaded_answers_503_with_retry_after() {
    bounded(async {
        // One request in flight, nobody may wait: the second concurrent request is shed.
        let admission = AdmissionLayer::new(AdmissionConfig {
            classes: vec![ClassConfig::new("all").with_queue_capacity(0)],
            limit: 1,
            ready_mode: ReadyMode::Always, // axum calls without waiting on `poll_ready`
            ..AdmissionConfig::default()
        })
        .unwrap();
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let gate = release.clone();
        // Reports that it started, then waits for the release.
        let handler = move || {
            let (started, gate) = (started_tx.clone(), gate.clone());
            async move {
                let _ = started.send(());
                gate.notified().await;
                "done"
            }
        };
        let app = Router::new().route("/work", get(handler)).layer(
            ServiceBuilder::new()
                .layer(RejectionLayer::http()) // outermost: rejections become responses
                .admission(admission),
        );
        let addr = serve(app).await;
        let client = client();

        let first = tokio::spawn({
            let client = client.clone();
            async move { get_path(&client, addr, "/work", &[]).await }
        });
        started.recv().await.unwrap(); // the only slot is taken
        let shed = get_path(&client, addr, "/work", &[]).await;
        assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(shed.retry_after.unwrap() >= 1, "Retry-After is never 0");
        assert_eq!(shed.body, "service overloaded\n");

        release.notify_one();
        let first = first.await.unwrap();
        assert_eq!(
            (first.status, first.body.as_str()),
            (StatusCode::OK, "done")
        );
    })
    .await;
}

#[tokio::test]
async fn open_breaker_answers_503_with_the_wait_as_retry_after() {
    bounded(async {
        let breaker = BreakerLayer::new(BreakerConfig {
            consecutive_failures: Some(2),
            wait_in_open: Duration::from_secs(30),
            ..BreakerConfig::default()
        })
        .unwrap()
        .with_classifier(ServerErrorsAreFailures); // a 500 from the handler is a failure
        let handle = breaker.handle();
        let app = Router::new()
            .route(
                "/fail",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .layer(
                ServiceBuilder::new()
                    .layer(RejectionLayer::http())
                    .breaker(breaker),
            );
        let addr = serve(app).await;
        let client = client();

        for _ in 0..2 {
            let a = get_path(&client, addr, "/fail", &[]).await;
            assert_eq!(
                (a.status, a.retry_after),
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            );
        }
        assert_eq!(handle.state(), State::Open);
        let a = get_path(&client, addr, "/fail", &[]).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        // The time to the next probe, rounded up: 30 s less what the test took.
        let secs = a.retry_after.unwrap();
        assert!((1..=30).contains(&secs), "Retry-After {secs}");
    })
    .await;
}

#[tokio::test]
async fn rate_limited_answers_429_with_retry_after() {
    bounded(async {
        let config = AdmissionConfig {
            classes: vec![ClassConfig::new("all")],
            rate_limit: Some(RateLimitConfig::new(1, Duration::from_secs(60))),
            ready_mode: ReadyMode::Always,
            ..AdmissionConfig::default()
        };
        // One request a minute per `x-tenant`.
        let admission = AdmissionLayer::new(config)
            .unwrap()
            .prioritize(HttpPrioritizer::new(["all"]).with_key_header("x-tenant".parse().unwrap()));
        let app = Router::new().route("/", get(|| async { "hello" })).layer(
            ServiceBuilder::new()
                .layer(RejectionLayer::http())
                .admission(admission),
        );
        let addr = serve(app).await;
        let client = client();

        let ok = get_path(&client, addr, "/", &[("x-tenant", "acme")]).await;
        assert_eq!(ok.status, StatusCode::OK);
        let limited = get_path(&client, addr, "/", &[("x-tenant", "acme")]).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        let secs = limited.retry_after.unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
        // Another tenant has its own quota.
        let other = get_path(&client, addr, "/", &[("x-tenant", "globex")]).await;
        assert_eq!(other.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn a_timeout_answers_504() {
    bounded(async {
        let app = Router::new()
            .route("/hang", get(std::future::pending::<&'static str>))
            .layer(
                ServiceBuilder::new()
                    .layer(RejectionLayer::http())
                    .timeout(Duration::from_millis(50)),
            );
        let addr = serve(app).await;
        let a = get_path(&client(), addr, "/hang", &[]).await;
        assert_eq!(
            (a.status, a.retry_after),
            (StatusCode::GATEWAY_TIMEOUT, None)
        );
    })
    .await;
}

#[tokio::test]
async fn one_breaker_shared_by_two_routes_trips_for_both() {
    bounded(async {
        let breaker = BreakerLayer::new(BreakerConfig {
            consecutive_failures: Some(3),
            wait_in_open: Duration::from_secs(60),
            ..BreakerConfig::default()
        })
        .unwrap()
        .with_classifier(ServerErrorsAreFailures);
        // One stack value, applied to two routes: one breaker.
        let stack = ServiceBuilder::new()
            .layer(RejectionLayer::http())
            .breaker(breaker);
        let app = Router::new()
            .route(
                "/orders",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "db down") }).layer(stack.clone()),
            )
            .route("/users", get(|| async { "alice" }).layer(stack));
        let addr = serve(app).await;
        let client = client();

        assert_eq!(
            get_path(&client, addr, "/users", &[]).await.status,
            StatusCode::OK
        );
        for _ in 0..3 {
            let a = get_path(&client, addr, "/orders", &[]).await;
            assert_eq!(
                (a.status, a.body.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, "db down")
            );
        }
        // `/users` never failed, but shares the breaker `/orders` tripped.
        let a = get_path(&client, addr, "/users", &[]).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(a.body, "circuit breaker is open\n");
        assert!(a.retry_after.unwrap() >= 1);
    })
    .await;
}

#[tokio::test]
async fn other_errors_become_500_by_default() {
    bounded(async {
        let app = Router::new().route(
            "/",
            axum::routing::get_service(
                ServiceBuilder::new()
                    .layer(RejectionLayer::http())
                    .service_fn(|_req: Request<Body>| async {
                        Err::<http::Response<Body>, _>(std::io::Error::other("secret detail"))
                    }),
            ),
        );
        let addr = serve(app).await;
        let a = get_path(&client(), addr, "/", &[]).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            a.body, "internal server error\n",
            "the error's text is not sent"
        );
    })
    .await;
}

/// The client side over hyper: one breaker per upstream, a balancer over them and a pool in
/// front. A local rejection comes back as an error, which `Rejection::of` reads.
#[tokio::test]
async fn a_hyper_client_with_balance_breaker_and_pool_leaves_the_failing_server() {
    use tollgate::balance::{Balance, BalanceConfig, EndpointState, OutlierConfig};
    use tollgate::http::Rejection;
    use tollgate::pool::{PoolConfig, PoolSizerLayer};
    use tower::{Layer, ServiceExt};

    bounded(async {
        let slow_ok = || {
            Router::new().route(
                "/",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    "good"
                }),
            )
        };
        let failing = Router::new().route("/", get(|| async { (StatusCode::BAD_GATEWAY, "bad") }));
        let mut endpoints = Vec::new();
        let mut breakers = Vec::new();
        for (i, app) in [slow_ok(), slow_ok(), failing].into_iter().enumerate() {
            let addr = serve(app).await;
            // Each endpoint is the shared hyper client, aimed at its server.
            let upstream =
                tower::util::MapRequest::new(client(), move |req: Request<Empty<Bytes>>| {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = format!("http://{addr}{}", parts.uri.path())
                        .parse()
                        .unwrap();
                    Request::from_parts(parts, body)
                });
            let breaker = BreakerLayer::new(BreakerConfig {
                consecutive_failures: Some(2),
                wait_in_open: Duration::from_secs(60),
                ..BreakerConfig::default()
            })
            .unwrap()
            .with_classifier(ServerErrorsAreFailures);
            breakers.push(breaker.handle());
            endpoints.push((i, breaker.layer(upstream)));
        }
        let balance = Balance::new(
            endpoints,
            BalanceConfig {
                seed: Some(3),
                // Optimistic about endpoints not measured yet, so the fast-failing one keeps
                // looking cheap until it is ejected.
                default_rtt: Duration::from_micros(1),
                outlier: OutlierConfig {
                    consecutive_failures: 3,
                    ..OutlierConfig::default()
                },
                ..BalanceConfig::default()
            },
        )
        .unwrap()
        .with_classifier(ServerErrorsAreFailures);
        let handle = balance.handle();
        let stack = ServiceBuilder::new()
            .pool(PoolSizerLayer::from_config(PoolConfig::default()).unwrap())
            .service(balance);

        let (mut good, mut bad, mut open) = (0, 0, 0);
        for _ in 0..30 {
            let req = Request::get("/").body(Empty::new()).unwrap();
            match stack.clone().oneshot(req).await {
                Ok(res) if res.status() == StatusCode::OK => good += 1,
                Ok(res) => {
                    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
                    bad += 1;
                }
                Err(err) => {
                    let rejection = Rejection::of(&*err).expect("a tollgate rejection");
                    assert_eq!(rejection.status(), StatusCode::SERVICE_UNAVAILABLE);
                    assert!(rejection.retry_after().unwrap() > Duration::from_secs(50));
                    open += 1;
                }
            }
        }
        assert_eq!((good, bad, open), (27, 2, 1));
        assert_eq!(breakers[2].state(), State::Open);
        let stats = handle.endpoints();
        assert_eq!(
            stats.iter().find(|e| e.key == 2).unwrap().state,
            EndpointState::Ejected
        );
    })
    .await;
}
