//! Request heads on the fast path: parse one with httparse, decide whether the fast path
//! takes it, and write the head the upstream gets.
//!
//! Pure (no I/O, no allocation beyond `out` growing, or the [`http::Request`] a layered route
//! gets), so it is unit-tested here and fuzzed (`fuzz/fuzz_targets/gateway_h1.rs`).

use super::super::headers::{Forwarding, names_trailers};
use crate::answer::Answer;
use crate::forwarded::{self, Source};
use crate::request_id::{Policy, keepable};
use crate::trace::{Fresh, TraceCtx};
use names::{Name, is_traceparent, name_of};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

/// Header slots parsed per head; a head with more goes to hyper (which applies
/// `limits.max_headers` and answers 431).
pub(crate) const MAX_HEADERS: usize = 128;

/// What a parsed request head is, in offsets into the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
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
    /// The client's request id, when it is kept (see [`Limits::request_id`]); otherwise the
    /// request carries [`Limits::fresh_id`].
    pub request_id: Option<Range<usize>>,
    /// The client a trusted peer's forwarding fields name (`None`: the peer).
    pub client: Option<IpAddr>,
    /// The trace context, when tracing is on (see [`Limits::trace`]).
    pub trace: Option<TraceCtx>,
}

/// Where a routed request goes.
#[derive(Debug)]
pub(crate) enum Route<T> {
    /// Forward to `addr`; `preserve_host` keeps the client's `Host`.
    Forward {
        /// The caller's handle on the route (cluster, endpoint index...).
        target: T,
        /// The endpoint.
        addr: SocketAddr,
        /// Keep the client's `Host` (otherwise the endpoint's address).
        preserve_host: bool,
    },
    /// A route whose cluster's layers take the fast path's own request (see
    /// [`stacked`](super::stacked)): the endpoint is picked later, by the cluster's balancer,
    /// so the head is written without its `Host` line unless `preserve_host` keeps the
    /// client's.
    Stack {
        /// The caller's handle on the route.
        target: T,
        /// Keep the client's `Host` (otherwise the endpoint's address, added by the endpoint).
        preserve_host: bool,
    },
    /// Not a plain route: served as an [`http::Request`] by the same service as hyper's
    /// requests (see [`layered`](super::layered)).
    Layered,
    /// Answer at once.
    Local(Answer),
}

