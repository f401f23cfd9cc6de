//! Requests through a `PoolSizer` do not allocate once warm (the response future is a named
//! type, the permit holds a shard handle, statistics are atomics).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tollgate_pool::{PoolConfig, PoolSizerLayer};
use tower::{Layer, Service, service_fn};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|a| a.get())
}

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
    let before = allocations();
    let v = std::hint::black_box(vec![1u8; 16]);
    assert!(allocations() > before);
    drop(v);
    let before = allocations();
    for n in 0..10_000 {
        one(n);
    }
    assert_eq!(allocations() - before, 0, "requests allocated");
}
