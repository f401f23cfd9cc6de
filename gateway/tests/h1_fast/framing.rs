//! Framing scenarios: pipelines, how answers are delimited, bytes dribbled or in excess,
//! and answers framed two ways at once.

use crate::STEP;
use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::{get, post};
use crate::wire::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{sleep, timeout};

/// 1. Two, then three (one a POST with a body) requests in one write each; the first is slow
///    upstream, so answering out of order would show.
pub(crate) async fn pipelined_requests_are_answered_in_order(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&[get("/slow/one"), get("/two")].concat()).await;
    c.reply("GET").await.expect(200, "GET /slow/one", path);
    c.reply("GET").await.expect(200, "GET /two", path);

    c.send(&[get("/slow/a"), post("/echo", "hello"), get("/c")].concat())
        .await;
    let r = c.reply("GET").await;
    r.expect(200, "GET /slow/a", path);
    assert_eq!(r.head.first, "HTTP/1.1 200 OK", "{path}");
    c.reply("POST").await.expect(200, "hello", path);
    c.reply("GET").await.expect(200, "GET /c", path);

    // A request hyper serves (a chunked body) between two plain ones, in one write.
    c.send(
        &[
            get("/slow/x"),
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nmid!\r\n0\r\n\r\n"
                .to_vec(),
            get("/y?q=1&r=%20"),
        ]
        .concat(),
    )
    .await;
    c.reply("GET").await.expect(200, "GET /slow/x", path);
    c.reply("POST").await.expect(200, "mid!", path);
    c.reply("GET").await.expect(200, "GET /y?q=1&r=%20", path);
    stop(gw).await;
}

/// 2. `Content-Length`, chunked (extensions, trailers) and close-delimited bodies reach the
///    client with the same bytes, correctly framed.
pub(crate) async fn response_framing_is_relayed(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/len")).await;
    let r = c.reply("GET").await;
    r.expect(200, "GET /len", path);
    assert_eq!(r.head.content_length(), Some(8), "{path}");

    c.send(b"GET /chunked HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n")
        .await;
    let r = c.reply("GET").await;
    r.expect(200, CHUNKED_BODY, path);
    if !r.trailers.is_empty() {
        assert_eq!(
            r.trailers,
            [("x-checksum".to_owned(), "abc".to_owned())],
            "{path}"
        );
    }
    eprintln!(
        "{path}: chunked response trailers seen by the client: {:?}",
        r.trailers
    );

    // A status line with no reason phrase and an unregistered code.
    c.send(&get("/no-reason")).await;
    c.reply("GET").await.expect(299, "ok", path);

    // Still usable after a chunked answer.
    c.send(&get("/after-chunked")).await;
    c.reply("GET").await.expect(200, "GET /after-chunked", path);

    // 1 MiB, chunked and with a length.
    for target in ["/big-chunked", "/big"] {
        c.send(&get(target)).await;
        let r = c.reply("GET").await;
        assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
        assert!(
            r.body == big_body(),
            "{path}: {target} body differs ({} bytes)",
            r.body.len()
        );
    }

    c.send(&get("/close")).await;
    let r = c.reply("GET").await;
    r.expect(200, CLOSE_DELIMITED, path);
    if r.head.chunked() || r.head.content_length().is_some() {
        // Re-framed by the gateway: the client connection may go on.
        c.send(&get("/after-close")).await;
        c.reply("GET").await.expect(200, "GET /after-close", path);
    }
    // Either way, a new client connection works.
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/new")).await;
    c.reply("GET").await.expect(200, "GET /new", path);
    stop(gw).await;
}

