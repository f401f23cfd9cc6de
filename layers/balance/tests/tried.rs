//! Retries and hedges marked with an `Attempt` avoid the endpoints their request already tried
//! (`Balance::avoid_tried`).

mod common;

use std::future::{Ready, poll_fn, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tollgate_balance::Balance;
use tollgate_core::attempt::Attempt;
use tower::{Service, ServiceExt};

type Req = http::Request<()>;

/// An endpoint that answers with its name at once, ready unless told otherwise.
#[derive(Clone, Debug)]
struct Named {
    name: u8,
    ready: Arc<AtomicBool>,
}

impl Named {
    fn new(name: u8) -> Self {
        Self {
            name,
            ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Service<Req> for Named {
    type Response = u8;
    type Error = std::io::Error;
    type Future = Ready<Result<u8, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            // Never woken: the tests only poll it once.
            Poll::Pending
        }
    }

    fn call(&mut self, _: Req) -> Self::Future {
        ready(Ok(self.name))
    }
}

// Keep every endpoint admitted: the tests steer by the tried set alone.
use common::without_ejection as config;

fn marked(attempt: &Attempt) -> Req {
    let mut req = http::Request::new(());
    req.extensions_mut().insert(attempt.clone());
    req
}

async fn send(
    svc: &mut Balance<u8, Named, tollgate_core::ErrorsAreFailures, tollgate_balance::AvoidTried>,
    req: Req,
) -> u8 {
    ServiceExt::<Req>::ready(svc)
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retry_never_goes_back_to_the_endpoint_its_first_attempt_tried() {
    for seed in 0..50 {
        let mut svc = Balance::new([(0, Named::new(0)), (1, Named::new(1))], config(seed))
            .unwrap()
            .avoid_tried();
        for _ in 0..20 {
            let first = Attempt::first();
            let went = send(&mut svc, marked(&first)).await;
            assert_eq!(
                first.tried().len(),
                1,
                "the first attempt's endpoint is recorded"
            );
            let retry = first.next(false);
            let again = send(&mut svc, marked(&retry)).await;
            assert_ne!(again, went, "seed {seed}: the retry went back to {went}");
            assert_eq!(first.tried().len(), 2);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn with_three_endpoints_each_retry_goes_to_a_new_one_until_all_are_tried() {
    let mut svc = Balance::new((0..3).map(|i| (i, Named::new(i))), config(3))
        .unwrap()
        .avoid_tried();
    for _ in 0..20 {
        let first = Attempt::first();
        let mut seen = vec![send(&mut svc, marked(&first)).await];
        let mut attempt = first;
        for _ in 0..2 {
            attempt = attempt.next(false);
            let to = send(&mut svc, marked(&attempt)).await;
            assert!(!seen.contains(&to), "{to} was tried already: {seen:?}");
            seen.push(to);
        }
        // All tried: a fourth attempt goes where the pick says, to one of them.
        attempt = attempt.next(false);
        assert!(seen.contains(&send(&mut svc, marked(&attempt)).await));
    }
    let stats = svc.handle().endpoints();
    assert!(stats.iter().all(|e| e.in_flight == 0), "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn with_one_endpoint_the_retry_still_goes_to_it() {
    let mut svc = Balance::new([(7, Named::new(7))], config(1))
        .unwrap()
        .avoid_tried();
    let first = Attempt::first();
    assert_eq!(send(&mut svc, marked(&first)).await, 7);
    let retry = first.next(false);
    assert_eq!(send(&mut svc, marked(&retry)).await, 7);
    assert_eq!(first.tried().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_goes_to_another_endpoint_than_the_attempt_in_flight() {
    let mut svc = Balance::new([(0, Named::new(0)), (1, Named::new(1))], config(9))
        .unwrap()
        .avoid_tried();
    for _ in 0..20 {
        let first = Attempt::first();
        // The first attempt is called but not yet finished when the hedge is picked.
        let pending = ServiceExt::<Req>::ready(&mut svc)
            .await
            .unwrap()
            .call(marked(&first));
        let hedge = first.next(true);
        let hedged = send(&mut svc, marked(&hedge)).await;
        let original = pending.await.unwrap();
        assert_ne!(hedged, original);
    }
}

#[tokio::test(start_paused = true)]
async fn an_untried_endpoint_not_ready_at_once_leaves_the_retry_where_it_was_readied() {
    let a = Named::new(0);
    let b = Named::new(1);
    let mut svc = Balance::new([(0, a.clone()), (1, b.clone())], config(4))
        .unwrap()
        .avoid_tried();
    let first = Attempt::first();
    let went = send(&mut svc, marked(&first)).await;
    // The other endpoint stops being ready; the balancer cannot wait for it inside `call`.
    let other = if went == 0 { &b } else { &a };
    other.ready.store(false, Ordering::SeqCst);
    // Ready the balancer on the tried endpoint (the other one is pending).
    let retry = first.next(false);
    let to = poll_fn(|cx| {
        // The pick may land on the unready endpoint first; a fresh clone picks again.
        let mut clone = svc.clone();
        match Service::<Req>::poll_ready(&mut clone, cx) {
            Poll::Ready(r) => Poll::Ready(r.map(|()| clone)),
            Poll::Pending => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    })
    .await
    .unwrap()
    .call(marked(&retry))
    .await
    .unwrap();
    assert_eq!(to, went, "the only ready endpoint serves the retry");
    let stats = svc.handle().endpoints();
    assert!(
        stats.iter().all(|e| e.in_flight == 0),
        "the reservation on the unready endpoint was given back: {stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_avoid_tried_nothing_is_read_or_recorded() {
    let mut svc = Balance::new([(0, Named::new(0)), (1, Named::new(1))], config(2)).unwrap();
    let first = Attempt::first();
    ServiceExt::<Req>::ready(&mut svc)
        .await
        .unwrap()
        .call(marked(&first))
        .await
        .unwrap();
    assert!(first.tried().is_empty());
}

#[tokio::test(start_paused = true)]
async fn unmarked_requests_are_picked_as_without_avoid_tried() {
    let eps = || (0..4).map(|i| (i, Named::new(i)));
    let mut plain = Balance::new(eps(), config(5)).unwrap();
    let mut avoiding = Balance::new(eps(), config(5)).unwrap().avoid_tried();
    for _ in 0..200 {
        let a = ServiceExt::<Req>::ready(&mut plain)
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(send(&mut avoiding, http::Request::new(())).await, a);
    }
}
