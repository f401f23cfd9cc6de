//! Active HTTP health checks for balanced clusters: `GET path` on a fresh connection; a 2xx
//! answer passes (over TLS for `https://` endpoints, on the checking thread's pooled
//! connections). The balancer bounds each check by its `timeout_ms` and counts thresholds.

use crate::config::UpstreamProtocol;
use crate::pool::{self, MAX_IDLE_PER_ENDPOINT, Settings};
use crate::tls::upstream::ClusterTls;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tollgate_balance::HealthCheck;

/// Checks an endpoint with `GET path`.
#[derive(Debug, Clone)]
pub(crate) struct HttpHealthCheck {
    path: Arc<str>,
    protocol: UpstreamProtocol,
    tls: Option<Arc<ClusterTls>>,
}

impl HttpHealthCheck {
    /// A check of `path` over `protocol` (and `tls` for `https://` endpoints).
    pub(crate) fn new(
        path: String,
        protocol: UpstreamProtocol,
        tls: Option<Arc<ClusterTls>>,
    ) -> Self {
        Self {
            path: path.into(),
            protocol,
            tls,
        }
    }

    /// A check over TLS, as HTTP/2 or HTTP/1.1 as the endpoint picks by ALPN.
    async fn probe_tls(addr: SocketAddr, path: Arc<str>, tls: Arc<ClusterTls>) -> bool {
        let Some(peer) = tls.peer(addr) else {
            return false;
        };
        let Ok(req) = Request::get(&*path)
            .header(header::HOST, peer.name.to_str().as_ref())
            .header(header::USER_AGENT, "tollgate-health")
            .body(http_body_util::Either::Right(
                http_body_util::Full::default(),
            ))
        else {
            return false;
        };
        // The balancer bounds the whole check by `timeout_ms`.
        let settings = Settings {
            connect_timeout: std::time::Duration::from_secs(60),
            idle_timeout: std::time::Duration::from_secs(60),
            max_idle: MAX_IDLE_PER_ENDPOINT,
        };
        match pool::send_tls(addr, &peer, req, settings, false).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                // Read to the end, so an HTTP/1.1 connection goes back to the pool.
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                ok
            }
            Err(_) => false,
        }
    }

    async fn probe(addr: SocketAddr, path: Arc<str>, protocol: UpstreamProtocol) -> bool {
        let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
            return false;
        };
        let io = TokioIo::new(stream);
        let status = match protocol {
            UpstreamProtocol::Http1 => {
                let Ok((mut send, conn)) = http1::handshake::<_, Empty<Bytes>>(io).await else {
                    return false;
                };
                tokio::spawn(conn);
                let Ok(req) = Request::get(&*path)
                    .header(header::HOST, addr.to_string())
                    .header(header::USER_AGENT, "tollgate-health")
                    .header(header::CONNECTION, "close")
                    .body(Empty::new())
                else {
                    return false;
                };
                send.send_request(req).await.map(|r| r.status())
            }
            UpstreamProtocol::H2c => {
                let Ok((mut send, conn)) =
                    http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), io).await
                else {
                    return false;
                };
                tokio::spawn(conn);
                let Ok(req) = Request::get(format!("http://{addr}{path}"))
                    .header(header::USER_AGENT, "tollgate-health")
                    .body(Empty::new())
                else {
                    return false;
                };
                send.send_request(req).await.map(|r| r.status())
            }
        };
        status.is_ok_and(|s| s.is_success())
    }
}

impl HealthCheck<SocketAddr> for HttpHealthCheck {
    type Future = Pin<Box<dyn Future<Output = bool> + Send>>;

    fn check(&self, addr: &SocketAddr) -> Self::Future {
        match &self.tls {
            Some(tls) => Box::pin(Self::probe_tls(*addr, self.path.clone(), tls.clone())),
            None => Box::pin(Self::probe(*addr, self.path.clone(), self.protocol)),
        }
    }
}
