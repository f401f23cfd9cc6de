//! The HTTP policy (feature `http`): what a shared cache in a gateway may store, following
//! RFC 9111 (HTTP caching) and RFC 5861 (`stale-while-revalidate`, `stale-if-error`).
//!
//! - Only `GET` and `HEAD` are looked up; requests with `Authorization` or a request
//!   `Cache-Control: no-store` pass through.
//! - A response is stored when its status is heuristically cacheable (RFC 9111 §4.2.2) and its
//!   `Cache-Control` allows a shared cache (`no-store`, `no-cache`, `private` and malformed
//!   directives do not), it sets no cookie, and its `Vary` names only request headers the key
//!   includes ([`HttpPolicy::vary_on`]); `Vary: *` is never stored.
//! - Freshness is `s-maxage`, else `max-age`, less the `Age` header; without either the
//!   config's `default_ttl` applies. `stale-while-revalidate` and `stale-if-error` set the stale
//!   windows; `must-revalidate` turns them off.
//! - `404` and `410` without explicit freshness are negative entries (`negative_ttl`); `5xx`
//!   answers are failures, so a stale entry in its `stale-if-error` window is served instead.
//!
//! Cached bodies are [`Bytes`]: a hit clones the status and headers and shares the body, and
//! adds the time it spent in the cache to its `Age` header. The policy works on services
//! answering `Response<Bytes>`; put a body-collecting layer between the cache and a streaming
//! service.
//!
//! Request `Cache-Control` directives other than `no-store` are ignored, as shared caches
//! commonly do, so a client cannot force origin load with `no-cache` or `max-age=0`. The cache
//! does not revalidate (no conditional requests): a stale entry is served within its windows or
//! fetched again in full.

use crate::cache_control::{CacheControl, Vary};
use crate::policy::{CachePolicy, CachePolicyFor, Cacheability, Freshness};
use bytes::Bytes;
use http::header::{AGE, AUTHORIZATION, CACHE_CONTROL, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Version};
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

/// The cache key of an HTTP request: method, URI and the values of the [`HttpPolicy::vary_on`]
/// headers.
///
/// The key carries a 64-bit hash of its text, computed once when it is made (SipHash-1-3 with a
/// fixed key), and hashes as that number alone: the tiers, the single-flight table and L2's
/// table (which hashes it again with its own random key, and re-hashes every entry when it grows
/// or sweeps its tombstones) then never walk the text again. Hash flooding stays out of reach:
/// to crowd one bucket of L2 a client would need many texts with one and the same 64-bit hash.
#[derive(Clone)]
pub struct HttpKey {
    hash: u64,
    text: Arc<str>,
}

impl HttpKey {
    /// The key as text (`"GET http://host/path?q"` and one line per keyed header).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A key from its text (what [`as_str`](Self::as_str) gave).
    pub fn from_text(text: &str) -> Self {
        Self {
            hash: text_hash(text),
            text: text.into(),
        }
    }
}

/// The longest key text whose buffer a thread keeps for the next key.
const KEPT_TEXT: usize = 4096;

/// The hash of a key's text. Fixed within a process (and across processes built with the same
/// standard library), so simulations repeat.
fn text_hash(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(text.as_bytes());
    h.finish()
}

impl PartialEq for HttpKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for HttpKey {}

impl Hash for HttpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for HttpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HttpKey").field(&self.text).finish()
    }
}

/// A stored response: status, version, headers and a shared body.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, shared by every hit.
    pub body: Bytes,
}

impl CachedResponse {
    /// Approximate memory size in bytes.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + 64
    }
}

/// The HTTP policy. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    vary_on: Vec<HeaderName>,
}

impl HttpPolicy {
    /// A policy keyed on method and URI only (responses with a `Vary` header are not stored).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds request headers to the key, so responses that `Vary` on them can be stored (one
    /// entry per combination of their values), e.g. `accept-encoding`.
    pub fn vary_on(mut self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        self.vary_on.extend(headers);
        self
    }

