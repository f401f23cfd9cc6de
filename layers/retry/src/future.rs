//! [`ResponseFuture`]: one request's attempts, retries and hedge.
//!
//! At most two attempts are in flight (an attempt and its hedge); a retry waits until none is,
//! and a failure while the other attempt is still running just waits for that one. The first
//! answer the policy accepts wins, and the other attempt is dropped (cancelled) on the spot.

use crate::backoff::full_jitter;
use crate::error::RetriesExhausted;
use crate::policy::{Action, Policy};
use crate::shared::Shared;
use pin_project::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::time::{Instant, Sleep};
use tollgate_core::BoxError;
use tollgate_core::attempt::Attempt;
use tollgate_core::error::is_caused_by;
use tower_service::Service;

/// What the timer is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The backoff (or pushback) before a retry.
    Backoff,
    /// The hedge delay.
    Hedge,
}

/// The response future of [`Retry`](crate::Retry).
///
/// What only retries, hedges and attempt markers need lives in a part allocated by the first
/// of them, so the future of a request that succeeds at once stays small and allocates
/// nothing (a tokio `Sleep` alone is over 100 bytes).
#[pin_project]
pub struct ResponseFuture<S, P, Req>
where
    S: Service<Req>,
{
    #[pin]
    first: Option<S::Future>,
    #[pin]
    second: Option<S::Future>,
    /// An attempt waiting for the service to be ready (`true`: a hedge).
    launch: Option<bool>,
    attempts: u32,
    svc: S,
    replay: Option<Req>,
    cold: Option<Pin<Box<Cold<S::Response>>>>,
    shared: Arc<Shared<P>>,
}

/// The state of retries and hedges.
#[pin_project]
struct Cold<Res> {
    #[pin]
    timer: Option<Sleep>,
    /// What the timer is armed for, if it is.
    wait: Option<Wait>,
    /// When the attempt in each slot started (only with hedging on, which learns latencies).
    started: [Option<Instant>; 2],
    attempt: Option<Attempt>,
    /// The slot a hedge was sent in and its epoch, if one was: whether it won teaches the
    /// hedge delay.
    hedge: Option<(usize, u32)>,
    /// The latest retryable result, answered if nothing better comes.
    last: Option<Result<Res, BoxError>>,
}

impl<Res> Cold<Res> {
    fn new() -> Pin<Box<Self>> {
        Box::pin(Self {
            timer: None,
            wait: None,
            started: [None, None],
            attempt: None,
            hedge: None,
            last: None,
        })
    }

    /// Arms the timer for `wait` at `at`, reusing the timer if there is one.
    fn arm(self: Pin<&mut Self>, wait: Wait, at: Instant) {
        let mut this = self.project();
        match this.timer.as_mut().as_pin_mut() {
            Some(t) => t.reset(at),
            None => this.timer.set(Some(tokio::time::sleep_until(at))),
        }
        *this.wait = Some(wait);
    }
}

/// The cold part of a future, made on first use.
fn cold<Res>(cold: &mut Option<Pin<Box<Cold<Res>>>>) -> Pin<&mut Cold<Res>> {
    cold.get_or_insert_with(Cold::new).as_mut()
}

impl<S, P, Req> fmt::Debug for ResponseFuture<S, P, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field(
                "in_flight",
                &(self.first.is_some() as u8 + self.second.is_some() as u8),
            )
            .field("waiting", &self.cold.as_ref().and_then(|c| c.wait))
            .finish_non_exhaustive()
    }
}

