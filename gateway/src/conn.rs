//! One client connection: protocol choice (the HTTP/2 preface on plain TCP, ALPN on TLS),
//! timeouts, graceful close, and *parking* idle HTTP/1.1 connections.
//!
//! Parking: a plain HTTP/1.1 connection with no request in flight and no byte moving for
//! `timeouts.park_ms` is handed back by hyper (`poll_without_shutdown` + `into_parts`) and
//! its read and write buffers (8 KiB each) are freed; the task then only waits for the socket
//! to become readable, and starts a fresh hyper connection on the next byte. Idle keep-alive
//! connections so cost about a socket and a small task, not 20+ KiB. A client that pauses
//! in the middle of a request head is not parked: a fresh hyper connection takes over the bytes
//! read so far at once, and the head must still be complete within `timeouts.header_read_ms`
//! of the pause being noticed (plus one `park_ms`), so a slow client gains no time.

use super::answer::RespBody;
use super::ctx::{ConnCtx, Tracked};
use super::fast;
use super::proxy;
use super::state::Snapshot;
use super::tunnel;
use bytes::{Buf, Bytes, BytesMut};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The future of one request. Boxed because hyper hands an HTTP/1.1 connection back
/// (`poll_without_shutdown`) only when the service's future is `Unpin`.
type HandleFuture = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>>;

/// The proxy as a hyper service for one connection.
#[derive(Debug, Clone)]
struct Svc(Arc<ConnCtx>);

impl hyper::service::Service<Request<Incoming>> for Svc {
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = HandleFuture;

    fn call(&self, req: Request<Incoming>) -> HandleFuture {
        Box::pin(proxy::handle(self.0.clone(), req))
    }
}

/// Bytes read ahead of the protocol choice, replayed before the stream's own.
struct Rewind<T> {
    pre: Option<Bytes>,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(pre) = &mut self.pre {
            let n = pre.len().min(buf.remaining());
            buf.put_slice(&pre[..n]);
            pre.advance(n);
            if pre.is_empty() {
                self.pre = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn h1_builder(snap: &Snapshot) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(snap.header_read_timeout)
        .max_buf_size(snap.config.limits.max_header_bytes)
        .max_headers(snap.config.limits.max_headers)
        // A client that half-closes after its request still gets the answer.
        .half_close(true)
        .keep_alive(true);
    b
}

fn note_error(ctx: &ConnCtx, e: &hyper::Error) {
    if e.is_timeout() {
        ctx.shared.stats.connections_timed_out.incr();
    }
    tracing::debug!(peer = %ctx.peer, error = %e, "client connection ended with an error");
}

/// Waits for shutdown to start.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

enum End {
    Closed,
    Park,
}

/// Drives an HTTP/1.1 connection until it ends, shutdown closes it, it idles past `idle`
/// (closed) or past `park` (parked).
async fn drive_h1<I>(
    conn: &mut http1::Connection<I, Svc>,
    ctx: &ConnCtx,
    shutdown: &mut watch::Receiver<bool>,
    idle: Duration,
    park: Option<Duration>,
) -> End
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut closing = *shutdown.borrow();
    let mut parking = false;
    if closing {
        Pin::new(&mut *conn).graceful_shutdown();
    }
    let step = park.map_or(idle, |p| p.min(idle));
    let sleep = tokio::time::sleep(step);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            // Biased: the connection first, and no random pick on every wake-up.
            biased;
            result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                if let Err(e) = result {
                    note_error(ctx, &e);
                    return End::Closed;
                }
                return if parking && !closing { End::Park } else { End::Closed };
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
            }
            // The connection spent its request budget: its requests in flight finish, then it
            // closes.
            () = ctx.over_budget(), if !closing => {
                closing = true;
                Pin::new(&mut *conn).graceful_shutdown();
            }
            () = &mut sleep, if !closing && !parking => {
                let idle_for = ctx.idle_for();
                // Relaxed: a heuristic; graceful shutdown lets a request that starts now finish.
                let quiet = ctx.in_flight.load(Ordering::Relaxed) == 0;
                if quiet && idle_for >= idle {
                    closing = true;
                    ctx.shared.stats.connections_timed_out.incr();
                    Pin::new(&mut *conn).graceful_shutdown();
                } else if quiet && park.is_some_and(|p| idle_for >= p) {
                    parking = true;
                    Pin::new(&mut *conn).graceful_shutdown();
                } else {
                    let wait = step.saturating_sub(idle_for).max(Duration::from_millis(50));
                    sleep.as_mut().reset(Instant::now() + wait);
                }
            }
        }
    }
}

/// A hyper connection future that can be asked to close gracefully: HTTP/2 (GOAWAY) and
/// HTTP/1.1 with upgrades on.
trait Graceful: Future<Output = Result<(), hyper::Error>> {
    fn close_gracefully(self: Pin<&mut Self>);
}

