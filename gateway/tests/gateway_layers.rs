//! The cluster layers in the gateway: breaker, pool, balance and retries on a route, the
//! `/state` view of them, their validation, and their state kept across reloads.

#[macro_use]
mod common;

use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tollgate_gateway::config::Config;

/// An upstream answering `name` and counting its requests.
async fn named(name: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let addr = upstream(move |_req| {
        count.fetch_add(1, Ordering::Relaxed);
        async move { text(StatusCode::OK, name) }
    })
    .await;
    (addr, seen)
}

const LAYERS: &str = "[clusters.balance]\nseed = 7\n\
     [clusters.breaker]\nminimum_calls = 1000\n\
     [clusters.endpoint_breaker]\nminimum_calls = 1000\n\
     [clusters.pool]\ninitial_limit = 16\n\
     [clusters.retry]\nattempts = 2\nbudget_min_per_s = 100\n";

on_both_front_ends!(layered_cluster_serves_gets_and_streams_posts);
async fn layered_cluster_serves_gets_and_streams_posts() {
    bounded(async {
        let (a, seen_a) = named("a").await;
        let (b, seen_b) = named("b").await;
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{a}\", \"{b}\"]\n{LAYERS}\
             [[routes]]\ncluster = \"up\"\n"
        )));
        for _ in 0..40 {
            let (s, body) = get(addr(&gw), "/").await;
            assert_eq!(s, StatusCode::OK);
            assert!(body == "a" || body == "b", "{body}");
        }
        // Sequential requests go to the endpoint with the best latency estimate (an
        // unmeasured one counts as slow: the balancer's `default_rtt`); each is sent once.
        let (a_n, b_n) = (
            seen_a.load(Ordering::Relaxed),
            seen_b.load(Ordering::Relaxed),
        );
        assert_eq!(a_n + b_n, 40);
        // A POST body streams through the layers.
        let echo = inspect_upstream().await;
        stop(gw).await;
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{echo}\"]\n{LAYERS}\
             [[routes]]\ncluster = \"up\"\n"
        )));
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}/post", addr(&gw)))
            .body(Full::new(bytes::Bytes::from(vec![b'x'; 5000])))
            .unwrap();
        let (s, _, body, _) = send(&h1_client(), req).await;
        assert_eq!(s, StatusCode::OK);
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("body-len: 5000"), "{body}");
        assert!(body.starts_with("POST /post"), "{body}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(gets_are_retried_and_posts_only_when_nothing_was_sent);
async fn gets_are_retried_and_posts_only_when_nothing_was_sent() {
    bounded(async {
        let (dead, _refusing) = refusing();
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{dead}\"]\n\
             [clusters.retry]\nattempts = 2\nbudget_min_per_s = 1000\n\
             [[routes]]\ncluster = \"up\"\n"
        )));
        let admin = gw.state_view();
        let retries = |admin: &tollgate_gateway::StateView| {
            admin.state()["clusters"][0]["layers"]["retry"]["retries"]
                .as_u64()
                .unwrap()
        };
        let (s, _) = get(addr(&gw), "/").await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(retries(&admin), 2, "a GET is tried three times");
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{}/", addr(&gw)))
            .body(Full::new(bytes::Bytes::from_static(b"payload")))
            .unwrap();
        let (s, _, _, _) = send(&h1_client(), req).await;
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        // A refused connection sent nothing, so even a POST is retried, its body replayed (a
        // POST that reached the endpoint is not: `tests/chaos/retry.rs`).
        assert_eq!(
            retries(&admin),
            4,
            "a POST refused at connect is tried three times"
        );
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(open_cluster_breaker_answers_503_with_retry_after);
async fn open_cluster_breaker_answers_503_with_retry_after() {
    bounded(async {
        let (dead, _refusing) = refusing();
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{dead}\"]\n\
             [clusters.breaker]\nminimum_calls = 4\nsliding_window.type = \"count\"\nsliding_window.size = 4\nwait_in_open = \"60s\"\n\
             [[routes]]\ncluster = \"up\"\n"
        )));
        for _ in 0..4 {
            let (s, _) = get(addr(&gw), "/").await;
            assert_eq!(s, StatusCode::BAD_GATEWAY);
        }
        let req = Request::get(format!("http://{}/", addr(&gw)))
            .body(Full::default())
            .unwrap();
        let (s, headers, body, _) = send(&h1_client(), req).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry_after));
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(reload_keeps_the_state_of_unchanged_clusters);
async fn reload_keeps_the_state_of_unchanged_clusters() {
    bounded(async {
        let (dead, _refusing) = refusing();
        let (ok, _) = named("ok").await;
        let dir = scratch("layers-reload");
        let path = dir.join("gw.toml");
        let text = |timeout: u64, wait: u64| {
            format!(
                "[server]\nworkers = 2\n[admin]\nlisten = \"\"\n[log]\naccess_log = false\n\
                 [timeouts]\nconnect_ms = 300\nrequest_ms = {timeout}\n\
                 [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
                 [[clusters]]\nname = \"dead\"\nendpoints = [\"{dead}\"]\n\
                 [clusters.breaker]\nminimum_calls = 2\nsliding_window.type = \"count\"\nsliding_window.size = 2\nwait_in_open = \"60s\"\n\
                 [[clusters]]\nname = \"ok\"\nendpoints = [\"{ok}\"]\n\
                 [clusters.breaker]\nminimum_calls = 2\nsliding_window.type = \"count\"\nsliding_window.size = 2\nwait_in_open = \"{wait}ms\"\n\
                 [[routes]]\npath_prefix = \"/dead\"\ncluster = \"dead\"\n\
                 [[routes]]\ncluster = \"ok\"\n"
            )
        };
        let gw = start_watching(&path, &text(3000, 1000));
        for _ in 0..2 {
            get(addr(&gw), "/dead").await;
        }
        let (s, _) = get(addr(&gw), "/dead").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "the breaker is open");
        let breaker =
            |gw: &tollgate_gateway::Gateway| gw.state()["clusters"][0]["layers"]["breaker"].clone();
        let before = breaker(&gw);
        assert_eq!(before["state"], "open", "{before}");
        // An unrelated change, then a change to the other cluster's breaker.
        assert_eq!(rewrite(&gw, &path, &text(4000, 1000)), 2);
        rewrite(&gw, &path, &text(4000, 2000));
        // A rebuilt breaker would be closed and have seen no call.
        assert_eq!(
            breaker(&gw),
            before,
            "the unchanged cluster keeps its stack"
        );
        let (s, _) = get(addr(&gw), "/dead").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "and its open breaker");
        let (s, body) = get(addr(&gw), "/").await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "ok"));
        stop(gw).await;
    })
    .await;
}

