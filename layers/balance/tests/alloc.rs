//! A request through the balancer allocates nothing once warm (its own code: the endpoint's
//! service here is a `Copy` type with a ready future).
//!
//! `tollgate_core::testing::alloc` counts this thread's allocations (the test harness's own
//! threads allocate at times of their choosing).

use tollgate_balance::{Balance, BalanceConfig};
use tollgate_core::testing::Echo;
use tollgate_core::testing::alloc::{Counting, thread_allocations};
use tower::{Service, ServiceExt};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::test(start_paused = true)]
async fn a_request_allocates_nothing() {
    let config = BalanceConfig {
        seed: Some(5),
        ..Default::default()
    };
    let mut svc = Balance::new((0..8).map(|i| (i, Echo)), config).unwrap();
    // Warm up: thread-locals, the snapshot reader's slot, the first sweep.
    for i in 0..1_000 {
        ServiceExt::<u64>::ready(&mut svc)
            .await
            .unwrap()
            .call(i)
            .await
            .unwrap();
    }
    tokio::time::advance(std::time::Duration::from_millis(5)).await;
    let before = thread_allocations();
    for i in 0..10_000 {
        let res = ServiceExt::<u64>::ready(&mut svc)
            .await
            .unwrap()
            .call(i)
            .await
            .unwrap();
        assert_eq!(res, i);
    }
    let allocations = thread_allocations() - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10,000 requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_first_attempt_marked_for_retries_allocates_nothing_in_the_balancer() {
    use tollgate_core::attempt::Attempt;
    let config = BalanceConfig {
        seed: Some(6),
        ..Default::default()
    };
    let mut svc = Balance::new((0..8).map(|i| (i, Echo)), config)
        .unwrap()
        .avoid_tried();
    let marked = |n: usize| -> Vec<http::Request<()>> {
        (0..n)
            .map(|_| {
                let mut req = http::Request::new(());
                req.extensions_mut().insert(Attempt::first());
                req
            })
            .collect()
    };
    for req in marked(1_000) {
        ServiceExt::<http::Request<()>>::ready(&mut svc)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
    }
    tokio::time::advance(std::time::Duration::from_millis(5)).await;
    // The requests and their markers are made before counting: the retry layer's, not ours.
    let reqs = marked(10_000);
    let before = thread_allocations();
    for req in reqs {
        let res = ServiceExt::<http::Request<()>>::ready(&mut svc)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
        assert_eq!(res.extensions().get::<Attempt>().unwrap().tried().len(), 1);
        drop(res);
    }
    let allocations = thread_allocations() - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10,000 marked requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_pick_allocates_nothing() {
    let config = BalanceConfig {
        seed: Some(7),
        ..Default::default()
    };
    let mut svc = Balance::new((0..8).map(|i| (i, Echo)), config)
        .unwrap()
        .hash_by(|req: &u64| Some(*req % 64));
    for i in 0..1_000 {
        ServiceExt::<u64>::ready(&mut svc)
            .await
            .unwrap()
            .call(i)
            .await
            .unwrap();
    }
    tokio::time::advance(std::time::Duration::from_millis(5)).await;
    let before = thread_allocations();
    for i in 0..10_000 {
        let res = ServiceExt::<u64>::ready(&mut svc)
            .await
            .unwrap()
            .call(i)
            .await
            .unwrap();
        assert_eq!(res, i);
    }
    let allocations = thread_allocations() - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10,000 keyed requests"
    );
}
