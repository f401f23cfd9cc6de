//! HTTP caching on routes: `[routes.cache]`, built on [`tollgate_cache`].
//!
//! A route with this section answers `GET` and `HEAD` from a per-thread L1, a shared L2 and,
//! with `redis`, a Redis L3 shared by every gateway instance pointing at it. What is stored
//! follows RFC 9111 as a shared cache ([`HttpPolicy`]): `Cache-Control` (`no-store`, `private`,
//! `max-age`, `s-maxage`, `stale-while-revalidate`, `stale-if-error`) and `Vary` (on the
//! headers listed in `vary`; `Host` is always part of the key). Requests with `Authorization`
//! or a request `Cache-Control: no-store`, and every other method, pass by the cache.
//!
//! After a response stops being fresh it may stand in for an upstream failure (an error, a
//! `5xx`) for `stale_if_error_ms`, so an outage of the upstream is hidden for cached content,
//! and it may be served while one background request refreshes it for
//! `stale_while_revalidate_ms` (RFC 5861). Concurrent misses of one key make one upstream call.
//!
//! Every answer of a cached route carries `x-cache`: `HIT` (fresh, from any tier), `STALE`
//! (served past its freshness: while revalidating, or instead of a failure), `MISS` (from the
//! upstream), `BYPASS` (the request is not cacheable).
//!
//! Bodies: the cache keeps whole bodies as shared [`Bytes`], so a response that may be stored
//! is read whole before it is answered. A response the cache would not store anyway (by its
//! head: `Cache-Control`, `Set-Cookie`, `Vary`, status), an event stream, or one whose
//! `Content-Length` exceeds `max_body_bytes` is streamed through untouched. A chunked answer
//! that turns out longer than `max_body_bytes` is answered whole and not stored.
//!
//! Redis never fails a request: the L3 connects in the background (on a small runtime of its
//! own, so it does not depend on where the snapshot is built), every command has a timeout,
//! and a breaker skips Redis while it fails; requests then go on to L1/L2 and the upstream.

use super::UpRequest;
use super::route::RouteService;
use crate::gateway::config::ConfigError;
use crate::gateway::headers::strip_hop_by_hop;
use crate::gateway::pool::UpBody;
use crate::gateway::proxy::RespBody;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Either, Full};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_cache::cache_control::CacheControl;
use tollgate_cache::http::{CachedResponse, HttpKey, HttpPolicy};
use tollgate_cache::redis::{Codec, RedisConfig, RedisTier};
use tollgate_cache::{
    CacheConfig, CacheHandle, CacheLayer, CachePolicy, CachePolicyFor, Cacheability,
};
use tollgate_core::BoxError;
use tollgate_core::counter::ShardedCounter;
use tower::{Layer, Service, ServiceExt};

/// The header telling clients how the cache answered.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const HIT: &str = "HIT";
const STALE: &str = "STALE";
const MISS: &str = "MISS";
const BYPASS: &str = "BYPASS";

fn mark<B>(res: &mut Response<B>, how: &'static str) {
    res.headers_mut()
        .insert(X_CACHE.clone(), HeaderValue::from_static(how));
}

