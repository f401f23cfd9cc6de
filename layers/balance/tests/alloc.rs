//! A request through the balancer allocates nothing once warm (its own code: the endpoint's
//! service here is a `Copy` type with a ready future).
//!
//! `tollgate_core::testing::alloc` counts this thread's allocations (the test harness's own
//! threads allocate at times of their choosing).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tollgate_balance::{Balance, BalanceConfig};
use tollgate_core::testing::alloc::{Counting, thread_allocations};
use tower::{Service, ServiceExt};

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

#[tokio::test(start_paused = true)]
async fn a_request_allocates_nothing() {
    let config = BalanceConfig {
        seed: Some(5),
        ..Default::default()
    };
    let mut svc = Balance::new((0..8).map(|i| (i, Echo)), config).unwrap();
    // Warm up: thread-locals, the snapshot reader's slot, the first sweep.
    for i in 0..1_000 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    tokio::time::advance(std::time::Duration::from_millis(5)).await;
    let before = thread_allocations();
    for i in 0..10_000 {
        let res = svc.ready().await.unwrap().call(i).await.unwrap();
        assert_eq!(res, i);
    }
    let allocations = thread_allocations() - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10,000 requests"
    );
}
