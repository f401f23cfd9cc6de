//! Support for the gateway's chaos tests: the [`upstream::ChaosUpstream`] harness, a gateway
//! with its admin listener on loopback, bounded client calls, and readers of `/state`. The
//! front end a test runs on comes from the common module's `HYPER_FRONT` (see its
//! `on_both_front_ends!`), written into the config text so that reloads keep it.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod upstream;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tollgate_gateway::config::Config;
use tollgate_gateway::{Gateway, StartOptions};

pub use upstream::{ChaosUpstream, Mode};

/// Every test finishes within this (real time: these tests use real sockets).
pub const TEST_DEADLINE: Duration = Duration::from_secs(45);

/// One client call gets its answer within this, or the test fails: the gateway must never
/// leave a request hanging (its own timeouts in these configs are all under 2 s).
pub const CALL_LIMIT: Duration = Duration::from_secs(8);

/// Runs `fut` under [`TEST_DEADLINE`].
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, fut)
        .await
        .expect("test exceeded its deadline")
}

/// The text of a gateway config: two workers, admin on a free loopback port, no access log,
/// short timeouts, one listener, then `rest` (clusters and routes). `header_read_ms` (a client
/// side timeout) varies so that a reload can change a setting no cluster depends on.
pub fn config_text(rest: &str, header_read_ms: u64) -> String {
    config_text_idle(rest, header_read_ms, 10_000)
}

/// [`config_text`] with the idle timeout of client and pooled upstream connections too.
pub fn config_text_idle(rest: &str, header_read_ms: u64, idle_ms: u64) -> String {
    let fast = !crate::common::hyper_front();
    format!(
        "[server]\nworkers = 2\ndrain_timeout_ms = 2000\nh1_fast_path = {fast}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [log]\naccess_log = false\n\
         [timeouts]\nconnect_ms = 300\nheader_read_ms = {header_read_ms}\nrequest_ms = 2000\n\
         idle_ms = {idle_ms}\n\
         [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n{rest}"
    )
}

/// [`config_text`] parsed (and validated).
pub fn config(rest: &str) -> Config {
    let text = config_text(rest, 2_000);
    Config::parse(&text, "chaos.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Starts a gateway in this process.
pub fn start(config: Config) -> Gateway {
    Gateway::start(StartOptions::new(config, "chaos.toml")).expect("gateway starts")
}

/// Starts a gateway from the file at `path`, watching it for reloads.
pub fn start_watching(path: &Path) -> Gateway {
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let mut opts = StartOptions::new(config, &path.display().to_string());
    opts.path = Some(path.to_owned());
    Gateway::start(opts).expect("gateway starts")
}

/// Stops a gateway without blocking the runtime.
pub async fn stop(gw: Gateway) {
    tokio::task::spawn_blocking(move || gw.shutdown())
        .await
        .unwrap();
}

/// The first listener's address.
pub fn addr(gw: &Gateway) -> SocketAddr {
    gw.listeners()[0].addr
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    // Each front end's run of a test has its own (they may run at once).
    let front = if crate::common::hyper_front() {
        "hyper"
    } else {
        "fast"
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{front}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An HTTP/1.1 client with a connection pool.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A fresh HTTP/1.1 client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A fresh h2c (prior knowledge) client: every request of it shares one connection.
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// Sends one request and collects the answer. `Err` is a connection-level failure (the
/// gateway closed or reset instead of answering).
///
/// # Panics
/// When no answer came within [`CALL_LIMIT`]: the request hung.
pub async fn call(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&'static [u8]>,
) -> Result<Reply, String> {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(
            body.map(|b| Full::new(Bytes::from_static(b)))
                .unwrap_or_default(),
        )
        .unwrap();
    send(client, req).await
}

/// Sends `req` and collects the answer; see [`call`].
pub async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Reply, String> {
    let what = format!("{} {}", req.method(), req.uri());
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e:?}"))?;
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        })
    };
    tokio::time::timeout(CALL_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{what} got no answer within {CALL_LIMIT:?}"))
}

/// `GET url`; the answer must come (a connection failure panics).
pub async fn get(client: &HttpClient, url: &str) -> Reply {
    call(client, Method::GET, url, None)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: connection failed: {e}"))
}

/// The admin listener's `/state`.
pub async fn state(gw: &Gateway) -> Value {
    let admin = gw.admin_addr().expect("admin listener on");
    let reply = get(&client(), &format!("http://{admin}/state")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    serde_json::from_str(&reply.body).expect("/state is JSON")
}

/// `clusters[name].layers` of a `/state` document (`Null` when absent).
pub fn layers<'a>(state: &'a Value, cluster: &str) -> &'a Value {
    state["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == cluster))
        .map_or(&Value::Null, |c| &c["layers"])
}

/// The balancer's entry for `addr` in a cluster's layer state (`Null` when absent).
pub fn endpoint(layers: &Value, addr: SocketAddr) -> &Value {
    layers["balance"]["endpoints"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["addr"] == addr.to_string()))
        .unwrap_or(&Value::Null)
}

/// Whether an endpoint entry says it is out of rotation: not healthy (ejected, unhealthy,
/// unavailable) or its breaker not closed.
pub fn out_of_rotation(ep: &Value) -> bool {
    let state = ep["state"].as_str().unwrap_or("");
    let breaker = ep["breaker"].as_str().unwrap_or("closed");
    !matches!(state, "healthy" | "slowstart" | "slow_start") || breaker != "closed"
}

/// Polls `check` every 25 ms until it holds; false if `limit` passed first.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends `n` GETs to `url` from `clients` tasks at once; returns every answer (a connection
/// failure is an `Err`).
pub async fn burst(url: &str, clients: usize, n: usize) -> Vec<Result<Reply, String>> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = url.to_owned();
        let share = n / clients + usize::from(c < n % clients);
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut out = Vec::with_capacity(share);
            for _ in 0..share {
                out.push(call(&client, Method::GET, &url, None).await);
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all
}

/// How many answers had `status`.
pub fn count(replies: &[Result<Reply, String>], status: StatusCode) -> usize {
    replies
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.status == status))
        .count()
}

/// Panics with the first connection failure among `replies`.
pub fn all_answered(replies: &[Result<Reply, String>]) {
    if let Some(Err(e)) = replies.iter().find(|r| r.is_err()) {
        let failed = replies.iter().filter(|r| r.is_err()).count();
        panic!(
            "{failed} of {} requests got no HTTP answer: {e}",
            replies.len()
        );
    }
}

/// Panics unless every 503 among `replies` carries `Retry-After` (a gateway rejection, not an
/// upstream's answer).
pub fn rejections_say_retry_after(replies: &[Result<Reply, String>]) {
    for r in replies.iter().flatten() {
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                r.headers.contains_key(http::header::RETRY_AFTER),
                "a 503 without Retry-After: {r:?}"
            );
        }
    }
}

/// Config text: a cluster `name` over `eps` with the extra sections `sections`, and a route
/// `/name` to it with the extra fields `route_extra`.
pub fn cluster(name: &str, eps: &[&ChaosUpstream], sections: &str, route_extra: &str) -> String {
    let eps: Vec<String> = eps.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "[[clusters]]\nname = \"{name}\"\nendpoints = [{}]\n{sections}\n\
         [[routes]]\npath_prefix = \"/{name}\"\ncluster = \"{name}\"\n{route_extra}\n",
        eps.join(", ")
    )
}
