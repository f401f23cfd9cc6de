//! Heads: hop-by-hop and forwarding fields, heads near and over the limits, `103 Early
//! Hints`, routing misses, methods, targets and odd spacing.

use crate::STEP;
use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::get;
use crate::wire::*;
use tokio::time::timeout;

/// 10. A `103 Early Hints` before the 200: the client gets the 200 and its body (the 103
///     may be passed on or dropped), and the connection goes on.
pub(crate) async fn early_hints_before_the_final_answer(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/early-hints")).await;
    let first = timeout(STEP, c.rd.response("GET"))
        .await
        .expect("a response in time")
        .expect("a complete response");
    let last = if first.status() == 103 {
        eprintln!("{path}: 103 passed on: {:?}", first.head.raw);
        c.reply("GET").await
    } else {
        first
    };
    last.expect(200, "hints", path);
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    stop(gw).await;
}

/// 11. Connection-scoped headers are dropped both ways; forwarding headers are added.
pub(crate) async fn hop_by_hop_and_forwarding_headers(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(
        b"GET /hop HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 203.0.113.9\r\n\
          Connection: x-secret\r\nX-Secret: s\r\nX-Kept: k\r\n\r\n",
    )
    .await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    // Response side.
    let h = &r.head;
    assert!(h.get("x-private").is_none(), "{path}: {:?}", h.raw);
    assert!(h.get("keep-alive").is_none(), "{path}: {:?}", h.raw);
    assert!(!h.lists("connection", "x-private"), "{path}: {:?}", h.raw);
    assert_eq!(h.all("x-end"), ["kept"], "{path}: {:?}", h.raw);
    assert_eq!(h.all("via"), ["1.1 tollgate"], "{path}: {:?}", h.raw);
    // Request side, as the upstream read it off the wire.
    let seen = Head::parse(&r.body).expect("the upstream's view of the head");
    assert_eq!(seen.request_line(), "GET /hop", "{path}: {:?}", seen.raw);
    assert_eq!(
        seen.all("x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.all("x-forwarded-proto"),
        ["http"],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.all("forwarded"),
        ["for=127.0.0.1;proto=http;host=\"app.example\""],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(seen.all("via"), ["1.1 tollgate"], "{path}: {:?}", seen.raw);
    assert_eq!(seen.all("x-kept"), ["k"], "{path}: {:?}", seen.raw);
    assert_eq!(seen.all("host").len(), 1, "{path}: {:?}", seen.raw);
    assert!(seen.get("x-secret").is_none(), "{path}: {:?}", seen.raw);
    assert!(
        !seen.lists("connection", "x-secret"),
        "{path}: {:?}",
        seen.raw
    );

    // The other hop-by-hop fields, and forwarding fields the client set itself.
    c.send(
        b"GET /hop HTTP/1.1\r\nHost: app.example\r\nVia: 1.0 edge\r\nTE: gzip, trailers\r\n\
          Proxy-Authorization: Basic eHl6\r\nProxy-Connection: keep-alive\r\n\
          Keep-Alive: timeout=9\r\nX-Forwarded-Host: spoof.example\r\n\
          X-Forwarded-Proto: https\r\nForwarded: for=198.51.100.7\r\n\r\n",
    )
    .await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    let seen = Head::parse(&r.body).expect("the upstream's view of the head");
    let want: [(&str, &[&str]); 10] = [
        ("via", &["1.0 edge", "1.1 tollgate"]),
        ("te", &["trailers"]),
        ("proxy-authorization", &[]),
        ("proxy-connection", &[]),
        ("keep-alive", &[]),
        ("x-forwarded-host", &["app.example"]),
        ("x-forwarded-proto", &["http"]),
        ("x-forwarded-for", &["127.0.0.1"]),
        (
            "forwarded",
            &[
                "for=198.51.100.7",
                "for=127.0.0.1;proto=http;host=\"app.example\"",
            ],
        ),
        // `preserve_host` is on by default.
        ("host", &["app.example"]),
    ];
    for (name, values) in want {
        assert_eq!(seen.all(name), values, "{path}: {name} in {:?}", seen.raw);
    }
    stop(gw).await;

    // With `preserve_host = false` the upstream gets its own address as `Host`.
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.clusters[0].preserve_host = false;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"GET /hop HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await;
    let r = c.reply("GET").await;
    let seen = Head::parse(&r.body).expect("the upstream's view of the head");
    assert_eq!(
        seen.all("host"),
        [up.addr.to_string()],
        "{path}: {:?}",
        seen.raw
    );
    assert_eq!(
        seen.all("x-forwarded-host"),
        ["app.example"],
        "{path}: {:?}",
        seen.raw
    );
    stop(gw).await;
}

/// 60. The host a request is routed by is the host the upstream is told: an absolute-form
///     target's authority replaces a `Host` field that names another (RFC 9112 §3.2.2), so a
///     client cannot reach one virtual host's backend while presenting another to it.
pub(crate) async fn an_absolute_target_names_the_host(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"GET http://a.example/hop HTTP/1.1\r\nHost: b.example\r\n\r\n")
        .await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    let seen = Head::parse(&r.body).expect("the upstream's view of the head");
    assert_eq!(seen.request_line(), "GET /hop", "{path}: {:?}", seen.raw);
    assert_eq!(
        seen.all("forwarded"),
        ["for=127.0.0.1;proto=http;host=\"a.example\""],
        "{path}: {:?}",
        seen.raw
    );
    assert!(
        !String::from_utf8_lossy(&r.body).contains("b.example"),
        "{path}: the Host the target overrides reached the upstream: {:?}",
        seen.raw
    );
    stop(gw).await;
}

/// 12. An unrouted request between two routed ones in one write: 200, 404, 200 in order.
pub(crate) async fn an_unrouted_request_inside_a_pipeline(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(
        &format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
             [[routes]]\nhost = \"only.example\"\ncluster = \"up\"\n",
            up.addr
        ),
        fast,
    ));
    let on = |host: &str, target: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
    };
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&[on("other.example", "/miss"), on("only.example", "/hit")].concat())
        .await;
    c.reply("GET").await.expect(404, "no route\n", path);
    c.reply("GET").await.expect(200, "GET /hit", path);

    let mut c = Wire::connect(addr(&gw)).await;
    c.send(
        &[
            on("only.example", "/a"),
            on("other.example", "/b"),
            on("only.example", "/c"),
        ]
        .concat(),
    )
    .await;
    c.reply("GET").await.expect(200, "GET /a", path);
    c.reply("GET").await.expect(404, "no route\n", path);
    c.reply("GET").await.expect(200, "GET /c", path);

    // An unrouted POST's body is skipped (or the connection closed after the 404), never read
    // as the next request; host matching ignores case and port.
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(
        &[
            b"POST /miss HTTP/1.1\r\nHost: other.example\r\nContent-Length: 19\r\n\r\n\
              GET /x HTTP/1.1\r\n\r\n"
                .to_vec(),
            on("Only.Example:8080", "/d"),
        ]
        .concat(),
    )
    .await;
    let r = c.reply("POST").await;
    r.expect(404, "no route\n", path);
    if r.head.lists("connection", "close") {
        // Closing instead of skipping the body is fine too.
        eprintln!("{path}: closed after a 404 with a body");
        c.expect_closed(path).await;
        let mut c = Wire::connect(addr(&gw)).await;
        c.send(&on("Only.Example:8080", "/d")).await;
        c.reply("GET").await.expect(200, "GET /d", path);
    } else {
        c.reply("GET").await.expect(200, "GET /d", path);
    }
    stop(gw).await;
}

