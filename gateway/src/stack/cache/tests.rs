//! Unit tests of the route cache: validation, the policy's labels and weights, the codec.

use super::policy::{GwCodec, TooBig};
use super::*;
use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, Request, Response};
use std::time::Duration;
use tollgate_cache::redis::Codec;
use tollgate_cache::redis::RedisTierConfig;
use tollgate_cache::{CachePolicy, CachePolicyFor};

fn section(toml_text: &str) -> CacheSection {
    toml::from_str(toml_text).unwrap()
}

fn res(headers: &[(&str, &'static str)], body: &'static str) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from_static(body.as_bytes()));
    for (n, v) in headers {
        r.headers_mut().append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_static(v),
        );
    }
    r
}

fn classify(p: &GwPolicy, r: &Response<Bytes>) -> Cacheability {
    <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::classify(p, r)
}

fn to_value(p: &GwPolicy, r: Response<Bytes>) -> Stored {
    <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_value(p, r)
}

#[test]
fn the_suggested_section_parses_and_validates() {
    let s = section(
        r#"
        default_ttl_ms = 10000
        max_ttl_ms = 3600000
        stale_while_revalidate_ms = 5000
        stale_if_error_ms = 60000
        max_entries = 10000
        max_body_bytes = 1048576
        vary = ["accept-encoding"]
        redis = { server = { url = "redis://127.0.0.1:6379", key_prefix = "tollgate:" } }
        "#,
    );
    s.validate("routes[0].cache").unwrap();
    let r = s.redis.as_ref().unwrap();
    assert_eq!(r.key_prefix(), "tollgate:");
    assert_eq!(r.server.response_timeout, Duration::from_millis(50));
    assert_eq!(r.channel, "tollgate:cache:invalidate");
    CacheSection::default().validate("c").unwrap();
    for s in [s.clone(), CacheSection::default()] {
        let text = toml::to_string(&s).unwrap();
        assert_eq!(section(&text), s, "{text}");
    }
    assert_eq!(section(""), CacheSection::default());
    assert!(toml::from_str::<CacheSection>("ttl_ms = 5").is_err());
    assert!(
        toml::from_str::<CacheSection>("redis = { server = { url = \"redis://x\", db = 1 } }")
            .is_err()
    );
    assert!(
        toml::from_str::<CacheSection>("redis = { url = \"redis://x\" }").is_err(),
        "the server's settings are under `server`"
    );
}

#[test]
fn validation_names_the_bad_field() {
    let cases = [
        ("default_ttl_ms = 0", "c.default_ttl_ms"),
        ("default_ttl_ms = 7200000", "c.default_ttl_ms"),
        ("max_ttl_ms = 0", "c.max_ttl_ms"),
        ("max_ttl_ms = 9999999999999", "c.max_ttl_ms"),
        ("stale_if_error_ms = 4000000", "c.stale_if_error_ms"),
        (
            "stale_while_revalidate_ms = 4000000",
            "c.stale_while_revalidate_ms",
        ),
        ("negative_ttl_ms = 4000000", "c.negative_ttl_ms"),
        ("origin_timeout_ms = 3600001", "c.origin_timeout_ms"),
        ("max_entries = 0", "c.max_entries"),
        ("max_bytes = 10", "c.max_bytes"),
        ("l1_entries = 1000", "c.l1_entries"),
        ("l1_entries = 131072", "c.l1_entries"),
        ("max_body_bytes = 0", "c.max_body_bytes"),
        (
            "max_bytes = 2048\nmax_body_bytes = 4096",
            "c.max_body_bytes",
        ),
        ("vary = [\"accept\", \"bad header\"]", "c.vary[1]"),
        ("redis = { server = { url = \"\" } }", "c.redis.server.url"),
        (
            "redis = { server = { url = \"http://x\" } }",
            "c.redis.server.url",
        ),
        (
            "redis = { server = { url = \"redis://x\", response_timeout = \"0s\" } }",
            "c.redis.server.response_timeout",
        ),
        (
            "redis = { server = { url = \"redis://x\" }, channel = \"\" }",
            "c.redis.channel",
        ),
        (
            "redis = { server = { url = \"redis://x\", failures = 0 } }",
            "c.redis.server.failures",
        ),
        (
            "redis = { server = { url = \"redis://x\" }, reconnect_interval = \"0s\" }",
            "c.redis.reconnect_interval",
        ),
    ];
    for (text, field) in cases {
        let err = section(text).validate("c").unwrap_err();
        assert_eq!(err.field, field, "{text}");
        assert!(!err.problem.is_empty());
    }
    section("l1_entries = 0").validate("c").unwrap();
}

