//! End-to-end chaos tests of the layered gateway on loopback: upstreams that reset, hang,
//! answer garbage, slow down or fail (the [`chaos::ChaosUpstream`] harness, switched at
//! runtime), against clusters with retry, breaker, endpoint breaker, outlier ejection, active
//! health checks and the adaptive pool; and a reload in the middle of it all.
//!
//! Every client call is bounded ([`chaos::CALL_LIMIT`]) so a request the gateway leaves
//! hanging fails the test instead of stalling it, and every test is bounded as a whole. The
//! only timing assertions are generous bounds.

mod chaos;

use chaos::*;
use http::{Method, StatusCode};
use std::time::Duration;

/// A cluster `name` over `eps` with the extra sections `sections`, and a route `/name` to it.
fn cluster(name: &str, eps: &[&ChaosUpstream], sections: &str, route_extra: &str) -> String {
    let eps: Vec<String> = eps.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "[[clusters]]\nname = \"{name}\"\nendpoints = [{}]\n{sections}\n\
         [[routes]]\npath_prefix = \"/{name}\"\ncluster = \"{name}\"\n{route_extra}\n",
        eps.join(", ")
    )
}

/// An upstream that resets, answers garbage, hangs, or is slower than the route's timeout:
/// every request gets exactly one answer (502 or 504), never a hang, through a layered
/// cluster and through the plain one alike; and once the upstreams heal, the same gateway
/// (with whatever pooled connections it kept) answers 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstreams_get_one_answer_each() {
    bounded(async {
        let cases = [
            ("reset", Mode::Reset, StatusCode::BAD_GATEWAY),
            ("garbage", Mode::Garbage, StatusCode::BAD_GATEWAY),
            ("hang", Mode::Hang, StatusCode::GATEWAY_TIMEOUT),
            ("slow", Mode::Slow, StatusCode::GATEWAY_TIMEOUT),
        ];
        let mut ups = Vec::new();
        let mut rest = String::new();
        for (name, mode, _) in cases {
            let up = ChaosUpstream::start(mode).await;
            up.set_delay(Duration::from_millis(1_500));
            // The layered cluster (a pool section turns the stack on) and a plain one.
            rest += &cluster(
                name,
                &[&up],
                "[clusters.pool]\nmin_limit = 64\nmax_limit = 64\ninitial_limit = 64\n",
                "request_timeout_ms = 400",
            );
            rest += &cluster(
                &format!("plain-{name}"),
                &[&up],
                "",
                "request_timeout_ms = 400",
            );
            ups.push(up);
        }
        let gw = start(config(&rest));
        let base = format!("http://{}", addr(&gw));
        for (name, _, want) in cases {
            for path in [name.to_owned(), format!("plain-{name}")] {
                let replies = burst(&format!("{base}/{path}"), 4, 12).await;
                all_answered(&replies);
                assert_eq!(
                    count(&replies, want),
                    replies.len(),
                    "/{path}: {:?}",
                    replies
                        .iter()
                        .map(|r| r.as_ref().unwrap().status)
                        .collect::<Vec<_>>()
                );
            }
        }
        for up in &ups {
            assert!(up.requests() >= 24, "{} saw {}", up.addr, up.requests());
            up.set(Mode::Ok);
        }
        for (name, _, _) in cases {
            for path in [name.to_owned(), format!("plain-{name}")] {
                let replies = burst(&format!("{base}/{path}"), 4, 8).await;
                all_answered(&replies);
                assert_eq!(count(&replies, StatusCode::OK), 8, "/{path} after healing");
            }
        }
        stop(gw).await;
    })
    .await;
}