/// 3. HEAD (upstream says `Content-Length: 100`, sends no body), 204 and 304 carry no body,
///    and the connection goes on, one at a time and pipelined.
pub(crate) async fn bodiless_answers_leave_the_connection_usable(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.reply("HEAD").await;
    r.expect(200, "", path);
    eprintln!("{path}: HEAD answer head {:?}", r.head.raw);
    c.send(&get("/after-head")).await;
    c.reply("GET").await.expect(200, "GET /after-head", path);

    c.send(&get("/204")).await;
    let r = c.reply("GET").await;
    r.expect(204, "", path);
    assert_eq!(r.head.get("x-kind"), Some("none"), "{path}");
    c.send(&get("/after-204")).await;
    c.reply("GET").await.expect(200, "GET /after-204", path);

    // A 204 carries no `Content-Length` on to the client (RFC 9110 §8.6), even when the
    // upstream sent one.
    c.send(&get("/204-length")).await;
    let r = c.reply("GET").await;
    r.expect(204, "", path);
    assert_eq!(
        r.head.get("content-length"),
        None,
        "{path}: {:?}",
        r.head.raw
    );
    c.send(&get("/after-204-length")).await;
    c.reply("GET")
        .await
        .expect(200, "GET /after-204-length", path);

    c.send(&get("/304")).await;
    let r = c.reply("GET").await;
    r.expect(304, "", path);
    assert_eq!(r.head.get("etag"), Some("\"v1\""), "{path}");
    c.send(&get("/after-304")).await;
    c.reply("GET").await.expect(200, "GET /after-304", path);

    // A HEAD answered with chunked framing and (rightly) no chunks.
    c.send(b"HEAD /chunked HTTP/1.1\r\nHost: t\r\n\r\n").await;
    c.reply("HEAD").await.expect(200, "", path);
    c.send(&get("/after-head-chunked")).await;
    c.reply("GET")
        .await
        .expect(200, "GET /after-head-chunked", path);

    // All of it in one write: a relay expecting 100 body bytes would hang here.
    c.send(
        &[
            b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            b"HEAD /chunked HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            get("/204"),
            get("/304"),
            get("/last"),
        ]
        .concat(),
    )
    .await;
    c.reply("HEAD").await.expect(200, "", path);
    c.reply("HEAD").await.expect(200, "", path);
    c.reply("GET").await.expect(204, "", path);
    c.reply("GET").await.expect(304, "", path);
    c.reply("GET").await.expect(200, "GET /last", path);
    stop(gw).await;
}

