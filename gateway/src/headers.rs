//! Proxy header rules: hop-by-hop headers are removed (RFC 9110 §7.6.1), and the forwarding
//! headers `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`
//! (RFC 7239) and `Via` are added.

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

/// Removes hop-by-hop headers and any header named in `Connection`. With `keep_te_trailers`,
/// a `TE: trailers` survives (gRPC needs it end to end over HTTP/2).
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
        && headers.get_all(header::TE).iter().any(|v| {
            v.as_bytes().split(|b| *b == b',').any(|t| {
                let t = t.split(|b| *b == b';').next().unwrap_or_default();
                t.trim_ascii().eq_ignore_ascii_case(b"trailers")
            })
        });
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `Via` token for a message version: `1.0`, `1.1`, `2`.
pub(crate) fn via_value(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 tollgate",
        Version::HTTP_10 => "1.0 tollgate",
        Version::HTTP_2 => "2 tollgate",
        Version::HTTP_3 => "3 tollgate",
        _ => "1.1 tollgate",
    })
}

/// A client connection's forwarding values, computed once per connection.
#[derive(Debug)]
pub(crate) struct Forwarding {
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
    /// The values for a client at `client` speaking `proto` (`http` or `https`).
    pub(crate) fn new(client: IpAddr, proto: &'static str) -> Self {
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
            ip,
            proto,
            element,
            with_host: ArcSwapOption::empty(),
        }
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

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`
/// (appended) and `Via` (appended) for a request in message version `version` for `host`.
pub(crate) fn add_forwarding(
    headers: &mut HeaderMap,
    fwd: &Forwarding,
    host: Option<&HeaderValue>,
    version: Version,
) {
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
        let fwd = Forwarding::new("::1".parse().unwrap(), "https");
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
        let fwd = Forwarding::new("10.1.2.3".parse().unwrap(), "http");
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
