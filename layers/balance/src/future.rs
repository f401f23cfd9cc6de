//! The response future and the in-flight slot it carries.

use crate::endpoint::{Core, CoreRef};
use crate::sync::Arc;
use pin_project::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tollgate_core::classify::classify_upstream;
use tollgate_core::{BoxError, Classify, Outcome};

/// A slot taken on one endpoint: reserved by `poll_ready`, started by `call`, given back when
/// dropped. A request dropped before it finished raises the latency estimate (it took at
/// least that long) and counts as a failure when it ran past `cancel_failure_after`.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// The endpoint's state, through this thread's reference (see `Endpoint::handle`).
    core: Arc<CoreRef>,
    start: Option<u64>,
    /// Whether a success reads the clock to sample the latency ([`Common::time_to_end`]).
    ///
    /// [`Common::time_to_end`]: crate::common::Common::time_to_end
    timed: bool,
}

impl InFlight {
    /// Wraps a slot that `Core::reserve` granted.
    pub(crate) fn reserved(core: Arc<CoreRef>) -> Self {
        Self {
            core,
            start: None,
            timed: true,
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// Marks the request as sent at `now`, a fresh clock read.
    pub(crate) fn start(&mut self, now: u64) {
        self.start = Some(now);
        self.timed = self.core.has_signal() || self.core.common.time_to_end(now);
    }

    /// Records the outcome of the request and gives the slot back.
    pub(crate) fn complete(mut self, outcome: Outcome) {
        if outcome == Outcome::Success
            && !self.timed
            && let Some(start) = self.start.take()
        {
            self.core.succeed_untimed(start);
            return;
        }
        let now = self.core.common.now();
        let start = self.start.take().unwrap_or(now);
        if self.core.finish(now, start, outcome) {
            self.core.common.try_eject(&self.core, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(start) = self.start.take() {
            let common = &self.core.common;
            let now = common.now();
            let outcome = common.cancelled(now.saturating_sub(start));
            if self.core.finish(now, start, outcome) {
                common.try_eject(&self.core, now);
            }
        }
        self.core.release();
    }
}

/// The response future of [`Balance`](crate::Balance): the endpoint's future, plus the slot
/// that records its latency and outcome when it finishes.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F, C> {
    #[pin]
    inner: F,
    slot: Option<InFlight>,
    classify: C,
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(inner: F, slot: InFlight, classify: C) -> Self {
        Self {
            inner,
            slot: Some(slot),
            classify,
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
        let res = ready!(this.inner.poll(cx));
        let Some(slot) = this.slot.take() else {
            return Poll::Ready(res.map_err(Into::into));
        };
        // A 429/503 with `Retry-After` (per the classifier) lowers the endpoint's share.
        if let Ok(r) = &res
            && let Some(wait) = this.classify.back_off(r)
        {
            let core = slot.core();
            core.back_off(core.common.now(), wait);
        }
        // A rejection by a tollgate layer below (the endpoint's pool shedding) is not the
        // endpoint failing: ignored by the outlier detector. Except the endpoint's own breaker
        // refusing (`Refused`, behind its `Open`): that endpoint has been failing, and without
        // a breaker signal (`insert_with_signal`) its quick refusals would make it look like
        // the cheapest endpoint; it counts against the endpoint here (and is ignored by the
        // layers above the balancer, which see a rejection).
        let (mut outcome, res) = classify_upstream(this.classify, res);
        if outcome == tollgate_core::Outcome::Ignored
            && let Err(e) = &res
            && crate::error::refused_by_endpoint(&**e)
        {
            outcome = tollgate_core::Outcome::Failure;
        }
        slot.complete(outcome);
        Poll::Ready(res)
    }
}
