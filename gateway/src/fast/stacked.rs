//! Routes with layers, served on the fast path's own request: the head parsed and rewritten
//! by [`head::prepare`](super::head::prepare), the answer head parsed and relayed as on a
//! plain route, and in between the route's admission policy and the cluster's stack (breaker,
//! pool, balance, endpoint breakers), the very services hyper's requests go through.
//!
//! The layers are generic over the request and the answer, so the stack a cluster builds
//! once serves two request types: [`UpRequest`](crate::stack::UpRequest) (an `http` request
//! with its body, from hyper or from [`layered`]) and [`RawRequest`] here: an
//! `http::Request` whose body is the upstream's request already written out ([`RawBody`]),
//! whose header map holds only the fields a layer reads (the admission policy's class,
//! deadline and rate-limit fields, when the request has them), and whose answer is the
//! upstream's head parsed, with the connection to relay the body from ([`RawAnswer`]). Both
//! share the layers' state: one breaker, one limit, one set of endpoint latencies. The
//! endpoint the balancer picks ([`Upstream`]) runs the same exchange as a plain route
//! ([`Exchange`]), on the worker's pooled upstream connections, after adding its address as
//! `Host` when the cluster does not keep the client's. The upstream's 429 or 503 brings its
//! `Retry-After` along, which a breaker and the balancer read, as they read it on an `http`
//! answer.
//!
//! What a layered route costs over a plain one is then the layers' own work, the admission
//! call and two boxed futures (this request's, and the endpoint's), instead of an `http`
//! request and answer built field by field, hyper's client, and the answer written back from
//! a header map.
//!
//! A cluster without layers behind an admission policy (the route's or the listener's) is
//! round robin here ([`PlainRaw`]), as on a plain route. A balancer's hash key travels too:
//! its field (or the cookies) in the header map, or the path as the request's URI.
//!
//! A cluster's `[clusters.retry]` works here as on an `http` request ([`RetriedRaw`]): the
//! retry layer keeps a copy of the written request (when its body is within
//! `replay_limit_bytes`), classifies each try by the gateway's policy (the answer's status,
//! `grpc-status` and pushback, copied into the answer's header map for it; the failure's
//! kind; whether the method, or an `Idempotency-Key`, lets it be sent twice), marks each try
//! so that the balancer avoids the endpoints already tried, and hedges; each try has the
//! per-try timeout. A retry's or hedge's copy reads its answer into a buffer of its own.
//!
//! Taken by a route that is not plain when every cluster it sends to speaks plain HTTP/1.1,
//! the route (and branch) has no retries of its own, cache or batch, and the gateway is not
//! tracing (see [`RoutePlan::stacked`](crate::state::RoutePlan::stacked)); every other such
//! route goes through [`layered`]. The answers are the same on both: a
//! layer's rejection or an upstream failure is answered by [`error_response`] (with the
//! request id), an upstream's answer relayed as it came (with what a rate limit has left,
//! when the policy says so), with the same counters and access log.

use super::bufs::Buf;
use super::exchange::{Exchange, Failure};
use super::head::Head;
use super::local::{Done, log_access};
use super::response::{Framing, RespHead};
use super::{Bufs, InFlight, Next, Target, date, exchange_close, layered, relay};
use crate::answer::{Blame, QuotaLeft, error_response, is_rejection};
use crate::ctx::ConnCtx;
use crate::error::RouteTimedOut;
use crate::pool::sockets as upstream;
use crate::pool::{Settings, UpstreamError};
use crate::request_id::Id;
use crate::stack::admission::AdmitCtx;
use crate::stack::cluster::ClusterSvc;
use crate::stack::endpoints::Cluster;
use crate::stack::retry::{Counted, Replay, Retried, RetryPolicy, Try, TryCall};
use crate::stack::upstream::Upstream;
use crate::state::Snapshot;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tollgate_balance::HttpKey;
use tollgate_core::BoxError;
use tower::util::Either;
use tower::{Service, ServiceExt};

/// A request on its way through a cluster's stack from the fast path.
pub(crate) type RawRequest = http::Request<RawBody>;

/// The upstream's answer to a [`RawRequest`]: its status (and, on a 429 or 503, its
/// `Retry-After`, which the layers read) with the rest in the body.
pub(crate) type RawResponse = http::Response<RawAnswer>;

