//! The caching service.

use crate::flight::Join;
use crate::future::{Miss, ResponseFuture, Role, refresh};
use crate::l1::hash_of;
use crate::policy::{CachePolicy, CachePolicyFor};
use crate::tiers::{Found, Tiers};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower_service::Service;

/// A read-through cache in front of `S`. Built by [`CacheLayer`](crate::layer::CacheLayer);
/// every clone shares the layer's tiers.
///
/// `poll_ready` is the inner service's. A hit answers without calling the inner service (its
/// readiness stays reserved for the next call). A miss that may call the inner service later
/// (a waiter that may take over, a leader that reads L3 first) takes the readied inner service
/// into its future and leaves a clone in its place, so `S` must be `Clone`; a background
/// refresh uses a clone too. Errors are the inner service's: the cache adds none of its own.
pub struct Cache<S, P: CachePolicy> {
    inner: S,
    policy: Arc<P>,
    tiers: Arc<Tiers<P::Key, P::Value>>,
}

impl<S: fmt::Debug, P: CachePolicy> fmt::Debug for Cache<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("tiers", &self.tiers)
            .finish()
    }
}

impl<S: Clone, P: CachePolicy> Clone for Cache<S, P> {
    /// The clone's inner service is a clone too, so it starts unready.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            tiers: self.tiers.clone(),
        }
    }
}

impl<S, P: CachePolicy> Cache<S, P> {
    pub(crate) fn new(inner: S, policy: Arc<P>, tiers: Arc<Tiers<P::Key, P::Value>>) -> Self {
        Self {
            inner,
            policy,
            tiers,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, dropping the cache's handle on the tiers.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, Req> Service<Req> for Cache<S, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Send + 'static,
    P: CachePolicyFor<Req, S::Response>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let Some(key) = self.policy.key(&req) else {
            self.tiers.stats.bypassed.incr();
            return ResponseFuture::pass(self.inner.call(req));
        };
        let hash = hash_of(&key);
        let now = Instant::now();
        // The hot path: no allocation, no shared write (this thread's L1 table counts the hit).
        if let Some((v, age)) = self.tiers.l1_get(hash, &key, now) {
            return ResponseFuture::ready(self.policy.to_response_aged(&v, age));
        }
        self.past_l1(req, key, hash, now)
    }
}

impl<S, P> Cache<S, P>
where
    P: CachePolicy,
{
    /// L2, then single-flight (L3 and the inner service).
    fn past_l1<Req>(
        &mut self,
        req: Req,
        key: P::Key,
        hash: u64,
        now: Instant,
    ) -> ResponseFuture<S, Req, P>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        Req: Send + 'static,
        P: CachePolicyFor<Req, S::Response>,
    {
        let tiers = &self.tiers;
        tiers.stats.l2_lookups.incr();
        let epoch = tiers.epoch(hash);
        let stale = match tiers.l2_lookup(hash, &key, now, epoch) {
            Found::Hit(v, age) => {
                return ResponseFuture::ready(self.policy.to_response_aged(&v, age));
            }
            Found::Refresh(v, age) => {
                let res = self.policy.to_response_aged(&v, age);
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    tracing::trace!(hash, ?age, "cache: background refresh");
                    tiers.stats.refreshes.incr();
                    let task = refresh(
                        tiers.clone(),
                        self.policy.clone(),
                        self.inner.clone(),
                        req,
                        key,
                        hash,
                    );
                    drop(rt.spawn(task));
                }
                return ResponseFuture::ready(res);
            }
            Found::Miss(stale) => stale,
        };
        let join = tiers.flights.join(hash, &key, stale.is_some());
        let mut miss = Miss {
            tiers: tiers.clone(),
            policy: self.policy.clone(),
            key,
            hash,
            epoch,
            req: None,
            svc: None,
            stale,
            role: Role::Alone,
        };
        match join {
            Join::Lead(id) => {
                miss.role = Role::Leader(id);
                if let Some(get) = self.tiers.remote_get(&miss.key) {
                    miss.req = Some(req);
                    miss.svc = Some(self.take_ready());
                    return ResponseFuture::remote(miss, get);
                }
                self.tiers.stats.inner_calls.incr();
                let fut = self.inner.call(req);
                ResponseFuture::call(miss, fut)
            }
            Join::Wait(rx) => {
                miss.role = Role::Waiter(rx);
                miss.req = Some(req);
                miss.svc = Some(self.take_ready());
                let wait = self.tiers.cfg.coalesce_timeout;
                ResponseFuture::wait(miss, wait)
            }
        }
    }
}

impl<S: Clone, P: CachePolicy> Cache<S, P> {
    /// Takes the readied inner service for a miss that may call it later, leaving an unready
    /// clone behind (tower's usual pattern for services that call from their future).
    fn take_ready(&mut self) -> S {
        let fresh = self.inner.clone();
        std::mem::replace(&mut self.inner, fresh)
    }
}
