//! Batch routes end to end on loopback: single JSON requests gathered into one upstream array,
//! each caller answered with its own element, and every failure answered.

#[macro_use]
mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How the test upstream answers a batch.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `[{"echo": item}, ...]`, after `delay`.
    Echo,
    /// The same, less the last element.
    Short,
    /// 429 with a JSON body.
    Busy,
}

/// What the test upstream saw.
#[derive(Debug, Default)]
struct Seen {
    calls: AtomicUsize,
    items: AtomicUsize,
    bad: AtomicUsize,
}

/// A batch endpoint at `/batch` that counts its calls and answers each item transformed.
async fn batch_upstream(mode: Mode, delay: Duration) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let addr = upstream(move |req: Request<Incoming>| {
        let s = s.clone();
        async move {
            // Relaxed: test counters, read after the answers arrived.
            s.calls.fetch_add(1, Ordering::Relaxed);
            let well_formed = req.method() == "POST"
                && req.uri() == "/batch"
                && req.headers()["content-type"] == "application/json";
            if !well_formed {
                s.bad.fetch_add(1, Ordering::Relaxed);
            }
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let items: Vec<Value> = match serde_json::from_slice(&body) {
                Ok(items) => items,
                Err(_) => {
                    s.bad.fetch_add(1, Ordering::Relaxed);
                    return text(StatusCode::BAD_REQUEST, "not an array");
                }
            };
            s.items.fetch_add(items.len(), Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            let mut out: Vec<Value> = items.into_iter().map(|i| json!({ "echo": i })).collect();
            match mode {
                Mode::Echo => {}
                Mode::Short => {
                    out.pop();
                }
                Mode::Busy => {
                    return text(StatusCode::TOO_MANY_REQUESTS, "{\"error\":\"busy\"}");
                }
            }
            text(StatusCode::OK, serde_json::to_vec(&out).unwrap())
        }
    })
    .await;
    (addr, seen)
}

/// A gateway with a batch route `/b` to `endpoint`, and `extra` settings in its batch table.
fn batch_gateway(endpoint: &str, extra: &str) -> tollgate_gateway::Gateway {
    start(config(&format!(
        "[[clusters]]\nname = \"up\"\nendpoints = [\"{endpoint}\"]\n\
         [[routes]]\npath_prefix = \"/b\"\ncluster = \"up\"\nkind = \"batch\"\n\
         batch = {{ upstream_path = \"/batch\", max_items = 32, max_body_bytes = 1024{extra} }}\n"
    )))
}

