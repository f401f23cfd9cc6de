//! Scenarios pinning the fast path's review fixes: local answers to HEAD in a pipeline, an
//! upstream's unsolicited `100 Continue`, streamed echoes, `park_ms` over `idle_ms`, `Date`,
//! `CONNECT` and fragments, a PUT dropped unanswered, a 413 while the body is still coming, and
//! a head dribbled byte by byte.

use crate::STEP;
use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::{get, post};
use crate::wire::*;
use std::cell::Cell;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep, timeout};

/// `len` bytes of a pattern.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

/// A POST of `body` to `target`, head and body as bytes.
fn post_bytes(target: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// R1. HEAD answered locally (404 unrouted, 502 refused upstream), pipelined with a GET in one
///     write: the HEAD answer carries no body bytes, so the GET's answer reads right.
pub(crate) async fn local_answers_to_head_have_no_body(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    // A port bound and never listening: connecting is refused.
    let (closed, _refusing) = refusing();
    let gw = start(cfg(
        &format!(
            "[[clusters]]\nname = \"closed\"\nendpoints = [\"{closed}\"]\n\
             [[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
             [[routes]]\nhost = \"only.example\"\npath_prefix = \"/closed\"\ncluster = \"closed\"\n\
             [[routes]]\nhost = \"only.example\"\ncluster = \"up\"\n",
            up.addr
        ),
        fast,
    ));
    let on = |method: &str, host: &str, target: &str| {
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
    };
    for (head, status) in [
        (on("HEAD", "other.example", "/miss"), 404),
        (on("HEAD", "only.example", "/closed"), 502),
    ] {
        let mut c = Wire::connect(addr(&gw)).await;
        c.send(&[head, on("GET", "only.example", "/next")].concat())
            .await;
        let r = c.reply("HEAD").await;
        assert_eq!(r.status(), status, "{path}: {:?}", r.head.raw);
        c.reply("GET").await.expect(200, "GET /next", path);
        // Nothing else came: no stray body bytes after the GET's answer either.
        sleep(Duration::from_millis(50)).await;
        let _ = timeout(Duration::from_millis(50), c.rd.fill()).await;
        assert!(
            c.rd.buf.is_empty(),
            "{path}: stray bytes {:?}",
            String::from_utf8_lossy(&c.rd.buf)
        );
    }
    stop(gw).await;
}

/// R2. The upstream sends an unsolicited `100 Continue` on reading the head, then reads the
///     whole body and answers with its length: a 20 000-byte POST sent in two writes 50 ms
///     apart gets that 200 promptly.
pub(crate) async fn an_unsolicited_continue_from_the_upstream(fast: bool) {
    let path = label(fast);
    let up = raw_upstream(|mut w, _| async move {
        while let Ok(Some(head)) = w.rd.head().await {
            if w.w
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let Ok(body) = w.rd.take(head.content_length().unwrap_or(0)).await else {
                return;
            };
            let text = format!("got {}", body.len());
            if w.w.write_all(&ok(text.as_bytes())).await.is_err() {
                return;
            }
        }
    })
    .await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    let req = post_bytes("/upload", &pattern(20_000, 1));
    let cut = req.len() - 12_000;
    let t = Instant::now();
    c.send(&req[..cut]).await;
    sleep(Duration::from_millis(50)).await;
    c.send(&req[cut..]).await;
    let r = c.reply("POST").await;
    let took = t.elapsed();
    r.expect(200, "got 20000", path);
    assert!(
        took < Duration::from_secs(2),
        "{path}: answered after {took:?}"
    );
    // The connection is still in step.
    c.send(&post("/again", "abc")).await;
    c.reply("POST").await.expect(200, "got 3", path);
    stop(gw).await;
}

/// An upstream that echoes a request body as a chunked answer, a chunk per piece as it
/// arrives (Node's `req.pipe(res)`).
async fn streaming_echo() -> RawUp {
    raw_upstream(|mut w, _| async move {
        while let Ok(Some(head)) = w.rd.head().await {
            let start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            if w.w.write_all(start).await.is_err() {
                return;
            }
            let mut left = head.content_length().unwrap_or(0);
            while left > 0 {
                if w.rd.buf.is_empty() && w.rd.fill().await.is_err() {
                    return;
                }
                let n = left.min(w.rd.buf.len());
                let piece: Vec<u8> = w.rd.buf.drain(..n).collect();
                left -= n;
                let chunk = [format!("{n:x}\r\n").into_bytes(), piece, b"\r\n".to_vec()].concat();
                if w.w.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            if w.w.write_all(b"0\r\n\r\n").await.is_err() {
                return;
            }
        }
    })
    .await
}

/// R3. A streaming echo upstream: 30 000 bytes (held whole on the fast path) and 200 000
///     bytes (over 64 KiB: hyper streams it) come back complete and byte-exact.
pub(crate) async fn a_streaming_echo_comes_back_whole(fast: bool) {
    let path = label(fast);
    let up = streaming_echo().await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    // The test config's 100 000 would refuse the larger body.
    config.limits.max_body_bytes = 1 << 20;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    for len in [30_000, 200_000, 30_000] {
        let body = pattern(len, len);
        let r = c.send_and_reply(&post_bytes("/echo", &body), "POST").await;
        assert_eq!(r.status(), 200, "{path}: {len}: {:?}", r.head.raw);
        assert!(r.body == body, "{path}: {len}: {} bytes back", r.body.len());
    }
    // Each on a fresh connection too (the first request of a connection).
    for len in [200_000, 30_000] {
        let mut c = Wire::connect(addr(&gw)).await;
        let body = pattern(len, len + 1);
        let r = c.send_and_reply(&post_bytes("/echo", &body), "POST").await;
        assert_eq!(r.status(), 200, "{path}: {len}: {:?}", r.head.raw);
        assert!(r.body == body, "{path}: {len}: {} bytes back", r.body.len());
    }
    stop(gw).await;
}

/// R4. `park_ms` (5 000) over `idle_ms` (300): an idle keep-alive connection is still closed
///     after about `idle_ms`, not kept for `park_ms`.
pub(crate) async fn idle_ms_applies_when_park_ms_is_larger(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.timeouts.idle_ms = 300;
    config.timeouts.park_ms = 5000;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/once")).await;
    c.reply("GET").await.expect(200, "GET /once", path);
    let t = Instant::now();
    let read = timeout(Duration::from_secs(2), c.rd.fill()).await;
    let took = t.elapsed();
    match read {
        Err(_) => panic!("{path}: an idle connection still open after {took:?}, idle_ms = 300"),
        Ok(Ok(())) => panic!(
            "{path}: bytes on an idle connection: {:?}",
            String::from_utf8_lossy(&c.rd.buf)
        ),
        Ok(Err(_)) => {}
    }
    assert!(
        took >= Duration::from_millis(250),
        "{path}: closed after {took:?}, idle_ms = 300"
    );
    stop(gw).await;
}

/// Whether `value` looks like an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(value: &str) -> bool {
    value.len() == 29 && value.ends_with(" GMT") && value.as_bytes()[3] == b','
}

/// R5. Every answer has one `Date`: a relayed one whose upstream sent none, a local 404; an
///     upstream's own `Date` is passed on unchanged, not doubled.
pub(crate) async fn every_answer_has_a_date(fast: bool) {
    let path = label(fast);
    const DATED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    let up = raw_upstream(|mut w, _| async move {
        while let Ok(Some(req)) = w.rd.request().await {
            let bytes = if req.head.target() == "/dated" {
                format!("HTTP/1.1 200 OK\r\nDate: {DATED}\r\nContent-Length: 5\r\n\r\ndated")
                    .into_bytes()
            } else {
                answer(&req).await.0
            };
            if w.w.write_all(&bytes).await.is_err() {
                return;
            }
        }
    })
    .await;
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
    c.send(&on("only.example", "/plain")).await;
    let r = c.reply("GET").await;
    r.expect(200, "GET /plain", path);
    let dates = r.head.all("date");
    assert!(
        dates.len() == 1 && http_date(dates[0]),
        "{path}: relayed: {:?}",
        r.head.raw
    );
    c.send(&on("other.example", "/miss")).await;
    let r = c.reply("GET").await;
    r.expect(404, "no route\n", path);
    let dates = r.head.all("date");
    assert!(
        dates.len() == 1 && http_date(dates[0]),
        "{path}: local: {:?}",
        r.head.raw
    );
    c.send(&on("only.example", "/dated")).await;
    let r = c.reply("GET").await;
    r.expect(200, "dated", path);
    assert_eq!(r.head.all("date"), [DATED], "{path}: {:?}", r.head.raw);
    stop(gw).await;
}

/// R6. `CONNECT /x` (origin form) is never forwarded as a plain request nor answered 2xx;
///     the gateway goes on serving.
pub(crate) async fn connect_with_an_origin_form_target(fast: bool) {
    let path = label(fast);
    let (up, seen) = logging_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"CONNECT /x HTTP/1.1\r\nHost: t\r\n\r\n").await;
    // Framed as a GET's answer: a 2xx to CONNECT would have no body, and fails anyway.
    match timeout(STEP, c.rd.final_response("GET")).await {
        Err(_) => panic!("{path}: neither an answer nor a close for CONNECT"),
        Ok(Ok(r)) => {
            assert!(
                r.status() >= 400,
                "{path}: CONNECT answered {:?}",
                r.head.raw
            );
            eprintln!("{path}: CONNECT /x answered {}", r.head.first);
        }
        Ok(Err(e)) => eprintln!("{path}: CONNECT /x: closed ({e})"),
    }
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|l| !l.starts_with("CONNECT")),
        "{path}: the upstream saw {seen:?}"
    );
    stop(gw).await;
}