impl<S, P, Req> ResponseFuture<S, P, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Policy<Req, S::Response>,
{
    /// Sends the first attempt on `svc`, which the caller has readied.
    pub(crate) fn new(mut svc: S, mut req: Req, shared: Arc<Shared<P>>) -> Self {
        let core = &shared.core;
        // The copy is taken before the first attempt is marked, so it does not carry (and copy)
        // the first attempt's mark: each replay is marked with its own before it is sent.
        let replay = if core.config.max_attempts > 1 {
            shared.policy.clone_request(&req)
        } else {
            None
        };
        let attempt = shared.policy.marks_attempts().then(|| {
            let first = Attempt::first();
            shared.policy.on_attempt(&mut req, &first);
            first
        });
        let start = core.estimator.is_some().then(Instant::now);
        let fut = svc.call(req);
        let mut cold_part = None;
        if attempt.is_some() || start.is_some() {
            let mut c = cold(&mut cold_part);
            let hedge_at = start.and_then(|s| hedge_deadline(&shared, 1, replay.as_ref(), s));
            if let Some(at) = hedge_at {
                c.as_mut().arm(Wait::Hedge, at);
            }
            let c = c.project();
            c.started[0] = start;
            *c.attempt = attempt;
        }
        ResponseFuture {
            first: Some(fut),
            second: None,
            launch: None,
            attempts: 1,
            svc,
            replay,
            cold: cold_part,
            shared,
        }
    }
}

/// When to hedge an attempt started at `start`, if a hedge may follow it: the request has a
/// copy for replays (`replay`), the policy lets it be sent twice while the first copy may
/// still be running ([`Policy::may_hedge`]), and attempts are left.
fn hedge_deadline<P, Req, Res>(
    shared: &Shared<P>,
    attempts: u32,
    replay: Option<&Req>,
    start: Instant,
) -> Option<Instant>
where
    P: Policy<Req, Res>,
{
    let core = &shared.core;
    if attempts >= core.config.max_attempts || !replay.is_some_and(|r| shared.policy.may_hedge(r)) {
        return None;
    }
    let delay = core.estimator.as_ref()?.delay()?;
    Some(start + delay)
}

/// The answer when the layer stops retrying a retryable result.
fn give_up<P, Req, Res>(
    shared: &Shared<P>,
    result: Result<Res, BoxError>,
    attempts: u32,
    budget: bool,
) -> Result<Res, BoxError>
where
    P: Policy<Req, Res>,
{
    // A layer that never retried leaves the decision to the layers further out.
    if attempts <= 1 && !budget {
        return result;
    }
    tracing::trace!(attempts, budget, "giving up");
    match result {
        Ok(mut res) => {
            shared.policy.on_give_up(&mut res);
            if budget {
                shared.policy.on_budget_exhausted(&mut res);
            }
            Ok(res)
        }
        Err(e) => Err(Box::new(RetriesExhausted::new(attempts, budget, e))),
    }
}

