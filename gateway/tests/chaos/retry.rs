//! `[clusters.retry]`: what is retried, where, and how much.

use crate::chaos::*;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

on_both_front_ends!(retries_rescue_idempotent_requests_only);
/// Two endpoints, one resetting every connection: with `[clusters.retry]` every GET succeeds
/// (its failed try is retried on the good endpoint: the balancer skips the endpoint the request
/// already tried, with no ejection needed). On a cluster of the resetting endpoint alone, a GET
/// and a PUT with a body are tried `1 + attempts` times (the PUT's body is replayed), while a
/// POST with a body is tried exactly once (it reached the endpoint, and a POST is not
/// idempotent).
async fn retries_rescue_idempotent_requests_only() {
    bounded(async {
        // The good endpoint is slower than the balancer's first guess for an endpoint it has
        // not measured yet (30 ms), so the latency-aware pick tries the resetting one too.
        let good = ChaosUpstream::start(Mode::Slow).await;
        good.set_delay(Duration::from_millis(40));
        let bad = ChaosUpstream::start(Mode::Reset).await;
        let retry = "[clusters.retry]\nattempts = 3\nbudget_percent = 20\nbudget_min_per_s = 10\n\
                     backoff = { base = \"1ms\", max = \"5ms\" }\n";
        // No ejection: only the tried-endpoint hint keeps a retry off the resetting endpoint.
        let pair = format!(
            "{retry}[clusters.balance.outlier]\nconsecutive_failures = 0\nsuccess_rate = false\n"
        );
        let rest =
            cluster("pair", &[&good, &bad], &pair, "") + &cluster("alone", &[&bad], retry, "");
        let gw = start(config(&rest));
        let base = format!("http://{}", addr(&gw));
        let client = client();

        for i in 0..20 {
            let r = get(&client, &format!("{base}/pair/{i}")).await;
            assert_eq!(r.status, StatusCode::OK, "GET {i}: {}", r.body);
            assert_eq!(r.body, format!("ok from {}\n", good.addr));
        }
        assert!(
            bad.requests() >= 1,
            "the resetting endpoint was never tried"
        );
        let s = state(&gw).await;
        let retries = layers(&s, "pair")["retry"]["retries"].as_u64();
        assert!(retries.is_some_and(|r| r >= 1), "{s:#}");

        // The lone resetting endpoint: a GET is tried 1 + 3 times...
        let before = bad.requests();
        for _ in 0..3 {
            let r = get(&client, &format!("{base}/alone")).await;
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
        }
        assert_eq!(
            bad.requests() - before,
            3 * 4,
            "GETs retried up to attempts"
        );
        // ...so is a PUT with a body (buffered and replayed)...
        let before = bad.requests();
        for _ in 0..2 {
            let r = call(
                &client,
                Method::PUT,
                &format!("{base}/alone"),
                Some(b"payload"),
            )
            .await
            .expect("the PUT is answered");
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
        }
        assert_eq!(bad.requests() - before, 2 * 4, "a PUT's body is replayed");
        // ...and a POST with a body exactly once.
        let before = bad.requests();
        for _ in 0..5 {
            let r = call(
                &client,
                Method::POST,
                &format!("{base}/alone"),
                Some(b"payload"),
            )
            .await
            .expect("the POST is answered");
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
        }
        assert_eq!(
            bad.requests() - before,
            5,
            "a POST that reached the endpoint is never retried"
        );
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(an_idempotency_key_and_the_replay_limit_decide_what_is_sent_again);
/// The resetting endpoint alone: a POST that carries an `Idempotency-Key` is tried
/// `1 + attempts` times like a GET (the client says a repeat is safe), while a PUT whose body
/// is over `replay_limit_bytes` is tried exactly once (its body is not kept to send again),
/// and one within the limit `1 + attempts` times. Every request gets one answer.
async fn an_idempotency_key_and_the_replay_limit_decide_what_is_sent_again() {
    bounded(async {
        let bad = ChaosUpstream::start(Mode::Reset).await;
        let retry = "[clusters.retry]\nattempts = 2\nbudget_percent = 100\n\
                     budget_min_per_s = 100\nreplay_limit_bytes = 1024\n\
                     backoff = { base = \"1ms\", max = \"2ms\" }\n";
        let gw = start(config(&cluster("alone", &[&bad], retry, "")));
        let url = format!("http://{}/alone", addr(&gw));
        let client = client();
        let post = |key: Option<&str>| {
            let mut b = Request::builder().method(Method::POST).uri(&url);
            if let Some(k) = key {
                b = b.header("idempotency-key", k);
            }
            b.body(Full::new(Bytes::from_static(b"payload"))).unwrap()
        };

        let before = bad.requests();
        let r = send(&client, post(Some("order-1")))
            .await
            .expect("answered");
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
        assert_eq!(
            bad.requests() - before,
            3,
            "a keyed POST is tried 1 + attempts times"
        );

        let before = bad.requests();
        let r = send(&client, post(None)).await.expect("answered");
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
        assert_eq!(
            bad.requests() - before,
            1,
            "a POST without a key is tried once"
        );

        static SMALL: [u8; 1024] = [b's'; 1024];
        static LARGE: [u8; 1025] = [b'l'; 1025];
        for (body, tries) in [(&SMALL[..], 3), (&LARGE[..], 1)] {
            let before = bad.requests();
            let r = call(&client, Method::PUT, &url, Some(body))
                .await
                .expect("answered");
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
            assert_eq!(
                bad.requests() - before,
                tries,
                "a PUT of {} bytes (replay limit 1024)",
                body.len()
            );
        }
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_post_refused_at_connect_is_retried_elsewhere);
/// A POST whose connection could not be made was never sent, so it is retried on the other
/// endpoint, its body replayed: every POST to a cluster with a dead endpoint succeeds, and the
/// live endpoint reads each exactly once (`tests/endpoint_kill.rs` checks the bodies' bytes).
async fn a_post_refused_at_connect_is_retried_elsewhere() {
    bounded(async {
        // Slower than the balancer's first guess for an endpoint it has not measured (30 ms),
        // so the dead endpoint is picked too.
        let good = ChaosUpstream::start(Mode::Slow).await;
        good.set_delay(Duration::from_millis(40));
        // A port bound and never listening: connecting is refused.
        let (dead, _refusing) = crate::common::refusing();
        let rest = format!(
            "[[clusters]]\nname = \"pair\"\nendpoints = [\"{}\", \"{dead}\"]\n\
             [clusters.retry]\nattempts = 1\nbackoff = {{ base = \"1ms\", max = \"1ms\" }}\n\
             [clusters.balance.outlier]\nconsecutive_failures = 0\nsuccess_rate = false\n\
             [[routes]]\npath_prefix = \"/pair\"\ncluster = \"pair\"\n",
            good.addr
        );
        let gw = start(config(&rest));
        let client = client();
        let url = format!("http://{}/pair", addr(&gw));
        for i in 0..20 {
            let r = call(&client, Method::POST, &url, Some(b"order=1"))
                .await
                .expect("the POST is answered");
            assert_eq!(r.status, StatusCode::OK, "POST {i}: {}", r.body);
        }
        assert_eq!(
            good.requests(),
            20,
            "every POST reached the live endpoint once"
        );
        let s = state(&gw).await;
        assert!(
            layers(&s, "pair")["retry"]["retries"]
                .as_u64()
                .is_some_and(|r| r >= 1),
            "the dead endpoint was never picked: {s:#}"
        );
        stop(gw).await;
    })
    .await;
}

/// An upstream that turns every request away, as its path says: `/u/grpc` with `200` and
/// `grpc-status: 14` (gRPC's UNAVAILABLE in a Trailers-Only answer), `/u/stop` with `503` and
/// `grpc-retry-pushback-ms: -1` ("do not retry"), anything else with a bare `503`; it counts
/// the requests.
async fn refusing_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    let addr = crate::common::upstream(move |req| {
        // Relaxed: a counter the test reads after the answers came.
        count.fetch_add(1, Ordering::Relaxed);
        let (status, field) = match req.uri().path() {
            "/u/grpc" => (StatusCode::OK, Some(("grpc-status", "14"))),
            "/u/stop" => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(("grpc-retry-pushback-ms", "-1")),
            ),
            "/u/later" => (StatusCode::SERVICE_UNAVAILABLE, Some(("retry-after", "5"))),
            "/u/soon" => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(("grpc-retry-pushback-ms", "10")),
            ),
            _ => (StatusCode::SERVICE_UNAVAILABLE, None),
        };
        let mut answer = crate::common::text(status, "");
        if let Some((name, value)) = field {
            answer
                .headers_mut()
                .insert(name, http::HeaderValue::from_static(value));
        }
        std::future::ready(answer)
    })
    .await;
    (addr, seen)
}

on_both_front_ends!(a_pushback_past_the_routes_deadline_is_not_waited_for);
/// A `503` whose `Retry-After` (5 s) ends after the route's deadline (1 s): the gateway does
/// not wait for it (which would only end in its own `504`), the client gets the upstream's
/// `503` and its `Retry-After` at once; a pushback within the deadline is waited for and
/// retried.
async fn a_pushback_past_the_routes_deadline_is_not_waited_for() {
    bounded(async {
        let (up, seen) = refusing_upstream().await;
        let rest = format!(
            "[[clusters]]\nname = \"u\"\nendpoints = [\"{up}\"]\n[clusters.retry]\nattempts = 2\n\
             budget_percent = 100\nbudget_min_per_s = 100\n\
             [[routes]]\npath_prefix = \"/u\"\ncluster = \"u\"\nrequest_timeout_ms = 1000\n"
        );
        let gw = start(config(&rest));
        let base = format!("http://{}/u", addr(&gw));
        let client = client();
        let started = tokio::time::Instant::now();
        let r = get(&client, &format!("{base}/later")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "waited {:?} for a pushback past the deadline",
            started.elapsed()
        );
        assert_eq!(seen.load(Ordering::Relaxed), 1, "not retried");
        let before = seen.load(Ordering::Relaxed);
        let r = get(&client, &format!("{base}/soon")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        assert_eq!(
            seen.load(Ordering::Relaxed) - before,
            3,
            "10 ms pushbacks are waited for"
        );
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(the_answers_own_fields_decide_a_retry);
/// A retry reads the upstream's answer: a `503` is tried `1 + attempts` times, a `503` with a
/// negative `grpc-retry-pushback-ms` once, and a POST answered with `grpc-status: 14` (whatever
/// its method: gRPC calls a Trailers-Only UNAVAILABLE safe to repeat) `1 + attempts` times.
async fn the_answers_own_fields_decide_a_retry() {
    bounded(async {
        let (up, seen) = refusing_upstream().await;
        let rest = format!(
            "[[clusters]]\nname = \"u\"\nendpoints = [\"{up}\"]\n[clusters.retry]\nattempts = 2\n\
             budget_percent = 100\nbudget_min_per_s = 100\n\
             backoff = {{ base = \"1ms\", max = \"2ms\" }}\n\
             [[routes]]\npath_prefix = \"/u\"\ncluster = \"u\"\n"
        );
        let gw = start(config(&rest));
        let base = format!("http://{}/u", addr(&gw));
        let client = client();
        for (method, path, status, tries) in [
            (Method::GET, "/plain", StatusCode::SERVICE_UNAVAILABLE, 3),
            (Method::GET, "/stop", StatusCode::SERVICE_UNAVAILABLE, 1),
            (Method::POST, "/grpc", StatusCode::OK, 3),
        ] {
            let before = seen.load(Ordering::Relaxed);
            let r = call(
                &client,
                method.clone(),
                &format!("{base}{path}"),
                Some(b"x"),
            )
            .await
            .expect("answered");
            assert_eq!(r.status, status, "{method} {path}: {}", r.body);
            assert_eq!(
                seen.load(Ordering::Relaxed) - before,
                tries,
                "{method} {path}: tries"
            );
        }
        stop(gw).await;
    })
    .await;
}

/// An upstream for the hedging test: it answers `/N` after 400 ms when `N % 2 == parity`
/// (body `slow from ADDR`) and at once otherwise (`fast from ADDR`), and counts the requests it
/// holds.
async fn parity_upstream(parity: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let held = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = held.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let count = count.clone();
                    async move {
                        // Relaxed: a counter the test reads after the answers came.
                        count.fetch_add(1, Ordering::Relaxed);
                        struct Release(Arc<AtomicU64>);
                        impl Drop for Release {
                            fn drop(&mut self) {
                                self.0.fetch_sub(1, Ordering::Relaxed);
                            }
                        }
                        let _release = Release(count);
                        let n: u64 = req
                            .uri()
                            .path()
                            .rsplit('/')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(1);
                        let slow = n % 2 == parity;
                        if slow {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                        }
                        let speed = if slow { "slow" } else { "fast" };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(format!("{speed} from {addr}\n")),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, held)
}

on_both_front_ends!(a_hedge_to_the_other_endpoint_answers_first);
/// Hedging: each of two endpoints answers half the paths after 400 ms and the other half at
/// once, the other endpoint's half being the slow one. With the hedge delay held at 30 ms
/// (`min_delay = max_delay`) once one latency is known, a try that is slow is hedged to the
/// other endpoint (the balancer skips the one in flight), which answers at once: every client
/// gets a fast answer, exactly one, and the slow tries, dropped, end.
async fn a_hedge_to_the_other_endpoint_answers_first() {
    bounded(async {
        let (a, held_a) = parity_upstream(0).await;
        let (b, held_b) = parity_upstream(1).await;
        let rest = format!(
            "[[clusters]]\nname = \"hedged\"\nendpoints = [\"{a}\", \"{b}\"]\n\
             [clusters.retry]\nattempts = 1\n\
             hedge = {{ min_delay = \"30ms\", max_delay = \"30ms\", min_samples = 1 }}\n\
             [clusters.balance.outlier]\nconsecutive_failures = 0\nsuccess_rate = false\n\
             [[routes]]\npath_prefix = \"/hedged\"\ncluster = \"hedged\"\n\
             request_timeout_ms = 1500\n"
        );
        let gw = start(config(&rest));
        let client = client();
        let url = format!("http://{}/hedged", addr(&gw));
        // Until a latency is known nothing is hedged: one warm-up request, whatever answers.
        assert_eq!(
            get(&client, &format!("{url}/warm")).await.status,
            StatusCode::OK
        );
        let mut replies = Vec::new();
        for i in 0..16 {
            let r = get(&client, &format!("{url}/{i}")).await;
            assert_eq!(r.status, StatusCode::OK, "GET {i}: {}", r.body);
            replies.push(r.body);
        }
        assert!(
            replies.iter().all(|b| b.starts_with("fast from ")),
            "{replies:?}"
        );
        let s = state(&gw).await;
        assert!(
            layers(&s, "hedged")["retry"]["hedges"]
                .as_u64()
                .is_some_and(|h| h >= 1),
            "{s:#}"
        );
        let held = || held_a.load(Ordering::Relaxed) + held_b.load(Ordering::Relaxed);
        assert!(
            eventually(Duration::from_secs(5), || async { held() == 0 }).await,
            "the endpoints still hold {} dropped tries",
            held()
        );
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(retry_budget_caps_the_extra_load);
/// Every endpoint fails: retries stay within the budget, so the upstreams see at most
/// `requests + max(requests × budget_percent, budget_min_per_s × 10 s)` tries, not
/// `requests × (1 + attempts)`.
async fn retry_budget_caps_the_extra_load() {
    bounded(async {
        let a = ChaosUpstream::start(Mode::Reset).await;
        let b = ChaosUpstream::start(Mode::Reset).await;
        let rest = cluster(
            "down",
            &[&a, &b],
            "[clusters.retry]\nattempts = 3\nbudget_percent = 20\nbudget_min_per_s = 1\n",
            "",
        );
        let gw = start(config(&rest));
        let url = format!("http://{}/down", addr(&gw));
        let client = client();
        let n = 60u64;
        for _ in 0..n {
            let r = get(&client, &url).await;
            assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.body);
        }
        let seen = a.requests() + b.requests();
        // The larger of 20% of the requests and a floor of 1/s over the 10 s window; a
        // little slack for the window's second boundaries.
        let bound = n + (n / 5).max(10) + 4;
        assert!(
            seen <= bound,
            "{seen} tries for {n} requests (bound {bound})"
        );
        assert!(seen > n, "no retry at all: {seen} tries for {n} requests");
        assert!(seen < n * 4, "unbudgeted: {seen}");
        let s = state(&gw).await;
        let exhausted = layers(&s, "down")["retry"]["budget_exhausted"].as_u64();
        assert!(exhausted.is_some_and(|e| e >= 1), "{s:#}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_503_the_budget_does_not_retry_is_counted);
/// An upstream answering `503` to every GET, a budget of nothing (no share, no floor): each
/// answer asked for a retry the budget refused, and the counter says so (it counted only
/// failed tries, not answers, before).
async fn a_503_the_budget_does_not_retry_is_counted() {
    bounded(async {
        let a = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "busy",
            &[&a],
            "[clusters.retry]\nattempts = 3\nbudget_percent = 0\nbudget_min_per_s = 0\n",
            "",
        );
        let gw = start(config(&rest));
        let url = format!("http://{}/busy", addr(&gw));
        let client = client();
        for _ in 0..3 {
            let r = get(&client, &url).await;
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
        }
        assert_eq!(a.requests(), 3, "no retry: the budget is empty");
        let s = state(&gw).await;
        let exhausted = layers(&s, "busy")["retry"]["budget_exhausted"].as_u64();
        assert_eq!(exhausted, Some(3), "{s:#}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(per_try_timeout_retries_a_hung_try);
/// A hung endpoint next to a good one, with a per-try timeout: a GET whose try hangs is cut
/// at `per_try_timeout_ms` and retried, so every GET is answered 200 well inside the route's
/// overall timeout.
async fn per_try_timeout_retries_a_hung_try() {
    bounded(async {
        let good = ChaosUpstream::start(Mode::Slow).await;
        good.set_delay(Duration::from_millis(40));
        let hung = ChaosUpstream::start(Mode::Hang).await;
        let rest = cluster(
            "pair",
            &[&good, &hung],
            "[clusters.retry]\nattempts = 2\nper_try_timeout_ms = 150\n",
            "request_timeout_ms = 1500",
        );
        let gw = start(config(&rest));
        let client = client();
        let mut codes = Vec::new();
        for i in 0..12 {
            let r = get(&client, &format!("http://{}/pair/{i}", addr(&gw))).await;
            codes.push(r.status.as_u16());
        }
        assert!(hung.requests() >= 1, "the hung endpoint was never tried");
        assert!(codes.iter().all(|&c| c == 200), "{codes:?}");
        stop(gw).await;
    })
    .await;
}
