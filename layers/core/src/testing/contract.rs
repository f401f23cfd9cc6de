//! The contract every tollgate layer passes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use tollgate_core::testing::contract;
//! // A pass-through "layer" trivially keeps the contract.
//! contract::check(|probe| probe).await;
//! # }
//! ```
//!
//! Run it under paused time (`#[tokio::test(start_paused = true)]`): every wait is bounded by a
//! virtual hour, so a leaked reservation fails in microseconds of real time, naming the check.
//! Configure the layer so that the checks cannot trip it on purpose (a breaker's window larger
//! than the few failures here, a limit of at least 1).

use super::{Probe, ProbeError, ProbeHandle, ProbeRequest};
use crate::BoxError;
use crate::error::is_caused_by;
use futures_util::FutureExt;
use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tower_service::Service;

/// How often the capacity checks repeat: more than any small limit a test would configure.
const ROUNDS: usize = 64;
const BOUND: Duration = Duration::from_secs(3600);

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, fut).await {
        Ok(v) => v,
        Err(_) => panic!("contract: {what}: still pending after a virtual hour"),
    }
}

async fn ready<S>(what: &str, svc: &mut S)
where
    S: Service<ProbeRequest>,
    S::Error: Debug,
{
    bounded(what, poll_fn(|cx| svc.poll_ready(cx)))
        .await
        .unwrap_or_else(|e| panic!("contract: {what}: poll_ready failed: {e:?}"));
}

async fn ok_round<S>(what: &str, svc: &mut S, n: u64)
where
    S: Service<ProbeRequest, Response = u64>,
    S::Error: Debug,
{
    ready(what, svc).await;
    let res = bounded(what, svc.call(ProbeRequest::Ok(n))).await;
    assert_eq!(
        res.unwrap_or_else(|e| panic!("contract: {what}: {e:?}")),
        n,
        "contract: {what}"
    );
}

/// Runs every check on services built by `make` around a fresh [`Probe`].
///
/// # Panics
///
/// With a message naming the broken check.
pub async fn check<S, F>(make: F)
where
    F: Fn(Probe) -> S,
    S: Service<ProbeRequest, Response = u64, Error = BoxError> + Clone,
{
    readiness(&make).await;
    clones_start_unready(&make).await;
    dropped_futures_free_capacity(&make).await;
    dropped_services_free_capacity(&make).await;
    errors_pass_through(&make).await;
    panics_leave_it_working(&make).await;
}

fn build<S, F: Fn(Probe) -> S>(make: &F) -> (S, ProbeHandle) {
    let (probe, handle) = Probe::new();
    (make(probe), handle)
}

/// An unready inner service makes the layer unready, and readiness wakes the waiting task.
pub async fn readiness<S, F>(make: &F)
where
    F: Fn(Probe) -> S,
    S: Service<ProbeRequest, Response = u64, Error = BoxError>,
{
    let (mut svc, handle) = build(make);
    handle.set_ready(false);
    {
        let mut task = tokio_test::task::spawn(poll_fn(|cx| svc.poll_ready(cx)));
        assert!(
            task.poll().is_pending(),
            "contract: readiness: ready while the inner is not"
        );
        handle.set_ready(true);
        assert!(
            task.is_woken(),
            "contract: readiness: not woken when the inner became ready"
        );
        match task.poll() {
            std::task::Poll::Ready(Ok(())) => {}
            other => panic!("contract: readiness: expected ready, got {other:?}"),
        }
    }
    let res = bounded("readiness", svc.call(ProbeRequest::Ok(1))).await;
    assert_eq!(res.unwrap(), 1);
}

/// A clone made from a readied service carries no reservation: each instance calls the inner
/// clone it readied, and both work.
pub async fn clones_start_unready<S, F>(make: &F)
where
    F: Fn(Probe) -> S,
    S: Service<ProbeRequest, Response = u64, Error = BoxError> + Clone,
{
    let (mut svc, _handle) = build(make);
    ready("clones start unready", &mut svc).await;
    let mut clone = svc.clone();
    let res = bounded("clones start unready", svc.call(ProbeRequest::Ok(2))).await;
    assert_eq!(res.unwrap(), 2);
    ok_round("clones start unready (the clone)", &mut clone, 3).await;
}

/// Response futures dropped before they finish give their capacity back.
pub async fn dropped_futures_free_capacity<S, F>(make: &F)
where
    F: Fn(Probe) -> S,
    S: Service<ProbeRequest, Response = u64, Error = BoxError>,
{
    let (mut svc, handle) = build(make);
    for _ in 0..ROUNDS {
        ready("dropped futures free capacity", &mut svc).await;
        let mut fut = Box::pin(svc.call(ProbeRequest::Hang));
        // Poll once so the layer has done whatever it does on the first poll.
        assert!(futures_util::poll!(fut.as_mut()).is_pending());
        drop(fut);
    }
    ok_round("dropped futures free capacity", &mut svc, 4).await;
    assert_eq!(
        handle.in_flight(),
        0,
        "contract: a dropped future kept the inner future alive"
    );
}

/// A service dropped after `poll_ready` but before `call` gives its reservation back.
pub async fn dropped_services_free_capacity<S, F>(make: &F)
where
    F: Fn(Probe) -> S,
    S: Service<ProbeRequest, Response = u64, Error = BoxError> + Clone,
{
    let (mut svc, _handle) = build(make);
    for _ in 0..ROUNDS {
        let mut clone = svc.clone();
        ready("dropped readied services free capacity", &mut clone).await;
        drop(clone);
    }
    ok_round("dropped readied services free capacity", &mut svc, 5).await;
}

/// An inner error reaches the caller, findable in the error chain.
pub async fn errors_pass_through<S, F>(make: &F)
where
    F: Fn(Probe) -> S,
    S: Service<ProbeRequest, Response = u64, Error = BoxError>,
{
    let (mut svc, _handle) = build(make);
    ready("errors pass through", &mut svc).await;
    let err = bounded("errors pass through", svc.call(ProbeRequest::Fail(7)))
        .await
        .expect_err("contract: errors pass through: a failure came back as success");
    assert!(
        is_caused_by::<ProbeError>(&*err),
        "contract: errors pass through: inner error lost, got {err}"
    );
}

/// An inner service that panics fails that caller (with a panic or an error) and leaves the
/// layer serving later requests.
pub async fn panics_leave_it_working<S, F>(make: &F)
where
    F: Fn(Probe) -> S,
    S: Service<ProbeRequest, Response = u64, Error = BoxError>,
{
    let (mut svc, handle) = build(make);
    for _ in 0..ROUNDS / 8 {
        ready("a panicking inner service", &mut svc).await;
        let fut = svc.call(ProbeRequest::Panic);
        if let Ok(Ok(v)) = bounded(
            "a panicking inner service",
            AssertUnwindSafe(fut).catch_unwind(),
        )
        .await
        {
            panic!("contract: a panicking inner service answered Ok({v})");
        }
    }
    ok_round("after the inner service panicked", &mut svc, 6).await;
    assert_eq!(handle.in_flight(), 0);
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn a_bare_probe_keeps_the_contract() {
        super::check(|p| p).await;
    }

    #[tokio::test(start_paused = true)]
    async fn tower_concurrency_limit_keeps_the_contract() {
        super::check(|p| tower::limit::ConcurrencyLimit::new(p, 1)).await;
    }
}
