//! The response future: waits in the queue if it must, then drives the inner call, and gives
//! the slot of capacity back when it finishes or is dropped.

use crate::controller::{Controller, ShardRef};
use crate::error::{Reason, Rejected};
use crate::queue::{Enqueued, WaiterId};
use crate::ratelimit::RateLimitState;
use pin_project::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::time::{Instant, Sleep};
use tollgate_core::capacity::Slot;
use tollgate_core::error::{Overloaded, RateLimited, is_caused_by};
use tollgate_core::{BoxError, Outcome};
use tower_service::Service;

/// A slot of capacity, given back on drop.
pub(crate) struct Permit {
    ctrl: ShardRef,
    class: usize,
    started: Option<Instant>,
    outcome: Outcome,
    /// What a dynamic capacity took when the request started (a tollgate-pool permit's
    /// worth, for instance), handed back when it ends.
    slot: Slot,
    /// It ended with an outcome (otherwise it was dropped: cancelled).
    finished: bool,
}

impl Permit {
    #[inline]
    pub(crate) fn new(ctrl: ShardRef, class: usize, started: Option<Instant>) -> Self {
        let slot = match ctrl.dynamic.as_ref() {
            Some(c) if ctrl.flags.dynamic => c.on_start(),
            _ => Slot::EMPTY,
        };
        Self {
            ctrl,
            class,
            started,
            outcome: Outcome::Ignored,
            slot,
            finished: false,
        }
    }

    /// The inner service failed before the call: a failure, not an accept.
    fn fail(mut self) {
        self.outcome = Outcome::Failure;
        self.finished = true;
    }

