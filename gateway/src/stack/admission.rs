//! Priority admission on routes and listeners: `[[admission]]` policies built on
//! [`tollgate_admission`].
//!
//! Each request gets a ticket from what the gateway knows of it, decided in this order:
//!
//! - **class**: the policy's `class_header`, when it names one of the policy's classes (ASCII
//!   case-insensitive); else the route's `priority`; else the first `client_classes` rule
//!   whose network holds the client's address; else `default_class`. A header is the
//!   client's own word: set `class_header` only where clients are trusted to pick.
//! - **deadline**: the sooner of `grpc-timeout` (unless `grpc_timeout = false`) and the
//!   `deadline_header` (a whole number of milliseconds), counted from arrival. A request that
//!   cannot meet it (given the measured service time) is refused before it takes a slot or
//!   leaves the queue when it no longer can; one still running at its deadline is cut off.
//!   Both answer 504: its caller has stopped waiting.
//! - **rate-limit key**: the client's address, or a header's value (requests without the
//!   header are keyed by their address, so leaving it out does not escape the limit).
//!
//! Capacity, per-class queues, shedding from the lowest class up and the CoDel queue bound
//! are the layer's. Its rejections reach the client through [`tollgate::http::Rejection`]: queue
//! full, shed and queue timeout are 503 with `Retry-After`, a spent rate limit 429 with
//! `Retry-After` (and, unless `rate_limit.headers = "none"`, the draft's `RateLimit-Policy` and
//! `RateLimit` fields: the rejection goes up wrapped in [`QuotaSpent`] with the policy's
//! fields, rendered once here), a deadline 504. With `rate_limit.headers = "all"`, an admitted
//! request's answer carries what its key has left as a [`QuotaLeft`] extension (the layer
//! reports it through the prioritizer's `rate_checked`, into the request's own [`Admit`]
//! wrapper, with no lock and no allocation; the extension and the rendered `RateLimit` value
//! are the only allocations "all" adds), which the request path turns into the same two
//! fields after the route's cache (a cached answer spent no quota and carries none).
//!
//! With `rate_limit.redis`, the quota lives in Redis and every gateway instance using the same
//! server and key prefix shares it (tollgate-admission's shared GCRA). While Redis fails or is
//! slower than its `response_timeout`, each instance's local quota answers instead, so an
//! outage never fails or holds a request longer than that timeout.
//!
//! The policy is built once; a request costs its ticket (a few header lookups), two reference
//! counts and the layer's own fast path. The ticket travels beside the request (no extension,
//! no allocation), and the layer's prioritizer only reads it back.

#[cfg(test)]
mod quota_tests;
#[cfg(test)]
mod tests;
mod ticket;

pub(crate) use crate::config::admission::AdmissionSection;

use crate::answer::{QuotaLeft, QuotaSpent, RateLimitFields};
use crate::config::ConfigError;
use crate::config::admission::RateLimitHeaders;
use crate::histogram::{Histogram, HistogramSnapshot};
use crate::trace::Traced;
use http::Request;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use ticket::Rules;
use tokio::time::Instant;
use tollgate_admission::{
    AdmissionHandle, AdmissionLayer, Prioritize, RateLimitState, Reason, Rejected, Ticket,
};
use tollgate_core::BoxError;
use tollgate_core::error::DeadlineExceeded;
use tower::{Layer, Service, ServiceExt};

/// What admission knows of a request besides the request itself.
#[derive(Debug, Clone)]
pub(crate) struct AdmitCtx {
    /// The client's address.
    pub client: IpAddr,
    /// The route's `priority` class name, if it sets one.
    pub route_class: Option<Arc<str>>,
}

/// A request with its ticket, as the layer sees it.
struct Admit<R> {
    req: R,
    ticket: Ticket,
    /// When it reached the layer: the queue wait ends when the layer calls [`Unwrap`].
    arrived: Instant,
    /// What its rate-limit key had left when it passed (set by the layer through
    /// [`Carried`]'s `rate_checked`).
    left: Option<RateLimitState>,
}

/// The layer's prioritizer: the ticket was decided before the call and travels with it.
#[derive(Debug, Clone, Copy)]
struct Carried;

impl<R> Prioritize<Admit<R>> for Carried {
    #[inline]
    fn prioritize(&self, a: &Admit<R>) -> Ticket {
        a.ticket
    }

