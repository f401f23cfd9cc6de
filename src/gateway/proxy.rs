//! The request path: route, rewrite headers, forward with the worker's own upstream pool,
//! stream both bodies, and map upstream failures to status codes.
//!
//! | upstream outcome | status |
//! |---|---|
//! | connection refused, reset, closed early, protocol error | 502 |
//! | connect timeout, no response head within the request timeout | 504 |
//! | no endpoint resolved | 503 |
//! | request body over `limits.max_body_bytes` | 413 |
//!
//! Each worker thread keeps its own [`Local`]: the snapshot it serves and its own `hyper-util`
//! clients (connection pools), rebuilt only when a reload changes client settings. A request
//! clones only thread-local or connection-local `Arc`s, so cores share no reference counts on
//! the hot path.

use super::config::UpstreamProtocol;
use super::headers::{add_forwarding, strip_hop_by_hop, via_value};
use super::route::RouteMatch;
use super::server::ConnCtx;
use super::state::{Cluster, Shared, Snapshot};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::cell::RefCell;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// The body sent upstream: the client's body, streamed, cut at the size limit.
pub type ReqBody = Limited<Incoming>;
/// The body sent to the client: the upstream's body, streamed, or a short local answer.
pub type RespBody = Either<Incoming, Full<Bytes>>;
type HttpClient = Client<HttpConnector, ReqBody>;

/// Settings that, when a reload changes them, need new clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientSettings {
    connect: Duration,
    idle: Duration,
}

#[derive(Debug, Clone)]
struct Clients {
    settings: ClientSettings,
    h1: HttpClient,
    h2: HttpClient,
}

impl Clients {
    fn new(settings: ClientSettings) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(settings.connect));
        conn.set_nodelay(true);
        conn.enforce_http(true);
        let build = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(settings.idle)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            if h2 {
                b.http2_only(true);
            }
            b.build(conn.clone())
        };
        Self {
            settings,
            h1: build(false),
            h2: build(true),
        }
    }
}

/// What one worker thread serves with.
#[derive(Debug)]
struct Local {
    shared_id: usize,
    snap: Arc<Snapshot>,
    clients: Clients,
}

thread_local! {
    static LOCAL: RefCell<Option<Arc<Local>>> = const { RefCell::new(None) };
}

/// This thread's [`Local`] for the current snapshot.
fn local(shared: &Shared) -> Arc<Local> {
    let shared_id = shared as *const Shared as usize;
    let cur = shared.current.load();
    LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        if let Some(l) = slot.as_ref()
            && l.shared_id == shared_id
            && l.snap.generation == cur.generation
        {
            return l.clone();
        }
        let settings = ClientSettings {
            connect: cur.connect_timeout,
            idle: cur.idle_timeout,
        };
        let clients = match slot.as_ref() {
            Some(l) if l.shared_id == shared_id && l.clients.settings == settings => {
                l.clients.clone()
            }
            _ => Clients::new(settings),
        };
        let l = Arc::new(Local {
            shared_id,
            snap: arc_swap::Guard::into_inner(cur),
            clients,
        });
        *slot = Some(l.clone());
        l
    })
}

/// A short local answer.
pub fn local_response(status: StatusCode, msg: &'static str) -> Response<RespBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(msg.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Decrements the in-flight counters however the request ends (including cancellation).
struct InFlight<'a>(&'a ConnCtx);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.shared.stats.in_flight.decr();
        // Relaxed: read only by this connection's idle check, a heuristic.
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    let shared = &conn.shared;
    shared.stats.requests.incr();
    shared.stats.in_flight.incr();
    // Relaxed: see `InFlight::drop`.
    conn.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&conn);
    let local = local(shared);
    let log = local.snap.config.log.access_log.then(|| {
        (
            req.method().clone(),
            host_of(&req).unwrap_or("-").to_owned(),
            req.uri().path().to_owned(),
            req.version(),
        )
    });
    let (resp, upstream) = proxy(&conn, &local, req).await;
    let status = resp.status();
    shared.stats.response(status.as_u16());
    let micros = start.elapsed().as_micros() as u64;
    shared.stats.duration_us.add(micros as i64);
    if let Some((method, host, path, version)) = log {
        tracing::info!(
            target: "tollgate::access",
            client = %conn.peer.ip(),
            %method,
            host,
            path,
            ?version,
            status = status.as_u16(),
            upstream = upstream.map(|a| a.to_string()).unwrap_or_default(),
            micros,
        );
    }
    Ok(resp)
}

/// The request's host: the URI authority (HTTP/2, absolute-form) or the `Host` header.
fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

