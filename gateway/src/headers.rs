//! Proxy header rules: hop-by-hop headers are removed (RFC 9110 §7.6.1), and the forwarding
//! headers `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`
//! (RFC 7239) and `Via` are added.
//!
//! From a peer in `server.trusted_proxies`, the `X-Forwarded-For` and `Forwarded` the request
//! brought are rewritten to the chain the gateway believes (see [`forwarded`]):
//! the client first, then the trusted hops, then the peer; both fields name the same chain,
//! whichever one was walked. From any other peer they are passed on with the peer appended,
//! as nginx's `$proxy_add_x_forwarded_for` and Envoy do: the entry the gateway adds is always
//! the rightmost, and an upstream that walks from the right stops at it.

use crate::forwarded::{self, Source, TrustedProxies, Walk};
use arc_swap::ArcSwapOption;
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;
use std::sync::Arc;

/// Headers that describe one connection, never forwarded.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether a `TE` value lists `trailers` (RFC 9110 §10.1.4), with or without parameters.
pub(crate) fn names_trailers(value: &[u8]) -> bool {
    value.split(|b| *b == b',').any(|t| {
        let t = t.split(|b| *b == b';').next().unwrap_or_default();
        t.trim_ascii().eq_ignore_ascii_case(b"trailers")
    })
}