    #[inline]
    fn rate_checked(a: &mut Admit<R>, state: RateLimitState) {
        a.left = Some(state);
    }
}

/// An answer that can carry what a request's rate-limit key had left.
pub(crate) trait CarriesQuota {
    /// Takes `quota` along (an HTTP answer as a [`QuotaLeft`] extension).
    fn carry(&mut self, quota: QuotaLeft);
}

impl<B> CarriesQuota for http::Response<B> {
    #[inline]
    fn carry(&mut self, quota: QuotaLeft) {
        self.extensions_mut().insert(quota);
    }
}

/// Sends the request of an [`Admit`] on to the inner service, counting how long it waited in
/// `waits` (one histogram per class), and recording the wait as a span when the request is
/// traced (with its class name); with `rate_limit.headers = "all"` (`every`, the policy's
/// fields), its answer carries what its key had left.
#[derive(Debug, Clone)]
struct Unwrap<S> {
    inner: S,
    waits: Arc<[Histogram]>,
    traced: Option<(Traced, Arc<str>)>,
    every: Option<Arc<RateLimitFields>>,
}

impl<S: Service<R>, R> Service<Admit<R>> for Unwrap<S>
where
    S::Response: CarriesQuota,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Carry<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, a: Admit<R>) -> Self::Future {
        if let Some(h) = self.waits.get(a.ticket.class) {
            h.record(a.arrived.elapsed());
        }
        if let Some((t, class)) = &self.traced {
            wait_span(t, class, a.arrived, "admitted");
        }
        let quota = self.every.as_ref().zip(a.left).map(|(f, left)| QuotaLeft {
            fields: f.clone(),
            left,
        });
        Carry {
            fut: self.inner.call(a.req),
            quota,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; its answer takes the request's [`QuotaLeft`] along.
    struct Carry<F> {
        #[pin]
        fut: F,
        quota: Option<QuotaLeft>,
    }
}

impl<F, T, E> Future for Carry<F>
where
    F: Future<Output = Result<T, E>>,
    T: CarriesQuota,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = std::task::ready!(this.fut.poll(cx));
        if let (Ok(res), Some(q)) = (&mut out, this.quota.take()) {
            res.carry(q);
        }
        Poll::Ready(out)
    }
}

/// Records a traced request's admission wait, `arrived` to now, with its class and outcome.
fn wait_span(t: &Traced, class: &str, arrived: Instant, outcome: &'static str) {
    let attributes = vec![
        KeyValue::new("tollgate.admission.class", class.to_owned()),
        KeyValue::new("tollgate.admission.outcome", outcome),
    ];
    let error = (outcome != "admitted").then_some(std::borrow::Cow::Borrowed("rejected"));
    t.child(
        None,
        "admission.wait",
        SpanKind::Internal,
        arrived,
        attributes,
        error,
    );
}

/// A built admission policy, shared by every route and listener that names it, and kept
/// across reloads while its section is unchanged.
#[derive(Debug)]
pub(crate) struct AdmissionPolicy {
    section: AdmissionSection,
    rules: Rules,
    layer: AdmissionLayer<Carried>,
    handle: AdmissionHandle,
    /// Queue wait (arrival to admission) per class, by class index.
    waits: Arc<[Histogram]>,
    /// The `RateLimit-Policy`/`RateLimit` fields of its 429 answers, when it sends them.
    quota: Option<Arc<RateLimitFields>>,
    /// The same, when every answer carries them (`rate_limit.headers = "all"`).
    every: Option<Arc<RateLimitFields>>,
}

