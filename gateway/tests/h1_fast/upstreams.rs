//! Upstreams and gateway configs: scripted raw upstreams, the standard one ([`answer`]), and
//! the request and config builders the scenarios share.

use crate::common::config;
use crate::wire::{Req, Wire};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::sleep;
use tollgate_gateway::config::Config;

/// A scripted upstream: each accepted connection runs `script(wire, index)`.
pub(crate) struct RawUp {
    pub(crate) addr: SocketAddr,
    pub(crate) accepted: Arc<AtomicUsize>,
}

impl RawUp {
    pub(crate) fn accepted(&self) -> usize {
        // Relaxed: a count read after the exchanges it counts have completed.
        self.accepted.load(Ordering::Relaxed)
    }
}

pub(crate) async fn raw_upstream<F, Fut>(script: F) -> RawUp
where
    F: Fn(Wire, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let script = Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            // Relaxed: a statistic, read after the fact.
            let n = count.fetch_add(1, Ordering::Relaxed);
            let script = script.clone();
            tokio::spawn(async move { script(Wire::new(s), n).await });
        }
    });
    RawUp { addr, accepted }
}

/// 1 MiB of a pattern, for large bodies.
pub(crate) fn big_body() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i % 251) as u8).collect()
}

/// A 200 with a `Content-Length` body.
pub(crate) fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

pub(crate) const CHUNKED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
Trailer: x-checksum\r\n\r\n5\r\nhello\r\n1\r\n \r\n5;ext=1\r\nworld\r\n10\r\n, and sixteen!!!\r\n\
0\r\nx-checksum: abc\r\n\r\n";
pub(crate) const CHUNKED_BODY: &str = "hello world, and sixteen!!!";

pub(crate) const CLOSE_DELIMITED: &str = "no length: this body ends when the upstream closes\n";

/// What the standard upstream answers, by target:
/// - `HEAD *`: `Content-Length: 100` (`Transfer-Encoding: chunked` for `*/chunked`), no body;
/// - `/echo*`: the request body;
/// - `/slow*`: after 100 ms, the request line;
/// - `/chunked`: [`CHUNKED_RESPONSE`];
/// - `/big-chunked`, `/big`: [`big_body`], in chunks of varying sizes or with a length;
/// - `/no-reason`: `HTTP/1.1 299` with no reason phrase, body `ok`;
/// - `/te-and-cl`: both `Content-Length: 3` and a chunked `hello`;
/// - `/garbage`, `/bad-length`, `/two-lengths`: not a valid answer, then it closes;
/// - `/short`, `/chunked-cut`: 10 of 100 bytes, or one chunk, then it closes;
/// - `/close`: [`CLOSE_DELIMITED`] with no length, then it closes;
/// - `/204`, `/304`: those, bodiless (the 304 with `Content-Length: 100`);
/// - `/204-length`: a 204 with `Content-Length: 5` (which it must not send), bodiless;
/// - `/status-999`: a status past 599, then it closes;
/// - `/chunk-bad`: a chunked 200 whose first chunk-size line is `zz`, then it closes;
/// - `/early-hints`: a 103, then `200 hints`;
/// - `/hop`: connection-scoped response headers, and the request head it read as the body;
/// - `/big-head`: a 30 000-byte `X-Big` header, and the length of the request's `X-Big`;
/// - `/two-connection-headers`: `Connection: keep-alive` and `Connection: x-private2` (two
///   fields) with `X-Private2: 1`, and the request head it read as the body;
/// - `/many-tokens`: `Connection` naming nine headers, which it sends, and `X-Kept: yes`;
/// - `/dribble/<any of these>`: the same, written one byte at a time ([`serve`]);
/// - anything else: the request line (`GET /x`).
///
/// Returns the bytes to write and whether to close afterwards.
pub(crate) async fn answer(req: &Req) -> (Vec<u8>, bool) {
    let target = req.head.target();
    let target = target.strip_prefix("/dribble").unwrap_or(target);
    if req.head.first.starts_with("HEAD ") {
        let framing = if target.ends_with("/chunked") {
            "Transfer-Encoding: chunked"
        } else {
            "Content-Length: 100"
        };
        return (
            format!("HTTP/1.1 200 OK\r\n{framing}\r\n\r\n").into_bytes(),
            false,
        );
    }
    if target.starts_with("/echo") {
        return (ok(&req.body), false);
    }
    if target.starts_with("/slow") {
        sleep(Duration::from_millis(100)).await;
    }
    match target {
        "/chunked" => (CHUNKED_RESPONSE.to_vec(), false),
        "/big-chunked" => {
            let body = big_body();
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            // Chunks of varying sizes, so chunk boundaries fall anywhere in the reads.
            let mut at = 0;
            for size in (1..).map(|i| (i * 7919) % 9000 + 1) {
                let end = (at + size).min(body.len());
                out.extend_from_slice(format!("{:x}\r\n", end - at).as_bytes());
                out.extend_from_slice(&body[at..end]);
                out.extend_from_slice(b"\r\n");
                at = end;
                if at == body.len() {
                    break;
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
            (out, false)
        }
        "/big" => (ok(&big_body()), false),
        "/te-and-cl" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            false,
        ),
        "/garbage" => (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), true),
        "/bad-length" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nabc".to_vec(),
            true,
        ),
        "/two-lengths" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            true,
        ),
        "/no-reason" => (
            b"HTTP/1.1 299\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            false,
        ),
        "/short" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
            true,
        ),
        "/chunked-cut" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
            true,
        ),
        "/close" => (
            format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{CLOSE_DELIMITED}")
                .into_bytes(),
            true,
        ),
        "/204" => (
            b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n".to_vec(),
            false,
        ),
        "/204-length" => (
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".to_vec(),
            false,
        ),
        "/chunk-bad" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            true,
        ),
        "/status-999" => (
            b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            true,
        ),
        "/304" => (
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 100\r\n\r\n".to_vec(),
            false,
        ),
        "/early-hints" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints"
                .to_vec(),
            false,
        ),
        "/hop" => {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\n\
                 Keep-Alive: timeout=5\r\nX-End: kept\r\nContent-Length: {}\r\n\r\n",
                req.head.raw.len()
            )
            .into_bytes();
            out.extend_from_slice(req.head.raw.as_bytes());
            (out, false)
        }
        "/big-head" => {
            let seen = req.head.get("x-big").map_or(0, str::len);
            let body = format!("x-big {seen}");
            let big = "b".repeat(30_000);
            let out = format!(
                "HTTP/1.1 200 OK\r\nX-Big: {big}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            (out.into_bytes(), false)
        }
        "/two-connection-headers" => {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: x-private2\r\n\
                 X-Private2: 1\r\nContent-Length: {}\r\n\r\n",
                req.head.raw.len()
            )
            .into_bytes();
            out.extend_from_slice(req.head.raw.as_bytes());
            (out, false)
        }
        "/many-tokens" => {
            let names: Vec<String> = (1..=9).map(|i| format!("x-named-{i}")).collect();
            let mut out = format!("HTTP/1.1 200 OK\r\nConnection: {}\r\n", names.join(", "));
            for n in &names {
                out.push_str(&format!("{n}: 1\r\n"));
            }
            out.push_str("X-Kept: yes\r\nContent-Length: 4\r\n\r\nmany");
            (out.into_bytes(), false)
        }
        _ => (ok(req.head.request_line().as_bytes()), false),
    }
}

