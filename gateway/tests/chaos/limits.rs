//! Shedding: the cluster breaker, the pool limit, and priority admission at ten times capacity.

use crate::chaos::*;
use http::StatusCode;
use std::time::Duration;

on_both_front_ends!(cluster_breaker_trips_and_recovers);
/// A cluster breaker over an upstream that starts failing: once the failure rate passes the
/// threshold the breaker opens, answers 503 with `Retry-After` without touching the upstream,
/// and closes again after the upstream heals and the open wait ends.
async fn cluster_breaker_trips_and_recovers() {
    bounded(async {
        let up = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "brk",
            &[&up],
            "[clusters.breaker]\nfailure_rate_threshold = 0.5\nminimum_calls = 5\nsliding_window.type = \"count\"\nsliding_window.size = 10\n\
             wait_in_open = \"600ms\"\npermitted_calls_in_half_open = 1\n",
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

on_both_front_ends!(pool_limit_rejects_the_excess);
/// A slow upstream and many requests at once against `[clusters.pool]`: what the limit does
/// not admit is refused at once with 503, every request gets an answer, and the upstream
/// never holds more than the pool's maximum.
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

on_both_front_ends!(overload_keeps_the_top_class_served);
/// Overload at ten times capacity with four priority classes: an admission limit of 4 over an
/// upstream taking 40 ms, and 40 clients at once (2 critical, 6 high, 12 normal, 20 low, the
/// class named by `x-priority`). The critical class keeps at least 99% success, every request
/// of every class gets an answer (200, or 503 for the shed), and the low class is the one shed.
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
        // Memory stays bounded: what the gateway holds is at most the policy's limit in flight
        // plus `max_queued` waiting, sampled all through the overload.
        let admin = gw.state_view();
        let sampler = {
            let done = done.clone();
            tokio::spawn(async move {
                let (mut most_queued, mut most_in_flight) = (0u64, 0u64);
                // Relaxed: a stop flag.
                while !done.load(Ordering::Relaxed) {
                    let state = admin.state();
                    let policy = &state["admission"][0];
                    most_queued = most_queued.max(policy["queued"].as_u64().unwrap());
                    most_in_flight = most_in_flight.max(policy["in_flight"].as_u64().unwrap());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (most_queued, most_in_flight)
            })
        };
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
        let (most_queued, most_in_flight) = sampler.await.expect("sampler");
        assert!(
            most_queued <= 64,
            "queue grew past max_queued: {most_queued}"
        );
        assert!(
            most_in_flight <= 4,
            "admitted past the limit: {most_in_flight}"
        );

        stop(gw).await;
    })
    .await;
}
