//! The `gateway_h1` target: the HTTP/1.1 fast path's pure parsers against the independent
//! parses and chunked decoder of `reference`. The invariants are in the parent module's doc.

mod chunked;
mod reference;

use crate::answer::Answer;
use crate::fast::head;
use crate::fast::response::{self, Framing, RespStep};
use crate::headers::Forwarding;
use chunked::h1_chunked;

use reference::{
    HOP_BY_HOP, Msg, Parsed, dot_segment, hyper_takes_target, parse_request, parse_response,
    request_length, rfc3986_target, valid_host,
};

/// The `Date` the gateway adds to answers that lack one.
const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
/// Header slots of the independent parses: the fast path's own count.
const SLOTS: usize = head::MAX_HEADERS;
/// Header slots for re-parsing a written head (the gateway adds a handful of fields).
const OUT_SLOTS: usize = 2 * head::MAX_HEADERS;
/// `limits.max_header_bytes` by input byte; index 0 is the default.
const MAX_BYTES: [usize; 8] = [8192, 0, 16, 64, 512, 4096, 65536, usize::MAX];
/// `limits.max_headers` by input byte; index 3 is the default.
const MAX_FIELDS: [usize; 8] = [0, 1, 2, 100, 8, 64, 128, usize::MAX];

/// Runs the HTTP/1.1 fast path's pure parsers on `data`: its first byte picks request heads
/// (`0`), response heads (`1`) or chunked bodies (`2`), by its value modulo 3.
///
/// - request: byte 1 picks the route's answer (its value modulo 6: forward keeping the
///   `Host`, forward to the endpoint's address, local 404, through the layers as an `http`
///   request, through the layers on the fast path's own request keeping the `Host`, the same
///   with the endpoint's address added later; bit 6: rotate it per pipelined head), the
///   scheme (bit 2: https), the address family (bit 3: IPv6) and a 4-byte body limit (bit 7);
///   byte 2 the limits (bits 0-2: `MAX_BYTES`, bit 3: 8-byte held bodies, bits 4-6:
///   `MAX_FIELDS`); the rest is up to 8 pipelined requests.
/// - response: byte 1 bit 0 answers a `HEAD`, bit 1 asks for `Connection: close`; the rest is
///   up to 8 heads (1xx, then the final one, then its body).
/// - chunked: byte 1 modulo 8 is how many cut points follow (one byte each); the rest is the
///   body, fed whole, cut at those points, and byte by byte.
///
/// # Panics
/// When an invariant in the `gateway::fuzzing` module doc fails.
pub fn gateway_h1(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&flags, rest)) = rest.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Some((&lim, rest)) = rest.split_first() else {
                return;
            };
            let limits = head::Limits {
                max_bytes: MAX_BYTES[usize::from(lim & 7)],
                max_headers: MAX_FIELDS[usize::from((lim >> 4) & 7)],
                max_body: (flags & 0x80 != 0).then_some(4),
                max_held_body: if lim & 8 != 0 { 8 } else { u64::MAX },
                // The request id is checked by the wire scenarios; the reference here knows
                // the forwarded head without it.
                request_id: crate::request_id::Policy::OFF,
                fresh_id: [b'0'; 32],
                trace: None,
            };
            let mut at = 0;
            for i in 0..8 {
                let route = if flags & 0x40 != 0 {
                    (usize::from(flags) + i) % 6
                } else {
                    usize::from(flags) % 6
                };
                match h1_request(&rest[at..], route, flags, limits) {
                    Some(used) => at += used,
                    None => return,
                }
            }
        }
        1 => {
            let mut at = 0;
            for _ in 0..8 {
                match h1_response(&rest[at..], flags & 1 != 0, flags & 2 != 0) {
                    Some(used) => at += used,
                    None => return,
                }
            }
        }
        _ => {
            let n = usize::from(flags % 8).min(rest.len());
            let (cuts, body) = rest.split_at(n);
            let mut cuts: Vec<usize> = cuts
                .iter()
                .map(|c| usize::from(*c) % (body.len() + 1))
                .collect();
            cuts.sort_unstable();
            h1_chunked(body, &cuts);
        }
    }
}