/// 19. A 7 000-byte request header (under `max_header_bytes` = 8192) reaches the upstream, and
///     a 30 000-byte response header reaches the client.
pub(crate) async fn large_heads_both_ways(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    let big = "a".repeat(7_000);
    c.send(format!("GET /big-head HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let r = c.reply("GET").await;
    r.expect(200, "x-big 7000", path);
    assert_eq!(r.head.get("x-big").map(str::len), Some(30_000), "{path}");
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    stop(gw).await;
}

/// 20. `Connection` sent as two fields (`keep-alive`, then one naming a header) is honoured
///     both ways: the named header is dropped (RFC 9110 §7.6.1 applies to every field line).
pub(crate) async fn a_second_connection_header_is_honoured(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(
        b"GET /two-connection-headers HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\
          Connection: x-secret\r\nX-Secret: s\r\n\r\n",
    )
    .await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    assert!(
        r.head.get("x-private2").is_none(),
        "{path}: response kept it: {:?}",
        r.head.raw
    );
    let seen = Head::parse(&r.body).expect("the upstream's view of the head");
    assert!(
        seen.get("x-secret").is_none(),
        "{path}: upstream saw it: {:?}",
        seen.raw
    );
    stop(gw).await;
}

/// 21. A response whose `Connection` names nine headers (valid HTTP) is relayed without them.
pub(crate) async fn many_connection_tokens_in_a_response(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/many-tokens")).await;
    let r = c.reply("GET").await;
    r.expect(200, "many", path);
    assert_eq!(r.head.get("x-kept"), Some("yes"), "{path}");
    for i in 1..=9 {
        let name = format!("x-named-{i}");
        assert!(
            r.head.get(&name).is_none(),
            "{path}: {name} in {:?}",
            r.head.raw
        );
    }
    stop(gw).await;
}

/// 31. A head over `max_header_bytes` (8192 in the test config) or with more than
///     `max_headers` (100) fields gets 431, also right after a request in the same write.
pub(crate) async fn heads_over_the_limits(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let long = format!(
        "GET /long HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "l".repeat(20_000)
    );
    let mut many = "GET /many HTTP/1.1\r\nHost: t\r\n".to_owned();
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for bad in [long, many] {
        let mut c = Wire::connect(addr(&gw)).await;
        c.send(&[get("/first"), bad.into_bytes()].concat()).await;
        c.reply("GET").await.expect(200, "GET /first", path);
        let r = c.reply("GET").await;
        assert_eq!(r.status(), 431, "{path}: {:?}", r.head.raw);
    }
    stop(gw).await;
}

/// 37. Every method (custom ones too) with and without bodies, an empty POST, a 6 000-byte
///     target with a query, and header fields written without a space or with tabs.
pub(crate) async fn methods_targets_and_odd_spacing(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    for method in ["GET", "DELETE", "OPTIONS", "PURGE", "HEAD"] {
        c.send(format!("{method} /m/{method} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let r = c.reply(method).await;
        let want = if method == "HEAD" {
            String::new()
        } else {
            format!("{method} /m/{method}")
        };
        r.expect(200, &want, path);
    }
    for method in ["POST", "PUT", "PATCH", "REPORT"] {
        c.send(
            format!("{method} /echo/{method} HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody")
                .as_bytes(),
        )
        .await;
        c.reply(method).await.expect(200, "body", path);
    }
    c.send(b"POST /empty HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        .await;
    c.reply("POST").await.expect(200, "POST /empty", path);
    let long = format!("/long/{}?q={}", "x".repeat(3_000), "y".repeat(3_000));
    c.send(&get(&long)).await;
    c.reply("GET")
        .await
        .expect(200, &format!("GET {long}"), path);
    c.send(b"GET /hop HTTP/1.1\r\nHost:t\r\nX-Tab:\tv w\t\r\nx-lower: l\r\n\r\n")
        .await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    let seen = Head::parse(&r.body).expect("the upstream's view of the head");
    assert_eq!(seen.all("x-tab"), ["v w"], "{path}: {:?}", seen.raw);
    assert_eq!(seen.all("x-lower"), ["l"], "{path}: {:?}", seen.raw);
    assert_eq!(seen.all("host"), ["t"], "{path}: {:?}", seen.raw);
    stop(gw).await;
}