/// Two endpoints, one resetting every connection: with `[clusters.retry]` every GET succeeds
/// (its failed try is retried on the good endpoint). On a cluster of the resetting endpoint
/// alone, a GET is tried `1 + attempts` times, while a POST with a body is tried exactly once
/// (its body was streamed upstream and cannot be sent again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_rescue_idempotent_requests_only() {
    bounded(async {
        // The good endpoint is slower than the balancer's first guess for an endpoint it has
        // not measured yet (30 ms), so the latency-aware pick tries the resetting one too.
        let good = ChaosUpstream::start(Mode::Slow).await;
        good.set_delay(Duration::from_millis(40));
        let bad = ChaosUpstream::start(Mode::Reset).await;
        let retry = "[clusters.retry]\nattempts = 3\nbudget_percent = 20\nbudget_min_per_s = 10\n";
        // One failure ejects an endpoint of the pair, so a retry cannot land on the resetting
        // endpoint again: the balancer does not avoid the endpoint a request just failed on,
        // and a fast-failing endpoint looks cheap to it.
        let pair = format!("{retry}[clusters.balance.outlier]\nconsecutive_failures = 1\n");
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
            "a POST with a body is never retried"
        );
        stop(gw).await;
    })
    .await;
}

/// Every endpoint fails: retries stay within the budget, so the upstreams see at most
/// `requests × (1 + budget_percent) + budget_min_per_s × 10 s` tries, not
/// `requests × (1 + attempts)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
        // 20% of the requests plus a floor of 1/s over the 10 s window; a little slack for
        // the window's second boundaries.
        let bound = n + n / 5 + 10 + 4;
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

/// A flaky endpoint (answering 503) next to a good one, with active health checks and
/// endpoint breakers: it is taken out of rotation and gets no traffic, `/state` says so, and
/// once it heals the health checks bring it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_endpoint_ejected_and_readmitted_by_health_checks() {
    bounded(async {
        let good = ChaosUpstream::start(Mode::Ok).await;
        let flaky = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "flaky",
            &[&good, &flaky],
            "[clusters.balance]\npanic_threshold = 10\n\
             [clusters.balance.health]\npath = \"/healthz\"\ninterval_ms = 50\ntimeout_ms = 40\n\
             unhealthy_threshold = 1\nhealthy_threshold = 1\n\
             [clusters.endpoint_breaker]\nminimum_calls = 4\nwindow = 10\nwait_in_open_ms = 300\n\
             half_open_calls = 1\n",
            "",
        );
        let gw = start(config(&rest));
        let url = format!("http://{}/flaky", addr(&gw));

        let ejected = eventually(Duration::from_secs(5), || async {
            out_of_rotation(endpoint(layers(&state(&gw).await, "flaky"), flaky.addr))
        })
        .await;
        assert!(ejected, "never out of rotation: {:#}", state(&gw).await);
        assert!(flaky.health_checks() >= 1);

        let before = flaky.requests();
        let replies = burst(&url, 4, 40).await;
        all_answered(&replies);
        assert_eq!(count(&replies, StatusCode::OK), 40);
        assert!(
            flaky.requests() - before <= 2,
            "an unhealthy endpoint got {} of 40 requests",
            flaky.requests() - before
        );

        flaky.set(Mode::Ok);
        let back = eventually(Duration::from_secs(5), || async {
            !out_of_rotation(endpoint(layers(&state(&gw).await, "flaky"), flaky.addr))
        })
        .await;
        assert!(back, "never readmitted: {:#}", state(&gw).await);
        let readmitted = eventually(Duration::from_secs(10), || async {
            let before = flaky.requests();
            all_answered(&burst(&url, 8, 32).await);
            flaky.requests() > before
        })
        .await;
        assert!(readmitted, "readmitted but never sent traffic");
        stop(gw).await;
    })
    .await;
}