/// Removes hop-by-hop headers and any header named in `Connection`. With `keep_te_trailers`,
/// a `TE: trailers` survives (gRPC needs it end to end over HTTP/2).
/// An upstream answer's fields as they go on to the client: the hop-by-hop ones stripped
/// ([`strip_hop_by_hop`]), and no `Content-Length` on a `204` (RFC 9110 §8.6: a server must
/// not send one; an HTTP/2 client refuses the stream that carries it).
pub(crate) fn relay_fields(status: http::StatusCode, headers: &mut HeaderMap) {
    strip_hop_by_hop(headers, false);
    if status == http::StatusCode::NO_CONTENT {
        headers.remove(header::CONTENT_LENGTH);
    }
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // Fast path: one pass over the names (standard names compare as enum tags) instead of a
    // hash lookup per hop-by-hop name; most messages carry none.
    if !headers.keys().any(|k| HOP_BY_HOP.iter().any(|h| h == k)) {
        return;
    }
    // With a transfer coding, `Content-Length` is not the body's length (RFC 9112 §6.3): the
    // next hop frames the body itself, and must not see the stale length.
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Every `Connection` field counts, not only the first (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(&name);
    }
    let te_trailers = keep_te_trailers
        && headers
            .get_all(header::TE)
            .iter()
            .any(|v| names_trailers(v.as_bytes()));
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `Via` token for a message version: `1.0`, `1.1`, `2`.
/// (Constants, so that the values are checked once, when the gateway is built, not on every
/// request.)
pub(crate) fn via_value(version: Version) -> HeaderValue {
    const V09: HeaderValue = HeaderValue::from_static("0.9 tollgate");
    const V10: HeaderValue = HeaderValue::from_static("1.0 tollgate");
    const V11: HeaderValue = HeaderValue::from_static("1.1 tollgate");
    const V2: HeaderValue = HeaderValue::from_static("2 tollgate");
    const V3: HeaderValue = HeaderValue::from_static("3 tollgate");
    match version {
        Version::HTTP_09 => V09,
        Version::HTTP_10 => V10,
        Version::HTTP_2 => V2,
        Version::HTTP_3 => V3,
        _ => V11,
    }
}

/// A client connection's forwarding values, computed once per connection.
#[derive(Debug)]
pub(crate) struct Forwarding {
    addr: IpAddr,
    /// The trusted networks, when the peer is in one: its forwarding fields are believed.
    trusted: Option<Arc<TrustedProxies>>,
    ip: String,
    ip_value: HeaderValue,
    proto: &'static str,
    /// `for=IP;proto=P`, the `Forwarded` element without a host.
    element: String,
    element_value: HeaderValue,
    /// The last host seen and its `Forwarded` element: a connection's requests almost always
    /// name the same host, so the element is formatted once rather than per request.
    with_host: ArcSwapOption<(HeaderValue, HeaderValue)>,
}

impl Clone for Forwarding {
    fn clone(&self) -> Self {
        Self {
            addr: self.addr,
            trusted: self.trusted.clone(),
            ip: self.ip.clone(),
            ip_value: self.ip_value.clone(),
            proto: self.proto,
            element: self.element.clone(),
            element_value: self.element_value.clone(),
            with_host: ArcSwapOption::new(self.with_host.load_full()),
        }
    }
}

impl Forwarding {
    /// The values for a peer at `client` speaking `proto` (`http` or `https`); `trusted`
    /// when the peer is in one of those networks (its forwarding fields are then believed).
    pub(crate) fn new(
        client: IpAddr,
        proto: &'static str,
        trusted: Option<Arc<TrustedProxies>>,
    ) -> Self {
        let ip = client.to_string();
        let element = if client.is_ipv6() {
            format!("for=\"[{ip}]\";proto={proto}")
        } else {
            format!("for={ip};proto={proto}")
        };
        Self {
            ip_value: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("unknown")),
            element_value: HeaderValue::from_str(&element)
                .unwrap_or(HeaderValue::from_static("for=unknown")),
            addr: client,
            trusted,
            ip,
            proto,
            element,
            with_host: ArcSwapOption::empty(),
        }
    }

    /// The peer's address.
    pub(crate) fn peer(&self) -> IpAddr {
        self.addr
    }

    /// The trusted networks, when the peer is in one.
    pub(crate) fn trusted(&self) -> Option<&TrustedProxies> {
        self.trusted.as_deref()
    }

    /// The client's address as text (`X-Forwarded-For`).
    pub(crate) fn ip(&self) -> &str {
        &self.ip
    }

    /// `http` or `https` (`X-Forwarded-Proto`).
    pub(crate) fn proto(&self) -> &'static str {
        self.proto
    }

    /// The `Forwarded` element for a request whose `Host` header is `host` (raw bytes, as the
    /// gateway's own HTTP/1.1 path reads it); formatted only when the host changes.
    pub(crate) fn forwarded_for(&self, host: Option<&[u8]>) -> HeaderValue {
        let Some(host) = host else {
            return self.element_value.clone();
        };
        if let Some(cached) = &*self.with_host.load()
            && cached.0.as_bytes() == host
        {
            return cached.1.clone();
        }
        match HeaderValue::from_bytes(host) {
            Ok(h) => self.element_with_host(&h),
            Err(_) => self.element_value.clone(),
        }
    }

    /// The `Forwarded` element for a request to `host`.
    fn element_with_host(&self, host: &HeaderValue) -> HeaderValue {
        if let Some(cached) = &*self.with_host.load()
            && cached.0 == host
        {
            return cached.1.clone();
        }
        let quotable = host
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\');
        let value = match host.to_str() {
            Ok(h) if quotable => HeaderValue::try_from(format!("{};host=\"{h}\"", self.element))
                .unwrap_or_else(|_| self.element_value.clone()),
            _ => self.element_value.clone(),
        };
        self.with_host
            .store(Some(Arc::new((host.clone(), value.clone()))));
        value
    }
}

/// The chain a trusted peer's forwarding fields name (see [`forwarded`]); `None` when the
/// peer is not trusted.
pub(crate) fn walk(headers: &HeaderMap, fwd: &Forwarding) -> Option<Walk> {
    let trusted = fwd.trusted()?;
    // A field that `Connection` names is not forwarded (`strip_hop_by_hop`), so not believed.
    let named = |name: &HeaderName| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| {
                t.trim_ascii()
                    .eq_ignore_ascii_case(name.as_str().as_bytes())
            })
    };
    let present = |name: &HeaderName| headers.contains_key(name) && !named(name);
    let (source, name) = if present(&header::FORWARDED) {
        (Source::Forwarded, &header::FORWARDED)
    } else {
        (Source::XForwardedFor, &X_FORWARDED_FOR)
    };
    let dropped = named(name);
    Some(forwarded::walk(trusted, fwd.addr, source, || {
        headers
            .get_all(name)
            .iter()
            .filter(|_| !dropped)
            .map(HeaderValue::as_bytes)
    }))
}

