//! Failures: upstreams that refuse, stall, die mid-body or answer garbage, clients that go
//! away mid-way, and the counters that record all of it.

use crate::STEP;
use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::{get, post};
use crate::wire::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep, timeout};

/// 9. The upstream sends 10 of 100 body bytes and stalls: the client connection is cut
///    after about `idle_ms`, with no complete body; the gateway goes on serving.
pub(crate) async fn a_stalled_response_body_cuts_the_client(fast: bool) {
    let path = label(fast);
    let up = raw_upstream(|mut w, _| async move {
        while let Ok(Some(req)) = w.rd.request().await {
            if req.head.target() == "/stall" {
                let _ =
                    w.w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                        .await;
                sleep(Duration::from_secs(20)).await;
                return;
            }
            let (bytes, _) = answer(&req).await;
            let _ = w.w.write_all(&bytes).await;
        }
    })
    .await;
    let mut config = cfg(&single(up.addr, "http1"), fast);
    config.timeouts.idle_ms = 500;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    let t = Instant::now();
    c.send(&get("/stall")).await;
    let read = timeout(STEP, c.rd.final_response("GET")).await;
    let took = t.elapsed();
    match read {
        Err(_) => panic!("{path}: the client was left hanging for {STEP:?}"),
        Ok(Ok(r)) => panic!("{path}: a complete response from a stalled body: {r:?}"),
        Ok(Err(e)) => eprintln!("{path}: cut after {took:?}: {e}"),
    }
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
        "{path}: cut after {took:?}, idle_ms = 500"
    );
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/fine")).await;
    c.reply("GET").await.expect(200, "GET /fine", path);
    stop(gw).await;
}

/// 13. A refused upstream is a 502, one that never answers a 504 after the route's timeout;
///     the client connection survives both.
pub(crate) async fn refused_and_mute_upstreams(fast: bool) {
    let path = label(fast);
    // A port bound and never listening: connecting is refused.
    let (closed, _refusing) = refusing();
    let mute = raw_upstream(|mut w, _| async move {
        let _ = w.rd.request().await;
        sleep(Duration::from_secs(20)).await;
        // Held to here: dropping the write half would send a FIN.
        drop(w);
    })
    .await;
    let gw = start(cfg(
        &format!(
            "[[clusters]]\nname = \"closed\"\nendpoints = [\"{closed}\"]\n\
             [[clusters]]\nname = \"mute\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath_prefix = \"/closed\"\ncluster = \"closed\"\n\
             [[routes]]\npath_prefix = \"/mute\"\ncluster = \"mute\"\nrequest_timeout_ms = 300\n",
            mute.addr
        ),
        fast,
    ));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/closed")).await;
    let r = c.reply("GET").await;
    r.expect(502, "upstream connect failed\n", path);
    assert_eq!(r.head.get("content-type"), Some("text/plain"), "{path}");

    let t = Instant::now();
    c.send(&get("/mute")).await;
    let r = c.reply("GET").await;
    let took = t.elapsed();
    r.expect(504, "upstream timed out\n", path);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "{path}: 504 after {took:?}, route timeout 300 ms"
    );
    stop(gw).await;
}

/// 24. A client that drops its connection in the middle of a 1 MiB answer, or before its
///     answer comes: the upstream connection is not reused with (the rest of) that answer in
///     it, so later clients get their own answers.
pub(crate) async fn a_client_gone_mid_response_spoils_nothing(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    for round in 0..6 {
        let mut c = Wire::connect(addr(&gw)).await;
        if round % 2 == 0 {
            c.send(&get("/big")).await;
            let head = timeout(STEP, c.rd.head())
                .await
                .expect("a head in time")
                .expect("a head")
                .expect("a head");
            assert_eq!(head.status(), 200, "{path}");
        } else {
            // Gone before the answer (the upstream takes 100 ms).
            c.send(&get("/slow/gone")).await;
            sleep(Duration::from_millis(20)).await;
        }
        drop(c);
        // Later clients (on whichever worker) get their own answers.
        for i in 0..4 {
            let mut c = Wire::connect(addr(&gw)).await;
            let target = format!("/small/{round}/{i}");
            c.send(&get(&target)).await;
            c.reply("GET")
                .await
                .expect(200, &format!("GET {target}"), path);
        }
    }
    stop(gw).await;
}

/// 26. The upstream closes in the middle of a body (10 of 100 bytes, or after one chunk): the
///     client's connection is cut at once, and never looks like a complete answer (no final
///     chunk, no short length).
pub(crate) async fn an_upstream_gone_mid_body_is_not_a_whole_body(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    for target in ["/short", "/chunked-cut"] {
        let mut c = Wire::connect(addr(&gw)).await;
        let t = Instant::now();
        c.send(&get(target)).await;
        match timeout(STEP, c.rd.final_response("GET")).await {
            Err(_) => panic!("{path}: {target}: the client was left hanging"),
            Ok(Ok(r)) => panic!("{path}: {target}: a complete answer from a cut body: {r:?}"),
            Ok(Err(_)) => {}
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{path}: {target}: cut after {:?}",
            t.elapsed()
        );
    }
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/fine")).await;
    c.reply("GET").await.expect(200, "GET /fine", path);
    stop(gw).await;
}

