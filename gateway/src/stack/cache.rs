//! HTTP caching on routes: `[routes.cache]`, built on [`tollgate_cache`].
//!
//! A route with this section answers `GET` and `HEAD` from a per-thread L1, a shared L2 and,
//! with `redis`, a Redis L3 shared by every gateway instance pointing at it. What is stored
//! follows RFC 9111 as a shared cache
//! ([`HttpPolicy`](tollgate_cache::http::HttpPolicy)): `Cache-Control` (`no-store`,
//! `private`, `max-age`, `s-maxage`, `stale-while-revalidate`, `stale-if-error`) and `Vary` (on
//! the headers listed in `vary`; `Host` is always part of the key). Requests with
//! `Authorization` or a request `Cache-Control: no-store`, and every other method, pass by the
//! cache.
//!
//! After a response stops being fresh it may stand in for an upstream failure (an error, a
//! `5xx`, no answer within `origin_timeout_ms`) for `stale_if_error_ms`, so an outage of the
//! upstream is hidden for cached content, and it may be served while one background request
//! refreshes it for `stale_while_revalidate_ms` (RFC 5861). Concurrent misses of one key make
//! one upstream call.
//!
//! Every answer of a cached route carries `x-cache`: `HIT` (fresh, from any tier), `STALE`
//! (served past its freshness: while revalidating, or instead of a failure), `MISS` (from the
//! upstream), `BYPASS` (the request is not cacheable).
//!
//! Bodies: the cache keeps whole bodies as shared [`Bytes`], so a response that may be stored
//! is read whole before it is answered. A response the cache would not store anyway (by its
//! head: `Cache-Control`, `Set-Cookie`, `Vary`, status), an event stream, or one whose
//! `Content-Length` exceeds `max_body_bytes` is streamed through untouched. A chunked answer
//! that turns out longer than `max_body_bytes` is answered whole and not stored. (A streamed
//! answer travels past the cache as an error, so when an older copy of the key is still inside
//! its stale-if-error window, that copy is served instead.)
//!
//! Redis never fails a request: the L3 connects in the background (on a small runtime of its
//! own, so it does not depend on where the snapshot is built), every command has a timeout,
//! and a breaker skips Redis while it fails; requests then go on to L1/L2 and the upstream.
//!
//! Reloads keep a route's cache, content included, while the route (host, prefix, methods)
//! and its section stay the same.

mod policy;
#[cfg(test)]
mod tests;

pub(crate) use crate::config::cache::CacheSection;
pub(crate) use policy::{GwPolicy, Stored, X_CACHE};

use super::UpRequest;
use super::route::RouteService;
use crate::answer::RespBody;
use crate::config::ConfigError;
use crate::headers::relay_fields;
use crate::pool::UpBody;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use policy::{BYPASS, GwCodec, MISS, TooBig, mark};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tollgate_cache::cache_control::CacheControl;
use tollgate_cache::http::HttpKey;
use tollgate_cache::redis::RedisTier;
use tollgate_cache::{CacheHandle, CacheLayer, Cacheability};
use tollgate_core::BoxError;
use tollgate_core::counter::ShardedCounter;
use tollgate_core::error::DeadlineExceeded;
use tower::{Layer, Service, ServiceExt};

/// An upstream answer the cache will not store, handed past it still streaming. Travels as the
/// origin adapter's error (so no other caller of the key is given a body it cannot share),
/// and [`RouteCache::call`] turns it back into the answer.
struct PassThrough(Mutex<Option<Response<UpBody>>>);

impl PassThrough {
    fn new(res: Response<UpBody>) -> Self {
        Self(Mutex::new(Some(res)))
    }

    fn take(&self) -> Option<Response<UpBody>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl fmt::Debug for PassThrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PassThrough")
    }
}

impl fmt::Display for PassThrough {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("response passed by the cache")
    }
}

impl std::error::Error for PassThrough {}

/// The cache's inner service: the route's way upstream, with the answer's body read whole.
#[derive(Debug, Clone)]
struct Origin {
    inner: RouteService,
    policy: GwPolicy,
}

type OriginFuture = Pin<Box<dyn Future<Output = Result<Response<Bytes>, BoxError>> + Send>>;

impl Service<UpRequest> for Origin {
    type Response = Response<Bytes>;
    type Error = BoxError;
    type Future = OriginFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: UpRequest) -> OriginFuture {
        let head = req.method() == Method::HEAD;
        let fut = self.inner.call(req);
        let policy = self.policy.clone();
        Box::pin(async move {
            let limit = policy.0.origin_timeout;
            let fetch = fetch(fut, policy, head);
            match limit {
                Some(limit) => tokio::time::timeout(limit, fetch)
                    .await
                    .map_err(|_| BoxError::from(DeadlineExceeded::new()))?,
                None => fetch.await,
            }
        })
    }
}

