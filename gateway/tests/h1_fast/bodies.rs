//! Request bodies: large, slow, chunked, `Expect: 100-continue`, over the limit, repeated
//! lengths, and answers that come before the body is read.

use crate::STEP;
use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::get;
use crate::wire::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep, timeout};

/// 4. A 1 MiB body echoed byte-exact, and a body sent in four pieces 50 ms apart.
pub(crate) async fn large_and_slow_request_bodies_arrive_intact(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.limits.max_body_bytes = 4 << 20;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    let payload: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    req.extend_from_slice(&payload);
    let r = c.send_and_reply(&req, "POST").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    assert_eq!(r.body.len(), payload.len(), "{path}");
    assert!(r.body == payload, "{path}: the echoed body differs");

    let pieces = [
        "first piece|",
        "second piece|",
        "third piece|",
        "fourth piece",
    ];
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    c.send(
        format!("POST /echo-slow HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    for p in pieces {
        sleep(Duration::from_millis(50)).await;
        c.send(p.as_bytes()).await;
    }
    c.reply("POST").await.expect(200, &pieces.concat(), path);
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    stop(gw).await;
}

/// 5. A chunked request body, and `Expect: 100-continue` (a 100 before the body is sent).
pub(crate) async fn chunked_request_bodies_and_expect_continue(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
    )
    .await;
    c.reply("POST").await.expect(200, "hello world", path);
    c.send(&get("/after-chunked")).await;
    c.reply("GET").await.expect(200, "GET /after-chunked", path);
    // Idle past park_ms (100 ms): the connection goes back to the first path.
    sleep(Duration::from_millis(300)).await;
    c.send(&get("/after-idle")).await;
    c.reply("GET").await.expect(200, "GET /after-idle", path);

    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = timeout(STEP, c.rd.response("POST"))
        .await
        .unwrap_or_else(|_| panic!("{path}: no 100 Continue before the body"))
        .expect("a response head");
    assert_eq!(interim.status(), 100, "{path}: {:?}", interim.head.raw);
    c.send(b"hello").await;
    c.reply("POST").await.expect(200, "hello", path);
    c.send(&get("/after-expect")).await;
    c.reply("GET").await.expect(200, "GET /after-expect", path);
    stop(gw).await;
}

/// 18. A declared body over `limits.max_body_bytes` is refused with 413 before it is sent;
///     afterwards the connection is either closed or in step (the body is skipped): the next
///     request never gets an answer meant for body bytes.
pub(crate) async fn a_declared_body_too_large_is_413(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    // The test config's limit is 100 000 bytes.
    let len = 100_001;
    c.send(format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").as_bytes())
        .await;
    let r = c.reply("POST").await;
    r.expect(413, "request body too large\n", path);
    let closing = r.head.lists("connection", "close");
    // The body (shaped like requests, to catch a gateway reading it as such), then a request.
    let fake = get("/smuggled");
    let body: Vec<u8> = fake.iter().copied().cycle().take(len).collect();
    let _ = c.w.write_all(&[body, get("/after")].concat()).await;
    match timeout(STEP, c.rd.final_response("GET")).await {
        Err(_) => panic!("{path}: neither an answer nor a close after the 413"),
        Ok(Ok(r)) => {
            assert!(
                !closing,
                "{path}: answered after `connection: close`: {r:?}"
            );
            r.expect(200, "GET /after", path);
        }
        Ok(Err(e)) => eprintln!("{path}: closed after the 413 ({e}); closing said: {closing}"),
    }
    // The upstream never saw the body's fake requests.
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/fresh")).await;
    c.reply("GET").await.expect(200, "GET /fresh", path);
    stop(gw).await;
}

/// 23. The upstream answers (401, `Connection: close`) after reading only the head of a
///     16 MiB upload, and reads nothing more: the client gets the 401 promptly (RFC 9112 §9.5:
///     an early answer ends the request), not a 502 or a 504 after the route timeout.
pub(crate) async fn an_early_answer_before_the_body_is_read(fast: bool) {
    let path = label(fast);
    let up = raw_upstream(|mut w, _| async move {
        if let Ok(Some(_)) = w.rd.head().await {
            let _ = w
                .w
                .write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 7\r\n\r\ndenied\n",
                )
                .await;
            // Reads nothing more; holds the connection a while (past the 1.5 s the test
            // allows), then closes.
            sleep(Duration::from_secs(2)).await;
        }
        drop(w);
    })
    .await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.limits.max_body_bytes = 0;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    let len = 16usize << 20;
    let mut req =
        format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    req.resize(req.len() + len, b'u');
    let t = Instant::now();
    let Wire { rd, w } = &mut c;
    let reply = async {
        tokio::select! {
            r = rd.final_response("POST") => r,
            // The write may block for good (nobody reads the body); only the answer counts.
            _ = async { let _ = w.write_all(&req).await; std::future::pending::<()>().await } => unreachable!(),
        }
    };
    let r = timeout(STEP, reply)
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within {STEP:?}"))
        .unwrap_or_else(|e| panic!("{path}: no complete answer: {e}"));
    let took = t.elapsed();
    r.expect(401, "denied\n", path);
    // The test config's request_ms is 3000: well before it.
    assert!(
        took < Duration::from_millis(1500),
        "{path}: answered after {took:?}"
    );
    drop(c);
    stop(gw).await;
}

/// 32. A request with `Content-Length` twice (same value: valid, RFC 9110 §8.6) reaches the
///     upstream with one `Content-Length`: passing both on invites an upstream that reads the
///     two differently (or refuses them) to disagree with the gateway about the body.
pub(crate) async fn a_repeated_content_length_is_sent_once(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"POST /hop HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.reply("POST").await;
    assert_eq!(r.status(), 200, "{path}: {:?}", r.head.raw);
    let seen = Head::parse(&r.body).expect("the upstream's view of the head");
    assert_eq!(seen.all("content-length"), ["5"], "{path}: {:?}", seen.raw);
    c.send(&get("/after")).await;
    c.reply("GET").await.expect(200, "GET /after", path);
    stop(gw).await;
}