#[test]
fn hits_and_stale_answers_are_labelled() {
    let p = GwPolicy::new(&CacheSection::default(), Vec::new());
    let v = to_value(&p, res(&[("cache-control", "max-age=5")], "x"));
    assert_eq!(v.fresh_for, Duration::from_secs(5));
    let label = |r: Response<Bytes>| r.headers()[&X_CACHE].to_str().unwrap().to_owned();
    let miss = <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_response(&p, &v);
    assert_eq!(label(miss), "MISS");
    let hit = <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_response_aged(
        &p,
        &v,
        Duration::from_secs(5),
    );
    assert_eq!(hit.body(), "x");
    assert_eq!(hit.headers()["age"], "5");
    assert_eq!(label(hit), "HIT");
    let stale = <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_response_aged(
        &p,
        &v,
        Duration::from_secs(6),
    );
    assert_eq!(label(stale), "STALE");
    // No explicit freshness: the section's default; capped at max_ttl.
    let v = to_value(&p, res(&[], "x"));
    assert_eq!(v.fresh_for, Duration::from_millis(10_000));
    let v = to_value(&p, res(&[("cache-control", "max-age=999999")], "x"));
    assert_eq!(v.fresh_for, Duration::from_millis(3_600_000));
}

#[test]
fn too_big_bodies_are_not_stored_and_small_entries_weigh_the_floor() {
    let s = CacheSection {
        max_entries: 100,
        max_bytes: 100_000,
        ..CacheSection::default()
    };
    let p = GwPolicy::new(&s, Vec::new());
    let mut r = res(&[], "x");
    assert!(matches!(classify(&p, &r), Cacheability::Store(_)));
    r.extensions_mut().insert(TooBig);
    assert_eq!(classify(&p, &r), Cacheability::Pass);
    let v = to_value(&p, res(&[], "x"));
    let key = HttpKey::from_text("GET /");
    assert_eq!(p.weight(&key, &v), 1000, "100 entries of 100000 bytes");
    let big: &'static str = Box::leak("y".repeat(5000).into_boxed_str());
    let v = to_value(&p, res(&[], big));
    assert!(p.weight(&key, &v) > 5000);
}

#[test]
fn the_key_includes_host_and_the_vary_headers() {
    let s = section("vary = [\"Accept-Encoding\"]");
    let p = GwPolicy::new(&s, s.vary_headers().unwrap());
    let key = |host: &str, enc: &str| {
        let req = Request::get("/a")
            .header("host", host)
            .header("accept-encoding", enc)
            .body(())
            .unwrap();
        <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::key(&p, &req).unwrap()
    };
    assert_eq!(key("a", "gzip"), key("a", "gzip"));
    assert_ne!(key("a", "gzip"), key("b", "gzip"));
    assert_ne!(key("a", "gzip"), key("a", "br"));
    // A response varying on what the key holds is stored.
    assert!(matches!(
        classify(&p, &res(&[("vary", "accept-encoding")], "x")),
        Cacheability::Store(_)
    ));
    assert_eq!(
        classify(&p, &res(&[("vary", "cookie")], "x")),
        Cacheability::Pass
    );
}