/// The same without health checks: passive outlier ejection and the endpoint breaker take a
/// 503-answering endpoint out; after it heals, the ejection and the breaker's open wait end
/// and traffic reaches it again.
///
/// The good endpoint is the slower one: an endpoint that fails fast looks cheap to a
/// latency-aware balancer (the "black hole"), which is what ejection is for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_endpoint_ejected_passively_and_readmitted() {
    bounded(async {
        let good = ChaosUpstream::start(Mode::Slow).await;
        good.set_delay(Duration::from_millis(40));
        let flaky = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "flaky",
            &[&good, &flaky],
            "[clusters.balance]\npanic_threshold = 10\n\
             [clusters.balance.outlier]\nconsecutive_failures = 3\nbase_ejection_ms = 3000\n\
             max_ejection_ms = 3000\n\
             [clusters.endpoint_breaker]\nminimum_calls = 4\nwindow = 10\n\
             wait_in_open_ms = 3000\nhalf_open_calls = 1\n",
            "",
        );
        let gw = start(config(&rest));
        let url = format!("http://{}/flaky", addr(&gw));

        let replies = burst(&url, 4, 40).await;
        all_answered(&replies);
        assert_eq!(
            count(&replies, StatusCode::OK) + count(&replies, StatusCode::SERVICE_UNAVAILABLE),
            40
        );
        let s = state(&gw).await;
        assert!(
            out_of_rotation(endpoint(layers(&s, "flaky"), flaky.addr)),
            "still in rotation: {s:#}"
        );
        // While it is out (3 s), it gets (almost) nothing.
        let before = flaky.requests();
        let replies = burst(&url, 4, 20).await;
        all_answered(&replies);
        assert!(
            flaky.requests() - before <= 2,
            "an ejected endpoint got {} of 20 requests",
            flaky.requests() - before
        );

        flaky.set(Mode::Ok);
        let readmitted = eventually(Duration::from_secs(15), || async {
            let before = flaky.requests();
            all_answered(&burst(&url, 8, 32).await);
            flaky.requests() > before
        })
        .await;
        assert!(readmitted, "never readmitted: {:#}", state(&gw).await);
        stop(gw).await;
    })
    .await;
}

/// A cluster breaker over an upstream that starts failing: once the failure rate passes the
/// threshold the breaker opens, answers 503 with `Retry-After` without touching the upstream,
/// and closes again after the upstream heals and the open wait ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_breaker_trips_and_recovers() {
    bounded(async {
        let up = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "brk",
            &[&up],
            "[clusters.breaker]\nfailure_rate = 50\nminimum_calls = 5\nwindow = 10\n\
             wait_in_open_ms = 600\nhalf_open_calls = 1\n",
            "",
        );
        let gw = start(config(&rest));
        let url = format!("http://{}/brk", addr(&gw));
        let client = client();
        let mut open_reply = None;
        for _ in 0..30 {
            let r = get(&client, &url).await;
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
            if r.headers.contains_key(http::header::RETRY_AFTER) {
                open_reply = Some(r);
                break;
            }
        }
        let open_reply = open_reply.expect("the breaker never answered with Retry-After");
        assert!(
            !open_reply.body.starts_with("unavailable from"),
            "a breaker rejection came from upstream: {}",
            open_reply.body
        );
        let s = state(&gw).await;
        assert_eq!(layers(&s, "brk")["breaker"]["state"], "open", "{s:#}");
        // While open, requests are refused without reaching the upstream.
        let before = up.requests();
        for _ in 0..10 {
            let r = get(&client, &url).await;
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.headers.contains_key(http::header::RETRY_AFTER));
        }
        assert!(
            up.requests() - before <= 1,
            "an open breaker let requests through"
        );

        up.set(Mode::Ok);
        let closed = eventually(Duration::from_secs(10), || async {
            get(&client, &url).await.status == StatusCode::OK
        })
        .await;
        assert!(closed, "the breaker never closed: {:#}", state(&gw).await);
        stop(gw).await;
    })
    .await;
}

