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
//! Each worker thread keeps its own `Local` copy of the snapshot's `Arc` and its own upstream
//! connections ([`pool`]). A request clones only thread-local or connection-local
//! `Arc`s, so cores share no reference counts on the hot path.

use super::answer::{Answer, Blame, RespBody};
use super::body::ClientBody;
use super::config::UpstreamProtocol;
use super::ctx::ConnCtx;
use super::headers::{
    add_forwarding, client as client_addr, relay_fields, strip_hop_by_hop, via_value,
};
use super::pool::direct::Split;
use super::pool::{self, ReqBody};
use super::route::{RouteMatch, host_of};
use super::stack::endpoints::Cluster;
use super::state::{Local, Snapshot, local};
use super::trace::{self, TraceCtx, Traced, Tracer};
use super::tunnel;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, LengthLimitError};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

mod layered;
use layered::layered;

/// Decrements the in-flight counters however the request ends; a request dropped before its
/// answer was ready (the client reset the stream or went away) counts against the
/// connection's budget of abandoned requests (`max_abandoned`; `done` marks the others).
struct InFlight<'a> {
    conn: &'a ConnCtx,
    max_abandoned: u64,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.conn.shared.stats.in_flight.decr();
        // Relaxed: read only by this connection's idle check, a heuristic.
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.done {
            self.conn.abandoned(self.max_abandoned);
        }
    }
}

/// Serves one request; never fails (errors become responses).
pub(crate) async fn handle<B: ClientBody>(
    conn: Arc<ConnCtx>,
    mut req: Request<B>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    let shared = &conn.shared;
    shared.stats.requests.incr();
    shared.stats.in_flight.incr();
    // Relaxed: see `InFlight::drop`.
    conn.in_flight.fetch_add(1, Ordering::Relaxed);
    let local = local(shared);
    let limits = &local.snap.config.limits;
    let mut guard = InFlight {
        conn: &conn,
        max_abandoned: limits.max_abandoned_per_connection,
        done: false,
    };
    // The last request the connection may make: the driver closes it (HTTP/1.1 after this
    // answer, HTTP/2 with GOAWAY) once this answer is out.
    let last = conn.start_request(limits.max_requests_per_connection);
    let h1 = req.version() <= Version::HTTP_11;
    // Routed on the request as the client sent it (before the gateway sets its request id
    // and trace context), as the fast path routes it; a WebSocket over HTTP/2 as the `GET`
    // of its handshake.
    let found = {
        let method = if tunnel::is_h2_websocket(&req) {
            "GET"
        } else {
            req.method().as_str()
        };
        local.snap.routes.find_http(&req, method)
    };
    let id = request_id(&local.snap, &mut req);
    let traced = shared.tracer.as_ref().map(|t| trace_context(t, &mut req));
    let log = local.snap.config.log.access_log.then(|| {
        (
            client_addr(req.headers(), &conn.forwarding),
            req.method().clone(),
            host_of(&req).unwrap_or("-").to_owned(),
            req.uri().path().to_owned(),
            req.version(),
        )
    });
    let (mut resp, upstream, served) = proxy(&conn, &local, req, start, found).await;
    guard.done = true;
    if let Some((t, what)) = traced {
        let failure = resp.extensions().get::<trace::Failure>();
        record_request(
            &t,
            &local.snap,
            what,
            served,
            resp.status().as_u16(),
            failure,
            start,
        );
    }
    // The gateway's own answers carry the request id (an upstream's answer is its own).
    if let (Some((name, value)), None) = (&id, upstream) {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    if last && h1 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = resp.status();
    shared.stats.response(status.as_u16());
    let elapsed = start.elapsed();
    shared.stats.duration.record(status.as_u16(), elapsed);
    let micros = elapsed.as_micros() as u64;
    if let Some((client, method, host, path, version)) = log {
        tracing::info!(
            target: "tollgate::access",
            %client,
            %method,
            host,
            path,
            ?version,
            status = status.as_u16(),
            upstream = upstream.map(|a| a.to_string()).unwrap_or_default(),
            request_id = id.as_ref().and_then(|(_, v)| v.to_str().ok()).unwrap_or("-"),
            micros,
        );
    }
    Ok(resp)
}

/// Gives `req` its trace context (see `trace.rs`): continues the client's `traceparent` or
/// starts a trace, sends the gateway's span upstream as the parent, and carries the context
/// to the layers in the request's extensions. Returns it with the request's method and path
/// for the request span.
fn trace_context<B>(tracer: &Arc<Tracer>, req: &mut Request<B>) -> (Traced, [String; 2]) {
    let values = req.headers().get_all(trace::TRACEPARENT);
    let ctx = TraceCtx::new(values.iter().map(HeaderValue::as_bytes), tracer.fresh());
    if let Ok(v) = HeaderValue::from_bytes(&ctx.value()) {
        req.headers_mut()
            .insert(header::HeaderName::from_static(trace::TRACEPARENT), v);
    }
    let t = Traced {
        ctx,
        tracer: tracer.clone(),
        clock: trace::Clock::now(),
    };
    req.extensions_mut().insert(t.clone());
    let what = [
        req.method().as_str().to_owned(),
        req.uri().path().to_owned(),
    ];
    (t, what)
}

/// Records the request span of a traced request: method, path, route, the cluster that
/// served it (`served`: its route and branch), status.
fn record_request(
    t: &Traced,
    snap: &Snapshot,
    what: [String; 2],
    served: Option<(usize, usize)>,
    status: u16,
    failure: Option<&trace::Failure>,
    start: Instant,
) {
    if !t.ctx.sampled {
        return;
    }
    let [method, path] = what;
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", path),
        KeyValue::new("http.response.status_code", i64::from(status)),
    ];
    if let Some((r, b)) = served {
        let (prefix, cluster) = snap.route_labels(r, b);
        if let Some(prefix) = prefix {
            attributes.push(KeyValue::new("http.route", prefix.to_owned()));
        }
        if let Some(cluster) = cluster {
            attributes.push(KeyValue::new("tollgate.cluster", cluster.to_owned()));
        }
    }
    if let Some(f) = failure {
        let kind = if f.rejected { "rejected" } else { "failed" };
        attributes.push(KeyValue::new("error.type", kind));
        attributes.push(KeyValue::new("tollgate.error", f.message.clone()));
    }
    let span = trace::request_span(&t.ctx, start, attributes, status);
    t.tracer.record(&t.ctx, &t.clock, span);
}