#[test]
fn only_plain_gets_and_heads_are_looked_up() {
    let req = |m: Method, h: &[(&str, &str)]| {
        let mut b = Request::builder().method(m).uri("/");
        for (n, v) in h {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    };
    assert!(cacheable_request(&req(Method::GET, &[])));
    assert!(cacheable_request(&req(
        Method::HEAD,
        &[("cache-control", "max-age=0")]
    )));
    assert!(!cacheable_request(&req(Method::POST, &[])));
    assert!(!cacheable_request(&req(
        Method::GET,
        &[("range", "bytes=0-9")]
    )));
    assert!(!cacheable_request(&req(
        Method::GET,
        &[("if-match", "\"a\"")]
    )));
    assert!(cacheable_request(&req(
        Method::GET,
        &[("if-none-match", "\"a\"")]
    )));
    assert!(!cacheable_request(&req(
        Method::GET,
        &[("authorization", "x")]
    )));
    assert!(!cacheable_request(&req(
        Method::GET,
        &[("cache-control", "No-Store")]
    )));
}

#[test]
fn l3_values_round_trip_with_their_freshness() {
    let p = GwPolicy::new(&CacheSection::default(), Vec::new());
    let codec = GwCodec(p.clone());
    let v = to_value(
        &p,
        res(&[("cache-control", "max-age=7"), ("x-a", "1")], "body"),
    );
    let back = codec.decode_value(&codec.encode_value(&v)).unwrap();
    assert_eq!(back.fresh_for, Duration::from_secs(7));
    assert_eq!(back.res.body, "body");
    assert_eq!(back.res.headers["x-a"], "1");
    assert!(codec.decode_value(b"\x01").is_none());
    let key = HttpKey::from_text("GET /x");
    assert_eq!(codec.decode_key(&codec.encode_key(&key)), Some(key));
}

#[tokio::test]
async fn build_keeps_an_equal_section_and_never_blocks_on_redis() {
    let s = CacheSection::default();
    let a = RouteCache::build(&s, "r", None).unwrap();
    let b = RouteCache::build(&s, "r", Some(&a)).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let changed = CacheSection {
        default_ttl_ms: 1,
        ..s.clone()
    };
    let c = RouteCache::build(&changed, "r", Some(&a)).unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    // Nothing listens on port 1: the tier keeps trying in the background.
    let with_redis = CacheSection {
        redis: Some(RedisTierConfig::new("redis://127.0.0.1:1")),
        ..s
    };
    let d = RouteCache::build(&with_redis, "r", None).unwrap();
    let state = d.state();
    assert_eq!(state["l3"]["connected"], false);
    assert_eq!(state["entries"], 0);
    assert_eq!(a.state()["l3"], serde_json::Value::Null);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || d.record_metrics("r"));
    let text = handle.render();
    assert!(
        text.contains("tollgate_cache_hits_total{route=\"r\",tier=\"l3\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_cache_l3_connected{route=\"r\"} 0"),
        "{text}"
    );
}

#[test]
fn if_none_match_compares_weakly() {
    assert!(etag_matches(b"\"a\"", b"\"a\""));
    assert!(etag_matches(b"W/\"a\"", b"\"a\""));
    assert!(etag_matches(b"\"x\", W/\"a\"", b"W/\"a\""));
    assert!(etag_matches(b"*", b"\"a\""));
    assert!(!etag_matches(b"\"b\"", b"\"a\""));
    assert!(!etag_matches(b"", b"\"a\""));
}

#[test]
fn ranges_and_revalidations_are_never_stored() {
    let p = GwPolicy::new(&CacheSection::default(), Vec::new());
    for status in [206, 304] {
        let mut r = res(&[("cache-control", "max-age=60")], "");
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        assert_eq!(classify(&p, &r), Cacheability::Pass, "{status}");
    }
    let mut r = res(&[("etag", "\"a\""), ("content-type", "text/plain")], "x");
    r.headers_mut()
        .insert(X_CACHE.clone(), HeaderValue::from_static("HIT"));
    let nm = not_modified(r.headers());
    assert_eq!(nm.status(), http::StatusCode::NOT_MODIFIED);
    assert_eq!(nm.headers()["etag"], "\"a\"");
    assert_eq!(nm.headers()["x-cache"], "HIT");
    assert!(nm.headers().get("content-type").is_none());
}
