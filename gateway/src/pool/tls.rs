//! Requests to `https://` endpoints: the TLS handshake (bounded by the connect timeout, its
//! failures logged at `warn` with the reason), and the request sent as HTTP/2 when the
//! endpoint picked it by ALPN, else as HTTP/1.1 on the thread's pooled connections.

use super::{
    Opened, Peer, ReqBody, Settings, UpBody, UpstreamError, open, pooled_h2, send_h1_on, send_on,
    up_body,
};
use crate::tls::upstream::{TlsPeer, failure};
use http::header;
use http::uri::Authority;
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Sends `req` (in HTTP/1.1 form: origin-form URI, `Host` set) to the `https://` endpoint
/// `addr`: on the thread's HTTP/2 connection to it if it has one, else on a pooled or fresh
/// connection, as HTTP/2 or HTTP/1.1 as its ALPN answer says. An `upgrade` request goes on an
/// HTTP/1.1 connection of its own (see [`Upgrading`](super::Upgrading)).
///
/// # Errors
/// [`UpstreamError`] when no response head arrives; [`UpstreamError::Tls`] when the handshake
/// failed.
pub(crate) async fn send_tls(
    addr: SocketAddr,
    tls: &TlsPeer,
    req: Request<ReqBody>,
    s: Settings,
    upgrade: bool,
) -> Result<Response<UpBody>, UpstreamError> {
    let peer = Peer {
        addr,
        key: (addr, tls.key),
        tls: Some(tls),
    };
    send_tls_on(peer, req, s, upgrade)
        .await
        .map_err(|e| refused_late(e, addr, tls))
}

async fn send_tls_on(
    peer: Peer<'_>,
    req: Request<ReqBody>,
    s: Settings,
    upgrade: bool,
) -> Result<Response<UpBody>, UpstreamError> {
    if upgrade {
        let mut sender = match open(&peer, s, true).await? {
            Opened::H1(sender) => sender,
            // An upgrade connection offers http/1.1 only; an endpoint that picks h2 anyway
            // gets the request as HTTP/2 (without the upgrade).
            Opened::H2(mut sender) => return send_as_h2(&mut sender, &peer, req, s).await,
        };
        let resp = send_on(&mut sender, req).await?;
        return Ok(resp.map(|body| up_body(body, None, s)));
    }
    if let Some(mut sender) = pooled_h2(peer.key) {
        return send_as_h2(&mut sender, &peer, req, s).await;
    }
    send_h1_on(peer, req, s).await
}

/// A connection error that is a TLS refusal the upstream sent after the handshake (TLS 1.3
/// servers check client certificates then) becomes [`UpstreamError::Tls`], logged as a failed
/// handshake is.
fn refused_late(err: UpstreamError, addr: SocketAddr, tls: &TlsPeer) -> UpstreamError {
    let UpstreamError::Http(e) = &err else {
        return err;
    };
    // hyper's HTTP/2 client keeps only the kind and text of an I/O error, so the connection's
    // reads note a TLS refusal on the peer as well.
    let Some(cause) = crate::tls::upstream::tls_cause(e).or_else(|| tls.take_refusal()) else {
        return err;
    };
    let io = std::io::Error::other(cause);
    log_failure(&io, addr, tls);
    UpstreamError::Tls(io)
}

fn log_failure(e: &std::io::Error, addr: SocketAddr, tls: &TlsPeer) {
    let (reason, _) = failure(e);
    tracing::warn!(
        upstream = %addr,
        server_name = %tls.name.to_str(),
        reason,
        error = %e,
        "upstream tls handshake failed"
    );
}

/// Sends an HTTP/1.1-form request on an HTTP/2 connection: the URI made absolute
/// (`https://` and the request's `Host`, else the TLS name).
pub(super) async fn send_as_h2(
    sender: &mut http2::SendRequest<ReqBody>,
    peer: &Peer<'_>,
    req: Request<ReqBody>,
    s: Settings,
) -> Result<Response<UpBody>, UpstreamError> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| Authority::try_from(h.as_bytes()).ok())
        .or_else(|| {
            let name = peer.tls?.name.to_str();
            Authority::try_from(name.as_ref()).ok()
        })
        .unwrap_or_else(|| Authority::from_static("upstream"));
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|_| UpstreamError::Connect(std::io::ErrorKind::InvalidInput.into()))?;
    parts.version = Version::HTTP_2;
    let resp = send_on(sender, Request::from_parts(parts, body)).await?;
    Ok(resp.map(|body| up_body(body, None, s)))
}

/// The TLS handshake with `addr` over `stream`, within the connect timeout; whether the
/// endpoint picked HTTP/2 (an `upgrade` offers HTTP/1.1 only).
pub(super) async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    tls: &TlsPeer,
    s: Settings,
    upgrade: bool,
) -> Result<(Watched, bool), UpstreamError> {
    let config = if upgrade {
        tls.h1_config.clone()
    } else {
        tls.config.clone()
    };
    let shake = TlsConnector::from(config).connect(tls.name.clone(), stream);
    let stream = match tokio::time::timeout(s.connect_timeout, shake).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout),
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            log_failure(&e, addr, tls);
            return Err(UpstreamError::Tls(e));
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let refusal = tls.refusal.clone();
    Ok((
        Watched {
            inner: stream,
            refusal,
        },
        h2,
    ))
}

/// A client TLS stream that notes the TLS error its reads end with (an alert from the
/// upstream) in its peer's [`TlsPeer::refusal`]. Best effort: when the gateway's write fails
/// first (the upstream closed after its alert), the request fails as a broken connection.
pub(super) struct Watched {
    inner: TlsStream<TcpStream>,
    refusal: Arc<Mutex<Option<rustls::Error>>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &read {
            self.note(e);
        }
        read
    }
}

impl Watched {
    fn note(&self, e: &std::io::Error) {
        if let Some(cause) = crate::tls::upstream::tls_cause(e) {
            *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause);
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