/// Serves a request `found` routed; returns the answer, the endpoint that gave it, and the
/// route and branch that served it.
async fn proxy<B: ClientBody>(
    conn: &ConnCtx,
    local: &Local,
    mut req: Request<B>,
    start: Instant,
    found: RouteMatch,
) -> (
    Response<RespBody>,
    Option<std::net::SocketAddr>,
    Option<(usize, usize)>,
) {
    let (resp, addr) = match pre_route(local, &mut req) {
        Err(refused) => {
            let (mut resp, addr) = answer_locally(refused, &conn.shared.stats);
            if refused == Answer::HeadTooLarge {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            (resp, addr)
        }
        Ok(h2_websocket) => match found {
            RouteMatch::Route(route) => {
                let plan = &local.snap.route_plans[route];
                let branch = plan.pick(req.headers());
                let out = routed(conn, &local.snap, (route, branch), req, h2_websocket).await;
                plan.branches[branch]
                    .stats
                    .latency
                    .record(out.0.status().as_u16(), start.elapsed());
                return (out.0, out.1, Some((route, branch)));
            }
            RouteMatch::NotFound => answer_locally(Answer::NoRoute, &conn.shared.stats),
            RouteMatch::MethodNotAllowed => {
                answer_locally(Answer::MethodNotAllowed, &conn.shared.stats)
            }
        },
    };
    (resp, addr, None)
}

/// The checks before routing: a refused `CONNECT`, an oversized head (answered with
/// `Connection: close`), a bad `Host`. A WebSocket over HTTP/2 becomes its handshake's `GET`
/// here (then `Ok(true)`).
fn pre_route<B>(local: &Local, req: &mut Request<B>) -> Result<bool, Answer> {
    let snap = &local.snap;
    // A reverse proxy opens no tunnels: CONNECT is refused whatever the routes allow, but for
    // a WebSocket over HTTP/2 (RFC 8441), routed as the `GET` of the HTTP/1.1 handshake it
    // becomes (see `tunnel.rs`).
    let h2_websocket = tunnel::is_h2_websocket(req);
    if h2_websocket {
        *req.method_mut() = http::Method::GET;
    } else if req.method() == http::Method::CONNECT {
        return Err(Answer::MethodNotAllowed);
    }
    // hyper bounds a head by its read buffer only while the head is incomplete, so one that
    // arrives whole in a few large reads can pass `max_header_bytes`: measured here, and the
    // connection closed after the 431 as the fast path does (HTTP/2 has its own limit).
    if req.version() <= Version::HTTP_11 && head_size(req) > snap.config.limits.max_header_bytes {
        return Err(Answer::HeadTooLarge);
    }
    // RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host` (HTTP/2 has `:authority`),
    // and a valid one.
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) if crate::route::valid_host(h.as_bytes()) => {}
        // HTTP/1.0 may leave it out; HTTP/2 has `:authority` (checked with the target).
        (None, _) if req.version() != Version::HTTP_11 => {}
        _ => return Err(Answer::BadHost),
    }
    check_target(req)?;
    Ok(h2_websocket)
}