async fn proxy(
    conn: &ConnCtx,
    local: &Local,
    req: Request<Incoming>,
) -> (Response<RespBody>, Option<std::net::SocketAddr>) {
    let snap = &local.snap;
    let stats = &conn.shared.stats;
    let host = host_of(&req).unwrap_or("");
    let route = match snap
        .routes
        .find(host, req.uri().path(), req.method().as_str())
    {
        RouteMatch::Route(i) => i,
        RouteMatch::NotFound => {
            stats.unrouted.incr();
            return (local_response(StatusCode::NOT_FOUND, "no route\n"), None);
        }
        RouteMatch::MethodNotAllowed => {
            stats.unrouted.incr();
            return (
                local_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
                None,
            );
        }
    };
    let cluster: &Cluster = &snap.clusters[snap.route_cluster[route]];
    if let Some(max) = snap.max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            stats.body_too_large.incr();
            return (
                local_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
                None,
            );
        }
    }
    let Some((ep_index, addr)) = cluster.pick() else {
        return (
            local_response(StatusCode::SERVICE_UNAVAILABLE, "no upstream endpoint\n"),
            None,
        );
    };
    let (mut parts, body) = req.into_parts();
    let host = host_of_parts(&parts).map(str::to_owned);
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri = match Uri::builder()
        .scheme("http")
        .authority(addr.to_string())
        .path_and_query(path_and_query)
        .build()
    {
        Ok(u) => u,
        Err(_) => {
            return (
                local_response(StatusCode::BAD_REQUEST, "bad request target\n"),
                None,
            );
        }
    };
    let inbound_version = parts.version;
    strip_hop_by_hop(&mut parts.headers, true);
    add_forwarding(
        &mut parts.headers,
        conn.peer.ip(),
        if conn.tls { "https" } else { "http" },
        host.as_deref(),
        inbound_version,
    );
    if cluster.preserve_host {
        if let Some(h) = host.as_deref()
            && !parts.headers.contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(h)
        {
            parts.headers.insert(header::HOST, v);
        }
    } else {
        parts.headers.remove(header::HOST);
    }
    parts.uri = uri;
    let client = match cluster.protocol {
        UpstreamProtocol::Http1 => {
            parts.version = Version::HTTP_11;
            &local.clients.h1
        }
        UpstreamProtocol::H2c => {
            parts.version = Version::HTTP_2;
            &local.clients.h2
        }
    };
    let limit = snap
        .max_body
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let upstream_req = Request::from_parts(parts, Limited::new(body, limit));
    cluster.stats.requests.incr();
    cluster.stats.in_flight.incr();
    let result =
        tokio::time::timeout(snap.route_timeout[route], client.request(upstream_req)).await;
    cluster.stats.in_flight.decr();
    let (status, msg) = match result {
        Ok(Ok(resp)) => {
            let (mut rp, body) = resp.into_parts();
            if rp.status.is_server_error() {
                cluster.stats.failures.incr();
                cluster.endpoint_failed(ep_index, addr);
            }
            strip_hop_by_hop(&mut rp.headers, false);
            rp.headers.append(header::VIA, via_value(rp.version));
            return (Response::from_parts(rp, Either::Left(body)), Some(addr));
        }
        Ok(Err(e)) => classify(&e, stats),
        Err(_elapsed) => {
            stats.upstream_timeouts.incr();
            (StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n")
        }
    };
    if status != StatusCode::PAYLOAD_TOO_LARGE {
        cluster.stats.failures.incr();
        cluster.endpoint_failed(ep_index, addr);
    }
    tracing::debug!(upstream = %addr, status = status.as_u16(), "upstream request failed");
    (local_response(status, msg), Some(addr))
}

fn host_of_parts(parts: &http::request::Parts) -> Option<&str> {
    parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Maps a client error to a status and message.
fn classify(
    err: &hyper_util::client::legacy::Error,
    stats: &super::stats::Stats,
) -> (StatusCode, &'static str) {
    if find_cause::<LengthLimitError>(err).is_some() {
        stats.body_too_large.incr();
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    if err.is_connect() {
        stats.upstream_connect_errors.incr();
        let timed_out = find_cause::<std::io::Error>(err)
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        return if timed_out {
            (StatusCode::GATEWAY_TIMEOUT, "upstream connect timed out\n")
        } else {
            (StatusCode::BAD_GATEWAY, "upstream connect failed\n")
        };
    }
    stats.upstream_resets.incr();
    (StatusCode::BAD_GATEWAY, "upstream connection failed\n")
}

/// The first error of type `T` in `err`'s source chain, `err` included.
fn find_cause<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}
