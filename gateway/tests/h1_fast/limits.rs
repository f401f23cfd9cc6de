//! Limits and client framing that hold on both paths, whichever path reads the request first:
//! heads far over `max_header_bytes` (complete or not), `Host` missing or repeated on HTTP/1.1,
//! and chunked request bodies whose framing is wrong. Each is the client's fault: 431 or 400,
//! never a 502 (which would blame the upstream), and the connection closes when its framing can
//! no longer be trusted.

use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::get;
use crate::wire::*;

/// 51. A head well over `max_header_bytes` (64 KiB here, the default) gets 431 and the connection closes, whether it
///     arrives whole in one write or is still coming; so does one whose fields are each small
///     but add up past the limit. The upstream never sees them.
pub(crate) async fn heads_far_over_the_limit_are_431(fast: bool) {
    let path = label(fast);
    let (up, seen) = logging_upstream().await;
    // The shipped default: a head of up to 64 KiB fits in one read of the fast path's buffer,
    // and one far over it could reach hyper whole.
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.limits.max_header_bytes = 65_536;
    let gw = start(config);
    for size in [100_000, 70_000, 65_600] {
        let whole = format!(
            "GET /big HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "b".repeat(size)
        );
        let mut c = Wire::connect(addr(&gw)).await;
        c.send(&[get("/first"), whole.into_bytes()].concat()).await;
        c.reply("GET").await.expect(200, "GET /first", path);
        let r = c.reply("GET").await;
        assert_eq!(r.status(), 431, "{path}, {size} bytes: {:?}", r.head.raw);
        c.expect_closed(path).await;
    }
    // Still coming: no blank line yet.
    let mut c = Wire::connect(addr(&gw)).await;
    let partial = format!(
        "GET /big HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n",
        "p".repeat(100_000)
    );
    c.send(partial.as_bytes()).await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 431, "{path}, partial: {:?}", r.head.raw);
    c.expect_closed(path).await;
    // Many small fields.
    let mut many = "GET /many HTTP/1.1\r\nHost: t\r\n".to_owned();
    for i in 0..99 {
        many.push_str(&format!("X-Field-{i}: {}\r\n", "m".repeat(700)));
    }
    many.push_str("\r\n");
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(many.as_bytes()).await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 431, "{path}, many fields: {:?}", r.head.raw);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|l| l == "GET /first HTTP/1.1"),
        "{path}: only /first reaches the upstream: {seen:?}"
    );
    stop(gw).await;
}

/// 52. An HTTP/1.1 request without `Host`, or with two, is answered 400 (RFC 9112 §3.2) and
///     never forwarded; HTTP/1.0 may leave it out.
pub(crate) async fn host_missing_or_repeated_is_400(fast: bool) {
    let path = label(fast);
    let (up, seen) = logging_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    for bad in [
        "GET /none HTTP/1.1\r\n\r\n",
        "GET /two HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /same HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n",
    ] {
        let mut c = Wire::connect(addr(&gw)).await;
        let r = c.send_and_reply(bad.as_bytes(), "GET").await;
        assert_eq!(r.status(), 400, "{path}: {bad:?} gave {:?}", r.head.raw);
    }
    let mut c = Wire::connect(addr(&gw)).await;
    let r = c.send_and_reply(b"GET /ten HTTP/1.0\r\n\r\n", "GET").await;
    assert_eq!(r.status(), 200, "{path}: HTTP/1.0 without Host");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "{path}: only the HTTP/1.0 request is forwarded: {seen:?}"
    );
    assert!(seen[0].starts_with("GET /ten "), "{path}: {seen:?}");
    stop(gw).await;
}

