//! The one table from every failure to its answer. Every path that answers a request by itself
//! (the HTTP/1.1 fast path, the hyper path, layered and batch routes) takes its status and text
//! from here, so the same failure reads the same on every path:
//!
//! | what happened | [`Answer`] | status | text | blamed on |
//! |---|---|---|---|---|
//! | no route for the host and path | `NoRoute` | 404 | `no route` | client |
//! | a route, but not for this method | `MethodNotAllowed` | 405 | `method not allowed` | client |
//! | a request target the upstream URI cannot hold, or of the wrong form (a `.` or `..` segment, plain or `%2e`; `*` but for `OPTIONS`; an authority alone; a scheme other than `http`/`https`; userinfo) | `BadTarget` | 400 | `bad request target` | client |
//! | an HTTP/1.1 request without `Host`, or with two, or a host that is not valid (a space, `/`, a quote, a port over 65535) | `BadHost` | 400 | `request needs exactly one valid host` | client |
//! | a request head over `limits.max_header_bytes` or `limits.max_headers` | `HeadTooLarge` | 431 | `request header fields too large` | client |
//! | the client's request body broke its own framing (a bad chunk) | `BodyUnreadable` | 400 | `request body could not be read` | client |
//! | the request body is over `limits.max_body_bytes` (or a batch route's `max_body_bytes`) | `BodyTooLarge` | 413 | `request body too large` | client |
//! | a batch route's request body is not JSON | `NotJson` | 400 | `request body is not valid JSON` | client |
//! | the cluster has no endpoint | `NoEndpoint` | 503 | `no upstream endpoint` | cluster |
//! | connecting to the endpoint timed out | `ConnectTimedOut` | 504 | `upstream connect timed out` | endpoint |
//! | connecting was refused or failed | `ConnectFailed` | 502 | `upstream connect failed` | endpoint |
//! | the gateway refused an `https://` endpoint's certificate (wrong name, expired, unknown CA) | `TlsCertRejected` | 502 | `upstream certificate rejected` | endpoint |
//! | any other failed TLS handshake with an endpoint (it refused the gateway) | `TlsFailed` | 502 | `upstream tls handshake failed` | endpoint |
//! | the connection failed after it was made (reset, garbage) | `ConnectionFailed` | 502 | `upstream connection failed` | endpoint |
//! | a try or the whole request ran past its timeout | `TimedOut` | 504 | `upstream timed out` | endpoint |
//! | an in-process upstream (a layer's inner service) panicked | `HandlerFailed` | 502 | `upstream handler failed` | endpoint |
//! | any other failure on the way upstream | `RequestFailed` | 502 | `upstream request failed` | endpoint |
//! | a batch call failed for another reason | `BatchFailed` | 502 | `batch call failed` | endpoint |
//!
//! A batch route also answers with the status and body the upstream gave a whole batch, and
//! with the batch's own timeout (504) and malformed-answer (502) errors, whose text says which
//! limit or element was at fault.
//!
//! Tollgate's own rejections (overloaded, shed, circuit open, no endpoints, rate limited,
//! deadline passed) are mapped by the facade's [`Rejection`] (503/429/504 with `Retry-After`,
//! or the gRPC status with `grpc-retry-pushback-ms` for a gRPC request), the same mapping an
//! axum or tonic user of the layers gets; [`error_response`] applies both.
//!
//! A 429 from an admission policy's rate limit also carries the policy's quota in the fields of
//! the IETF draft *RateLimit header fields for HTTP* (draft-ietf-httpapi-ratelimit-headers,
//! structured-field form of drafts 08–10), unless its `rate_limit.headers = "none"`:
//!
//! ```text
//! Retry-After: 12
//! RateLimit-Policy: "api";q=100;w=60
//! RateLimit: "api";r=0;t=12
//! ```
//!
//! With `rate_limit.headers = "all"` the upstream's answers to admitted requests carry them
//! too ([`QuotaLeft`]): `r` is what the client's key has left after this request, `t` the
//! seconds until it may make one more than that (0 when its whole quota is left):
//!
//! ```text
//! RateLimit-Policy: "api";q=100;w=60
//! RateLimit: "api";r=97;t=1
//! ```
//!
//! The policy stage wraps its rate-limit rejections in [`QuotaSpent`], which carries the
//! policy's [`RateLimitFields`] (rendered once, when the policy is built); the rejection stays
//! the wrapper's `source()`, so the mapping above still finds it.

