//! The admission service.

use crate::classify::{OneClass, Prioritize, Ticket};
use crate::config::ReadyMode;
use crate::controller::{Controller, ShardRef, Shards};
use crate::error::{Reason, Rejected};
use crate::future::{Permit, ResponseFuture, Waiter};
use crate::queue::Enqueued;
use crate::ratelimit::RateLimitState;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tollgate_core::BoxError;
use tower_service::Service;

/// Admits requests by priority class. Built by [`AdmissionLayer`](crate::AdmissionLayer); see
/// the [crate docs](crate).
pub struct Admission<S, P = OneClass> {
    inner: S,
    parts: Arc<Parts<P>>,
    mode: ReadyMode,
}

/// What the clones of one service share, behind one reference count: a clone (one per request
/// in many servers) costs one increment.
pub(crate) struct Parts<P> {
    pub(crate) shards: Arc<Shards>,
    pub(crate) prioritizer: Arc<P>,
}

impl<S, P> Admission<S, P> {
    pub(crate) fn new(inner: S, parts: Arc<Parts<P>>, mode: ReadyMode) -> Self {
        Self { inner, parts, mode }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The inner service for a request that leaves `call` before it is admitted: in ready mode
/// `Inner`, the instance the caller readied (this service goes on with a fresh, unready
/// clone); else a clone to ready later. Returns whether it is readied.
fn park<S: Clone>(inner: &mut S, mode: ReadyMode) -> (S, bool) {
    match mode {
        ReadyMode::Inner => {
            let fresh = inner.clone();
            (std::mem::replace(inner, fresh), true)
        }
        ReadyMode::Always => (inner.clone(), false),
    }
}

/// The shared (Redis) rate-limit check for `key`, falling back to the local limit.
#[cfg(feature = "redis")]
fn remote_check(shard: ShardRef, key: crate::classify::Key) -> crate::future::RateCheck {
    Box::pin(async move {
        let (Some(remote), Some(local)) = (&shard.remote, &shard.rate) else {
            return Ok(None);
        };
        remote.check(key, local).await.result().map(Some)
    })
}

/// Checks that need no capacity: deadline, rate limit, throttle. Returns the time it read and
/// what the request's key has left when it has one.
#[cold]
fn precheck(
    shard: &ShardRef,
    class: usize,
    ticket: &Ticket,
) -> Result<(Instant, Option<RateLimitState>), Rejected> {
    let ctrl: &Controller = shard;
    let now = Instant::now();
    if let Some(d) = ticket.deadline
        && ctrl.unmeetable(d, now)
    {
        return Err(ctrl.reject(class, Reason::Deadline, None));
    }
    let mut left = None;
    if let (Some(rate), Some(key)) = (&ctrl.rate, ticket.key) {
        match rate.check(key) {
            Ok(state) => left = Some(state),
            Err(wait) => return Err(ctrl.reject(class, Reason::RateLimited, Some(wait))),
        }
    }
    if let Some(t) = &ctrl.throttle
        && !t.admit(now)
    {
        let hint = ctrl.retry_hint(0);
        return Err(ctrl.reject(class, Reason::Throttled, Some(hint)));
    }
    Ok((now, left))
}

impl<S: Clone, P> Clone for Admission<S, P> {
    /// The clone holds no reservation: it clones the inner service, which must be readied
    /// again before it is called.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            parts: self.parts.clone(),
            mode: self.mode,
        }
    }
}

impl<S: fmt::Debug, P> fmt::Debug for Admission<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("inner", &self.inner)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl<S, P, R> Service<R> for Admission<S, P>
where
    S: Service<R> + Clone,
    S::Error: Into<BoxError>,
    P: Prioritize<R>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Admission needs the request's class, so it is decided in `call` and the response
        // future; `poll_ready` only forwards the inner service's readiness.
        match self.mode {
            ReadyMode::Inner => self.inner.poll_ready(cx).map_err(Into::into),
            ReadyMode::Always => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: R) -> Self::Future {
        let ticket = self.parts.prioritizer.prioritize(&req);
        let shard = self.parts.shards.local();
        let class = shard.class_of(ticket.class);
        let mut now = None;
        if shard.flags.prechecks || ticket.deadline.is_some() {
            #[cfg(feature = "redis")]
            if shard.flags.remote
                && let Some(key) = ticket.key
            {
                let now = Instant::now();
                if let Some(d) = ticket.deadline
                    && shard.unmeetable(d, now)
                {
                    return ResponseFuture::rejected(shard.reject(class, Reason::Deadline, None));
                }
                if shard.remote.as_ref().is_some_and(|r| r.allow(now)) {
                    let check = remote_check(shard.clone(), key);
                    let shard = shard.clone();
                    let (svc, readied) = park(&mut self.inner, self.mode);
                    return ResponseFuture::limiting(
                        check,
                        shard,
                        svc,
                        req,
                        class,
                        ticket.deadline,
                        readied,
                        P::rate_checked,
                    );
                }
            }
            match precheck(shard, class, &ticket) {
                Ok((t, left)) => {
                    now = Some(t);
                    if let Some(state) = left {
                        P::rate_checked(&mut req, state);
                    }
                }
                Err(rejected) => return ResponseFuture::rejected(rejected),
            }
        }
        if shard.try_fast(class) {
            let started = if ticket.deadline.is_some() || shard.flags.wants_latency {
                Some(now.unwrap_or_else(Instant::now))
            } else {
                None
            };
            let permit = Permit::new(shard.clone(), class, started);
            return match self.mode {
                ReadyMode::Inner => ResponseFuture::running(self.inner.call(req), permit),
                ReadyMode::Always => ResponseFuture::readying(self.inner.clone(), req, permit),
            };
        }
        let now = now.unwrap_or_else(Instant::now);
        match shard.enqueue(class, ticket.deadline, now) {
            Enqueued::Granted => {
                let permit = Permit::new(shard.clone(), class, Some(now));
                match self.mode {
                    ReadyMode::Inner => ResponseFuture::running(self.inner.call(req), permit),
                    ReadyMode::Always => ResponseFuture::readying(self.inner.clone(), req, permit),
                }
            }
            Enqueued::Rejected(rejected) => ResponseFuture::rejected(rejected),
            Enqueued::Waiting(id, expires, reason) => {
                let waiter = Waiter::new(shard.clone(), id);
                let (svc, readied) = park(&mut self.inner, self.mode);
                ResponseFuture::queued(waiter, svc, req, class, readied, expires, reason)
            }
        }
    }
}