/// The origin form of a target's path and query: an absolute-form target with an empty path
/// (`http://host?q=1`) has `?q=1` there, which must leave as `/?q=1` (RFC 9112 §3.2.1).
pub(crate) fn origin_form(pq: Option<&http::uri::PathAndQuery>) -> std::borrow::Cow<'_, str> {
    match pq.map(http::uri::PathAndQuery::as_str) {
        None | Some("") => std::borrow::Cow::Borrowed("/"),
        Some(s) if s.starts_with('/') || s == "*" => std::borrow::Cow::Borrowed(s),
        Some(s) => std::borrow::Cow::Owned(format!("/{s}")),
    }
}

/// The request target's form (RFC 9112 §3.2): no dot segment in its path
/// ([`has_dot_segment`](crate::route::has_dot_segment)); `*` only with `OPTIONS`; an authority
/// without a path only with `CONNECT` (refused above); an absolute target only with `http` or
/// `https`, and without userinfo (RFC 9110 §4.2.4: deprecated, and it would hide the host
/// routing reads). A host that is not valid is `BadHost`.
fn check_target<B>(req: &Request<B>) -> Result<(), Answer> {
    let uri = req.uri();
    if crate::route::has_dot_segment(uri.path().as_bytes()) {
        return Err(Answer::BadTarget);
    }
    if uri.path() == "*" && uri.authority().is_none() {
        return if req.method() == http::Method::OPTIONS {
            Ok(())
        } else {
            Err(Answer::BadTarget)
        };
    }
    if let Some(authority) = uri.authority() {
        let scheme_ok = uri
            .scheme()
            .is_some_and(|s| *s == http::uri::Scheme::HTTP || *s == http::uri::Scheme::HTTPS);
        if !scheme_ok || authority.as_str().contains('@') {
            return Err(Answer::BadTarget);
        }
        if !crate::route::valid_host(authority.as_str().as_bytes()) {
            return Err(Answer::BadHost);
        }
    }
    Ok(())
}

