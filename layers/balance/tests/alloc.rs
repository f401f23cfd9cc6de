//! A request through the balancer allocates nothing once warm (its own code: the endpoint's
//! service here is a `Copy` type with a ready future).
//!
//! A counting global allocator wraps the system one and counts only on threads that ask to be
//! counted (the test harness's own threads allocate at times of their choosing).

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tollgate_balance::{Balance, BalanceConfig};
use tower::{Service, ServiceExt};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTING.with(std::cell::Cell::get) {
        // Relaxed: a statistic read after the work it counts, on the same thread.
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counter is a side effect that touches no memory
// handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded as is; see the impl.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; see the impl.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded as is; see the impl.
        unsafe { System.realloc(ptr, layout, new_size) }
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
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    for i in 0..10_000 {
        let res = svc.ready().await.unwrap().call(i).await.unwrap();
        assert_eq!(res, i);
    }
    COUNTING.with(|c| c.set(false));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations in 10,000 requests"
    );
}
