//! The uncontended path allocates nothing: `call`, the response future and giving the slot
//! back, counted by a global allocator that tallies this thread's allocations.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tollgate_admission::{AdmissionConfig, AdmissionLayer};
use tollgate_core::testing::alloc::{Counting, thread_allocations};
use tower_layer::Layer;
use tower_service::Service;

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

#[test]
fn admitted_requests_do_not_allocate() {
    let layer = AdmissionLayer::new(AdmissionConfig {
        limit: 8,
        ..AdmissionConfig::default()
    })
    .unwrap()
    .prioritize(|r: &u64| (*r % 4) as usize);
    let handle = layer.handle();
    let mut svc = layer.layer(Echo);
    let mut cx = Context::from_waker(Waker::noop());
    let mut round = |i: u64, cx: &mut Context<'_>| {
        assert!(svc.poll_ready(cx).is_ready());
        let fut = pin!(svc.call(i));
        match fut.poll(cx) {
            Poll::Ready(r) => assert_eq!(r.unwrap(), i),
            Poll::Pending => unreachable!(),
        }
    };
    // Warm up: thread-locals and shard handles are set up on first use.
    round(0, &mut cx);
    let before = thread_allocations();
    for i in 1..=10_000 {
        round(i, &mut cx);
    }
    assert_eq!(
        thread_allocations() - before,
        0,
        "allocations on the uncontended path"
    );
    assert_eq!(
        handle
            .snapshot()
            .classes
            .iter()
            .map(|c| c.admitted)
            .sum::<u64>(),
        10_001
    );
}
