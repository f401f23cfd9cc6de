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
//! is forwarded as a plain request, its `Upgrade` field dropped. HTTP/2 extended CONNECT
//! (RFC 8441) is not supported yet.

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
    if req.version() != Version::HTTP_11 || !ctx.upgradeable() || !asks_upgrade(req.headers()) {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?.clone();
    Some(Upgrade {
        protocol,
        client: hyper::upgrade::on(req),
    })
}

/// Puts back the fields that ask for the upgrade (dropped with the other hop-by-hop fields).
pub(crate) fn restore(headers: &mut HeaderMap, upgrade: &Upgrade) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade.protocol.clone());
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
        return resp;
    }
    let upstream = hyper::upgrade::on(&mut resp);
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