use crate::error::{ClientBodyFailed, RouteTimedOut, TryTimedOut};
use crate::pool::{UpBody, UpstreamError};
use crate::stats::Stats;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full, LengthLimitError};
use tollgate::http::Rejection;
use tollgate_core::BoxError;
use tollgate_core::error::{Panicked, find_cause};

mod quota;

pub(crate) use quota::{QuotaLeft, QuotaSpent, RateLimitFields};

/// The body sent to the client: the upstream's body, streamed, or a short local answer.
pub(crate) type RespBody = Either<UpBody, Full<Bytes>>;

/// Whether the failure is the endpoint's (counted against it) rather than the client's or a
/// local rejection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// The upstream failed or timed out.
    Upstream,
    /// A layer refused the request, or the client's request was at fault.
    Local,
}

/// A failure the gateway answers by itself; see the table in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    NoRoute,
    MethodNotAllowed,
    BadTarget,
    BadHost,
    HeadTooLarge,
    BodyTooLarge,
    BodyUnreadable,
    NotJson,
    NoEndpoint,
    ConnectTimedOut,
    ConnectFailed,
    TlsCertRejected,
    TlsFailed,
    ConnectionFailed,
    TimedOut,
    HandlerFailed,
    RequestFailed,
    BatchFailed,
}

impl Answer {
    /// Every answer, in the table's order.
    #[cfg(test)]
    const ALL: [Answer; 18] = [
        Self::NoRoute,
        Self::MethodNotAllowed,
        Self::BadTarget,
        Self::BadHost,
        Self::HeadTooLarge,
        Self::BodyTooLarge,
        Self::BodyUnreadable,
        Self::NotJson,
        Self::NoEndpoint,
        Self::ConnectTimedOut,
        Self::ConnectFailed,
        Self::TlsCertRejected,
        Self::TlsFailed,
        Self::ConnectionFailed,
        Self::TimedOut,
        Self::HandlerFailed,
        Self::RequestFailed,
        Self::BatchFailed,
    ];