/// The outcome of [`prepare`].
#[derive(Debug)]
pub(crate) enum Step<T> {
    /// The head is not complete yet.
    Partial,
    /// The head is complete but its body is not: the request is this many bytes long.
    NeedBody(usize),
    /// Not for the fast path (HTTP/1.0, chunked body, `Expect`, upgrade, malformed...): hyper
    /// serves it, with its own error answers.
    Hyper,
    /// Answer locally.
    Local {
        /// The request head.
        head: Head,
        /// The answer.
        answer: Answer,
    },
    /// Serve through the layers: the head as an [`http::Request`] (its body, `body_len`
    /// bytes, follows the head in the buffer).
    Layered {
        /// The request head.
        head: Head,
        /// The request as hyper would hand it over, without its body.
        request: http::Request<()>,
    },
    /// Through the cluster's layers: `out` now holds the upstream's request head, but for
    /// the `Host` line, which goes at `host_at` when set (after the request line).
    Stack {
        /// The request head.
        head: Head,
        /// From the route.
        target: T,
        /// Where the endpoint's `Host` line goes, when the client's is not kept.
        host_at: Option<usize>,
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

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether `name` is listed in any `Connection` field of `headers` (such a header describes
/// the connection and is not forwarded, RFC 9110 §7.6.1).
pub(crate) fn named_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// Whether a request target may hold `b` as it is (RFC 3986 characters, `%` escapes; no
/// fragment): a registered name's, and the delimiters of paths, queries and IP literals.
fn uri_byte(b: u8) -> bool {
    crate::route::reg_name_byte(b) || matches!(b, b'/' | b'?' | b':' | b'@' | b'[' | b']')
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

/// The limits a request is held to: a head past `max_bytes` or `max_headers` is answered 431
/// and the connection closed; a body over `max_body` is refused (413); one over `max_held_body` goes
/// to hyper, which streams it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest head, bytes (`limits.max_header_bytes`).
    pub max_bytes: usize,
    /// Most header fields (`limits.max_headers`).
    pub max_headers: usize,
    /// Largest body, bytes (`limits.max_body_bytes`; `None`: no limit).
    pub max_body: Option<u64>,
    /// Largest body the fast path reads whole before forwarding.
    pub max_held_body: u64,
    /// The request-id field (`server.request_id_header`, `server.trust_request_id`).
    pub request_id: Policy,
    /// The id this request gets unless it keeps the client's.
    pub fresh_id: [u8; 32],
    /// Tracing on: the ids a fresh trace and the gateway's span take. The client's
    /// `traceparent` is replaced by one naming the gateway's span (see `trace.rs`).
    pub trace: Option<Fresh>,
}

/// The request as the route lookup sees it on the fast path: the parsed fields as they are.
pub(crate) type RouteRequest<'a, 'b> = crate::route::Request<'a, [httparse::Header<'b>]>;

/// Parses the request head at the start of `buf`; when the fast path takes it, asks `route`
/// (with host, path, query, method, the fields, and the declared body length) where it goes
/// and writes the upstream head into `out` (cleared first).
pub(crate) fn prepare<T>(
    buf: &[u8],
    limits: Limits,
    fwd: &Forwarding,
    out: &mut Vec<u8>,
    route: impl FnOnce(&RouteRequest<'_, '_>, u64) -> Route<T>,
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
        // Answered here: hyper given a whole head in one read would parse past its limit.
        return Step::Local {
            head: Head {
                len,
                body_len: 0,
                close: true,
                head_method: req.method == Some("HEAD"),
                idempotent: false,
                method: req.method.map_or(0..0, |m| offset(buf, m.as_bytes())),
                path: 0..0,
                host: 0..0,
                request_id: None,
                client: None,
                trace: None,
            },
            answer: Answer::HeadTooLarge,
        };
    }
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Step::Hyper;
    };
    // Origin form only; absolute form, `*` and authority form go to hyper, and so does a
    // target with a byte a URI may not hold (hyper answers 400) or a fragment.
    if !target.starts_with('/') || !target.bytes().all(uri_byte) || method == "CONNECT" {
        return Step::Hyper;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    // A dot segment: hyper's path answers it with 400 (see `route::has_dot_segment`).
    if crate::route::has_dot_segment(path.as_bytes()) {
        return Step::Hyper;
    }
    let mut host: Option<&[u8]> = None;
    let mut body_len: Option<u64> = None;
    let mut close = false;
    let mut names_headers = false;
    let rid = limits.request_id;
    let is_rid = |name: &str| rid.is_on() && name.as_bytes().eq_ignore_ascii_case(rid.name());
    let mut kept_id: Option<Range<usize>> = None;
    for h in req.headers.iter() {
        if is_rid(h.name) && rid.trust && kept_id.is_none() && keepable(h.value) {
            kept_id = Some(offset(buf, h.value));
        }
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
    // A host that is not valid: hyper's path answers it with 400.
    if !crate::route::valid_host(host) {
        return Step::Hyper;
    }
    let Ok(host_str) = std::str::from_utf8(host) else {
        return Step::Hyper;
    };
    let body_len = body_len.unwrap_or(0);
    // A trusted peer's chain, from the fields as they would be forwarded.
    let walk = fwd.trusted().map(|trusted| {
        let forwarded = chain_lines(req.headers, "forwarded", names_headers).next();
        let (source, name) = if forwarded.is_some() {
            (Source::Forwarded, "forwarded")
        } else {
            (Source::XForwardedFor, "x-forwarded-for")
        };
        let values = || chain_lines(req.headers, name, names_headers);
        (forwarded::walk(trusted, fwd.peer(), source, values), name)
    });
    let client = walk.map(|(w, _)| w.client);
    let tracing = limits.trace;
    let trace = tracing.map(|fresh| {
        let values = req.headers.iter().filter(|h| is_traceparent(h.name));
        TraceCtx::new(values.map(|h| h.value), fresh)
    });
    let local = |answer| Step::Local {
        head: Head {
            len,
            body_len,
            close,
            head_method: method == "HEAD",
            idempotent: false,
            method: offset(buf, method.as_bytes()),
            path: offset(buf, path.as_bytes()),
            host: offset(buf, host),
            request_id: kept_id.clone(),
            client,
            trace,
        },
        answer,
    };
    if limits.max_body.is_some_and(|max| body_len > max) {
        return local(Answer::BodyTooLarge);
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
        request_id: kept_id.clone(),
        client,
        trace,
    };
    let routed = route(
        &RouteRequest {
            host: host_str,
            path,
            query,
            method,
            fields: &*req.headers,
        },
        body_len,
    );
    // Where the request goes: an endpoint now, or the cluster's stack.
    let (target_handle, addr, preserve_host) = match routed {
        Route::Forward {
            target: t,
            addr,
            preserve_host,
        } => (t, Some(addr), preserve_host),
        Route::Stack {
            target: t,
            preserve_host,
        } => (t, None, preserve_host),
        Route::Layered => {
            return match request::build(buf, len, method, target, req.headers) {
                Some(request) => Step::Layered { head, request },
                None => Step::Hyper,
            };
        }
        Route::Local(answer) => return Step::Local { head, answer },
    };
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host_at = None;
    if preserve_host {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    } else if let Some(addr) = addr {
        let _ = write!(out, "host: {addr}\r\n");
    } else {
        host_at = Some(out.len());
    }
    let mut xff: Option<&[u8]> = None;
    let mut te_trailers = false;
    let mut length_written = false;
    for h in req.headers.iter() {
        let write = match name_of(h.name) {
            Name::Host | Name::Connection | Name::HopByHop | Name::Replaced | Name::Refuse => false,
            Name::Te => {
                let named = names_headers && named_in_connection(req.headers, h.name);
                te_trailers |= !named && names_trailers(h.value);
                false
            }
            Name::XForwardedFor if walk.is_some() => false,
            Name::Forwarded => {
                walk.is_none() && !(names_headers && named_in_connection(req.headers, h.name))
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
            // The request id is written once, below.
            Name::Other if is_rid(h.name) => false,
            // So is the trace context, when tracing is on.
            Name::Other if tracing.is_some() && is_traceparent(h.name) => false,
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
    if let Some((w, name)) = &walk {
        forwarded::write_believed(out, w, chain_lines(req.headers, name, names_headers), false);
    }
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
    if let Some((w, name)) = &walk {
        forwarded::write_believed(out, w, chain_lines(req.headers, name, names_headers), true);
    }
    out.extend_from_slice(fwd.forwarded_for(Some(host)).as_bytes());
    out.extend_from_slice(b"\r\nvia: 1.1 tollgate\r\n");
    if rid.is_on() {
        out.extend_from_slice(rid.name());
        out.extend_from_slice(b": ");
        match &kept_id {
            Some(r) => out.extend_from_slice(&buf[r.clone()]),
            None => out.extend_from_slice(&limits.fresh_id),
        }
        out.extend_from_slice(b"\r\n");
    }
    if let Some(t) = &trace {
        out.extend_from_slice(b"traceparent: ");
        out.extend_from_slice(&t.value());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    match addr {
        Some(addr) => Step::Forward {
            head,
            target: target_handle,
            addr,
        },
        None => Step::Stack {
            head,
            target: target_handle,
            host_at,
        },
    }
}

/// The values of the field `name` (lower case) that would be forwarded: every field line, in
/// order, but not when `Connection` names the field (`names_headers`: some field may be).
fn chain_lines<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
    names_headers: bool,
) -> impl DoubleEndedIterator<Item = &'b [u8]> + 'h {
    let dropped = names_headers && named_in_connection(headers, name);
    headers
        .iter()
        .filter(move |h| !dropped && h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

mod names;
pub(super) mod request;

#[cfg(test)]
mod tests;
