//! The closed-state cost of a breaker, per call: a bare pass-through wrapper, tollgate's
//! breaker and tower-resilience's circuit breaker, single-threaded and with two threads each
//! calling its own clone of one shared instance (time per call per thread).
//!
//! `cargo bench -p tollgate-breaker --bench breaker -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::disallowed_types)] // std's Instant times the runs, as criterion does

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};
use tollgate_breaker::{BreakerConfig, BreakerLayer, SlidingWindow};
use tollgate_core::testing::Echo;
use tower::{Layer, Service, ServiceExt};

/// The floor: a wrapper that only forwards.
#[derive(Clone)]
struct Bare<S>(S);

impl<S: Service<u64>> Service<u64> for Bare<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        self.0.call(req)
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs futures to completion on this thread, parking while they wait.
fn block_on<F: Future>(waker: &Waker, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn run<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let start = Instant::now();
    for i in 0..iters {
        let res = block_on(&waker, async {
            svc.ready().await.unwrap().call(black_box(i)).await
        });
        black_box(res.unwrap());
    }
    start.elapsed()
}

/// Time per call per thread, `threads` threads each calling its own clone of `svc`.
fn shared<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    each(|| svc.clone(), threads, iters)
}

/// Time per call per thread, `threads` threads each calling a service made by `make`.
fn each<S>(make: impl Fn() -> S, threads: usize, iters: u64) -> Duration
where
    S: Service<u64> + Send,
    S::Error: std::fmt::Debug,
{
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = make();
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    run(&mut svc, iters)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total / threads as u32
}

fn bench<S>(c: &mut Criterion, name: &str, svc: S)
where
    S: Service<u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let mut group = c.benchmark_group("closed_call");
    for threads in [1usize, 2] {
        group.bench_function(BenchmarkId::new(name, format!("{threads}-thread")), |b| {
            b.iter_custom(|iters| shared(&svc, threads, iters))
        });
    }
    group.finish();
}

fn closed_path(c: &mut Criterion) {
    bench(c, "bare", Bare(Echo));
    let tollgate = BreakerLayer::new(BreakerConfig::default()).unwrap();
    bench(c, "tollgate", tollgate.layer(Echo));
    let resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap();
    bench(c, "tower-resilience", resilience.layer(Echo));

    // What reading the clock costs: slow-call detection times every call (two reads), and a
    // time window stamps every result (one read).
    let mut group = c.benchmark_group("closed_call");
    let slow = BreakerConfig {
        slow_call_duration: Some(Duration::from_secs(1)),
        ..BreakerConfig::default()
    };
    let timed = BreakerConfig {
        sliding_window: SlidingWindow::Time {
            length: Duration::from_secs(10),
            buckets: 10,
        },
        ..BreakerConfig::default()
    };
    for (name, config) in [
        ("tollgate-slow-calls", slow),
        ("tollgate-time-window", timed),
    ] {
        let svc = BreakerLayer::new(config).unwrap().layer(Echo);
        group.bench_function(BenchmarkId::new(name, "1-thread"), |b| {
            b.iter_custom(|iters| shared(&svc, 1, iters))
        });
    }
    group.finish();

    // A control for the machine rather than the breaker: two threads, each with its own
    // breaker. The gap between this and `tollgate/2-thread` is the cost of sharing one.
    c.bench_function("closed_call/tollgate-unshared/2-thread", |b| {
        b.iter_custom(|iters| {
            let make = || {
                BreakerLayer::new(BreakerConfig::default())
                    .unwrap()
                    .layer(Echo)
            };
            each(make, 2, iters)
        })
    });
}

criterion_group!(benches, closed_path);
criterion_main!(benches);
