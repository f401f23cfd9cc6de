//! The whole layer stack (admission -> breaker -> pool -> balance over 8 endpoints) adds no
//! allocation to a request once warm: cloning the stack (as a server does per request),
//! `poll_ready`, `call`, the response futures and giving every reservation back. The endpoints
//! are `Copy` services with ready futures, so every allocation counted would be the layers'.
//!
//! A counting global allocator wraps the system one and counts only on the test's thread.
#![cfg(all(
    feature = "admission",
    feature = "breaker",
    feature = "pool",
    feature = "balance"
))]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tollgate::admission::{AdmissionConfig, AdmissionLayer};
use tollgate::balance::{Balance, BalanceConfig};
use tollgate::breaker::{BreakerConfig, BreakerLayer};
use tollgate::pool::{PoolConfig, PoolSizerLayer};
use tollgate_core::testing::Echo;
use tollgate_core::testing::alloc::{Counting, thread_allocations};
use tower::{Service, ServiceBuilder, ServiceExt};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One request: a fresh clone of `stack`, `oneshot`, polled once to completion.
fn one<S>(stack: &S, req: u64, cx: &mut Context<'_>)
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: std::fmt::Debug,
{
    let fut = pin!(stack.clone().oneshot(req));
    match fut.poll(cx) {
        Poll::Ready(r) => assert_eq!(r.unwrap(), req),
        Poll::Pending => panic!("every layer and endpoint is ready at once"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_through_the_stack_allocates_nothing() {
    let admission = AdmissionLayer::new(AdmissionConfig {
        limit: 1024,
        ..AdmissionConfig::default() // 4 classes
    })
    .unwrap()
    .prioritize(|r: &u64| (*r % 4) as usize);
    let stats = admission.handle();
    let breaker = BreakerLayer::new(BreakerConfig::default()).unwrap();
    // A floor well above the requests in flight: requests that take nanoseconds give Vegas
    // noisy samples, and a limit it lowered to 1 would turn the second thread's requests away.
    let pool = PoolSizerLayer::from_config(PoolConfig {
        min_limit: 16,
        initial_limit: 100,
        ..PoolConfig::default()
    })
    .unwrap();
    let balance = Balance::new(
        (0..8).map(|i| (i, Echo)),
        BalanceConfig {
            seed: Some(3),
            ..BalanceConfig::default()
        },
    )
    .unwrap();
    let endpoints = balance.handle();
    let stack = ServiceBuilder::new()
        .layer(admission)
        .layer(breaker)
        .layer(pool)
        .service(balance);
    let mut cx = Context::from_waker(Waker::noop());

    // Warm up: thread-locals, shard handles, arc-swap's reader slot, the first sweeps and
    // windows (time is paused, so they are due only when advanced past).
    for i in 0..1_000 {
        one(&stack, i, &mut cx);
    }
    tokio::time::advance(Duration::from_millis(20)).await;
    for i in 0..1_000 {
        one(&stack, i, &mut cx);
    }

    // The counter works.
    let before = thread_allocations();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert!(
        thread_allocations() > before,
        "the counting allocator counts"
    );

    let before = thread_allocations();
    for i in 0..10_000 {
        one(&stack, i, &mut cx);
    }
    let added = thread_allocations() - before;
    assert_eq!(added, 0, "{added} allocations in 10,000 requests");

    // Every request went through every layer to an endpoint.
    let admitted: u64 = stats.snapshot().classes.iter().map(|c| c.admitted).sum();
    assert_eq!(admitted, 12_000);
    let served: u64 = endpoints.endpoints().iter().map(|e| e.requests).sum();
    assert_eq!(served, 12_000);
}