    fn freshness(cc: &CacheControl, headers: &HeaderMap) -> Freshness {
        let age = headers
            .get(AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let stale = |d: Option<Duration>| {
            if cc.must_revalidate {
                Some(Duration::ZERO)
            } else {
                d
            }
        };
        Freshness {
            ttl: cc.shared_max_age().map(|d| d.saturating_sub(age)),
            stale_while_revalidate: stale(cc.stale_while_revalidate),
            stale_if_error: stale(cc.stale_if_error),
        }
    }
}

/// Statuses a cache may store without explicit freshness (RFC 9111 §4.2.2, RFC 9110 §15.1).
fn heuristically_cacheable(s: StatusCode) -> bool {
    matches!(
        s.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

fn cache_control(headers: &HeaderMap) -> CacheControl {
    let mut joined = String::new();
    for v in headers.get_all(CACHE_CONTROL) {
        match v.to_str() {
            Ok(s) => {
                joined.push_str(s);
                joined.push(',');
            }
            Err(_) => {
                return CacheControl {
                    malformed: true,
                    ..CacheControl::default()
                };
            }
        }
    }
    CacheControl::parse(&joined)
}

impl CachePolicy for HttpPolicy {
    type Key = HttpKey;
    type Value = Arc<CachedResponse>;
    const WEIGHTED: bool = true;

    fn weight(&self, key: &HttpKey, value: &Arc<CachedResponse>) -> u32 {
        (key.text.len() + value.size()).min(u32::MAX as usize) as u32
    }
}

impl<B> CachePolicyFor<Request<B>, Response<Bytes>> for HttpPolicy {
    fn key(&self, req: &Request<B>) -> Option<HttpKey> {
        if !(req.method() == Method::GET || req.method() == Method::HEAD)
            || req.headers().contains_key(AUTHORIZATION)
        {
            return None;
        }
        if cache_control(req.headers()).no_store {
            return None;
        }
        // The text is written into a buffer this thread keeps, so that the key costs one
        // allocation (its own), not two.
        thread_local!(static TEXT: RefCell<String> = const { RefCell::new(String::new()) });
        Some(TEXT.with_borrow_mut(|text| {
            text.clear();
            let _ = write!(text, "{} {}", req.method(), req.uri());
            for name in &self.vary_on {
                text.push('\n');
                text.push_str(name.as_str());
                for v in req.headers().get_all(name) {
                    text.push(':');
                    text.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
            let key = HttpKey::from_text(text);
            if text.capacity() > KEPT_TEXT {
                // One very long key does not keep its buffer for the thread's life.
                *text = String::new();
            }
            key
        }))
    }

    fn classify(&self, res: &Response<Bytes>) -> Cacheability {
        let status = res.status();
        if status.is_server_error() {
            return Cacheability::Error;
        }
        let headers = res.headers();
        let cc = cache_control(headers);
        if !cc.storable() || headers.contains_key(SET_COOKIE) {
            return Cacheability::Pass;
        }
        let vary: Vec<&str> = headers
            .get_all(VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if headers.get_all(VARY).iter().count() != vary.len()
            || !Vary::parse(vary).covered_by(&self.vary_on)
        {
            return Cacheability::Pass;
        }
        let explicit = cc.shared_max_age().is_some();
        if !explicit && !heuristically_cacheable(status) {
            return Cacheability::Pass;
        }
        if !explicit && matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE) {
            return Cacheability::Negative;
        }
        Cacheability::Store(Self::freshness(&cc, headers))
    }

    fn to_value(&self, res: Response<Bytes>) -> Arc<CachedResponse> {
        let (parts, body) = res.into_parts();
        Arc::new(CachedResponse {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    fn to_response(&self, value: &Arc<CachedResponse>) -> Response<Bytes> {
        let mut res = Response::new(value.body.clone());
        *res.status_mut() = value.status;
        *res.version_mut() = value.version;
        *res.headers_mut() = value.headers.clone();
        res
    }

    /// Adds the time the response spent in this cache to its `Age` header (RFC 9111 §5.1).
    fn to_response_aged(&self, value: &Arc<CachedResponse>, age: Duration) -> Response<Bytes> {
        let mut res =
            <Self as CachePolicyFor<Request<B>, Response<Bytes>>>::to_response(self, value);
        let upstream = value
            .headers
            .get(AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let total = upstream.saturating_add(age.as_secs());
        if total > 0 {
            res.headers_mut()
                .insert(AGE, http::HeaderValue::from(total));
        }
        res
    }
}

/// A Redis codec for the HTTP policy (features `http` and `redis`): keys as their text, values
/// as status, headers and body, length-prefixed.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "http", feature = "redis"))))]
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpCodec;

/// Encodes a response: `status u16`, `headers u32`, then per header `name u32 + bytes`,
/// `value u32 + bytes`, then the body.
pub fn encode_response(r: &CachedResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(r.size());
    out.extend_from_slice(&r.status.as_u16().to_be_bytes());
    out.extend_from_slice(&(r.headers.len() as u32).to_be_bytes());
    for (name, value) in &r.headers {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(&r.body);
    out
}

/// Decodes what [`encode_response`] wrote; `None` for anything else (never panics).
pub fn decode_response(bytes: &[u8]) -> Option<CachedResponse> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Some(head)
    }
    fn u32_of(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_be_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    let mut b = bytes;
    let status =
        StatusCode::from_u16(u16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?)).ok()?;
    let count = u32_of(&mut b)?;
    let mut headers = HeaderMap::new();
    for _ in 0..count {
        let n = u32_of(&mut b)?;
        let name = HeaderName::from_bytes(take(&mut b, n)?).ok()?;
        let n = u32_of(&mut b)?;
        let value = http::HeaderValue::from_bytes(take(&mut b, n)?).ok()?;
        headers.append(name, value);
    }
    Some(CachedResponse {
        status,
        version: Version::HTTP_11,
        headers,
        body: Bytes::copy_from_slice(b),
    })
}

#[cfg(feature = "redis")]
impl crate::redis::Codec<HttpKey, Arc<CachedResponse>> for HttpCodec {
    fn encode_key(&self, key: &HttpKey) -> Vec<u8> {
        key.as_str().as_bytes().to_vec()
    }

    fn decode_key(&self, bytes: &[u8]) -> Option<HttpKey> {
        std::str::from_utf8(bytes).ok().map(HttpKey::from_text)
    }

    fn encode_value(&self, value: &Arc<CachedResponse>) -> Vec<u8> {
        encode_response(value)
    }

    fn decode_value(&self, bytes: &[u8]) -> Option<Arc<CachedResponse>> {
        decode_response(bytes).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str) -> Request<()> {
        Request::builder().method(method).uri(uri).body(()).unwrap()
    }

    fn res(status: u16, headers: &[(&str, &str)]) -> Response<Bytes> {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Bytes::from_static(b"body")).unwrap()
    }

    fn key(p: &HttpPolicy, r: &Request<()>) -> Option<HttpKey> {
        <HttpPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::key(p, r)
    }

    fn classify(p: &HttpPolicy, r: &Response<Bytes>) -> Cacheability {
        <HttpPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::classify(p, r)
    }

    #[test]
    fn only_get_and_head_without_credentials() {
        let p = HttpPolicy::new();
        assert!(key(&p, &req(Method::GET, "http://a/x?y=1")).is_some());
        assert!(key(&p, &req(Method::HEAD, "http://a/x")).is_some());
        assert_ne!(
            key(&p, &req(Method::GET, "http://a/x")),
            key(&p, &req(Method::HEAD, "http://a/x"))
        );
        assert!(key(&p, &req(Method::POST, "http://a/x")).is_none());
        let mut r = req(Method::GET, "http://a/x");
        r.headers_mut()
            .insert(AUTHORIZATION, "Bearer t".parse().unwrap());
        assert!(key(&p, &r).is_none());
        let mut r = req(Method::GET, "http://a/x");
        r.headers_mut()
            .insert(CACHE_CONTROL, "no-store".parse().unwrap());
        assert!(key(&p, &r).is_none());
    }

    #[test]
    fn a_key_hashes_as_its_text_wherever_it_was_made() {
        use std::hash::BuildHasher;
        let p = HttpPolicy::new();
        let hasher = std::hash::RandomState::new();
        let long = format!("http://a/{}", "x".repeat(2 * KEPT_TEXT));
        for uri in [
            "http://a/x?y=1",
            "http://a/x?y=2",
            long.as_str(),
            "http://a/x?y=1",
        ] {
            let made = key(&p, &req(Method::GET, uri)).unwrap();
            let read = HttpKey::from_text(made.as_str());
            assert_eq!(made.as_str(), format!("GET {uri}"));
            assert_eq!(made, read, "a key read back from L3 finds the local entry");
            assert_eq!(hasher.hash_one(&made), hasher.hash_one(&read));
        }
        let (a, b) = (
            key(&p, &req(Method::GET, "http://a/x?y=1")).unwrap(),
            key(&p, &req(Method::GET, "http://a/x?y=2")).unwrap(),
        );
        assert_ne!(a, b);
        assert_ne!(hasher.hash_one(&a), hasher.hash_one(&b));
        assert!(format!("{a:?}").contains("http://a/x?y=1"));
    }

    #[test]
    fn cache_control_decides() {
        let p = HttpPolicy::new();
        let s = |n| Some(Duration::from_secs(n));
        let f = classify(
            &p,
            &res(
                200,
                &[
                    (
                        "cache-control",
                        "max-age=60, s-maxage=30, stale-while-revalidate=5, stale-if-error=600",
                    ),
                    ("age", "10"),
                ],
            ),
        );
        assert_eq!(
            f,
            Cacheability::Store(Freshness {
                ttl: s(20),
                stale_while_revalidate: s(5),
                stale_if_error: s(600)
            })
        );
        let f = classify(
            &p,
            &res(
                200,
                &[(
                    "cache-control",
                    "max-age=60, stale-if-error=600, must-revalidate",
                )],
            ),
        );
        assert_eq!(
            f,
            Cacheability::Store(Freshness {
                ttl: s(60),
                stale_while_revalidate: s(0),
                stale_if_error: s(0)
            })
        );
        for cc in ["no-store", "private", "no-cache", "max-age=x"] {
            assert_eq!(
                classify(&p, &res(200, &[("cache-control", cc)])),
                Cacheability::Pass,
                "{cc}"
            );
        }
        assert_eq!(
            classify(&p, &res(200, &[("set-cookie", "a=b")])),
            Cacheability::Pass
        );
        assert_eq!(
            classify(&p, &res(200, &[])),
            Cacheability::Store(Freshness::default())
        );
        assert_eq!(classify(&p, &res(201, &[])), Cacheability::Pass);
        assert_eq!(
            classify(&p, &res(201, &[("cache-control", "max-age=5")])),
            Cacheability::Store(Freshness::ttl(Duration::from_secs(5)))
        );
        assert_eq!(classify(&p, &res(404, &[])), Cacheability::Negative);
        assert_eq!(
            classify(&p, &res(503, &[("cache-control", "max-age=5")])),
            Cacheability::Error
        );
    }

    #[test]
    fn vary_must_be_covered_by_the_key() {
        let plain = HttpPolicy::new();
        let keyed = HttpPolicy::new().vary_on([http::header::ACCEPT_ENCODING]);
        let r = res(200, &[("vary", "Accept-Encoding")]);
        assert_eq!(classify(&plain, &r), Cacheability::Pass);
        assert_eq!(
            classify(&keyed, &r),
            Cacheability::Store(Freshness::default())
        );
        assert_eq!(
            classify(&keyed, &res(200, &[("vary", "*")])),
            Cacheability::Pass
        );
        assert_eq!(
            classify(&keyed, &res(200, &[("vary", "accept-encoding, cookie")])),
            Cacheability::Pass
        );
        let mut gz = req(Method::GET, "http://a/x");
        gz.headers_mut()
            .insert(http::header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        assert_ne!(
            key(&keyed, &gz),
            key(&keyed, &req(Method::GET, "http://a/x"))
        );
    }

    #[test]
    fn responses_round_trip_and_share_the_body() {
        let p = HttpPolicy::new();
        let v = <HttpPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_value(
            &p,
            res(200, &[("x-a", "1"), ("x-a", "2")]),
        );
        let a = <HttpPolicy as CachePolicyFor<Request<()>, Response<Bytes>>>::to_response(&p, &v);
        assert_eq!(
            a.body().as_ptr(),
            v.body.as_ptr(),
            "the body is shared, not copied"
        );
        assert_eq!(a.headers().get_all("x-a").iter().count(), 2);
        let back = decode_response(&encode_response(&v)).unwrap();
        assert_eq!(
            (back.status, back.headers, back.body),
            (v.status, v.headers.clone(), v.body.clone())
        );
        assert!(decode_response(b"\x00").is_none());
        assert!(decode_response(&[0, 200, 0, 0, 0, 9]).is_none());
    }
}