/// A slow upstream and many requests at once against `[clusters.pool]`: what the limit does
/// not admit is refused at once with 503, every request gets an answer, and the upstream
/// never holds more than the pool's maximum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limit_rejects_the_excess() {
    bounded(async {
        let up = ChaosUpstream::start(Mode::Slow).await;
        up.set_delay(Duration::from_millis(300));
        let rest = cluster(
            "pool",
            &[&up],
            "[clusters.pool]\nalgorithm = \"aimd\"\nmin_limit = 2\nmax_limit = 4\n\
             initial_limit = 2\n",
            "",
        );
        let gw = start(config(&rest));
        let replies = burst(&format!("http://{}/pool", addr(&gw)), 24, 24).await;
        all_answered(&replies);
        let (ok, shed) = (
            count(&replies, StatusCode::OK),
            count(&replies, StatusCode::SERVICE_UNAVAILABLE),
        );
        assert_eq!(ok + shed, 24, "other answers: {replies:?}");
        assert!(ok >= 2, "only {ok} admitted");
        assert!(
            shed >= 1,
            "nothing shed at 24 concurrent over a limit of at most 4"
        );
        rejections_say_retry_after(&replies);
        assert!(
            up.max_in_flight() <= 4,
            "upstream held {}",
            up.max_in_flight()
        );
        let s = state(&gw).await;
        let limit = layers(&s, "pool")["pool"]["limit"].as_u64();
        assert!(limit.is_some_and(|l| (2..=4).contains(&l)), "{s:#}");
        stop(gw).await;
    })
    .await;
}

