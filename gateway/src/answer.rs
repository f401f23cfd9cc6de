//! Errors of the layered request path as answers: tollgate rejections by
//! [`tollgate::http::Rejection`] (503/429/504 with `Retry-After`), upstream failures as part 1
//! mapped them (502/504/413).

use crate::error::{RouteTimedOut, TryTimedOut};
use crate::pool::{UpBody, UpstreamError};
use crate::stats::Stats;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full, LengthLimitError};
use tollgate_core::BoxError;
use tollgate_core::error::find_cause;

/// The body sent to the client: the upstream's body, streamed, or a short local answer.
pub(crate) type RespBody = Either<UpBody, Full<Bytes>>;

/// A short local answer.
pub(crate) fn local_response(status: StatusCode, msg: &'static str) -> Response<RespBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(msg.as_bytes()))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Whether the failure is the endpoint's (counted against it) rather than the client's or a
/// local rejection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// The upstream failed or timed out.
    Upstream,
    /// A layer refused the request, or the client's body was too large.
    Local,
}

/// A gRPC "trailers-only" answer for a rejection: `UNAVAILABLE` (503), `RESOURCE_EXHAUSTED`
/// (429) or `DEADLINE_EXCEEDED` (504), with `grpc-retry-pushback-ms` when there is a hint.
fn grpc_rejection(r: &tollgate::http::Rejection, message: &str) -> Response<Full<Bytes>> {
    let code = match r.status() {
        StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::GATEWAY_TIMEOUT => 4,
        _ => 14,
    };
    let mut resp = Response::new(Full::default());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    let msg: String = message
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b' ' || b == b'-' {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&msg) {
        h.insert("grpc-message", v);
    }
    if let Some(d) = r.retry_after() {
        h.insert(
            "grpc-retry-pushback-ms",
            HeaderValue::from(d.as_millis() as u64),
        );
    }
    resp
}

/// The status and message for an upstream failure (counted in `stats`): 504 for a connect
/// timeout, 502 for a refused connect or a connection that failed after it was made.
pub(crate) fn upstream_failure(err: &UpstreamError, stats: &Stats) -> (StatusCode, &'static str) {
    match err {
        UpstreamError::ConnectTimeout => {
            stats.upstream_connect_errors.incr();
            (StatusCode::GATEWAY_TIMEOUT, "upstream connect timed out\n")
        }
        UpstreamError::Connect(_) => {
            stats.upstream_connect_errors.incr();
            (StatusCode::BAD_GATEWAY, "upstream connect failed\n")
        }
        UpstreamError::Http(_) => {
            stats.upstream_resets.incr();
            (StatusCode::BAD_GATEWAY, "upstream connection failed\n")
        }
    }
}

/// The answer to `err`, and whom it blames; `grpc` asks for gRPC statuses.
pub(crate) fn error_response(
    err: &BoxError,
    grpc: bool,
    stats: &Stats,
) -> (Response<RespBody>, Blame) {
    let err: &(dyn std::error::Error + 'static) = &**err;
    if find_cause::<LengthLimitError>(err).is_some() {
        stats.body_too_large.incr();
        return (
            local_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
            Blame::Local,
        );
    }
    if let Some(up) = find_cause::<UpstreamError>(err) {
        let (status, msg) = upstream_failure(up, stats);
        return (local_response(status, msg), Blame::Upstream);
    }
    if find_cause::<TryTimedOut>(err).is_some() || find_cause::<RouteTimedOut>(err).is_some() {
        stats.upstream_timeouts.incr();
        return (
            local_response(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n"),
            Blame::Upstream,
        );
    }
    if let Some((r, cause)) = tollgate::http::Rejection::find(err) {
        stats.rejected.incr();
        let resp: Response<Full<Bytes>> = if grpc {
            grpc_rejection(&r, &cause.to_string())
        } else {
            r.to_response_with(&cause.to_string())
        };
        return (resp.map(Either::Right), Blame::Local);
    }
    if find_cause::<tollgate_core::error::Panicked>(err).is_some() {
        return (
            local_response(StatusCode::BAD_GATEWAY, "upstream handler failed\n"),
            Blame::Upstream,
        );
    }
    tracing::debug!(error = %err, "request failed");
    (
        local_response(StatusCode::BAD_GATEWAY, "upstream request failed\n"),
        Blame::Upstream,
    )
}
