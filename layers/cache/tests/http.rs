//! The HTTP policy through the whole layer, on paused time.
#![cfg(feature = "http")]

use bytes::Bytes;
use http::{Method, Request, Response};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tollgate_cache::http::HttpPolicy;
use tollgate_cache::{CacheConfig, CacheLayer};
use tollgate_core::BoxError;
use tower::{ServiceBuilder, ServiceExt};

/// An origin that answers `/fresh` with max-age=10 + stale-if-error=60, `/private` privately,
/// and 503 to everything once `down` is set.
fn origin(
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicUsize>,
) -> impl tower::Service<Request<()>, Response = Response<Bytes>, Error = BoxError, Future = impl Send>
+ Clone {
    tower::service_fn(move |req: Request<()>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let down = down.load(Ordering::SeqCst) == 1;
        async move {
            let b = Response::builder();
            let res = if down {
                b.status(503).body(Bytes::from_static(b"down"))
            } else if req.uri().path() == "/private" {
                b.header("cache-control", "private, max-age=60")
                    .body(Bytes::from(format!("private {n}")))
            } else {
                b.header("cache-control", "max-age=10, stale-if-error=60")
                    .body(Bytes::from(format!("body {n}")))
            };
            Ok::<_, BoxError>(res.unwrap())
        }
    })
}

fn get(path: &str) -> Request<()> {
    Request::builder()
        .uri(format!("http://example.test{path}"))
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn http_responses_are_cached_by_cache_control() {
    let (calls, down) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let layer = CacheLayer::new(CacheConfig::default(), HttpPolicy::new()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(origin(calls.clone(), down.clone()));
    let a = svc.clone().oneshot(get("/fresh")).await.unwrap();
    let b = svc.clone().oneshot(get("/fresh")).await.unwrap();
    assert_eq!(a.body(), "body 1");
    assert_eq!(
        a.body().as_ptr(),
        b.body().as_ptr(),
        "hits share the cached body"
    );
    assert_eq!(
        b.headers()["cache-control"],
        "max-age=10, stale-if-error=60"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Private and POST responses are not stored.
    svc.clone().oneshot(get("/private")).await.unwrap();
    svc.clone().oneshot(get("/private")).await.unwrap();
    let post = Request::builder()
        .method(Method::POST)
        .uri("http://example.test/fresh")
        .body(())
        .unwrap();
    svc.clone().oneshot(post).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // Expired and the origin answers 503: stale-if-error serves the stored body.
    tokio::time::advance(Duration::from_secs(30)).await;
    down.store(1, Ordering::SeqCst);
    let c = svc.clone().oneshot(get("/fresh")).await.unwrap();
    assert_eq!(
        (c.status(), c.body().clone()),
        (http::StatusCode::OK, Bytes::from("body 1"))
    );
    // A key never stored gets the 503 itself.
    assert_eq!(
        svc.clone().oneshot(get("/other")).await.unwrap().status(),
        503
    );
    let st = layer.handle().stats();
    assert_eq!(st.stale_if_error, 1, "{st:?}");
    assert!(layer.handle().l2_entries() >= 1);
}