    /// Its HTTP status.
    pub(crate) const fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadTarget | Self::BadHost | Self::BodyUnreadable | Self::NotJson => {
                StatusCode::BAD_REQUEST
            }
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectTimedOut | Self::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Self::ConnectFailed
            | Self::TlsCertRejected
            | Self::TlsFailed
            | Self::ConnectionFailed
            | Self::HandlerFailed
            | Self::RequestFailed
            | Self::BatchFailed => StatusCode::BAD_GATEWAY,
        }
    }

    /// Its text, the answer's whole `text/plain` body (with its line end).
    pub(crate) const fn text(self) -> &'static str {
        match self {
            Self::NoRoute => "no route\n",
            Self::MethodNotAllowed => "method not allowed\n",
            Self::BadTarget => "bad request target\n",
            Self::BadHost => "request needs exactly one valid host\n",
            Self::HeadTooLarge => "request header fields too large\n",
            Self::BodyTooLarge => "request body too large\n",
            Self::BodyUnreadable => "request body could not be read\n",
            Self::NotJson => "request body is not valid JSON\n",
            Self::NoEndpoint => "no upstream endpoint\n",
            Self::ConnectTimedOut => "upstream connect timed out\n",
            Self::ConnectFailed => "upstream connect failed\n",
            Self::TlsCertRejected => "upstream certificate rejected\n",
            Self::TlsFailed => "upstream tls handshake failed\n",
            Self::ConnectionFailed => "upstream connection failed\n",
            Self::TimedOut => "upstream timed out\n",
            Self::HandlerFailed => "upstream handler failed\n",
            Self::RequestFailed => "upstream request failed\n",
            Self::BatchFailed => "batch call failed\n",
        }
    }

    /// Whether it counts against the endpoint (and the cluster's failures).
    pub(crate) const fn blame(self) -> Blame {
        match self {
            Self::NoRoute
            | Self::MethodNotAllowed
            | Self::BadTarget
            | Self::BadHost
            | Self::HeadTooLarge
            | Self::BodyTooLarge
            | Self::BodyUnreadable
            | Self::NotJson
            | Self::NoEndpoint => Blame::Local,
            Self::ConnectTimedOut
            | Self::ConnectFailed
            | Self::TlsCertRejected
            | Self::TlsFailed
            | Self::ConnectionFailed
            | Self::TimedOut
            | Self::HandlerFailed
            | Self::RequestFailed
            | Self::BatchFailed => Blame::Upstream,
        }
    }

    /// The answer for a failed upstream connection or exchange.
    pub(crate) fn of_upstream(err: &UpstreamError) -> Self {
        match err {
            UpstreamError::ConnectTimeout => Self::ConnectTimedOut,
            UpstreamError::Connect(_) => Self::ConnectFailed,
            UpstreamError::Tls(e) if crate::tls::upstream::failure(e).1 => Self::TlsCertRejected,
            UpstreamError::Tls(_) => Self::TlsFailed,
            UpstreamError::Http(_) | UpstreamError::Exchange(_) => Self::ConnectionFailed,
            // Answered as the client's fault where it is found (`client_body_failed`).
            UpstreamError::Body(_) => Self::BodyUnreadable,
        }
    }

    /// Counts it in the gateway's counters (`/state`'s `stats`).
    pub(crate) fn count(self, stats: &Stats) {
        match self {
            Self::ConnectTimedOut
            | Self::ConnectFailed
            | Self::TlsCertRejected
            | Self::TlsFailed => {
                stats.upstream_connect_errors.incr();
            }
            Self::ConnectionFailed => stats.upstream_resets.incr(),
            Self::TimedOut => stats.upstream_timeouts.incr(),
            Self::BodyTooLarge => stats.body_too_large.incr(),
            Self::NoRoute | Self::MethodNotAllowed => stats.unrouted.incr(),
            Self::BadTarget
            | Self::BadHost
            | Self::HeadTooLarge
            | Self::BodyUnreadable
            | Self::NotJson
            | Self::NoEndpoint
            | Self::HandlerFailed
            | Self::RequestFailed
            | Self::BatchFailed => {}
        }
    }

    /// The answer as a response: its status and text, `text/plain`.
    pub(crate) fn response(self) -> Response<RespBody> {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            self.text().as_bytes(),
        ))));
        *r.status_mut() = self.status();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    }
}

/// What `err`, a failed request's error, means: a tollgate rejection (with the error in the
/// chain that decided it) or one of the gateway's own answers.
pub(crate) fn classify<'e>(
    err: &'e (dyn std::error::Error + 'static),
) -> Result<Answer, (Rejection, &'e (dyn std::error::Error + 'static))> {
    if find_cause::<LengthLimitError>(err).is_some() {
        return Ok(Answer::BodyTooLarge);
    }
    if find_cause::<ClientBodyFailed>(err).is_some() {
        return Ok(Answer::BodyUnreadable);
    }
    if let Some(up) = find_cause::<UpstreamError>(err) {
        if crate::pool::client_body_failed(up) {
            return Ok(Answer::BodyUnreadable);
        }
        return Ok(Answer::of_upstream(up));
    }
    if find_cause::<TryTimedOut>(err).is_some() || find_cause::<RouteTimedOut>(err).is_some() {
        return Ok(Answer::TimedOut);
    }
    if let Some(found) = Rejection::find(err) {
        return Err(found);
    }
    if find_cause::<Panicked>(err).is_some() {
        return Ok(Answer::HandlerFailed);
    }
    Ok(Answer::RequestFailed)
}

/// Whether `err` is a layer's refusal (admission, breaker, pool limit) rather than a failure.
pub(crate) fn is_rejection(err: &BoxError) -> bool {
    classify(&**err).is_err()
}

