//! Upstream connections, pooled per worker thread.
//!
//! Each thread keeps its own idle HTTP/1.1 connections per endpoint and one multiplexed
//! HTTP/2 connection per endpoint, in a thread-local: in thread-per-core mode no lock and no
//! cache line is shared with another core. An HTTP/1.1 connection goes back to its thread's
//! pool when the response body has been read to the end ([`UpBody`]); a request that a pooled
//! connection could not even start (the upstream had closed it) is retried once on a fresh
//! connection.
//!
//! Requests to a plain-TCP HTTP/1.1 endpoint whose body is held whole (or small enough to be
//! read whole) go on the gateway's own client instead ([`direct`]): no driver task, its idle
//! sockets the ones the fast path keeps ([`sockets`]). hyper's client keeps the rest: streamed
//! bodies, upgrades, TLS and HTTP/2.
//!
//! An `https://` endpoint's connections ([`send_tls`], in `pool/tls.rs`) are pooled the same
//! way, under a key that adds the TLS name and settings to the address; when the endpoint picks
//! HTTP/2 by ALPN, its connection is the thread's multiplexed one for that key.

use http::{Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The body sent upstream: the client's body, streamed, cut at the size limit.
pub(crate) type ReqBody = crate::body::GwBody;

/// Idle HTTP/1.1 connections kept per endpoint and thread; more are closed (a burst's extra
/// connections do not linger).
pub(crate) const MAX_IDLE_PER_ENDPOINT: usize = 128;

mod body;
pub(crate) mod direct;
mod error;
pub(crate) mod sockets;
mod tls;

pub(crate) use body::UpBody;
pub(crate) use error::{UpstreamError, client_body_failed, is_caused_by};
pub(crate) use tls::send_tls;

/// What connections are pooled under: the address, and 0 for plain TCP or the endpoint's
/// [`TlsPeer::key`](crate::tls::upstream::TlsPeer) for TLS.
type Key = (SocketAddr, u64);

struct Idle {
    sender: http1::SendRequest<ReqBody>,
    since: Instant,
}

/// A thread's connections. Endpoints are few, so a vector scan beats hashing the address.
#[derive(Default)]
struct Pool {
    h1: Vec<(Key, Vec<Idle>)>,
    h2: Vec<(Key, http2::SendRequest<ReqBody>)>,
}

impl Pool {
    fn h1_list(&mut self, key: Key) -> &mut Vec<Idle> {
        let i = match self.h1.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.h1.push((key, Vec::new()));
                self.h1.len() - 1
            }
        };
        &mut self.h1[i].1
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// Connection settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Pooled connections idle longer are closed.
    pub idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint and thread; more are closed. At most
    /// [`MAX_IDLE_PER_ENDPOINT`]; a cluster with a `pool` section sets it to its learned limit.
    pub max_idle: usize,
}

async fn connect(addr: SocketAddr, s: Settings) -> Result<tokio::net::TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(s.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout)?
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn checkout_h1(key: Key, s: Settings) -> Option<http1::SendRequest<ReqBody>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.h1_list(key);
        while let Some(idle) = list.pop() {
            if !idle.sender.is_closed() && idle.since.elapsed() < s.idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    })
}

fn checkin_h1(key: Key, sender: http1::SendRequest<ReqBody>, max_idle: usize) {
    if sender.is_closed() {
        return;
    }
    // `try_with`: a body may be dropped while its thread is exiting.
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        let list = p.h1_list(key);
        if list.len() < max_idle.min(MAX_IDLE_PER_ENDPOINT) {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    });
}

/// A new connection to `peer`: HTTP/1.1 on plain TCP; over TLS, HTTP/2 when the endpoint
/// picked it by ALPN (then it becomes the thread's shared one for the key). An `upgrade`
/// connection is HTTP/1.1, and hyper may hand it over after a `101`.
async fn open(peer: &Peer<'_>, s: Settings, upgrade: bool) -> Result<Opened, UpstreamError> {
    let stream = connect(peer.addr, s).await?;
    match peer.tls {
        None => Ok(Opened::H1(h1_on(stream, peer.addr, upgrade).await?)),
        Some(t) => {
            let (stream, h2) = tls::handshake(stream, peer.addr, t, s, upgrade).await?;
            if h2 {
                let sender = h2_on(stream, peer.addr).await?;
                keep_h2(peer.key, &sender);
                Ok(Opened::H2(sender))
            } else {
                Ok(Opened::H1(h1_on(stream, peer.addr, upgrade).await?))
            }
        }
    }
}

/// A connection [`open`] made.
enum Opened {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

/// Where a request goes: the address, its pool key, and its TLS peer for `https://`.
#[derive(Clone, Copy)]
struct Peer<'a> {
    addr: SocketAddr,
    key: Key,
    tls: Option<&'a crate::tls::upstream::TlsPeer>,
}

impl Peer<'_> {
    fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            key: (addr, 0),
            tls: None,
        }
    }
}

