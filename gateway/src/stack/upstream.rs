//! The innermost service: one upstream endpoint, reached through the worker thread's own
//! connection pool ([`crate::pool`]).

use super::{GwBody, UpRequest, UpResponse};
use crate::config::UpstreamProtocol;
use crate::pool;
use crate::pool::SharedSettings;
use crate::pool::direct::Split;
use crate::stats::EndpointStats;
use crate::tls::upstream::ClusterTls;
use crate::trace::{Traced, upstream_attributes};
use http::header::{self, HeaderValue};
use http::{Request, Uri, Version};
use opentelemetry::trace::SpanKind;
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tollgate_core::BoxError;
use tower::Service;

/// One upstream endpoint as a service. The request arrives with an origin-form URI; the
/// endpoint fills in what depends on its address: the absolute URI HTTP/2 needs, and `Host`
/// when the route did not forward the client's.
///
/// A clone (the balancer makes one per request) shares one allocation: one reference count.
#[derive(Debug, Clone)]
pub(crate) struct Upstream(Arc<Endpoint>);

/// What an [`Upstream`] knows of its endpoint.
#[derive(Debug)]
struct Endpoint {
    addr: SocketAddr,
    authority: Arc<str>,
    host: HeaderValue,
    protocol: UpstreamProtocol,
    /// The cluster's TLS, for an `https://` endpoint.
    tls: Option<Arc<ClusterTls>>,
    settings: Arc<SharedSettings>,
    limiter: Option<tollgate_pool::Limiter>,
    /// The endpoint's counters in `/state` (requests, failures), when the caller does not count
    /// them itself.
    stats: Option<Arc<EndpointStats>>,
}

impl Upstream {
    /// The endpoint at `addr`, spoken to with `protocol` (over `tls` when set). With `limiter` (the cluster's
    /// adaptive limit), each worker keeps at most that many idle connections to it, so the
    /// connection pool follows what the upstream was learned to take.
    pub(crate) fn new(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        tls: Option<Arc<ClusterTls>>,
        settings: Arc<SharedSettings>,
        limiter: Option<tollgate_pool::Limiter>,
        stats: Option<Arc<EndpointStats>>,
    ) -> Self {
        let authority: Arc<str> = addr.to_string().into();
        let host = HeaderValue::from_str(&authority).unwrap_or(HeaderValue::from_static("-"));
        Self(Arc::new(Endpoint {
            addr,
            authority,
            host,
            protocol,
            tls,
            settings,
            limiter,
            stats,
        }))
    }
}

impl Upstream {
    /// The endpoint's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Whether the endpoint speaks plain HTTP/1.1 (no TLS): what the fast path's own exchange
    /// can reach.
    pub(crate) fn is_plain_h1(&self) -> bool {
        self.0.tls.is_none() && self.0.protocol == UpstreamProtocol::Http1
    }

    /// The connection settings as they are now, with as many idle connections per worker as
    /// the cluster's limit when it has one.
    pub(crate) fn settings(&self) -> pool::Settings {
        let mut settings = self.0.settings.load();
        if let Some(l) = &self.0.limiter {
            settings.max_idle = l.limit().max(1);
        }
        settings
    }

    /// The endpoint's counters, when it keeps them itself.
    pub(crate) fn stats(&self) -> Option<&Arc<EndpointStats>> {
        self.0.stats.as_ref()
    }
}

/// The future of one upstream request (boxed: it is hyper's connection handshake and send).
pub(crate) type UpstreamFuture = Pin<Box<dyn Future<Output = Result<UpResponse, BoxError>> + Send>>;

