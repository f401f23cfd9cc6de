//! Routing end to end: header and query conditions, their precedence and 405s, and weighted
//! splits, through real hyper clients and upstreams on loopback, over the HTTP/1.1 fast path,
//! hyper's HTTP/1.1 path and HTTP/2 (h2c); and a split route's `/state` and `/metrics`.

mod common;

use bytes::Bytes;
use common::{addr, bounded, h1_client, h2_client, send, start, stop, text, upstream};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::net::SocketAddr;
use tollgate_gateway::config::Config;

/// An upstream that answers its name.
async fn named(name: &'static str) -> SocketAddr {
    upstream(move |_req: Request<Incoming>| async move { text(StatusCode::OK, name) }).await
}

/// How the test reaches the gateway.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// HTTP/1.1 on the gateway's own fast path.
    Fast,
    /// HTTP/1.1 on hyper's path (`h1_fast_path = false`).
    HyperH1,
    /// HTTP/2 with prior knowledge (hyper's path).
    H2c,
}

impl Path {
    const ALL: [Path; 3] = [Path::Fast, Path::HyperH1, Path::H2c];

    fn client(self) -> Client<HttpConnector, Full<Bytes>> {
        match self {
            Path::H2c => h2_client(),
            _ => h1_client(),
        }
    }
}

