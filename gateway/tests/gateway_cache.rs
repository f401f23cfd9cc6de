//! `[routes.cache]` end to end on loopback: hits, what is never cached, big bodies,
//! stale-if-error over an upstream outage (a reload keeps the cached content), and a Redis L3
//! shared by two gateways and killed mid-run (skipped without `redis-server` unless
//! `TOLLGATE_REQUIRE_REDIS=1`).
//!
//! These use real sockets and real time; every wait is bounded.

#[macro_use]
mod common;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::Full;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tollgate_core::testing::redis::RedisServer;
use tollgate_gateway::Gateway;

/// An upstream counting its requests. Paths: `/nostore` answers `no-store`; `/big` a body of
/// 5000 bytes with `Content-Length`; `/chunked` 3 frames of 1000 bytes without one; anything
/// else `path n` with `max-age=60` (or `max-age=0` under `/stale`). While `fail` is set it
/// answers 503; while `hang` is set it never answers. Paths under `/delay` answer after 1 s.
struct Origin {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
}

impl Origin {
    async fn start() -> Origin {
        let calls = Arc::new(AtomicUsize::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let hang = Arc::new(AtomicBool::new(false));
        let (c, f, h) = (calls.clone(), fail.clone(), hang.clone());
        let addr = upstream(move |req| {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            let failing = f.load(Ordering::SeqCst);
            let hanging = h.load(Ordering::SeqCst);
            async move {
                let path = req.uri().path().to_owned();
                if hanging {
                    std::future::pending::<()>().await;
                }
                if path.starts_with("/delay") {
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
                if failing {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "down");
                }
                let mut r = match path.as_str() {
                    "/big" => {
                        let mut r = text(StatusCode::OK, vec![b'b'; 5000]);
                        r.headers_mut()
                            .insert("content-length", "5000".parse().unwrap());
                        r
                    }
                    "/chunked" => {
                        let frame = || Frame::data(Bytes::from(vec![b'c'; 1000]));
                        let mut r = text(StatusCode::OK, "");
                        *r.body_mut() = Frames(VecDeque::from([frame(), frame(), frame()]));
                        r
                    }
                    _ => text(StatusCode::OK, format!("{path} {n}")),
                };
                let cc = match path.as_str() {
                    "/nostore" => "no-store",
                    p if p.starts_with("/stale") => "max-age=0",
                    _ => "max-age=60",
                };
                r.headers_mut().insert("cache-control", cc.parse().unwrap());
                r.headers_mut().insert("etag", "\"v1\"".parse().unwrap());
                // Echo the validators the upstream saw.
                for name in ["if-none-match", "range"] {
                    if let Some(v) = req.headers().get(name) {
                        let seen = format!("x-seen-{name}");
                        r.headers_mut()
                            .insert(http::HeaderName::try_from(seen).unwrap(), v.clone());
                    }
                }
                r
            }
        })
        .await;
        Origin {
            addr,
            calls,
            fail,
            hang,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn cached_route(upstream: SocketAddr, section: &str) -> String {
    format!(
        "[[clusters]]\nname = \"up\"\nendpoints = [\"{upstream}\"]\n\
         [[routes]]\ncluster = \"up\"\n[routes.cache]\n{section}\n"
    )
}

/// Sends `method path` with `headers`; returns status, headers and body.
async fn ask(
    gw: &Gateway,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", addr(gw)));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let (s, h, body, _) = send(&h1_client(), b.body(Full::default()).unwrap()).await;
    (s, h, body)
}

fn x_cache(h: &HeaderMap) -> &str {
    h.get("x-cache").map_or("-", |v| v.to_str().unwrap())
}

/// The first route's cache state (`/state`'s `cache` object).
fn cache_state(gw: &Gateway) -> serde_json::Value {
    let state = gw.state()["routes"][0]["cache"].clone();
    assert!(state.is_object(), "the route has a cache");
    state
}

on_both_front_ends!(a_repeated_get_is_a_hit);
async fn a_repeated_get_is_a_hit() {
    bounded(async {
        let origin = Origin::start().await;
        let gw = start(config(&cached_route(origin.addr, "")));
        let (s, h, body) = ask(&gw, Method::GET, "/a?q=1", &[]).await;
        assert_eq!((s, x_cache(&h)), (StatusCode::OK, "MISS"));
        assert_eq!(body, "/a 1");
        for _ in 0..5 {
            let (s, h, body) = ask(&gw, Method::GET, "/a?q=1", &[]).await;
            assert_eq!((s, x_cache(&h)), (StatusCode::OK, "HIT"));
            assert_eq!(body, "/a 1");
            assert_eq!(h["cache-control"], "max-age=60");
            assert_eq!(h["via"], "1.1 tollgate");
        }
        assert_eq!(origin.calls(), 1, "the upstream is asked once");
        // Another query string, and HEAD, are other keys.
        let (_, h, body) = ask(&gw, Method::GET, "/a?q=2", &[]).await;
        assert_eq!((x_cache(&h), &body[..]), ("MISS", &b"/a 2"[..]));
        let (s, h, body) = ask(&gw, Method::HEAD, "/a?q=1", &[]).await;
        assert_eq!((s, x_cache(&h)), (StatusCode::OK, "MISS"));
        assert!(body.is_empty());
        let (_, h, _) = ask(&gw, Method::HEAD, "/a?q=1", &[]).await;
        assert_eq!(x_cache(&h), "HIT");
        assert_eq!(origin.calls(), 3);
        let st = cache_state(&gw);
        let hits = st["hits"]["l1"].as_u64().unwrap() + st["hits"]["l2"].as_u64().unwrap();
        assert_eq!(hits, 6, "{st}");
        assert_eq!(st["origin_calls"], 3, "{st}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(posts_credentials_and_no_store_are_not_cached);
async fn posts_credentials_and_no_store_are_not_cached() {
    bounded(async {
        let origin = Origin::start().await;
        let gw = start(config(&cached_route(origin.addr, "")));
        for n in 1..=2 {
            let (s, h, body) = ask(&gw, Method::POST, "/p", &[]).await;
            assert_eq!((s, x_cache(&h)), (StatusCode::OK, "BYPASS"));
            assert_eq!(body, format!("/p {n}"));
        }
        // The upstream says no-store: streamed through, asked every time.
        for _ in 0..2 {
            let (s, h, _) = ask(&gw, Method::GET, "/nostore", &[]).await;
            assert_eq!((s, x_cache(&h)), (StatusCode::OK, "MISS"));
        }
        assert_eq!(origin.calls(), 4);
        // The client says no-store, or sends credentials: the cache is not consulted.
        for h in [("cache-control", "no-store"), ("authorization", "Bearer x")] {
            for _ in 0..2 {
                let (_, hd, _) = ask(&gw, Method::GET, "/private", &[h]).await;
                assert_eq!(x_cache(&hd), "BYPASS");
            }
        }
        assert_eq!(origin.calls(), 8);
        let st = cache_state(&gw);
        assert_eq!(st["bypassed"], 6, "{st}");
        assert_eq!(st["passed_through"], 2, "{st}");
        assert_eq!(st["entries"], 0, "{st}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(bodies_over_the_cap_pass_whole_and_uncached);
async fn bodies_over_the_cap_pass_whole_and_uncached() {
    bounded(async {
        let origin = Origin::start().await;
        let gw = start(config(&cached_route(origin.addr, "max_body_bytes = 1500")));
        for path in ["/big", "/chunked"] {
            for _ in 0..2 {
                let (s, h, body) = ask(&gw, Method::GET, path, &[]).await;
                assert_eq!((s, x_cache(&h)), (StatusCode::OK, "MISS"), "{path}");
                let want = if path == "/big" { 5000 } else { 3000 };
                assert_eq!(body.len(), want, "{path}");
            }
        }
        assert_eq!(origin.calls(), 4, "nothing over the cap is stored");
        // `/big` declared its length and was streamed; `/chunked` was read whole.
        assert_eq!(cache_state(&gw)["passed_through"], 2);
        let (_, h, _) = ask(&gw, Method::GET, "/small", &[]).await;
        assert_eq!(x_cache(&h), "MISS");
        let (_, h, _) = ask(&gw, Method::GET, "/small", &[]).await;
        assert_eq!(x_cache(&h), "HIT");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(stale_if_error_hides_an_upstream_outage);
async fn stale_if_error_hides_an_upstream_outage() {
    bounded(async {
        let origin = Origin::start().await;
        let section = "stale_if_error_ms = 600000";
        let gw = start(config(&cached_route(origin.addr, section)));
        // `max-age=0`: stored but never fresh, so every request asks the upstream.
        let (s, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
        assert_eq!(
            (s, x_cache(&h), &body[..]),
            (StatusCode::OK, "MISS", &b"/stale 1"[..])
        );
        let (_, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
        assert_eq!((x_cache(&h), &body[..]), ("MISS", &b"/stale 2"[..]));
        // The upstream fails with 503: the last good answer stands in.
        origin.fail.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            let (s, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
            assert_eq!((s, x_cache(&h)), (StatusCode::OK, "STALE"));
            assert_eq!(body, "/stale 2");
        }
        // Never cached: the failure shows.
        let (s, _, _) = ask(&gw, Method::GET, "/stale-other", &[]).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(origin.calls(), 6);
        // The upstream is gone altogether (a reload points the cluster at a closed port): the
        // route and its section are unchanged, so the cache and its content survive.
        let (closed, _refusing) = refusing();
        gw.apply(config(&cached_route(closed, section)), "test.toml")
            .expect("reload");
        for _ in 0..3 {
            let (s, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
            assert_eq!((s, x_cache(&h)), (StatusCode::OK, "STALE"));
            assert_eq!(body, "/stale 2");
        }
        let (s, _, _) = ask(&gw, Method::GET, "/stale-other", &[]).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(origin.calls(), 6);
        let st = cache_state(&gw);
        assert_eq!(st["stale"]["if_error"], 6, "{st}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(stale_if_error_covers_a_hanging_upstream_with_origin_timeout);
async fn stale_if_error_covers_a_hanging_upstream_with_origin_timeout() {
    bounded(async {
        let origin = Origin::start().await;
        // The route's request timeout is 3 s (`common::config`); the upstream gets 200 ms.
        let section = "stale_if_error_ms = 600000\norigin_timeout_ms = 200";
        let gw = start(config(&cached_route(origin.addr, section)));
        let (_, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
        assert_eq!((x_cache(&h), &body[..]), ("MISS", &b"/stale 1"[..]));
        origin.hang.store(true, Ordering::SeqCst);
        for _ in 0..2 {
            let (s, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
            assert_eq!((s, x_cache(&h)), (StatusCode::OK, "STALE"));
            assert_eq!(body, "/stale 1");
        }
        let (s, _, _) = ask(&gw, Method::GET, "/stale-other", &[]).await;
        assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(origin.calls(), 4);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(stale_while_revalidate_answers_at_once_and_refreshes_behind);
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    bounded(async {
        let origin = Origin::start().await;
        let section = "stale_while_revalidate_ms = 600000";
        let gw = start(config(&cached_route(origin.addr, section)));
        let (_, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
        assert_eq!((x_cache(&h), &body[..]), ("MISS", &b"/stale 1"[..]));
        // Past its freshness (`max-age=0`): served as it is, refreshed in the background.
        let (s, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
        assert_eq!(
            (s, x_cache(&h), &body[..]),
            (StatusCode::OK, "STALE", &b"/stale 1"[..])
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, h, body) = ask(&gw, Method::GET, "/stale", &[]).await;
            assert_eq!(x_cache(&h), "STALE");
            if body != "/stale 1" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the refresh lands");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cache_state(&gw)["refreshes"].as_u64().unwrap() >= 1);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(validators_are_answered_by_the_cache);
async fn validators_are_answered_by_the_cache() {
    bounded(async {
        let origin = Origin::start().await;
        let gw = start(config(&cached_route(origin.addr, "")));
        // A first request with a validator: the upstream is asked for the whole answer.
        let (s, h, body) = ask(&gw, Method::GET, "/c", &[("if-none-match", "\"v1\"")]).await;
        assert_eq!((s, x_cache(&h)), (StatusCode::NOT_MODIFIED, "MISS"));
        assert!(body.is_empty());
        assert_eq!(h["etag"], "\"v1\"");
        let (s, h, body) = ask(&gw, Method::GET, "/c", &[]).await;
        assert_eq!(
            (s, x_cache(&h), &body[..]),
            (StatusCode::OK, "HIT", &b"/c 1"[..])
        );
        assert!(
            h.get("x-seen-if-none-match").is_none(),
            "stripped on the way up"
        );
        for (inm, want) in [
            ("W/\"v1\"", StatusCode::NOT_MODIFIED),
            ("\"v0\", \"v1\"", StatusCode::NOT_MODIFIED),
            ("\"v2\"", StatusCode::OK),
        ] {
            let (s, h, _) = ask(&gw, Method::GET, "/c", &[("if-none-match", inm)]).await;
            assert_eq!((s, x_cache(&h)), (want, "HIT"), "{inm}");
        }
        assert_eq!(origin.calls(), 1);
        // A range request is the client's own business.
        let (s, h, _) = ask(&gw, Method::GET, "/c", &[("range", "bytes=0-1")]).await;
        assert_eq!((s, x_cache(&h)), (StatusCode::OK, "BYPASS"));
        assert_eq!(h["x-seen-range"], "bytes=0-1");
        assert_eq!(origin.calls(), 2);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(concurrent_misses_make_one_upstream_call);
async fn concurrent_misses_make_one_upstream_call() {
    bounded(async {
        let origin = Origin::start().await;
        let gw = Arc::new(start(config(&cached_route(origin.addr, ""))));
        // The upstream takes 1 s; every request arrives while the first is in flight.
        let asks: Vec<_> = (0..8)
            .map(|_| {
                let gw = gw.clone();
                tokio::spawn(async move { ask(&gw, Method::GET, "/delay", &[]).await })
            })
            .collect();
        let mut labels = Vec::new();
        for a in asks {
            let (s, h, body) = a.await.unwrap();
            assert_eq!((s, &body[..]), (StatusCode::OK, &b"/delay 1"[..]));
            labels.push(x_cache(&h).to_owned());
        }
        assert_eq!(origin.calls(), 1, "{labels:?}");
        assert_eq!(
            labels.iter().filter(|l| *l == "MISS").count(),
            1,
            "{labels:?}"
        );
        let st = cache_state(&gw);
        assert_eq!(st["coalesced"], 7, "{st}");
        let gw = Arc::try_unwrap(gw).expect("the only reference");
        stop(gw).await;
    })
    .await;
}

/// A Redis server, or `None` (and a note) when it is not installed.
fn redis() -> Option<RedisServer> {
    let s = RedisServer::start();
    if s.is_none() {
        eprintln!("skipping: redis-server not installed");
    }
    s
}

/// Waits (real time, bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn redis_section(url: &str) -> String {
    format!("redis = {{ server = {{ url = \"{url}\", key_prefix = \"gwtest:\" }} }}")
}

async fn l3_connected(gw: &Gateway) {
    until("the L3 connection", || {
        cache_state(gw)["l3"]["connected"] == true
    })
    .await;
}

on_both_front_ends!(two_gateways_share_the_redis_l3);
async fn two_gateways_share_the_redis_l3() {
    let Some(server) = redis() else { return };
    bounded(async {
        let origin = Origin::start().await;
        let routes = cached_route(origin.addr, &redis_section(&server.url()));
        let (one, two) = (start(config(&routes)), start(config(&routes)));
        l3_connected(&one).await;
        l3_connected(&two).await;
        // Both instances sit behind one name: the client's Host is part of the key.
        let host = [("host", "cache.test")];
        let (s, h, body) = ask(&one, Method::GET, "/shared", &host).await;
        assert_eq!(
            (s, x_cache(&h), &body[..]),
            (StatusCode::OK, "MISS", &b"/shared 1"[..])
        );
        // The write to Redis happens in the background.
        let port = server.port();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while redis_keys(port).await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the entry reaches Redis"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (s, h, body) = ask(&two, Method::GET, "/shared", &host).await;
        assert_eq!(
            (s, x_cache(&h), &body[..]),
            (StatusCode::OK, "HIT", &b"/shared 1"[..])
        );
        assert_eq!(
            origin.calls(),
            1,
            "the second gateway did not ask the upstream"
        );
        assert_eq!(cache_state(&two)["hits"]["l3"], 1);
        // Now in the second gateway's own tiers.
        let (_, h, _) = ask(&two, Method::GET, "/shared", &host).await;
        assert_eq!(x_cache(&h), "HIT");
        assert_eq!(cache_state(&two)["hits"]["l3"], 1);
        stop(one).await;
        stop(two).await;
    })
    .await;
}

on_both_front_ends!(killing_redis_mid_run_fails_no_request);
async fn killing_redis_mid_run_fails_no_request() {
    let Some(mut server) = redis() else { return };
    bounded(async {
        let origin = Origin::start().await;
        let gw = start(config(&cached_route(
            origin.addr,
            &redis_section(&server.url()),
        )));
        l3_connected(&gw).await;
        let (_, h, _) = ask(&gw, Method::GET, "/k0", &[]).await;
        assert_eq!(x_cache(&h), "MISS");
        // Frozen, Redis answers nothing: each look-up gives up after its timeout (50 ms).
        server.pause();
        let (s, h, body) = ask(&gw, Method::GET, "/frozen", &[]).await;
        assert_eq!(
            (s, x_cache(&h), &body[..]),
            (StatusCode::OK, "MISS", &b"/frozen 2"[..])
        );
        server.resume();
        server.stop();
        // Cached content comes from L1/L2, the rest from the upstream; nothing fails.
        for i in 0..20 {
            let (s, h, body) = ask(&gw, Method::GET, "/k0", &[]).await;
            assert_eq!(
                (s, x_cache(&h), &body[..]),
                (StatusCode::OK, "HIT", &b"/k0 1"[..])
            );
            let path = format!("/k{}", i % 5 + 1);
            let (s, _, body) = ask(&gw, Method::GET, &path, &[]).await;
            assert_eq!(s, StatusCode::OK, "{path}");
            assert!(body.starts_with(path.as_bytes()), "{path}");
        }
        assert_eq!(origin.calls(), 7, "one miss per key; the rest are hits");
        let st = cache_state(&gw);
        assert!(st["l3"]["errors"].as_u64().unwrap() > 0, "{st}");
        stop(gw).await;
    })
    .await;
}

#[test]
fn the_section_in_a_config_file() {
    let seed = |name: &str| {
        let path = format!(
            "{}/../fuzz/corpus/gateway_config/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path).unwrap()
    };
    let config = tollgate_gateway::config::Config::parse(&seed("cache_full.toml"), "full.toml")
        .expect("the full seed is valid");
    let cache = config.routes[0].cache.as_ref().unwrap();
    assert_eq!(cache.vary, ["accept-encoding", "accept-language"]);
    assert_eq!(cache.redis.as_ref().unwrap().channel, "tollgate:inv");
    assert_eq!(config.routes[1].cache.as_ref().unwrap().l1_entries, 256);
    let err =
        tollgate_gateway::config::Config::parse(&seed("cache_bad.toml"), "bad.toml").unwrap_err();
    assert_eq!(err.field, "routes[0].cache.default_ttl_ms", "{err}");
    let unknown = "[[clusters]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n\
                   [[routes]]\ncluster = \"a\"\n[routes.cache]\nttl = 5\n";
    let err = tollgate_gateway::config::Config::parse(unknown, "u.toml").unwrap_err();
    assert!(err.to_string().contains("ttl"), "{err}");
}
