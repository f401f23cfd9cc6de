//! A flaky endpoint taken out of rotation and readmitted: active health checks, outlier
//! ejection, endpoint breakers.

use crate::chaos::*;
use http::StatusCode;
use std::time::Duration;

on_both_front_ends!(flaky_endpoint_ejected_and_readmitted_by_health_checks);
/// A flaky endpoint (answering 503) next to a good one, with active health checks and
/// endpoint breakers: it is taken out of rotation and gets no traffic, `/state` says so, and
/// once it heals the health checks bring it back.
async fn flaky_endpoint_ejected_and_readmitted_by_health_checks() {
    bounded(async {
        let good = ChaosUpstream::start(Mode::Ok).await;
        let flaky = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "flaky",
            &[&good, &flaky],
            "[clusters.balance]\npanic_threshold = 0.1\n\
             [clusters.health_check]\npath = \"/healthz\"\n[clusters.balance.health]\ninterval = \"50ms\"\ntimeout = \"40ms\"\n\
             unhealthy_threshold = 1\nhealthy_threshold = 1\n\
             [clusters.endpoint_breaker]\nminimum_calls = 4\nsliding_window.type = \"count\"\nsliding_window.size = 10\nwait_in_open = \"300ms\"\n\
             permitted_calls_in_half_open = 1\n",
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

on_both_front_ends!(flaky_endpoint_ejected_passively_and_readmitted);
/// The same without health checks: passive outlier ejection and the endpoint breaker take a
/// 503-answering endpoint out; after it heals, the ejection and the breaker's open wait end
/// and traffic reaches it again.
///
/// The good endpoint is the slower one: an endpoint that fails fast looks cheap to a
/// latency-aware balancer (the "black hole"), which is what ejection is for.
async fn flaky_endpoint_ejected_passively_and_readmitted() {
    bounded(async {
        let good = ChaosUpstream::start(Mode::Slow).await;
        good.set_delay(Duration::from_millis(40));
        let flaky = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "flaky",
            &[&good, &flaky],
            "[clusters.balance]\npanic_threshold = 0.1\n\
             [clusters.balance.outlier]\nconsecutive_failures = 3\nbase_ejection_time = \"3s\"\n\
             max_ejection_time = \"3s\"\n\
             [clusters.endpoint_breaker]\nminimum_calls = 4\nsliding_window.type = \"count\"\nsliding_window.size = 10\n\
             wait_in_open = \"3s\"\npermitted_calls_in_half_open = 1\n",
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