#[test]
fn bad_layer_fields_are_named() {
    let base = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                [[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n";
    let cases = [
        (
            "[clusters.breaker]\nfailure_rate_threshold = 1.5\n",
            "clusters[0].breaker.failure_rate_threshold",
        ),
        (
            "[clusters.breaker]\nwait_in_open = \"soon\"\n",
            "clusters[0].breaker.wait_in_open",
        ),
        (
            "[clusters.breaker]\nsliding_window = { type = \"count\", size = 0 }\n",
            "clusters[0].breaker.sliding_window.size",
        ),
        (
            "[clusters.pool]\nmin_limit = 10\nmax_limit = 5\n",
            "clusters[0].pool.max_limit",
        ),
        (
            "[clusters.pool]\nalgorithm = \"fifo\"\n",
            "clusters[0].pool.algorithm",
        ),
        (
            "[clusters.health_check]\npath = \"nope\"\n",
            "clusters[0].health_check.path",
        ),
        (
            "[clusters.balance]\noutlier = { max_ejection_share = 2.0 }\n",
            "clusters[0].balance.outlier.max_ejection_share",
        ),
        (
            "[clusters.balance]\nhealth = { interval = \"2s\" }\n",
            "clusters[0].balance.health",
        ),
        (
            "[clusters.balance]\ndefault_rtt_ms = 5\n",
            "clusters[0].balance.default_rtt_ms",
        ),
        (
            "[clusters.retry]\nattempts = 99\n",
            "clusters[0].retry.attempts",
        ),
        (
            "[clusters.retry]\nretry_on = [\"sometimes\"]\n",
            "clusters[0].retry.retry_on[0]",
        ),
    ];
    for (section, field) in cases {
        let text = format!("{base}{section}[[routes]]\ncluster = \"c\"\n");
        let err = Config::parse(&text, "x.toml").unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }
    let err = Config::parse(
        &format!("{base}[[routes]]\ncluster = \"c\"\nadmission = \"nope\"\n"),
        "x.toml",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.toml: routes[0].admission: names unknown admission policy \"nope\""
    );
    let err = Config::parse(
        &format!("{base}[[routes]]\ncluster = \"c\"\nkind = \"batch\"\n"),
        "x.toml",
    )
    .unwrap_err();
    assert_eq!(err.field, "routes[0].batch");
}

#[test]
fn a_route_priority_must_be_a_class_of_its_policy() {
    let text = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                [[admission]]\nname = \"p\"\nclasses = [\"high\", \"low\"]\n\
                [[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n\
                [[routes]]\ncluster = \"c\"\nadmission = \"p\"\npriority = \"urgent\"\n";
    let err = Config::parse(text, "x.toml").unwrap_err();
    assert_eq!(err.field, "routes[0].priority", "{err}");
    assert!(Config::parse(&text.replace("urgent", "high"), "x.toml").is_ok());
    let err = Config::parse(&text.replace("admission = \"p\"\n", ""), "x.toml").unwrap_err();
    assert_eq!(err.field, "routes[0].priority", "{err}");
}

on_both_front_ends!(grpc_requests_get_grpc_statuses_for_rejections);
async fn grpc_requests_get_grpc_statuses_for_rejections() {
    bounded(async {
        let (dead, _refusing) = refusing();
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{dead}\"]\nprotocol = \"h2c\"\n\
             [clusters.breaker]\nminimum_calls = 2\nsliding_window.type = \"count\"\nsliding_window.size = 2\nwait_in_open = \"60s\"\n\
             [[routes]]\ncluster = \"up\"\n"
        )));
        let call = || {
            Request::post(format!("http://{}/pkg.Svc/Method", addr(&gw)))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(bytes::Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap()
        };
        for _ in 0..2 {
            send(&h2_client(), call()).await;
        }
        let (s, headers, body, _) = send(&h2_client(), call()).await;
        assert_eq!(s, StatusCode::OK, "gRPC errors travel in grpc-status");
        assert!(body.is_empty());
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(
            headers["grpc-status"], "14",
            "UNAVAILABLE while the breaker is open"
        );
        let pushback: u64 = headers["grpc-retry-pushback-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pushback > 0 && pushback <= 60_000);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(per_endpoint_counters_count_on_balanced_clusters);
/// `/state`'s per-endpoint counters count on a balanced cluster too: each endpoint's requests
/// are what it served, and they add up to the cluster's; a dead endpoint's failures show.
async fn per_endpoint_counters_count_on_balanced_clusters() {
    bounded(async {
        let (a, seen_a) = named("a").await;
        let (b, seen_b) = named("b").await;
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{a}\", \"{b}\"]\n\
             [clusters.balance]\n\
             [[routes]]\ncluster = \"up\"\n"
        )));
        for _ in 0..40 {
            let (s, _) = get(addr(&gw), "/").await;
            assert_eq!(s, StatusCode::OK);
        }
        let state = gw.state();
        let cluster = &state["clusters"][0];
        let count = |addr: std::net::SocketAddr, what: &str| {
            cluster["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["addr"] == addr.to_string())
                .map(|e| e[what].as_u64().unwrap())
                .unwrap()
        };
        assert_eq!(count(a, "requests"), seen_a.load(Ordering::Relaxed) as u64);
        assert_eq!(count(b, "requests"), seen_b.load(Ordering::Relaxed) as u64);
        assert_eq!(count(a, "requests") + count(b, "requests"), 40, "{cluster}");
        assert_eq!(cluster["requests"], 40, "{cluster}");
        stop(gw).await;

        // A dead endpoint's failures are its own (alone in its cluster, so that the balancer
        // cannot prefer the other one).
        let (dead, _refusing) = refusing();
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{dead}\"]\n\
             [clusters.balance]\n\
             [[routes]]\ncluster = \"up\"\n"
        )));
        for _ in 0..20 {
            let (s, _) = get(addr(&gw), "/").await;
            assert_eq!(s, StatusCode::BAD_GATEWAY);
        }
        let state = gw.state();
        let dead_ep = &state["clusters"][0]["endpoints"][0];
        assert_eq!(dead_ep["requests"], 20, "{dead_ep}");
        assert_eq!(dead_ep["failures"], 20, "{dead_ep}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_full_pool_sheds_with_503_and_its_breaker_stays_closed);
/// A pool at its limit answers 503 to the request above it, at once, with `Retry-After`; the
/// cluster breaker above the pool does not count the shedding as the upstream failing (the
/// layers compose under overload), on either front end: on the fast path the request goes
/// through the cluster's stack itself.
async fn a_full_pool_sheds_with_503_and_its_breaker_stays_closed() {
    bounded(async {
        let addr_up = upstream(|_req| async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            text(StatusCode::OK, "slow")
        })
        .await;
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{addr_up}\"]\n\
             [clusters.breaker]\nminimum_calls = 2\nsliding_window.type = \"count\"\nsliding_window.size = 2\n\
             [clusters.pool]\ninitial_limit = 1\nmin_limit = 1\nmax_limit = 1\n\
             [[routes]]\ncluster = \"up\"\n"
        )));
        let at = addr(&gw);
        for _ in 0..3 {
            let slow = tokio::spawn(async move { get(at, "/").await });
            // The first request holds the pool's one permit while the others come.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let req = Request::get(format!("http://{at}/"))
                .body(Full::default())
                .unwrap();
            let (s, headers, body, _) = send(&h1_client(), req).await;
            assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
            assert!(headers.contains_key("retry-after"), "{headers:?}");
            assert_eq!(slow.await.unwrap(), (StatusCode::OK, "slow".to_owned()));
        }
        let state = gw.state();
        let cluster = &state["clusters"][0];
        assert_eq!(
            cluster["layers"]["breaker"]["state"], "closed",
            "three sheddings are not upstream failures: {cluster}"
        );
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(an_upstream_retry_after_holds_the_open_breaker);
/// An upstream's `503` with `Retry-After: 30` counts as a failure, and the breaker it opens
/// waits at least that long (its own wait is 1 s): the gateway's `503` says so. On the fast
/// path the answer head is read by the gateway's own parser, which hands the field to the
/// layers.
async fn an_upstream_retry_after_holds_the_open_breaker() {
    bounded(async {
        let addr_up = upstream(|_req| async {
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "busy");
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("30"));
            r
        })
        .await;
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{addr_up}\"]\n\
             [clusters.breaker]\nminimum_calls = 2\nsliding_window.type = \"count\"\nsliding_window.size = 2\nwait_in_open = \"1s\"\n\
             [[routes]]\ncluster = \"up\"\n"
        )));
        for _ in 0..2 {
            let (s, body) = get(addr(&gw), "/").await;
            assert_eq!((s, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "busy"));
        }
        let req = Request::get(format!("http://{}/", addr(&gw)))
            .body(Full::default())
            .unwrap();
        let (s, headers, body, _) = send(&h1_client(), req).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_ne!(body, "busy", "the breaker answers, not the upstream");
        let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (20..=30).contains(&retry_after),
            "the upstream's 30 s, not the breaker's 1 s: {retry_after}"
        );
        stop(gw).await;
    })
    .await;
}