/// Reloads while clients keep sending: first an unrelated timeout changes, then a section of
/// the loaded cluster. No request fails or goes unanswered, and the open breaker of an
/// unchanged cluster stays open across both reloads (its state was kept, not rebuilt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_during_load_loses_nothing() {
    bounded(async {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let busy = ChaosUpstream::start(Mode::Ok).await;
        let broken = ChaosUpstream::start(Mode::Unavailable).await;
        let file = |header_read_ms: u64, max_limit: u32| {
            config_text(
                &(cluster(
                    "busy",
                    &[&busy],
                    &format!(
                        "[clusters.pool]\nmin_limit = 64\ninitial_limit = 64\n\
                         max_limit = {max_limit}\n"
                    ),
                    "",
                ) + &cluster(
                    "broken",
                    &[&broken],
                    "[clusters.breaker]\nminimum_calls = 3\nwindow = 5\n\
                     wait_in_open_ms = 60000\n",
                    "",
                )),
                header_read_ms,
            )
        };
        let dir = scratch("chaos_reload");
        let path = dir.join("gw.toml");
        std::fs::write(&path, file(2_000, 128)).unwrap();
        let gw = start_watching(&path);
        let base = format!("http://{}", addr(&gw));

        // Trip the breaker of the cluster that will not change.
        let client = client();
        for _ in 0..5 {
            get(&client, &format!("{base}/broken")).await;
        }
        let s = state(&gw).await;
        assert_eq!(layers(&s, "broken")["breaker"]["state"], "open", "{s:#}");
        let broken_seen = broken.requests();

        let stop_load = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for _ in 0..4 {
            let (stop_load, url) = (stop_load.clone(), format!("{base}/busy"));
            load.push(tokio::spawn(async move {
                let client = chaos::client();
                let mut replies = Vec::new();
                // Relaxed: a stop flag; one more request after it is set is fine.
                while !stop_load.load(Ordering::Relaxed) {
                    replies.push(call(&client, Method::GET, &url, None).await);
                }
                replies
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // 1: an unrelated timeout.
        std::fs::write(&path, file(3_000, 128)).unwrap();
        gw.reload().expect("reload 1 applies");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // 2: the busy cluster's own section.
        std::fs::write(&path, file(3_000, 256)).unwrap();
        gw.reload().expect("reload 2 applies");
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_load.store(true, Ordering::Relaxed);
        let mut replies = Vec::new();
        for t in load {
            replies.extend(t.await.unwrap());
        }
        assert!(replies.len() >= 8, "too little load: {}", replies.len());
        all_answered(&replies);
        assert_eq!(
            count(&replies, StatusCode::OK),
            replies.len(),
            "non-200 answers during reloads"
        );

        let s = state(&gw).await;
        assert!(s["generation"].as_u64().unwrap() >= 3, "{s:#}");
        assert_eq!(
            layers(&s, "busy")["pool"]["limit"]
                .as_u64()
                .map(|l| l <= 256),
            Some(true),
            "{s:#}"
        );
        assert_eq!(
            layers(&s, "broken")["breaker"]["state"],
            "open",
            "the unchanged cluster's breaker was reset by a reload: {s:#}"
        );
        let r = get(&client, &format!("{base}/broken")).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers.contains_key(http::header::RETRY_AFTER));
        assert_eq!(
            broken.requests(),
            broken_seen,
            "the open breaker let one through"
        );
        stop(gw).await;
    })
    .await;
}

/// A reload that changes only `[timeouts] idle_ms` (how long idle client and pooled upstream
/// connections are kept) touches no cluster section: an open cluster breaker stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "product bug: ClusterLayers::build keys its reuse on the global connect/idle \
            timeouts, so any change to them rebuilds every cluster stack and resets its state"]
async fn reload_of_the_idle_timeout_keeps_breaker_state() {
    bounded(async {
        let broken = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "broken",
            &[&broken],
            "[clusters.breaker]\nminimum_calls = 3\nwindow = 5\nwait_in_open_ms = 60000\n",
            "",
        );
        let dir = scratch("chaos_reload_idle");
        let path = dir.join("gw.toml");
        std::fs::write(&path, config_text_idle(&rest, 2_000, 10_000)).unwrap();
        let gw = start_watching(&path);
        let url = format!("http://{}/broken", addr(&gw));
        let client = client();
        for _ in 0..5 {
            get(&client, &url).await;
        }
        let s = state(&gw).await;
        assert_eq!(layers(&s, "broken")["breaker"]["state"], "open", "{s:#}");
        std::fs::write(&path, config_text_idle(&rest, 2_000, 20_000)).unwrap();
        gw.reload().expect("reload applies");
        let s = state(&gw).await;
        assert_eq!(
            layers(&s, "broken")["breaker"]["state"],
            "open",
            "changing idle_ms reset the breaker: {s:#}"
        );
        stop(gw).await;
    })
    .await;
}

/// Overload at ten times capacity with four priority classes: an admission limit of 4 over an
/// upstream taking 40 ms, and 40 clients at once (2 critical, 6 high, 12 normal, 20 low, the
/// class named by `x-priority`). The critical class keeps at least 99% success, every request
/// of every class gets an answer (200, or 503 for the shed), and the low class is the one shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_keeps_the_top_class_served() {
    bounded(async {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        let up = ChaosUpstream::start(Mode::Slow).await;
        up.set_delay(Duration::from_millis(40));
        let rest = format!(
            "[[admission]]\nname = \"edge\"\nlimit = 4\nclass_header = \"x-priority\"\n\
             classes = [\"critical\", \"high\", \"normal\", \"low\"]\n\
             max_queued = 64\nqueue_timeout_ms = 200\n{}",
            cluster("busy", &[&up], "", "admission = \"edge\"")
        );
        let gw = start(config(&rest));
        let url = format!("http://{}/busy", addr(&gw));
        let done = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (class, clients, requests) in [
            ("critical", 2, Some(50)),
            ("high", 6, None),
            ("normal", 12, None),
            ("low", 20, None),
        ] {
            for _ in 0..clients {
                let (url, done) = (url.clone(), done.clone());
                tasks.push(tokio::spawn(async move {
                    let client = client();
                    let mut replies = Vec::new();
                    // Relaxed: a stop flag; one more request after it is set is fine.
                    while requests.map_or(!done.load(Ordering::Relaxed), |n| replies.len() < n) {
                        let req = http::Request::get(&url)
                            .header("x-priority", class)
                            .body(Default::default())
                            .unwrap();
                        let reply = send(&client, req).await;
                        if reply.as_ref().is_ok_and(|r| r.status != StatusCode::OK) {
                            // Back off a little so shed clients do not spin the CPU.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        replies.push(reply);
                    }
                    (class, replies)
                }));
            }
        }
        let mut by_class: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
        let mut critical_left = 2;
        for t in tasks {
            let (class, replies) = t.await.expect("client task");
            by_class.entry(class).or_default().extend(replies);
            if class == "critical" {
                critical_left -= 1;
                if critical_left == 0 {
                    done.store(true, Ordering::Relaxed);
                }
            }
        }
        let mut summary = String::new();
        for (class, replies) in &by_class {
            all_answered(replies);
            let ok = count(replies, StatusCode::OK);
            let shed = count(replies, StatusCode::SERVICE_UNAVAILABLE);
            summary += &format!("{class}: {ok} ok, {shed} shed of {}; ", replies.len());
            assert_eq!(
                ok + shed,
                replies.len(),
                "{class}: other answers ({summary})"
            );
            rejections_say_retry_after(replies);
        }
        let critical = &by_class["critical"];
        let ok = count(critical, StatusCode::OK);
        assert!(
            ok * 100 >= critical.len() * 99,
            "critical below 99%: {summary}"
        );
        let low = &by_class["low"];
        assert!(
            count(low, StatusCode::SERVICE_UNAVAILABLE) > 0,
            "nothing shed at 10x: {summary}"
        );
        stop(gw).await;
    })
    .await;
}

/// A hung endpoint next to a good one, with a per-try timeout: a GET whose try hangs is cut
/// at `per_try_timeout_ms` and retried, so every GET is answered 200 well inside the route's
/// overall timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

/// A reload that turns a cluster's health checks on starts them (the control thread starts a
/// new stack's checks within about a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_starts_health_checks() {
    bounded(async {
        let up = ChaosUpstream::start(Mode::Ok).await;
        let (with_health, without) = health_configs(&up);
        let dir = scratch("chaos_reload_health_on");
        let path = dir.join("gw.toml");
        std::fs::write(&path, config_text(&without, 2_000)).unwrap();
        let gw = start_watching(&path);
        let url = format!("http://{}/hc", addr(&gw));
        assert_eq!(get(&client(), &url).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(up.health_checks(), 0, "checks without a health section");

        std::fs::write(&path, config_text(&with_health, 2_000)).unwrap();
        gw.reload().expect("reload applies");
        let started =
            eventually(Duration::from_secs(5), || async { up.health_checks() >= 3 }).await;
        assert!(started, "health checks did not start after the reload");
        assert_eq!(get(&client(), &url).await.status, StatusCode::OK);
        stop(gw).await;
    })
    .await;
}

/// A cluster `hc` over `up` with health checks every 20 ms, and the same without them.
fn health_configs(up: &ChaosUpstream) -> (String, String) {
    (
        cluster(
            "hc",
            &[up],
            "[clusters.balance]\n[clusters.balance.health]\ninterval_ms = 20\ntimeout_ms = 20\n",
            "",
        ),
        cluster("hc", &[up], "[clusters.balance]\n", ""),
    )
}

/// A reload that turns a cluster's health checks off stops them, even while the gateway is
/// idle: the replaced stack's checker must not keep probing in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "product bug: each worker's thread-local snapshot (proxy.rs `LOCAL`) keeps the \
            replaced stack, and its health checker, alive until that worker serves a request"]
async fn reload_stops_replaced_health_checks() {
    bounded(async {
        let up = ChaosUpstream::start(Mode::Ok).await;
        let (with_health, without) = health_configs(&up);
        let dir = scratch("chaos_reload_health_off");
        let path = dir.join("gw.toml");
        std::fs::write(&path, config_text(&with_health, 2_000)).unwrap();
        let gw = start_watching(&path);
        let url = format!("http://{}/hc", addr(&gw));
        // Fresh connections, so that every worker serves one.
        for _ in 0..16 {
            assert_eq!(get(&client(), &url).await.status, StatusCode::OK);
        }
        let checking =
            eventually(Duration::from_secs(5), || async { up.health_checks() >= 3 }).await;
        assert!(checking, "no health checks: {}", up.health_checks());

        std::fs::write(&path, config_text(&without, 2_000)).unwrap();
        gw.reload().expect("reload applies");
        // Let a check already under way land, then count.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = up.health_checks();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            up.health_checks() <= after + 1,
            "health checks went on after the reload turned them off: {} -> {}",
            after,
            up.health_checks()
        );
        stop(gw).await;
    })
    .await;
}