/// An HTTP/1.1 connection over `io`, its driver on a task of its own; with `upgrades`, the
/// driver hands the connection over after a `101` (see [`send_upgrade`]).
async fn h1_on<T>(
    io: T,
    addr: SocketAddr,
    upgrades: bool,
) -> Result<http1::SendRequest<ReqBody>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        let ended = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(e) = ended {
            tracing::debug!(upstream = %addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// Sends `req` on `sender` once it is ready.
async fn send_on<S>(
    sender: &mut S,
    req: Request<ReqBody>,
) -> Result<Response<Incoming>, UpstreamError>
where
    S: Sender,
{
    sender.ready().await.map_err(UpstreamError::Http)?;
    sender.send(req).await.map_err(UpstreamError::Http)
}

/// The answer body of a connection: returned `back` to the pool at its end, when pooled.
fn up_body(
    body: Incoming,
    back: Option<(Key, http1::SendRequest<ReqBody>, usize)>,
    s: Settings,
) -> UpBody {
    UpBody::new(body, back, s.idle_timeout)
}

/// What [`send_on`] needs of hyper's HTTP/1.1 and HTTP/2 senders.
trait Sender {
    async fn ready(&mut self) -> Result<(), hyper::Error>;
    async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, hyper::Error>;
}

impl Sender for http1::SendRequest<ReqBody> {
    async fn ready(&mut self) -> Result<(), hyper::Error> {
        http1::SendRequest::ready(self).await
    }
    async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, hyper::Error> {
        self.send_request(req).await
    }
}

impl Sender for http2::SendRequest<ReqBody> {
    async fn ready(&mut self) -> Result<(), hyper::Error> {
        http2::SendRequest::ready(self).await
    }
    async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, hyper::Error> {
        self.send_request(req).await
    }
}

/// The thread's open HTTP/2 connection for `key`, if any.
fn pooled_h2(key: Key) -> Option<http2::SendRequest<ReqBody>> {
    POOL.with(|p| {
        p.borrow()
            .h2
            .iter()
            .find(|(k, c)| *k == key && !c.is_closed())
            .map(|(_, c)| c.clone())
    })
}

/// Makes `sender` the thread's HTTP/2 connection for `key`.
fn keep_h2(key: Key, sender: &http2::SendRequest<ReqBody>) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.h2.retain(|(k, _)| *k != key);
        p.h2.push((key, sender.clone()));
    });
}

/// An HTTP/2 connection over `io`, its driver on a task of its own.
async fn h2_on<T>(io: T, addr: SocketAddr) -> Result<http2::SendRequest<ReqBody>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(UpstreamError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(upstream = %addr, error = %e, "upstream h2 connection ended");
        }
    });
    Ok(sender)
}

async fn h2_sender(
    addr: SocketAddr,
    s: Settings,
) -> Result<http2::SendRequest<ReqBody>, UpstreamError> {
    let key = (addr, 0);
    if let Some(sender) = pooled_h2(key) {
        return Ok(sender);
    }
    // Boxed, as in `send_h1_on`: the handshake's state stays out of every request's future.
    Box::pin(async move {
        let stream = connect(addr, s).await?;
        let sender = h2_on(stream, addr).await?;
        keep_h2(key, &sender);
        Ok(sender)
    })
    .await
}

/// Sends `req` to `addr` over HTTP/1.1 on a pooled connection (the URI should be in origin
/// form and a `Host` header present).
///
/// # Errors
/// [`UpstreamError`] when no response head arrives.
pub(crate) async fn send_h1(
    addr: SocketAddr,
    req: Request<ReqBody>,
    s: Settings,
) -> Result<Response<UpBody>, UpstreamError> {
    send_h1_on(Peer::plain(addr), req, s).await
}