/// What the upstream gets: the request as it goes on the wire, and the buffer its answer is
/// read into (both the connection's own, moved along and back).
#[derive(Debug)]
pub(crate) struct RawBody {
    /// Head and body; the `Host` line goes at `host_at` when set.
    out: Vec<u8>,
    uin: Buf,
    host_at: Option<usize>,
    head_method: bool,
    /// The exchange may send it again on a fresh connection when a pooled one was stale.
    replayable: bool,
    /// The client's connection ends after this answer.
    close: bool,
    /// A method that may be sent twice, or a request with an `Idempotency-Key`: a retry
    /// layer may repeat it after it was sent.
    idempotent: bool,
    /// A retry layer may send a copy (`[clusters.retry]`, and the body within its
    /// `replay_limit_bytes`).
    replay: bool,
    /// A retry layer reads the answer: its `grpc-status`, `grpc-retry-pushback-ms` and
    /// `Retry-After` go into the answer's header map whatever its status.
    retry_fields: bool,
}

/// `[clusters.retry]` on this path's requests: the gateway's retry policy classifies them as
/// it does `http` requests, with the method's (or an `Idempotency-Key`'s) verdict carried in
/// the body, and replays the written request.
impl Replay for RawBody {
    fn idempotent(req: &RawRequest) -> bool {
        req.body().idempotent
    }

    /// A copy to send again (a retry or a hedge), when it may be: the request's bytes, with
    /// no answer buffer yet (the exchange takes one when it reads).
    fn replay(&self) -> Option<Self> {
        self.replay.then(|| Self {
            out: self.out.clone(),
            uin: Buf::taken(),
            host_at: self.host_at,
            head_method: self.head_method,
            replayable: self.replayable,
            close: self.close,
            idempotent: self.idempotent,
            replay: true,
            retry_fields: self.retry_fields,
        })
    }
}

/// The upstream's answer head: parsed, its client head written out, the first body bytes
/// read, and the connection the rest comes on.
#[derive(Debug)]
pub(crate) struct RawAnswer {
    up: TcpStream,
    resp: RespHead,
    /// The client's head.
    out: Vec<u8>,
    /// The upstream's bytes, the body's first ones pending.
    uin: Buf,
    addr: SocketAddr,
    /// Idle connections the endpoint keeps per worker.
    max_idle: usize,
}

/// Sends `body` to `addr` (with `Host: addr` when the route does not keep the client's) on a
/// pooled or new connection, and reads the answer head.
pub(crate) async fn exchange(
    addr: SocketAddr,
    mut body: RawBody,
    settings: Settings,
) -> Result<RawResponse, UpstreamError> {
    if body.uin.data.is_empty() {
        // A retry's or hedge's copy: its own buffer.
        body.uin = Buf::new();
    }
    if let Some(at) = body.host_at.take() {
        let mut line = [0u8; 64];
        let mut w = &mut line[..];
        let _ = write!(w, "host: {addr}\r\n");
        let n = 64 - w.len();
        body.out.splice(at..at, line[..n].iter().copied());
    }
    let sent = Instant::now();
    let exchange = Exchange {
        addr,
        head_method: body.head_method,
        replayable: body.replayable,
        close: body.close,
        start: sent,
        connect_timeout: settings.connect_timeout,
        idle: settings.idle_timeout,
        date: date::value(sent),
    };
    match exchange.run(&mut body.out, &mut body.uin).await {
        Failure::Answered(up, resp) => {
            let mut answer = http::Response::new(RawAnswer {
                up,
                resp,
                out: body.out,
                uin: body.uin,
                addr,
                max_idle: settings.max_idle,
            });
            *answer.status_mut() =
                http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
            // The layers read `Retry-After` on a 429 or 503 (a breaker waits after a 503, a
            // balancer lowers the endpoint's share); a retry layer reads it, and gRPC's status and
            // pushback, on any answer.
            if body.retry_fields {
                let names = [GRPC_STATUS, GRPC_PUSHBACK, "retry-after"];
                let found = fields(&answer.body().out, names.map(str::as_bytes));
                for (name, v) in names.into_iter().zip(found) {
                    if let Some(v) = v {
                        answer
                            .headers_mut()
                            .insert(HeaderName::from_static(name), v);
                    }
                }
            } else if matches!(resp.status, 429 | 503)
                && let Some(v) = field(&answer.body().out, b"retry-after")
            {
                answer.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(answer)
        }
        Failure::ConnectTimeout => Err(UpstreamError::ConnectTimeout),
        Failure::Connect(e) => Err(UpstreamError::Connect(e)),
        Failure::Reset | Failure::Timeout => Err(UpstreamError::Exchange(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset, closed or garbage before an answer head",
        ))),
    }
}