/// A config: plain listener (fast path per `path`), admin on a free port, and `rest`.
fn config(path: Path, rest: &str) -> Config {
    let fast = matches!(path, Path::Fast);
    let text = format!(
        "[server]\nworkers = 2\ndrain_timeout_ms = 5000\nh1_fast_path = {fast}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess_log = false\n\
         [timeouts]\nconnect_ms = 300\nrequest_ms = 3000\n\
         [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n{rest}"
    );
    Config::parse(&text, "routing.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Sends `method target` with `fields`; returns status and body.
async fn ask(
    client: &Client<HttpConnector, Full<Bytes>>,
    gw: SocketAddr,
    method: &str,
    target: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{gw}{target}"));
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    let (status, _, body, _) = send(client, req.body(Full::default()).unwrap()).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Method, target, fields; the status and body wanted.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    StatusCode,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_query_conditions_route_alike_on_every_path() {
    bounded(async {
        let (a, b, c, d) = (
            named("a").await,
            named("b").await,
            named("c").await,
            named("d").await,
        );
        let rest = format!(
            "[[clusters]]\nname = \"a\"\nendpoints = [\"{a}\"]\n\
             [[clusters]]\nname = \"b\"\nendpoints = [\"{b}\"]\n\
             [[clusters]]\nname = \"c\"\nendpoints = [\"{c}\"]\n\
             [[clusters]]\nname = \"d\"\nendpoints = [\"{d}\"]\n\
             [[routes]]\ncluster = \"a\"\n\
             [[routes]]\ncluster = \"b\"\n\
             [[routes.headers]]\nname = \"X-Canary\"\nvalue = \"1\"\n\
             [[routes]]\ncluster = \"c\"\n\
             [[routes.query]]\nname = \"version\"\nvalue = \"2 beta\"\n\
             [[routes.headers]]\nname = \"user-agent\"\nprefix = \"curl/\"\n\
             [[routes]]\npath_prefix = \"/admin\"\nmethods = [\"GET\"]\ncluster = \"d\"\n\
             [[routes.headers]]\nname = \"x-admin\"\npresent = true\n\
             [[routes.headers]]\nname = \"x-banned\"\npresent = true\ninvert = true\n"
        );
        for path in Path::ALL {
            let gw = start(config(path, &rest));
            let at = addr(&gw);
            let client = path.client();
            let cases: &[Case] = &[
                ("GET", "/x", &[], StatusCode::OK, "a"),
                ("GET", "/x", &[("x-canary", "1")], StatusCode::OK, "b"),
                ("GET", "/x", &[("x-canary", "2")], StatusCode::OK, "a"),
                // Two conditions rank above one.
                (
                    "POST",
                    "/x?version=2+beta",
                    &[("x-canary", "1"), ("user-agent", "curl/8")],
                    StatusCode::OK,
                    "c",
                ),
                (
                    "GET",
                    "/x?version=2%20beta",
                    &[("user-agent", "Curl/8")],
                    StatusCode::OK,
                    "a",
                ),
                (
                    "GET",
                    "/admin/users",
                    &[("x-admin", "")],
                    StatusCode::OK,
                    "d",
                ),
                // The method does not match: a less specific route that allows it serves.
                (
                    "DELETE",
                    "/admin/users",
                    &[("x-admin", "1")],
                    StatusCode::OK,
                    "a",
                ),
                (
                    "GET",
                    "/admin",
                    &[("x-admin", "1"), ("x-banned", "1")],
                    StatusCode::OK,
                    "a",
                ),
            ];
            for (method, target, fields, status, body) in cases {
                let (s, b) = ask(&client, at, method, target, fields).await;
                assert_eq!(s, *status, "{path:?} {method} {target} {fields:?}: {b}");
                if s == StatusCode::OK {
                    assert_eq!(b, *body, "{path:?} {method} {target} {fields:?}");
                }
            }
            stop(gw).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fallback_405_needs_the_conditions_and_404_follows_them() {
    bounded(async {
        let a = named("a").await;
        let rest = format!(
            "[[clusters]]\nname = \"a\"\nendpoints = [\"{a}\"]\n\
             [[routes]]\npath_prefix = \"/api\"\ncluster = \"a\"\n\
             [[routes.query]]\nname = \"key\"\npresent = true\n\
             [[routes]]\npath_prefix = \"/admin\"\nmethods = [\"GET\"]\ncluster = \"a\"\n\
             [[routes.headers]]\nname = \"x-admin\"\nvalue = \"yes\"\n"
        );
        for path in Path::ALL {
            let gw = start(config(path, &rest));
            let client = path.client();
            let at = addr(&gw);
            let (s, b) = ask(&client, at, "GET", "/api?key", &[]).await;
            assert_eq!((s, b.as_str()), (StatusCode::OK, "a"), "{path:?}");
            let (s, _) = ask(&client, at, "GET", "/api?nokey=1", &[]).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path:?}");
            let admin = [("x-admin", "yes")];
            let (s, _) = ask(&client, at, "GET", "/admin/x", &admin).await;
            assert_eq!(s, StatusCode::OK, "{path:?}");
            // Host, path and conditions match, the method does not: 405.
            let (s, _) = ask(&client, at, "POST", "/admin/x", &admin).await;
            assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{path:?}");
            // Neither the conditions nor the method: 404, not 405.
            let (s, _) = ask(&client, at, "POST", "/admin/x", &[("x-admin", "no")]).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{path:?}");
            stop(gw).await;
        }
    })
    .await;
}

/// Sends `n` requests one after another and counts the answers by upstream name.
async fn tally(path: Path, gw: SocketAddr, target: &str, n: usize) -> (usize, usize) {
    let client = path.client();
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..n {
        let (s, b) = ask(&client, gw, "GET", target, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path:?}: {b}");
        match b.as_str() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    (v1, v2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_is_exact_on_every_path() {
    bounded(async {
        let (v1, v2) = (named("v1").await, named("v2").await);
        let rest = format!(
            "[[clusters]]\nname = \"v1\"\nendpoints = [\"{v1}\"]\n\
             [[clusters]]\nname = \"v2\"\nendpoints = [\"{v2}\"]\n\
             [[routes]]\npath_prefix = \"/shop\"\n\
             clusters = [{{ cluster = \"v1\", weight = 75 }}, {{ cluster = \"v2\", weight = 25 }}]\n\
             [[routes]]\ncluster = \"v1\"\n"
        );
        for path in Path::ALL {
            let gw = start(config(path, &rest));
            // 3:1 over every 4 requests, wherever the worker threads take them.
            assert_eq!(tally(path, addr(&gw), "/shop/item", 100).await, (75, 25), "{path:?}");
            // The route's other requests are not part of the split.
            assert_eq!(tally(path, addr(&gw), "/other", 10).await, (10, 0), "{path:?}");
            assert_eq!(tally(path, addr(&gw), "/shop", 8).await, (6, 2), "{path:?}");

            // `/state` names both clusters, with each one's share of what was served.
            let state = gw.state();
            let route = state["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["route"] == "* /shop")
                .unwrap_or_else(|| panic!("{state}"))
                .clone();
            assert_eq!(route["cluster"], "v1+v2", "{route}");
            assert_eq!(route["latency"]["count"], 108, "{route}");
            let split = route["split"].as_array().unwrap();
            assert_eq!(split[0]["cluster"], "v1");
            assert_eq!(split[0]["weight"], 75);
            assert_eq!(split[0]["latency"]["count"], 81, "{route}");
            assert_eq!(split[1]["cluster"], "v2");
            assert_eq!(split[1]["latency"]["count"], 27, "{route}");

            // The route's metrics carry the cluster that served.
            let admin = gw.admin_addr().unwrap();
            let (s, metrics) = common::get(admin, "/metrics").await;
            assert_eq!(s, StatusCode::OK);
            for (cluster, n) in [("v1", 81), ("v2", 27)] {
                let line = format!(
                    "tollgate_route_request_duration_seconds_count{{route=\"* /shop\",cluster=\"{cluster}\",class=\"2xx\"}} {n}"
                );
                assert!(metrics.contains(&line), "{path:?}: no {line}\n{metrics}");
            }
            stop(gw).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_split_exactly() {
    bounded(async {
        let (v1, v2) = (named("v1").await, named("v2").await);
        let rest = format!(
            "[[clusters]]\nname = \"v1\"\nendpoints = [\"{v1}\"]\n\
             [[clusters]]\nname = \"v2\"\nendpoints = [\"{v2}\"]\n\
             [[routes]]\n\
             clusters = [{{ cluster = \"v1\", weight = 9 }}, {{ cluster = \"v2\", weight = 1 }}]\n"
        );
        for path in [Path::Fast, Path::H2c] {
            let gw = start(config(path, &rest));
            let at = addr(&gw);
            // 8 clients, 25 requests each, at once: 200 requests, 20 rounds of 10.
            let tasks: Vec<_> = (0..8)
                .map(|_| tokio::spawn(async move { tally(path, at, "/", 25).await }))
                .collect();
            let (mut a, mut b) = (0, 0);
            for t in tasks {
                let (x, y) = t.await.unwrap();
                a += x;
                b += y;
            }
            assert_eq!((a, b), (180, 20), "{path:?}");
            stop(gw).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_split_keeps_a_client_on_one_cluster_on_every_path() {
    bounded(async {
        let (v1, v2) = (named("v1").await, named("v2").await);
        let rest = format!(
            "[[clusters]]\nname = \"v1\"\nendpoints = [\"{v1}\"]\n\
             [[clusters]]\nname = \"v2\"\nendpoints = [\"{v2}\"]\n\
             [[routes]]\n\
             clusters = [{{ cluster = \"v1\", weight = 1 }}, {{ cluster = \"v2\", weight = 1 }}]\n\
             sticky = {{ cookie = \"session\" }}\n"
        );
        // Which cluster each client lands on, per path: the same on every path.
        let mut seen: Vec<Vec<String>> = Vec::new();
        for path in Path::ALL {
            let gw = start(config(path, &rest));
            let client = path.client();
            let mut landed = Vec::new();
            for user in 0..8 {
                let cookie = format!("theme=dark; session=user-{user}");
                let mut answers = Vec::new();
                for _ in 0..5 {
                    let (s, b) = ask(&client, addr(&gw), "GET", "/", &[("cookie", &cookie)]).await;
                    assert_eq!(s, StatusCode::OK);
                    answers.push(b);
                    // A request without the cookie in between takes the round's turn.
                    let (s, _) = ask(&client, addr(&gw), "GET", "/", &[]).await;
                    assert_eq!(s, StatusCode::OK);
                }
                answers.dedup();
                assert_eq!(answers.len(), 1, "{path:?} user-{user}: {answers:?}");
                landed.push(answers.remove(0));
            }
            // Eight keys do not all hash to one side.
            assert!(landed.iter().any(|l| l == "v1") && landed.iter().any(|l| l == "v2"));
            seen.push(landed);
            // The 40 requests without a key took turns; the next 10 split 5 and 5.
            assert_eq!(tally(path, addr(&gw), "/", 10).await, (5, 5), "{path:?}");
            stop(gw).await;
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    })
    .await;
}
