//! A parsed head as an [`http::Request`], for the requests the fast path reads but does not
//! forward itself (routes with layers, HTTP/2 or TLS upstreams, listeners with admission):
//! they go through the same service as hyper's requests (see [`layered`](super::super::layered)).

use crate::held::held;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use std::cell::RefCell;

/// Fields the gateway may add to a request.
const ADDED: usize = 8;

/// A map kept for reuse only up to this many fields' room.
const KEEP_MAP: usize = 64;

thread_local! {
    /// An answer's field map, emptied, for the next request (as hyper's server keeps one).
    static SPARE_MAP: RefCell<Option<HeaderMap>> = const { RefCell::new(None) };
}

/// An empty map with room for `n` fields: the one kept by [`recycle`], or a new one.
fn spare_map(n: usize) -> HeaderMap {
    match SPARE_MAP.with(|m| m.borrow_mut().take()) {
        Some(map) if map.capacity() >= n => map,
        _ => HeaderMap::with_capacity(n),
    }
}

/// Keeps `map` (an answer's fields, written out) for the next request's fields.
pub(in crate::fast) fn recycle(mut map: HeaderMap) {
    if map.capacity() <= KEEP_MAP {
        map.clear();
        SPARE_MAP.with(|m| *m.borrow_mut() = Some(map));
    }
}

/// The request whose head is `buf[..len]`, as hyper would hand it to its service: the method,
/// the origin-form target, HTTP/1.1, and every field as sent (names lower-cased, values
/// sharing one copy of the head; a repeated `Content-Length` once). `None` when a part is not what `http` accepts (the caller
/// then lets hyper serve the request, with hyper's answer).
pub(super) fn build(
    buf: &[u8],
    len: usize,
    method: &str,
    target: &str,
    fields: &[httparse::Header<'_>],
) -> Option<Request<()>> {
    let head = held(&buf[..len]);
    // The same bytes in the copy (every part lies within `buf[..len]`).
    let part = |p: &[u8]| head.slice(super::offset(buf, p));
    let method = Method::from_bytes(method.as_bytes()).ok()?;
    let uri = Uri::from_maybe_shared(part(target.as_bytes())).ok()?;
    // Room for the fields the gateway adds on the way upstream (forwarding, `Via`, request
    // id, trace context), so that the map is not grown again and again per request.
    let mut headers = spare_map(fields.len() + ADDED);
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes()).ok()?;
        // Repeats of `Content-Length` (all equal, or the head went to hyper) count once, as
        // hyper's parser keeps them.
        if name == http::header::CONTENT_LENGTH && headers.contains_key(&name) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(part(f.value)).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Option<Request<()>> {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut fields);
        let httparse::Status::Complete(len) = req.parse(text).unwrap() else {
            panic!("incomplete head");
        };
        build(
            text,
            len,
            req.method.unwrap(),
            req.path.unwrap(),
            req.headers,
        )
    }

    #[test]
    fn a_head_becomes_the_request_hyper_would_make() {
        let req = parse(
            b"POST /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nX-Custom: one\r\n\
              x-custom: two\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc",
        )
        .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/a/b");
        assert_eq!(req.uri().query(), Some("x=1&y=%20"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "example.com");
        let lengths: Vec<_> = req.headers().get_all("content-length").iter().collect();
        assert_eq!(lengths, ["3"]);
        let custom: Vec<_> = req.headers().get_all("x-custom").iter().collect();
        assert_eq!(custom, ["one", "two"]);
        assert_eq!(req.headers().len(), 4);
    }

    #[test]
    fn an_extension_method_is_kept() {
        let req = parse(b"PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!(req.method().as_str(), "PURGE");
    }

    #[test]
    fn obs_text_in_a_value_is_kept() {
        let req = parse(b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n").unwrap();
        assert_eq!(req.headers()["x"].as_bytes(), "café".as_bytes());
    }
}
