//! The tollgate contract, adapted to a batching layer.
//!
//! The layer is a `Service<ProbeRequest>` over a batch service; [`ProbeBatch`] is that batch
//! service: it runs every item of a batch through the probe it wraps (readying it before each
//! item), so the probe's checks (clones start unready, calling an unreadied instance panics,
//! in-flight accounting) apply to the instance the layer readied.
//!
//! From `tollgate_core::testing::contract` the layer passes as is: clones start unready,
//! dropped futures and dropped readied services free capacity, inner errors pass through, and
//! panics leave it working. Readiness differs by design: the layer's `poll_ready` reserves a
//! place in its queue, not the inner service, so the readiness checks here are the batching
//! equivalents: an unready inner service holds requests (and, once the queue is full,
//! callers) back, and becoming ready wakes the layer and answers them.

mod common;

use common::bounded;
use futures_util::future::{BoxFuture, join_all};
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_batch::{BatchConfig, BatchLayer, Batcher};
use tollgate_core::BoxError;
use tollgate_core::testing::{Probe, ProbeHandle, ProbeRequest, contract};
use tower::{Layer, Service, ServiceExt};

/// A batch service running each item through a [`Probe`].
#[derive(Clone)]
struct ProbeBatch(Probe);

impl Service<Vec<ProbeRequest>> for ProbeBatch {
    type Response = Vec<Result<u64, BoxError>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, reqs: Vec<ProbeRequest>) -> Self::Future {
        let mut futs = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.into_iter().enumerate() {
            if i > 0 {
                // The layer readied us for the first item; ready again for the rest.
                let mut cx = Context::from_waker(std::task::Waker::noop());
                if !matches!(self.0.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
                    futs.push(
                        Box::pin(async { Err::<u64, BoxError>("probe went unready".into()) })
                            as BoxFuture<'static, Result<u64, BoxError>>,
                    );
                    continue;
                }
            }
            futs.push(Box::pin(self.0.call(req)));
        }
        Box::pin(async move { Ok(join_all(futs).await) })
    }
}

fn config() -> BatchConfig {
    BatchConfig {
        max_items: 8,
        max_linger: Duration::from_millis(5),
        max_in_flight: 2,
        queue_capacity: 16,
        ..BatchConfig::default()
    }
}

fn layer(probe: Probe) -> Batcher<ProbeRequest, u64> {
    BatchLayer::new(config()).unwrap().layer(ProbeBatch(probe))
}

#[tokio::test(start_paused = true)]
async fn clones_start_unready() {
    contract::clones_start_unready(&layer).await;
}

#[tokio::test(start_paused = true)]
async fn dropped_futures_free_capacity() {
    contract::dropped_futures_free_capacity(&layer).await;
}

#[tokio::test(start_paused = true)]
async fn dropped_services_free_capacity() {
    contract::dropped_services_free_capacity(&layer).await;
}

#[tokio::test(start_paused = true)]
async fn errors_pass_through() {
    contract::errors_pass_through(&layer).await;
}

#[tokio::test(start_paused = true)]
async fn panics_leave_it_working() {
    contract::panics_leave_it_working(&layer).await;
}

/// The same checks with folding and keys on.
#[tokio::test(start_paused = true)]
async fn the_contract_holds_with_folding_and_keys() {
    let make = |probe: Probe| {
        BatchLayer::new(config())
            .unwrap()
            .with_folding()
            .with_key(|r: &ProbeRequest| matches!(r, ProbeRequest::Ok(_)))
            .layer(ProbeBatch(probe))
    };
    contract::clones_start_unready(&make).await;
    contract::dropped_futures_free_capacity(&make).await;
    contract::dropped_services_free_capacity(&make).await;
    contract::errors_pass_through(&make).await;
    contract::panics_leave_it_working(&make).await;
}

fn build() -> (Batcher<ProbeRequest, u64>, ProbeHandle) {
    let (probe, handle) = Probe::new();
    (layer(probe), handle)
}

#[tokio::test(start_paused = true)]
async fn an_unready_inner_service_holds_requests_and_its_readiness_wakes_the_layer() {
    let (svc, handle) = build();
    handle.set_ready(false);
    let pending = tokio::spawn(svc.clone().oneshot(ProbeRequest::Ok(1)));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        !pending.is_finished(),
        "answered while the inner service was unready"
    );
    assert_eq!(handle.calls(), 0);
    handle.set_ready(true);
    assert_eq!(bounded(pending).await.unwrap().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_makes_the_layer_unready_until_the_inner_service_is_ready() {
    let (svc, handle) = build();
    handle.set_ready(false);
    let queued: Vec<_> = (0..16)
        .map(|i| tokio::spawn(svc.clone().oneshot(ProbeRequest::Ok(i))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = svc.clone();
    {
        let mut task = tokio_test::task::spawn(std::future::poll_fn(|cx| extra.poll_ready(cx)));
        assert!(task.poll().is_pending(), "ready with a full queue");
        handle.set_ready(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(task.is_woken(), "not woken when room came");
        assert!(task.poll().is_ready());
    }
    assert_eq!(bounded(extra.call(ProbeRequest::Ok(99))).await.unwrap(), 99);
    for (i, t) in queued.into_iter().enumerate() {
        assert_eq!(bounded(t).await.unwrap().unwrap(), i as u64);
    }
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_batch_holds_only_its_in_flight_place() {
    let (svc, handle) = build();
    // Two hung batches take both in-flight places; requests then wait, never fail.
    let mut hung = Vec::new();
    for _ in 0..2 {
        hung.push(tokio::spawn(svc.clone().oneshot(ProbeRequest::Hang)));
        // Past the linger, so each goes in a batch of its own.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(svc.handle().snapshot().in_flight, 2);
    let waiting = tokio::spawn(svc.clone().oneshot(ProbeRequest::Ok(3)));
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!waiting.is_finished());
    // Dropping the callers of a hung batch does not cancel the batch (others may share it).
    for h in hung {
        h.abort();
    }
    assert!(handle.in_flight() >= 1);
    waiting.abort();
}