/// A route's cache (`[routes.cache]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Freshness of a response that gives none (no `s-maxage`/`max-age`), ms. Default 10000.
    pub default_ttl_ms: u64,
    /// Upper bound of every freshness and stale window, a response's own included, ms.
    /// Default 3600000 (1 h); at most 30 days.
    pub max_ttl_ms: u64,
    /// Serve a response this long past its freshness while one background request refreshes
    /// it (RFC 5861), ms; a response's own `stale-while-revalidate` overrides it. Default 0.
    pub stale_while_revalidate_ms: u64,
    /// Serve a response this long past its freshness instead of an upstream failure (an error
    /// or a 5xx), ms; a response's own `stale-if-error` overrides it. Default 60000.
    pub stale_if_error_ms: u64,
    /// Freshness of `404`/`410` answers that give none, ms; 0 stores none. Default 5000.
    pub negative_ttl_ms: u64,
    /// L2 holds at most this many entries (each counts as at least `max_bytes / max_entries`
    /// bytes), entries. Default 10000.
    pub max_entries: u64,
    /// L2 holds at most this many bytes of headers and bodies, bytes. Default 67108864 (64 MiB).
    pub max_bytes: u64,
    /// L1 slots per worker thread (copies sharing L2's bodies), entries: 0 (off) or a power of
    /// two up to 65536. Default 256.
    pub l1_entries: usize,
    /// Largest body stored, bytes; larger answers pass through uncached. Default 1048576 (1 MiB);
    /// at most `max_bytes`.
    pub max_body_bytes: u64,
    /// Request headers added to the key, so responses that `Vary` on them are stored (one entry
    /// per combination of values), e.g. `["accept-encoding"]`. `Host` is always in the key.
    /// Default none.
    pub vary: Vec<String>,
    /// A Redis L3 shared by several gateway instances. Default none.
    pub redis: Option<RedisSection>,
}

impl Default for CacheSection {
    fn default() -> Self {
        Self {
            default_ttl_ms: 10_000,
            max_ttl_ms: 3_600_000,
            stale_while_revalidate_ms: 0,
            stale_if_error_ms: 60_000,
            negative_ttl_ms: 5_000,
            max_entries: 10_000,
            max_bytes: 64 << 20,
            l1_entries: 256,
            max_body_bytes: 1 << 20,
            vary: Vec::new(),
            redis: None,
        }
    }
}

/// `[routes.cache.redis]`: the shared L3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// Where Redis listens, `redis://host:port/db`. Required.
    pub url: String,
    /// Prefix of every key written. Default `"tollgate:cache:"`.
    pub key_prefix: String,
    /// Pub/sub channel of invalidations. Default `"tollgate:cache:invalidate"`.
    pub channel: String,
    /// Longest a Redis command may take before the request goes on without it, ms.
    /// Default 50; 1 to 60000.
    pub timeout_ms: u64,
    /// Longest a connection attempt may take, ms. Default 250; 1 to 60000.
    pub connect_timeout_ms: u64,
    /// Failures in a row after which Redis is skipped for `breaker_cooldown_ms`. Default 5.
    pub breaker_failures: u32,
    /// How long Redis is skipped after `breaker_failures`, ms. Default 1000; 1 to 3600000.
    pub breaker_cooldown_ms: u64,
    /// Pause between connection attempts while Redis is unreachable, ms. Default 500; 1 to
    /// 3600000.
    pub reconnect_interval_ms: u64,
}

impl Default for RedisSection {
    fn default() -> Self {
        let d = RedisConfig::default();
        Self {
            url: String::new(),
            key_prefix: d.key_prefix,
            channel: d.channel,
            timeout_ms: 50,
            connect_timeout_ms: 250,
            breaker_failures: 5,
            breaker_cooldown_ms: 1_000,
            reconnect_interval_ms: 500,
        }
    }
}

