//! Listeners and client connections: bind (with `SO_REUSEPORT` for thread-per-core), accept,
//! optional TLS, HTTP/1.1 and HTTP/2 on one port, idle and header-read timeouts, and graceful
//! close when shutdown starts.

use super::proxy;
use super::state::Shared;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// Binds a listening socket. With `reuse_port`, several sockets (one per worker) may bind the
/// same address and the kernel spreads connections over them.
///
/// # Errors
/// The socket calls' errors.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Per-connection state shared by its requests.
#[derive(Debug)]
pub struct ConnCtx {
    /// Gateway state.
    pub shared: Arc<Shared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Requests of this connection in flight.
    pub in_flight: AtomicUsize,
    /// Milliseconds since `opened` of the last byte read or written.
    last_active_ms: AtomicU64,
    opened: Instant,
}

impl ConnCtx {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        // Relaxed: only this connection's idle check reads it, and a stale value only delays
        // an idle close by one check.
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        // Relaxed: see `touch`.
        let last = self.last_active_ms.load(Ordering::Relaxed);
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// An I/O stream that records when bytes last moved, for the idle timeout.
struct Tracked<T> {
    inner: T,
    ctx: Arc<ConnCtx>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.ctx.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.ctx.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.ctx.touch();
        }
        r
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

/// Accepts connections until shutdown starts, serving each on its own task tracked by
/// `tracker` (which shutdown waits on to drain).
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    tracker: TaskTracker,
) {
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(serve(stream, peer, tls.clone(), shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // Out of descriptors or a connection reset in the backlog: back off a
                    // little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => break,
        }
    }
    // Dropping the listener here stops accepting.
}

struct OpenConn<'a>(&'a Shared);

impl Drop for OpenConn<'_> {
    fn drop(&mut self) {
        self.0.stats.connections_open.decr();
    }
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    shared.stats.connections_total.incr();
    shared.stats.connections_open.incr();
    let _open = OpenConn(&shared);
    let ctx = Arc::new(ConnCtx {
        shared: shared.clone(),
        peer,
        tls: tls.is_some(),
        in_flight: AtomicUsize::new(0),
        last_active_ms: AtomicU64::new(0),
        opened: Instant::now(),
    });
    let io = Tracked {
        inner: stream,
        ctx: ctx.clone(),
    };
    match tls {
        None => run(TokioIo::new(io), ctx, shutdown).await,
        Some(acceptor) => {
            let limit = shared.current.load().header_read_timeout;
            match tokio::time::timeout(limit, acceptor.accept(io)).await {
                Ok(Ok(tls_stream)) => run(TokioIo::new(tls_stream), ctx, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => {
                    shared.stats.connections_timed_out.incr();
                    tracing::debug!(%peer, "tls handshake timed out");
                }
            }
        }
    }
}

async fn run<I>(io: I, ctx: Arc<ConnCtx>, mut shutdown: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let snap = ctx.shared.current.load_full();
    let limits = &snap.config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(snap.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let idle = snap.idle_timeout;
    drop(snap);
    let svc_ctx = ctx.clone();
    let service = hyper::service::service_fn(move |req| proxy::handle(svc_ctx.clone(), req));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    let timed_out = e
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(hyper::Error::is_timeout);
                    if timed_out {
                        ctx.shared.stats.connections_timed_out.incr();
                    }
                    tracing::debug!(peer = %ctx.peer, error = %e, "client connection ended with an error");
                }
                break;
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = &mut sleep, if !closing => {
                let idle_for = ctx.idle_for();
                // Relaxed: a heuristic; a request that starts just now finishes anyway, since
                // graceful shutdown lets in-flight requests complete.
                if idle_for >= idle && ctx.in_flight.load(Ordering::Relaxed) == 0 {
                    closing = true;
                    ctx.shared.stats.connections_timed_out.incr();
                    conn.as_mut().graceful_shutdown();
                } else {
                    let wait = idle.saturating_sub(idle_for).max(Duration::from_millis(50));
                    sleep.as_mut().reset(Instant::now() + wait);
                }
            }
        }
    }
}