/// [`send_h1`] to `peer`; over TLS the fresh connection may turn out HTTP/2 (ALPN), and the
/// request goes on it as HTTP/2.
async fn send_h1_on(
    peer: Peer<'_>,
    mut req: Request<ReqBody>,
    s: Settings,
) -> Result<Response<UpBody>, UpstreamError> {
    let addr = peer.addr;
    // Up to two pooled connections, then a fresh one.
    for attempt in 0..3 {
        let pooled = if attempt < 2 {
            checkout_h1(peer.key, s)
        } else {
            None
        };
        let reused = pooled.is_some();
        // Opening a connection (a TLS handshake, perhaps) and the rarer paths below are
        // boxed: inline, their state would make every request's future kilobytes larger, and
        // that future is moved (copied) a few times per request.
        let mut sender = match pooled {
            Some(s) => s,
            None => match Box::pin(open(&peer, s, false)).await? {
                Opened::H1(sender) => sender,
                Opened::H2(mut sender) => {
                    return Box::pin(tls::send_as_h2(&mut sender, &peer, req, s)).await;
                }
            },
        };
        match sender.ready().await {
            Ok(()) => {}
            Err(_) if reused => continue,
            Err(e) => return Err(UpstreamError::Http(e)),
        }
        // A request without a body that may be sent twice (RFC 9110 §9.2.2) is kept, so that
        // if a reused connection closes on it unanswered (the upstream's idle close crossed
        // it), it goes again on a fresh one.
        let replay =
            (reused && attempt < 2 && req.body().is_end_stream() && idempotent(req.method())).then(
                || {
                    let mut copy = Request::new(Either::Right(Full::default()));
                    *copy.method_mut() = req.method().clone();
                    *copy.uri_mut() = req.uri().clone();
                    *copy.version_mut() = req.version();
                    *copy.headers_mut() = req.headers().clone();
                    copy
                },
            );
        match sender.try_send_request(req).await {
            Ok(resp) => {
                return Ok(resp.map(|body| up_body(body, Some((peer.key, sender, s.max_idle)), s)));
            }
            Err(mut e) => match (e.take_message(), replay) {
                // Never written: the connection was already closing. Try another.
                (Some(r), _) if reused => req = r,
                (None, Some(copy)) if e.error().is_incomplete_message() => {
                    tracing::debug!(upstream = %addr, "reused connection closed unanswered; sending again");
                    req = copy;
                    // A fresh connection next.
                    return Box::pin(send_fresh_h1(peer, req, s)).await;
                }
                _ => return Err(UpstreamError::Http(e.into_error())),
            },
        }
    }
    Err(UpstreamError::Connect(
        std::io::ErrorKind::ConnectionAborted.into(),
    ))
}

/// A request marker: the request asks to upgrade the connection (a WebSocket handshake), so
/// it goes on a connection of its own that hyper may hand over after a `101`, never pooled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upgrading;

/// Sends `req` (an upgrade request, see [`Upgrading`]) to `addr` on a new HTTP/1.1
/// connection that stays available for `hyper::upgrade::on` on the answer.
///
/// # Errors
/// [`UpstreamError`] when no response head arrives.
pub(crate) async fn send_upgrade(
    addr: SocketAddr,
    req: Request<ReqBody>,
    s: Settings,
) -> Result<Response<UpBody>, UpstreamError> {
    let stream = connect(addr, s).await?;
    let mut sender = h1_on(stream, addr, true).await?;
    let resp = send_on(&mut sender, req).await?;
    Ok(resp.map(|body| up_body(body, None, s)))
}

/// Whether a request may be sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Sends `req` on a new connection.
async fn send_fresh_h1(
    peer: Peer<'_>,
    req: Request<ReqBody>,
    s: Settings,
) -> Result<Response<UpBody>, UpstreamError> {
    let mut sender = match open(&peer, s, false).await? {
        Opened::H1(sender) => sender,
        Opened::H2(mut sender) => return tls::send_as_h2(&mut sender, &peer, req, s).await,
    };
    let resp = send_on(&mut sender, req).await?;
    Ok(resp.map(|body| up_body(body, Some((peer.key, sender, s.max_idle)), s)))
}

/// Sends `req` to `addr` over the thread's HTTP/2 connection (the URI must be absolute).
///
/// # Errors
/// [`UpstreamError`] when no response head arrives.
pub(crate) async fn send_h2(
    addr: SocketAddr,
    req: Request<ReqBody>,
    s: Settings,
) -> Result<Response<UpBody>, UpstreamError> {
    let mut sender = h2_sender(addr, s).await?;
    let resp = send_on(&mut sender, req).await?;
    Ok(resp.map(|body| up_body(body, None, s)))
}

/// Connection settings the endpoints read on each call, so a reload that only changes the
/// global timeouts keeps the stack (and its breaker, limit and latency state).
#[derive(Debug)]
pub(crate) struct SharedSettings {
    connect_ms: std::sync::atomic::AtomicU64,
    idle_ms: std::sync::atomic::AtomicU64,
}

impl From<Settings> for SharedSettings {
    fn from(s: Settings) -> Self {
        Self::new(s)
    }
}

impl SharedSettings {
    pub(crate) fn new(s: Settings) -> Self {
        let ms = |d: Duration| std::sync::atomic::AtomicU64::new(d.as_millis() as u64);
        Self {
            connect_ms: ms(s.connect_timeout),
            idle_ms: ms(s.idle_timeout),
        }
    }

    pub(crate) fn store(&self, s: Settings) {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: independent values; a request may start with the old one a moment longer.
        self.connect_ms
            .store(s.connect_timeout.as_millis() as u64, Relaxed);
        self.idle_ms
            .store(s.idle_timeout.as_millis() as u64, Relaxed);
    }

    /// The current settings (idle connections capped by `max_idle`).
    pub(crate) fn load(&self) -> Settings {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: see `store`.
        Settings {
            connect_timeout: Duration::from_millis(self.connect_ms.load(Relaxed)),
            idle_timeout: Duration::from_millis(self.idle_ms.load(Relaxed)),
            max_idle: MAX_IDLE_PER_ENDPOINT,
        }
    }
}