/// 15. An upstream that sends bytes past the end of a response (a second, unasked-for
///     response, in the same write or a little later): the client gets the right answers,
///     never the extra bytes as the answer to its next request.
pub(crate) async fn bytes_after_a_response_are_not_a_response(fast: bool) {
    let path = label(fast);
    const FORGED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged";
    let up = raw_upstream(|mut w, n| async move {
        while let Ok(Some(req)) = w.rd.request().await {
            let line = req.head.request_line();
            let mut out = match req.head.target() {
                "/chunked-extra" => CHUNKED_RESPONSE.to_vec(),
                _ => ok(format!("{line} on {n}").as_bytes()),
            };
            if matches!(req.head.target(), "/extra" | "/chunked-extra") {
                out.extend_from_slice(FORGED);
            }
            if w.w.write_all(&out).await.is_err() {
                return;
            }
            if req.head.target() == "/late-extra" {
                sleep(Duration::from_millis(30)).await;
                if w.w.write_all(FORGED).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    for (i, first) in ["/extra", "/chunked-extra", "/late-extra"]
        .iter()
        .enumerate()
    {
        c.send(&get(first)).await;
        let r = c.reply("GET").await;
        assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
        if *first == "/chunked-extra" {
            assert_eq!(r.text(), CHUNKED_BODY, "{path}");
        } else {
            assert!(
                r.text().starts_with(&format!("GET {first} on ")),
                "{path}: {}",
                r.text()
            );
        }
        if *first == "/late-extra" {
            sleep(Duration::from_millis(100)).await;
        }
        let next = format!("/next-{i}");
        c.send(&get(&next)).await;
        let r = c.reply("GET").await;
        assert!(
            r.status() == 200 && r.text().starts_with(&format!("GET {next} on ")),
            "{path}: after {first}, the next request got {} {:?}",
            r.status(),
            r.text()
        );
    }
    stop(gw).await;
}

/// 16. Responses written one byte per millisecond (heads, lengths, chunk sizes, trailers all
///     split everywhere) arrive intact, and bodiless ones too.
pub(crate) async fn dribbled_responses_are_relayed(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/dribble/len")).await;
    c.reply("GET").await.expect(200, "GET /dribble/len", path);
    c.send(&get("/dribble/chunked")).await;
    c.reply("GET").await.expect(200, CHUNKED_BODY, path);
    c.send(&get("/dribble/early-hints")).await;
    c.reply("GET").await.expect(200, "hints", path);
    c.send(&get("/dribble/304")).await;
    c.reply("GET").await.expect(304, "", path);
    c.send(b"HEAD /dribble/h HTTP/1.1\r\nHost: t\r\n\r\n").await;
    c.reply("HEAD").await.expect(200, "", path);
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    stop(gw).await;
}

/// 17. Requests written one byte per millisecond, head and body, and a pipelined pair whose
///     second head is cut in two.
pub(crate) async fn dribbled_requests_are_forwarded(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    dribble(&mut c.w, &post("/echo", "hello world"))
        .await
        .expect("write");
    c.reply("POST").await.expect(200, "hello world", path);
    dribble(&mut c.w, &get("/slowly")).await.expect("write");
    c.reply("GET").await.expect(200, "GET /slowly", path);

    let pair = [post("/echo", "first"), get("/second")].concat();
    let cut = pair.len() - 10;
    c.send(&pair[..cut]).await;
    sleep(Duration::from_millis(50)).await;
    c.send(&pair[cut..]).await;
    c.reply("POST").await.expect(200, "first", path);
    c.reply("GET").await.expect(200, "GET /second", path);
    stop(gw).await;
}

/// 22. An empty line (CRLF) between pipelined requests, as old clients sent after a POST body,
///     is ignored (RFC 9112 §2.2: a server SHOULD ignore at least one).
pub(crate) async fn an_empty_line_before_a_request_is_ignored(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&[post("/echo", "hello"), b"\r\n".to_vec(), get("/after")].concat())
        .await;
    c.reply("POST").await.expect(200, "hello", path);
    c.reply("GET").await.expect(200, "GET /after", path);
    c.send(b"\r\n").await;
    sleep(Duration::from_millis(20)).await;
    c.send(&get("/later")).await;
    c.reply("GET").await.expect(200, "GET /later", path);
    stop(gw).await;
}

/// 30. 300 requests (GETs and POSTs with bodies of many sizes, 330 KB in all) in one write:
///     every answer, in order (request and body boundaries fall anywhere in the reads).
pub(crate) async fn a_deep_pipeline_in_one_write(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    let pad = "p".repeat(100);
    let mut all = Vec::new();
    let mut want = Vec::new();
    for i in 0..300usize {
        if i % 3 == 2 {
            let body: String = (0..(i * 37) % 3000)
                .map(|j| (b'a' + (j % 26) as u8) as char)
                .collect();
            all.extend(post(&format!("/echo/{i}"), &body));
            want.push(("POST", body));
        } else {
            all.extend(
                format!("GET /d/{i} HTTP/1.1\r\nHost: t\r\nX-Pad: {pad}\r\n\r\n").into_bytes(),
            );
            want.push(("GET", format!("GET /d/{i}")));
        }
    }
    let Wire { rd, w } = &mut c;
    let (written, got) = timeout(STEP, async {
        tokio::join!(w.write_all(&all), async {
            let mut got = Vec::new();
            for (method, _) in &want {
                got.push(rd.final_response(method).await);
            }
            got
        })
    })
    .await
    .unwrap_or_else(|_| panic!("{path}: not all answers within {STEP:?}"));
    written.expect("written");
    for (i, (r, (_, body))) in got.into_iter().zip(&want).enumerate() {
        let r = r.unwrap_or_else(|e| panic!("{path}: answer {i}: {e}"));
        r.expect(200, body, path);
    }
    stop(gw).await;
}

/// 33. A response with both `Transfer-Encoding: chunked` and `Content-Length` is read as
///     chunked (RFC 9112 §6.3) and reaches the client without the contradicting length.
pub(crate) async fn a_response_with_both_lengths_is_chunked(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/te-and-cl")).await;
    let r = c.reply("GET").await;
    // What the next request gets tells a cut answer from a desynchronised connection.
    c.send(&get("/after")).await;
    let next = timeout(STEP, c.rd.final_response("GET")).await;
    let next = match &next {
        Ok(Ok(n)) => format!("{} {:?}", n.status(), n.text()),
        Ok(Err(e)) => format!("error: {e}"),
        Err(_) => "nothing".to_owned(),
    };
    assert!(
        (r.status(), r.text().as_str()) == (200, "hello")
            && r.head.content_length().is_none_or(|n| n == 5)
            && next == "200 \"GET /after\"",
        "{path}: got {:?} {:?}, then {next}",
        r.head.raw,
        r.text()
    );
    stop(gw).await;
}