/// One request head at the start of `buf`: returns the bytes it and its body take when the
/// next head can follow.
fn h1_request(buf: &[u8], route: usize, flags: u8, limits: head::Limits) -> Option<usize> {
    use head::{Route, Step};
    let v6 = flags & 8 != 0;
    let fwd = Forwarding::new(
        if v6 { "2001:db8::7" } else { "192.0.2.7" }.parse().ok()?,
        if flags & 4 != 0 { "https" } else { "http" },
        None,
    );
    let addr: std::net::SocketAddr = if v6 {
        "[2001:db8::9]:8080"
    } else {
        "10.0.0.9:8080"
    }
    .parse()
    .ok()?;
    let mut seen = None;
    let mut out = b"stale".to_vec();
    let step = head::prepare(buf, limits, &fwd, &mut out, |r, len| {
        let fields: Vec<(String, Vec<u8>)> = r
            .fields
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        seen = Some((
            r.host.to_owned(),
            r.path.to_owned(),
            r.query.map(str::to_owned),
            r.method.to_owned(),
            fields,
            len,
        ));
        match route {
            0 | 1 => Route::Forward {
                target: 7_u8,
                addr,
                preserve_host: route == 0,
            },
            2 => Route::Local(Answer::NoRoute),
            3 => Route::Layered,
            _ => Route::Stack {
                target: 7_u8,
                preserve_host: route == 4,
            },
        }
    });
    let msg = match parse_request(buf, SLOTS) {
        Parsed::Partial => {
            assert!(matches!(step, Step::Partial), "{step:?}");
            assert!(seen.is_none());
            return None;
        }
        Parsed::Invalid => {
            assert!(matches!(step, Step::Hyper), "{step:?}");
            assert!(seen.is_none());
            return None;
        }
        Parsed::Complete(msg) => msg,
    };
    assert!(
        !matches!(step, Step::Partial),
        "complete head taken as partial"
    );
    // A head over the limits is refused here (431, close), whatever else it holds.
    if msg.len > limits.max_bytes || msg.headers.len() > limits.max_headers {
        let Step::Local { head, answer } = step else {
            panic!("head over the limits: {step:?}");
        };
        assert_eq!(answer, Answer::HeadTooLarge);
        assert!(head.close && head.len == msg.len, "{head:?}");
        assert!(seen.is_none(), "the route was asked");
        return None;
    }
    // What the fast path takes: everything else is hyper's, and the route is not asked.
    let hosts: Vec<&[u8]> = msg.fields("host").collect();
    let lengths: Vec<Option<u64>> = msg.fields("content-length").map(request_length).collect();
    let body_len = match lengths.first() {
        None => Some(0),
        Some(&first) => first.filter(|n| lengths.iter().all(|m| *m == Some(*n))),
    };
    let host = match hosts.as_slice() {
        [h] => std::str::from_utf8(h).ok().filter(|h| valid_host(h)),
        _ => None,
    };
    let plain = msg.version == 1
        && msg.len <= limits.max_bytes
        && msg.headers.len() <= limits.max_headers
        && msg.target.starts_with('/')
        && rfc3986_target(&msg.target)
        && !dot_segment(&msg.target)
        && msg.method != "CONNECT"
        && ["transfer-encoding", "expect", "upgrade"]
            .iter()
            .all(|n| msg.fields(n).next().is_none())
        && !msg.connection_has("upgrade");
    let (true, Some(host), Some(body_len)) = (plain, host, body_len) else {
        assert!(matches!(step, Step::Hyper), "not plain: {step:?}");
        assert!(seen.is_none(), "the route was asked");
        return None;
    };
    // Whatever the fast path takes, hyper takes as it is (same target, same route).
    assert!(hyper_takes_target(&msg.target), "{:?}", msg.target);
    let path = msg.target.split('?').next().unwrap_or_default();
    // Body limits and a body still to come are decided before the route.
    let head = if limits.max_body.is_some_and(|max| body_len > max) {
        let Step::Local {
            head,
            answer: Answer::BodyTooLarge,
        } = step
        else {
            panic!("body over max_body: {step:?}");
        };
        assert!(seen.is_none(), "the route was asked");
        assert!(!head.idempotent);
        head
    } else if body_len > limits.max_held_body {
        assert!(
            matches!(step, Step::Hyper),
            "held body over the limit: {step:?}"
        );
        assert!(seen.is_none(), "the route was asked");
        return None;
    } else if ((buf.len() - msg.len) as u64) < body_len {
        let Step::NeedBody(n) = step else {
            panic!("body not all here: {step:?}");
        };
        assert_eq!(Some(n as u64), (msg.len as u64).checked_add(body_len));
        assert!(seen.is_none(), "the route was asked");
        return None;
    } else {
        // The route sees the query and every field line as received (for its conditions).
        let query = msg.target.split_once('?').map(|(_, q)| q.to_owned());
        assert_eq!(
            seen,
            Some((
                host.into(),
                path.into(),
                query,
                msg.method.clone(),
                msg.headers.clone(),
                body_len
            ))
        );
        let want_host = if route == 0 || route == 4 {
            host.as_bytes().to_vec()
        } else {
            addr.to_string().into_bytes()
        };
        let head = match (route, step) {
            (
                0 | 1,
                Step::Forward {
                    head,
                    target,
                    addr: a,
                },
            ) => {
                assert_eq!((target, a), (7, addr));
                h1_forwarded(&out, &msg, &fwd, host, &want_host, body_len);
                head
            }
            // Through the layers on the fast path: the same head as forwarding, but for the
            // `Host` line the endpoint adds after the request line when the client's is not
            // kept.
            (
                4 | 5,
                Step::Stack {
                    head,
                    target,
                    host_at,
                },
            ) => {
                assert_eq!(target, 7);
                let mut sent = out.clone();
                match host_at {
                    None => assert_eq!(route, 4, "no place for the endpoint's host"),
                    Some(at) => {
                        assert_eq!(route, 5, "the client's host was to be kept");
                        assert!(sent[..at].ends_with(b" HTTP/1.1\r\n"), "{at}");
                        let line = format!("host: {addr}\r\n");
                        sent.splice(at..at, line.bytes());
                    }
                }
                h1_forwarded(&sent, &msg, &fwd, host, &want_host, body_len);
                head
            }
            (2, Step::Local { head, answer }) => {
                assert_eq!(answer, Answer::NoRoute);
                head
            }
            (3, Step::Layered { head, request }) => {
                h1_layered(&request, &msg);
                head
            }
            // Only what `http` itself refuses goes to hyper instead (which answers 400).
            (3, Step::Hyper) => {
                assert!(!http_takes(&msg), "{msg:?}");
                return None;
            }
            (_, step) => panic!("route {route} gave {step:?}"),
        };
        assert_eq!(
            head.idempotent,
            ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"].contains(&msg.method.as_str())
        );
        head
    };
    assert!(head.len == msg.len && head.len <= buf.len() && head.len <= limits.max_bytes);
    for r in [&head.method, &head.path, &head.host] {
        assert!(r.start <= r.end && r.end <= head.len, "{head:?}");
    }
    assert_eq!(&buf[head.method.clone()], msg.method.as_bytes());
    assert_eq!(&buf[head.path.clone()], path.as_bytes());
    assert_eq!(&buf[head.host.clone()], host.as_bytes());
    assert_eq!(head.body_len, body_len);
    assert_eq!(head.close, msg.connection_has("close"));
    assert_eq!(head.head_method, msg.method == "HEAD");
    let used = u64::try_from(head.len).ok()?.checked_add(body_len)?;
    usize::try_from(used).ok().filter(|u| *u <= buf.len())
}

