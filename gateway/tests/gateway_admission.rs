//! Priority admission in the gateway, end to end on loopback: a low class shed before a high
//! one, 503 + `Retry-After` when the queue overflows, 429 from a spent rate limit, 504 from a
//! deadline given by `grpc-timeout` or a header.
//!
//! The upstream holds every request until the test opens its gate, and the tests wait on the
//! policy's own state (requests queued, requests seen upstream), so no step depends on timing.

#[macro_use]
mod common;

use common::*;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tollgate_gateway::Gateway;

/// An upstream that notes each request's `x-id`, then waits for the gate before answering it.
struct Gated {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    gate: Arc<Semaphore>,
}

impl Gated {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let (s, g) = (seen.clone(), gate.clone());
        let addr = upstream(move |req| {
            let (s, g) = (s.clone(), g.clone());
            async move {
                let id = req
                    .headers()
                    .get("x-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                s.lock().unwrap().push(id.clone());
                // Each answer spends one permit for good, so the test decides how many go.
                g.acquire().await.unwrap().forget();
                text(StatusCode::OK, id)
            }
        })
        .await;
        Self { addr, seen, gate }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

/// Polls `cond` until it holds (within the test's deadline).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("gave up waiting for {what}");
}

/// The `i`th admission policy's `/state` view.
fn policy(gw: &Gateway, i: usize) -> serde_json::Value {
    gw.state()["admission"][i].clone()
}

/// Sends a GET for `path` with `headers`; returns status, headers and body text.
async fn call(
    at: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut b = Request::get(format!("http://{at}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = h1_client()
        .request(b.body(Full::default()).unwrap())
        .await
        .expect("the gateway answers");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body arrives").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// `Retry-After` in whole seconds; panics when absent.
fn retry_after(h: &HeaderMap) -> u64 {
    h.get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

on_both_front_ends!(low_is_shed_before_high_and_overflow_is_503_with_retry_after);
async fn low_is_shed_before_high_and_overflow_is_503_with_retry_after() {
    bounded(async {
        let up = Gated::start().await;
        let gw = start(config(&format!(
            "[[admission]]\nname = \"tight\"\nlimit = 2\nclasses = [\"high\", \"low\"]\n\
             class_header = \"x-priority\"\nmax_queued = 2\n\
             queue_timeout_ms = 30000\ncodel_target_ms = 10000\n\
             [[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath_prefix = \"/vip\"\ncluster = \"up\"\nadmission = \"tight\"\n\
             priority = \"high\"\nrequest_timeout_ms = 30000\n\
             [[routes]]\ncluster = \"up\"\nadmission = \"tight\"\nrequest_timeout_ms = 30000\n",
            up.addr
        )));
        let at = addr(&gw);
        let send = |path: &'static str, id: &'static str| {
            tokio::spawn(async move { call(at, path, &[("x-id", id)]).await })
        };
        // Two low requests take both slots; two more wait.
        let l1 = send("/", "l1");
        let l2 = send("/", "l2");
        until("both slots busy", || up.seen().len() == 2).await;
        let l3 = send("/", "l3");
        until("l3 queued", || policy(&gw, 0)["queued"] == 1).await;
        let l4 = send("/", "l4");
        until("l4 queued", || policy(&gw, 0)["queued"] == 2).await;

        // A high request (the route's priority) finds the queue full: the newest low goes.
        let h1 = send("/vip", "h1");
        let (status, headers, _) = l4.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after(&headers) >= 1);
        until("h1 queued", || policy(&gw, 0)["queued"] == 2).await;

        // Nothing below low to shed: another low is refused at once.
        let (status, headers, _) = call(at, "/", &[("x-id", "l5"), ("x-priority", "low")]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after(&headers) >= 1);
        let state = policy(&gw, 0);
        assert_eq!(state["classes"][1]["rejected"]["shed"], 1, "{state}");
        assert_eq!(state["classes"][1]["rejected"]["queue_full"], 1, "{state}");

        // One slot frees: it goes to the high request, though l3 waited longer.
        up.open(1);
        until("a third request upstream", || up.seen().len() == 3).await;
        assert_eq!(up.seen()[2], "h1");
        up.open(100);
        for (h, id) in [(l1, "l1"), (l2, "l2"), (l3, "l3"), (h1, "h1")] {
            let (status, _, body) = h.await.unwrap();
            assert_eq!((status, body.as_str()), (StatusCode::OK, id));
        }
        assert_eq!(
            up.seen().len(),
            4,
            "shed and refused requests never reach the upstream"
        );
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_spent_rate_limit_is_429_with_retry_after);
async fn a_spent_rate_limit_is_429_with_retry_after() {
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        let text = |burst: u32, route: &str| {
            config(&format!(
                "[[admission]]\nname = \"rl\"\n\
                 rate_limit = {{ burst = {burst}, period_ms = 60000, key = \"header:x-api-key\" }}\n\
                 [[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
                 [[routes]]\npath_prefix = \"{route}\"\ncluster = \"up\"\nadmission = \"rl\"\n"
            ))
        };
        let gw = start(text(2, "/"));
        let at = addr(&gw);
        for key in [&[("x-api-key", "acme")][..], &[]] {
            for _ in 0..2 {
                assert_eq!(call(at, "/", key).await.0, StatusCode::OK);
            }
            let (status, headers, _) = call(at, "/", key).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{key:?}");
            // One request refills every 30 s.
            let secs = retry_after(&headers);
            assert!((1..=30).contains(&secs), "{secs}");
        }
        // Another key has its own quota.
        let (status, _, _) = call(at, "/", &[("x-api-key", "other")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(policy(&gw, 0)["rate_limit_keys"], 3);
        // A reload that leaves the policy alone keeps its quotas; one that changes it starts
        // afresh.
        gw.apply(text(2, "/a"), "reload.toml").unwrap();
        let acme = [("x-api-key", "acme")];
        assert_eq!(call(at, "/a", &acme).await.0, StatusCode::TOO_MANY_REQUESTS);
        gw.apply(text(3, "/a"), "reload.toml").unwrap();
        assert_eq!(call(at, "/a", &acme).await.0, StatusCode::OK);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(deadlines_from_grpc_timeout_and_a_header_are_504);
async fn deadlines_from_grpc_timeout_and_a_header_are_504() {
    bounded(async {
        let up = Gated::start().await;
        // The listener's policy applies to a route that names none.
        let gw = start(config(&format!(
            "admission = \"edge\"\n\
             [[admission]]\nname = \"edge\"\ndeadline_header = \"x-request-timeout-ms\"\n\
             [[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
             [[routes]]\ncluster = \"up\"\nrequest_timeout_ms = 30000\n",
            up.addr
        )));
        let at = addr(&gw);
        // Each cut call teaches the policy that calls take at least that long, so the second
        // deadline is longer than the first: a shorter one would be refused before sending.
        for (i, h) in [("grpc-timeout", "200m"), ("x-request-timeout-ms", "1000")]
            .into_iter()
            .enumerate()
        {
            let (status, headers, _) = call(at, "/", &[("x-id", "slow"), h]).await;
            assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{h:?}");
            assert!(headers.get("retry-after").is_none());
            until("the request reached the upstream", || {
                up.seen().len() == i + 1
            })
            .await;
        }
        // A deadline already spent is refused before it is sent.
        let (status, _, _) =
            call(at, "/", &[("x-id", "late"), ("x-request-timeout-ms", "0")]).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        let state = policy(&gw, 0);
        assert_eq!(state["name"], "edge");
        let refused: u64 = (0..4)
            .map(|c| {
                state["classes"][c]["rejected"]["deadline"]
                    .as_u64()
                    .unwrap()
            })
            .sum();
        assert_eq!(refused, 1, "{state}");
        up.open(100);
        assert_eq!(call(at, "/", &[("x-id", "free")]).await.0, StatusCode::OK);
        assert_eq!(up.seen(), ["slow", "slow", "free"]);
        stop(gw).await;
    })
    .await;
}
