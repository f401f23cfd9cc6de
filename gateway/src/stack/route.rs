//! The services a route sends through: a cluster (its layered stack, the same under the
//! route's own retries, or the plain round-robin path), behind the route's admission policy.

use super::admission::{AdmissionPolicy, AdmitCtx};
use super::cluster::{ClusterCall, ClusterLayers};
use super::endpoints::Cluster;
use super::route_retry::RouteRetry;
use super::upstream::Upstream;
use super::{UpRequest, UpResponse};
use crate::error::RouteTimedOut;
use crate::pool::Settings;
use crate::pool::SharedSettings;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_core::BoxError;
use tower::{Service, ServiceExt};

pub(crate) use super::BoxFuture;

/// A cluster as a service: its layered stack, or round robin over its endpoints.
#[derive(Debug, Clone)]
pub(crate) enum ClusterService {
    /// The cluster's layers (breaker, pool, balance, retries).
    Layered(Arc<ClusterLayers>),
    /// No layers: round robin, as the part-1 fast path does.
    Plain(Arc<Cluster>, Settings),
    /// The cluster's layers under a route's own retries (`[routes.retry]`).
    RouteRetried(Arc<RouteRetry>),
}

impl Service<UpRequest> for ClusterService {
    type Response = UpResponse;
    type Error = BoxError;
    type Future = ClusterCall;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: UpRequest) -> ClusterCall {
        match self {
            ClusterService::Layered(layers) => layers.send(req),
            ClusterService::RouteRetried(retry) => retry.send(req),
            ClusterService::Plain(cluster, settings) => {
                let Some((index, addr)) = cluster.pick() else {
                    return ClusterCall::boxed(Box::pin(std::future::ready(Err(BoxError::from(
                        tollgate_balance::NoEndpoints::new(),
                    )))));
                };
                let cluster = cluster.clone();
                let up = Upstream::new(
                    addr,
                    cluster.protocol,
                    cluster.tls.clone(),
                    Arc::new(SharedSettings::from(*settings)),
                    None,
                    // `pick` counted the request, `endpoint_failed` a failure, `endpoint_latency` its time.
                    None,
                );
                ClusterCall::boxed(Box::pin(async move {
                    let start = tokio::time::Instant::now();
                    let result = up.oneshot(req).await;
                    cluster.endpoint_latency(index, addr, start.elapsed());
                    let failed = match &result {
                        Ok(r) => r.status().is_server_error(),
                        Err(_) => true,
                    };
                    if failed {
                        cluster.endpoint_failed(index, addr);
                    }
                    result
                }))
            }
        }
    }
}

/// A route's way upstream: its admission policy (if any) in front of its cluster, all within
/// the route's overall timeout. A route cache sits outside it, so a timed-out fetch is a
/// failure the cache can hide with a stale answer.
#[derive(Debug, Clone)]
pub(crate) struct RouteService {
    /// The admission policy and what it needs to know of the request.
    pub admission: Option<(Arc<AdmissionPolicy>, AdmitCtx)>,
    /// The cluster.
    pub cluster: ClusterService,
    /// The route's overall timeout (`request_timeout_ms`, else `timeouts.request_ms`).
    pub timeout: Duration,
}

impl Service<UpRequest> for RouteService {
    type Response = UpResponse;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: UpRequest) -> BoxFuture {
        let timeout = self.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = |_| Err(BoxError::from(RouteTimedOut));
        // One box for the whole call: the admission stage's future lives inside it, built
        // there rather than copied in (`boxed::pinned`). The deadline is in scope for the
        // retry policy (`super::retry::ROUTE_DEADLINE`).
        match &self.admission {
            Some((policy, ctx)) => crate::boxed::pinned(|| {
                let admitted = policy.call(self.cluster.clone(), req, ctx);
                let admitted = tokio::time::timeout_at(deadline, admitted);
                super::retry::ROUTE_DEADLINE.scope(deadline, async move {
                    admitted.await.unwrap_or_else(timed_out)
                })
            }),
            None => crate::boxed::pinned(|| {
                let sent = tokio::time::timeout_at(deadline, self.cluster.call(req));
                super::retry::ROUTE_DEADLINE.scope(deadline, async move {
                    sent.await.unwrap_or_else(timed_out)
                })
            }),
        }
    }
}
