//! An L1 hit through the whole layer allocates nothing: counted by a global allocator.
//!
//! One L1 hit in 64 per key also reads L2 (so moka keeps counting the key's popularity), and
//! moka's `get` may allocate internally; the test bounds that amortised cost separately.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tollgate_cache::{CacheConfig, CacheLayer, Cacheability, FnPolicy, Freshness};
use tollgate_core::BoxError;
use tollgate_core::testing::alloc::{Counting, thread_allocations};
use tower_layer::Layer;
use tower_service::Service;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a hit must be ready at once"),
    }
}

#[test]
fn an_l1_hit_does_not_allocate() {
    let policy = FnPolicy::new(
        |k: &u64| Some(*k),
        |_: &u64| Cacheability::Store(Freshness::ttl(Duration::from_secs(60))),
    );
    let layer = CacheLayer::new(CacheConfig::default(), policy).unwrap();
    let mut svc = layer.layer(tower::service_fn(|k: u64| {
        std::future::ready(Ok::<u64, BoxError>(k * 2))
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut get = |k: u64| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        now_or_never(svc.call(k)).unwrap()
    };
    for k in 0..8 {
        assert_eq!(get(k), k * 2); // misses: fill L2 and this thread's L1
    }
    // 63 hits per key: below the one-in-64 report to L2.
    let before = thread_allocations();
    for i in 0..8 * 63u64 {
        assert_eq!(get(i % 8), (i % 8) * 2);
    }
    let allocated = thread_allocations() - before;
    assert_eq!(
        allocated,
        0,
        "{allocated} allocations in {} L1 hits",
        8 * 63
    );
    // Many more: only the reports to L2 (one hit in 64) may allocate, inside moka.
    let before = thread_allocations();
    for i in 0..64_000u64 {
        assert_eq!(get(i % 8), (i % 8) * 2);
    }
    let allocated = thread_allocations() - before;
    assert!(
        allocated <= 2 * 64_000 / 64,
        "{allocated} allocations in 64 000 L1 hits"
    );
    let st = layer.handle().stats();
    assert_eq!(st.l1_hits, 8 * 63 + 64_000, "{st:?}");
}