impl RedisSection {
    /// The tier's configuration.
    pub fn to_config(&self) -> RedisConfig {
        RedisConfig {
            url: self.url.clone(),
            key_prefix: self.key_prefix.clone(),
            channel: self.channel.clone(),
            response_timeout: ms(self.timeout_ms),
            connect_timeout: ms(self.connect_timeout_ms),
            breaker_failures: self.breaker_failures,
            breaker_cooldown: ms(self.breaker_cooldown_ms),
            reconnect_interval: ms(self.reconnect_interval_ms),
        }
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        if self.url.is_empty() {
            return e("url", "must be set (redis://host:port/db)");
        }
        for (f, v, max) in [
            ("timeout_ms", self.timeout_ms, 60_000),
            ("connect_timeout_ms", self.connect_timeout_ms, 60_000),
            ("breaker_cooldown_ms", self.breaker_cooldown_ms, 3_600_000),
            (
                "reconnect_interval_ms",
                self.reconnect_interval_ms,
                3_600_000,
            ),
        ] {
            if !(1..=max).contains(&v) {
                return e(f, &format!("must be between 1 and {max} ms"));
            }
        }
        self.to_config().validate().map_err(|err| {
            let field = match err.field() {
                "response_timeout" => "timeout_ms",
                "connect_timeout" => "connect_timeout_ms",
                "breaker_cooldown" => "breaker_cooldown_ms",
                "reconnect_interval" => "reconnect_interval_ms",
                f => f,
            };
            ConfigError::new(format!("{at}.{field}"), err.problem())
        })
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl CacheSection {
    /// The cache layer's configuration.
    pub fn to_config(&self) -> CacheConfig {
        CacheConfig {
            l1_slots: self.l1_entries,
            l2_capacity: self.max_bytes,
            default_ttl: ms(self.default_ttl_ms),
            max_ttl: ms(self.max_ttl_ms),
            negative_ttl: ms(self.negative_ttl_ms),
            stale_while_revalidate: ms(self.stale_while_revalidate_ms),
            stale_if_error: ms(self.stale_if_error_ms),
            ..CacheConfig::default()
        }
    }

    fn vary_headers(&self) -> Result<Vec<HeaderName>, usize> {
        self.vary
            .iter()
            .enumerate()
            .map(|(i, v)| HeaderName::from_bytes(v.trim().as_bytes()).map_err(|_| i))
            .collect()
    }

    /// Checks every field; `at` is the section's path in the file.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let e = |f: &str, p: &str| Err(ConfigError::new(format!("{at}.{f}"), p));
        const MONTH_MS: u64 = 30 * 86_400_000;
        if !(1..=MONTH_MS).contains(&self.max_ttl_ms) {
            return e(
                "max_ttl_ms",
                "must be between 1 and 2592000000 ms (30 days)",
            );
        }
        if !(1..=self.max_ttl_ms).contains(&self.default_ttl_ms) {
            return e("default_ttl_ms", "must be between 1 ms and max_ttl_ms");
        }
        for (f, v) in [
            ("stale_while_revalidate_ms", self.stale_while_revalidate_ms),
            ("stale_if_error_ms", self.stale_if_error_ms),
            ("negative_ttl_ms", self.negative_ttl_ms),
        ] {
            if v > self.max_ttl_ms {
                return e(f, "must not exceed max_ttl_ms");
            }
        }
        if !(1..=100_000_000).contains(&self.max_entries) {
            return e("max_entries", "must be between 1 and 100000000");
        }
        if !(1024..=1 << 40).contains(&self.max_bytes) {
            return e("max_bytes", "must be between 1024 and 1099511627776 bytes");
        }
        if self.l1_entries != 0 && (!self.l1_entries.is_power_of_two() || self.l1_entries > 65_536)
        {
            return e("l1_entries", "must be 0 or a power of two up to 65536");
        }
        if !(1..=1 << 30).contains(&self.max_body_bytes) {
            return e("max_body_bytes", "must be between 1 and 1073741824 bytes");
        }
        if self.max_body_bytes > self.max_bytes {
            return e("max_body_bytes", "must not exceed max_bytes");
        }
        if let Err(i) = self.vary_headers() {
            return e(&format!("vary[{i}]"), "not a header name");
        }
        if let Some(r) = &self.redis {
            r.validate(&format!("{at}.redis"))?;
        }
        self.to_config()
            .validate()
            .map_err(|err| ConfigError::new(format!("{at}.(section)"), err.to_string()))
    }
}

/// What the cache stores: the response, and how long it is fresh (to tell `HIT` from `STALE`).
#[derive(Debug, Clone)]
pub struct Stored {
    res: Arc<CachedResponse>,
    fresh_for: Duration,
}

/// Marks a response read whole past `max_body_bytes`: answered, not stored.
#[derive(Debug, Clone, Copy)]
struct TooBig;

/// The gateway's policy: [`HttpPolicy`] with a weight floor (so `max_entries` bounds L2 too)
/// and the `x-cache` header on everything it rebuilds. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GwPolicy(Arc<PolicyInner>);

#[derive(Debug)]
struct PolicyInner {
    http: HttpPolicy,
    default_ttl: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    min_weight: u32,
    max_body: u64,
    /// Responses streamed past the cache (uncacheable by their head, or too big).
    passed: ShardedCounter,
}

/// The request type [`HttpPolicy`]'s body-independent methods are called with.
type HttpOn0 = Request<()>;

impl GwPolicy {
    fn new(section: &CacheSection, vary: Vec<HeaderName>) -> Self {
        let min_weight = (section.max_bytes / section.max_entries.max(1)).min(u64::from(u32::MAX));
        Self(Arc::new(PolicyInner {
            http: HttpPolicy::new().vary_on(std::iter::once(header::HOST).chain(vary)),
            default_ttl: ms(section.default_ttl_ms),
            max_ttl: ms(section.max_ttl_ms),
            negative_ttl: ms(section.negative_ttl_ms),
            min_weight: min_weight as u32,
            max_body: section.max_body_bytes,
            passed: ShardedCounter::new(),
        }))
    }