    /// Records how the call ended, then gives the slot back.
    fn finish<T>(mut self, result: &Result<T, BoxError>) {
        self.outcome = match result {
            Ok(_) => Outcome::Success,
            // A tollgate rejection below (no endpoints, a pool shedding) is not the backend
            // failing: the pool's permit does not learn from it.
            Err(e) if tollgate_core::error::is_rejection(&**e) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        };
        self.finished = true;
        if self.ctrl.flags.throttle
            && let Some(t) = &self.ctrl.throttle
        {
            // An answer that is not an overload rejection counts as accepted by the backend.
            let accepted = match result {
                Ok(_) => true,
                Err(e) => !is_caused_by::<Overloaded>(&**e) && !is_caused_by::<RateLimited>(&**e),
            };
            if accepted {
                t.accepted(Instant::now());
            }
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        // The capacity hears first, so that its own books (a pool's permits) are square
        // before the slot can go to the next request.
        let mut now = None;
        if self.ctrl.flags.dynamic
            && let Some(c) = self.ctrl.dynamic.as_ref()
        {
            if self.finished {
                now = self.started.map(|_| Instant::now());
                let latency = self
                    .started
                    .zip(now)
                    .map(|(s, n)| n.saturating_duration_since(s));
                c.on_release(self.slot, latency, self.outcome);
            } else {
                c.on_cancel(self.slot);
            }
        }
        self.ctrl.release(self.class, self.started, now);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

/// A queued request's claim; dropping it leaves the queue (or gives back a slot granted
/// meanwhile).
#[derive(Debug)]
pub(crate) struct Waiter {
    ctrl: Option<ShardRef>,
    id: WaiterId,
}

impl Waiter {
    pub(crate) fn new(ctrl: ShardRef, id: WaiterId) -> Self {
        Self {
            ctrl: Some(ctrl),
            id,
        }
    }

    fn ctrl(&self) -> &Controller {
        self.ctrl
            .as_ref()
            .expect("a waiter holds its controller until it is settled")
    }

    /// The claim is settled (its slot already freed): stop the drop from cancelling.
    fn settle(mut self) -> ShardRef {
        self.ctrl.take().expect("a waiter is settled once")
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(c) = self.ctrl.take() {
            c.cancel(self.id);
        }
    }
}

/// The response future of [`Admission`](crate::Admission).
#[pin_project]
pub struct ResponseFuture<S, R>
where
    S: Service<R>,
{
    #[pin]
    state: State<S, R, S::Future>,
}

#[pin_project(project = StateProj)]
enum State<S, R, F> {
    /// Already boxed as the caller will receive it: keeps the future small.
    Rejected {
        error: Option<BoxError>,
    },
    /// Boxed: only requests that wait pay for the timer and the parked request, and the
    /// future stays small on the fast path.
    Queued {
        queued: Pin<Box<Queued<S, R>>>,
    },
    /// Waiting for the shared rate limit (Redis) before admission.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Limiting {
        limiting: Box<Limiting<S, R>>,
    },
    Readying {
        svc: S,
        req: Option<R>,
        permit: Option<Permit>,
    },
    Running {
        #[pin]
        fut: F,
        permit: Option<Permit>,
    },
    Done,
}

#[pin_project]
struct Queued<S, R> {
    waiter: Option<Waiter>,
    svc: Option<S>,
    req: Option<R>,
    class: usize,
    /// Whether `svc` was readied by the caller's `poll_ready` (ready mode `Inner`).
    readied: bool,
    reason: Reason,
    #[pin]
    timer: Sleep,
}

/// The rate-limit check in flight, and what admission needs afterwards.
pub(crate) type RateCheck =
    Pin<Box<dyn Future<Output = Result<Option<RateLimitState>, std::time::Duration>> + Send>>;

struct Limiting<S, R> {
    check: RateCheck,
    /// The prioritizer's [`rate_checked`](crate::Prioritize::rate_checked), called on the
    /// request once the check lets it through.
    report: fn(&mut R, RateLimitState),
    shard: ShardRef,
    svc: Option<S>,
    req: Option<R>,
    class: usize,
    deadline: Option<Instant>,
    readied: bool,
}

/// Admission for a request that is not on the service's fast path (it already left the
/// service): take a slot, or queue, or be turned away.
fn admit<S, R>(
    shard: ShardRef,
    class: usize,
    deadline: Option<Instant>,
    now: Instant,
    mut svc: S,
    req: R,
    readied: bool,
) -> Result<State<S, R, S::Future>, Rejected>
where
    S: Service<R>,
{
    let granted = shard.try_fast(class) || {
        match shard.enqueue(class, deadline, now) {
            Enqueued::Granted => true,
            Enqueued::Rejected(r) => return Err(r),
            Enqueued::Waiting(id, expires, reason) => {
                let queued = Queued {
                    waiter: Some(Waiter::new(shard, id)),
                    svc: Some(svc),
                    req: Some(req),
                    class,
                    readied,
                    reason,
                    timer: tokio::time::sleep_until(expires),
                };
                return Ok(State::Queued {
                    queued: Box::pin(queued),
                });
            }
        }
    };
    debug_assert!(granted);
    let permit = Some(Permit::new(shard, class, Some(now)));
    Ok(if readied {
        State::Running {
            fut: svc.call(req),
            permit,
        }
    } else {
        State::Readying {
            svc,
            req: Some(req),
            permit,
        }
    })
}

impl<S, R> ResponseFuture<S, R>
where
    S: Service<R>,
{
    /// A request that waits for the shared rate limit first.
    #[cfg(feature = "redis")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn limiting(
        check: RateCheck,
        shard: ShardRef,
        svc: S,
        req: R,
        class: usize,
        deadline: Option<Instant>,
        readied: bool,
        report: fn(&mut R, RateLimitState),
    ) -> Self {
        let limiting = Limiting {
            check,
            report,
            shard,
            svc: Some(svc),
            req: Some(req),
            class,
            deadline,
            readied,
        };
        Self {
            state: State::Limiting {
                limiting: Box::new(limiting),
            },
        }
    }

    pub(crate) fn rejected(error: Rejected) -> Self {
        Self {
            state: State::Rejected {
                error: Some(Box::new(error)),
            },
        }
    }

    #[inline]
    pub(crate) fn running(fut: S::Future, permit: Permit) -> Self {
        Self {
            state: State::Running {
                fut,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn readying(svc: S, req: R, permit: Permit) -> Self {
        Self {
            state: State::Readying {
                svc,
                req: Some(req),
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn queued(
        waiter: Waiter,
        svc: S,
        req: R,
        class: usize,
        readied: bool,
        expires: Instant,
        reason: Reason,
    ) -> Self {
        let queued = Queued {
            waiter: Some(waiter),
            svc: Some(svc),
            req: Some(req),
            class,
            readied,
            reason,
            timer: tokio::time::sleep_until(expires),
        };
        Self {
            state: State::Queued {
                queued: Box::pin(queued),
            },
        }
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Rejected { error } => {
                    let e = error
                        .take()
                        .expect("ResponseFuture polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Err(e));
                }
                StateProj::Queued { queued } => {
                    let q = queued.as_mut().project();
                    let (waiter, svc, req, class, readied, reason, timer) = (
                        q.waiter, q.svc, q.req, q.class, q.readied, q.reason, q.timer,
                    );
                    let w = waiter.as_ref().expect("a queued future holds its waiter");
                    let res = match w.ctrl().poll_waiter(w.id, cx) {
                        Poll::Ready(r) => r,
                        Poll::Pending => {
                            ready!(timer.poll(cx));
                            w.ctrl().expire(w.id, *reason, cx)
                        }
                    };
                    let ctrl = waiter
                        .take()
                        .expect("a queued future holds its waiter")
                        .settle();
                    if let Err(e) = res {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let permit = Permit::new(ctrl, *class, Some(Instant::now()));
                    let mut svc = svc.take().expect("a queued future holds its service");
                    let req = req.take().expect("a queued future holds its request");
                    if *readied {
                        State::Running {
                            fut: svc.call(req),
                            permit: Some(permit),
                        }
                    } else {
                        State::Readying {
                            svc,
                            req: Some(req),
                            permit: Some(permit),
                        }
                    }
                }
                StateProj::Limiting { limiting } => {
                    let l = &mut **limiting;
                    let res = ready!(l.check.as_mut().poll(cx));
                    let now = Instant::now();
                    let checked = match res {
                        Err(wait) => Err(l.shard.reject(l.class, Reason::RateLimited, Some(wait))),
                        Ok(state) => match &l.shard.throttle {
                            Some(t) if !t.admit(now) => {
                                let hint = l.shard.retry_hint(0);
                                Err(l.shard.reject(l.class, Reason::Throttled, Some(hint)))
                            }
                            _ => {
                                let svc =
                                    l.svc.take().expect("a limiting future holds its service");
                                let mut req =
                                    l.req.take().expect("a limiting future holds its request");
                                if let Some(state) = state {
                                    (l.report)(&mut req, state);
                                }
                                admit(
                                    l.shard.clone(),
                                    l.class,
                                    l.deadline,
                                    now,
                                    svc,
                                    req,
                                    l.readied,
                                )
                            }
                        },
                    };
                    match checked {
                        Ok(next) => next,
                        Err(e) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                    }
                }
                StateProj::Readying { svc, req, permit } => {
                    if let Err(e) = ready!(svc.poll_ready(cx)) {
                        let e: BoxError = e.into();
                        if let Some(p) = permit.take() {
                            p.fail();
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e));
                    }
                    let req = req.take().expect("a readying future holds its request");
                    State::Running {
                        fut: svc.call(req),
                        permit: permit.take(),
                    }
                }
                StateProj::Running { fut, permit } => {
                    let out = ready!(fut.poll(cx)).map_err(Into::into);
                    if let Some(p) = permit.take() {
                        p.finish(&out);
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(out);
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            this.state.set(next);
        }
    }
}

impl<S, R> fmt::Debug for ResponseFuture<S, R>
where
    S: Service<R>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Queued { .. } => "queued",
            State::Limiting { .. } => "rate limiting",
            State::Readying { .. } => "readying",
            State::Running { .. } => "running",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