const GRPC_STATUS: &str = "grpc-status";
const GRPC_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The future of one request through an endpoint (boxed: it is the exchange's).
pub(crate) type RawFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<RawResponse, BoxError>> + Send>>;

/// An endpoint of a cluster's stack takes this path's requests: the request already written,
/// sent on the worker's pooled connections as a plain route's is, counted in the endpoint's
/// counters as its `http` requests are. Only a plain HTTP/1.1 endpoint takes them
/// ([`RoutePlan::stacked`](crate::state::RoutePlan::stacked) picks the routes that send them);
/// any other refuses them rather than send them in the wrong protocol.
impl Service<RawRequest> for Upstream {
    type Response = RawResponse;
    type Error = BoxError;
    type Future = RawFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RawRequest) -> RawFuture {
        if !self.is_plain_h1() {
            return refused(BoxError::from(
                "the fast path's request reached an endpoint that is not plain HTTP/1.1",
            ));
        }
        let stats = self.stats().cloned();
        if let Some(s) = &stats {
            s.requests.incr();
        }
        send(self.addr(), req, self.settings(), move |took, failed| {
            if let Some(s) = &stats {
                s.latency.record(took);
                if failed {
                    s.failures.incr();
                }
            }
        })
    }
}

/// A request refused before it was sent.
fn refused(e: BoxError) -> RawFuture {
    Box::pin(std::future::ready(Err(e)))
}

/// Sends `req` to `addr` ([`exchange`]), then tells `done` how long it took and whether it
/// failed (an error or a 5xx).
fn send(
    addr: SocketAddr,
    req: RawRequest,
    settings: Settings,
    done: impl FnOnce(std::time::Duration, bool) + Send + 'static,
) -> RawFuture {
    let start = Instant::now();
    crate::boxed::pinned(|| async move {
        let sent = exchange(addr, req.into_body(), settings).await;
        let failed = sent.as_ref().map_or(true, |r| r.status().is_server_error());
        done(start.elapsed(), failed);
        sent.map_err(BoxError::from)
    })
}

/// A cluster without layers as a service of the fast path's own requests
/// ([`stacked`](crate::fast::stacked)): round robin, as a plain route's; its endpoints count
/// the request, its time and a failure as they do for a plain route.
#[derive(Debug, Clone)]
pub(crate) struct PlainRaw(pub Arc<Cluster>);

impl Service<RawRequest> for PlainRaw {
    type Response = RawResponse;
    type Error = BoxError;
    type Future = RawFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RawRequest) -> RawFuture {
        let Some((index, addr)) = self.0.pick() else {
            return refused(BoxError::from(tollgate_balance::NoEndpoints::new()));
        };
        let cluster = self.0.clone();
        send(addr, req, cluster.settings, move |took, failed| {
            cluster.endpoint_latency(index, addr, took);
            if failed {
                cluster.endpoint_failed(index, addr);
            }
        })
    }
}

/// One try of this path's request: counted, under the per-try timeout (never traced: the
/// path is not taken while tracing).
impl<S> Service<RawRequest> for Try<S>
where
    S: Service<RawRequest, Response = RawResponse, Error = BoxError>,
{
    type Response = RawResponse;
    type Error = BoxError;
    type Future = TryCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<RawRequest>::poll_ready(self.inner_mut(), cx)
    }

    fn call(&mut self, req: RawRequest) -> Self::Future {
        self.untraced(req)
    }
}

/// A cluster's stack under its retry layer, for this path's requests: what the admission
/// policy calls, as it calls the stack itself on a cluster without retries.
#[derive(Clone)]
pub(crate) struct RetriedRaw {
    policy: RetryPolicy,
    retried: Retried<ClusterSvc>,
}

