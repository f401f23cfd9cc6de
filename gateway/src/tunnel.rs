//! HTTP/1.1 upgrades (WebSocket and any other `Upgrade` protocol): the request goes upstream
//! with its `Upgrade` and `Connection: upgrade` fields on a connection of its own; when the
//! upstream answers `101 Switching Protocols`, the client gets the `101` and both connections
//! are joined, bytes copied both ways until either side closes or nothing moves for
//! `timeouts.upgrade_idle_ms`. Any other answer is relayed as it is.
//!
//! An upgrade request passes the route's layers like any request (admission, breaker, pool,
//! balance); the tunnel itself holds no permit once the `101` is out, so long-lived WebSockets
//! do not eat the concurrency the pool learned for requests. `tollgate_upgrades_total` and
//! `tollgate_upgrades_open` count them.
//!
//! Only a client connection that hyper serves with upgrades on can be handed over: every TLS
//! HTTP/1.1 connection, and a plain one whose first request hyper takes is an upgrade (as a
//! browser's WebSocket connection is); an upgrade asked later on a plain keep-alive connection
//! is forwarded as a plain request, its `Upgrade` field dropped.
//!
//! WebSockets over HTTP/2 (RFC 8441): an extended CONNECT with `:protocol = websocket` is
//! routed as the `GET` it becomes and goes to an HTTP/1.1 upstream as the classic handshake
//! (`Upgrade: websocket`, a fresh `Sec-WebSocket-Key`); the upstream's `101` reaches the client
//! as a `200` (without `Sec-WebSocket-Accept`, which RFC 8441 does not use), and the HTTP/2
//! stream and the upstream connection are joined like an HTTP/1.1 tunnel, with the same idle
//! timeout. An upstream that answers the handshake with a `2xx` other than `101` did not
//! switch protocols and the client gets `502` (a `2xx` would mean an open tunnel). Any other
//! `:protocol`, and a plain CONNECT, are refused (405); so is a WebSocket to a batch route or
//! to a cluster that speaks HTTP/2 (the gateway opens no extended CONNECT upstream).

use crate::ctx::ConnCtx;
use crate::state::Shared;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// An upgrade the client asked for: the protocol it named and its half of the connection,
/// available once the `101` is sent.
#[derive(Debug)]
pub(crate) struct Upgrade {
    protocol: HeaderValue,
    client: OnUpgrade,
    /// An HTTP/2 extended CONNECT: the client's side speaks RFC 8441, the upstream's RFC 6455.
    h2: bool,
}

