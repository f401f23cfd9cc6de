//! `[routes.retry]` end to end on loopback: a route's own retries in place of its cluster's
//! (a route that retries over a cluster that does not, a route that turns its cluster's
//! retries off), a POST body replayed on the override over HTTP/1.1 and h2c, a gRPC call
//! retried after UNAVAILABLE, the override's budget and counters kept across reloads, an
//! override drawing on its cluster's budget (and following it across reloads), and bad
//! sections refused naming the field.
//!
//! The upstream answers the first request for each path 503 and every later one 200 (echoing
//! the body it read), so whether a request was retried shows in its status and in how many
//! tries the upstream saw for its path.

#[macro_use]
mod common;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tollgate_gateway::config::Config;

/// What the upstream saw: per path, the body of each try.
type Seen = Arc<Mutex<HashMap<String, Vec<Bytes>>>>;

/// An upstream that answers a path's first request 503 and the others 200 with the body.
async fn fails_first() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let addr = upstream(move |req| {
        let log = log.clone();
        async move {
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let tries = {
                let mut log = log.lock().unwrap();
                let tries = log.entry(path).or_default();
                tries.push(body.clone());
                tries.len()
            };
            if tries == 1 {
                text(StatusCode::SERVICE_UNAVAILABLE, "try again")
            } else {
                text(StatusCode::OK, body)
            }
        }
    })
    .await;
    (addr, seen)
}

fn tries(seen: &Seen, path: &str) -> usize {
    seen.lock().unwrap().get(path).map_or(0, Vec::len)
}

/// Retries on a 503, quickly.
const RETRY_503: &str = "retry_on = [\"503\"]\nbackoff = { base = \"1ms\", max = \"5ms\" }\n";

/// Two clusters on `up`: `plain` without retries, `retrying` with them; routes `/on` (its own
/// retries over `plain`), `/off` (retries off over `retrying`), `/cluster` (the cluster's
/// retries) and `/none` (no retries anywhere).
fn routes(up: SocketAddr, on_attempts: u32) -> String {
    format!(
        "[[clusters]]\nname = \"plain\"\nendpoints = [\"{up}\"]\n\
         [[clusters]]\nname = \"retrying\"\nendpoints = [\"{up}\"]\n\
         [clusters.retry]\nattempts = 2\n{RETRY_503}\
         [[routes]]\npath_prefix = \"/on\"\ncluster = \"plain\"\n\
         [routes.retry]\nattempts = {on_attempts}\nnon_idempotent = true\n{RETRY_503}\
         [[routes]]\npath_prefix = \"/off\"\ncluster = \"retrying\"\n\
         [routes.retry]\nattempts = 0\n\
         [[routes]]\npath_prefix = \"/cluster\"\ncluster = \"retrying\"\n\
         [[routes]]\npath_prefix = \"/none\"\ncluster = \"plain\"\n"
    )
}

/// The override's counters on route `i` (its only cluster).
fn route_retry(state: &serde_json::Value, i: usize) -> serde_json::Value {
    state["routes"][i]["retry"][0]["retry"].clone()
}

