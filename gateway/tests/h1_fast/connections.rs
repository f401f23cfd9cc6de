//! Connection handling: `Connection: close` and HTTP/1.0 on either side, keep-alive and
//! pooled upstream connections, requests dropped unanswered, half-close, concurrency and
//! shutdown.

use crate::STEP;
use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::{get, post};
use crate::wire::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep, timeout};

/// 6. `Connection: close` from the client: said back, and the connection closed after.
pub(crate) async fn client_connection_close_is_honoured(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/first")).await;
    c.reply("GET").await.expect(200, "GET /first", path);
    c.send(b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    let r = c.reply("GET").await;
    r.expect(200, "GET /bye", path);
    assert!(
        r.head.lists("connection", "close"),
        "{path}: no `connection: close` in {:?}",
        r.head.raw
    );
    c.expect_closed(path).await;

    // A request pipelined after the closing one is not answered.
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(
        &[
            b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec(),
            get("/ignored"),
        ]
        .concat(),
    )
    .await;
    c.reply("GET").await.expect(200, "GET /bye", path);
    c.expect_closed(path).await;
    stop(gw).await;
}

/// 7. HTTP/1.0 with no Host is answered, and (no keep-alive asked) the connection closes.
pub(crate) async fn http10_without_host_is_answered(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"GET /ten HTTP/1.0\r\n\r\n").await;
    let r = c.reply("GET").await;
    r.expect(200, "GET /ten", path);
    assert!(
        r.head.first.starts_with("HTTP/1."),
        "{path}: {:?}",
        r.head.first
    );
    c.expect_closed(path).await;
    stop(gw).await;
}

/// 8a. The upstream closes each connection right after its (keep-alive) answer: the next
///     request, sent at once or a little later, gets a fresh connection and a 200, never 502.
pub(crate) async fn upstream_closing_its_connection_is_not_a_502(fast: bool) {
    let path = label(fast);
    let up = raw_upstream(|mut w, n| async move {
        if let Ok(Some(req)) = w.rd.request().await {
            let body = format!("{} on {n}", req.head.request_line());
            let _ = w.w.write_all(&ok(body.as_bytes())).await;
        }
        // Dropping `w` closes the socket.
    })
    .await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/1")).await;
    c.reply("GET").await.expect(200, "GET /1 on 0", path);
    // At once: the gateway may not have seen the close yet.
    c.send(&get("/2")).await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?} {}", r.head.raw, r.text());
    assert!(r.text().starts_with("GET /2 on "), "{path}: {}", r.text());
    // Later: the close has surely arrived.
    sleep(Duration::from_millis(100)).await;
    c.send(&get("/3")).await;
    let r = c.reply("GET").await;
    assert_eq!(r.status(), 200, "{path}: {:?} {}", r.head.raw, r.text());
    assert!(r.text().starts_with("GET /3 on "), "{path}: {}", r.text());
    // A POST (not retried if it fails once sent) after the close has arrived.
    sleep(Duration::from_millis(100)).await;
    c.send(&post("/4", "body")).await;
    let r = c.reply("POST").await;
    assert_eq!(r.status(), 200, "{path}: {:?} {}", r.head.raw, r.text());
    assert!(r.text().starts_with("POST /4 on "), "{path}: {}", r.text());
    assert!(up.accepted() >= 4, "{path}: {} connections", up.accepted());
    stop(gw).await;
}

