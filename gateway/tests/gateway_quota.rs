//! Fleet-wide quotas end to end on loopback: an `[[admission]]` policy's `rate_limit` shared
//! by two gateways through a real `redis-server` (skipped without it, unless
//! `TOLLGATE_REQUIRE_REDIS=1`), the local quota answering while that server is killed or
//! frozen, and the IETF draft's `RateLimit-Policy`/`RateLimit` fields on 429 answers over
//! HTTP/1.1 and HTTP/2.
//!
//! Real sockets and a real server run on real time: the tests assert counts and bounds
//! (every request answered, none with a 5xx, none held much past the Redis response
//! timeout), never exact timings.

mod common;

use common::*;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::testing::redis::RedisServer;
use tollgate_gateway::Gateway;

type Http = Client<HttpConnector, Full<bytes::Bytes>>;

/// A Redis server, or `None` (and a note) when it is not installed.
fn redis() -> Option<RedisServer> {
    let s = RedisServer::start();
    if s.is_none() {
        eprintln!("skipping: redis-server not installed");
    }
    s
}

/// A gateway whose catch-all route is behind the policy `api`: `burst` requests per minute
/// per `x-api-key`, with `extra` appended to its `rate_limit` table.
fn gateway(up: SocketAddr, burst: u32, extra: &str) -> Gateway {
    start(config(&format!(
        "[[admission]]\nname = \"api\"\n\
         rate_limit = {{ burst = {burst}, period_ms = 60000, key = \"header:x-api-key\"{extra} }}\n\
         [[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
         [[routes]]\ncluster = \"up\"\nadmission = \"api\"\n"
    )))
}

/// The `rate_limit.redis` entry for the server at `url`.
fn shared(url: &str, rest: &str) -> String {
    format!(", redis = {{ url = \"{url}\"{rest} }}")
}

/// Sends a GET with `x-api-key: key` over `client`; returns the status and headers.
async fn call(client: &Http, at: SocketAddr, key: &str) -> (StatusCode, HeaderMap) {
    let req = Request::get(format!("http://{at}/"))
        .header("x-api-key", key)
        .body(Full::default())
        .unwrap();
    let (status, headers, _, _) = send(client, req).await;
    (status, headers)
}

/// Like [`call`], over HTTP/1.1, and asserts the answer came within `limit` and was not a
/// 5xx (an outage must neither hold nor fail a request).
async fn timed(at: SocketAddr, key: &str, limit: Duration) -> StatusCode {
    let started = Instant::now();
    let (status, _) = tokio::time::timeout(limit, call(&h1_client(), at, key))
        .await
        .unwrap_or_else(|_| panic!("no answer within {limit:?}"));
    let took = started.elapsed();
    assert!(took < limit, "answered after {took:?}, over {limit:?}");
    assert!(!status.is_server_error(), "{status}");
    status
}