impl AdmissionPolicy {
    /// Builds `section`, or keeps `old` (its queues, counts and rate-limit state) when it was
    /// built from an equal section.
    ///
    /// # Errors
    /// The section's first bad field (named relative to the section), as
    /// [`AdmissionSection::validate`] finds it.
    pub(crate) fn build(
        section: &AdmissionSection,
        old: Option<&Arc<AdmissionPolicy>>,
    ) -> Result<Arc<Self>, ConfigError> {
        if let Some(old) = old.filter(|o| o.section == *section) {
            return Ok(old.clone());
        }
        let fail = |(field, problem): (String, String)| ConfigError::new(field, problem);
        section.check().map_err(fail)?;
        let rules = Rules::new(section).map_err(fail)?;
        let layer = AdmissionLayer::new(section.to_config())
            .map_err(|e| ConfigError::new("(section)", format!("{}: {}", e.field(), e.problem())))?
            .prioritize(Carried);
        let quota = section
            .rate_limit
            .as_ref()
            .filter(|r| r.headers != RateLimitHeaders::None)
            .map(|r| {
                Arc::new(RateLimitFields::new(
                    &section.name,
                    r.burst,
                    Duration::from_millis(r.period_ms),
                ))
            });
        let every = quota.clone().filter(|_| {
            section
                .rate_limit
                .as_ref()
                .is_some_and(|r| r.headers == RateLimitHeaders::All)
        });
        Ok(Arc::new(Self {
            section: section.clone(),
            rules,
            handle: layer.handle(),
            layer,
            waits: section.classes.iter().map(|_| Histogram::new()).collect(),
            quota,
            every,
        }))
    }

    /// The policy's name.
    pub(crate) fn name(&self) -> &str {
        &self.section.name
    }

    /// Admits `req` into `inner`, or rejects it with the layer's
    /// [`Rejected`] (or a core `DeadlineExceeded` when an
    /// admitted request outlives its deadline).
    pub(crate) fn call<S: super::UpstreamService>(
        &self,
        inner: S,
        req: super::UpRequest,
        ctx: &AdmitCtx,
    ) -> impl Future<Output = Result<super::UpResponse, BoxError>> + Send + 'static {
        self.admit(inner, req, ctx)
    }

    /// The fields a request's ticket is read from (class, deadline and rate-limit key): all
    /// that the fast path carries of a request it sends through the layers itself.
    pub(crate) fn raw_fields(&self) -> &[http::HeaderName] {
        self.rules.reads()
    }

    /// [`call`](Self::call) for any inner service and request body: tests use a service that
    /// needs no upstream, and the fast path its own requests (whose header map holds only
    /// [`raw_fields`](Self::raw_fields)).
    pub(crate) fn admit<S, R>(
        &self,
        inner: S,
        req: Request<R>,
        ctx: &AdmitCtx,
    ) -> impl Future<Output = Result<S::Response, BoxError>> + Send + 'static
    where
        S: Service<Request<R>, Error = BoxError> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Response: CarriesQuota + Send + 'static,
        R: Send + 'static,
    {
        let ticket = self.rules.ticket(&req, ctx);
        let deadline = ticket.deadline;
        let arrived = Instant::now();
        let traced = req.extensions().get::<Traced>().map(|t| {
            let class = self.section.classes.get(ticket.class);
            (t.clone(), Arc::from(class.map_or("", |c| c.name.as_str())))
        });
        let rejected = traced.clone();
        let quota = self.quota.clone();
        let unwrap = Unwrap {
            inner,
            waits: self.waits.clone(),
            traced,
            every: self.every.clone(),
        };
        let svc = self.layer.layer(unwrap);
        async move {
            // Built and pinned in this future's state, not built outside and moved in (it holds
            // the layers' futures: the largest copy of a request otherwise).
            let fut = std::pin::pin!(svc.oneshot(Admit {
                req,
                ticket,
                arrived,
                left: None,
            }));
            let result = match deadline {
                None => fut.await,
                // The caller stops waiting at its deadline, so the call stops too.
                Some(at) => tokio::time::timeout_at(at, fut)
                    .await
                    .unwrap_or_else(|_| Err(DeadlineExceeded::new().into())),
            };
            // A request the layer refused never reached `Unwrap`: its wait ends here.
            if let (Some((t, class)), Err(e)) = (&rejected, &result)
                && let Some(r) = e.downcast_ref::<Rejected>()
            {
                wait_span(t, class, arrived, reason_label(r.reason()));
            }
            match (result, quota) {
                (Err(e), Some(fields))
                    if e.downcast_ref::<Rejected>()
                        .is_some_and(|r| r.reason() == Reason::RateLimited) =>
                {
                    Err(Box::new(QuotaSpent::new(fields, e)) as BoxError)
                }
                (result, _) => result,
            }
        }
    }

    /// The policy's state for `/state`: limit, in flight, and per class admitted, queued,
    /// rejections by reason and queue-wait percentiles.
    pub(crate) fn state(&self) -> serde_json::Value {
        let snap = self.handle.snapshot();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let classes: Vec<serde_json::Value> = snap
            .classes
            .iter()
            .map(|c| {
                let rejected: serde_json::Map<String, serde_json::Value> = Reason::ALL
                    .iter()
                    .map(|r| (reason_label(*r).to_owned(), c.rejected(*r).into()))
                    .collect();
                serde_json::json!({
                    "name": c.name,
                    "admitted": c.admitted,
                    "queued": c.queued,
                    "rejected": rejected,
                    "queue_wait_ms": {
                        "p50": ms(c.queue_wait.p50),
                        "p90": ms(c.queue_wait.p90),
                        "p99": ms(c.queue_wait.p99),
                        "max": ms(c.queue_wait.max),
                    },
                })
            })
            .collect();
        serde_json::json!({
            "name": self.section.name,
            "limit": snap.limit,
            "in_flight": snap.in_flight,
            "queued": snap.queued,
            "rate_limit_keys": snap.rate_limit_keys,
            "classes": classes,
        })
    }

    /// Records the policy's metrics into the current `metrics` recorder: in flight, limit,
    /// and per class queued, admitted, rejected by reason and the p99 queue wait.
    pub(crate) fn record_metrics(&self) {
        let snap = self.handle.snapshot();
        let p = self.section.name.clone();
        metrics::gauge!("tollgate_admission_in_flight", "policy" => p.clone())
            .set(snap.in_flight as f64);
        metrics::gauge!("tollgate_admission_limit", "policy" => p.clone()).set(snap.limit as f64);
        if self.section.rate_limit.is_some() {
            metrics::gauge!("tollgate_admission_rate_limit_keys", "policy" => p.clone())
                .set(snap.rate_limit_keys as f64);
        }
        for c in &snap.classes {
            let class = c.name.clone();
            metrics::gauge!("tollgate_admission_queued", "policy" => p.clone(), "class" => class.clone())
                .set(c.queued as f64);
            metrics::counter!("tollgate_admission_admitted_total", "policy" => p.clone(), "class" => class.clone())
                .absolute(c.admitted);
            metrics::gauge!(
                "tollgate_admission_queue_wait_p99_seconds",
                "policy" => p.clone(),
                "class" => class.clone()
            )
            .set(c.queue_wait.p99.as_secs_f64());
            for r in Reason::ALL {
                metrics::counter!(
                    "tollgate_admission_rejected_total",
                    "policy" => p.clone(),
                    "class" => class.clone(),
                    "reason" => reason_label(r)
                )
                .absolute(c.rejected(r));
            }
        }
    }
}

