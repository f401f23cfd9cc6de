//! Reloads under load and what survives them.

use crate::chaos::*;
use http::{Method, StatusCode};
use std::time::Duration;

on_both_front_ends!(reload_during_load_loses_nothing);
/// Reloads while clients keep sending: first an unrelated timeout changes, then a section of
/// the loaded cluster. No request fails or goes unanswered, and the open breaker of an
/// unchanged cluster stays open across both reloads (its state was kept, not rebuilt).
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
                    "[clusters.breaker]\nminimum_calls = 3\nsliding_window.type = \"count\"\nsliding_window.size = 5\n\
                     wait_in_open = \"60s\"\n",
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
                let client = crate::chaos::client();
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

on_both_front_ends!(reload_of_the_idle_timeout_keeps_breaker_state);
/// A reload that changes only `[timeouts] idle_ms` (how long idle client and pooled upstream
/// connections are kept) touches no cluster section: an open cluster breaker stays open.
async fn reload_of_the_idle_timeout_keeps_breaker_state() {
    bounded(async {
        let broken = ChaosUpstream::start(Mode::Unavailable).await;
        let rest = cluster(
            "broken",
            &[&broken],
            "[clusters.breaker]\nminimum_calls = 3\nsliding_window.type = \"count\"\nsliding_window.size = 5\nwait_in_open = \"60s\"\n",
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

on_both_front_ends!(reload_keeps_learned_state_and_swaps_endpoints_in_place);
/// What a cluster learned survives a reload that leaves its sections alone: an AIMD pool
/// limit driven down by failures, and an open endpoint breaker, are the same after another
/// cluster's section changes; and a reload that only edits the endpoint list keeps the stack
/// too (the new endpoint joins it, the removed one stops getting traffic).
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
            "[clusters.endpoint_breaker]\nminimum_calls = 5\nsliding_window.type = \"count\"\nsliding_window.size = 10\n\
             wait_in_open = \"60s\"\n",
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

on_both_front_ends!(reload_starts_health_checks);
/// A reload that turns a cluster's health checks on starts them (the control thread starts a
/// new stack's checks within about a second).
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
            "[clusters.balance]\n[clusters.health_check]\npath = \"/healthz\"\n[clusters.balance.health]\ninterval = \"20ms\"\ntimeout = \"20ms\"\n",
            "",
        ),
        cluster("hc", &[up], "[clusters.balance]\n", ""),
    )
}

on_both_front_ends!(reload_stops_replaced_health_checks);
/// A reload that turns a cluster's health checks off stops them, even while the gateway is
/// idle: the replaced stack's checker must not keep probing in the background.
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