    fn http_classify(&self, res: &Response<Bytes>) -> Cacheability {
        <HttpPolicy as CachePolicyFor<HttpOn0, Response<Bytes>>>::classify(&self.0.http, res)
    }

    /// How long a response classified `class` is fresh (as the layer's lifetimes compute it).
    fn fresh_for(&self, class: Cacheability) -> Duration {
        match class {
            Cacheability::Store(f) => f.ttl.unwrap_or(self.0.default_ttl).min(self.0.max_ttl),
            Cacheability::Negative => self.0.negative_ttl,
            Cacheability::Pass | Cacheability::Error => Duration::ZERO,
        }
    }

    /// A value read back from L3: its freshness worked out again from its headers.
    fn stored(&self, res: CachedResponse) -> Stored {
        let CachedResponse {
            status,
            version,
            headers,
            body,
        } = res;
        let mut probe = Response::new(Bytes::new());
        *probe.status_mut() = status;
        *probe.headers_mut() = headers;
        let fresh_for = self.fresh_for(self.http_classify(&probe));
        Stored {
            res: Arc::new(CachedResponse {
                status,
                version,
                headers: std::mem::take(probe.headers_mut()),
                body,
            }),
            fresh_for,
        }
    }
}

impl CachePolicy for GwPolicy {
    type Key = HttpKey;
    type Value = Stored;
    const WEIGHTED: bool = true;

    fn weight(&self, key: &HttpKey, value: &Stored) -> u32 {
        self.0.http.weight(key, &value.res).max(self.0.min_weight)
    }
}

impl<B> CachePolicyFor<Request<B>, Response<Bytes>> for GwPolicy {
    fn key(&self, req: &Request<B>) -> Option<HttpKey> {
        <HttpPolicy as CachePolicyFor<Request<B>, Response<Bytes>>>::key(&self.0.http, req)
    }

    fn classify(&self, res: &Response<Bytes>) -> Cacheability {
        if res.extensions().get::<TooBig>().is_some() {
            return Cacheability::Pass;
        }
        self.http_classify(res)
    }

    fn to_value(&self, res: Response<Bytes>) -> Stored {
        let class = <Self as CachePolicyFor<HttpOn0, Response<Bytes>>>::classify(self, &res);
        let value =
            <HttpPolicy as CachePolicyFor<HttpOn0, Response<Bytes>>>::to_value(&self.0.http, res);
        let fresh_for = self.fresh_for(class);
        Stored {
            res: value,
            fresh_for,
        }
    }

    /// A response just fetched (by this request, as the leader of its key).
    fn to_response(&self, value: &Stored) -> Response<Bytes> {
        let mut res = <HttpPolicy as CachePolicyFor<HttpOn0, Response<Bytes>>>::to_response(
            &self.0.http,
            &value.res,
        );
        mark(&mut res, MISS);
        res
    }

