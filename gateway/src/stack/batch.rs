//! Batch routes (`kind = "batch"`): single JSON requests are collected by the
//! [`tollgate_batch`] layer and sent to the cluster's batch endpoint as one JSON array; the
//! upstream answers an array of the same length and caller *i* gets element *i*.
//!
//! ```text
//! client 1: POST {"id":1} ─┐                                    ┌─> 200 {"r":1}
//! client 2: POST {"id":2} ─┼─> POST upstream_path [{"id":1},{"id":2},{"id":3}] ─┼─> 200 {"r":2}
//! client 3: POST {"id":3} ─┘            answer  [{"r":1},{"r":2},{"r":3}]        └─> 200 {"r":3}
//! ```
//!
//! What each caller gets:
//!
//! | event | answer |
//! |---|---|
//! | its element of the upstream's array | `200`, `application/json`, the element's bytes |
//! | body not valid JSON, or unreadable | `400` |
//! | body over `max_body_bytes` | `413` |
//! | the batch call is answered non-2xx | that status and body, for every caller of the batch |
//! | the answer is not a JSON array of one element per request, is larger than `max_response_bytes`, or breaks off | `502`, for every caller of the batch |
//! | the upstream cannot be reached | `502` (`504` for a connect timeout) |
//! | the batch call takes longer than `timeout_ms` | `504` |
//! | the queue holds `queue_capacity` requests; a breaker is open; no endpoints | `503` + `Retry-After` |
//!
//! Items are never parsed into values: a client body is checked with serde's `IgnoredAny` and
//! its bytes are joined into the array as they came; the answer is cut into elements by byte
//! ranges (one `Bytes` slice each, no copy).
//!
//! Reloads: an unchanged section keeps its [`BatchRoute`] (queue, statistics) and only swaps
//! in the new cluster service, so the next batch goes to the cluster as it is now configured;
//! batches already sent finish on the old one. A changed section builds a new route; requests
//! queued on the old one are still sent and answered.

use super::route::ClusterService;
use super::{GwBody, UpRequest};
use crate::answer::{Answer, RespBody, classify};
use crate::body::ClientBody;
use crate::config::ConfigError;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use serde::de::IgnoredAny;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_batch::{BatchHandle, BatchLayer, Batcher};
use tollgate_core::BoxError;
use tollgate_core::counter::ShardedCounter;
use tollgate_core::error::{Panicked, find_cause};
use tower::{Layer, Service, ServiceExt};

pub(crate) use crate::config::batch::BatchSection;

/// The upstream answered the batch call with a non-2xx status; every caller of the batch gets
/// that status and body.
#[derive(Debug, Clone)]
pub(crate) struct BatchAnswerStatus {
    /// The upstream's status.
    pub status: StatusCode,
    /// The upstream's `content-type`, if any.
    pub content_type: Option<HeaderValue>,
    /// The upstream's body (at most `max_response_bytes`).
    pub body: Bytes,
}

impl fmt::Display for BatchAnswerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream answered the batch with {}", self.status)
    }
}

impl std::error::Error for BatchAnswerStatus {}

/// The upstream's 2xx answer could not be split back to the callers.
#[derive(Debug)]
pub(crate) enum BadBatchAnswer {
    /// The body failed while it was read (the connection broke).
    Read(BoxError),
    /// The body was larger than `max_response_bytes`.
    TooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The body is not a JSON array.
    NotAnArray(String),
    /// The array has another length than the batch.
    LengthMismatch {
        /// Requests sent.
        sent: usize,
        /// Elements answered.
        got: usize,
    },
}

impl fmt::Display for BadBatchAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => write!(f, "upstream batch answer broke off: {e}"),
            Self::TooLarge { limit } => {
                write!(f, "upstream batch answer is larger than {limit} bytes")
            }
            Self::NotAnArray(why) => write!(f, "upstream batch answer is not a JSON array: {why}"),
            Self::LengthMismatch { sent, got } => write!(
                f,
                "upstream answered {got} elements to a batch of {sent} requests"
            ),
        }
    }
}

