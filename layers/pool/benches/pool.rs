//! Per-request overhead of tollgate-pool against its peers, in one run: tower's static
//! `ConcurrencyLimit`, tower-resilience's adaptive limiter (AIMD), and `PoolSizer` (the default
//! algorithm, Knee; in the default reject mode and in wait mode; and Vegas, the default before
//! Knee), single-threaded and with 2 threads sharing one
//! instance (each thread its own clone). `bare_service` (no layer) is the control: its 2-thread
//! figure shows what the host itself adds.
//!
//! The inner service answers at once and the limits are far above the concurrency, so what is
//! measured is the layer: acquire in `poll_ready`, call, release when the future completes.
//! With 2 threads the figure is wall time per request per thread.
//!
//! Run: `cargo bench -p tollgate-pool --bench pool -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_pool::{AlgorithmConfig, AtLimit, PoolConfig, PoolSizerLayer, VegasConfig};
use tower::{Layer, Service, ServiceBuilder, service_fn};
use tower_resilience::adaptive::{AdaptiveLimiterLayer, Aimd};

type Inner = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, std::io::Error>>>;

fn inner() -> Inner {
    service_fn(|n| std::future::ready(Ok(n)))
}

/// One request: ready, call, poll the answer (it completes at once).
fn request<S>(svc: &mut S, cx: &mut Context<'_>, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    loop {
        match svc.poll_ready(cx) {
            Poll::Ready(r) => break r.unwrap(),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
    let mut fut = pin!(svc.call(n));
    match fut.as_mut().poll(cx) {
        Poll::Ready(r) => {
            black_box(r.unwrap());
        }
        Poll::Pending => panic!("the inner service answers at once"),
    }
}

fn run_threads<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let barrier = Barrier::new(threads);
    let times: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut cx = Context::from_waker(Waker::noop());
                    barrier.wait();
                    let start = Instant::now();
                    for i in 0..iters {
                        request(&mut svc, &mut cx, i);
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    times.into_iter().max().unwrap()
}

type Make = Box<dyn Fn() -> Box<dyn Bench>>;

fn peers() -> Vec<(&'static str, Make)> {
    vec![
        // Control: no layer at all. Its 2-thread figure shows what the machine itself adds
        // (two busy threads on a shared, loaded host), since nothing is shared.
        (
            "bare_service",
            Box::new(|| Box::new(inner()) as Box<dyn Bench>),
        ),
        (
            "tower_concurrency_limit",
            Box::new(|| {
                Box::new(tower::limit::ConcurrencyLimit::new(inner(), 10_000)) as Box<dyn Bench>
            }),
        ),
        (
            "tower_resilience_adaptive_aimd",
            Box::new(|| {
                let aimd = Aimd::builder()
                    .initial_limit(10_000)
                    .min_limit(1)
                    .max_limit(20_000)
                    .latency_threshold(Duration::from_secs(1))
                    .build()
                    .unwrap();
                Box::new(AdaptiveLimiterLayer::new(aimd).layer(inner())) as Box<dyn Bench>
            }),
        ),
        (
            "tollgate_pool_default",
            Box::new(|| {
                // The inner service answers in nanoseconds, so the default algorithm would
                // (rightly) shrink the limit to a few per thread; the floor keeps this about
                // overhead. The algorithm still runs every window.
                let config = PoolConfig {
                    min_limit: 1_000,
                    initial_limit: 10_000,
                    max_limit: 20_000,
                    ..PoolConfig::default()
                };
                let layer = PoolSizerLayer::from_config(config).unwrap();
                Box::new(ServiceBuilder::new().layer(layer).service(inner())) as Box<dyn Bench>
            }),
        ),
        (
            // The default before Knee, for a before/after figure in the same run.
            "tollgate_pool_vegas",
            Box::new(|| {
                let config = PoolConfig {
                    min_limit: 1_000,
                    initial_limit: 10_000,
                    max_limit: 20_000,
                    algorithm: AlgorithmConfig::Vegas(VegasConfig::default()),
                    ..PoolConfig::default()
                };
                let layer = PoolSizerLayer::from_config(config).unwrap();
                Box::new(ServiceBuilder::new().layer(layer).service(inner())) as Box<dyn Bench>
            }),
        ),
        (
            "tollgate_pool_default_wait_mode",
            Box::new(|| {
                // The inner service answers in nanoseconds, so the default algorithm would
                // (rightly) shrink the limit to a few per thread; the floor keeps this about
                // overhead. The algorithm still runs every window.
                let config = PoolConfig {
                    min_limit: 1_000,
                    initial_limit: 10_000,
                    max_limit: 20_000,
                    at_limit: AtLimit::Wait {
                        max_wait: Duration::from_millis(10),
                    },
                    ..PoolConfig::default()
                };
                let layer = PoolSizerLayer::from_config(config).unwrap();
                Box::new(ServiceBuilder::new().layer(layer).service(inner())) as Box<dyn Bench>
            }),
        ),
    ]
}

/// Object-safe wrapper so the peers share one loop.
trait Bench {
    fn run(&self, threads: usize, iters: u64) -> Duration;
}

impl<S> Bench for S
where
    S: Service<u64, Response = u64> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    fn run(&self, threads: usize, iters: u64) -> Duration {
        run_threads(self, threads, iters)
    }
}

fn bench(c: &mut Criterion) {
    for threads in [1, 2] {
        let mut group = c.benchmark_group(format!("pool/{threads}_threads"));
        for (name, make) in peers() {
            // Each iteration is one request per thread; a tokio runtime is entered so layers
            // that read tokio's clock see a real one.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let _guard = rt.enter();
            let svc = make();
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| svc.run(threads, iters))
            });
        }
        group.finish();
    }
    ratios();
}

/// The targets of issue #15 as ratios from one direct run, the peers interleaved round by
/// round so that all see the same machine load: tollgate's default at most 2x tower's static
/// `ConcurrencyLimit` single-threaded and below it with 2 threads, and at least 5x faster than
/// tower-resilience's adaptive limiter with 2 threads.
fn ratios() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let all = peers();
    let pick = |name: &str| {
        let (_, make) = all.iter().find(|(n, _)| *n == name).expect("a peer");
        make()
    };
    let ours = pick("tollgate_pool_default");
    let tower = pick("tower_concurrency_limit");
    let resilience = pick("tower_resilience_adaptive_aimd");
    const ROUNDS: u32 = 5;
    const ITERS: u64 = 200_000;
    for threads in [1usize, 2] {
        // One round first, not counted: the limiter's first windows time every request.
        ours.run(threads, ITERS);
        tower.run(threads, ITERS);
        let (mut t_ours, mut t_tower, mut t_res) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for _ in 0..ROUNDS {
            t_ours += ours.run(threads, ITERS);
            t_tower += tower.run(threads, ITERS);
            t_res += resilience.run(threads, ITERS / 10);
        }
        let per = |t: Duration, iters: u64| t.as_nanos() as f64 / f64::from(ROUNDS) / iters as f64;
        let (o, t, r) = (
            per(t_ours, ITERS),
            per(t_tower, ITERS),
            per(t_res, ITERS / 10),
        );
        println!(
            "pool/{threads}-thread: tollgate {o:.1} ns, tower ConcurrencyLimit {t:.1} ns \
             (tollgate/tower = {:.2}, target {}), tower-resilience {r:.1} ns \
             (resilience/tollgate = {:.1}{})",
            o / t,
            if threads == 1 { "<= 2" } else { "< 1" },
            r / o,
            if threads == 2 { ", target >= 5" } else { "" },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