async fn post(gw: SocketAddr, body: impl Into<Bytes>) -> (StatusCode, Bytes) {
    let req = Request::post(format!("http://{gw}/b/item"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let (status, _, body, _) = send(&h1_client(), req).await;
    (status, body)
}

/// Sends `{"id": i}` for each `i` in `0..n` at once; the answers in order.
async fn post_many(gw: SocketAddr, n: usize) -> Vec<(StatusCode, Bytes)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(post(gw, json!({ "id": i }).to_string())))
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

on_both_front_ends!(
    concurrent_callers_share_batches_and_each_gets_its_own_answer,
    4
);
async fn concurrent_callers_share_batches_and_each_gets_its_own_answer() {
    bounded(async {
        // The upstream takes a while per batch and one batch is in flight at a time, so the
        // callers that arrive meanwhile gather into the next batch.
        let (up, seen) = batch_upstream(Mode::Echo, Duration::from_millis(200)).await;
        let gw = batch_gateway(&up.to_string(), ", max_linger_ms = 50, max_in_flight = 1");
        let answers = post_many(addr(&gw), 10).await;
        for (i, (status, body)) in answers.iter().enumerate() {
            assert_eq!(*status, StatusCode::OK, "{}", String::from_utf8_lossy(body));
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v, json!({ "echo": { "id": i } }));
        }
        let calls = seen.calls.load(Ordering::Relaxed);
        assert!((1..10).contains(&calls), "{calls} upstream calls");
        assert_eq!(seen.items.load(Ordering::Relaxed), 10);
        assert_eq!(seen.bad.load(Ordering::Relaxed), 0);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(bad_bodies_are_answered_without_a_batch);
async fn bad_bodies_are_answered_without_a_batch() {
    bounded(async {
        let (up, seen) = batch_upstream(Mode::Echo, Duration::ZERO).await;
        let gw = batch_gateway(&up.to_string(), "");
        for bad in ["{nope", "", "[1,]", "{\"a\":1} trailing"] {
            let (status, _) = post(addr(&gw), bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let big = format!("\"{}\"", "x".repeat(2048));
        let (status, _) = post(addr(&gw), big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(seen.calls.load(Ordering::Relaxed), 0);
        // A good one still goes through.
        let (status, body) = post(addr(&gw), "[1, 2]").await;
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({ "echo": [1, 2] }));
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_short_answer_fails_every_caller_of_the_batch);
async fn a_short_answer_fails_every_caller_of_the_batch() {
    bounded(async {
        let (up, seen) = batch_upstream(Mode::Short, Duration::from_millis(100)).await;
        let gw = batch_gateway(&up.to_string(), ", max_linger_ms = 50, max_in_flight = 1");
        let answers = post_many(addr(&gw), 6).await;
        for (status, body) in &answers {
            assert_eq!(*status, StatusCode::BAD_GATEWAY);
            let text = String::from_utf8_lossy(body);
            assert!(text.contains("elements to a batch of"), "{text}");
        }
        assert!(seen.calls.load(Ordering::Relaxed) >= 1);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_non_2xx_batch_answer_reaches_every_caller);
async fn a_non_2xx_batch_answer_reaches_every_caller() {
    bounded(async {
        let (up, _) = batch_upstream(Mode::Busy, Duration::ZERO).await;
        let gw = batch_gateway(&up.to_string(), "");
        for (status, body) in post_many(addr(&gw), 3).await {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(body.as_ref(), b"{\"error\":\"busy\"}");
        }
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(an_unreachable_upstream_is_answered);
async fn an_unreachable_upstream_is_answered() {
    bounded(async {
        // A port bound and never listening: connecting is refused.
        let (closed, _refusing) = refusing();
        let gw = batch_gateway(&closed.to_string(), "");
        for (status, _) in post_many(addr(&gw), 3).await {
            assert!(
                status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status}"
            );
        }
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(the_fast_demo_upstream_serves_as_a_batch_endpoint);
async fn the_fast_demo_upstream_serves_as_a_batch_endpoint() {
    bounded(async {
        // The demo echoes the array it is sent, so each caller gets its own item back.
        let gw = start(config(
            "[[demo]]\nname = \"fast\"\nkind = \"fast\"\n\
             [[clusters]]\nname = \"fast\"\nendpoints = [\"demo:fast\"]\n\
             [[routes]]\npath_prefix = \"/b\"\ncluster = \"fast\"\nkind = \"batch\"\n\
             batch = { upstream_path = \"/batch\", max_items = 32, max_linger_ms = 5 }\n",
        ));
        for (i, (status, body)) in post_many(addr(&gw), 8).await.into_iter().enumerate() {
            assert_eq!(status, StatusCode::OK);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v, json!({ "id": i }));
        }
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_reload_keeps_an_unchanged_batch_route_and_follows_its_cluster);
async fn a_reload_keeps_an_unchanged_batch_route_and_follows_its_cluster() {
    bounded(async {
        let (up1, seen1) = batch_upstream(Mode::Echo, Duration::ZERO).await;
        let (up2, seen2) = batch_upstream(Mode::Echo, Duration::ZERO).await;
        let route = |endpoint: SocketAddr, max_items: usize| {
            config(&format!(
                "[[clusters]]\nname = \"up\"\nendpoints = [\"{endpoint}\"]\n\
                 [[routes]]\npath_prefix = \"/b\"\ncluster = \"up\"\nkind = \"batch\"\n\
                 batch = {{ upstream_path = \"/batch\", max_items = {max_items} }}\n"
            ))
        };
        let batch_of = |gw: &tollgate_gateway::Gateway| gw.state()["routes"][0]["batch"].clone();
        let gw = start(route(up1, 32));
        assert_eq!(post(addr(&gw), "1").await.0, StatusCode::OK);
        let before = batch_of(&gw);

        // Same section, another endpoint: the route (and its statistics) stays, and the next
        // batch goes to the new endpoint.
        gw.apply(route(up2, 32), "test.toml").unwrap();
        let (status, body) = post(addr(&gw), "2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.as_ref(), b"{\"echo\":2}");
        let kept = batch_of(&gw);
        // The same batcher: its count goes on from the first batch.
        assert_eq!(before["batches"], 1);
        assert_eq!(kept["batches"], 2);
        assert_eq!(seen1.calls.load(Ordering::Relaxed), 1);
        assert_eq!(seen2.calls.load(Ordering::Relaxed), 1);

        // A changed section builds a new route.
        gw.apply(route(up2, 16), "test.toml").unwrap();
        assert_eq!(post(addr(&gw), "3").await.0, StatusCode::OK);
        let rebuilt = batch_of(&gw);
        // A new batcher: it counts from zero.
        assert_eq!(rebuilt["batches"], 1);
        stop(gw).await;
    })
    .await;
}

/// Waits (polling, real time) until `cond` holds.
async fn until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

on_both_front_ends!(a_full_queue_is_answered_503_with_retry_after);
async fn a_full_queue_is_answered_503_with_retry_after() {
    bounded(async {
        let (up, seen) = batch_upstream(Mode::Echo, Duration::from_millis(500)).await;
        let gw = batch_gateway(
            &up.to_string(),
            ", max_in_flight = 1, queue_capacity = 1, max_linger_ms = 0",
        );
        let gw_addr = addr(&gw);
        let view = gw.state_view();
        let batch = move || view.state()["routes"][0]["batch"].clone();
        // One batch in flight (the upstream holds it), one request queued behind it...
        let first = tokio::spawn(post(gw_addr, "1"));
        until(|| seen.calls.load(Ordering::Relaxed) == 1).await;
        let second = tokio::spawn(post(gw_addr, "2"));
        until(|| batch()["queue_depth"] == 1).await;
        // ...so the queue is full and the next one is turned away at once.
        let req = Request::post(format!("http://{gw_addr}/b/item"))
            .body(Full::new(Bytes::from_static(b"3")))
            .unwrap();
        let (status, headers, _, _) = send(&h1_client(), req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(first.await.unwrap().0, StatusCode::OK);
        assert_eq!(second.await.unwrap().0, StatusCode::OK);
        assert_eq!(batch()["rejected"], 1);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_slow_batch_call_times_out_with_504);
async fn a_slow_batch_call_times_out_with_504() {
    bounded(async {
        let (up, _) = batch_upstream(Mode::Echo, Duration::from_secs(30)).await;
        let gw = batch_gateway(&up.to_string(), ", timeout_ms = 200");
        for (status, body) in post_many(addr(&gw), 3).await {
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
            assert!(String::from_utf8_lossy(&body).contains("timed out"));
        }
        stop(gw).await;
    })
    .await;
}
