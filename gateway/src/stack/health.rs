//! Active HTTP health checks for balanced clusters: `GET path` on a fresh connection; a 2xx
//! answer passes. The balancer bounds each check by its `timeout_ms` and counts thresholds.

use crate::config::UpstreamProtocol;
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
}

impl HttpHealthCheck {
    /// A check of `path` over `protocol`.
    pub(crate) fn new(path: String, protocol: UpstreamProtocol) -> Self {
        Self {
            path: path.into(),
            protocol,
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
        Box::pin(Self::probe(*addr, self.path.clone(), self.protocol))
    }
}
