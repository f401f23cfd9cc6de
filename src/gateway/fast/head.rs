//! Request heads on the fast path: parse one with httparse, decide whether the fast path
//! takes it, and write the head the upstream gets.
//!
//! Pure (no I/O, no allocation beyond `out` growing), so it is unit-tested here and fuzzed
//! (`fuzz/fuzz_targets/gateway_h1.rs`).

use super::super::headers::Forwarding;
use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

/// Header slots parsed per head; a head with more goes to hyper (which applies
/// `limits.max_headers` and answers 431).
pub const MAX_HEADERS: usize = 128;

/// What a parsed request head is, in offsets into the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Length of the head, up to and including the blank line.
    pub len: usize,
    /// The declared body length (`Content-Length`; 0 without one).
    pub body_len: u64,
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// `HEAD`: the response has no body whatever its headers say.
    pub head_method: bool,
    /// A method that may be sent twice (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// The method, the path (without the query) and the `Host` value, for the access log.
    pub method: Range<usize>,
    /// See `method`.
    pub path: Range<usize>,
    /// See `method`.
    pub host: Range<usize>,
}

/// Where a routed request goes.
#[derive(Debug)]
pub enum Route<T> {
    /// Forward to `addr`; `preserve_host` keeps the client's `Host`.
    Forward {
        /// The caller's handle on the route (cluster, endpoint index...).
        target: T,
        /// The endpoint.
        addr: SocketAddr,
        /// Keep the client's `Host` (otherwise the endpoint's address).
        preserve_host: bool,
    },
    /// Not a plain route: hyper serves the request (and the connection, from here).
    Hyper,
    /// Answer at once with this status and text.
    Local(u16, &'static str),
}

/// The outcome of [`prepare`].
#[derive(Debug)]
pub enum Step<T> {
    /// The head is not complete yet.
    Partial,
    /// The head is complete but its body is not: the request is this many bytes long.
    NeedBody(usize),
    /// Not for the fast path (HTTP/1.0, chunked body, `Expect`, upgrade, malformed...): hyper
    /// serves it, with its own error answers.
    Hyper,
    /// Answer locally with `status` and text `msg`.
    Local {
        /// The request head.
        head: Head,
        /// The status.
        status: u16,
        /// The body text.
        msg: &'static str,
    },
    /// Forward: `out` now holds the upstream's request head.
    Forward {
        /// The request head.
        head: Head,
        /// From the route.
        target: T,
        /// The endpoint.
        addr: SocketAddr,
    },
}

/// Headers the fast path treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Host,
    ContentLength,
    Connection,
    /// Hop-by-hop: never forwarded (RFC 9110 §7.6.1).
    HopByHop,
    /// `TE`: only `trailers` is forwarded.
    Te,
    /// Present means hyper serves the request.
    Refuse,
    XForwardedFor,
    /// Replaced by the gateway's own value.
    Replaced,
    Other,
}

fn name_of(name: &str) -> Name {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Name::Te,
        4 if is("host") => Name::Host,
        6 if is("expect") => Name::Refuse,
        7 if is("upgrade") => Name::Refuse,
        7 if is("trailer") => Name::HopByHop,
        10 if is("connection") => Name::Connection,
        10 if is("keep-alive") => Name::HopByHop,
        14 if is("content-length") => Name::ContentLength,
        15 if is("x-forwarded-for") => Name::XForwardedFor,
        16 if is("proxy-connection") => Name::HopByHop,
        16 if is("x-forwarded-host") => Name::Replaced,
        17 if is("transfer-encoding") => Name::Refuse,
        17 if is("x-forwarded-proto") => Name::Replaced,
        18 if is("proxy-authenticate") => Name::HopByHop,
        19 if is("proxy-authorization") => Name::HopByHop,
        _ => Name::Other,
    }
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether `name` is listed in any `Connection` field of `headers` (such a header describes
/// the connection and is not forwarded, RFC 9110 §7.6.1).
pub fn named_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// Whether a request target may hold `b` as it is (RFC 3986 characters, `%` escapes; no
/// fragment).
fn uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'/' | b'?'
                | b'%'
                | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'['
                | b']'
        )
}

fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The limits a request is held to: a head past `max_bytes` or `max_headers` goes to hyper
/// (which answers 431); a body over `max_body` is refused (413); one over `max_held_body` goes
/// to hyper, which streams it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest head, bytes (`limits.max_header_bytes`).
    pub max_bytes: usize,
    /// Most header fields (`limits.max_headers`).
    pub max_headers: usize,
    /// Largest body, bytes (`limits.max_body_bytes`; `None`: no limit).
    pub max_body: Option<u64>,
    /// Largest body the fast path reads whole before forwarding.
    pub max_held_body: u64,
}

/// Parses the request head at the start of `buf`; when the fast path takes it, asks `route`
/// (with host, path, method and declared body length) where it goes and writes the upstream
/// head into `out` (cleared first).
pub fn prepare<T>(
    buf: &[u8],
    limits: Limits,
    fwd: &Forwarding,
    out: &mut Vec<u8>,
    route: impl FnOnce(&str, &str, &str, u64) -> Route<T>,
) -> Step<T> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(_) => return Step::Hyper,
    };
    if len > limits.max_bytes || req.headers.len() > limits.max_headers {
        return Step::Hyper;
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Step::Hyper;
    };
    // Origin form only; absolute form, `*` and authority form go to hyper, and so does a
    // target with a byte a URI may not hold (hyper answers 400) or a fragment.
    if !target.starts_with('/') || !target.bytes().all(uri_byte) || method == "CONNECT" {
        return Step::Hyper;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let mut host: Option<&[u8]> = None;
    let mut body_len: Option<u64> = None;
    let mut close = false;
    let mut names_headers = false;
    for h in req.headers.iter() {
        match name_of(h.name) {
            Name::Host => {
                if host.is_some() {
                    return Step::Hyper;
                }
                host = Some(h.value);
            }
            Name::ContentLength => {
                let Some(n) = parse_length(h.value) else {
                    return Step::Hyper;
                };
                if body_len.is_some_and(|m| m != n) {
                    return Step::Hyper;
                }
                body_len = Some(n);
            }
            Name::Connection => {
                for t in tokens(h.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        close = true;
                        // A field named `Close` is a connection option too (RFC 9110 §7.6.1).
                        names_headers = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        return Step::Hyper;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") {
                        names_headers = true;
                    }
                }
            }
            Name::Refuse => return Step::Hyper,
            _ => {}
        }
    }
    let Some(host) = host else {
        return Step::Hyper;
    };
    let Ok(host_str) = std::str::from_utf8(host) else {
        return Step::Hyper;
    };
    let body_len = body_len.unwrap_or(0);
    let local = |status, msg| Step::Local {
        head: Head {
            len,
            body_len,
            close,
            head_method: method == "HEAD",
            idempotent: false,
            method: offset(buf, method.as_bytes()),
            path: offset(buf, path.as_bytes()),
            host: offset(buf, host),
        },
        status,
        msg,
    };
    if limits.max_body.is_some_and(|max| body_len > max) {
        return local(413, "request body too large\n");
    }
    if body_len > limits.max_held_body {
        return Step::Hyper;
    }
    if ((buf.len() - len) as u64) < body_len {
        return Step::NeedBody(len + body_len as usize);
    }
    let head = Head {
        len,
        body_len,
        close,
        head_method: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
        ),
        method: offset(buf, method.as_bytes()),
        path: offset(buf, path.as_bytes()),
        host: offset(buf, host),
    };
    let (target_handle, addr, preserve_host) = match route(host_str, path, method, body_len) {
        Route::Forward {
            target: t,
            addr,
            preserve_host,
        } => (t, addr, preserve_host),
        Route::Hyper => return Step::Hyper,
        Route::Local(status, msg) => return Step::Local { head, status, msg },
    };
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    if preserve_host {
        out.extend_from_slice(host);
    } else {
        let _ = write!(out, "{addr}");
    }
    out.extend_from_slice(b"\r\n");
    let mut xff: Option<&[u8]> = None;
    let mut te_trailers = false;
    let mut length_written = false;
    for h in req.headers.iter() {
        let write = match name_of(h.name) {
            Name::Host | Name::Connection | Name::HopByHop | Name::Replaced | Name::Refuse => false,
            Name::Te => {
                let named = names_headers && named_in_connection(req.headers, h.name);
                te_trailers |= !named
                    && tokens(h.value).any(|t| {
                        let t = t.split(|b| *b == b';').next().unwrap_or_default();
                        t.trim_ascii().eq_ignore_ascii_case(b"trailers")
                    });
                false
            }
            Name::XForwardedFor => {
                // The first value, as `HeaderMap::get` reads it on the hyper path (which has
                // dropped it already if `Connection` names it).
                if !(names_headers && named_in_connection(req.headers, h.name)) {
                    xff.get_or_insert(h.value);
                }
                false
            }
            // Repeats (all equal, or the head went to hyper) are sent once.
            Name::ContentLength => !std::mem::replace(&mut length_written, true),
            Name::Other => !(names_headers && named_in_connection(req.headers, h.name)),
        };
        if write {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    if te_trailers {
        out.extend_from_slice(b"te: trailers\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    // A previous value is kept only when it is visible ASCII (what `to_str` accepts).
    if let Some(prev) = xff.filter(|v| v.iter().all(|b| *b == b'\t' || (b' '..=b'~').contains(b))) {
        out.extend_from_slice(prev);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(fwd.ip().as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(fwd.proto().as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-host: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\nforwarded: ");
    out.extend_from_slice(fwd.forwarded_for(Some(host)).as_bytes());
    out.extend_from_slice(b"\r\nvia: 1.1 tollgate\r\n\r\n");
    Step::Forward {
        head,
        target: target_handle,
        addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &str = "10.0.0.9:8080";
    const LIMITS: Limits = Limits {
        max_bytes: 8192,
        max_headers: 100,
        max_body: Some(1000),
        max_held_body: 100,
    };

    fn fwd() -> Forwarding {
        Forwarding::new("192.0.2.7".parse().unwrap(), "http")
    }

    fn forward(req: &[u8], preserve_host: bool) -> (Head, String) {
        let mut out = Vec::new();
        let step = prepare(req, LIMITS, &fwd(), &mut out, |_, _, _, _| Route::Forward {
            target: (),
            addr: UP.parse().unwrap(),
            preserve_host,
        });
        match step {
            Step::Forward { head, addr, .. } => {
                assert_eq!(addr.to_string(), UP);
                (head, String::from_utf8(out).unwrap())
            }
            other => panic!("not forwarded: {other:?}"),
        }
    }

    fn step(req: &[u8]) -> Step<()> {
        prepare(req, LIMITS, &fwd(), &mut Vec::new(), |_, _, _, _| {
            Route::Forward {
                target: (),
                addr: UP.parse().unwrap(),
                preserve_host: true,
            }
        })
    }

    #[test]
    fn forwards_a_get_with_the_proxy_headers() {
        let req = b"GET /a/b?x=1 HTTP/1.1\r\nHost: svc.example\r\nAccept: */*\r\n\r\nNEXT";
        let (head, out) = forward(req, true);
        assert_eq!(head.len, req.len() - 4);
        assert_eq!(&req[head.method.clone()], b"GET");
        assert_eq!(&req[head.path.clone()], b"/a/b");
        assert_eq!(&req[head.host.clone()], b"svc.example");
        assert_eq!(
            (head.body_len, head.close, head.idempotent),
            (0, false, true)
        );
        assert_eq!(
            out,
            "GET /a/b?x=1 HTTP/1.1\r\nhost: svc.example\r\nAccept: */*\r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: svc.example\r\n\
             forwarded: for=192.0.2.7;proto=http;host=\"svc.example\"\r\n\
             via: 1.1 tollgate\r\n\r\n"
        );
    }

    #[test]
    fn endpoint_host_unless_preserved() {
        let (_, out) = forward(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false);
        assert!(
            out.starts_with("GET / HTTP/1.1\r\nhost: 10.0.0.9:8080\r\n"),
            "{out}"
        );
        assert!(out.contains("x-forwarded-host: a\r\n"), "{out}");
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let req = b"POST /p HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret\r\n\
            X-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: x\r\n\
            TE: gzip, trailers;q=1\r\nTrailer: x\r\nX-Forwarded-Proto: https\r\n\
            X-Forwarded-Host: spoof\r\nX-Forwarded-For: 10.1.1.1\r\nX-Forwarded-For: 10.2.2.2\r\n\
            Forwarded: for=10.1.1.1\r\nVia: 1.0 edge\r\nContent-Length: 3\r\n\r\nabc";
        let (head, out) = forward(req, true);
        assert_eq!(
            (head.body_len, head.close, head.idempotent),
            (3, false, false)
        );
        let lower = out.to_ascii_lowercase();
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-auth",
            "trailer:",
            "spoof",
        ] {
            assert!(!lower.contains(gone), "{gone} in {out}");
        }
        assert!(out.contains("te: trailers\r\n"), "{out}");
        assert!(
            out.contains("x-forwarded-for: 10.1.1.1, 192.0.2.7\r\n"),
            "{out}"
        );
        assert!(out.contains("x-forwarded-proto: http\r\n"), "{out}");
        assert!(out.contains("Forwarded: for=10.1.1.1\r\n"), "{out}");
        assert!(out.contains("Via: 1.0 edge\r\n"), "{out}");
        assert!(out.ends_with("via: 1.1 tollgate\r\n\r\n"), "{out}");
        assert!(out.contains("Content-Length: 3\r\n"), "{out}");
    }

    #[test]
    fn every_connection_field_names_headers() {
        let req = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\
            Connection: a, b, c, d, e, f, g, h, i, x-secret\r\nX-Secret: 1\r\nI: 2\r\nJ: 3\r\n\r\n";
        let (_, out) = forward(req, true);
        assert!(!out.contains("X-Secret") && !out.contains("I: 2"), "{out}");
        assert!(out.contains("J: 3\r\n"), "{out}");
    }

    #[test]
    fn a_repeated_length_is_sent_once() {
        let req = b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nab";
        let (head, out) = forward(req, true);
        assert_eq!(head.body_len, 2);
        assert_eq!(
            out.to_ascii_lowercase().matches("content-length").count(),
            1,
            "{out}"
        );
    }

    #[test]
    fn close_is_noted() {
        let (head, _) = forward(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n",
            true,
        );
        assert!(head.close);
    }

    #[test]
    fn unusual_requests_go_to_hyper() {
        let cases: [&[u8]; 15] = [
            b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GARBAGE\x01 / HTTP/1.1\r\n\r\n",
            b"GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET /a\"<>{} HTTP/1.1\r\nHost: h\r\n\r\n",
            b"CONNECT /x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n",
        ];
        for case in cases {
            assert!(
                matches!(step(case), Step::Hyper),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..LIMITS.max_headers {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(step(&many), Step::Hyper));
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', LIMITS.max_bytes));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(step(&big), Step::Hyper));
    }

    #[test]
    fn partial_heads_wait() {
        let req = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        for cut in 0..req.len() {
            assert!(matches!(step(&req[..cut]), Step::Partial), "{cut}");
        }
    }

    #[test]
    fn bodies_are_held_whole_or_refused() {
        let req = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab";
        assert!(matches!(step(req), Step::NeedBody(n) if n == req.len() + 3));
        let big = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n";
        assert!(matches!(step(big), Step::Local { status: 413, .. }));
    }

    #[test]
    fn te_named_in_connection_is_dropped() {
        let req = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: TE\r\nTE: trailers\r\n\r\n";
        let (_, out) = forward(req, true);
        assert!(!out.to_ascii_lowercase().contains("te: trailers"), "{out}");
    }

    #[test]
    fn the_route_decides() {
        let req = b"DELETE /x?q HTTP/1.1\r\nHost: H.example\r\nContent-Length: 7\r\n\r\n1234567";
        let mut seen = None;
        let got = prepare(
            req,
            LIMITS,
            &fwd(),
            &mut Vec::new(),
            |host, path, method, len| {
                seen = Some((host.to_owned(), path.to_owned(), method.to_owned(), len));
                Route::<()>::Local(413, "too large\n")
            },
        );
        assert_eq!(
            seen,
            Some(("H.example".into(), "/x".into(), "DELETE".into(), 7))
        );
        assert!(matches!(got, Step::Local { status: 413, .. }));
        let got = prepare(req, LIMITS, &fwd(), &mut Vec::new(), |_, _, _, _| {
            Route::<()>::Hyper
        });
        assert!(matches!(got, Step::Hyper));
    }
}