impl Service<RawRequest> for RetriedRaw {
    type Response = RawResponse;
    type Error = BoxError;
    type Future = Counted<<Retried<ClusterSvc> as Service<RawRequest>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<RawRequest>::poll_ready(&mut self.retried, cx)
    }

    fn call(&mut self, req: RawRequest) -> Self::Future {
        self.policy.counted(self.retried.call(req))
    }
}

/// The value of the first field `name` (lower case) in a written head.
fn field(head: &[u8], name: &[u8]) -> Option<HeaderValue> {
    let [value] = fields(head, [name]);
    value
}

/// The value of the first valid field of each of `names` (lower case) in a written head, in
/// one pass over it.
fn fields<const N: usize>(head: &[u8], names: [&[u8]; N]) -> [Option<HeaderValue>; N] {
    let mut found = [const { None }; N];
    for line in head.split(|b| *b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let Some(i) = names
            .iter()
            .position(|n| line[..colon].eq_ignore_ascii_case(n))
        else {
            continue;
        };
        if found[i].is_none() {
            found[i] = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok();
        }
    }
    found
}

/// What a stacked request carries from its head to the layers.
#[derive(Debug, Default)]
pub(super) struct Carried {
    /// The fields the layers read (the admission policy's, the balancer's hash field), those
    /// of them the request has.
    pub(super) fields: HeaderMap,
    /// The request's path, when the balancer hashes it.
    pub(super) uri: Option<http::Uri>,
    /// A gRPC request (`Content-Type: application/grpc...`): rejections answer with gRPC
    /// statuses.
    pub(super) grpc: bool,
    /// The request has an `Idempotency-Key`: a retry may repeat it whatever its method.
    pub(super) idempotency_key: bool,
}

