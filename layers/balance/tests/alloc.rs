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

/// A check that answers echo 0, 1, 2... in turn.
fn in_order() -> impl FnMut(u64) -> bool {
    let mut next = 0;
    move |res| {
        let ok = res == next;
        next += 1;
        ok
    }
}

/// Sends `warm` requests, lets the balancer's first sweep pass, then counts this thread's
/// allocations over `measured` requests, each answer checked by `check`. The requests are made
/// before counting (a caller's, not the balancer's).
async fn allocations<S, R>(
    svc: &mut S,
    warm: Vec<R>,
    measured: Vec<R>,
    mut check: impl FnMut(S::Response) -> bool,
) -> u64
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    for req in warm {
        ServiceExt::<R>::ready(svc)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
    }
    tokio::time::advance(std::time::Duration::from_millis(5)).await;
    let before = thread_allocations();
    for req in measured {
        let res = ServiceExt::<R>::ready(svc)
            .await
            .unwrap()
            .call(req)
            .await
            .unwrap();
        assert!(check(res));
    }
    thread_allocations() - before
}

#[tokio::test(start_paused = true)]
async fn a_request_allocates_nothing() {
    let config = BalanceConfig {
        seed: Some(5),
        ..Default::default()
    };
    let mut svc = Balance::new((0..8).map(|i| (i, Echo)), config).unwrap();
    // Warm up: thread-locals, the snapshot reader's slot, the first sweep.
    let allocations = allocations(
        &mut svc,
        (0..1_000).collect(),
        (0..10_000).collect(),
        in_order(),
    )
    .await;
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
    // The requests and their markers are made before counting: the retry layer's, not ours.
    let allocations = allocations(&mut svc, marked(1_000), marked(10_000), |res| {
        res.extensions().get::<Attempt>().unwrap().tried().len() == 1
    })
    .await;
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
    let allocations = allocations(
        &mut svc,
        (0..1_000).collect(),
        (0..10_000).collect(),
        in_order(),
    )
    .await;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10,000 keyed requests"
    );
}