/// Serves a request matched to route `route`, sending it to the cluster of the route's
/// branch `branch` (its latency is counted by the caller); `h2_websocket`: it is a WebSocket
/// over HTTP/2, already turned into its handshake's `GET`.
async fn routed<B: ClientBody>(
    conn: &ConnCtx,
    snap: &Snapshot,
    (route, branch): (usize, usize),
    mut req: Request<B>,
    h2_websocket: bool,
) -> (Response<RespBody>, Option<std::net::SocketAddr>) {
    let stats = &conn.shared.stats;
    let plan = &snap.route_plans[route];
    let branch = &plan.branches[branch];
    let cluster: &Arc<Cluster> = &snap.clusters[branch.cluster];
    // The gateway speaks the WebSocket handshake only to HTTP/1.1 upstreams, and a batch
    // answers no handshake.
    if h2_websocket && (cluster.protocol != UpstreamProtocol::Http1 || plan.batch.is_some()) {
        return answer_locally(Answer::MethodNotAllowed, stats);
    }
    let listener_admission = snap
        .listener_admission
        .get(conn.listener)
        .and_then(Option::as_ref);
    if let Some(max) = snap.max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max) {
            return answer_locally(Answer::BodyTooLarge, stats);
        }
    }
    if !plan.is_plain() || cluster.layers.is_some() || listener_admission.is_some() {
        let upgrade = tunnel::requested(&mut req, conn);
        return layered(conn, snap, plan, branch, listener_admission, req, upgrade).await;
    }
    let Some((ep_index, addr)) = cluster.pick() else {
        return answer_locally(Answer::NoEndpoint, stats);
    };
    let traced = req.extensions().get::<Traced>().cloned();
    let upgrade = (cluster.protocol == UpstreamProtocol::Http1)
        .then(|| tunnel::requested(&mut req, conn))
        .flatten();
    let (mut parts, body) = req.into_parts();
    let host = layered::client_host(&parts);
    let path_and_query = origin_form(parts.uri.path_and_query());
    let path_and_query = path_and_query.as_ref();
    // A TLS request leaves in HTTP/1.1 form; the pool turns it into HTTP/2 if the endpoint
    // picks that by ALPN.
    let shape = match cluster.tls {
        Some(_) => UpstreamProtocol::Http1,
        None => cluster.protocol,
    };
    // HTTP/1.1 upstreams get origin form; HTTP/2 needs scheme and authority.
    let uri = match shape {
        UpstreamProtocol::Http1 => Uri::try_from(path_and_query).map_err(|_| ()),
        UpstreamProtocol::H2c => Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ()),
    };
    let uri = match uri {
        Ok(u) => u,
        Err(_) => return answer_locally(Answer::BadTarget, stats),
    };
    let inbound_version = parts.version;
    strip_hop_by_hop(&mut parts.headers, true);
    add_forwarding(
        &mut parts.headers,
        &conn.forwarding,
        host.as_ref(),
        inbound_version,
    );
    let host = if cluster.preserve_host { host } else { None };
    match host {
        // Already the `Host` header (HTTP/1.1 client) or to be set from `:authority`.
        Some(h) => {
            parts.headers.insert(header::HOST, h);
        }
        None => {
            if let Ok(v) = HeaderValue::try_from(addr.to_string()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    if let Some(u) = &upgrade {
        tunnel::restore(&mut parts.headers, u);
    }
    parts.uri = uri;
    parts.version = match shape {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::H2c => Version::HTTP_2,
    };
    let limit = snap
        .max_body
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let upstream_req: Request<ReqBody> = Request::from_parts(parts, body.limited(limit));
    let settings = pool::Settings {
        connect_timeout: snap.connect_timeout,
        idle_timeout: snap.idle_timeout,
        max_idle: pool::MAX_IDLE_PER_ENDPOINT,
    };
    cluster.stats.requests.incr();
    cluster.stats.in_flight.incr();
    // The sends through hyper's client are boxed: their state would make every request's
    // future (moved a few times per request) kilobytes larger. A body held whole, or small
    // enough to be read whole, goes on the gateway's own HTTP/1.1 client (`pool::direct`).
    let send = async {
        if let Some(tls) = &cluster.tls {
            return match tls.peer(addr) {
                Some(peer) => {
                    Box::pin(pool::send_tls(
                        addr,
                        &peer,
                        upstream_req,
                        settings,
                        upgrade.is_some(),
                    ))
                    .await
                }
                None => Err(pool::UpstreamError::Connect(
                    std::io::ErrorKind::AddrNotAvailable.into(),
                )),
            };
        }
        match cluster.protocol {
            UpstreamProtocol::Http1 if upgrade.is_some() => {
                Box::pin(pool::send_upgrade(addr, upstream_req, settings)).await
            }
            UpstreamProtocol::Http1 => match pool::direct::split(upstream_req).await? {
                Split::Direct(parts, body) => pool::direct::send(addr, parts, body, settings).await,
                Split::Hyper(req) => Box::pin(pool::send_h1(addr, req, settings)).await,
            },
            UpstreamProtocol::H2c => Box::pin(pool::send_h2(addr, upstream_req, settings)).await,
        }
    };
    let sent = Instant::now();
    let result = tokio::time::timeout(snap.route_timeout[route], send).await;
    cluster.endpoint_latency(ep_index, addr, sent.elapsed());
    cluster.stats.in_flight.decr();
    if let Some(t) = &traced {
        let status = match &result {
            Ok(Ok(r)) => Some(r.status().as_u16()),
            _ => None,
        };
        let error = status
            .is_none_or(|s| s >= 500)
            .then_some(std::borrow::Cow::Borrowed("upstream failed"));
        let attributes = trace::upstream_attributes(addr, status);
        t.child(None, "upstream", SpanKind::Client, sent, attributes, error);
    }
    let answer = match result {
        Ok(Ok(resp)) => {
            let (mut rp, body) = resp.into_parts();
            if rp.status.is_server_error() {
                cluster.stats.failures.incr();
                cluster.endpoint_failed(ep_index, addr);
            }
            relay_fields(rp.status, &mut rp.headers);
            rp.headers.append(header::VIA, via_value(rp.version));
            let resp = Response::from_parts(rp, Either::Left(body));
            let resp = match upgrade {
                Some(u) => tunnel::finish(u, resp, snap.upgrade_idle_timeout, &conn.shared),
                None => resp,
            };
            return (resp, Some(addr));
        }
        // A body cut at the size limit is the client's fault, whatever else broke.
        Ok(Err(e)) if pool::is_caused_by::<LengthLimitError>(&e) => Answer::BodyTooLarge,
        Ok(Err(e)) if pool::client_body_failed(&e) => Answer::BodyUnreadable,
        Ok(Err(e)) => Answer::of_upstream(&e),
        Err(_elapsed) => Answer::TimedOut,
    };
    answer.count(stats);
    if answer.blame() == Blame::Upstream {
        cluster.stats.failures.incr();
        cluster.endpoint_failed(ep_index, addr);
    }
    tracing::debug!(upstream = %addr, status = answer.status().as_u16(), "upstream request failed");
    (answer.response(), Some(addr))
}

/// A local answer to a request that went nowhere (counted in `stats`).
fn answer_locally(
    answer: Answer,
    stats: &super::stats::Stats,
) -> (Response<RespBody>, Option<std::net::SocketAddr>) {
    answer.count(stats);
    (answer.response(), None)
}

/// The size of `req`'s head as it came on the wire, near enough: the request line and each
/// field with its separators.
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + ": \r\n".len())
        .sum();
    line + fields + 2
}

/// Gives `req` its request id (see `request_id.rs`): the client's when trusted and well formed,
/// else a fresh one, replacing whatever the client sent; `None` when request ids are off.
fn request_id<B>(snap: &Snapshot, req: &mut Request<B>) -> Option<(http::HeaderName, HeaderValue)> {
    let name = snap.request_id_name.as_ref()?;
    let kept = req
        .headers()
        .get(name)
        .filter(|v| snap.request_id.trust && crate::request_id::keepable(v.as_bytes()))
        .cloned();
    let value = match kept {
        Some(v) => v,
        // One allocation, shared by the request's copy and the response's.
        None => {
            HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(crate::request_id::fresh()))
                .ok()?
        }
    };
    req.headers_mut().insert(name.clone(), value.clone());
    Some((name.clone(), value))
}