/// Waits for the upstream's answer and reads its body whole, or hands it past the cache.
async fn fetch(
    answer: super::route::BoxFuture,
    policy: GwPolicy,
    head: bool,
) -> Result<Response<Bytes>, BoxError> {
    let (mut parts, body) = answer.await?.into_parts();
    // A stored answer is replayed with a whole body: connection headers do not apply.
    relay_fields(parts.status, &mut parts.headers);
    let probe = Response::from_parts(parts, Bytes::new());
    let class = policy.classify_head(&probe);
    let (parts, _) = probe.into_parts();
    let declared = content_length(&parts.headers);
    if class == Cacheability::Pass
        || is_event_stream(&parts.headers)
        || (!head && declared.is_some_and(|n| n > policy.0.max_body))
    {
        policy.0.passed.incr();
        return Err(PassThrough::new(Response::from_parts(parts, body)).into());
    }
    let bytes = body.collect().await?.to_bytes();
    let mut res = Response::from_parts(parts, bytes);
    if res.body().len() as u64 > policy.0.max_body {
        res.extensions_mut().insert(TooBig);
    }
    Ok(res)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Whether the cache may look `req` up: what
/// [`HttpPolicy`](tollgate_cache::http::HttpPolicy) keys (`GET`/`HEAD` without `Authorization`
/// or a request `no-store`), and not a range or precondition request. Others skip the cache
/// and stream both ways.
fn cacheable_request<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && !h.contains_key(header::AUTHORIZATION)
        // Partial and precondition requests go to the upstream as they are.
        && !h.contains_key(header::RANGE)
        && !h.contains_key(header::IF_MATCH)
        && !h.contains_key(header::IF_UNMODIFIED_SINCE)
        && !req
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().map_or(true, |s| CacheControl::parse(s).no_store))
}

/// Whether `If-None-Match: list` matches entity tag `tag` (weak comparison, RFC 9110 §13.1.2).
fn etag_matches(list: &[u8], tag: &[u8]) -> bool {
    let opaque = |t: &[u8]| -> Vec<u8> {
        let t = t.trim_ascii();
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    let tag = opaque(tag);
    list.split(|b| *b == b',')
        .any(|t| t.trim_ascii() == b"*" || opaque(t) == tag)
}

/// A `304 Not Modified` for a stored `200` with `headers` (RFC 9110 §15.4.5: its validators,
/// caching headers and `x-cache`, no content headers).
fn not_modified(headers: &HeaderMap) -> Response<RespBody> {
    let mut res = Response::new(Either::Right(Full::default()));
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
        header::AGE,
        header::LAST_MODIFIED,
        X_CACHE.clone(),
    ] {
        for v in headers.get_all(&name) {
            res.headers_mut().append(name.clone(), v.clone());
        }
    }
    res
}