/// R7. A target with a fragment (`/a#frag`): the client gets an answer (hyper may strip the
///     fragment or refuse it), and no `#` reaches the upstream.
pub(crate) async fn a_fragment_never_reaches_the_upstream(fast: bool) {
    let path = label(fast);
    let (up, seen) = logging_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    for target in ["/a#frag", "/a?q=1#frag"] {
        let mut c = Wire::connect(addr(&gw)).await;
        c.send(&get(target)).await;
        let r = c.reply("GET").await;
        eprintln!("{path}: {target}: {} {:?}", r.head.first, r.text());
        assert!(
            r.status() == 400 || r.status() == 200,
            "{path}: {target}: {:?} {}",
            r.head.raw,
            r.text()
        );
        if r.status() == 200 {
            assert!(!r.text().contains('#'), "{path}: {target}: {}", r.text());
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|l| !l.contains('#')),
        "{path}: the upstream saw {seen:?}"
    );
    stop(gw).await;
}

/// R8. On a reused upstream connection the upstream closes without answering: a PUT with a
///     body (idempotent, but its body may have taken effect) is not sent again, 502; a GET
///     is, 200.
pub(crate) async fn a_put_with_a_body_dropped_unanswered_is_not_replayed(fast: bool) {
    let path = label(fast);
    let (up, seen) = crate::connections::dropping_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/1")).await;
    c.reply("GET").await.expect(200, "GET /1 on 0", path);
    c.send(b"PUT /put HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nonce")
        .await;
    c.reply("PUT")
        .await
        .expect(502, "upstream connection failed\n", path);
    let puts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.as_str() == "PUT /put")
        .count();
    assert_eq!(puts, 1, "{path}: upstream saw {:?}", seen.lock().unwrap());
    stop(gw).await;

    let (up, seen) = crate::connections::dropping_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/1")).await;
    c.reply("GET").await.expect(200, "GET /1 on 0", path);
    c.send(&get("/2")).await;
    let r = c.reply("GET").await;
    assert_eq!(
        (r.status(), r.text().as_str()),
        (200, "GET /2 on 1"),
        "{path}: upstream saw {:?}",
        seen.lock().unwrap()
    );
    stop(gw).await;
}

