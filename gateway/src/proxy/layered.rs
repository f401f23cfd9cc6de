//! The request path through a route's layers (see [`stack`](crate::stack) for their order):
//! the request made ready for the upstream (forwarding headers, a body held whole when it has
//! none), sent through the route's cache, admission and cluster stack, and the answer or the
//! layer's rejection turned into the client's answer.

use crate::answer::{Answer, Blame, QuotaLeft, RespBody, error_response, is_rejection};
use crate::body::ClientBody;
use crate::config::UpstreamProtocol;
use crate::ctx::ConnCtx;
use crate::headers::{
    add_forwarding, client as client_addr, relay_fields, strip_hop_by_hop, via_value,
};
use crate::pool;
use crate::stack::GwBody;
use crate::stack::admission::AdmissionPolicy;
use crate::stack::admission::AdmitCtx;
use crate::stack::route::RouteService;
use crate::state::{Branch, RoutePlan, Snapshot};
use crate::{trace, tunnel};
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{Either, Full};
use std::sync::Arc;
use tower::ServiceExt;

/// The client's host as a header value: built from the target's authority (HTTP/2's
/// `:authority`, an absolute-form target) when it has one, else a cheap clone of `Host`.
pub(super) fn client_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    // The target's authority first, as routing reads it (`route::host_of`): an absolute-form
    // target or HTTP/2's `:authority` names the host, and a `Host` field that says otherwise is
    // replaced (RFC 9112 §3.2.2), so a client cannot be routed by one host and present
    // another to the upstream.
    match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    }
}

/// Strips hop-by-hop headers, adds the forwarding headers, and keeps the client's `Host` when
/// the cluster preserves it (otherwise the upstream service sets the endpoint's).
fn forward_headers(conn: &ConnCtx, parts: &mut http::request::Parts, preserve_host: bool) {
    let host = client_host(parts);
    strip_hop_by_hop(&mut parts.headers, true);
    add_forwarding(
        &mut parts.headers,
        &conn.forwarding,
        host.as_ref(),
        parts.version,
    );
    parts.headers.remove(header::HOST);
    if preserve_host && let Some(h) = host {
        parts.headers.insert(header::HOST, h);
    }
}

/// The request path through the layers (see [`stack`](crate::stack) for the order).
pub(super) async fn layered<B: ClientBody>(
    conn: &ConnCtx,
    snap: &Snapshot,
    plan: &RoutePlan,
    branch: &Branch,
    listener_admission: Option<&Arc<AdmissionPolicy>>,
    req: Request<B>,
    upgrade: Option<tunnel::Upgrade>,
) -> (Response<RespBody>, Option<std::net::SocketAddr>) {
    let stats = &conn.shared.stats;
    let cluster = &snap.clusters[branch.cluster];
    // An upgrade only to an HTTP/1.1 cluster; otherwise the request goes as a plain one.
    let upgrade = upgrade.filter(|_| cluster.protocol == UpstreamProtocol::Http1);
    if let Some(batch) = &plan.batch {
        // Boxed, as the cache's call below: rarer paths whose state would make every
        // request's future larger.
        let resp = Box::pin(batch.call(req)).await;
        return (resp, None);
    }
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (mut parts, body) = req.into_parts();
    // Read before `forward_headers` rewrites the chain.
    let client = client_addr(&parts.headers, &conn.forwarding);
    forward_headers(conn, &mut parts, cluster.preserve_host);
    if let Some(u) = &upgrade {
        tunnel::restore(&mut parts.headers, u);
        parts.extensions.insert(pool::Upgrading);
    }
    // The upstream gets the origin form: the client's path and query, moved (not copied) out
    // of its target; `forward_headers` above has read its authority.
    let path = std::mem::take(&mut parts.uri).into_parts().path_and_query;
    let mut origin = http::uri::Parts::default();
    // An absolute-form target with an empty path (`http://host?q=1`) leaves as `/?q=1`.
    origin.path_and_query = Some(match super::origin_form(path.as_ref()) {
        std::borrow::Cow::Owned(fixed) => match PathAndQuery::try_from(fixed) {
            Ok(p) => p,
            Err(_) => return (Answer::BadTarget.response(), None),
        },
        std::borrow::Cow::Borrowed(_) => path.unwrap_or_else(|| PathAndQuery::from_static("/")),
    });
    let Ok(uri) = Uri::from_parts(origin) else {
        return (Answer::BadTarget.response(), None);
    };
    parts.uri = uri;
    // A request without a body is held whole, so that it can be retried or cached.
    let body: GwBody = if body.is_end_stream() {
        Either::Right(Full::default())
    } else {
        let limit = snap
            .max_body
            .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
        body.limited(limit)
    };
    let req = Request::from_parts(parts, body);
    let admission = plan.admission.as_ref().or(listener_admission).map(|p| {
        (
            p.clone(),
            AdmitCtx {
                client,
                route_class: plan.priority.clone(),
            },
        )
    });
    let inner = RouteService {
        admission,
        cluster: branch.service(cluster),
        timeout: plan.timeout,
    };
    cluster.stats.requests.incr();
    cluster.stats.in_flight.incr();
    let result = match &plan.cache {
        // An upgrade is never cached.
        Some(cache) if upgrade.is_none() => Box::pin(cache.call(inner, req)).await,
        _ => inner.oneshot(req).await.map(|r| r.map(Either::Left)),
    };
    cluster.stats.in_flight.decr();
    match result {
        Ok(resp) => {
            let (mut rp, body) = resp.into_parts();
            if rp.status.is_server_error() {
                cluster.stats.failures.incr();
            }
            let addr = match &body {
                Either::Left(up) => up.upstream(),
                Either::Right(_) => None,
            };
            relay_fields(rp.status, &mut rp.headers);
            // `rate_limit.headers = "all"`: what the client's key has left.
            if let Some(q) = rp.extensions.get::<QuotaLeft>() {
                q.add_to(&mut rp.headers);
            }
            rp.headers.append(header::VIA, via_value(rp.version));
            let resp = Response::from_parts(rp, body);
            let resp = match upgrade {
                Some(u) => tunnel::finish(u, resp, snap.upgrade_idle_timeout, &conn.shared),
                None => resp,
            };
            (resp, addr)
        }
        Err(e) => {
            let rejected = is_rejection(&e);
            if rejected {
                branch.stats.rejected.incr();
            }
            let (mut resp, blame) = error_response(&e, grpc, stats);
            // The request span says why (a breaker, pool, admission or budget rejection, or
            // the upstream's failure).
            if conn.shared.tracer.is_some() {
                resp.extensions_mut().insert(trace::Failure {
                    rejected,
                    message: e.to_string(),
                });
            }
            if blame == Blame::Upstream {
                cluster.stats.failures.incr();
            }
            tracing::debug!(
                cluster = %cluster.name,
                status = resp.status().as_u16(),
                error = %e,
                "request failed"
            );
            (resp, None)
        }
    }
}
