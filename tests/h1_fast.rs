//! HTTP/1.1 wire scenarios for plain routes, run on both of the gateway's HTTP/1.1 paths:
//! its own fast path (`[server] h1_fast_path = true`, the default) and hyper's
//! (`h1_fast_path = false`). Every scenario is one `async fn scenario(fast: bool)`;
//! [`on_both_paths!`] turns it into `scenario::fast_path` and `scenario::hyper_path` tests,
//! so `cargo test --test h1_fast fast_path` runs one path.
//!
//! The client and the upstreams are raw sockets driven byte by byte ([`Wire`],
//! [`raw_upstream`]), so the tests see exactly what crosses the wire:
//!
//! - **Framing:** pipelined requests (2 to 300 in one write, bodies of many sizes, a request
//!   hyper must take in the middle) answered complete and in order; answers framed by
//!   `Content-Length`, by chunks (extensions, trailers, 1 MiB in uneven chunks), by the
//!   upstream closing, or not at all (HEAD, 204, 304); answers and requests dribbled one byte
//!   per millisecond; `Transfer-Encoding` with `Content-Length`; invalid answers (502).
//! - **Bodies:** 1 MiB up and back byte-exact, bodies sent in pieces, chunked request bodies,
//!   `Expect: 100-continue`, a declared body over the limit (413, and no desync after it), an
//!   upstream answering before it read the body.
//! - **Connections:** client `Connection: close`, HTTP/1.0, half-close; upstreams that close
//!   pooled connections, say `Connection: close`, answer as HTTP/1.0, send bytes past an
//!   answer, close on a request unanswered (retried only when idempotent), stall or die in
//!   the middle of a body; clients gone mid-body or mid-answer; 200 keep-alive requests and 16
//!   concurrent clients over pooled connections; shutdown with an answer in flight.
//! - **Headers:** hop-by-hop fields both ways (also named in a second `Connection` field, or
//!   nine of them), forwarding fields (`X-Forwarded-*`, `Forwarded`, `Via`, `Host`), heads
//!   near and over the limits (431), `103 Early Hints`, routing misses (404) in a pipeline,
//!   refused and mute upstreams (502, 504), and the `/state` counters.
//!
//! A scenario that fails on one path is kept, ignored on that path with the reason (see the
//! list under [`on_both_paths!`]), so the failure is fixed rather than forgotten.
//!
//! Real sockets mean real time: every wait is bounded by [`STEP`] and each test by
//! [`common::bounded`]; the only sleeps are the short pauses a scenario is about.

mod common;

use common::*;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};
use tollgate::gateway::config::Config;

/// The longest any single exchange in these tests may take.
const STEP: Duration = Duration::from_secs(5);

/// Runs each named `async fn(fast: bool)` scenario once per HTTP/1.1 path. A scenario may be
/// followed by `[fast: "reason"]` or `[hyper: "reason"]` to ignore it on that path (a known
/// failure, reported, kept so that it is fixed rather than forgotten).
macro_rules! on_both_paths {
    ($($scenario:ident $([fast: $fast:literal])? $([hyper: $hyper:literal])?),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $fast])?
            async fn fast_path() {
                crate::common::bounded(super::$scenario(true)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            $(#[ignore = $hyper])?
            async fn hyper_path() {
                crate::common::bounded(super::$scenario(false)).await;
            }
        }
    )*};
}

