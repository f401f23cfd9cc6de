//! The uncontended path allocates nothing: `call`, the response future and giving the slot
//! back, counted by a global allocator that tallies this thread's allocations.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tollgate_admission::{AdmissionConfig, AdmissionLayer};
use tollgate_core::testing::Echo;
use tollgate_core::testing::alloc::{Counting, thread_allocations};
use tower_layer::Layer;
use tower_service::Service;

#[global_allocator]
static GLOBAL: Counting = Counting;

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