/// R9. A body declared over `limits.max_body_bytes` while the client keeps sending it: the
///     client reads the 413 (a write error after it is fine), never a reset before it.
pub(crate) async fn a_413_while_the_body_is_still_coming(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    // The test config's limit is 100 000 bytes.
    let len = 4usize << 20;
    for round in 0..3 {
        let mut c = Wire::connect(addr(&gw)).await;
        let head = format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
        let piece = vec![b'x'; 16 * 1024];
        let answered = Cell::new(false);
        let Wire { rd, w } = &mut c;
        let write = async {
            w.write_all(head.as_bytes()).await?;
            let mut sent = 0;
            while sent < len && !answered.get() {
                let n = piece.len().min(len - sent);
                w.write_all(&piece[..n]).await?;
                sent += n;
            }
            Ok::<usize, std::io::Error>(sent)
        };
        let read = async {
            // A client that looks for an answer now and then, as curl does between writes: the
            // 413 must still be there to read.
            sleep(Duration::from_millis(50)).await;
            let r = rd.final_response("POST").await;
            answered.set(true);
            r
        };
        let (written, read) = timeout(STEP, async { tokio::join!(write, read) })
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer within {STEP:?}"));
        let r = read.unwrap_or_else(|e| {
            panic!("{path}: round {round}: no answer, {e} (writing: {written:?})")
        });
        r.expect(413, "request body too large\n", path);
        eprintln!("{path}: round {round}: 413 read; writing: {written:?}");
    }
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    stop(gw).await;
}

/// R10. A ~300-byte head dribbled one byte every 2 ms is forwarded whole and answered.
pub(crate) async fn a_head_dribbled_byte_by_byte(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    // 300 bytes at 2 ms (and more, with timer granularity) could outlast the test's 800 ms.
    config.timeouts.header_read_ms = 5000;
    let gw = start(config);
    let mut req = String::from("GET /hop HTTP/1.1\r\nHost: t\r\n");
    for i in 0..10 {
        req.push_str(&format!("X-Pad-{i}: value-{i}-abcdefgh\r\n"));
    }
    req.push_str("\r\n");
    assert!((280..=340).contains(&req.len()), "{}", req.len());
    let mut c = Wire::connect(addr(&gw)).await;
    for b in req.as_bytes() {
        c.send(std::slice::from_ref(b)).await;
        sleep(Duration::from_millis(2)).await;
    }
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?} {}", r.head.raw, r.text());
    let seen = r.text().to_ascii_lowercase();
    assert!(seen.starts_with("get /hop http/1.1\r\n"), "{path}: {seen}");
    for i in 0..10 {
        assert!(
            seen.contains(&format!("x-pad-{i}: value-{i}-abcdefgh\r\n")),
            "{path}: x-pad-{i} missing from {seen}"
        );
    }
    // The connection is still in step.
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    stop(gw).await;
}