on_both_paths!(
    pipelined_requests_are_answered_in_order,
    response_framing_is_relayed,
    bodiless_answers_leave_the_connection_usable,
    large_and_slow_request_bodies_arrive_intact,
    chunked_request_bodies_and_expect_continue,
    client_connection_close_is_honoured,
    http10_without_host_is_answered,
    upstream_closing_its_connection_is_not_a_502,
    upstream_connection_close_is_not_reused,
    a_stalled_response_body_cuts_the_client,
    early_hints_before_the_final_answer,
    hop_by_hop_and_forwarding_headers,
    an_unrouted_request_inside_a_pipeline,
    refused_and_mute_upstreams,
    many_keep_alive_requests_reuse_upstream_connections,
    bytes_after_a_response_are_not_a_response,
    dribbled_responses_are_relayed,
    dribbled_requests_are_forwarded,
    a_declared_body_too_large_is_413,
    large_heads_both_ways,
    a_second_connection_header_is_honoured,
    many_connection_tokens_in_a_response,
    an_empty_line_before_a_request_is_ignored,
    an_early_answer_before_the_body_is_read,
    a_client_gone_mid_response_spoils_nothing,
    an_upstream_gone_mid_body_is_not_a_whole_body,
    a_client_gone_mid_body_spoils_nothing,
    counters_agree_with_the_answers,
    shutdown_finishes_the_answer_in_flight,
    a_deep_pipeline_in_one_write,
    a_response_with_both_lengths_is_chunked,
    an_invalid_answer_is_a_502,
    an_idempotent_request_dropped_unanswered_is_retried,
    a_post_dropped_unanswered_is_not_replayed,
    methods_targets_and_odd_spacing,
    concurrent_clients_get_their_own_answers,
    pooled_connections_are_shared_and_expire,
    a_repeated_content_length_is_sent_once,
    heads_over_the_limits,
    a_half_closed_client_gets_its_answer,
);

// ---------------------------------------------------------------------------------------------
// The wire: a raw HTTP/1.1 reader and writer for both the client and the upstream side.
// ---------------------------------------------------------------------------------------------

/// A message head: the start line and the header fields in wire order.
#[derive(Debug, Clone)]
struct Head {
    first: String,
    fields: Vec<(String, String)>,
    raw: String,
}

impl Head {
    fn parse(bytes: &[u8]) -> io::Result<Head> {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let mut lines = raw.split("\r\n").filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default().to_owned();
        let mut fields = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, line.to_owned()))?;
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        Ok(Head { first, fields, raw })
    }

    /// Every value of `name` (case-insensitive), in order.
    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }

    /// Whether a comma-separated field `name` lists `token` (case-insensitive).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn chunked(&self) -> bool {
        self.lists("transfer-encoding", "chunked")
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("bad content-length in {:?}", self.raw))
        })
    }

    /// The status code of a response head.
    fn status(&self) -> u16 {
        self.first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {:?}", self.first))
    }

    /// Method and target of a request head, e.g. `GET /a?b`.
    fn request_line(&self) -> String {
        let mut parts = self.first.split(' ');
        format!(
            "{} {}",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        )
    }

    fn target(&self) -> &str {
        self.first.split(' ').nth(1).unwrap_or_default()
    }
}

/// A response as the client read it.
#[derive(Debug)]
struct Resp {
    head: Head,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
}

