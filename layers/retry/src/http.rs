//! HTTP and gRPC: [`HttpPolicy`] decides what to retry, [`ReplayBody`] makes a request body
//! replayable by buffering it up to a limit.
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tollgate_retry::http::{HttpPolicy, ReplayBody, DEFAULT_REPLAY_LIMIT};
//! use tollgate_retry::{RetryConfig, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = RetryLayer::new(RetryConfig::default()).unwrap().with_policy(HttpPolicy::default());
//! # let _ = layer;
//! // Before the retry layer: buffer the body (up to 64 KiB) so that it can be sent again.
//! let req = http::Request::post("/orders").body(Full::new(Bytes::from("{}"))).unwrap();
//! let (parts, body) = req.into_parts();
//! let body = ReplayBody::buffer(body, DEFAULT_REPLAY_LIMIT).await.unwrap();
//! assert!(body.is_replayable());
//! let req = http::Request::from_parts(parts, body);
//! # let _ = req;
//! # }
//! ```

use crate::policy::{Action, Policy};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_core::BoxError;
use tollgate_core::attempt::{Attempt, Attempts};
use tollgate_core::error::{Closed, Overloaded, find_cause};

/// The default most bytes of a request body buffered for replays: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A request body that can be sent again when it was small enough to buffer.
///
/// [`ReplayBody::buffer`] reads the body until it ends or passes the limit. A body that ended
/// within the limit is kept whole (data and trailers) and every copy replays it; a larger one
/// is sent once, its buffered start first and then the rest as it streams, and
/// [`HttpPolicy`] does not retry it.
#[derive(Debug)]
pub struct ReplayBody<B> {
    inner: Inner<B>,
}

#[derive(Debug)]
enum Inner<B> {
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Stream {
        head: VecDeque<Frame<Bytes>>,
        rest: B,
    },
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Reads `body` until it ends (a replayable body) or more than `limit` bytes of data have
    /// arrived (a body sent once). A `!Unpin` body can be passed as `Box::pin(body)`.
    ///
    /// # Errors
    ///
    /// The body's own error, if reading it fails.
    pub async fn buffer(mut body: B, limit: usize) -> Result<Self, B::Error> {
        let mut head = VecDeque::new();
        let mut len = 0usize;
        while !body.is_end_stream() {
            let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await else {
                break;
            };
            let frame = frame?;
            if let Some(d) = frame.data_ref() {
                len = len.saturating_add(d.len());
            }
            head.push_back(frame);
            if len > limit {
                return Ok(Self {
                    inner: Inner::Stream { head, rest: body },
                });
            }
        }
        let mut data = BytesMut::with_capacity(len);
        let mut trailers = None;
        for frame in head {
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        Ok(Self::full(data.freeze(), trailers))
    }
}

impl<B> ReplayBody<B> {
    fn full(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        Self {
            inner: Inner::Full {
                data: (!data.is_empty()).then_some(data),
                trailers,
            },
        }
    }

    /// A replayable body of `data`.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        Self::full(data.into(), None)
    }

    /// A replayable empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new(), None)
    }

    /// Whether the body was buffered whole, so that copies can replay it.
    pub fn is_replayable(&self) -> bool {
        matches!(self.inner, Inner::Full { .. })
    }

    /// A copy that replays the same bytes, if the body was buffered whole.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.inner {
            Inner::Full { data, trailers } => Some(Self {
                inner: Inner::Full {
                    data: data.clone(),
                    trailers: trailers.clone(),
                },
            }),
            Inner::Stream { .. } => None,
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.inner {
            Inner::Full { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Inner::Stream { head, rest } => {
                if let Some(frame) = head.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                Pin::new(rest).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Inner::Stream { head, rest } => head.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.remaining() as u64))
            }
            Inner::Stream { head, rest } => {
                let buffered: u64 = head
                    .iter()
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum();
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + buffered);
                if let Some(u) = r.upper() {
                    hint.set_upper(u + buffered);
                }
                hint
            }
        }
    }
}

/// Put in the extensions of a response the layer gave up retrying (a 503 after the last
/// attempt), so that an [`HttpPolicy`] further out does not retry it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