impl Service<UpRequest> for Upstream {
    type Response = UpResponse;
    type Error = BoxError;
    type Future = UpstreamFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<GwBody>) -> Self::Future {
        let this = &*self.0;
        let (mut parts, body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, this.host.clone());
        }
        let addr = this.addr;
        if let Some(s) = &this.stats {
            s.requests.incr();
        }
        let stats = this.stats.clone();
        let start = Instant::now();
        let traced = parts.extensions.get::<Traced>().cloned();
        let mut settings = this.settings.load();
        if let Some(l) = &this.limiter {
            settings.max_idle = l.limit().max(1);
        }
        if let Some(tls) = &this.tls {
            // HTTP/1.1 form; sent as HTTP/2 when the endpoint picks it by ALPN.
            parts.version = Version::HTTP_11;
            let upgrade = this.protocol == UpstreamProtocol::Http1
                && parts.extensions.get::<pool::Upgrading>().is_some();
            let req = Request::from_parts(parts, body);
            let peer = tls.peer(addr);
            return Box::pin(async move {
                let sent = match peer {
                    Some(peer) => pool::send_tls(addr, &peer, req, settings, upgrade).await,
                    None => Err(pool::UpstreamError::Connect(
                        std::io::ErrorKind::AddrNotAvailable.into(),
                    )),
                };
                answered(sent, addr, stats.as_deref(), start, traced)
            });
        }
        match this.protocol {
            UpstreamProtocol::Http1 => {
                parts.version = Version::HTTP_11;
                let upgrade = parts.extensions.get::<pool::Upgrading>().is_some();
                let req = Request::from_parts(parts, body);
                // Built in its box (`boxed::pinned`).
                crate::boxed::pinned(|| async move {
                    let sent = if upgrade {
                        // Boxed: a fresh connection's handshake would make every request's
                        // future kilobytes larger.
                        Box::pin(pool::send_upgrade(addr, req, settings)).await
                    } else {
                        // A body held whole (or small enough to read whole) goes on the
                        // gateway's own client; a streamed one on hyper's.
                        match pool::direct::split(req).await {
                            Ok(Split::Direct(parts, body)) => {
                                pool::direct::send(addr, parts, body, settings).await
                            }
                            // Boxed: hyper's send would make every request's future
                            // kilobytes larger.
                            Ok(Split::Hyper(req)) => {
                                Box::pin(pool::send_h1(addr, req, settings)).await
                            }
                            Err(e) => Err(e),
                        }
                    };
                    answered(sent, addr, stats.as_deref(), start, traced)
                })
            }
            UpstreamProtocol::H2c => {
                parts.version = Version::HTTP_2;
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                match Uri::builder()
                    .scheme("http")
                    .authority(&*this.authority)
                    .path_and_query(pq)
                    .build()
                {
                    Ok(uri) => parts.uri = uri,
                    Err(e) => return Box::pin(std::future::ready(Err(BoxError::from(e)))),
                }
                let req = Request::from_parts(parts, body);
                Box::pin(async move {
                    let sent = pool::send_h2(addr, req, settings).await;
                    answered(sent, addr, stats.as_deref(), start, traced)
                })
            }
        }
    }
}

/// Counts the exchange's time and an upstream failure or 5xx against the endpoint, and marks an answer with the
/// address it came from.
fn answered(
    sent: Result<UpResponse, pool::UpstreamError>,
    addr: SocketAddr,
    stats: Option<&EndpointStats>,
    start: Instant,
    traced: Option<Traced>,
) -> Result<UpResponse, BoxError> {
    if let Some(s) = stats {
        s.latency.record(start.elapsed());
    }
    if let Some(t) = traced {
        let (status, error) = match &sent {
            Ok(r) => (
                Some(r.status().as_u16()),
                r.status()
                    .is_server_error()
                    .then_some(Cow::Borrowed("server error")),
            ),
            Err(e) => (None, Some(Cow::Owned(e.to_string()))),
        };
        t.child(
            None,
            "upstream",
            SpanKind::Client,
            start,
            upstream_attributes(addr, status),
            error,
        );
    }
    match sent {
        Ok(mut resp) => {
            if let Some(s) = stats.filter(|_| resp.status().is_server_error()) {
                s.failures.incr();
            }
            resp.body_mut().set_upstream(addr);
            Ok(resp)
        }
        Err(e) => {
            if let Some(s) = stats {
                s.failures.incr();
            }
            Err(e.into())
        }
    }
}