impl Resp {
    fn status(&self) -> u16 {
        self.head.status()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and the body.
    #[track_caller]
    fn expect(&self, status: u16, body: &str, path: &str) {
        assert_eq!(
            (self.status(), self.text().as_str()),
            (status, body),
            "{path}: head {:?}",
            self.head.raw
        );
    }
}

/// A request as the upstream read it.
#[derive(Debug)]
struct Req {
    head: Head,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn eof() -> io::Error {
    io::ErrorKind::UnexpectedEof.into()
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The read side of a connection, with the bytes read but not yet consumed.
struct Reader {
    r: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    /// Reads more bytes; the peer closing is `UnexpectedEof`.
    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.r.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    /// The next head; `None` when the peer closed cleanly before sending any of it.
    async fn head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let bytes: Vec<u8> = self.buf.drain(..i + 4).collect();
                return Head::parse(&bytes).map(Some);
            }
            match self.fill().await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.buf.is_empty() => {
                    return Ok(None);
                }
                r => r?,
            }
        }
    }

    /// A chunked body: its data and its trailer fields.
    async fn chunked(&mut self) -> io::Result<(Vec<u8>, Vec<(String, String)>)> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let line = self.line().await?;
                    if line.is_empty() {
                        return Ok((body, trailers));
                    }
                    let (n, v) = line
                        .split_once(':')
                        .ok_or_else(|| invalid(format!("bad trailer {line:?}")))?;
                    trailers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
            }
            body.extend(self.take(size).await?);
            if self.take(2).await? != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    /// Everything until the peer closes.
    async fn until_close(&mut self) -> io::Result<Vec<u8>> {
        loop {
            match self.fill().await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(std::mem::take(&mut self.buf));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One response (informational ones included) to a request with `method`.
    async fn response(&mut self, method: &str) -> io::Result<Resp> {
        let head = self.head().await?.ok_or_else(eof)?;
        let status = head.status();
        let bodiless =
            (100..200).contains(&status) || status == 204 || status == 304 || method == "HEAD";
        let (body, trailers) = if bodiless {
            (Vec::new(), Vec::new())
        } else if head.chunked() {
            self.chunked().await?
        } else if let Some(n) = head.content_length() {
            (self.take(n).await?, Vec::new())
        } else {
            (self.until_close().await?, Vec::new())
        };
        Ok(Resp {
            head,
            body,
            trailers,
        })
    }

    /// The final response to a request with `method`, informational ones skipped.
    async fn final_response(&mut self, method: &str) -> io::Result<Resp> {
        loop {
            let r = self.response(method).await?;
            if !(100..200).contains(&r.status()) || r.status() == 101 {
                return Ok(r);
            }
        }
    }

    /// The next request; `None` when the peer closed between requests.
    async fn request(&mut self) -> io::Result<Option<Req>> {
        let Some(head) = self.head().await? else {
            return Ok(None);
        };
        let body = if head.chunked() {
            self.chunked().await?.0
        } else if let Some(n) = head.content_length() {
            self.take(n).await?
        } else {
            Vec::new()
        };
        Ok(Some(Req { head, body }))
    }
}

/// A raw connection: client to gateway, or gateway to a scripted upstream.
struct Wire {
    rd: Reader,
    w: OwnedWriteHalf,
}

impl Wire {
    fn new(s: TcpStream) -> Wire {
        // Small writes go out as they are (the dribbling scenarios rely on it).
        s.set_nodelay(true).expect("nodelay");
        let (r, w) = s.into_split();
        Wire {
            rd: Reader { r, buf: Vec::new() },
            w,
        }
    }

    async fn connect(addr: SocketAddr) -> Wire {
        Wire::new(TcpStream::connect(addr).await.expect("gateway accepts"))
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("write");
    }

    /// The final response to a request with `method`, within [`STEP`].
    async fn reply(&mut self, method: &str) -> Resp {
        timeout(STEP, self.rd.final_response(method))
            .await
            .unwrap_or_else(|_| panic!("no response within {STEP:?}"))
            .unwrap_or_else(|e| panic!("incomplete response: {e}"))
    }

    /// Writes `bytes` while reading the final response (for bodies larger than the socket
    /// buffers).
    async fn send_and_reply(&mut self, bytes: &[u8], method: &str) -> Resp {
        let (written, resp) = timeout(STEP, async {
            tokio::join!(self.w.write_all(bytes), self.rd.final_response(method))
        })
        .await
        .unwrap_or_else(|_| panic!("no response within {STEP:?}"));
        written.expect("request written");
        resp.unwrap_or_else(|e| panic!("incomplete response: {e}"))
    }

    /// Asserts the peer closes (EOF or reset) within [`STEP`], sending nothing more.
    async fn expect_closed(&mut self, path: &str) {
        let r = timeout(STEP, self.rd.fill())
            .await
            .unwrap_or_else(|_| panic!("{path}: connection still open after {STEP:?}"));
        assert!(
            r.is_err(),
            "{path}: bytes after the last response: {:?}",
            String::from_utf8_lossy(&self.rd.buf)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Upstreams and gateway configs.
// ---------------------------------------------------------------------------------------------

/// A scripted upstream: each accepted connection runs `script(wire, index)`.
struct RawUp {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl RawUp {
    fn accepted(&self) -> usize {
        // Relaxed: a count read after the exchanges it counts have completed.
        self.accepted.load(Ordering::Relaxed)
    }
}

async fn raw_upstream<F, Fut>(script: F) -> RawUp
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
fn big_body() -> Vec<u8> {
    (0..1usize << 20).map(|i| (i % 251) as u8).collect()
}

/// A 200 with a `Content-Length` body.
fn ok(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

const CHUNKED_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
Trailer: x-checksum\r\n\r\n5\r\nhello\r\n1\r\n \r\n5;ext=1\r\nworld\r\n10\r\n, and sixteen!!!\r\n\
0\r\nx-checksum: abc\r\n\r\n";
const CHUNKED_BODY: &str = "hello world, and sixteen!!!";

const CLOSE_DELIMITED: &str = "no length: this body ends when the upstream closes\n";

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
async fn answer(req: &Req) -> (Vec<u8>, bool) {
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
async fn serve(mut w: Wire) {
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
async fn dribble(w: &mut OwnedWriteHalf, bytes: &[u8]) -> io::Result<()> {
    for b in bytes {
        w.write_all(std::slice::from_ref(b)).await?;
        sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// The standard upstream: [`answer`] on every connection.
async fn app_upstream() -> RawUp {
    raw_upstream(|w, _| serve(w)).await
}

/// The test config with `rest`, on the fast path or hyper's.
fn cfg(rest: &str, fast: bool) -> Config {
    let mut c = config(rest);
    c.server.h1_fast_path = fast;
    c
}

fn label(fast: bool) -> &'static str {
    if fast { "fast path" } else { "hyper path" }
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

fn post(target: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.
// ---------------------------------------------------------------------------------------------

/// 1. Two, then three (one a POST with a body) requests in one write each; the first is slow
///    upstream, so answering out of order would show.
async fn pipelined_requests_are_answered_in_order(fast: bool) {
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
async fn response_framing_is_relayed(fast: bool) {
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
async fn bodiless_answers_leave_the_connection_usable(fast: bool) {
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

/// 4. A 1 MiB body echoed byte-exact, and a body sent in four pieces 50 ms apart.
async fn large_and_slow_request_bodies_arrive_intact(fast: bool) {
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
async fn chunked_request_bodies_and_expect_continue(fast: bool) {
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

/// 6. `Connection: close` from the client: said back, and the connection closed after.
async fn client_connection_close_is_honoured(fast: bool) {
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
async fn http10_without_host_is_answered(fast: bool) {
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
async fn upstream_closing_its_connection_is_not_a_502(fast: bool) {
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
async fn upstream_connection_close_is_not_reused(fast: bool) {
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

/// 9. The upstream sends 10 of 100 body bytes and stalls: the client connection is cut
///    after about `idle_ms`, with no complete body; the gateway goes on serving.
async fn a_stalled_response_body_cuts_the_client(fast: bool) {
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

/// 10. A `103 Early Hints` before the 200: the client gets the 200 and its body (the 103
///     may be passed on or dropped), and the connection goes on.
async fn early_hints_before_the_final_answer(fast: bool) {
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
async fn hop_by_hop_and_forwarding_headers(fast: bool) {
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

/// 12. An unrouted request between two routed ones in one write: 200, 404, 200 in order.
async fn an_unrouted_request_inside_a_pipeline(fast: bool) {
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

/// 13. A refused upstream is a 502, one that never answers a 504 after the route's timeout;
///     the client connection survives both.
async fn refused_and_mute_upstreams(fast: bool) {
    let path = label(fast);
    // A port that was bound and released: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
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

/// 14. 200 requests on one keep-alive connection, GET and POST in turn: all answered right,
///     over at most a few upstream connections.
async fn many_keep_alive_requests_reuse_upstream_connections(fast: bool) {
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

/// 15. An upstream that sends bytes past the end of a response (a second, unasked-for
///     response, in the same write or a little later): the client gets the right answers,
///     never the extra bytes as the answer to its next request.
async fn bytes_after_a_response_are_not_a_response(fast: bool) {
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
async fn dribbled_responses_are_relayed(fast: bool) {
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
async fn dribbled_requests_are_forwarded(fast: bool) {
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

/// 18. A declared body over `limits.max_body_bytes` is refused with 413 before it is sent;
///     afterwards the connection is either closed or in step (the body is skipped): the next
///     request never gets an answer meant for body bytes.
async fn a_declared_body_too_large_is_413(fast: bool) {
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

/// 19. A 7 000-byte request header (under `max_header_bytes` = 8192) reaches the upstream, and
///     a 30 000-byte response header reaches the client.
async fn large_heads_both_ways(fast: bool) {
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
async fn a_second_connection_header_is_honoured(fast: bool) {
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
async fn many_connection_tokens_in_a_response(fast: bool) {
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

/// 22. An empty line (CRLF) between pipelined requests, as old clients sent after a POST body,
///     is ignored (RFC 9112 §2.2: a server SHOULD ignore at least one).
async fn an_empty_line_before_a_request_is_ignored(fast: bool) {
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

/// 23. The upstream answers (401, `Connection: close`) after reading only the head of a
///     16 MiB upload, and reads nothing more: the client gets the 401 promptly (RFC 9112 §9.5:
///     an early answer ends the request), not a 502 or a 504 after the route timeout.
async fn an_early_answer_before_the_body_is_read(fast: bool) {
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

/// 24. A client that drops its connection in the middle of a 1 MiB answer, or before its
///     answer comes: the upstream connection is not reused with (the rest of) that answer in
///     it, so later clients get their own answers.
async fn a_client_gone_mid_response_spoils_nothing(fast: bool) {
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

/// 25. A client that sends its request and then closes its sending side (half-close, as
///     `nc -N` or a shell script does) still gets the answer.
async fn a_half_closed_client_gets_its_answer(fast: bool) {
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

/// 26. The upstream closes in the middle of a body (10 of 100 bytes, or after one chunk): the
///     client's connection is cut at once, and never looks like a complete answer (no final
///     chunk, no short length).
async fn an_upstream_gone_mid_body_is_not_a_whole_body(fast: bool) {
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
async fn a_client_gone_mid_body_spoils_nothing(fast: bool) {
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
async fn counters_agree_with_the_answers(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
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
        let all = serde_json::to_value(gw.shared().stats.snapshot()).unwrap();
        let mut got = serde_json::Map::new();
        for k in want.as_object().unwrap().keys() {
            got.insert(k.clone(), all[k].clone());
        }
        let mut clusters = serde_json::Map::new();
        for cl in &gw.shared().current.load().clusters {
            let s = &cl.stats;
            clusters.insert(
                cl.name.clone(),
                serde_json::json!([s.requests.sum(), s.failures.sum(), s.in_flight.sum()]),
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

/// 29. Shutdown: the answer in flight is finished and its connection then closed; idle
///     keep-alive connections (fresh and parked) are closed; shutdown ends well within
///     `drain_timeout_ms`.
async fn shutdown_finishes_the_answer_in_flight(fast: bool) {
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

/// 30. 300 requests (GETs and POSTs with bodies of many sizes, 330 KB in all) in one write:
///     every answer, in order (request and body boundaries fall anywhere in the reads).
async fn a_deep_pipeline_in_one_write(fast: bool) {
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

/// 31. A head over `max_header_bytes` (8192 in the test config) or with more than
///     `max_headers` (100) fields gets 431, also right after a request in the same write.
async fn heads_over_the_limits(fast: bool) {
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

/// 32. A request with `Content-Length` twice (same value: valid, RFC 9110 §8.6) reaches the
///     upstream with one `Content-Length`: passing both on invites an upstream that reads the
///     two differently (or refuses them) to disagree with the gateway about the body.
async fn a_repeated_content_length_is_sent_once(fast: bool) {
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

/// 33. A response with both `Transfer-Encoding: chunked` and `Content-Length` is read as
///     chunked (RFC 9112 §6.3) and reaches the client without the contradicting length.
async fn a_response_with_both_lengths_is_chunked(fast: bool) {
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

/// 34. An answer that is not HTTP, has a bad length, or two different lengths: 502 with the
///     same message on both paths, and the client connection goes on.
async fn an_invalid_answer_is_a_502(fast: bool) {
    let path = label(fast);
    let up = app_upstream().await;
    let gw = start(cfg(&single(up.addr, "http1"), fast));
    let mut c = Wire::connect(addr(&gw)).await;
    for target in ["/garbage", "/bad-length", "/two-lengths"] {
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

/// An upstream whose connections answer their first request, then read the second and close
/// without a byte of answer (the keep-alive race: its close crossed the request). Records
/// every request line it read.
async fn dropping_upstream() -> (RawUp, Arc<std::sync::Mutex<Vec<String>>>) {
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
async fn an_idempotent_request_dropped_unanswered_is_retried(fast: bool) {
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
async fn a_post_dropped_unanswered_is_not_replayed(fast: bool) {
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

/// 37. Every method (custom ones too) with and without bodies, an empty POST, a 6 000-byte
///     target with a query, and header fields written without a space or with tabs.
async fn methods_targets_and_odd_spacing(fast: bool) {
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

/// 38. 16 clients at once, 25 requests each (GET and POST), over shared pooled upstream
///     connections: each gets exactly its own answers.
async fn concurrent_clients_get_their_own_answers(fast: bool) {
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
async fn pooled_connections_are_shared_and_expire(fast: bool) {
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