/// What a cluster learned survives a reload that leaves its sections alone: an AIMD pool
/// limit driven down by failures, and an open endpoint breaker, are the same after another
/// cluster's section changes; and a reload that only edits the endpoint list keeps the stack
/// too (the new endpoint joins it, the removed one stops getting traffic).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_learned_state_and_swaps_endpoints_in_place() {
    bounded(async {
        let failing = ChaosUpstream::start(Mode::Unavailable).await;
        // `a` answers in 40 ms: slower than the balancer's first guess for an endpoint it has
        // not measured (30 ms), so the added `b` is picked at once. (With `a` answering in
        // 1 ms and light load, `b` waits seconds for its first request.)
        let (a, b) = (
            ChaosUpstream::start(Mode::Slow).await,
            ChaosUpstream::start(Mode::Ok).await,
        );
        a.set_delay(Duration::from_millis(40));
        let learned = cluster(
            "learned",
            &[&failing],
            "[clusters.pool]\nalgorithm = \"aimd\"\nmin_limit = 2\nmax_limit = 40\n\
             initial_limit = 40\n",
            "",
        ) + &cluster(
            "tripped",
            &[&failing],
            "[clusters.endpoint_breaker]\nminimum_calls = 5\nwindow = 10\n\
             wait_in_open_ms = 60000\n",
            "",
        );
        let file = |other_sections: &str, eps: &[&ChaosUpstream]| {
            config_text(
                &(learned.clone() + &cluster("other", eps, other_sections, "")),
                2_000,
            )
        };
        let dir = scratch("chaos_reload_learned");
        let path = dir.join("gw.toml");
        std::fs::write(&path, file("[clusters.breaker]\n", &[&a])).unwrap();
        let gw = start_watching(&path);
        let base = format!("http://{}", addr(&gw));

        // Failures lower the limit when the limiter's window closes (10 samples or 1 s).
        let lowered = eventually(Duration::from_secs(10), || async {
            all_answered(&burst(&format!("{base}/learned"), 4, 20).await);
            let s = state(&gw).await;
            layers(&s, "learned")["pool"]["limit"]
                .as_u64()
                .is_some_and(|l| l < 40)
        })
        .await;
        all_answered(&burst(&format!("{base}/tripped"), 1, 10).await);
        let before = state(&gw).await;
        let limit = layers(&before, "learned")["pool"]["limit"].as_u64();
        let breaker = endpoint(layers(&before, "tripped"), failing.addr)["breaker"].clone();
        assert!(lowered, "no failure lowered the limit: {before:#}");
        assert_eq!(breaker, "open", "{before:#}");

        // Another cluster's section changes, then only its endpoint list.
        std::fs::write(
            &path,
            file("[clusters.breaker]\nminimum_calls = 7\n", &[&a]),
        )
        .unwrap();
        gw.reload().expect("reload 1 applies");
        let other_calls = |s: &serde_json::Value| layers(s, "other")["breaker"]["calls"].as_u64();
        let replies = burst(&format!("{base}/other"), 2, 10).await;
        assert_eq!(count(&replies, StatusCode::OK), 10);
        let calls = other_calls(&state(&gw).await);
        std::fs::write(
            &path,
            file("[clusters.breaker]\nminimum_calls = 7\n", &[&a, &b]),
        )
        .unwrap();
        gw.reload().expect("reload 2 applies");
        let after = state(&gw).await;
        assert_eq!(
            layers(&after, "learned")["pool"]["limit"].as_u64(),
            limit,
            "{after:#}"
        );
        assert_eq!(
            endpoint(layers(&after, "tripped"), failing.addr)["breaker"],
            breaker,
            "{after:#}"
        );
        assert!(
            other_calls(&after) >= calls,
            "an endpoint-only change rebuilt the stack: {after:#}"
        );
        let joined = eventually(Duration::from_secs(5), || async {
            all_answered(&burst(&format!("{base}/other"), 4, 16).await);
            b.requests() > 0
        })
        .await;
        assert!(
            joined,
            "the added endpoint got no traffic: {:#}",
            state(&gw).await
        );

        std::fs::write(
            &path,
            file("[clusters.breaker]\nminimum_calls = 7\n", &[&b]),
        )
        .unwrap();
        gw.reload().expect("reload 3 applies");
        let a_seen = a.requests();
        let replies = burst(&format!("{base}/other"), 4, 24).await;
        assert_eq!(count(&replies, StatusCode::OK), 24);
        assert_eq!(a.requests(), a_seen, "a removed endpoint still got traffic");
        stop(gw).await;
    })
    .await;
}