/// 27. A client that goes away in the middle of its request body: the upstream connection
///     holding half a request is not reused, so later clients get their own answers (not
///     their request read as the rest of that body).
pub(crate) async fn a_client_gone_mid_body_spoils_nothing(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    for round in 0..4 {
        let mut c = Wire::connect(addr(&gw)).await;
        // Long enough for the next requests to fit in the missing part.
        c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 300\r\n\r\n0123456789")
            .await;
        sleep(Duration::from_millis(20)).await;
        drop(c);
        sleep(Duration::from_millis(20)).await;
        for i in 0..4 {
            let mut c = Wire::connect(addr(&gw)).await;
            let target = format!("/after/{round}/{i}");
            c.send(&get(&target)).await;
            c.reply("GET")
                .await
                .expect(200, &format!("GET {target}"), path);
        }
    }
    stop(gw).await;
}

/// 28. The gateway's counters (`/state`) count the same on both paths: requests, answers by
///     class, each failure kind, per-cluster requests and failures, nothing left in flight.
pub(crate) async fn counters_agree_with_the_answers(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let (closed, _refusing) = refusing();
    let mute = raw_upstream(|mut w, _| async move {
        let _ = w.rd.request().await;
        sleep(Duration::from_secs(2)).await;
        drop(w);
    })
    .await;
    let gw = start(cfg(
        &format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
             [[clusters]]\nname = \"closed\"\nendpoints = [\"{closed}\"]\n\
             [[clusters]]\nname = \"mute\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath_prefix = \"/ok\"\ncluster = \"up\"\n\
             [[routes]]\npath_prefix = \"/closed\"\ncluster = \"closed\"\n\
             [[routes]]\npath_prefix = \"/mute\"\ncluster = \"mute\"\nrequest_timeout_ms = 300\n",
            up.addr, mute.addr
        ),
        fast,
    ));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&[get("/ok/1"), get("/ok/2"), post("/ok/3", "abc")].concat())
        .await;
    c.reply("GET").await.expect(200, "GET /ok/1", path);
    c.reply("GET").await.expect(200, "GET /ok/2", path);
    c.reply("POST").await.expect(200, "POST /ok/3", path);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/nowhere")).await;
    c.reply("GET").await.expect(404, "no route\n", path);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(b"POST /ok/big HTTP/1.1\r\nHost: t\r\nContent-Length: 100001\r\n\r\n")
        .await;
    c.reply("POST")
        .await
        .expect(413, "request body too large\n", path);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/closed")).await;
    c.reply("GET")
        .await
        .expect(502, "upstream connect failed\n", path);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&get("/mute")).await;
    c.reply("GET")
        .await
        .expect(504, "upstream timed out\n", path);

    let want = serde_json::json!({
        "requests": 7, "responses_1xx": 0, "responses_2xx": 3, "responses_3xx": 0,
        "responses_4xx": 2, "responses_5xx": 2, "in_flight": 0, "connections_total": 5,
        "upstream_connect_errors": 1, "upstream_timeouts": 1, "upstream_resets": 0,
        "unrouted": 1, "body_too_large": 1, "rejected": 0,
    });
    let want_clusters = serde_json::json!({
        "up": [3, 0, 0], "closed": [1, 1, 0], "mute": [1, 1, 0],
    });
    let read = || {
        let state = gw.state();
        let all = &state["stats"];
        let mut got = serde_json::Map::new();
        for k in want.as_object().unwrap().keys() {
            got.insert(k.clone(), all[k].clone());
        }
        let mut clusters = serde_json::Map::new();
        for cl in state["clusters"].as_array().unwrap() {
            clusters.insert(
                cl["name"].as_str().unwrap().to_owned(),
                serde_json::json!([cl["requests"], cl["failures"], cl["in_flight"]]),
            );
        }
        (
            serde_json::Value::Object(got),
            serde_json::Value::Object(clusters),
        )
    };
    // Counters are written as answers go out; give the last ones a moment.
    let mut got = read();
    for _ in 0..50 {
        if got == (want.clone(), want_clusters.clone()) {
            break;
        }
        sleep(Duration::from_millis(20)).await;
        got = read();
    }
    assert_eq!(got.0, want, "{path}: gateway counters");
    assert_eq!(
        got.1, want_clusters,
        "{path}: cluster [requests, failures, in_flight]"
    );
    drop(c);
    stop(gw).await;
}

/// 34. An answer that is not HTTP, has a bad length, or two different lengths: 502 with the
///     same message on both paths, and the client connection goes on.
pub(crate) async fn an_invalid_answer_is_a_502(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    for target in [
        "/garbage",
        "/bad-length",
        "/two-lengths",
        "/status-999",
        "/chunk-bad",
    ] {
        c.send(&get(target)).await;
        let r = c.reply("GET").await;
        assert_eq!(
            (r.status(), r.text().as_str()),
            (502, "upstream connection failed\n"),
            "{path}: {target}: {:?}",
            r.head.raw
        );
        c.send(&get("/after")).await;
        c.reply("GET").await.expect(200, "GET /after", path);
    }
    stop(gw).await;
}
