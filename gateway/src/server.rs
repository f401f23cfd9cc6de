//! Listeners and client connections: bind (with `SO_REUSEPORT` for thread-per-core), accept,
//! optional TLS, HTTP/1.1 and HTTP/2 on one port, idle and header-read timeouts, and graceful
//! close when shutdown starts.

use super::conn;
use super::ctx::{ConnCtx, Tracked};
use super::proxy_protocol;
use super::state::Shared;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

/// Binds a listening socket. With `reuse_port`, several sockets (one per worker) may bind the
/// same address and the kernel spreads connections over them.
///
/// # Errors
/// The socket calls' errors.
pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
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

/// Accepts connections until shutdown starts, serving each on its own task tracked by
/// `tracker` (which shutdown waits on to drain).
pub(crate) async fn accept_loop(
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
    let mut stream = stream;
    let (proxied, header_read) = {
        let snap = shared.current.load();
        let proxied = snap
            .config
            .listeners
            .get(index)
            .is_some_and(|l| l.proxy_protocol);
        (proxied, snap.header_read_timeout)
    };
    let peer = if proxied {
        match tokio::time::timeout(header_read, proxy_protocol::read_header(&mut stream)).await {
            Ok(Ok(client)) => client.unwrap_or(peer),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "no valid PROXY protocol header; closing");
                return;
            }
            Err(_) => {
                shared.stats.connections_timed_out.incr();
                return;
            }
        }
    } else {
        peer
    };
    let ctx = Arc::new(ConnCtx::new(shared.clone(), peer, tls.is_some(), index));
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