/// An upstream that sends its answer's head and then stalls in the middle of the body: the
/// client is not left waiting; the gateway cuts the answer (the client sees the body fail)
/// within a generous bound, on the layered and the plain path alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "product bug: nothing times out the upstream's response body; one that stalls after \
            the head hangs the client (seen > 30 s; idle_ms does not cut it), both paths"]
async fn a_body_stalled_upstream_does_not_hang_the_client() {
    bounded(async {
        let up = ChaosUpstream::start(Mode::StallBody).await;
        let rest = cluster(
            "stall",
            &[&up],
            "[clusters.pool]\nmin_limit = 8\nmax_limit = 8\ninitial_limit = 8\n",
            "request_timeout_ms = 400",
        ) + &cluster("plain-stall", &[&up], "", "request_timeout_ms = 400");
        // Idle connections close after 1 s here, whichever timeout a fix builds on.
        let text = config_text_idle(&rest, 2_000, 1_000);
        let gw = start(tollgate::gateway::config::Config::parse(&text, "chaos.toml").unwrap());
        for path in ["stall", "plain-stall"] {
            let url = format!("http://{}/{path}", addr(&gw));
            // `call` panics if no outcome comes within CALL_LIMIT.
            let r = call(&client(), Method::GET, &url, None).await;
            let err = r.expect_err("a 100-byte body with 10 bytes sent cannot complete");
            assert!(err.starts_with("body"), "/{path}: {err}");
        }
        assert!(up.requests() >= 2);
        stop(gw).await;
    })
    .await;
}

