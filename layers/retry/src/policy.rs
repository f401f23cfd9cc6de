//! What to retry: the [`Policy`] trait, and [`RetryErrors`] for clonable requests.

use std::time::Duration;
use tollgate_core::BoxError;
use tollgate_core::attempt::Attempt;

/// What to do with the result of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Give this result to the caller: a success, a failure that is not worth retrying, or a
    /// pushback that says not to retry (a negative `grpc-retry-pushback-ms`).
    Return,
    /// A failure worth retrying after the backoff, if the attempts and the budget allow.
    Retry,
    /// A failure worth retrying after this pushback from the service (`Retry-After`,
    /// `grpc-retry-pushback-ms`) instead of the backoff. A pushback longer than
    /// [`max_pushback`](crate::RetryConfig::max_pushback) ends the retries.
    RetryAfter(Duration),
}

/// Decides which results are retried and how a request is copied for another attempt.
///
/// The layer converts inner errors into [`BoxError`] before asking, so one policy serves any
/// inner error type. A failure that a retry layer further in already gave up on
/// ([`RetriesExhausted`](crate::RetriesExhausted) in its error chain) is never retried again,
/// whatever the policy says, so stacked retry layers do not multiply the load.
pub trait Policy<Req, Res> {
    /// What to do with the result of one attempt of `req` (the copy kept for replays).
    fn classify(&self, req: &Req, result: Result<&Res, &BoxError>) -> Action;

    /// A copy of `req` for another attempt, or `None` when it cannot be replayed (a body too
    /// large to buffer, a one-shot stream): such a request gets exactly one attempt.
    fn clone_request(&self, req: &Req) -> Option<Req>;

    /// Whether `req` may be hedged: sent again while its first attempt may still be running
    /// (and may already have reached the service), which a retry of a failed attempt is not.
    /// Only a request that is safe to run twice may be. `true` by default (the default
    /// policies retry requests the caller declared repeatable); [`HttpPolicy`](crate::http::HttpPolicy)
    /// hedges idempotent methods, requests with an `Idempotency-Key`, and gRPC calls (a route
    /// with hedging configured is their opt-in, as a hedging policy is in gRPC's service
    /// config).
    fn may_hedge(&self, req: &Req) -> bool {
        let _ = req;
        true
    }

    /// Marks the request about to be sent with its [`Attempt`], so a balancer further in can
    /// skip the endpoints earlier attempts went to (see
    /// [`tollgate_core::attempt`]). Called before each attempt, the first included (after
    /// the copy for replays is taken, so the copy carries no mark of its own). Does nothing by
    /// default.
    fn on_attempt(&self, req: &mut Req, attempt: &Attempt) {
        let _ = (req, attempt);
    }

    /// Whether [`on_attempt`](Policy::on_attempt) uses its argument; when `false` (the
    /// default) the layer does not build an [`Attempt`] (which allocates its tried set).
    fn marks_attempts(&self) -> bool {
        false
    }

    /// Called when the layer gives up on a retryable `Ok` answer (an HTTP 503 after the last
    /// attempt), before it reaches the caller, so an outer retry layer can tell (the HTTP
    /// policy adds a [`RetriesExhausted`](crate::RetriesExhausted)-like extension). Does
    /// nothing by default.
    fn on_give_up(&self, res: &mut Res) {
        let _ = res;
    }

    /// Called after [`on_give_up`](Policy::on_give_up) when it was the budget that refused
    /// the retry a retryable `Ok` answer asked for (an error says so itself:
    /// [`RetriesExhausted::budget_exhausted`](crate::RetriesExhausted::budget_exhausted)), so
    /// a caller can count the requests the budget left short. Does nothing by default.
    fn on_budget_exhausted(&self, res: &mut Res) {
        let _ = res;
    }
}

/// Retries every error (not `Ok` answers) of requests that implement `Clone`, like tower's
/// retry with a policy that clones; the default policy.
///
/// Use it where every request is safe to repeat (idempotent reads, or a service that
/// deduplicates); otherwise write a [`Policy`] that looks at the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryErrors;

impl<Req: Clone, Res> Policy<Req, Res> for RetryErrors {
    fn classify(&self, _req: &Req, result: Result<&Res, &BoxError>) -> Action {
        match result {
            Ok(_) => Action::Return,
            Err(_) => Action::Retry,
        }
    }

    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// A [`Policy`] from a classifying closure, for requests that implement `Clone`.
///
/// ```
/// use tollgate_retry::{Action, policy_fn};
/// // Retry errors, and `Ok` answers at or above 500.
/// let policy = policy_fn(|_req: &u32, res: Result<&u16, &tollgate_core::BoxError>| match res {
///     Ok(status) if *status >= 500 => Action::Retry,
///     Ok(_) => Action::Return,
///     Err(_) => Action::Retry,
/// });
/// # let _ = policy;
/// ```
pub fn policy_fn<F>(classify: F) -> PolicyFn<F> {
    PolicyFn(classify)
}

/// The [`Policy`] of [`policy_fn`].
#[derive(Debug, Clone, Copy)]
pub struct PolicyFn<F>(F);

impl<F, Req: Clone, Res> Policy<Req, Res> for PolicyFn<F>
where
    F: Fn(&Req, Result<&Res, &BoxError>) -> Action,
{
    fn classify(&self, req: &Req, result: Result<&Res, &BoxError>) -> Action {
        (self.0)(req, result)
    }

    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

/// Wraps a policy so that every attempt of a request that implements
/// [`Attempts`](tollgate_core::attempt::Attempts) carries its [`Attempt`] marker (the
/// `http::HttpPolicy` does this itself for `http::Request`).
///
/// ```
/// use tollgate_core::attempt::{Attempt, Attempts};
/// use tollgate_retry::{MarkAttempts, RetryErrors, RetryConfig, RetryLayer};
///
/// #[derive(Clone)]
/// struct Query { sql: String, attempt: Option<Attempt> }
///
/// impl Attempts for Query {
///     fn attempt(&self) -> Option<&Attempt> { self.attempt.as_ref() }
///     fn set_attempt(&mut self, attempt: Attempt) { self.attempt = Some(attempt) }
/// }
///
/// let layer = RetryLayer::new(RetryConfig::default()).unwrap().with_policy(MarkAttempts(RetryErrors));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkAttempts<P>(pub P);

impl<P, Req, Res> Policy<Req, Res> for MarkAttempts<P>
where
    P: Policy<Req, Res>,
    Req: tollgate_core::attempt::Attempts,
{
    fn classify(&self, req: &Req, result: Result<&Res, &BoxError>) -> Action {
        self.0.classify(req, result)
    }

    fn clone_request(&self, req: &Req) -> Option<Req> {
        self.0.clone_request(req)
    }

    fn on_attempt(&self, req: &mut Req, attempt: &Attempt) {
        req.set_attempt(attempt.clone());
        self.0.on_attempt(req, attempt);
    }

    fn marks_attempts(&self) -> bool {
        true
    }

    fn on_give_up(&self, res: &mut Res) {
        self.0.on_give_up(res);
    }
}