/// Whether `http` holds `msg`'s method, target and every field.
fn http_takes(msg: &Msg) -> bool {
    http::Method::from_bytes(msg.method.as_bytes()).is_ok()
        && http::Uri::try_from(msg.target.as_str()).is_ok()
        && msg.headers.iter().all(|(n, v)| {
            http::HeaderName::from_bytes(n.as_bytes()).is_ok()
                && http::HeaderValue::from_bytes(v).is_ok()
        })
}

/// Checks that a layered route's request is the client's `msg` as hyper would hand it over:
/// method, target, version and every field in order (names lower-cased).
fn h1_layered(req: &http::Request<()>, msg: &Msg) {
    assert_eq!(req.method().as_str(), msg.method);
    assert_eq!(req.uri().to_string(), msg.target);
    assert_eq!(req.version(), http::Version::HTTP_11);
    let got: Vec<(&str, &[u8])> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    // A repeated `Content-Length` (all equal, or the head is hyper's) is kept once.
    let mut want: Vec<(String, &[u8])> = Vec::new();
    for (n, v) in &msg.headers {
        let n = n.to_ascii_lowercase();
        if n == "content-length" && want.iter().any(|(m, _)| *m == n) {
            continue;
        }
        want.push((n, v.as_slice()));
    }
    // `HeaderMap` groups repeated names; compare name by name, in order within each.
    assert_eq!(got.len(), want.len(), "{got:?} {want:?}");
    for (name, _) in &want {
        let a: Vec<&[u8]> = req
            .headers()
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let b: Vec<&[u8]> = want
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(a, b, "{name}");
    }
}