/// HTTP/2 clients multiplex many streams on one connection: when some streams' upstreams
/// reset, answer garbage or hang, only those streams fail (502/504), the others on the same
/// connection succeed, and the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_fail_alone() {
    bounded(async {
        let good = ChaosUpstream::start(Mode::Ok).await;
        let reset = ChaosUpstream::start(Mode::Reset).await;
        let garbage = ChaosUpstream::start(Mode::Garbage).await;
        let hang = ChaosUpstream::start(Mode::Hang).await;
        let retry = "[clusters.retry]\nattempts = 1\n";
        let timeout = "request_timeout_ms = 400";
        let rest = cluster("good", &[&good], retry, timeout)
            + &cluster("reset", &[&reset], retry, timeout)
            + &cluster("garbage", &[&garbage], retry, timeout)
            + &cluster("hang", &[&hang], retry, timeout);
        let gw = start(config(&rest));
        let client = h2_client();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (path, want) = [
                ("good", StatusCode::OK),
                ("reset", StatusCode::BAD_GATEWAY),
                ("garbage", StatusCode::BAD_GATEWAY),
                ("hang", StatusCode::GATEWAY_TIMEOUT),
            ][i % 4];
            let (client, url) = (client.clone(), format!("http://{}/{path}", addr(&gw)));
            tasks.push(tokio::spawn(async move {
                let req = http::Request::get(&url)
                    .version(http::Version::HTTP_2)
                    .body(Default::default())
                    .unwrap();
                (path, want, send(&client, req).await)
            }));
        }
        for t in tasks {
            let (path, want, reply) = t.await.unwrap();
            let reply = reply.unwrap_or_else(|e| panic!("/{path}: stream failed: {e}"));
            assert_eq!(reply.status, want, "/{path}: {}", reply.body);
        }
        let req = http::Request::get(format!("http://{}/good", addr(&gw)))
            .version(http::Version::HTTP_2)
            .body(Default::default())
            .unwrap();
        let after = send(&client, req)
            .await
            .expect("the connection is still usable");
        assert_eq!(after.status, StatusCode::OK);
        stop(gw).await;
    })
    .await;
}