/// 8b. The upstream says `Connection: close` (or answers as HTTP/1.0 without keep-alive) but
///     keeps its socket open: the gateway must not send the next request on it.
pub(crate) async fn upstream_connection_close_is_not_reused(fast: bool) {
    let path = label(fast);
    for (first_lines, via) in [
        ("HTTP/1.1 200 OK\r\nConnection: close", "1.1 tollgate"),
        ("HTTP/1.0 200 OK", "1.0 tollgate"),
    ] {
        let reused = Arc::new(AtomicUsize::new(0));
        let seen = reused.clone();
        let up = raw_upstream(move |mut w, n| {
            let seen = seen.clone();
            async move {
                if let Ok(Some(req)) = w.rd.request().await {
                    let body = format!("{} on {n}", req.head.request_line());
                    let head = format!("{first_lines}\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ =
                        w.w.write_all(&[head.into_bytes(), body.into_bytes()].concat())
                            .await;
                }
                if let Ok(Ok(Some(_))) = timeout(Duration::from_secs(1), w.rd.request()).await {
                    // Relaxed: read by the test after it is done.
                    seen.fetch_add(1, Ordering::Relaxed);
                    let _ =
                        w.w.write_all(b"HTTP/1.1 500 Reused\r\nContent-Length: 6\r\n\r\nreused")
                            .await;
                }
            }
        })
        .await;
        let gw = start(cfg(&single(up.addr, "http1"), fast));
        let mut c = Wire::connect(addr(&gw)).await;
        for i in 0..3 {
            c.send(&get(&format!("/{i}"))).await;
            let r = c.reply("GET").await;
            assert_eq!(r.status(), 200, "{path}: {:?} {}", r.head.raw, r.text());
            assert!(
                r.text().starts_with(&format!("GET /{i} on ")),
                "{path}: {}",
                r.text()
            );
            assert!(
                !r.head.lists("connection", "close"),
                "{path}: the upstream's close reached the client: {:?}",
                r.head.raw
            );
            assert_eq!(r.head.all("via"), [via], "{path}: {:?}", r.head.raw);
        }
        assert_eq!(
            up.accepted(),
            3,
            "{path}: {first_lines:?}: one upstream connection per request"
        );
        // Relaxed: the exchanges are over.
        assert_eq!(
            reused.load(Ordering::Relaxed),
            0,
            "{path}: {first_lines:?}: a closing connection was reused"
        );
        stop(gw).await;
    }
}

/// 14. 200 requests on one keep-alive connection, GET and POST in turn: all answered right,
///     over at most a few upstream connections.
pub(crate) async fn many_keep_alive_requests_reuse_upstream_connections(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    for i in 0..200 {
        if i % 2 == 0 {
            c.send(&get(&format!("/seq/{i}?n={i}"))).await;
            c.reply("GET")
                .await
                .expect(200, &format!("GET /seq/{i}?n={i}"), path);
        } else {
            let body = format!("body number {i}");
            c.send(&post("/echo", &body)).await;
            c.reply("POST").await.expect(200, &body, path);
        }
    }
    assert!(
        up.accepted() <= 2,
        "{path}: {} upstream connections for 200 sequential requests",
        up.accepted()
    );
    stop(gw).await;
}

/// 25. A client that sends its request and then closes its sending side (half-close, as
///     `nc -N` or a shell script does) still gets the answer.
pub(crate) async fn a_half_closed_client_gets_its_answer(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/slow/half")).await;
    c.w.shutdown().await.expect("half-close");
    c.reply("GET").await.expect(200, "GET /slow/half", path);
    c.expect_closed(path).await;
    stop(gw).await;
}

/// 29. Shutdown: the answer in flight is finished and its connection then closed; idle
///     keep-alive connections (fresh and parked) are closed; shutdown ends well within
///     `drain_timeout_ms`.
pub(crate) async fn shutdown_finishes_the_answer_in_flight(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let at = addr(&gw);
    let mut parked = Wire::connect(at).await;
    parked.send(&get("/parked")).await;
    parked.reply("GET").await.expect(200, "GET /parked", path);
    // Idle past park_ms (100 ms).
    sleep(Duration::from_millis(300)).await;
    let mut idle = Wire::connect(at).await;
    idle.send(&get("/idle")).await;
    idle.reply("GET").await.expect(200, "GET /idle", path);
    let mut busy = Wire::connect(at).await;
    busy.send(&get("/slow/busy")).await;
    // The upstream takes 100 ms: the request is in flight when shutdown starts.
    sleep(Duration::from_millis(30)).await;
    let t = Instant::now();
    let stopping = tokio::spawn(stop(gw));
    busy.reply("GET").await.expect(200, "GET /slow/busy", path);
    busy.expect_closed(path).await;
    idle.expect_closed(path).await;
    parked.expect_closed(path).await;
    timeout(STEP, stopping)
        .await
        .expect("shutdown ends")
        .expect("shutdown task");
    // drain_timeout_ms is 5000 in the test config.
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{path}: shutdown took {:?}",
        t.elapsed()
    );
}

