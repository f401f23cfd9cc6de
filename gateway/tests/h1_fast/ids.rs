//! Request ids (`server.request_id_header`, `server.trust_request_id`) on both HTTP/1.1
//! paths: what the upstream receives, what the gateway's own answers carry.

use crate::common::*;
use crate::upstreams::*;
// `get` here builds raw request bytes; it is not `common::get` (a GET through hyper).
use crate::upstreams::get;
use crate::wire::*;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// The standard upstream, recording every `x-request-id` value it receives (all of them, in
/// order, per request).
async fn id_upstream() -> (RawUp, Arc<Mutex<Vec<Vec<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let up = raw_upstream(move |mut w, _| {
        let log = log.clone();
        async move {
            while let Ok(Some(req)) = w.rd.request().await {
                let ids = req.head.all("x-request-id").into_iter().map(str::to_owned);
                log.lock().unwrap().push(ids.collect());
                let (bytes, close) = answer(&req).await;
                if w.w.write_all(&bytes).await.is_err() || close {
                    return;
                }
            }
        }
    })
    .await;
    (up, seen)
}

fn with_id(target: &str, id: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\nX-Request-Id: {id}\r\n\r\n").into_bytes()
}

fn is_fresh(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 55. By default every forwarded request carries one fresh id (32 hex digits), a different
///     one each time, replacing any the client sent; a local answer (404) carries one too.
pub(crate) async fn every_request_gets_a_fresh_request_id(fast: bool) {
    let path = label(fast);
    let (up, seen) = id_upstream().await;
    let gw = start(cfg(
        &format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
             [[routes]]\npath_prefix = \"/a\"\ncluster = \"up\"\n",
            up.addr
        ),
        fast,
    ));
    let mut c = Wire::connect(addr(&gw)).await;
    c.send(&[get("/a/1"), get("/a/2"), with_id("/a/3", "client-chosen")].concat())
        .await;
    for _ in 0..3 {
        assert_eq!(c.reply("GET").await.status(), 200, "{path}");
    }
    let r = c.send_and_reply(&get("/nowhere"), "GET").await;
    assert_eq!(r.status(), 404, "{path}");
    let local = r.head.get("x-request-id").unwrap_or_default().to_owned();
    assert!(is_fresh(&local), "{path}: the 404's id {local:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{path}: {seen:?}");
    for ids in &seen {
        assert_eq!(ids.len(), 1, "{path}: one id a request: {seen:?}");
        assert!(is_fresh(&ids[0]), "{path}: {seen:?}");
    }
    let mut all: Vec<&String> = seen.iter().map(|ids| &ids[0]).chain([&local]).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "{path}: ids repeat: {seen:?} {local}");
    stop(gw).await;
}

/// 56. With `trust_request_id`, a well-formed id from the client is kept (upstream and on a
///     local answer); one that is not visible ASCII is replaced. With the field name empty,
///     ids are off and the client's field passes as any other.
pub(crate) async fn a_trusted_request_id_is_kept(fast: bool) {
    let path = label(fast);
    let (up, seen) = id_upstream().await;
    let routes = format!(
        "[[clusters]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[routes]]\npath_prefix = \"/a\"\ncluster = \"up\"\n",
        up.addr
    );
    let mut config = cfg(&routes, fast);
    config.server.trust_request_id = true;
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send_and_reply(&with_id("/a/1", "abc-123"), "GET")
        .await
        .expect(200, "GET /a/1", path);
    c.send_and_reply(&with_id("/a/2", "has space"), "GET").await;
    let r = c
        .send_and_reply(&with_id("/nowhere", "lost-42"), "GET")
        .await;
    assert_eq!(r.status(), 404, "{path}");
    assert_eq!(r.head.get("x-request-id"), Some("lost-42"), "{path}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], ["abc-123"], "{path}");
        assert_eq!(seen[1].len(), 1, "{path}: {seen:?}");
        assert!(is_fresh(&seen[1][0]), "{path}: {seen:?}");
    }
    stop(gw).await;

    let mut config = cfg(&routes, fast);
    config.server.request_id_header = String::new();
    let gw = start(config);
    let mut c = Wire::connect(addr(&gw)).await;
    c.send_and_reply(&get("/a/3"), "GET").await;
    c.send_and_reply(&with_id("/a/4", "as-is"), "GET").await;
    let r = c.send_and_reply(&get("/nowhere"), "GET").await;
    assert_eq!(r.head.get("x-request-id"), None, "{path}: ids off");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[2..], [vec![], vec!["as-is".to_owned()]], "{path}");
    stop(gw).await;
}