    /// A response from a tier (or shared by another request's fetch).
    fn to_response_aged(&self, value: &Stored, age: Duration) -> Response<Bytes> {
        let how = if age <= value.fresh_for { HIT } else { STALE };
        let mut res = <HttpPolicy as CachePolicyFor<HttpOn0, Response<Bytes>>>::to_response_aged(
            &self.0.http,
            &value.res,
            age,
        );
        mark(&mut res, how);
        res
    }
}

/// Keys as their text; values as [`tollgate_cache::http::encode_response`] writes them (the
/// freshness is worked out again from the headers on the way back).
#[derive(Debug, Clone)]
struct GwCodec(GwPolicy);

impl Codec<HttpKey, Stored> for GwCodec {
    fn encode_key(&self, key: &HttpKey) -> Vec<u8> {
        key.as_str().as_bytes().to_vec()
    }

    fn decode_key(&self, bytes: &[u8]) -> Option<HttpKey> {
        std::str::from_utf8(bytes).ok().map(HttpKey::from_text)
    }

    fn encode_value(&self, value: &Stored) -> Vec<u8> {
        tollgate_cache::http::encode_response(&value.res)
    }

    fn decode_value(&self, bytes: &[u8]) -> Option<Stored> {
        tollgate_cache::http::decode_response(bytes).map(|r| self.0.stored(r))
    }
}

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
            let (mut parts, body) = fut.await?.into_parts();
            // A stored answer is replayed with a whole body: connection headers do not apply.
            strip_hop_by_hop(&mut parts.headers, false);
            let probe = Response::from_parts(parts, Bytes::new());
            let class = policy.http_classify(&probe);
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
        })
    }
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

