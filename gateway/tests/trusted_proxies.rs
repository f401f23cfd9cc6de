//! `server.trusted_proxies` end to end, beside the HTTP/1.1 scenarios in `h1_fast/forwarded.rs`:
//! HTTP/2 clients (the hyper path), admission's per-client rate limit keyed on the believed
//! address, the access log on both paths, and the config check. Clients connect from 127.0.0.1 (trusted) or 127.0.0.2 (not).

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use tollgate_gateway::config::Config;

const TRUST: &str = "trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1/32\"]\n";

/// The common test config with trusted proxies (its `[server]` section gets the setting).
fn trusting(rest: &str) -> Config {
    let mut c = config(rest);
    c.server.trusted_proxies = vec!["10.0.0.0/8".into(), "127.0.0.1/32".into()];
    c
}

/// A client whose connections come from `from`, HTTP/2 (prior knowledge) or HTTP/1.1.
fn client_from(from: &str, h2: bool) -> Client<HttpConnector, Full<Bytes>> {
    let mut conn = HttpConnector::new();
    conn.set_local_address(Some(from.parse().unwrap()));
    Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(conn)
}

async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    at: SocketAddr,
    fields: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut b = Request::get(format!("http://{at}/who"));
    for (k, v) in fields {
        b = b.header(*k, *v);
    }
    let (status, _, body, _) = send(client, b.body(Full::default()).unwrap()).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The values of `name` in an `inspect_upstream` answer.
fn seen<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_the_same_chain() {
    bounded(async {
        let up = inspect_upstream().await;
        let gw = start(trusting(&single(up, "http1")));
        let at = addr(&gw);
        let trusted = client_from("127.0.0.1", true);
        let (status, body) = call(
            &trusted,
            at,
            &[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            seen(&body, "x-forwarded-for"),
            ["203.0.113.7, 10.1.2.3, 127.0.0.1"],
            "{body}"
        );
        assert_eq!(
            seen(&body, "forwarded"),
            [format!(
                "for=203.0.113.7, for=10.1.2.3, for=127.0.0.1;proto=http;host=\"{at}\""
            )],
            "{body}"
        );
        // A spoofing client on HTTP/2: its fields go on, the real peer appended.
        let untrusted = client_from("127.0.0.2", true);
        let (_, body) = call(
            &untrusted,
            at,
            &[
                ("x-forwarded-for", "10.0.0.1"),
                ("forwarded", "for=10.0.0.1"),
            ],
        )
        .await;
        assert_eq!(
            seen(&body, "x-forwarded-for"),
            ["10.0.0.1, 127.0.0.2"],
            "{body}"
        );
        assert_eq!(
            seen(&body, "forwarded"),
            [
                "for=10.0.0.1".to_owned(),
                format!("for=127.0.0.2;proto=http;host=\"{at}\"")
            ],
            "{body}"
        );
        stop(gw).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_keys_on_the_believed_client() {
    bounded(async {
        let up = inspect_upstream().await;
        // One request per client per minute, keyed on the client's address.
        let gw = start(trusting(&format!(
            "[[admission]]\nname = \"rl\"\n\
             rate_limit = {{ burst = 1, period_ms = 60000 }}\n\
             [[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
             [[routes]]\ncluster = \"up\"\nadmission = \"rl\"\n"
        )));
        let at = addr(&gw);
        for h2 in [false, true] {
            let trusted = client_from("127.0.0.1", h2);
            // Behind the trusted proxy, each client has its own quota.
            let (a, b) = if h2 {
                ("203.0.113.21", "203.0.113.22")
            } else {
                ("203.0.113.11", "203.0.113.12")
            };
            let xff = |ip: &'static str| [("x-forwarded-for", ip)];
            assert_eq!(
                call(&trusted, at, &xff(a)).await.0,
                StatusCode::OK,
                "h2 {h2}"
            );
            assert_eq!(
                call(&trusted, at, &xff(a)).await.0,
                StatusCode::TOO_MANY_REQUESTS,
                "h2 {h2}"
            );
            assert_eq!(
                call(&trusted, at, &xff(b)).await.0,
                StatusCode::OK,
                "h2 {h2}"
            );
        }
        // An untrusted client cannot buy a fresh quota with a made-up address.
        let untrusted = client_from("127.0.0.2", false);
        let spoof = |ip: &'static str| [("x-forwarded-for", ip)];
        assert_eq!(
            call(&untrusted, at, &spoof("198.51.100.1")).await.0,
            StatusCode::OK
        );
        for ip in ["198.51.100.2", "198.51.100.3"] {
            assert_eq!(
                call(&untrusted, at, &spoof(ip)).await.0,
                StatusCode::TOO_MANY_REQUESTS,
                "{ip}"
            );
        }
        stop(gw).await;
    })
    .await;
}

/// Every access-log line of this test binary's gateways (a global subscriber: the gateways'
/// workers are threads of their own).
fn access_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("tollgate::access=info"))
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_believed_client() {
    let log = access_log();
    bounded(async {
        let up = inspect_upstream().await;
        let mut c = trusting(&single(up, "http1"));
        c.log.access_log = true;
        let gw = start(c);
        let at = addr(&gw);
        // HTTP/1.1 (the fast path takes a plain route) and HTTP/2 from the trusted proxy, and
        // a spoofing client.
        for (from, h2, xff) in [
            ("127.0.0.1", false, "203.0.113.55"),
            ("127.0.0.1", true, "203.0.113.56"),
            ("127.0.0.2", false, "203.0.113.57"),
        ] {
            let (status, _) = call(&client_from(from, h2), at, &[("x-forwarded-for", xff)]).await;
            assert_eq!(status, StatusCode::OK);
        }
        stop(gw).await;
    })
    .await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("path=\"/who\""))
        .collect();
    for want in [
        "client=203.0.113.55",
        "client=203.0.113.56",
        "client=127.0.0.2",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {text}");
    }
    assert!(!text.contains("client=203.0.113.57"), "{text}");
}

#[test]
fn a_bad_network_is_named() {
    for (bad, what) in [
        (
            "[\"10.0.0.0/8\", \"10.0.0.0/40\"]",
            "server.trusted_proxies[1]",
        ),
        ("[\"proxy.example\"]", "server.trusted_proxies[0]"),
        ("[\"10.0.0.1/8\"]", "server.trusted_proxies[0]"),
    ] {
        let text = format!(
            "[server]\n{}",
            TRUST.replace("[\"10.0.0.0/8\", \"127.0.0.1/32\"]", bad,)
        );
        let text = format!(
            "{text}[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:0\"\n\
             [[clusters]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9\"]\n\
             [[routes]]\ncluster = \"up\"\n"
        );
        let e = Config::parse(&text, "t.toml").expect_err(bad);
        assert_eq!(e.field, what, "{e}");
    }
    let ok = format!(
        "[server]\n{TRUST}[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:0\"\n\
         [[clusters]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9\"]\n[[routes]]\ncluster = \"up\"\n"
    );
    assert_eq!(
        Config::parse(&ok, "t.toml").unwrap().server.trusted_proxies,
        ["10.0.0.0/8", "127.0.0.1/32"]
    );
}