impl<C: GracefulConnection<Error = hyper::Error>> Graceful for C {
    fn close_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// An HTTP/1.1 connection with upgrades on (see [`tunnel`]).
struct Upgradeable<I>(http1::UpgradeableConnection<I, Svc>);

impl<I> Future for Upgradeable<I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Output = Result<(), hyper::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<I> Graceful for Upgradeable<I>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn close_gracefully(mut self: Pin<&mut Self>) {
        Pin::new(&mut self.0).graceful_shutdown();
    }
}

/// How long a connection told to go away, with nothing in flight, may stay silent (no byte
/// either way) before it is dropped: the time for the client's part of the close (HTTP/2: the
/// acknowledgement of the GOAWAY's PING).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Drives an HTTP/2 connection, or an HTTP/1.1 one with upgrades on, until it ends (or is
/// upgraded), shutdown closes it or it idles past `idle`.
///
/// A graceful close (GOAWAY) waits for the streams in flight, and hyper's HTTP/2 close also
/// for the client to acknowledge the GOAWAY's PING: a client that never does (or that leaves
/// a header block open) held the connection, and its descriptor, for ever. So once closing,
/// the connection is dropped as soon as no request is in flight and no byte has moved for
/// [`CLOSE_GRACE`]; an answer still streaming keeps bytes moving, and finishes.
async fn drive_graceful<C: Graceful>(
    mut conn: Pin<&mut C>,
    ctx: &ConnCtx,
    shutdown: &mut watch::Receiver<bool>,
    idle: Duration,
) {
    let mut closing = false;
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    let close = |conn: Pin<&mut C>, sleep: Pin<&mut tokio::time::Sleep>| {
        conn.close_gracefully();
        sleep.reset(Instant::now() + CLOSE_GRACE);
        true
    };
    if *shutdown.borrow() {
        closing = close(conn.as_mut(), sleep.as_mut());
    }
    loop {
        tokio::select! {
            // Biased: see `drive_h1`.
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    note_error(ctx, &e);
                }
                return;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = close(conn.as_mut(), sleep.as_mut());
                }
            }
            // The connection spent its request budget: GOAWAY, and its streams in flight
            // finish.
            () = ctx.over_budget(), if !closing => {
                closing = close(conn.as_mut(), sleep.as_mut());
            }
            () = &mut sleep => {
                let idle_for = ctx.idle_for();
                // Relaxed: see `drive_h1`.
                let quiet = ctx.in_flight.load(Ordering::Relaxed) == 0;
                if closing {
                    if quiet && idle_for >= CLOSE_GRACE {
                        // The client had its time to finish its part of the close.
                        return;
                    }
                    let wait = CLOSE_GRACE.saturating_sub(idle_for).max(Duration::from_millis(50));
                    sleep.as_mut().reset(Instant::now() + wait);
                } else if idle_for >= idle && quiet {
                    ctx.shared.stats.connections_timed_out.incr();
                    closing = close(conn.as_mut(), sleep.as_mut());
                } else {
                    let wait = idle.saturating_sub(idle_for).max(Duration::from_millis(50));
                    sleep.as_mut().reset(Instant::now() + wait);
                }
            }
        }
    }
}

async fn serve_h2<I>(io: I, ctx: &Arc<ConnCtx>, shutdown: &mut watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snap = ctx.shared.current.load_full();
    let idle = snap.idle_timeout;
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        // WebSockets over HTTP/2 (RFC 8441; see `tunnel.rs`).
        .enable_connect_protocol()
        .max_header_list_size(
            u32::try_from(snap.config.limits.max_header_bytes).unwrap_or(u32::MAX),
        );
    drop(snap);
    let conn = b.serve_connection(TokioIo::new(io), Svc(ctx.clone()));
    tokio::pin!(conn);
    drive_graceful(conn, ctx, shutdown, idle).await;
}

/// Reads until the bytes either differ from the HTTP/2 preface or complete it.
async fn sniff(io: &mut Tracked<TcpStream>) -> io::Result<(Bytes, bool)> {
    let mut buf = BytesMut::with_capacity(512);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] {
            return Ok((buf.freeze(), false));
        }
        if n == PREFACE.len() {
            return Ok((buf.freeze(), true));
        }
    }
}