impl<S, P, Req> Future for ResponseFuture<S, P, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Policy<Req, S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        let core = &*shared.core;
        loop {
            // 1. An attempt waiting for the service to be ready.
            if let Some(hedge) = *this.launch {
                match this.svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        *this.launch = None;
                        let copy = this
                            .replay
                            .as_ref()
                            .and_then(|r| shared.policy.clone_request(r));
                        if let Some(mut req) = copy {
                            *this.attempts += 1;
                            if let Some(c) = this.cold.as_mut() {
                                let c = c.as_mut().project();
                                if let Some(prev) = c.attempt.as_mut() {
                                    let next = prev.next(hedge);
                                    shared.policy.on_attempt(&mut req, &next);
                                    *prev = next;
                                }
                            }
                            tracing::trace!(attempt = *this.attempts, hedge, "sending again");
                            let start = core.estimator.is_some().then(Instant::now);
                            let fut = this.svc.call(req);
                            let slot = if this.first.is_none() {
                                this.first.set(Some(fut));
                                0
                            } else {
                                this.second.set(Some(fut));
                                1
                            };
                            if let Some(s) = start {
                                let mut c = cold(this.cold);
                                c.as_mut().project().started[slot] = Some(s);
                                if let (true, Some(est)) = (hedge, &core.estimator) {
                                    *c.as_mut().project().hedge = Some((slot, est.epoch()));
                                }
                                let alone = this.first.is_none() || this.second.is_none();
                                let hedge_at =
                                    hedge_deadline(shared, *this.attempts, this.replay.as_ref(), s);
                                *c.as_mut().project().wait = None;
                                if let (true, Some(at)) = (alone, hedge_at) {
                                    c.arm(Wait::Hedge, at);
                                }
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        *this.launch = None;
                        if this.first.is_none() && this.second.is_none() {
                            return Poll::Ready(Err(e.into()));
                        }
                    }
                    Poll::Pending => {}
                }
            }

            // 2. The attempts in flight.
            let mut done = None;
            if let Some(f) = this.first.as_mut().as_pin_mut()
                && let Poll::Ready(r) = f.poll(cx)
            {
                this.first.set(None);
                done = Some((r, 0));
            }
            if done.is_none()
                && let Some(f) = this.second.as_mut().as_pin_mut()
                && let Poll::Ready(r) = f.poll(cx)
            {
                this.second.set(None);
                done = Some((r, 1));
            }
            if let Some((result, slot)) = done {
                let result = result.map_err(Into::into);
                let action = match (&result, this.replay.as_ref()) {
                    // A layer further in gave up on it: do not multiply its retries.
                    (Err(e), _) if is_caused_by::<RetriesExhausted>(&**e) => Action::Return,
                    (_, Some(req)) => shared.policy.classify(req, result.as_ref()),
                    // Not replayable: nothing to decide.
                    (_, None) => Action::Return,
                };
                let started = this.cold.as_ref().and_then(|c| c.started[slot]);
                if let (Ok(_), Action::Return, Some(est), Some(start)) =
                    (&result, action, &core.estimator, started)
                {
                    let now = Instant::now();
                    est.record(now.saturating_duration_since(start), now);
                }
                let pause = match action {
                    Action::Return => {
                        if let (Some(est), Some((h, epoch))) =
                            (&core.estimator, this.cold.as_ref().and_then(|c| c.hedge))
                        {
                            est.hedge_outcome(h == slot, epoch);
                        }
                        // The winner: cancel the rest.
                        this.first.set(None);
                        this.second.set(None);
                        *this.cold = None;
                        return Poll::Ready(result);
                    }
                    Action::RetryAfter(d) => Some(d),
                    Action::Retry => None,
                };
                if this.first.is_some() || this.second.is_some() || this.launch.is_some() {
                    // Another attempt is already under way and stands in for the retry.
                    *cold(this.cold).project().last = Some(result);
                    continue;
                }
                if pause.is_some_and(|d| d > core.config.max_pushback) {
                    // The service asks for a longer pause than the caller should wait: give
                    // up (marked, when there were retries, so layers further out do not retry
                    // it again).
                    return Poll::Ready(give_up(shared, result, *this.attempts, false));
                }
                if this.replay.is_none() || *this.attempts >= core.config.max_attempts {
                    return Poll::Ready(give_up(shared, result, *this.attempts, false));
                }
                if !core.budget.try_withdraw() {
                    return Poll::Ready(give_up(shared, result, *this.attempts, true));
                }
                let pause = pause.unwrap_or_else(|| {
                    full_jitter(&core.config.backoff, *this.attempts, &core.jitter)
                });
                let mut c = cold(this.cold);
                *c.as_mut().project().last = Some(result);
                if pause.is_zero() {
                    // No timer (and no runtime timer needed) for an immediate retry.
                    *c.project().wait = None;
                    *this.launch = Some(false);
                } else {
                    c.arm(Wait::Backoff, Instant::now() + pause);
                }
                continue;
            }

            // 3. The timer: a retry's backoff, or the hedge delay.
            if let Some(c) = this.cold.as_mut()
                && let Some(wait) = c.wait
            {
                let c = c.as_mut().project();
                if let Some(t) = c.timer.as_pin_mut() {
                    ready!(t.poll(cx));
                }
                *c.wait = None;
                match wait {
                    Wait::Backoff => *this.launch = Some(false),
                    Wait::Hedge => {
                        if *this.attempts < core.config.max_attempts
                            && this.launch.is_none()
                            && core.budget.try_withdraw_hedge()
                        {
                            *this.launch = Some(true);
                        }
                    }
                }
                continue;
            }

            if this.first.is_none() && this.second.is_none() && this.launch.is_none() {
                // Unreachable in practice: every path that empties both slots returns.
                if let Some(last) = this
                    .cold
                    .as_mut()
                    .and_then(|c| c.as_mut().project().last.take())
                {
                    return Poll::Ready(last);
                }
            }
            return Poll::Pending;
        }
    }
}
