//! Requests through a `PoolSizer` do not allocate once warm (the response future is a named
//! type, the permit holds a shard handle, statistics are atomics).

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tollgate_core::testing::alloc::{Counting, thread_allocations};
use tollgate_pool::{PoolConfig, PoolSizerLayer};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_requests_do_not_allocate() {
    let layer = PoolSizerLayer::from_config(PoolConfig {
        initial_limit: 100,
        ..PoolConfig::default()
    })
    .unwrap();
    let mut svc = layer.layer(service_fn(|n: u64| {
        std::future::ready(Ok::<_, std::io::Error>(n))
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut one = |n: u64| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut fut = pin!(svc.call(n));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => assert_eq!(r.unwrap(), n),
            Poll::Pending => panic!("answers at once"),
        }
    };
    for n in 0..1000 {
        one(n);
    }
    // The counter works.
    let before = thread_allocations();
    let v = std::hint::black_box(vec![1u8; 16]);
    assert!(thread_allocations() > before);
    drop(v);
    let before = thread_allocations();
    for n in 0..10_000 {
        one(n);
    }
    assert_eq!(thread_allocations() - before, 0, "requests allocated");
}