/// Serves [`answer`] on one connection until the peer closes; targets under `/dribble` are
/// written one byte per millisecond.
pub(crate) async fn serve(mut w: Wire) {
    while let Ok(Some(req)) = w.rd.request().await {
        let (bytes, close) = answer(&req).await;
        let written = if req.head.target().starts_with("/dribble") {
            dribble(&mut w.w, &bytes).await
        } else {
            w.w.write_all(&bytes).await
        };
        if written.is_err() || close {
            return;
        }
    }
}

/// Writes `bytes` one at a time, 1 ms apart.
pub(crate) async fn dribble(w: &mut OwnedWriteHalf, bytes: &[u8]) -> io::Result<()> {
    for b in bytes {
        w.write_all(std::slice::from_ref(b)).await?;
        sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The standard upstream: [`answer`] on every connection.
pub(crate) async fn app_upstream() -> RawUp {
    raw_upstream(|w, _| serve(w)).await
}

/// The test config with `rest`, on the fast path or hyper's; on a layered run (see
/// [`crate::LAYERED`]) every cluster gets a balancer with its defaults.
pub(crate) fn cfg(rest: &str, fast: bool) -> Config {
    let mut c = config(rest);
    c.server.h1_fast_path = fast;
    if let Some(layers) = crate::layers() {
        for cluster in &mut c.clusters {
            cluster
                .balance
                .get_or_insert_with(|| toml::from_str("").expect("balance defaults"));
            if layers == crate::Layers::Retry {
                cluster
                    .retry
                    .get_or_insert_with(|| toml::from_str("attempts = 0").expect("no retries"));
            }
        }
        if layers == crate::Layers::RouteRetry {
            for route in &mut c.routes {
                route
                    .retry
                    .get_or_insert_with(|| toml::from_str("attempts = 0").expect("no retries"));
            }
        }
    }
    c
}

pub(crate) fn label(fast: bool) -> &'static str {
    match (fast, crate::layered()) {
        (true, false) => "fast path",
        (false, false) => "hyper path",
        (true, true) if crate::layers() == Some(crate::Layers::Retry) => {
            "layered route with retries, fast path"
        }
        (true, true) if crate::layers() == Some(crate::Layers::RouteRetry) => {
            "layered route as http requests, fast path"
        }
        (true, true) => "layered route, fast path",
        (false, true) => "layered route, hyper path",
    }
}

pub(crate) fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

pub(crate) fn post(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The standard upstream ([`answer`]), recording every request line it reads.
pub(crate) async fn logging_upstream() -> (RawUp, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let up = raw_upstream(move |mut w, _| {
        let log = log.clone();
        async move {
            while let Ok(Some(req)) = w.rd.request().await {
                log.lock().unwrap().push(req.head.first.clone());
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