/// Serves a plain-TCP client: h2c by prior knowledge, or HTTP/1.1 with parking.
pub(super) async fn serve_plain(
    io: Tracked<TcpStream>,
    ctx: Arc<ConnCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut io = io;
    let first_bytes = ctx.shared.current.load().header_read_timeout;
    let (pre, h2) = match tokio::time::timeout(first_bytes, sniff(&mut io)).await {
        Ok(Ok(x)) => x,
        Ok(Err(_)) => return,
        Err(_) => {
            ctx.shared.stats.connections_timed_out.incr();
            return;
        }
    };
    let mut io = Rewind {
        pre: Some(pre),
        inner: io,
    };
    if h2 {
        // Boxed: the HTTP/2 state is large and would size every HTTP/1.1 connection's task.
        Box::pin(serve_h2(io, &ctx, &mut shutdown)).await;
        return;
    }
    // When a pause in the middle of a request head was first seen.
    let mut head_started: Option<Instant> = None;
    // Whether the next request may take the fast path (not while hyper is in a head).
    let mut fast_ok = true;
    loop {
        if fast_ok && ctx.shared.current.load().config.server.h1_fast_path {
            let pre = io.pre.take().unwrap_or_default();
            // Boxed so that a parked connection's task keeps no room for it.
            match Box::pin(fast::serve(&mut io.inner.inner, &ctx, pre)).await {
                fast::Outcome::Closed => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    return;
                }
                fast::Outcome::Idle => {
                    if *shutdown.borrow() {
                        return;
                    }
                    let (idle, park) = {
                        let snap = ctx.shared.current.load();
                        (snap.idle_timeout, snap.park_timeout)
                    };
                    let idle_for = ctx.idle_for();
                    if idle_for >= idle {
                        ctx.shared.stats.connections_timed_out.incr();
                        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                        return;
                    }
                    if idle_for >= park.min(idle)
                        && !park_until_readable(&io, &ctx, &mut shutdown).await
                    {
                        return;
                    }
                    continue;
                }
                fast::Outcome::Hyper(rest) => {
                    io.pre = Some(rest);
                    ctx.touch();
                }
            }
        }
        fast_ok = true;
        let snap = ctx.shared.current.load_full();
        let (idle, park, header_read) = (
            snap.idle_timeout,
            snap.park_timeout,
            snap.header_read_timeout,
        );
        let builder = h1_builder(&snap);
        drop(snap);
        if io.pre.as_deref().is_some_and(tunnel::head_asks_upgrade) {
            // An upgrade (a WebSocket handshake) on its way: hyper serves the connection with
            // upgrades on, and it is never parked.
            ctx.set_upgradeable();
            let conn = Upgradeable(
                builder
                    .serve_connection(TokioIo::new(io), Svc(ctx.clone()))
                    .with_upgrades(),
            );
            tokio::pin!(conn);
            Box::pin(drive_graceful(conn, &ctx, &mut shutdown, idle)).await;
            return;
        }
        // Boxed so that a parked connection's task keeps no room for it.
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), Svc(ctx.clone())));
        // Boxed too: a parked task then keeps room only for its socket and timers.
        let end = Box::pin(drive_h1(&mut conn, &ctx, &mut shutdown, idle, Some(park))).await;
        let parts = conn.into_parts();
        io = parts.io.into_inner();
        match end {
            End::Closed => {
                let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                return;
            }
            End::Park if !parts.read_buf.is_empty() => {
                // Paused mid-head: carry the partial head into a new hyper connection now,
                // keeping the header-read deadline of the first pause.
                let started = *head_started.get_or_insert_with(|| Instant::now() - park);
                if started.elapsed() >= header_read {
                    ctx.shared.stats.connections_timed_out.incr();
                    return;
                }
                io.pre = Some(parts.read_buf);
                fast_ok = false;
                continue;
            }
            End::Park => head_started = None,
        }
        drop(parts.read_buf);
        if !park_until_readable(&io, &ctx, &mut shutdown).await {
            return;
        }
    }
}

/// Waits, parked, for an idle connection's next byte; `false` when it is to close instead
/// (idle timeout, shutdown).
async fn park_until_readable(
    io: &Rewind<Tracked<TcpStream>>,
    ctx: &ConnCtx,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let idle = ctx.shared.current.load().idle_timeout;
    let idle_left = idle.saturating_sub(ctx.idle_for());
    let stats = &ctx.shared.stats;
    stats.connections_parked.incr();
    let woken = tokio::select! {
        ready = io.inner.inner.readable() => ready.is_ok(),
        () = tokio::time::sleep(idle_left) => {
            stats.connections_timed_out.incr();
            false
        }
        () = stopping(shutdown) => false,
    };
    stats.connections_parked.decr();
    woken
}

/// Serves a TLS client: HTTP/2 or HTTP/1.1 as ALPN chose (no parking: rustls keeps its own
/// buffers).
pub(super) async fn serve_tls(
    io: Tracked<TcpStream>,
    acceptor: TlsAcceptor,
    ctx: Arc<ConnCtx>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limit = ctx.shared.current.load().header_read_timeout;
    let tls = match tokio::time::timeout(limit, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %ctx.peer, error = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            ctx.shared.stats.connections_timed_out.incr();
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(tls, &ctx, &mut shutdown).await;
        return;
    }
    let snap = ctx.shared.current.load_full();
    let idle = snap.idle_timeout;
    let builder = h1_builder(&snap);
    drop(snap);
    // No parking on TLS: upgrades are always on.
    ctx.set_upgradeable();
    let conn = Upgradeable(
        builder
            .serve_connection(TokioIo::new(tls), Svc(ctx.clone()))
            .with_upgrades(),
    );
    tokio::pin!(conn);
    drive_graceful(conn, &ctx, &mut shutdown, idle).await;
}