/// 59. A host that is not valid (a space, `/`, a quote, a port over 65535) and a target of the
///     wrong form (`*` but for `OPTIONS`, an authority alone, a scheme other than http,
///     userinfo, a `.` or `..` segment, plain or `%2e`) are 400 and reach no upstream; valid
///     ones (a port, an IP literal, an absolute target with an empty path, which leaves as
///     `/?q=1`, names with dots) are forwarded.
pub(crate) async fn bad_hosts_and_targets_are_400(fast: bool) {
    let path = label(fast);
    let (up, seen) = logging_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    for bad in [
        "GET /sp HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /slash HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET /port HTTP/1.1\r\nHost: t:99999\r\n\r\n",
        "GET /quote HTTP/1.1\r\nHost: a\";for=6.6.6.6\r\n\r\n",
        "GET /ten HTTP/1.0\r\nHost: a b\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET ftp://t/ftp HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET http://u:p@t/userinfo HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /public/../admin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /public/%2e%2E/admin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /a/./b HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /a/.. HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let mut c = Wire::connect(addr(&gw)).await;
        let r = c.send_and_reply(bad.as_bytes(), "GET").await;
        assert_eq!(r.status(), 400, "{path}: {bad:?} gave {:?}", r.head.raw);
    }
    for good in [
        "GET /port HTTP/1.1\r\nHost: t:8080\r\n\r\n",
        "GET /v6 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        "GET /v4 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET http://t?q=1 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /.well-known/x...y/... HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let mut c = Wire::connect(addr(&gw)).await;
        let r = c.send_and_reply(good.as_bytes(), "GET").await;
        assert_eq!(r.status(), 200, "{path}: {good:?} gave {:?}", r.head.raw);
    }
    let seen = seen.lock().unwrap().clone();
    let lines: Vec<&str> = seen
        .iter()
        .map(|l| l.split(" HTTP/").next().unwrap_or(""))
        .collect();
    assert_eq!(
        lines,
        [
            "GET /port",
            "GET /v6",
            "GET /v4",
            "GET /?q=1",
            "GET /.well-known/x...y/..."
        ],
        "{path}: only the valid requests are forwarded, in origin form: {seen:?}"
    );
    stop(gw).await;
}

/// 53. A chunked request body with a bad chunk-size line (`0x5`, `5;`, a size past u64, a
///     missing CRLF after the data) is the client's framing error: 400, not 502, and the
///     connection closes.
pub(crate) async fn bad_chunked_request_bodies_are_400(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    for body in [
        "0x5\r\nhello\r\n0\r\n\r\n",
        "zz\r\nhello\r\n0\r\n\r\n",
        "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
    ] {
        let req =
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let mut c = Wire::connect(addr(&gw)).await;
        let r = c.send_and_reply(req.as_bytes(), "POST").await;
        assert_eq!(r.status(), 400, "{path}: {body:?} gave {:?}", r.head.raw);
        c.expect_closed(path).await;
    }
    stop(gw).await;
}

/// 54. A connection that made `max_requests_per_connection` requests (3 here) gets its last
///     answer with `Connection: close` and is closed; a request pipelined behind it is not
///     answered (nor forwarded), and a new connection is served.
pub(crate) async fn a_connection_closes_after_its_maximum_of_requests(fast: bool) {
    let path = label(fast);
    let (up, seen) = logging_upstream().await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.limits.max_requests_per_connection = 3;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&[get("/1"), get("/2"), get("/3"), get("/4")].concat())
        .await;
    for n in 1..=3 {
        let r = c.reply("GET").await;
        assert_eq!(r.status(), 200, "{path}: request {n}");
        assert_eq!(
            r.head.lists("connection", "close"),
            n == 3,
            "{path}: request {n}: {:?}",
            r.head.raw
        );
    }
    c.expect_closed(path).await;
    let mut c = Wire::connect(addr(&gw)).await;
    c.send_and_reply(&get("/5"), "GET")
        .await
        .expect(200, "GET /5", path);
    let seen = seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|l| l.starts_with("GET /4 ")),
        "{path}: /4 was forwarded: {seen:?}"
    );
    stop(gw).await;
}