impl AdmissionPolicy {
    /// Queue-wait histograms, as `(class name, snapshot)` in class order.
    pub(crate) fn queue_waits(&self) -> Vec<(&str, HistogramSnapshot)> {
        self.section
            .classes
            .iter()
            .zip(self.waits.iter())
            .map(|(c, h)| (c.name.as_str(), h.snapshot()))
            .collect()
    }

    /// Admitted, rejected and shed totals per class, in class order (for `/series`).
    pub(crate) fn class_totals(&self) -> Vec<ClassCounts> {
        self.handle
            .snapshot()
            .classes
            .iter()
            .map(|c| ClassCounts {
                name: c.name.to_string(),
                admitted: c.admitted,
                rejected: Reason::ALL.iter().map(|r| c.rejected(*r)).sum(),
                shed: c.rejected(Reason::Shed),
            })
            .collect()
    }
}

/// One class's totals since the policy was built.
#[derive(Debug, Clone)]
pub(crate) struct ClassCounts {
    /// The class's name.
    pub name: String,
    /// Requests admitted.
    pub admitted: u64,
    /// Requests rejected, for any reason.
    pub rejected: u64,
    /// Of those, shed for a higher class.
    pub shed: u64,
}

/// A rejection reason as a metric label or JSON key.
fn reason_label(r: Reason) -> &'static str {
    match r {
        Reason::QueueFull => "queue_full",
        Reason::Shed => "shed",
        Reason::QueueTimeout => "queue_timeout",
        Reason::Deadline => "deadline",
        Reason::RateLimited => "rate_limited",
        Reason::Throttled => "throttled",
        _ => "other",
    }
}
