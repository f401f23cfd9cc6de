//! One client connection's context, shared by its requests on either HTTP path, and the I/O
//! wrapper that keeps its idle clock.

use crate::headers::Forwarding;
use crate::state::Shared;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Per-connection state shared by its requests.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    /// Gateway state.
    pub shared: Arc<Shared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Index of the listener (in config order) that accepted it.
    pub listener: usize,
    /// Forwarding header values for this client.
    pub forwarding: Forwarding,
    /// Requests of this connection in flight.
    pub in_flight: AtomicUsize,
    /// Requests this connection has made, and those it abandoned while they were worked on:
    /// the connection's budget (`limits.max_requests_per_connection`,
    /// `limits.max_abandoned_per_connection`).
    budget: Budget,
    /// Whether hyper serves this connection with upgrades on (see `tunnel.rs`).
    upgradeable: std::sync::atomic::AtomicBool,
    /// Milliseconds since `opened` of the last byte read or written.
    last_active_ms: AtomicU64,
    opened: Instant,
}

impl ConnCtx {
    /// The context of a connection from `peer`, accepted by listener `listener` (config order).
    pub(crate) fn new(shared: Arc<Shared>, peer: SocketAddr, tls: bool, listener: usize) -> Self {
        // A peer in `server.trusted_proxies` (as configured when it connected) has its
        // forwarding fields believed.
        let trusted = {
            let snap = shared.current.load();
            let t = &snap.trusted_proxies;
            (!t.is_empty() && t.contains(peer.ip())).then(|| t.clone())
        };
        Self {
            shared,
            peer,
            listener,
            forwarding: Forwarding::new(peer.ip(), if tls { "https" } else { "http" }, trusted),
            in_flight: AtomicUsize::new(0),
            budget: Budget::default(),
            upgradeable: std::sync::atomic::AtomicBool::new(false),
            last_active_ms: AtomicU64::new(0),
            opened: Instant::now(),
        }
    }

    pub(crate) fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        // Relaxed: only this connection's idle check reads it, and a stale value only delays
        // an idle close by one check.
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// Counts a new request against the connection's budget; `true` when it is the last one
    /// the connection may make (the caller closes the connection after its answer, or sends
    /// GOAWAY).
    pub(crate) fn start_request(&self, max_requests: u64) -> bool {
        // Relaxed: the count of this connection's own requests; an off-by-one between
        // concurrent HTTP/2 streams only moves the GOAWAY by one request.
        let n = self.budget.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let last = max_requests != 0 && n >= max_requests;
        if last {
            self.close_after_current();
        }
        last
    }

    /// Counts a request the client abandoned while it was worked on; past the budget, asks
    /// the connection's driver to close it gracefully (GOAWAY on HTTP/2).
    pub(crate) fn abandoned(&self, max_abandoned: u64) {
        // Relaxed: see `start_request`.
        let n = self.budget.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        let requests = self.budget.requests.load(Ordering::Relaxed);
        if max_abandoned != 0 && n > max_abandoned && n * 2 > requests {
            if !self.budget.closing.swap(true, Ordering::Relaxed) {
                self.shared.stats.connections_over_budget.incr();
            }
            self.budget.close.notify_one();
        }
    }

    /// Asks the connection's driver to close it once its requests in flight are answered.
    fn close_after_current(&self) {
        // Relaxed: the flag only keeps the counter to one increment; `Notify` carries the
        // wake-up (a permit is stored when nobody waits yet).
        self.budget.closing.store(true, Ordering::Relaxed);
        self.budget.close.notify_one();
    }

    /// Marks the connection as served with upgrades on.
    pub(crate) fn set_upgradeable(&self) {
        // Relaxed: set by the connection's task before hyper serves a request on it.
        self.upgradeable.store(true, Ordering::Relaxed);
    }

    /// Whether a request on this connection may upgrade it.
    pub(crate) fn upgradeable(&self) -> bool {
        // Relaxed: see `set_upgradeable`.
        self.upgradeable.load(Ordering::Relaxed)
    }

    /// Resolves when the connection has spent its budget and should close gracefully.
    pub(crate) async fn over_budget(&self) {
        self.budget.close.notified().await;
    }

    pub(crate) fn idle_for(&self) -> Duration {
        // Relaxed: see `touch`.
        let last = self.last_active_ms.load(Ordering::Relaxed);
        self.opened
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// An I/O stream that records when bytes last moved, for the idle timeout.
#[derive(Debug)]
pub(crate) struct Tracked<T> {
    pub(crate) inner: T,
    pub(crate) ctx: Arc<ConnCtx>,
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

/// A connection's request budget; see [`ConnCtx::start_request`] and [`ConnCtx::abandoned`].
#[derive(Debug, Default)]
struct Budget {
    requests: AtomicU64,
    abandoned: AtomicU64,
    closing: std::sync::atomic::AtomicBool,
    close: tokio::sync::Notify,
}