impl std::error::Error for BadBatchAnswer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read(e) => Some(&**e),
            _ => None,
        }
    }
}

/// The batch call ran past `timeout_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchTimedOut(Duration);

impl fmt::Display for BatchTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch call timed out after {} ms", self.0.as_millis())
    }
}

impl std::error::Error for BatchTimedOut {}

/// The batch service under the layer: one `POST` of the items as a JSON array through the
/// route's current cluster service.
#[derive(Clone)]
struct UpstreamBatch {
    target: Arc<ArcSwap<ClusterService>>,
    uri: Uri,
    max_response_bytes: usize,
    timeout: Duration,
}

impl fmt::Debug for UpstreamBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamBatch")
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

impl Service<Vec<Bytes>> for UpstreamBatch {
    type Response = Vec<Result<Bytes, Infallible>>;
    type Error = BoxError;
    // One boxed future per batch, never per request.
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, items: Vec<Bytes>) -> Self::Future {
        let sent = items.len();
        let req = batch_request(self.uri.clone(), &items);
        let cluster = ClusterService::clone(&self.target.load());
        let (cap, timeout) = (self.max_response_bytes, self.timeout);
        Box::pin(async move {
            let answer = tokio::time::timeout(timeout, async move {
                let resp = cluster.oneshot(req).await?;
                let status = resp.status();
                let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
                let body = read_capped(resp.into_body(), cap).await?;
                if !status.is_success() {
                    return Err(BoxError::from(BatchAnswerStatus {
                        status,
                        content_type,
                        body,
                    }));
                }
                Ok(body)
            })
            .await
            .map_err(|_| BoxError::from(BatchTimedOut(timeout)))??;
            let elements = split_array(&answer, sent)?;
            Ok(elements.into_iter().map(Ok).collect())
        })
    }
}

/// The upstream request of one batch: `POST uri`, `content-type: application/json`, the items
/// joined into an array.
fn batch_request(uri: Uri, items: &[Bytes]) -> UpRequest {
    let mut req = Request::new(GwBody::Right(Full::new(join_array(items))));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    req
}

/// `[a,b,c]` from the items' bytes, each already valid JSON.
fn join_array(items: &[Bytes]) -> Bytes {
    let len = items.iter().map(Bytes::len).sum::<usize>() + items.len() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    Bytes::from(out)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Cuts a JSON array into its elements (slices of `body`, validated by serde), which must
/// number `expected`.
fn split_array(body: &Bytes, expected: usize) -> Result<Vec<Bytes>, BadBatchAnswer> {
    let bad = |why: &str| BadBatchAnswer::NotAnArray(why.to_owned());
    let s: &[u8] = body;
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'[') {
        return Err(bad("it does not start with ["));
    }
    i = skip_ws(s, i + 1);
    let mut out = Vec::with_capacity(expected);
    if s.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let mut values =
                serde_json::Deserializer::from_slice(&s[i..]).into_iter::<IgnoredAny>();
            match values.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(BadBatchAnswer::NotAnArray(e.to_string())),
                None => return Err(bad("it ends inside the array")),
            }
            let end = i + values.byte_offset();
            out.push(body.slice(i..end));
            i = skip_ws(s, end);
            match s.get(i) {
                Some(b',') => i = skip_ws(s, i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return Err(bad("expected , or ] after an element")),
            }
        }
    }
    if skip_ws(s, i) != s.len() {
        return Err(bad("trailing characters after the array"));
    }
    if out.len() != expected {
        return Err(BadBatchAnswer::LengthMismatch {
            sent: expected,
            got: out.len(),
        });
    }
    Ok(out)
}

/// Reads a whole body of at most `cap` bytes.
async fn read_capped<B>(body: B, cap: usize) -> Result<Bytes, BadBatchAnswer>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, cap).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BadBatchAnswer::TooLarge { limit: cap }),
        Err(e) => Err(BadBatchAnswer::Read(e)),
    }
}