/// The runtime the Redis tiers connect and write on: a thread of its own, started with the
/// first Redis section, so tiers built anywhere (at start, in a reload) outlive that place.
fn redis_runtime() -> Result<tokio::runtime::Handle, ConfigError> {
    static RT: Mutex<Option<tokio::runtime::Handle>> = Mutex::new(None);
    let mut slot = RT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let fail =
        |e: std::io::Error| ConfigError::new("redis", format!("cannot start its runtime: {e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("tollgate-cache-redis".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))
        .map_err(fail)?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// A route's built cache, kept across reloads while the route and its section are unchanged.
pub(crate) struct RouteCache {
    section: CacheSection,
    policy: GwPolicy,
    layer: CacheLayer<GwPolicy>,
    handle: CacheHandle<HttpKey, Stored>,
    /// Requests that skipped the cache (other methods, credentials, `no-store`).
    bypassed: ShardedCounter,
}

impl fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteCache")
            .field("section", &self.section)
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl RouteCache {
    /// Builds `section` for the route named `route`, or keeps `old` when built from an equal
    /// section. Never blocks (a Redis L3 connects in the background).
    ///
    /// # Errors
    /// The layer refused the configuration.
    pub(crate) fn build(
        section: &CacheSection,
        route: &str,
        old: Option<&Arc<RouteCache>>,
    ) -> Result<Arc<Self>, ConfigError> {
        if let Some(old) = old.filter(|o| o.section == *section) {
            return Ok(old.clone());
        }
        let vary = section
            .vary_headers()
            .map_err(|i| ConfigError::new(format!("vary[{i}]"), "not a header name"))?;
        let policy = GwPolicy::new(section, vary);
        let config = section.to_config();
        let layer_err = |e: tollgate_core::error::ConfigError| {
            ConfigError::new(e.field().to_owned(), e.problem().to_owned())
        };
        let layer = match &section.redis {
            None => CacheLayer::new(config, policy.clone()).map_err(layer_err)?,
            Some(r) => {
                let rt = redis_runtime()?;
                let _entered = rt.enter();
                let tier = RedisTier::new(r.clone(), GwCodec(policy.clone()));
                CacheLayer::with_redis(config, policy.clone(), tier).map_err(|e| {
                    ConfigError::new(format!("redis.{}", e.field()), e.problem().to_owned())
                })?
            }
        };
        tracing::debug!(route, redis = section.redis.is_some(), "cache built");
        Ok(Arc::new(Self {
            section: section.clone(),
            handle: layer.handle(),
            policy,
            layer,
            bypassed: ShardedCounter::new(),
        }))
    }

    /// Serves `req` from the cache or through `inner`, with `x-cache` on the answer.
    ///
    /// # Errors
    /// The upstream's error when no stale response may stand in for it.
    pub(crate) async fn call(
        &self,
        inner: RouteService,
        req: UpRequest,
    ) -> Result<Response<RespBody>, BoxError> {
        if !cacheable_request(&req) {
            self.bypassed.incr();
            let mut res = inner.oneshot(req).await?;
            mark(&mut res, BYPASS);
            return Ok(res.map(Either::Left));
        }
        // The cache fetches and stores whole responses: the client's validators are answered
        // here, never by the upstream (its 304 is not what other clients asked for).
        let mut req = req;
        let if_none_match = req.headers_mut().remove(header::IF_NONE_MATCH);
        req.headers_mut().remove(header::IF_MODIFIED_SINCE);
        let origin = Origin {
            inner,
            policy: self.policy.clone(),
        };
        match self.layer.layer(origin).oneshot(req).await {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                if !parts.headers.contains_key(&X_CACHE) {
                    // Answered by the upstream and not stored (the cache hands it on as is).
                    parts
                        .headers
                        .insert(X_CACHE.clone(), HeaderValue::from_static(MISS));
                }
                if let Some(inm) = if_none_match
                    && parts.status == StatusCode::OK
                    && parts
                        .headers
                        .get(header::ETAG)
                        .is_some_and(|tag| etag_matches(inm.as_bytes(), tag.as_bytes()))
                {
                    return Ok(not_modified(&parts.headers));
                }
                Ok(Response::from_parts(parts, Either::Right(Full::new(body))))
            }
            Err(e) => match e.downcast::<PassThrough>() {
                Ok(pass) => {
                    let mut res = pass
                        .take()
                        .ok_or_else(|| BoxError::from("cache: pass-through answer taken twice"))?;
                    mark(&mut res, MISS);
                    Ok(res.map(Either::Left))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// State for `/state`.
    pub(crate) fn state(&self) -> serde_json::Value {
        let s = self.handle.stats();
        serde_json::json!({
            "entries": self.handle.l2_entries(),
            "lookups": s.lookups,
            "hit_ratio": s.hit_ratio(),
            "hits": { "l1": s.l1_hits, "l2": s.l2_hits, "l3": s.l3_hits },
            "origin_calls": s.inner_calls,
            "coalesced": s.coalesced,
            "stale": { "while_revalidate": s.stale_served, "if_error": s.stale_if_error },
            "refreshes": s.refreshes,
            "bypassed": self.bypassed.sum().max(0),
            "passed_through": self.policy.0.passed.sum().max(0),
            "l3": self.section.redis.as_ref().map(|_| serde_json::json!({
                "connected": self.handle.l3_connected(),
                "errors": s.l3_errors,
            })),
        })
    }

    /// Records metrics labelled `route` into the current `metrics` recorder.
    pub(crate) fn record_metrics(&self, route: &str) {
        let s = self.handle.stats();
        let r = || route.to_owned();
        for (tier, n) in [("l1", s.l1_hits), ("l2", s.l2_hits), ("l3", s.l3_hits)] {
            metrics::counter!("tollgate_cache_hits_total", "route" => r(), "tier" => tier)
                .absolute(n);
        }
        metrics::counter!("tollgate_cache_lookups_total", "route" => r()).absolute(s.lookups);
        metrics::counter!("tollgate_cache_origin_calls_total", "route" => r())
            .absolute(s.inner_calls);
        metrics::counter!("tollgate_cache_coalesced_total", "route" => r()).absolute(s.coalesced);
        for (reason, n) in [
            ("while_revalidate", s.stale_served),
            ("if_error", s.stale_if_error),
        ] {
            metrics::counter!("tollgate_cache_stale_total", "route" => r(), "reason" => reason)
                .absolute(n);
        }
        metrics::counter!("tollgate_cache_bypassed_total", "route" => r())
            .absolute(self.bypassed.sum().max(0) as u64);
        metrics::counter!("tollgate_cache_passed_through_total", "route" => r())
            .absolute(self.policy.0.passed.sum().max(0) as u64);
        metrics::gauge!("tollgate_cache_entries", "route" => r())
            .set(self.handle.l2_entries() as f64);
        if self.section.redis.is_some() {
            metrics::counter!("tollgate_cache_l3_errors_total", "route" => r())
                .absolute(s.l3_errors);
            metrics::gauge!("tollgate_cache_l3_connected", "route" => r())
                .set(f64::from(u8::from(self.handle.l3_connected())));
        }
    }
}
