//! What the gateway's cache stores and how: [`HttpPolicy`] with a weight floor, the `x-cache`
//! header, and the Redis codec.

use crate::config::cache::{CacheSection, ms};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};
use std::sync::Arc;
use std::time::Duration;
use tollgate_cache::http::{CachedResponse, HttpKey, HttpPolicy};
use tollgate_cache::redis::Codec;
use tollgate_cache::{CachePolicy, CachePolicyFor, Cacheability};
use tollgate_core::counter::ShardedCounter;

/// The header telling clients how the cache answered.
pub(crate) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub(super) const HIT: &str = "HIT";
pub(super) const STALE: &str = "STALE";
pub(super) const MISS: &str = "MISS";
pub(super) const BYPASS: &str = "BYPASS";

/// Sets `x-cache: how` on `res`.
pub(super) fn mark<B>(res: &mut Response<B>, how: &'static str) {
    res.headers_mut()
        .insert(X_CACHE.clone(), HeaderValue::from_static(how));
}

/// What the cache stores: the response, and how long it is fresh (to tell `HIT` from `STALE`).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(super) res: Arc<CachedResponse>,
    pub(super) fresh_for: Duration,
}

/// Marks a response read whole past `max_body_bytes`: answered, not stored.
#[derive(Debug, Clone, Copy)]
pub(super) struct TooBig;

/// The gateway's policy: [`HttpPolicy`] with a weight floor (so `max_entries` bounds L2 too)
/// and the `x-cache` header on everything it rebuilds. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct GwPolicy(pub(super) Arc<PolicyInner>);

#[derive(Debug)]
pub(super) struct PolicyInner {
    http: HttpPolicy,
    default_ttl: Duration,
    max_ttl: Duration,
    negative_ttl: Duration,
    min_weight: u32,
    /// `max_body_bytes`.
    pub(super) max_body: u64,
    /// `origin_timeout_ms`, when set.
    pub(super) origin_timeout: Option<Duration>,
    /// Responses streamed past the cache (uncacheable by their head, or too big).
    pub(super) passed: ShardedCounter,
}

/// The request type [`HttpPolicy`]'s body-independent methods are called with.
type NoBody = Request<()>;

impl GwPolicy {
    /// The policy of `section`, keying on `Host` and `vary`.
    pub(super) fn new(section: &CacheSection, vary: Vec<HeaderName>) -> Self {
        let min_weight = (section.max_bytes / section.max_entries.max(1)).min(u64::from(u32::MAX));
        Self(Arc::new(PolicyInner {
            http: HttpPolicy::new().vary_on(std::iter::once(header::HOST).chain(vary)),
            default_ttl: ms(section.default_ttl_ms),
            max_ttl: ms(section.max_ttl_ms),
            negative_ttl: ms(section.negative_ttl_ms),
            min_weight: min_weight as u32,
            max_body: section.max_body_bytes,
            origin_timeout: (section.origin_timeout_ms > 0).then(|| ms(section.origin_timeout_ms)),
            passed: ShardedCounter::new(),
        }))
    }

    /// What [`HttpPolicy`] makes of `res` (its head; the body is not looked at).
    fn http_classify(&self, res: &Response<Bytes>) -> Cacheability {
        <HttpPolicy as CachePolicyFor<NoBody, Response<Bytes>>>::classify(&self.0.http, res)
    }

    /// What the cache will make of a response with this head (the body is not looked at).
    pub(super) fn classify_head(&self, res: &Response<Bytes>) -> Cacheability {
        <Self as CachePolicyFor<NoBody, Response<Bytes>>>::classify(self, res)
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
        // Never keep an answer to what one client asked alone (a range, a revalidation).
        if res.extensions().get::<TooBig>().is_some()
            || matches!(
                res.status(),
                http::StatusCode::PARTIAL_CONTENT | http::StatusCode::NOT_MODIFIED
            )
        {
            return Cacheability::Pass;
        }
        self.http_classify(res)
    }

    fn to_value(&self, res: Response<Bytes>) -> Stored {
        let class = <Self as CachePolicyFor<NoBody, Response<Bytes>>>::classify(self, &res);
        let value =
            <HttpPolicy as CachePolicyFor<NoBody, Response<Bytes>>>::to_value(&self.0.http, res);
        let fresh_for = self.fresh_for(class);
        Stored {
            res: value,
            fresh_for,
        }
    }

    /// A response just fetched (by this request, as the leader of its key).
    fn to_response(&self, value: &Stored) -> Response<Bytes> {
        let mut res = <HttpPolicy as CachePolicyFor<NoBody, Response<Bytes>>>::to_response(
            &self.0.http,
            &value.res,
        );
        mark(&mut res, MISS);
        res
    }

    /// A response from a tier (or shared by another request's fetch).
    fn to_response_aged(&self, value: &Stored, age: Duration) -> Response<Bytes> {
        let how = if age <= value.fresh_for { HIT } else { STALE };
        let mut res = <HttpPolicy as CachePolicyFor<NoBody, Response<Bytes>>>::to_response_aged(
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
pub(super) struct GwCodec(pub(super) GwPolicy);

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