/// The client's address: the peer's, or the one its trusted proxies name.
pub(crate) fn client(headers: &HeaderMap, fwd: &Forwarding) -> IpAddr {
    walk(headers, fwd).map_or(fwd.addr, |w| w.client)
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`
/// (appended) and `Via` (appended) for a request in message version `version` for `host`.
pub(crate) fn add_forwarding(
    headers: &mut HeaderMap,
    fwd: &Forwarding,
    host: Option<&HeaderValue>,
    version: Version,
) {
    if let Some(w) = walk(headers, fwd) {
        rewrite_chain(headers, fwd, &w, host);
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(fwd.proto),
        );
        if let Some(h) = host {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
        headers.append(header::VIA, via_value(version));
        return;
    }
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::try_from(format!("{prev}, {}", fwd.ip)).ok(),
        None => Some(fwd.ip_value.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(fwd.proto),
    );
    let forwarded = match host {
        Some(h) => {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            fwd.element_with_host(h)
        }
        None => fwd.element_value.clone(),
    };
    headers.append(header::FORWARDED, forwarded);
    headers.append(header::VIA, via_value(version));
}

/// Replaces a trusted peer's `X-Forwarded-For` and `Forwarded` with the chain `w` believes,
/// the peer last.
fn rewrite_chain(headers: &mut HeaderMap, fwd: &Forwarding, w: &Walk, host: Option<&HeaderValue>) {
    let name = match w.source {
        Source::Forwarded => &header::FORWARDED,
        Source::XForwardedFor => &X_FORWARDED_FOR,
    };
    let values = || headers.get_all(name).iter().map(HeaderValue::as_bytes);
    let mut xff = Vec::with_capacity(64);
    forwarded::write_believed(&mut xff, w, values(), false);
    xff.extend_from_slice(fwd.ip.as_bytes());
    let mut elements = Vec::with_capacity(96);
    forwarded::write_believed(&mut elements, w, values(), true);
    let own = match host {
        Some(h) => fwd.element_with_host(h),
        None => fwd.element_value.clone(),
    };
    elements.extend_from_slice(own.as_bytes());
    headers.remove(&X_FORWARDED_FOR);
    headers.remove(header::FORWARDED);
    // Addresses, commas and a header value already checked: always valid.
    if let Ok(v) = HeaderValue::from_bytes(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_bytes(&elements) {
        headers.insert(header::FORWARDED, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-second"));
        h.insert("x-second", HeaderValue::from_static("2"));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-kept"], "yes");
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, true);
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn adds_forwarding_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let fwd = Forwarding::new("::1".parse().unwrap(), "https", None);
        let host = HeaderValue::from_static("a.example");
        add_forwarding(&mut h, &fwd, Some(&host), Version::HTTP_2);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[::1]\";proto=https;host=\"a.example\""
        );
        assert_eq!(h[header::VIA], "2 tollgate");
    }

    #[test]
    fn forwarded_element_follows_the_host() {
        let fwd = Forwarding::new("10.1.2.3".parse().unwrap(), "http", None);
        let forwarded = |host: Option<&'static str>| {
            let mut h = HeaderMap::new();
            let host = host.map(HeaderValue::from_static);
            add_forwarding(&mut h, &fwd, host.as_ref(), Version::HTTP_11);
            h[header::FORWARDED].clone()
        };
        for _ in 0..2 {
            assert_eq!(forwarded(Some("a")), "for=10.1.2.3;proto=http;host=\"a\"");
            assert_eq!(forwarded(Some("b")), "for=10.1.2.3;proto=http;host=\"b\"");
            assert_eq!(forwarded(Some("b")), "for=10.1.2.3;proto=http;host=\"b\"");
            assert_eq!(forwarded(Some("a b")), "for=10.1.2.3;proto=http");
            assert_eq!(forwarded(None), "for=10.1.2.3;proto=http");
        }
        let copy = fwd.clone();
        let mut h = HeaderMap::new();
        add_forwarding(
            &mut h,
            &copy,
            Some(&HeaderValue::from_static("c")),
            Version::HTTP_11,
        );
        assert_eq!(h[header::FORWARDED], "for=10.1.2.3;proto=http;host=\"c\"");
    }
}