/// Why a client's body cannot join a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadItem {
    TooLarge,
    Unreadable,
    NotJson,
}

/// Reads and checks one client body: at most `cap` bytes of valid JSON.
async fn read_item<B>(headers: &http::HeaderMap, body: B, cap: usize) -> Result<Bytes, BadItem>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return Err(BadItem::TooLarge);
    }
    let bytes = match read_capped(body, cap).await {
        Ok(b) => b,
        Err(BadBatchAnswer::TooLarge { .. }) => return Err(BadItem::TooLarge),
        Err(_) => return Err(BadItem::Unreadable),
    };
    serde_json::from_slice::<IgnoredAny>(&bytes).map_err(|_| BadItem::NotJson)?;
    Ok(bytes)
}

fn respond(
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
) -> Response<RespBody> {
    let mut r = Response::new(Either::Right(Full::new(body)));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

fn plain(status: StatusCode, msg: String) -> Response<RespBody> {
    let ct = HeaderValue::from_static("text/plain; charset=utf-8");
    respond(status, Some(ct), Bytes::from(msg))
}

/// The answer to a caller whose request failed with `err`.
fn error_answer(err: &BoxError) -> Response<RespBody> {
    let err: &(dyn std::error::Error + 'static) = &**err;
    if let Some(a) = find_cause::<BatchAnswerStatus>(err) {
        return respond(a.status, a.content_type.clone(), a.body.clone());
    }
    if let Some(t) = find_cause::<BatchTimedOut>(err) {
        return plain(StatusCode::GATEWAY_TIMEOUT, format!("{t}\n"));
    }
    if let Some(bad) = find_cause::<BadBatchAnswer>(err) {
        return plain(StatusCode::BAD_GATEWAY, format!("{bad}\n"));
    }
    // Everything else as on every other route (`answer.rs`); a failure with no answer of its
    // own is the batch call's.
    match classify(err) {
        Ok(Answer::RequestFailed | Answer::HandlerFailed) => {
            if find_cause::<Panicked>(err).is_none() {
                tracing::debug!(error = %err, "batch request failed");
            }
            Answer::BatchFailed.response()
        }
        Ok(answer) => answer.response(),
        Err((r, cause)) => r
            .to_response_with::<Full<Bytes>>(&cause.to_string())
            .map(Either::Right),
    }
}

/// A batch route, built once per route and kept across reloads while unchanged.
#[derive(Debug)]
pub(crate) struct BatchRoute {
    section: BatchSection,
    batcher: Batcher<Bytes, Bytes>,
    handle: BatchHandle<Bytes, Bytes>,
    /// The cluster the next batch goes to; swapped by a reload that keeps this route.
    target: Arc<ArcSwap<ClusterService>>,
    /// Client bodies refused: too large (413), and unreadable or not JSON (400).
    too_large: ShardedCounter,
    bad_requests: ShardedCounter,
}

impl BatchRoute {
    /// Builds the batcher of `section` over `inner` (the route's cluster), or keeps `old` when
    /// its section is equal: `old` then keeps its queue and statistics and sends its next
    /// batches to `inner`, which may be a new cluster service after a reload.
    ///
    /// # Errors
    /// The section is invalid (validation should have caught it first).
    pub(crate) fn build(
        section: &BatchSection,
        route: &str,
        inner: ClusterService,
        old: Option<&Arc<BatchRoute>>,
    ) -> Result<Arc<Self>, ConfigError> {
        if let Some(old) = old.filter(|o| o.section == *section) {
            old.target.store(Arc::new(inner));
            return Ok(old.clone());
        }
        let at = format!("batch of route {route}");
        section.validate(&at)?;
        let uri = section
            .upstream_uri()
            .ok_or_else(|| ConfigError::new(format!("{at}.upstream_path"), "is not a path"))?;
        let target = Arc::new(ArcSwap::from_pointee(inner));
        let backend = UpstreamBatch {
            target: target.clone(),
            uri,
            max_response_bytes: section.max_response_bytes,
            timeout: Duration::from_millis(section.timeout_ms),
        };
        let layer = BatchLayer::<Bytes, Bytes>::new(section.to_config())
            .map_err(|e| ConfigError::new(format!("{at}.{}", e.field()), e.problem()))?;
        let batcher = layer.layer(backend);
        Ok(Arc::new(Self {
            section: section.clone(),
            handle: batcher.handle(),
            batcher,
            target,
            too_large: ShardedCounter::new(),
            bad_requests: ShardedCounter::new(),
        }))
    }

    /// Answers one client request: its JSON body joins a batch, its answer is its element of
    /// the upstream's array. Never fails: every failure is an answer (see the module docs).
    pub(crate) async fn call<B: ClientBody>(&self, req: Request<B>) -> Response<RespBody> {
        let (parts, body) = req.into_parts();
        let item = match read_item(&parts.headers, body, self.section.max_body_bytes).await {
            Ok(item) => item,
            Err(BadItem::TooLarge) => {
                self.too_large.incr();
                return Answer::BodyTooLarge.response();
            }
            Err(BadItem::Unreadable) => {
                self.bad_requests.incr();
                return Answer::BodyUnreadable.response();
            }
            Err(BadItem::NotJson) => {
                self.bad_requests.incr();
                return Answer::NotJson.response();
            }
        };
        match self.batcher.clone().oneshot(item).await {
            Ok(element) => respond(
                StatusCode::OK,
                Some(HeaderValue::from_static("application/json")),
                element,
            ),
            Err(err) => error_answer(&err),
        }
    }

    /// State for `/state`.
    pub(crate) fn state(&self) -> serde_json::Value {
        let s = self.handle.snapshot();
        serde_json::json!({
            "upstream_path": self.section.upstream_path,
            "batches": s.batches,
            "items": s.items,
            "mean_batch_size": s.mean_batch_size(),
            "max_batch_size": s.max_batch_size,
            "last_batch_size": s.last_batch_size,
            "linger_ms": s.linger.as_secs_f64() * 1e3,
            "queue_depth": s.queue_depth,
            "in_flight": s.in_flight,
            "failed_batches": s.failed_batches + s.panicked_batches,
            "rejected": s.rejected,
            "abandoned": s.abandoned,
            "flushes": {
                "full": s.flushes.full,
                "linger": s.flushes.linger,
                "idle": s.flushes.idle,
                "shutdown": s.flushes.shutdown,
            },
            "too_large": self.too_large.sum().max(0),
            "bad_requests": self.bad_requests.sum().max(0),
        })
    }

    /// Records metrics labelled `route` into the current `metrics` recorder.
    pub(crate) fn record_metrics(&self, route: &str) {
        let s = self.handle.snapshot();
        let r = || route.to_owned();
        metrics::counter!("tollgate_route_batch_calls_total", "route" => r()).absolute(s.batches);
        metrics::counter!("tollgate_route_batch_items_total", "route" => r()).absolute(s.items);
        metrics::counter!("tollgate_route_batch_failed_total", "route" => r())
            .absolute(s.failed_batches + s.panicked_batches);
        metrics::counter!("tollgate_route_batch_rejected_total", "route" => r())
            .absolute(s.rejected);
        metrics::counter!("tollgate_route_batch_bad_requests_total", "route" => r())
            .absolute((self.bad_requests.sum() + self.too_large.sum()).max(0) as u64);
        metrics::gauge!("tollgate_route_batch_queue_depth", "route" => r())
            .set(s.queue_depth as f64);
        metrics::gauge!("tollgate_route_batch_in_flight", "route" => r()).set(s.in_flight as f64);
        metrics::gauge!("tollgate_route_batch_mean_size", "route" => r()).set(s.mean_batch_size());
        metrics::gauge!("tollgate_route_batch_linger_seconds", "route" => r())
            .set(s.linger.as_secs_f64());
    }
}

#[cfg(test)]
mod tests;