/// Whether the cache may look `req` up: what [`HttpPolicy`] keys (`GET`/`HEAD` without
/// `Authorization` or a request `no-store`). Others skip the cache and stream both ways.
fn cacheable_request<B>(req: &Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && !req.headers().contains_key(header::AUTHORIZATION)
        && !req
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().map_or(true, |s| CacheControl::parse(s).no_store))
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
pub struct RouteCache {
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
    pub fn build(
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
                let tier = RedisTier::new(r.to_config(), GwCodec(policy.clone()));
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

    /// The section it was built from.
    pub fn section(&self) -> &CacheSection {
        &self.section
    }

    /// The handle on its tiers: statistics, invalidation, L3 status.
    pub fn handle(&self) -> &CacheHandle<HttpKey, Stored> {
        &self.handle
    }

    /// Serves `req` from the cache or through `inner`, with `x-cache` on the answer.
    ///
    /// # Errors
    /// The upstream's error when no stale response may stand in for it.
    pub async fn call(
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
    pub fn state(&self) -> serde_json::Value {
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
    pub fn record_metrics(&self, route: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> CacheSection {
        toml::from_str(toml_text).unwrap()
    }

    fn res(headers: &[(&str, &'static str)], body: &'static str) -> Response<Bytes> {
        let mut r = Response::new(Bytes::from_static(body.as_bytes()));
        for (n, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        r
    }

    fn classify(p: &GwPolicy, r: &Response<Bytes>) -> Cacheability {
        <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::classify(p, r)
    }

    fn to_value(p: &GwPolicy, r: Response<Bytes>) -> Stored {
        <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_value(p, r)
    }

    #[test]
    fn the_suggested_section_parses_and_validates() {
        let s = section(
            r#"
            default_ttl_ms = 10000
            max_ttl_ms = 3600000
            stale_while_revalidate_ms = 5000
            stale_if_error_ms = 60000
            max_entries = 10000
            max_body_bytes = 1048576
            vary = ["accept-encoding"]
            redis = { url = "redis://127.0.0.1:6379", key_prefix = "tollgate:" }
            "#,
        );
        s.validate("routes[0].cache").unwrap();
        let r = s.redis.as_ref().unwrap();
        assert_eq!(r.key_prefix, "tollgate:");
        assert_eq!(r.timeout_ms, 50);
        CacheSection::default().validate("c").unwrap();
        assert_eq!(section(""), CacheSection::default());
        assert!(toml::from_str::<CacheSection>("ttl_ms = 5").is_err());
        assert!(toml::from_str::<CacheSection>("redis = { url = \"redis://x\", db = 1 }").is_err());
    }

    #[test]
    fn validation_names_the_bad_field() {
        let cases = [
            ("default_ttl_ms = 0", "c.default_ttl_ms"),
            ("default_ttl_ms = 7200000", "c.default_ttl_ms"),
            ("max_ttl_ms = 0", "c.max_ttl_ms"),
            ("max_ttl_ms = 9999999999999", "c.max_ttl_ms"),
            ("stale_if_error_ms = 4000000", "c.stale_if_error_ms"),
            (
                "stale_while_revalidate_ms = 4000000",
                "c.stale_while_revalidate_ms",
            ),
            ("negative_ttl_ms = 4000000", "c.negative_ttl_ms"),
            ("max_entries = 0", "c.max_entries"),
            ("max_bytes = 10", "c.max_bytes"),
            ("l1_entries = 1000", "c.l1_entries"),
            ("l1_entries = 131072", "c.l1_entries"),
            ("max_body_bytes = 0", "c.max_body_bytes"),
            (
                "max_bytes = 2048\nmax_body_bytes = 4096",
                "c.max_body_bytes",
            ),
            ("vary = [\"accept\", \"bad header\"]", "c.vary[1]"),
            ("redis = {}", "c.redis.url"),
            ("redis = { url = \"http://x\" }", "c.redis.url"),
            (
                "redis = { url = \"redis://x\", timeout_ms = 0 }",
                "c.redis.timeout_ms",
            ),
            (
                "redis = { url = \"redis://x\", channel = \"\" }",
                "c.redis.channel",
            ),
            (
                "redis = { url = \"redis://x\", breaker_failures = 0 }",
                "c.redis.breaker_failures",
            ),
            (
                "redis = { url = \"redis://x\", reconnect_interval_ms = 0 }",
                "c.redis.reconnect_interval_ms",
            ),
        ];
        for (text, field) in cases {
            let err = section(text).validate("c").unwrap_err();
            assert_eq!(err.field, field, "{text}");
            assert!(!err.problem.is_empty());
        }
        section("l1_entries = 0").validate("c").unwrap();
    }

    #[test]
    fn hits_and_stale_answers_are_labelled() {
        let p = GwPolicy::new(&CacheSection::default(), Vec::new());
        let v = to_value(&p, res(&[("cache-control", "max-age=5")], "x"));
        assert_eq!(v.fresh_for, Duration::from_secs(5));
        let label = |r: Response<Bytes>| r.headers()[&X_CACHE].to_str().unwrap().to_owned();
        let miss = <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_response(&p, &v);
        assert_eq!(label(miss), "MISS");
        let hit = <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_response_aged(
            &p,
            &v,
            Duration::from_secs(5),
        );
        assert_eq!(hit.body(), "x");
        assert_eq!(hit.headers()["age"], "5");
        assert_eq!(label(hit), "HIT");
        let stale = <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_response_aged(
            &p,
            &v,
            Duration::from_secs(6),
        );
        assert_eq!(label(stale), "STALE");
        // No explicit freshness: the section's default; capped at max_ttl.
        let v = to_value(&p, res(&[], "x"));
        assert_eq!(v.fresh_for, Duration::from_millis(10_000));
        let v = to_value(&p, res(&[("cache-control", "max-age=999999")], "x"));
        assert_eq!(v.fresh_for, Duration::from_millis(3_600_000));
    }

    #[test]
    fn too_big_bodies_are_not_stored_and_small_entries_weigh_the_floor() {
        let s = CacheSection {
            max_entries: 100,
            max_bytes: 100_000,
            ..CacheSection::default()
        };
        let p = GwPolicy::new(&s, Vec::new());
        let mut r = res(&[], "x");
        assert!(matches!(classify(&p, &r), Cacheability::Store(_)));
        r.extensions_mut().insert(TooBig);
        assert_eq!(classify(&p, &r), Cacheability::Pass);
        let v = to_value(&p, res(&[], "x"));
        let key = HttpKey::from_text("GET /");
        assert_eq!(p.weight(&key, &v), 1000, "100 entries of 100000 bytes");
        let big: &'static str = Box::leak("y".repeat(5000).into_boxed_str());
        let v = to_value(&p, res(&[], big));
        assert!(p.weight(&key, &v) > 5000);
    }

    #[test]
    fn the_key_includes_host_and_the_vary_headers() {
        let s = section("vary = [\"Accept-Encoding\"]");
        let p = GwPolicy::new(&s, s.vary_headers().unwrap());
        let key = |host: &str, enc: &str| {
            let req = Request::get("/a")
                .header("host", host)
                .header("accept-encoding", enc)
                .body(())
                .unwrap();
            <GwPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::key(&p, &req).unwrap()
        };
        assert_eq!(key("a", "gzip"), key("a", "gzip"));
        assert_ne!(key("a", "gzip"), key("b", "gzip"));
        assert_ne!(key("a", "gzip"), key("a", "br"));
        // A response varying on what the key holds is stored.
        assert!(matches!(
            classify(&p, &res(&[("vary", "accept-encoding")], "x")),
            Cacheability::Store(_)
        ));
        assert_eq!(
            classify(&p, &res(&[("vary", "cookie")], "x")),
            Cacheability::Pass
        );
    }

    #[test]
    fn only_plain_gets_and_heads_are_looked_up() {
        let req = |m: Method, h: &[(&str, &str)]| {
            let mut b = Request::builder().method(m).uri("/");
            for (n, v) in h {
                b = b.header(*n, *v);
            }
            b.body(()).unwrap()
        };
        assert!(cacheable_request(&req(Method::GET, &[])));
        assert!(cacheable_request(&req(
            Method::HEAD,
            &[("cache-control", "max-age=0")]
        )));
        assert!(!cacheable_request(&req(Method::POST, &[])));
        assert!(!cacheable_request(&req(
            Method::GET,
            &[("authorization", "x")]
        )));
        assert!(!cacheable_request(&req(
            Method::GET,
            &[("cache-control", "No-Store")]
        )));
    }

    #[test]
    fn l3_values_round_trip_with_their_freshness() {
        let p = GwPolicy::new(&CacheSection::default(), Vec::new());
        let codec = GwCodec(p.clone());
        let v = to_value(
            &p,
            res(&[("cache-control", "max-age=7"), ("x-a", "1")], "body"),
        );
        let back = codec.decode_value(&codec.encode_value(&v)).unwrap();
        assert_eq!(back.fresh_for, Duration::from_secs(7));
        assert_eq!(back.res.body, "body");
        assert_eq!(back.res.headers["x-a"], "1");
        assert!(codec.decode_value(b"\x01").is_none());
        let key = HttpKey::from_text("GET /x");
        assert_eq!(codec.decode_key(&codec.encode_key(&key)), Some(key));
    }

    #[tokio::test]
    async fn build_keeps_an_equal_section_and_never_blocks_on_redis() {
        let s = CacheSection::default();
        let a = RouteCache::build(&s, "r", None).unwrap();
        let b = RouteCache::build(&s, "r", Some(&a)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let changed = CacheSection {
            default_ttl_ms: 1,
            ..s.clone()
        };
        let c = RouteCache::build(&changed, "r", Some(&a)).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // Nothing listens on port 1: the tier keeps trying in the background.
        let with_redis = CacheSection {
            redis: Some(RedisSection {
                url: "redis://127.0.0.1:1".into(),
                ..RedisSection::default()
            }),
            ..s
        };
        let d = RouteCache::build(&with_redis, "r", None).unwrap();
        let state = d.state();
        assert_eq!(state["l3"]["connected"], false);
        assert_eq!(state["entries"], 0);
        assert_eq!(a.state()["l3"], serde_json::Value::Null);
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || d.record_metrics("r"));
        let text = handle.render();
        assert!(
            text.contains("tollgate_cache_hits_total{route=\"r\",tier=\"l3\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_cache_l3_connected{route=\"r\"} 0"),
            "{text}"
        );
    }
}