/// The answer to `err` (counted in `stats`), and whom it blames; `grpc` asks for gRPC
/// statuses for rejections.
pub(crate) fn error_response(
    err: &BoxError,
    grpc: bool,
    stats: &Stats,
) -> (Response<RespBody>, Blame) {
    let err: &(dyn std::error::Error + 'static) = &**err;
    match classify(err) {
        Ok(answer) => {
            answer.count(stats);
            if answer == Answer::RequestFailed {
                tracing::debug!(error = %err, "request failed");
            }
            (answer.response(), answer.blame())
        }
        Err((r, cause)) => {
            stats.rejected.incr();
            let mut resp: Response<Full<Bytes>> = if grpc {
                r.to_grpc_response_with(&cause.to_string())
            } else {
                r.to_response_with(&cause.to_string())
            };
            if resp.status() == StatusCode::TOO_MANY_REQUESTS
                && let Some(spent) = find_cause::<QuotaSpent>(err)
            {
                let reset = r.retry_after_secs().unwrap_or(1);
                spent.fields().add_rejected(resp.headers_mut(), reset);
            }
            (resp.map(Either::Right), Blame::Local)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tollgate_core::error::Overloaded;

    #[test]
    fn every_answer_has_one_status_text_and_blame() {
        for a in Answer::ALL {
            let text = a.text();
            assert!(text.ends_with('\n') && !text.trim().is_empty(), "{a:?}");
            assert!(!text.starts_with(char::is_uppercase), "{a:?}: lower case");
            let is_client = a.status().is_client_error() || a == Answer::NoEndpoint;
            assert_eq!(a.blame() == Blame::Local, is_client, "{a:?}");
            let r = a.response();
            assert_eq!(r.status(), a.status());
            assert_eq!(r.headers()["content-type"], "text/plain");
        }
    }

    #[test]
    fn errors_find_their_answer_through_the_chain() {
        let stats = Stats::default();
        let timed_out: BoxError = Box::new(TryTimedOut);
        let (r, blame) = error_response(&timed_out, false, &stats);
        assert_eq!(
            (r.status(), blame),
            (StatusCode::GATEWAY_TIMEOUT, Blame::Upstream)
        );
        assert_eq!(stats.upstream_timeouts.sum(), 1);

        let shed: BoxError = Box::new(Overloaded::new(Some(Duration::from_millis(1500))));
        let (r, blame) = error_response(&shed, false, &stats);
        assert_eq!(
            (r.status(), blame),
            (StatusCode::SERVICE_UNAVAILABLE, Blame::Local)
        );
        assert_eq!(r.headers()["retry-after"], "2");
        let (r, _) = error_response(&shed, true, &stats);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-retry-pushback-ms"], "1500");
        assert_eq!(stats.rejected.sum(), 2);

        let other: BoxError = "something else".into();
        let (r, blame) = error_response(&other, false, &stats);
        assert_eq!(
            (r.status(), blame),
            (StatusCode::BAD_GATEWAY, Blame::Upstream)
        );
    }

    #[test]
    fn a_spent_quota_answers_429_with_the_policy_fields() {
        use tollgate_core::error::RateLimited;
        let stats = Stats::default();
        let fields = Arc::new(RateLimitFields::new("api", 100, Duration::from_secs(60)));
        let spent: BoxError = Box::new(QuotaSpent::new(
            fields.clone(),
            Box::new(RateLimited::new(Duration::from_millis(11_200))),
        ));
        let (r, blame) = error_response(&spent, false, &stats);
        assert_eq!(
            (r.status(), blame),
            (StatusCode::TOO_MANY_REQUESTS, Blame::Local)
        );
        assert_eq!(r.headers()["retry-after"], "12");
        assert_eq!(r.headers()["ratelimit-policy"], "\"api\";q=100;w=60");
        assert_eq!(r.headers()["ratelimit"], "\"api\";r=0;t=12");
        assert!(is_rejection(&spent));

        // Without the wrapper (a policy with `headers = "none"`): `Retry-After` only.
        let bare: BoxError = Box::new(RateLimited::new(Duration::from_secs(1)));
        let (r, _) = error_response(&bare, false, &stats);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().get("ratelimit").is_none());
        assert!(r.headers().get("ratelimit-policy").is_none());
    }
}