/// Checks the upstream head `out` written for the client's request `msg`.
fn h1_forwarded(out: &[u8], msg: &Msg, fwd: &Forwarding, host: &str, want_host: &[u8], len: u64) {
    let Parsed::Complete(up) = parse_request(out, OUT_SLOTS) else {
        panic!(
            "unparsable upstream head {:?}",
            String::from_utf8_lossy(out)
        );
    };
    let text = String::from_utf8_lossy(out);
    assert_eq!(up.len, out.len(), "{text}");
    assert_eq!(
        (up.version, &up.method, &up.target),
        (1, &msg.method, &msg.target)
    );
    assert!(out.ends_with(b"\r\nvia: 1.1 tollgate\r\n\r\n"), "{text}");
    assert_eq!(up.fields("host").collect::<Vec<_>>(), [want_host], "{text}");
    for (name, value) in &up.headers {
        let lower = name.to_ascii_lowercase();
        let own_te = lower == "te" && value == b"trailers";
        assert!(
            own_te || (lower != "expect" && !HOP_BY_HOP.contains(&lower.as_str())),
            "{name} relayed: {text}"
        );
    }
    let te = !msg.connection_has("te")
        && msg.list("te").iter().any(|t| {
            let t = t.split(|b| *b == b';').next().unwrap_or_default();
            t.trim_ascii() == b"trailers"
        });
    assert_eq!(up.fields("te").count(), usize::from(te), "{text}");
    let lengths: Vec<&[u8]> = up.fields("content-length").collect();
    let sent = msg.fields("content-length").next().is_some();
    assert_eq!(lengths.len(), usize::from(sent), "{text}");
    assert!(
        lengths.iter().all(|v| request_length(v) == Some(len)),
        "{text}"
    );
    // The first client value, when visible ASCII and not named in `Connection`.
    let prev = msg
        .fields("x-forwarded-for")
        .next()
        .filter(|v| v.iter().all(|b| *b == b'\t' || (0x20..0x7f).contains(b)))
        .filter(|_| !msg.connection_has("x-forwarded-for"));
    let xff = match prev {
        Some(p) => [p, b", ", fwd.ip().as_bytes()].concat(),
        None => fwd.ip().as_bytes().to_vec(),
    };
    assert_eq!(up.fields("x-forwarded-for").collect::<Vec<_>>(), [xff]);
    assert_eq!(
        up.fields("x-forwarded-proto").collect::<Vec<_>>(),
        [fwd.proto().as_bytes()]
    );
    assert_eq!(
        up.fields("x-forwarded-host").collect::<Vec<_>>(),
        [host.as_bytes()]
    );
    // The client's other fields, in order, between the gateway's own: the host first, `te`,
    // the `x-forwarded-*` fields, and the last `forwarded` and `via`.
    let own = [
        "host",
        "te",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    ];
    let mut rest: Vec<(String, Vec<u8>)> = up
        .headers
        .iter()
        .filter(|(n, _)| !own.contains(&n.to_ascii_lowercase().as_str()))
        .cloned()
        .collect();
    assert_eq!(
        rest.pop(),
        Some(("via".to_owned(), b"1.1 tollgate".to_vec()))
    );
    let last_fwd = rest.iter().rposition(|(n, _)| n == "forwarded");
    let Some((_, forwarded)) = last_fwd.map(|i| rest.remove(i)) else {
        panic!("no forwarded: {text}");
    };
    assert_eq!(
        forwarded,
        fwd.forwarded_for(Some(host.as_bytes())).as_bytes()
    );
    // A repeated `Content-Length` (all equal) goes once.
    let mut length_seen = false;
    let mut relayed = msg.relayed(
        &["host", "expect", own[2], own[3], own[4]],
        &["content-length"],
    );
    relayed.retain(|(n, _)| {
        !n.eq_ignore_ascii_case("content-length") || !std::mem::replace(&mut length_seen, true)
    });
    assert_eq!(rest, relayed, "{text}");
}

