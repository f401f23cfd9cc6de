//! Helpers for the gateway's end-to-end tests: loopback upstreams, clients, and a gateway
//! started in-process or as the built binary.
#![allow(dead_code, unreachable_pub, missing_docs)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_gateway::config::Config;
use tollgate_gateway::{Gateway, StartOptions};

/// An address that refuses connections while the returned socket lives: the socket is bound
/// and never listens, so a connect gets a reset, and it holds the port, so no other test
/// (nextest runs many at once) can bind it or be given it in the meantime, as a port bound and
/// released could be.
pub fn refusing() -> (SocketAddr, socket2::Socket) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (addr, s)
}

tokio::task_local! {
    /// Set while a test runs with `server.h1_fast_path = false`: hyper's server reads the
    /// client's requests instead of the gateway's HTTP/1.1 fast path (see
    /// [`on_both_front_ends!`]).
    pub static HYPER_FRONT: bool;
}

/// Whether the running test asks for hyper's front end (see [`HYPER_FRONT`]).
pub fn hyper_front() -> bool {
    HYPER_FRONT.try_with(|h| *h).unwrap_or(false)
}

/// The test `name` (an `async fn name()` beside it) run on both HTTP/1.1 front ends, as
/// `name::fast_front` and `name::hyper_front` (on a runtime of `threads` workers, 2 unless
/// given): [`config`], [`start_watching`] and [`rewrite`] set `server.h1_fast_path` from
/// [`HYPER_FRONT`], and [`scratch`] gives each its own directory.
#[allow(unused_macros)]
macro_rules! on_both_front_ends {
    ($name:ident) => {
        on_both_front_ends!($name, 2);
    };
    ($name:ident, $threads:literal) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn fast_front() {
                super::$name().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
            async fn hyper_front() {
                crate::common::HYPER_FRONT.scope(true, super::$name()).await;
            }
        }
    };
}

/// `text` (a whole config) with `server.h1_fast_path = false` when the running test asks for
/// hyper's front end.
pub fn front_text(text: &str) -> String {
    if !hyper_front() {
        return text.to_owned();
    }
    match text.find("[server]\n") {
        Some(at) => {
            let end = at + "[server]\n".len();
            format!("{}h1_fast_path = false\n{}", &text[..end], &text[end..])
        }
        None => format!("[server]\nh1_fast_path = false\n{text}"),
    }
}

/// Every test finishes within this (real time: these tests use real sockets).
pub const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `fut` under [`TEST_DEADLINE`].
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, fut)
        .await
        .expect("test exceeded its deadline")
}

