//! The admin side of issue #20: latency histograms on `/metrics`, and the series of a cluster a
//! reload removed leaving it.

mod common;

use common::*;
use http::StatusCode;
use std::net::SocketAddr;
use tollgate_gateway::Gateway;
use tollgate_gateway::config::Config;

/// A config with an admin listener on a free loopback port and `rest` appended.
fn admin_config(rest: &str) -> Config {
    let text = format!(
        "[server]\nworkers = 2\ndrain_timeout_ms = 2000\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [log]\naccess_log = false\n\
         [timeouts]\nconnect_ms = 300\nrequest_ms = 30000\n\
         [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n{rest}"
    );
    Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn admin(gw: &Gateway) -> SocketAddr {
    gw.admin_addr().expect("an admin listener")
}

/// The value of the first `/metrics` line starting with `prefix` (labels included).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_latency_histograms_and_forget_removed_clusters() {
    bounded(async {
        let up = upstream(|_req| async { text(StatusCode::OK, "ok") }).await;
        let two = |with_gone: bool| {
            let gone = if with_gone {
                format!(
                    "[[clusters]]\nname = \"gone\"\nendpoints = [\"{up}\"]\n\
                     [[routes]]\npath_prefix = \"/gone\"\ncluster = \"gone\"\n"
                )
            } else {
                String::new()
            };
            admin_config(&format!(
                "[[clusters]]\nname = \"keep\"\nendpoints = [\"{up}\"]\n\
                 [clusters.breaker]\nminimum_calls = 1000\n{gone}\
                 [[routes]]\npath_prefix = \"/keep\"\ncluster = \"keep\"\n"
            ))
        };
        let gw = start(two(true));
        let at = addr(&gw);
        for path in ["/keep", "/keep", "/gone"] {
            assert_eq!(get(at, path).await.0, StatusCode::OK);
        }
        assert_eq!(get(at, "/nowhere").await.0, StatusCode::NOT_FOUND);
        let (s, m) = get(admin(&gw), "/metrics").await;
        assert_eq!(s, StatusCode::OK);
        for family in [
            "tollgate_request_duration_seconds",
            "tollgate_route_request_duration_seconds",
            "tollgate_endpoint_upstream_duration_seconds",
            "tollgate_admission_queue_wait_seconds",
        ] {
            assert!(
                m.contains(&format!("# TYPE {family} histogram\n")),
                "{family}\n{m}"
            );
        }
        assert!(!m.contains("microseconds"), "one unit, seconds\n{m}");
        let keep = "tollgate_route_request_duration_seconds_count{route=\"* /keep\",cluster=\"keep\",class=\"2xx\"}";
        assert_eq!(metric(&m, keep), Some(2.0), "{m}");
        let inf = "tollgate_route_request_duration_seconds_bucket{route=\"* /keep\",cluster=\"keep\",class=\"2xx\",le=\"+Inf\"}";
        assert_eq!(metric(&m, inf), Some(2.0), "{m}");
        let sub_ms = "tollgate_route_request_duration_seconds_bucket{route=\"* /keep\",cluster=\"keep\",class=\"2xx\",le=\"0.0001\"}";
        assert!(metric(&m, sub_ms).is_some(), "the smallest bucket\n{m}");
        assert_eq!(
            metric(&m, "tollgate_request_duration_seconds_count{class=\"4xx\"}"),
            Some(1.0),
            "the unrouted 404 counts in the global histogram\n{m}"
        );
        let ep = format!(
            "tollgate_endpoint_upstream_duration_seconds_count{{cluster=\"gone\",endpoint=\"{up}\"}}"
        );
        assert_eq!(metric(&m, &ep), Some(1.0), "{m}");
        assert!(m.contains("cluster=\"gone\""), "{m}");
        let state = gw.state();
        let route = state["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == "* /keep")
            .unwrap();
        assert_eq!(route["latency"]["count"], 2, "{route}");
        assert!(route["latency"]["p99_ms"].as_f64().is_some(), "{route}");

        // A reload without the cluster: its series leave `/metrics`; the kept ones stay.
        gw.apply(two(false), "reload.toml").unwrap();
        let m = get(admin(&gw), "/metrics").await.1;
        assert!(!m.contains("\"gone\""), "series of a removed cluster\n{m}");
        assert!(!m.contains("/gone"), "series of a removed route\n{m}");
        assert_eq!(metric(&m, keep), Some(2.0), "kept across the reload\n{m}");
        stop(gw).await;
    })
    .await;
}