/// One response head at the start of `buf`: returns its length when it is a 1xx (another
/// head follows).
fn h1_response(buf: &[u8], head_method: bool, close: bool) -> Option<usize> {
    let mut out = b"stale".to_vec();
    let step = response::prepare(buf, head_method, close, DATE, &mut out);
    let msg = match parse_response(buf, SLOTS) {
        Parsed::Partial => {
            assert_eq!(step, RespStep::Partial);
            return None;
        }
        Parsed::Invalid => {
            assert_eq!(step, RespStep::Bad);
            return None;
        }
        Parsed::Complete(msg) => msg,
    };
    match msg.code {
        101 => {
            assert_eq!(step, RespStep::Bad);
            return None;
        }
        100..=199 => {
            assert_eq!(step, RespStep::Informational(msg.len));
            assert!(msg.len <= buf.len());
            return Some(msg.len);
        }
        _ => {}
    }
    let bodiless = head_method || msg.code == 204 || msg.code == 304;
    let encoded = msg.fields("transfer-encoding").next().is_some();
    // Refused as hyper's client refuses them (a status below 100; a coding in HTTP/1.0, RFC
    // 9112 §6.1, which hyper refuses only when a body may follow), and a status past 599 (RFC
    // 9110 §15: three digits, 100 to 599).
    if msg.code < 100 || msg.code >= 600 || (msg.version == 0 && encoded) {
        assert_eq!(step, RespStep::Bad, "malformed head relayed");
        return None;
    }
    let lengths: Vec<Option<u64>> = msg
        .fields("content-length")
        .map(|v| {
            let digits = !v.is_empty() && v.iter().all(u8::is_ascii_digit);
            std::str::from_utf8(v).ok()?.parse().ok().filter(|_| digits)
        })
        .collect();
    let length = match lengths.first() {
        None => None,
        Some(&Some(n)) if lengths.iter().all(|m| *m == Some(n)) => Some(n),
        Some(_) => {
            assert_eq!(step, RespStep::Bad, "bad content-length");
            return None;
        }
    };
    let RespStep::Head(h) = step else {
        panic!("final head gave {step:?}");
    };
    assert_eq!((h.len, h.status), (msg.len, msg.code));
    // RFC 9112 §6.3: chunked only as the last coding of the whole list.
    let last_chunked = msg.list("transfer-encoding").last().map(Vec::as_slice) == Some(b"chunked");
    let framing = if bodiless {
        Framing::Empty
    } else if encoded {
        if last_chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        length.map_or(Framing::Close, Framing::Length)
    };
    assert_eq!(h.framing, framing);
    // `close` wins over `keep-alive` (RFC 9112 §9.3).
    let persistent =
        !msg.connection_has("close") && (msg.version == 1 || msg.connection_has("keep-alive"));
    assert_eq!(h.reusable, persistent && framing != Framing::Close);
    let Parsed::Complete(down) = parse_response(&out, OUT_SLOTS) else {
        panic!("unparsable client head {:?}", String::from_utf8_lossy(&out));
    };
    let text = String::from_utf8_lossy(&out);
    assert_eq!(down.len, out.len(), "{text}");
    assert_eq!(
        (down.version, down.code, &down.reason),
        (1, msg.code, &msg.reason)
    );
    for (name, value) in &down.headers {
        let lower = name.to_ascii_lowercase();
        let own = (lower == "transfer-encoding" && value == b"chunked")
            || (lower == "connection" && value == b"close");
        assert!(
            own || !HOP_BY_HOP.contains(&lower.as_str()),
            "{name}: {text}"
        );
    }
    let chunked = framing == Framing::Chunked || (head_method && last_chunked);
    assert_eq!(
        down.fields("transfer-encoding").count(),
        usize::from(chunked)
    );
    let closing = close || framing == Framing::Close;
    assert_eq!(down.fields("connection").count(), usize::from(closing));
    let lengths: Vec<&[u8]> = down.fields("content-length").collect();
    assert!(lengths.is_empty() || !chunked, "{text}");
    // A 204 carries no length on (RFC 9110 §8.6).
    let no_length = msg.code == 204;
    assert_eq!(
        lengths.is_empty(),
        encoded || length.is_none() || no_length,
        "{text}"
    );
    let via: &[u8] = if msg.version == 0 {
        b"1.0 tollgate"
    } else {
        b"1.1 tollgate"
    };
    let mut rest: Vec<(String, Vec<u8>)> = down
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("transfer-encoding") && !n.eq_ignore_ascii_case("connection")
        })
        .cloned()
        .collect();
    // The upstream's `Date`, or the gateway's after `via`.
    if msg.fields("date").next().is_none() {
        assert_eq!(
            rest.pop(),
            Some(("date".to_owned(), DATE.to_vec())),
            "{text}"
        );
    }
    assert_eq!(rest.pop(), Some(("via".to_owned(), via.to_vec())), "{text}");
    let drop: &[&str] = if encoded || no_length {
        &["content-length"]
    } else {
        &[]
    };
    assert_eq!(
        rest,
        msg.relayed(drop, &["content-length", "date"]),
        "{text}"
    );
    if framing == Framing::Chunked {
        let body = &buf[h.len..];
        let each: Vec<usize> = (1..body.len()).collect();
        h1_chunked(body, &each);
    }
    None
}