on_both_front_ends!(a_route_retries_where_its_cluster_does_not_and_turns_off_what_it_does);
async fn a_route_retries_where_its_cluster_does_not_and_turns_off_what_it_does() {
    bounded(async {
        let (up, seen) = fails_first().await;
        let mut cfg = config(&routes(up, 2));
        cfg.admin.listen = "127.0.0.1:0".into();
        let gw = start(cfg);
        let at = addr(&gw);
        for (path, status, n) in [
            // The route's own retries over a cluster without any.
            ("/on/a", StatusCode::OK, 2),
            // The cluster's retries, turned off by the route.
            ("/off/a", StatusCode::SERVICE_UNAVAILABLE, 1),
            // The same cluster's retries where the route says nothing.
            ("/cluster/a", StatusCode::OK, 2),
            // Neither retries.
            ("/none/a", StatusCode::SERVICE_UNAVAILABLE, 1),
        ] {
            let (s, body) = get(at, path).await;
            assert_eq!(s, status, "{path}: {body}");
            assert_eq!(tries(&seen, path), n, "{path}");
        }
        let state = gw.state();
        let on = route_retry(&state, 0);
        assert_eq!(on["retries"], 1, "{on}");
        assert_eq!(on["budget"]["requests"], 1, "{on}");
        // `attempts = 0` has no retry layer, so nothing to count.
        assert_eq!(state["routes"][1]["retry"][0]["cluster"], "retrying");
        assert!(route_retry(&state, 1).is_null(), "{state}");
        // The override's request never reached the cluster's own retry layer.
        let cluster = &state["clusters"][1]["layers"]["retry"];
        assert_eq!(cluster["retries"], 1, "{cluster}");
        assert_eq!(cluster["budget"]["requests"], 1, "{cluster}");
        // `/metrics` counts the override's retries under its route and cluster.
        let (_, metrics) = get(gw.admin_addr().unwrap(), "/metrics").await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("tollgate_route_retries_total{"))
            .unwrap_or_else(|| panic!("no route retries in\n{metrics}"));
        assert!(
            line.contains("route=\"* /on\"") && line.contains("cluster=\"plain\""),
            "{line}"
        );
        assert!(line.ends_with(" 1"), "{line}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_post_body_is_replayed_on_the_override);
async fn a_post_body_is_replayed_on_the_override() {
    bounded(async {
        let (up, seen) = fails_first().await;
        let gw = start(config(&routes(up, 2)));
        let at = addr(&gw);
        for (proto, client) in [("h1", h1_client()), ("h2", h2_client())] {
            let payload = Bytes::from(format!("{proto}:{}", "x".repeat(3000)));
            for (path, status) in [
                (format!("/on/{proto}"), StatusCode::OK),
                (format!("/none/{proto}"), StatusCode::SERVICE_UNAVAILABLE),
            ] {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(format!("http://{at}{path}"))
                    .body(Full::new(payload.clone()))
                    .unwrap();
                let (s, _, body, _) = send(&client, req).await;
                assert_eq!(s, status, "{path}");
                let got = seen.lock().unwrap()[&path].clone();
                // Every try carried the whole body.
                assert!(got.iter().all(|b| *b == payload), "{path}");
                if status == StatusCode::OK {
                    assert_eq!(got.len(), 2, "{path}");
                    assert_eq!(body, payload, "{path}: the retry's answer");
                } else {
                    assert_eq!(got.len(), 1, "{path}");
                }
            }
        }
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_grpc_call_is_retried_on_the_override_after_unavailable);
async fn a_grpc_call_is_retried_on_the_override_after_unavailable() {
    bounded(async {
        // A gRPC upstream: a path's first call gets a Trailers-Only UNAVAILABLE, later ones OK
        // with the request's message back.
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let up = upstream(move |req| {
            let log = log.clone();
            async move {
                let path = req.uri().path().to_owned();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let first = {
                    let mut log = log.lock().unwrap();
                    let tries = log.entry(path).or_default();
                    tries.push(body.clone());
                    tries.len() == 1
                };
                let (code, body) = if first {
                    ("14", Bytes::new())
                } else {
                    ("0", body)
                };
                let mut r = text(StatusCode::OK, body);
                r.headers_mut()
                    .insert("content-type", "application/grpc".parse().unwrap());
                r.headers_mut().insert("grpc-status", code.parse().unwrap());
                r
            }
        })
        .await;
        let gw = start(config(&routes(up, 2)));
        // A length-prefixed gRPC message.
        let message = Bytes::from_static(b"\0\0\0\0\x05hello");
        for (path, code, n) in [
            ("/on/pkg.Svc/Call", "0", 2),
            ("/none/pkg.Svc/Call", "14", 1),
        ] {
            let req = Request::builder()
                .method(Method::POST)
                .uri(format!("http://{}{path}", addr(&gw)))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Full::new(message.clone()))
                .unwrap();
            let (s, headers, body, _) = send(&h2_client(), req).await;
            assert_eq!(s, StatusCode::OK, "{path}");
            assert_eq!(headers["grpc-status"], code, "{path}");
            assert_eq!(tries(&seen, path), n, "{path}");
            if code == "0" {
                assert_eq!(body, message, "{path}: the message, replayed");
            }
        }
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(reload_keeps_an_unchanged_override_and_rebuilds_a_changed_one);
async fn reload_keeps_an_unchanged_override_and_rebuilds_a_changed_one() {
    bounded(async {
        let (up, _) = fails_first().await;
        let dir = scratch("route-retry-reload");
        let path = dir.join("gw.toml");
        // `plain`: extra sections for the override's own cluster.
        let text = |request_ms: u64, plain: &str, on_attempts: u32| {
            format!(
                "[server]\nworkers = 2\n[admin]\nlisten = \"\"\n[log]\naccess_log = false\n\
                 [timeouts]\nrequest_ms = {request_ms}\n\
                 [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n{}",
                routes(up, on_attempts).replace(
                    &format!("name = \"plain\"\nendpoints = [\"{up}\"]\n"),
                    &format!("name = \"plain\"\nendpoints = [\"{up}\"]\n{plain}"),
                )
            )
        };
        let gw = start_watching(&path, &text(3000, "", 2));
        let (s, _) = get(addr(&gw), "/on/r1").await;
        assert_eq!(s, StatusCode::OK);
        let on = |gw: &tollgate_gateway::Gateway| route_retry(&gw.state(), 0);
        let before = on(&gw);
        assert_eq!(before["retries"], 1, "{before}");
        let reload = |text: String| rewrite(&gw, &path, &text);
        // An unrelated change, then one that rebuilds the cluster's own layers: the override
        // keeps its budget and counters, over the cluster's new stack.
        reload(text(4000, "", 2));
        assert_eq!(on(&gw), before, "an unrelated reload keeps the override");
        let pool = "[clusters.pool]\ninitial_limit = 8\n";
        reload(text(4000, pool, 2));
        assert_eq!(on(&gw), before, "so does a rebuilt cluster stack");
        assert!(gw.state()["clusters"][0]["layers"]["pool"].is_object());
        let (s, _) = get(addr(&gw), "/on/r2").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(on(&gw)["retries"], 2, "{}", on(&gw));
        // A change to the override itself starts it afresh.
        reload(text(4000, pool, 3));
        assert_eq!(on(&gw)["retries"], 0, "{}", on(&gw));
        assert_eq!(on(&gw)["budget"]["requests"], 0, "{}", on(&gw));
        let (s, _) = get(addr(&gw), "/on/r3").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(on(&gw)["retries"], 1);
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(an_override_shares_its_clusters_budget_unless_it_sizes_its_own);
/// An override over a cluster that retries, sizing its budget as the cluster does (here by
/// leaving it at the defaults), draws on the cluster's own budget: requests through the
/// override and through the cluster's other routes count in one budget. One with its own
/// `budget_percent` keeps a budget of its own.
async fn an_override_shares_its_clusters_budget_unless_it_sizes_its_own() {
    bounded(async {
        let (up, seen) = fails_first().await;
        let cfg = config(&format!(
            "[[clusters]]\nname = \"retrying\"\nendpoints = [\"{up}\"]\n\
             [clusters.retry]\nattempts = 1\n{RETRY_503}\
             [[routes]]\npath_prefix = \"/shared\"\ncluster = \"retrying\"\n\
             [routes.retry]\nattempts = 3\n{RETRY_503}\
             [[routes]]\npath_prefix = \"/own\"\ncluster = \"retrying\"\n\
             [routes.retry]\nattempts = 3\nbudget_percent = 50.0\n{RETRY_503}\
             [[routes]]\npath_prefix = \"/cluster\"\ncluster = \"retrying\"\n"
        ));
        let gw = start(cfg);
        let at = addr(&gw);
        for path in ["/cluster/a", "/cluster/b", "/shared/a", "/own/a"] {
            let (s, body) = get(at, path).await;
            assert_eq!(s, StatusCode::OK, "{path}: {body}");
            assert_eq!(tries(&seen, path), 2, "{path}");
        }
        let state = gw.state();
        let cluster = &state["clusters"][0]["layers"]["retry"];
        let shared = route_retry(&state, 0);
        let own = route_retry(&state, 1);
        assert_eq!(shared["budget_shared_with_cluster"], true, "{shared}");
        assert_eq!(own["budget_shared_with_cluster"], false, "{own}");
        // One budget for the cluster's two requests and the override's one, and the retries
        // of all three spent from it; the other override counts only its own.
        assert_eq!(cluster["budget"]["requests"], 3, "{cluster}");
        assert_eq!(cluster["budget"]["spent"], 3, "{cluster}");
        assert_eq!(shared["budget"], cluster["budget"], "{shared}");
        assert_eq!(own["budget"]["requests"], 1, "{own}");
        assert_eq!(own["budget"]["spent"], 1, "{own}");
        // The counters stay per layer.
        assert_eq!(cluster["retries"], 2, "{cluster}");
        assert_eq!(shared["retries"], 1, "{shared}");
        stop(gw).await;
    })
    .await;
}

on_both_front_ends!(a_sharing_override_follows_its_clusters_budget_across_reloads);
/// Reloads move a sharing override onto its cluster's new budget when the cluster's retries
/// are rebuilt, and off it when the cluster stops retrying.
async fn a_sharing_override_follows_its_clusters_budget_across_reloads() {
    bounded(async {
        let (up, _) = fails_first().await;
        let dir = scratch("route-retry-shared-reload");
        let path = dir.join("gw.toml");
        let text = |cluster_retry: &str| {
            format!(
                "[server]\nworkers = 2\n[admin]\nlisten = \"\"\n[log]\naccess_log = false\n\
                 [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n\
                 [[clusters]]\nname = \"c\"\nendpoints = [\"{up}\"]\n{cluster_retry}\
                 [[routes]]\npath_prefix = \"/shared\"\ncluster = \"c\"\n\
                 [routes.retry]\nattempts = 3\n{RETRY_503}\
                 [[routes]]\ncluster = \"c\"\n"
            )
        };
        let retrying =
            |attempts: u32| format!("[clusters.retry]\nattempts = {attempts}\n{RETRY_503}");
        let gw = start_watching(&path, &text(&retrying(1)));
        let reload = |text: String| rewrite(&gw, &path, &text);
        let views = |gw: &tollgate_gateway::Gateway| {
            let state = gw.state();
            (
                route_retry(&state, 0),
                state["clusters"][0]["layers"]["retry"].clone(),
            )
        };
        let (s, _) = get(addr(&gw), "/shared/1").await;
        assert_eq!(s, StatusCode::OK);
        let (shared, cluster) = views(&gw);
        assert_eq!(shared["budget"]["requests"], 1, "{shared}");
        assert_eq!(shared["budget"], cluster["budget"], "{shared} {cluster}");
        // The cluster's retries change: its budget starts afresh, and the override with it.
        reload(text(&retrying(2)));
        let (shared, cluster) = views(&gw);
        assert_eq!(cluster["budget"]["requests"], 0, "{cluster}");
        assert_eq!(shared["budget"], cluster["budget"], "{shared} {cluster}");
        let (s, _) = get(addr(&gw), "/other/1").await;
        assert_eq!(s, StatusCode::OK);
        let (shared, cluster) = views(&gw);
        assert_eq!(cluster["budget"]["requests"], 1, "{cluster}");
        assert_eq!(shared["budget"], cluster["budget"], "{shared} {cluster}");
        assert_eq!(shared["budget_shared_with_cluster"], true, "{shared}");
        // The cluster stops retrying: the override keeps retrying, on a budget of its own.
        reload(text(""));
        let (shared, cluster) = views(&gw);
        assert!(cluster.is_null(), "{cluster}");
        assert_eq!(shared["budget_shared_with_cluster"], false, "{shared}");
        let (s, _) = get(addr(&gw), "/shared/2").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(views(&gw).0["budget"]["requests"], 1, "{}", views(&gw).0);
        stop(gw).await;
    })
    .await;
}

#[test]
fn bad_route_retry_sections_are_refused_naming_the_field() {
    let base = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                [[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n\
                [[routes]]\ncluster = \"c\"\n\
                [[routes]]\npath_prefix = \"/x\"\ncluster = \"c\"\n";
    let cases = [
        (
            "[routes.retry]\nattempts = 99\n",
            "routes[1].retry.attempts",
        ),
        (
            "[routes.retry]\nretry_on = [\"sometimes\"]\n",
            "routes[1].retry.retry_on[0]",
        ),
        (
            "[routes.retry]\nbudget_percent = 150.0\n",
            "routes[1].retry.budget_percent",
        ),
        (
            "[routes.retry]\nattempts = 0\nhedge = { percentile = 0.9 }\n",
            "routes[1].retry.attempts",
        ),
        ("[routes.retry]\nattempt = 2\n", "routes[1].retry.attempt"),
        (
            "kind = \"batch\"\n[routes.batch]\nupstream_path = \"/\"\n[routes.retry]\n",
            "routes[1].retry",
        ),
    ];
    for (section, field) in cases {
        let text = format!("{base}{section}");
        let err = Config::parse(&text, "x.toml").unwrap_err();
        assert_eq!(err.field, field, "{section}: {err}");
        assert!(
            err.to_string().starts_with(&format!("x.toml: {field}: ")),
            "{err}"
        );
    }
    // A good one parses and round-trips through `/config`'s form.
    let good = Config::parse(
        &format!("{base}[routes.retry]\nattempts = 1\nnon_idempotent = true\n"),
        "x.toml",
    )
    .unwrap();
    let retry = good.routes[1].retry.as_ref().unwrap();
    assert_eq!((retry.attempts, retry.non_idempotent), (1, true));
    let again = toml::to_string(&good).unwrap();
    assert_eq!(Config::parse(&again, "again.toml").unwrap(), good);
}
