//! Listeners and client connections: bind (with `SO_REUSEPORT` for thread-per-core), accept,
//! optional TLS, HTTP/1.1 and HTTP/2 on one port, idle and header-read timeouts, and graceful
//! close when shutdown starts.

use super::conn;
use super::headers::Forwarding;
use super::state::Shared;
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
    /// Index of the listener (in config order) that accepted it.
    pub listener: usize,
    /// Forwarding header values for this client.
    pub forwarding: Forwarding,
    /// Requests of this connection in flight.
    pub in_flight: AtomicUsize,
    /// Milliseconds since `opened` of the last byte read or written.
    last_active_ms: AtomicU64,
    opened: Instant,
}

impl ConnCtx {
    pub(super) fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        // Relaxed: only this connection's idle check reads it, and a stale value only delays
        // an idle close by one check.
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Duration {
        // Relaxed: see `touch`.
        let last = self.last_active_ms.load(Ordering::Relaxed);
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// An I/O stream that records when bytes last moved, for the idle timeout.
#[derive(Debug)]
pub(super) struct Tracked<T> {
    pub(super) inner: T,
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
    index: usize,
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
                    tracker.spawn(serve(index, stream, peer, tls.clone(), shared.clone(), shutdown.clone()));
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
    index: usize,
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
        listener: index,
        forwarding: Forwarding::new(peer.ip(), if tls.is_some() { "https" } else { "http" }),
        in_flight: AtomicUsize::new(0),
        last_active_ms: AtomicU64::new(0),
        opened: Instant::now(),
    });
    let io = Tracked {
        inner: stream,
        ctx: ctx.clone(),
    };
    match tls {
        None => conn::serve_plain(io, ctx, shutdown).await,
        // Boxed: the TLS state is large and would size every plain connection's task.
        Some(acceptor) => Box::pin(conn::serve_tls(io, acceptor, ctx, shutdown)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::{Config, DEFAULT_CONFIG};
    use super::super::{Gateway, StartOptions};

    /// Every client connection is a task holding this future: keep it small (large states,
    /// TLS and HTTP/2, are boxed) so that 10,000 idle connections stay cheap.
    #[tokio::test]
    async fn connection_future_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut cfg = Config::parse(DEFAULT_CONFIG, "default").unwrap();
        cfg.demo.clear();
        cfg.clusters.clear();
        cfg.routes.clear();
        cfg.admin.listen = String::new();
        cfg.listeners[0].listen = "127.0.0.1:0".into();
        cfg.server.workers = 1;
        let gw = Gateway::start(StartOptions::new(cfg, "default")).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let fut = super::serve(0, client, addr, None, gw.shared().clone(), rx);
        let size = std::mem::size_of_val(&fut);
        drop(fut);
        gw.shutdown();
        assert!(size <= 1536, "connection future is {size} bytes");
    }
}