/// A body of fixed frames, trailers included (for gRPC replies).
pub struct Frames(pub VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Frames>> + Send>>
        + Send
        + Sync,
>;

/// Starts an HTTP/1.1 + h2c upstream on a loopback port, serving with `f`.
pub async fn upstream<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Frames>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |req| Box::pin(f(req)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A response with `body` and no trailers.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Frames> {
    let mut r = Response::new(Frames(VecDeque::from([Frame::data(body.into())])));
    *r.status_mut() = status;
    r
}

/// An upstream that answers with the request's method, URI, version and headers, one per line,
/// then the body it read.
pub async fn inspect_upstream() -> SocketAddr {
    upstream(|req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut out = format!("{} {} {:?}\n", parts.method, parts.uri, parts.version);
        for (k, v) in &parts.headers {
            out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
        out.push_str(&format!("body-len: {}\n\n", body.len()));
        let mut r = text(StatusCode::OK, out);
        r.headers_mut()
            .insert("connection", "x-upstream-private".parse().unwrap());
        r.headers_mut()
            .insert("x-upstream-private", "1".parse().unwrap());
        r.headers_mut()
            .insert("keep-alive", "timeout=5".parse().unwrap());
        r
    })
    .await
}

/// A gateway config with one plain listener on a free port, no admin, 2 thread-per-core
/// workers, and `rest` appended (clusters and routes).
pub fn config(rest: &str) -> Config {
    let text = format!(
        "[server]\nworkers = 2\ndrain_timeout_ms = 5000\n[admin]\nlisten = \"\"\n\
         [log]\naccess_log = false\n\
         [timeouts]\nconnect_ms = 300\nheader_read_ms = 800\nrequest_ms = 3000\nidle_ms = 5000\n\
         [limits]\nmax_header_bytes = 8192\nmax_body_bytes = 100000\n\
         [[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n{rest}"
    );
    let mut config = Config::parse(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    if hyper_front() {
        config.server.h1_fast_path = false;
    }
    config
}

/// One cluster `up` with `addr` and a catch-all route to it.
pub fn single(addr: SocketAddr, protocol: &str) -> String {
    format!(
        "[[clusters]]\nname = \"up\"\nendpoints = [\"{addr}\"]\nprotocol = \"{protocol}\"\n\
         [[routes]]\ncluster = \"up\"\n"
    )
}

/// Starts a gateway in this process.
pub fn start(config: Config) -> Gateway {
    Gateway::start(StartOptions::new(config, "test.toml")).expect("gateway starts")
}

/// Writes `text` to `path` and starts a gateway from it, watching the file (so that
/// [`rewrite`] can reload it).
pub fn start_watching(path: &std::path::Path, text: &str) -> Gateway {
    let text = &front_text(text);
    std::fs::write(path, text).unwrap();
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut opts = StartOptions::new(config, &path.display().to_string());
    opts.path = Some(path.to_owned());
    Gateway::start(opts).expect("gateway starts")
}

/// Writes `text` to the watched `path` and reloads `gw` from it; the new generation.
pub fn rewrite(gw: &Gateway, path: &std::path::Path, text: &str) -> u64 {
    std::fs::write(path, front_text(text)).unwrap();
    tokio::task::block_in_place(|| gw.reload()).unwrap()
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

/// An HTTP/1.1 client.
pub fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends `req` and collects the reply.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, Bytes, Option<HeaderMap>) {
    let resp = client
        .request(req)
        .await
        .expect("request reaches the gateway");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body arrives");
    let trailers = collected.trailers().cloned();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

/// GET `path` from `addr` over HTTP/1.1; returns status and body text.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap();
    let (s, _, b, _) = send(&h1_client(), req).await;
    (s, String::from_utf8_lossy(&b).into_owned())
}

/// Writes raw bytes to `addr` and reads until the peer closes or `limit` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The built binary, started with `args`; reads its announcement lines.
pub struct Bin {
    pub child: Child,
    pub listener: SocketAddr,
    pub admin: Option<SocketAddr>,
}

impl Bin {
    pub fn start(args: &[&str], dir: &std::path::Path) -> Bin {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut listener, mut admin) = (None, None);
        for line in lines.by_ref() {
            let line = line.expect("stdout readable");
            let addr_of = |l: &str| -> SocketAddr {
                l.rsplit("://")
                    .next()
                    .unwrap()
                    .trim_end_matches('/')
                    .parse()
                    .unwrap()
            };
            if line.starts_with("tollgate: listener") && listener.is_none() {
                listener = Some(addr_of(&line));
            } else if line.starts_with("tollgate: admin on") {
                admin = Some(addr_of(&line));
            } else if line.starts_with("tollgate: ready") {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Bin {
            child,
            listener: listener.expect("binary announced a listener"),
            admin,
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for exit up to `limit`; returns the exit status if it exited.
    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = tokio::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Bin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> std::path::PathBuf {
    // Each front end's run of a test has its own (they may run at once).
    let front = if hyper_front() { "hyper" } else { "fast" };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{front}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An upstream answering `ok` that counts the connections it accepted.
pub async fn counting_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// Keys in the Redis at `port` (`DBSIZE` over RESP, by hand).
pub async fn redis_keys(port: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"DBSIZE\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    let reply = std::str::from_utf8(&buf[..n]).unwrap();
    reply
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected DBSIZE reply {reply:?}"))
}