/// Whether `req` is an HTTP/2 extended CONNECT for a WebSocket (RFC 8441).
pub(crate) fn is_h2_websocket<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::CONNECT
        && req.version() == Version::HTTP_2
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Whether a request's fields ask to upgrade: an `Upgrade` field and `upgrade` among
/// `Connection`'s tokens; `values(name)` gives the values of the fields named `name`.
fn fields_ask_upgrade<'a, I>(values: impl Fn(&'static str) -> I) -> bool
where
    I: Iterator<Item = &'a [u8]>,
{
    values("upgrade").next().is_some()
        && values("connection")
            .flat_map(|v| v.split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// Whether `headers` ask to upgrade (see [`fields_ask_upgrade`]).
pub(crate) fn asks_upgrade(headers: &HeaderMap) -> bool {
    fields_ask_upgrade(|name| headers.get_all(name).iter().map(HeaderValue::as_bytes))
}

/// Whether the request head at the start of `bytes` (complete or not) asks to upgrade.
pub(crate) fn head_asks_upgrade(bytes: &[u8]) -> bool {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    if req.parse(bytes).is_err() {
        return false;
    }
    let fields = &*req.headers;
    fields_ask_upgrade(|name| {
        fields
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    })
}

/// The upgrade `req` asks for, when its connection can be handed over.
pub(crate) fn requested<B>(req: &mut Request<B>, ctx: &ConnCtx) -> Option<Upgrade> {
    // The CONNECT became a `GET` when it was routed; its `:protocol` stays as an extension.
    if req.version() == Version::HTTP_2 && req.extensions().get::<hyper::ext::Protocol>().is_some()
    {
        return Some(Upgrade {
            protocol: HeaderValue::from_static("websocket"),
            client: hyper::upgrade::on(req),
            h2: true,
        });
    }
    if req.version() != Version::HTTP_11 || !ctx.upgradeable() || !asks_upgrade(req.headers()) {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?.clone();
    Some(Upgrade {
        protocol,
        client: hyper::upgrade::on(req),
        h2: false,
    })
}

/// Puts back the fields that ask for the upgrade (dropped with the other hop-by-hop fields).
pub(crate) fn restore(headers: &mut HeaderMap, upgrade: &Upgrade) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade.protocol.clone());
    if upgrade.h2 {
        // RFC 8441 has no key; the HTTP/1.1 handshake needs one (RFC 6455 §4.1).
        headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
        if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
    }
}

/// A `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1). Their randomness only
/// keeps caches from replaying a handshake; the request id's generator is plenty.
fn websocket_key() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let fresh = crate::request_id::fresh();
    let mut bytes = [0u8; 16];
    for (b, pair) in bytes.iter_mut().zip(fresh.chunks(2)) {
        let hex = |c: u8| (c as char).to_digit(16).unwrap_or(u32::from(c)) as u8;
        *b = hex(pair[0]).wrapping_shl(4) ^ hex(pair[1]);
    }
    let mut out = [b'='; 24];
    for (i, chunk) in bytes.chunks(3).enumerate() {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (j, b)| n | u32::from(*b) << (16 - 8 * j));
        for k in 0..=chunk.len() {
            out[i * 4 + k] = B64[(n >> (18 - 6 * k) & 63) as usize];
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// Completes an upgrade with the upstream's answer: a `101` starts the tunnel (on its own
/// task) and goes to the client with its `Upgrade` field; anything else goes as it is.
pub(crate) fn finish<B>(
    upgrade: Upgrade,
    mut resp: Response<B>,
    idle: Duration,
    shared: &Arc<Shared>,
) -> Response<B> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // A `2xx` would tell an HTTP/2 client its tunnel is open (RFC 8441 §5): an upstream
        // that did not switch protocols failed the handshake.
        if upgrade.h2 && resp.status().is_success() {
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
        }
        return resp;
    }
    let upstream = hyper::upgrade::on(&mut resp);
    if upgrade.h2 {
        // The stream itself is the tunnel: a `200` to the CONNECT (RFC 8441 §5).
        *resp.status_mut() = StatusCode::OK;
        let headers = resp.headers_mut();
        for name in [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_ACCEPT,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
        tokio::spawn(run(upgrade.client, upstream, idle, shared.clone()));
        return resp;
    }
    let protocol = resp
        .headers()
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or(upgrade.protocol);
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
    tokio::spawn(run(upgrade.client, upstream, idle, shared.clone()));
    resp
}

/// Joins the two upgraded connections until either closes or both idle for `idle`.
async fn run(client: OnUpgrade, upstream: OnUpgrade, idle: Duration, shared: Arc<Shared>) {
    let stats = &shared.stats;
    let (client, upstream) = match tokio::join!(client, upstream) {
        (Ok(c), Ok(u)) => (c, u),
        (c, u) => {
            tracing::debug!(
                client = c.is_ok(),
                upstream = u.is_ok(),
                "upgrade not completed"
            );
            return;
        }
    };
    stats.upgrades_total.incr();
    stats.upgrades_open.incr();
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let client = Active::new(TokioIo::new(client), start, last.clone());
    let upstream = Active::new(TokioIo::new(upstream), start, last.clone());
    let idle_watch = async {
        loop {
            // Relaxed: a heuristic clock of the last byte moved; a stale read only delays the
            // idle close by one check.
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    // Each direction until its reader ends, then the other side's writer is shut down. The
    // tunnel ends with the first direction to end (as nginx does): a side that closed is done
    // with the session, and a half-open tunnel would only wait for the idle timeout.
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut upstream_rd, mut upstream_wr) = tokio::io::split(upstream);
    let up = async {
        let copied = tokio::io::copy(&mut client_rd, &mut upstream_wr).await;
        let _ = upstream_wr.shutdown().await;
        copied
    };
    let down = async {
        let copied = tokio::io::copy(&mut upstream_rd, &mut client_wr).await;
        let _ = client_wr.shutdown().await;
        copied
    };
    tokio::select! {
        copied = up => tracing::debug!(ok = copied.is_ok(), "upgraded connection: client ended"),
        copied = down => tracing::debug!(ok = copied.is_ok(), "upgraded connection: upstream ended"),
        () = idle_watch => tracing::debug!("upgraded connection idle; closing"),
    }
    stats.upgrades_open.decr();
}

/// An I/O stream that records when bytes last moved (ms since `start`) in `last`, shared by
/// both sides of a tunnel.
struct Active<T> {
    inner: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Active<T> {
    fn new(inner: T, start: Instant, last: Arc<AtomicU64>) -> Self {
        Self { inner, start, last }
    }

    fn touch(&self) {
        // Relaxed: see `run`'s idle watch.
        self.last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_16_bytes_in_base64() {
        let a = websocket_key();
        let b = websocket_key();
        assert_ne!(a, b);
        for k in [a, b] {
            let k = k.as_bytes();
            assert_eq!(k.len(), 24, "{k:?}");
            assert_eq!(&k[22..], b"==", "{k:?}");
            assert!(
                k[..22]
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/'),
                "{k:?}"
            );
        }
    }
}