/// An upstream whose connections answer their first request, then read the second and close
/// without a byte of answer (the keep-alive race: its close crossed the request). Records
/// every request line it read.
pub(crate) async fn dropping_upstream() -> (RawUp, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let up = raw_upstream(move |mut w, n| {
        let log = log.clone();
        async move {
            if let Ok(Some(req)) = w.rd.request().await {
                log.lock().unwrap().push(req.head.request_line());
                let body = format!("{} on {n}", req.head.request_line());
                if w.w.write_all(&ok(body.as_bytes())).await.is_err() {
                    return;
                }
            }
            if let Ok(Some(req)) = w.rd.request().await {
                log.lock().unwrap().push(req.head.request_line());
            }
        }
    })
    .await;
    (up, seen)
}

/// 35. A GET the upstream reads and then closes on without answering, on a reused
///     connection: sent again on a fresh connection (RFC 9110 §9.2.2 allows it for idempotent
///     methods), so the client gets 200, not 502.
pub(crate) async fn an_idempotent_request_dropped_unanswered_is_retried(fast: bool) {
    let path = label(fast);
    let (up, seen) = dropping_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/1")).await;
    c.reply("GET").await.expect(200, "GET /1 on 0", path);
    c.send(&get("/2")).await;
    let r = c.reply("GET").await;
    assert_eq!(
        r.status(),
        200,
        "{path}: {:?} {}; upstream saw {:?}",
        r.head.raw,
        r.text(),
        seen.lock().unwrap()
    );
    assert_eq!(r.text(), "GET /2 on 1", "{path}");
    stop(gw).await;
}

/// 36. A POST the upstream reads and then closes on without answering: not sent again (it
///     may have taken effect), 502; the upstream saw it once.
pub(crate) async fn a_post_dropped_unanswered_is_not_replayed(fast: bool) {
    let path = label(fast);
    let (up, seen) = dropping_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/1")).await;
    c.reply("GET").await.expect(200, "GET /1 on 0", path);
    c.send(&post("/pay", "once")).await;
    let r = c.reply("POST").await;
    r.expect(502, "upstream connection failed\n", path);
    let posts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.as_str() == "POST /pay")
        .count();
    assert_eq!(posts, 1, "{path}: upstream saw {:?}", seen.lock().unwrap());
    stop(gw).await;
}

/// 38. 16 clients at once, 25 requests each (GET and POST), over shared pooled upstream
///     connections: each gets exactly its own answers.
pub(crate) async fn concurrent_clients_get_their_own_answers(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let at = addr(&gw);
    let clients: Vec<_> = (0..16)
        .map(|k| {
            tokio::spawn(async move {
                let mut c = Wire::connect(at).await;
                for i in 0..25 {
                    if i % 2 == 0 {
                        let target = format!("/c/{k}/{i}");
                        c.send(&get(&target)).await;
                        c.reply("GET")
                            .await
                            .expect(200, &format!("GET {target}"), path);
                    } else {
                        let body = format!("client {k} request {i}");
                        c.send(&post("/echo", &body)).await;
                        c.reply("POST").await.expect(200, &body, path);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    assert!(
        up.accepted() <= 32,
        "{path}: {} upstream connections for 16 clients",
        up.accepted()
    );
    stop(gw).await;
}

/// 39. On one worker, an upstream connection pooled by one client connection serves the next
///     client connection too, and one idle past `idle_ms` is not used again.
pub(crate) async fn pooled_connections_are_shared_and_expire(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.server.workers = 1;
    config.timeouts.idle_ms = 300;
    let gw = start(config);
    for (i, pause) in [0, 0, 500].into_iter().enumerate() {
        sleep(Duration::from_millis(pause)).await;
        let mut c = Wire::connect(addr(&gw)).await;
        for j in 0..2 {
            let target = format!("/p/{i}/{j}");
            c.send(&get(&target)).await;
            c.reply("GET")
                .await
                .expect(200, &format!("GET {target}"), path);
        }
        let want = if pause == 0 { 1 } else { 2 };
        assert_eq!(
            up.accepted(),
            want,
            "{path}: upstream connections after client {i}"
        );
    }
    stop(gw).await;
}
