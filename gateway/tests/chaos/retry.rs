//! `[clusters.retry]`: what is retried, where, and how much.

use crate::chaos::*;
use http::{Method, StatusCode};
use std::time::Duration;

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