/// What to retry for HTTP and gRPC.
///
/// - **Idempotency**: `GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT` and `DELETE` requests, and any
///   request with an `Idempotency-Key` header, may be retried after any failure in
///   [`retry_statuses`](HttpPolicy::retry_statuses) or any error. Other requests (`POST`,
///   `PATCH`) are retried only when they cannot have reached the service: a connection
///   refused (an `io::Error` of kind `ConnectionRefused` in the error chain) or a tollgate
///   rejection (`Overloaded`, `Closed`) from a layer further in.
/// - **gRPC** (a `grpc-status` header: a Trailers-Only answer, sent before any message): a code
///   in [`retry_grpc_codes`](HttpPolicy::retry_grpc_codes) (UNAVAILABLE by default, which
///   gRPC defines as safe to retry) is retried whatever the method, as gRPC's A6 design does.
///   A status that arrives in trailers after messages is not retried: the answer is already
///   under way.
/// - **Pushback**: `grpc-retry-pushback-ms` (milliseconds) and `Retry-After` (delta-seconds
///   or an HTTP date, a past date being no wait) replace the backoff; a negative or malformed
///   `grpc-retry-pushback-ms` means "do not retry".
/// - **Endpoint hints**: every attempt carries an [`Attempt`] in its extensions (see
///   [`tollgate_core::attempt`]).
/// - Requests whose [`ReplayBody`] was too large to buffer are sent once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPolicy {
    /// HTTP statuses retried for idempotent requests. Default 502, 503 and 504.
    pub retry_statuses: Vec<u16>,
    /// gRPC status codes retried (in a Trailers-Only answer). Default 14 (UNAVAILABLE).
    pub retry_grpc_codes: Vec<u32>,
}

impl Default for HttpPolicy {
    fn default() -> Self {
        Self {
            retry_statuses: vec![502, 503, 504],
            retry_grpc_codes: vec![14],
        }
    }
}

/// Whether `req` may be sent twice whatever happened to the first attempt: an idempotent
/// method (RFC 9110), or an `Idempotency-Key` field.
pub fn idempotent<B>(req: &Request<B>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || req.headers().contains_key("idempotency-key")
}

/// Whether `headers` mark a gRPC call: `content-type: application/grpc`, alone or followed by
/// `+` (a message format) or `;` (parameters); not gRPC-Web.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(GRPC) && matches!(v.get(GRPC.len()), None | Some(b'+' | b';'))
    })
}

/// Whether `err` shows the request never reached the service.
fn not_sent(err: &BoxError) -> bool {
    let err: &(dyn std::error::Error + 'static) = &**err;
    find_cause::<std::io::Error>(err)
        .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        || find_cause::<Overloaded>(err).is_some()
        || find_cause::<Closed>(err).is_some()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// What to do with an answer that `retryable` (by its status or gRPC status) says may be
/// retried: [`Action::Return`] when it may not, or when gRPC's `grpc-retry-pushback-ms` is
/// negative or malformed ("do not retry"); else [`Action::RetryAfter`] the pushback, or the
/// `Retry-After` wait (seconds or an HTTP date), or a plain [`Action::Retry`].
pub fn pushback_action(headers: &HeaderMap, retryable: bool) -> Action {
    let pushback = match header(headers, "grpc-retry-pushback-ms") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(ms) if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            _ => return Action::Return,
        },
    };
    if !retryable {
        return Action::Return;
    }
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| tollgate_core::classify::retry_after(v.as_bytes()));
    match pushback.or(retry_after) {
        Some(d) => Action::RetryAfter(d),
        None => Action::Retry,
    }
}

impl HttpPolicy {
    fn classify_response<B, R>(&self, req: &Request<B>, res: &Response<R>) -> Action {
        if res.extensions().get::<Exhausted>().is_some() {
            return Action::Return;
        }
        let headers = res.headers();
        let retry = if let Some(code) = header(headers, "grpc-status") {
            code.parse::<u32>()
                .is_ok_and(|c| self.retry_grpc_codes.contains(&c))
        } else {
            self.retry_statuses.contains(&res.status().as_u16()) && idempotent(req)
        };
        pushback_action(headers, retry)
    }
}

impl<B, R> Policy<Request<ReplayBody<B>>, Response<R>> for HttpPolicy {
    fn classify(
        &self,
        req: &Request<ReplayBody<B>>,
        result: Result<&Response<R>, &BoxError>,
    ) -> Action {
        match result {
            Ok(res) => self.classify_response(req, res),
            Err(e) if idempotent(req) || not_sent(e) => Action::Retry,
            Err(_) => Action::Return,
        }
    }

    fn clone_request(&self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let body = req.body().try_clone()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }

    /// Idempotent methods, an `Idempotency-Key`, and gRPC calls: a POST without a key may
    /// already have reached the service when the hedge would go, and must not run twice.
    fn may_hedge(&self, req: &Request<ReplayBody<B>>) -> bool {
        idempotent(req) || is_grpc(req.headers())
    }

    fn on_attempt(&self, req: &mut Request<ReplayBody<B>>, attempt: &Attempt) {
        req.set_attempt(attempt.clone());
    }

    fn marks_attempts(&self) -> bool {
        true
    }

    fn on_give_up(&self, res: &mut Response<R>) {
        res.extensions_mut().insert(Exhausted);
    }
}
