//! The uncontended path allocates nothing: `call`, the response future and giving the slot
//! back, counted by a global allocator that tallies this thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use tollgate_admission::{AdmissionConfig, AdmissionLayer};
use tower_layer::Layer;
use tower_service::Service;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; only counts (in a const-initialized
// thread-local, which does not allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

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
    let before = ALLOCATIONS.with(Cell::get);
    for i in 1..=10_000 {
        round(i, &mut cx);
    }
    assert_eq!(
        ALLOCATIONS.with(Cell::get) - before,
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
