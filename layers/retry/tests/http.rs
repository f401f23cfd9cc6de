//! `HttpPolicy` and `ReplayBody`: idempotency, statuses, gRPC statuses, pushback, bodies
//! replayed or sent once, the attempt marker in the extensions.
#![cfg(feature = "http")]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::attempt::{Attempt, Attempts};
use tollgate_retry::http::{DEFAULT_REPLAY_LIMIT, Exhausted, HttpPolicy, ReplayBody};
use tollgate_retry::{RetryConfig, RetryLayer};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

type Body = ReplayBody<Full<Bytes>>;

/// What the backend saw of each attempt.
#[derive(Debug, Clone)]
struct Seen {
    body: Bytes,
    attempt: Option<Attempt>,
}

/// A backend answering the scripted responses in turn (the last one repeats) and recording
/// each attempt.
fn backend<B>(
    script: Vec<Result<Response<()>, BoxError>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> impl Service<Request<B>, Response = Response<()>, Error = BoxError, Future: Send> + Clone
where
    B: http_body::Body<Data = Bytes, Error: std::fmt::Debug> + Send + 'static,
{
    let script = Arc::new(Mutex::new(
        script
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    service_fn(move |req: Request<B>| {
        let (script, seen) = (script.clone(), seen.clone());
        async move {
            let attempt = req.attempt().cloned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push(Seen { body, attempt });
            let mut script = script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                match script.front().unwrap() {
                    Ok(r) => Ok(clone_response(r)),
                    Err(e) => Err(e.to_string().into()),
                }
            }
        }
    })
}

fn clone_response(r: &Response<()>) -> Response<()> {
    let mut out = Response::new(());
    *out.status_mut() = r.status();
    *out.headers_mut() = r.headers().clone();
    out
}

fn status(code: u16) -> Result<Response<()>, BoxError> {
    Ok(Response::builder().status(code).body(()).unwrap())
}

fn with_header(code: u16, name: &str, value: &str) -> Result<Response<()>, BoxError> {
    Ok(Response::builder()
        .status(code)
        .header(name, value)
        .body(())
        .unwrap())
}

fn layer() -> RetryLayer<HttpPolicy> {
    RetryLayer::new(RetryConfig {
        seed: Some(9),
        ..RetryConfig::default()
    })
    .unwrap()
    .with_policy(HttpPolicy::default())
}

async fn body(data: &'static str) -> Body {
    ReplayBody::buffer(Full::new(Bytes::from(data)), DEFAULT_REPLAY_LIMIT)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_idempotent_request_is_retried_with_its_body_replayed() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(
        vec![status(503), status(502), status(200)],
        seen.clone(),
    ));
    let req = Request::put("/x").body(body("payload").await).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.body == "payload"));
    // Every attempt is marked; all share one tried set.
    let numbers: Vec<u32> = seen
        .iter()
        .map(|s| s.attempt.as_ref().unwrap().number())
        .collect();
    assert_eq!(numbers, [0, 1, 2]);
    seen[0].attempt.as_ref().unwrap().tried().record(5);
    assert!(seen[2].attempt.as_ref().unwrap().tried().contains(5));
}

#[tokio::test(start_paused = true)]
async fn a_post_is_not_retried_on_a_status_but_is_when_the_connection_was_refused() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(vec![status(503), status(200)], seen.clone()));
    let req = Request::post("/x").body(body("order").await).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), 1);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let refused: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    let mut svc = layer().layer(backend(vec![Err(refused), status(201)], seen.clone()));
    let req = Request::post("/x").body(body("order").await).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(seen.lock().unwrap().len(), 2);

    // Any other error after a POST may have reached the service: not retried.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reset: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let mut svc = layer().layer(backend(vec![Err(reset), status(201)], seen.clone()));
    let req = Request::post("/x").body(body("order").await).unwrap();
    assert!(svc.ready().await.unwrap().call(req).await.is_err());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_idempotency_key_makes_a_post_retryable() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(vec![status(504), status(200)], seen.clone()));
    let req = Request::post("/x")
        .header("idempotency-key", "k1")
        .body(body("order").await)
        .unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_retried_after_its_pushback_and_a_negative_one_stops() {
    let unavailable = |pushback: &str| {
        Ok(Response::builder()
            .status(200)
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("grpc-retry-pushback-ms", pushback)
            .body(())
            .unwrap())
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(
        vec![unavailable("250"), with_header(200, "grpc-status", "0")],
        seen.clone(),
    ));
    let req = Request::post("/pkg.Svc/Method")
        .body(body("msg").await)
        .unwrap();
    let start = Instant::now();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(250),
        "the pushback replaces the backoff"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(
        vec![unavailable("-1"), with_header(200, "grpc-status", "0")],
        seen.clone(),
    ));
    let req = Request::post("/pkg.Svc/Method")
        .body(body("msg").await)
        .unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(
        res.headers()["grpc-status"],
        "14",
        "a negative pushback: no retry"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // A status the policy does not retry (INVALID_ARGUMENT).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(
        vec![with_header(200, "grpc-status", "3")],
        seen.clone(),
    ));
    let req = Request::post("/pkg.Svc/Method")
        .body(body("msg").await)
        .unwrap();
    svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_wait() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend::<Body>(
        vec![with_header(503, "retry-after", "2"), status(200)],
        seen.clone(),
    ));
    let req = Request::get("/x").body(ReplayBody::empty()).unwrap();
    let start = Instant::now();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_is_streamed_once_and_not_retried() {
    type Chunks = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Infallible>>>,
    >;
    let chunks: Vec<Result<http_body::Frame<Bytes>, Infallible>> = (0..4)
        .map(|i| Ok(http_body::Frame::data(Bytes::from(vec![b'a' + i; 10]))))
        .collect();
    let stream: Chunks = StreamBody::new(futures_util::stream::iter(chunks));
    let body = ReplayBody::buffer(stream, 15).await.unwrap();
    assert!(!body.is_replayable());
    assert!(body.try_clone().is_none());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(vec![status(503), status(200)], seen.clone()));
    let req = Request::put("/big").body(body).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body.len(),
        40,
        "the buffered start and the rest, in order"
    );
    assert_eq!(
        &seen[0].body[..],
        b"aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd"
    );
}

