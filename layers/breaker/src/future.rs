//! The response future: records the call's outcome in the breaker when it finishes.

use crate::error::Open;
use crate::machine::Core;
use crate::sync::Arc;
use crate::word::Permit;
use pin_project::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::time::Instant;
use tollgate_core::classify::classify_upstream;
use tollgate_core::{BoxError, Classify, Outcome};

/// What a response future holds on to: the breaker and the classifier. A service has one per
/// shard (one per key for the keyed breaker), so futures on different cores do not contend on
/// one reference count. Aligned to its own cache lines (128 bytes, as crossbeam's
/// `CachePadded` on x86-64), so two shards' reference counts never share a line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Local<C> {
    pub(crate) core: Arc<Core>,
    pub(crate) classify: C,
}

pub(crate) fn nanos_since(base: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// Reads the breaker's clock.
pub(crate) fn now_ns(core: &Core) -> u64 {
    nanos_since(core.base, Instant::now())
}

/// An admitted call: gives the permit back when dropped unfinished (counting a failure when the
/// drop comes from a panic in the inner service).
#[derive(Debug)]
pub(crate) struct Guard<C> {
    local: std::sync::Arc<Local<C>>,
    permit: Option<Permit>,
    start: Option<Instant>,
}

impl<C> Guard<C> {
    pub(crate) fn new(local: std::sync::Arc<Local<C>>, permit: Permit) -> Self {
        Self {
            local,
            permit: Some(permit),
            start: None,
        }
    }

    /// Starts the call's clock if slow-call detection needs it.
    #[inline]
    pub(crate) fn start(&mut self) {
        if self.local.core.times_calls() {
            self.start = Some(Instant::now());
        }
    }

    #[inline]
    fn finish(&mut self, outcome: Outcome) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let core = &*self.local.core;
        let end = (self.start.is_some() || core.records_time()).then(Instant::now);
        let elapsed = match (self.start, end) {
            (Some(s), Some(e)) => nanos_since(s, e),
            _ => 0,
        };
        core.record(permit, outcome, elapsed, || match end {
            Some(e) => nanos_since(core.base, e),
            None => now_ns(core),
        });
    }
}

impl<C> Drop for Guard<C> {
    /// A call dropped before it finished (the caller gave up: a timeout above, a client gone)
    /// is not a failure: nothing says the upstream failed it. But one that already ran past
    /// `slow_call_duration` was slow whatever happens next, and counts as a slow call, so an
    /// upstream that hangs trips the slow-call rate even when every call is cut off by a
    /// timeout above the breaker (and a half-open breaker's cancelled probes decide).
    fn drop(&mut self) {
        if self.permit.is_some() {
            if std::thread::panicking() {
                self.finish(Outcome::Failure);
            } else if self
                .start
                .is_some_and(|s| nanos_since(s, Instant::now()) >= self.local.core.slow_ns())
            {
                self.finish(Outcome::Success);
            } else if let Some(permit) = self.permit.take() {
                self.local.core.release(permit);
            }
        }
    }
}

/// The future returned by [`Breaker`](crate::Breaker) and [`KeyedBreaker`](crate::KeyedBreaker):
/// either an immediate [`Open`] rejection or the inner call, whose outcome it records.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: Kind<F>,
    guard: Option<Guard<C>>,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind<F> {
    Rejected(Option<Open>),
    Called(#[pin] F),
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn rejected(open: Open) -> Self {
        Self {
            kind: Kind::Rejected(Some(open)),
            guard: None,
        }
    }

    pub(crate) fn called(fut: F, guard: Guard<C>) -> Self {
        Self {
            kind: Kind::Called(fut),
            guard: Some(guard),
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected(open) => Poll::Ready(Err(Box::new(
                open.take().expect("ResponseFuture polled after completion"),
            ))),
            KindProj::Called(fut) => {
                let result = ready!(fut.poll(cx));
                let Some(mut guard) = this.guard.take() else {
                    return Poll::Ready(result.map_err(Into::into));
                };
                // A rejection by a tollgate layer below (a pool shedding, no endpoints) says
                // nothing about the upstream: ignored, never a failure.
                let (outcome, result) = classify_upstream(&guard.local.classify, result);
                // A failed answer that asks for a pause (a 503 with `Retry-After`): an open
                // breaker waits at least that long (capped) before its probe. Only a failure
                // does: a 429 is one client's quota, the client's doing as any 4xx, and must
                // not hold the breaker open for everyone.
                if outcome == Outcome::Failure
                    && let Ok(res) = &result
                    && let Some(pause) = guard.local.classify.back_off(res)
                {
                    let core = &guard.local.core;
                    core.back_off(now_ns(core), pause);
                }
                guard.finish(outcome);
                Poll::Ready(result)
            }
        }
    }
}