/// Sends requests with fresh keys (each allowed) until Redis holds a key: the gateway uses
/// Redis again. Bounded: at most 200 tries, 20 ms apart.
async fn until_redis_is_used(at: SocketAddr, port: u16, tag: &str) {
    for i in 0..200 {
        let status = timed(at, &format!("{tag}-{i}"), Duration::from_secs(2)).await;
        assert_eq!(status, StatusCode::OK);
        if redis_keys(port).await > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway never used Redis again ({tag})");
}

/// A frozen (`SIGSTOP`) server, thawed again when this drops, even in a panic, so that the
/// server's own drop can kill it.
struct Frozen(Option<RedisServer>);

impl Frozen {
    fn freeze(server: RedisServer) -> Self {
        server.pause();
        Frozen(Some(server))
    }

    /// Thaws the server and hands it back.
    fn thaw(mut self) -> RedisServer {
        let server = self.0.take().expect("frozen once");
        server.resume();
        server
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(pid) = self.0.as_ref().and_then(RedisServer::pid) {
            // Not `resume()`: it panics on failure, and this may run during a panic.
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_carries_the_ratelimit_fields_over_h1_and_h2() {
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        let gw = gateway(up, 2, "");
        let quiet = gateway(up, 1, ", headers = \"none\"");
        for (proto, client) in [("h1", h1_client()), ("h2", h2_client())] {
            let at = addr(&gw);
            for _ in 0..2 {
                let (status, headers) = call(&client, at, proto).await;
                assert_eq!(status, StatusCode::OK, "{proto}");
                // `headers = "rejected"` (the default): successes carry none.
                assert!(headers.get("ratelimit").is_none(), "{proto}");
            }
            let (status, headers) = call(&client, at, proto).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{proto}");
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            // Two per minute: the next one in at most 30 s.
            assert!((1..=30).contains(&retry), "{proto}: {retry}");
            assert_eq!(headers["ratelimit-policy"], "\"api\";q=2;w=60", "{proto}");
            assert_eq!(
                headers["ratelimit"].to_str().unwrap(),
                format!("\"api\";r=0;t={retry}"),
                "{proto}"
            );

            let at = addr(&quiet);
            assert_eq!(call(&client, at, proto).await.0, StatusCode::OK);
            let (status, headers) = call(&client, at, proto).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{proto}");
            assert!(headers.get("retry-after").is_some(), "{proto}");
            assert!(headers.get("ratelimit").is_none(), "{proto}");
            assert!(headers.get("ratelimit-policy").is_none(), "{proto}");
        }
        stop(gw).await;
        stop(quiet).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_quota_through_redis() {
    let Some(server) = redis() else { return };
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        let redis = shared(&server.url(), ", key_prefix = \"gwtest:\"");
        let a = gateway(up, 5, &redis);
        let b = gateway(up, 5, &redis);
        let c = h1_client();
        for _ in 0..3 {
            assert_eq!(call(&c, addr(&a), "acme").await.0, StatusCode::OK);
        }
        // B sees A's usage: two left of the shared five, where B alone would allow five.
        assert_eq!(call(&c, addr(&b), "acme").await.0, StatusCode::OK);
        assert_eq!(call(&c, addr(&b), "acme").await.0, StatusCode::OK);
        let (status, headers) = call(&c, addr(&b), "acme").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["ratelimit-policy"], "\"api\";q=5;w=60");
        assert_eq!(
            call(&c, addr(&a), "acme").await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
        // Another client has its own quota.
        assert_eq!(call(&c, addr(&b), "globex").await.0, StatusCode::OK);
        assert_eq!(redis_keys(server.port()).await, 2);
        stop(a).await;
        stop(b).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_leaves_the_local_limit_and_is_used_again_after_a_restart() {
    let Some(mut server) = redis() else { return };
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        let redis = shared(&server.url(), ", failures = 1, cooldown = \"50ms\"");
        let gw = gateway(up, 3, &redis);
        let at = addr(&gw);
        let limit = Duration::from_secs(2);
        assert_eq!(timed(at, "acme", limit).await, StatusCode::OK);
        assert_eq!(redis_keys(server.port()).await, 1);

        server.stop();
        // The local quota (3 a minute, not yet used) answers: every request gets an answer in
        // time, none a 5xx, and the fourth of a burst is refused.
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(timed(at, "acme", limit).await);
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );

        // Back on the same port (empty): once the cooldown has passed, Redis is used again.
        server.restart();
        until_redis_is_used(at, server.port(), "after-restart").await;
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_holds_each_request_at_most_its_response_timeout() {
    let Some(server) = redis() else { return };
    let port = server.port();
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        let redis = shared(
            &server.url(),
            ", response_timeout = \"100ms\", failures = 2, cooldown = \"200ms\"",
        );
        let gw = gateway(up, 3, &redis);
        let at = addr(&gw);
        assert_eq!(
            timed(at, "acme", Duration::from_secs(2)).await,
            StatusCode::OK
        );

        let frozen = Frozen::freeze(server);
        // Each request waits at most the 100 ms response timeout (with a margin for a busy
        // machine; far below the route's 3 s timeout), then the local quota answers.
        let limit = Duration::from_millis(1_000);
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(timed(at, "acme", limit).await);
        }
        assert_eq!(
            statuses,
            [
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::OK,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
        // While it stays frozen, later requests keep the bound.
        for i in 0..6 {
            timed(at, &format!("frozen-{i}"), limit).await;
        }

        // Thawed: Redis answers again, on the kept connection or a new one.
        let server = frozen.thaw();
        let before = redis_keys(port).await;
        for i in 0..200 {
            timed(at, &format!("thawed-{i}"), Duration::from_secs(2)).await;
            if redis_keys(port).await > before {
                break;
            }
            assert!(i < 199, "Redis was not used again after it thawed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(server);
        stop(gw).await;
    })
    .await;
}

/// The `RateLimit` field's `r` and `t` (`"api";r=R;t=T`).
fn ratelimit(headers: &HeaderMap) -> (u64, u64) {
    let v = headers["ratelimit"].to_str().unwrap();
    let rest = v
        .strip_prefix("\"api\";r=")
        .unwrap_or_else(|| panic!("{v}"));
    let (r, t) = rest.split_once(";t=").unwrap_or_else(|| panic!("{v}"));
    (r.parse().unwrap(), t.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_headers_all_every_answer_carries_what_is_left_then_the_429() {
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        // Three a minute: one frees every 20 s.
        let gw = gateway(up, 3, ", headers = \"all\"");
        for (proto, client) in [("h1", h1_client()), ("h2", h2_client())] {
            let at = addr(&gw);
            for left in [2, 1, 0] {
                let (status, headers) = call(&client, at, proto).await;
                assert_eq!(status, StatusCode::OK, "{proto}");
                assert_eq!(headers["ratelimit-policy"], "\"api\";q=3;w=60", "{proto}");
                let (r, t) = ratelimit(&headers);
                assert_eq!(r, left, "{proto}");
                // The next one within the 20 s interval (rounded up to whole seconds).
                assert!((1..=20).contains(&t), "{proto}: {t}");
            }
            let (status, headers) = call(&client, at, proto).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{proto}");
            assert_eq!(headers["ratelimit-policy"], "\"api\";q=3;w=60", "{proto}");
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert_eq!(ratelimit(&headers), (0, retry), "{proto}");
            // Another client's answers count its own quota.
            let (status, headers) = call(&client, at, &format!("{proto}-other")).await;
            assert_eq!(status, StatusCode::OK, "{proto}");
            assert_eq!(ratelimit(&headers).0, 2, "{proto}");
        }
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_headers_all_a_shared_quota_counts_both_gateways() {
    let Some(server) = redis() else { return };
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        let redis = shared(&server.url(), ", key_prefix = \"gwall:\"");
        let extra = format!(", headers = \"all\"{redis}");
        let a = gateway(up, 4, &extra);
        let b = gateway(up, 4, &extra);
        let c = h1_client();
        for (gw, left) in [(&a, 3), (&b, 2), (&a, 1), (&b, 0)] {
            let (status, headers) = call(&c, addr(gw), "acme").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(ratelimit(&headers).0, left, "what both gateways spent");
        }
        let (status, headers) = call(&c, addr(&a), "acme").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(ratelimit(&headers).0, 0);
        stop(a).await;
        stop(b).await;
    })
    .await;
}