#[tokio::test(start_paused = true)]
async fn trailers_are_replayed_and_a_full_body_keeps_its_size() {
    let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
        Ok(http_body::Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-sum", "6".parse().unwrap());
            t
        })),
    ];
    let body = ReplayBody::buffer(StreamBody::new(futures_util::stream::iter(frames)), 64)
        .await
        .unwrap();
    assert!(body.is_replayable());
    assert_eq!(http_body::Body::size_hint(&body).exact(), Some(3));
    for copy in [body.try_clone().unwrap(), body] {
        let collected = copy.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["x-sum"], "6");
        assert_eq!(collected.to_bytes(), "abc");
    }
}

#[tokio::test(start_paused = true)]
async fn stacked_http_layers_do_not_retry_what_an_inner_one_gave_up_on() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = layer().layer(backend::<Body>(vec![status(503)], seen.clone()));
    let mut outer = layer().layer(inner);
    let req = Request::get("/x").body(ReplayBody::empty()).unwrap();
    let res = outer.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.extensions().get::<Exhausted>().is_some());
    assert_eq!(seen.lock().unwrap().len(), 3, "3 attempts, not 9");
}

/// A hedge sends the request again while the first try may already be at work upstream: a
/// `POST` without an `Idempotency-Key` must not run twice, so it is never hedged; a `GET`, a
/// `POST` with a key and a gRPC call (the hedging configuration is its opt-in) are.
#[tokio::test(start_paused = true)]
async fn only_requests_that_may_run_twice_are_hedged() {
    let hedging = || {
        RetryLayer::new(RetryConfig {
            seed: Some(9),
            hedge: Some(tollgate_retry::HedgeConfig {
                percentile: None,
                min_delay: Duration::from_millis(1),
                ..tollgate_retry::HedgeConfig::default()
            }),
            ..RetryConfig::default()
        })
        .unwrap()
        .with_policy(HttpPolicy::default())
    };
    let cases: [(&str, Request<()>, usize); 4] = [
        ("POST", Request::post("/x").body(()).unwrap(), 1),
        ("GET", Request::get("/x").body(()).unwrap(), 2),
        (
            "POST with a key",
            Request::post("/x")
                .header("idempotency-key", "k1")
                .body(())
                .unwrap(),
            2,
        ),
        (
            "gRPC",
            Request::post("/pkg.Svc/Call")
                .header("content-type", "application/grpc+proto")
                .body(())
                .unwrap(),
            2,
        ),
    ];
    for (what, req, calls) in cases {
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        // Every try takes 50 ms: long past the 1 ms hedge delay.
        let backend = service_fn(move |_req: Request<Body>| {
            s.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, BoxError>(Response::new(()))
            }
        });
        let mut svc = hedging().layer(backend);
        let (parts, ()) = req.into_parts();
        let req = Request::from_parts(parts, body("{}").await);
        let res = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{what}");
        assert_eq!(seen.load(Ordering::SeqCst), calls, "{what}");
    }
}

/// A `Retry-After` date is read (RFC 9110 §10.2.3): a server that asks for an hour is not
/// retried at once (the pause is past `max_pushback`: its answer is returned), and a date
/// already past is no wait.
#[tokio::test(start_paused = true)]
async fn a_retry_after_date_is_honoured() {
    #[allow(clippy::disallowed_types)] // An HTTP date is a calendar time.
    let in_an_hour =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(
        vec![with_header(503, "retry-after", &in_an_hour)],
        seen.clone(),
    ));
    let req = Request::get("/x").body(body("").await).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), 1, "not retried before the hour");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut svc = layer().layer(backend(
        vec![
            with_header(503, "retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            status(200),
        ],
        seen.clone(),
    ));
    let req = Request::get("/x").body(body("").await).unwrap();
    let start = Instant::now();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(start.elapsed(), Duration::ZERO, "a past date is no wait");
}