impl Carried {
    /// Takes from `headers` the fields named in `wanted` (the admission policy's) and what
    /// `hash` reads (a field, the cookies, or `path`).
    pub(super) fn from_head(
        headers: &[httparse::Header<'_>],
        path: &str,
        wanted: &[HeaderName],
        hash: Option<&HttpKey>,
    ) -> Self {
        let hashed = match hash {
            Some(HttpKey::Header(name)) => Some(name),
            Some(HttpKey::Cookie(_)) => Some(&header::COOKIE),
            Some(HttpKey::Path) | None => None,
        };
        let mut carried = Self {
            uri: matches!(hash, Some(HttpKey::Path))
                .then(|| http::Uri::try_from(path).ok())
                .flatten(),
            ..Self::default()
        };
        for h in headers {
            if h.name.eq_ignore_ascii_case("content-type") {
                carried.grpc = h.value.starts_with(b"application/grpc");
            } else if h.name.eq_ignore_ascii_case("idempotency-key") {
                carried.idempotency_key = true;
            }
            let Some(name) = wanted
                .iter()
                .chain(hashed)
                .find(|w| w.as_str().eq_ignore_ascii_case(h.name))
            else {
                continue;
            };
            if let Ok(v) = HeaderValue::from_bytes(h.value) {
                carried.fields.append(name.clone(), v);
            }
        }
        carried
    }
}

/// Where a stacked request goes and what it carries.
pub(super) struct Stacked {
    pub(super) head: Head,
    pub(super) target: Target,
    pub(super) carried: Carried,
    pub(super) host_at: Option<usize>,
    /// When the request's head was complete.
    pub(super) start: Instant,
    /// Where its bytes start in the client buffer.
    pub(super) head_at: usize,
    pub(super) id: Id,
}

/// Sends the request in `b.out` (head and body) through the route's admission policy and
/// the cluster's stack, and relays the answer (or writes the rejection or failure).
pub(super) async fn serve(
    client: &mut TcpStream,
    ctx: &Arc<ConnCtx>,
    b: &mut Bufs,
    snap: &Snapshot,
    s: Stacked,
) -> Next {
    let Stacked {
        mut head,
        target,
        carried,
        host_at,
        start,
        head_at,
        id,
    } = s;
    // The connection's last request: answered with `Connection: close`, then closed.
    if ctx.start_request(snap.config.limits.max_requests_per_connection) {
        head.close = true;
    }
    let stats = &ctx.shared.stats;
    let plan = &snap.route_plans[target.route];
    let branch = &plan.branches[target.branch];
    let cluster = &snap.clusters[branch.cluster];
    let mut in_flight = InFlight::start(stats, &cluster.stats);
    let retried = cluster.layers.as_ref().and_then(|l| l.retried());
    let body = RawBody {
        out: std::mem::take(&mut b.out),
        uin: std::mem::replace(&mut b.uin, Buf::taken()),
        host_at,
        head_method: head.head_method,
        // Sent again only what may be sent twice and has no body, as on the hyper path.
        replayable: head.idempotent && head.body_len == 0,
        close: exchange_close(&head, ctx),
        idempotent: head.idempotent || carried.idempotency_key,
        replay: retried.is_some_and(|(p, _)| head.body_len <= p.replay_limit() as u64),
        retry_fields: retried.is_some(),
    };
    let mut req = http::Request::new(body);
    *req.headers_mut() = carried.fields;
    if let Some(uri) = carried.uri {
        *req.uri_mut() = uri;
    }
    let policy = plan.admission.as_ref().or(snap
        .listener_admission
        .get(ctx.listener)
        .and_then(Option::as_ref));
    // The cluster's stack (under its retry layer when it has one), or round robin over a
    // cluster without layers.
    let stack = match (&cluster.layers, retried) {
        (_, Some((policy, retried))) => Either::Left(Either::Right(RetriedRaw {
            policy: policy.clone(),
            retried: retried.clone(),
        })),
        (Some(l), None) => Either::Left(Either::Left(l.stack().clone())),
        (None, None) => Either::Right(PlainRaw(cluster.clone())),
    };
    // Pinned where it is built: moved into the timeout, this future (the layers' state) was
    // the largest copy of the request.
    let call = std::pin::pin!(async {
        match policy {
            Some(p) => {
                let admit = AdmitCtx {
                    client: head.client.unwrap_or(ctx.peer.ip()),
                    route_class: plan.priority.clone(),
                };
                p.admit(stack, req, &admit).await
            }
            None => stack.oneshot(req).await,
        }
    });
    let deadline = start + snap.route_timeout[target.route];
    let scoped = crate::stack::retry::ROUTE_DEADLINE.scope(deadline, call);
    let result = tokio::time::timeout_at(deadline, scoped)
        .await
        .unwrap_or_else(|_| Err(BoxError::from(RouteTimedOut)));
    in_flight.end();
    let idle = snap.idle_timeout;
    match result {
        Ok(resp) => {
            let (parts, answer) = resp.into_parts();
            let RawAnswer {
                mut up,
                resp,
                out,
                uin,
                addr,
                max_idle,
            } = answer;
            b.out = out;
            b.uin = uin;
            // `rate_limit.headers = "all"`: what the client's key has left.
            if let Some(q) = parts.extensions.get::<QuotaLeft>() {
                add_quota(&mut b.out, q);
            }
            let status = resp.status;
            stats.response(status);
            let elapsed = start.elapsed();
            stats.duration.record(status, elapsed);
            branch.stats.latency.record(status, elapsed);
            if status >= 500 {
                cluster.stats.failures.incr();
            }
            let done = Done {
                head_at,
                start,
                upstream: Some(addr),
                route: Some((target.route, target.branch)),
                id,
                // Only the tracer reads the exchange's times, and this path is not taken
                // while tracing.
                exchange: None,
            };
            log_access(ctx, snap, &b.cin.data[head_at..], &head, status, &done);
            let relayed = relay::relay(client, &mut up, b, resp, idle).await;
            ctx.touch();
            match relayed {
                relay::Relayed::Cut => Next::Close,
                relay::Relayed::Done { reusable } => {
                    if reusable {
                        upstream::checkin(addr, up, Instant::now(), idle, max_idle);
                    }
                    if exchange_close(&head, ctx) || resp.framing == Framing::Close {
                        Next::Close
                    } else {
                        Next::Done
                    }
                }
            }
        }
        Err(e) => {
            b.refill();
            if is_rejection(&e) {
                branch.stats.rejected.incr();
            }
            let (mut resp, blame) = error_response(&e, carried.grpc, stats);
            if blame == Blame::Upstream {
                cluster.stats.failures.incr();
            }
            let status = resp.status().as_u16();
            tracing::debug!(cluster = %cluster.name, status, error = %e, "request failed");
            // The gateway's own answers carry the request id.
            if let Some(name) = &snap.request_id_name
                && let Ok(v) = HeaderValue::from_bytes(id.as_bytes())
                && !v.is_empty()
            {
                resp.headers_mut().insert(name.clone(), v);
            }
            stats.response(status);
            let elapsed = start.elapsed();
            stats.duration.record(status, elapsed);
            branch.stats.latency.record(status, elapsed);
            let to = layered::To {
                head_method: head.head_method,
                close: head.close || ctx.shared.is_draining(),
                trailers: false,
                idle,
            };
            let next = layered::respond(client, b, resp, to).await;
            ctx.touch();
            let done = Done {
                head_at,
                start,
                upstream: None,
                route: Some((target.route, target.branch)),
                id,
                exchange: None,
            };
            log_access(ctx, snap, &b.cin.data[head_at..], &head, status, &done);
            next
        }
    }
}

/// Adds the `RateLimit-Policy` and `RateLimit` fields of `q` to the client's head in `out`
/// (before its blank line).
fn add_quota(out: &mut Vec<u8>, q: &QuotaLeft) {
    let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return;
    };
    let mut fields = HeaderMap::new();
    q.add_to(&mut fields);
    let mut lines = Vec::new();
    for (name, value) in &fields {
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    out.splice(end + 2..end + 2, lines);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_field_in_a_written_head() {
        let head =
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nRetry-After:  7 \r\n\r\n";
        assert_eq!(field(head, b"retry-after").unwrap(), "7");
        assert_eq!(field(head, b"content-length").unwrap(), "0");
        assert!(field(head, b"date").is_none());
        // The status line is not a field.
        assert!(
            field(
                b"HTTP/1.1 503 retry-after: 1\r\n\r\n",
                b"http/1.1 503 retry-after"
            )
            .is_none()
        );
    }

    #[test]
    fn finds_several_fields_in_one_pass() {
        let head =
            b"HTTP/1.1 200 OK\r\ngrpc-status: 14\r\nretry-after: 2\r\nGrpc-Status: 0\r\n\r\n";
        let [status, pushback, after] = fields(
            head,
            [b"grpc-status", b"grpc-retry-pushback-ms", b"retry-after"],
        );
        // The first of a repeated field, as `field` finds it.
        assert_eq!(status.unwrap(), "14");
        assert!(pushback.is_none());
        assert_eq!(after.unwrap(), "2");
    }

    #[test]
    fn carries_only_the_wanted_fields() {
        let headers = [
            httparse::Header {
                name: "X-Priority",
                value: b"high",
            },
            httparse::Header {
                name: "content-type",
                value: b"application/grpc+proto",
            },
            httparse::Header {
                name: "x-other",
                value: b"1",
            },
        ];
        let wanted = [HeaderName::from_static("x-priority")];
        let c = Carried::from_head(&headers, "/a", &wanted, None);
        assert!(c.grpc);
        assert_eq!(c.fields.len(), 1);
        assert_eq!(c.fields.get("x-priority").unwrap(), "high");
        assert!(c.uri.is_none());
        assert!(!c.idempotency_key);
        let none = Carried::from_head(&headers[2..], "/a", &wanted, None);
        assert!(!none.grpc);
        assert!(none.fields.is_empty());
        // A retry may repeat a request with an `Idempotency-Key`, whatever its method.
        let keyed = [httparse::Header {
            name: "Idempotency-Key",
            value: b"order-1",
        }];
        assert!(Carried::from_head(&keyed, "/a", &wanted, None).idempotency_key);
        // The balancer's hash key: its field, or the path.
        let key = HttpKey::header(HeaderName::from_static("x-other"));
        let c = Carried::from_head(&headers, "/a", &[], Some(&key));
        assert_eq!(c.fields.len(), 1);
        assert_eq!(c.fields.get("x-other").unwrap(), "1");
        let c = Carried::from_head(&headers, "/a/b", &[], Some(&HttpKey::path()));
        assert!(c.fields.is_empty());
        assert_eq!(c.uri.unwrap().path(), "/a/b");
    }
}
