//! Uncontended pass-through overhead: tower's `ConcurrencyLimit` against tollgate-admission, on
//! one thread and on two threads sharing one limit. Both wrap the same always-ready inner
//! service, with a limit far above the number of threads, so nothing ever waits.
//!
//! `cargo bench -p tollgate-admission --bench admission -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion's macros generate undocumented public functions

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tollgate_admission::{AdmissionConfig, AdmissionLayer};
use tollgate_core::testing::Echo;
use tower::limit::ConcurrencyLimit;
use tower_layer::Layer;
use tower_service::Service;

const LIMIT: usize = 1 << 20;

/// One request: ready, call, poll the response to completion, drop it.
#[inline]
fn one<S: Service<u64, Response = u64>>(svc: &mut S, cx: &mut Context<'_>)
where
    S::Error: std::fmt::Debug,
{
    assert!(svc.poll_ready(cx).is_ready());
    let fut = pin!(svc.call(black_box(1)));
    match fut.poll(cx) {
        Poll::Ready(r) => {
            black_box(r.unwrap());
        }
        Poll::Pending => unreachable!("the inner service answers at once"),
    }
}

fn admission() -> tollgate_admission::Admission<Echo, impl Fn(&u64) -> usize + Clone> {
    let config = AdmissionConfig {
        limit: LIMIT,
        ..AdmissionConfig::default()
    };
    AdmissionLayer::new(config)
        .unwrap()
        .prioritize(|r: &u64| (*r & 3) as usize)
        .layer(Echo)
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended/1 thread");
    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function("tower ConcurrencyLimit", |b| {
        let mut svc = ConcurrencyLimit::new(Echo, LIMIT);
        b.iter(|| one(&mut svc, &mut cx));
    });
    g.bench_function("tollgate-admission", |b| {
        let mut svc = admission();
        b.iter(|| one(&mut svc, &mut cx));
    });
    g.finish();
}

/// Both threads run `iters` requests each on clones of one service; the time reported is the
/// wall time per request pair (one per thread).
fn two_threads<S>(svc: &S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    let mut cx = Context::from_waker(Waker::noop());
                    one(&mut svc, &mut cx);
                    barrier.wait();
                    let start = tokio::time::Instant::now(); // no runtime here: the real clock
                    for _ in 0..iters {
                        one(&mut svc, &mut cx);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended/2 threads");
    g.bench_function(BenchmarkId::new("tower ConcurrencyLimit", 2), |b| {
        let svc = ConcurrencyLimit::new(Echo, LIMIT);
        b.iter_custom(|iters| two_threads(&svc, iters));
    });
    g.bench_function(BenchmarkId::new("tollgate-admission", 2), |b| {
        let svc = admission();
        b.iter_custom(|iters| two_threads(&svc, iters));
    });
    g.finish();
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);
