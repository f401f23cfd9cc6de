//! The cost of the retry layer per call, against tower's `Retry` with its `TpsBudget`, in the
//! same run: the success path (a deposit per request), and a path where every request's first
//! attempt fails and the immediate retry succeeds (a withdrawal per request). Single-threaded
//! and with two threads each calling its own clone of one shared instance (time per call per
//! thread). After the criterion groups, a direct timing of each pair prints the ratio
//! `tower / tollgate`.
//!
//! `cargo bench -p tollgate-retry --bench retry -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::disallowed_types)] // std's Instant times the runs, as criterion does

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::cell::Cell;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};
use tollgate_retry::{BackoffConfig, BudgetConfig, RetryConfig, RetryLayer};
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{Layer, Service, ServiceExt};

/// Answers at once; with `flaky`, each thread's calls fail and succeed in turn, so each
/// request's first attempt fails and its retry succeeds (every thread makes one request at a
/// time, and both layers call the inner service on the caller's thread).
#[derive(Clone)]
struct Backend {
    flaky: bool,
}

impl Backend {
    fn new(flaky: bool) -> Self {
        Self { flaky }
    }
}

thread_local! {
    static FAIL_NEXT: Cell<bool> = const { Cell::new(true) };
}

impl Service<u64> for Backend {
    type Response = u64;
    type Error = &'static str;
    type Future = Ready<Result<u64, &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        if self.flaky && FAIL_NEXT.with(|f| f.replace(!f.get())) {
            ready(Err("flaky"))
        } else {
            ready(Ok(req))
        }
    }
}

/// tower's retry policy with a `TpsBudget`, as its docs suggest: deposit on success, withdraw
/// to retry an error.
#[derive(Clone)]
struct TowerPolicy(Arc<TpsBudget>);

impl tower::retry::Policy<u64, u64, &'static str> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, &'static str>) -> Option<Ready<()>> {
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn tower_retry(
    flaky: bool,
) -> impl Service<u64, Response = u64, Error: std::fmt::Debug> + Clone + Send {
    // Finagle's and tower's defaults: 10 s, 10 per second, 20%; for the flaky path a ratio of
    // 1.0 here and 2.0 in tollgate's, so neither budget runs dry: a call's retry may be counted
    // in the bucket after its request, and outlive it in the window for a moment, which
    // tower's reserve (10/s, added to the ratio) covers and tollgate's floor (a minimum, not
    // an addition) does not.
    let budget = TpsBudget::new(Duration::from_secs(10), 10, if flaky { 1.0 } else { 0.2 });
    tower::retry::RetryLayer::new(TowerPolicy(Arc::new(budget))).layer(Backend::new(flaky))
}

fn tollgate_retry(
    flaky: bool,
) -> impl Service<u64, Response = u64, Error: std::fmt::Debug> + Clone + Send {
    RetryLayer::new(RetryConfig {
        budget: BudgetConfig {
            ratio: if flaky { 2.0 } else { 0.2 },
            ..BudgetConfig::default()
        },
        backoff: BackoffConfig {
            base: Duration::ZERO,
            max: Duration::ZERO,
        },
        seed: Some(1),
        ..RetryConfig::default()
    })
    .unwrap()
    .layer(Backend::new(flaky))
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

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
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut svc = svc.clone();
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

fn group(c: &mut Criterion, name: &str, flaky: bool) {
    let mut g = c.benchmark_group(name);
    for threads in [1usize, 2] {
        let ours = tollgate_retry(flaky);
        g.bench_function(
            BenchmarkId::new("tollgate", format!("{threads}-thread")),
            |b| b.iter_custom(|iters| shared(&ours, threads, iters)),
        );
        let tower = tower_retry(flaky);
        g.bench_function(
            BenchmarkId::new("tower", format!("{threads}-thread")),
            |b| b.iter_custom(|iters| shared(&tower, threads, iters)),
        );
    }
    g.finish();
    // The ratio in one direct run, interleaved so both see the same machine load.
    for threads in [1usize, 2] {
        let (ours, tower) = (tollgate_retry(flaky), tower_retry(flaky));
        let (mut t_ours, mut t_tower) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..5 {
            t_ours += shared(&ours, threads, 100_000);
            t_tower += shared(&tower, threads, 100_000);
        }
        println!(
            "{name}/{threads}-thread: tollgate {:.0} ns/call, tower {:.0} ns/call, tower/tollgate = {:.2}",
            t_ours.as_nanos() as f64 / 500_000.0,
            t_tower.as_nanos() as f64 / 500_000.0,
            t_tower.as_secs_f64() / t_ours.as_secs_f64()
        );
    }
}

/// The budgets alone: one deposit per call, every thread on one shared budget. tower's
/// `TpsBudget` takes a mutex and bumps one shared counter per deposit; tollgate's `Budget`
/// bumps this thread's shard of the current bucket.
fn budgets(c: &mut Criterion) {
    let ours = tollgate_retry::Budget::new(&BudgetConfig::default());
    let tower = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let each = |threads: usize, iters: u64, f: &(dyn Fn() + Sync)| -> Duration {
        let barrier = Barrier::new(threads);
        let total: Duration = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        for _ in 0..iters {
                            f();
                        }
                        start.elapsed()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        total / threads as u32
    };
    let mut g = c.benchmark_group("budget_deposit");
    for threads in [1usize, 2] {
        g.bench_function(
            BenchmarkId::new("tollgate", format!("{threads}-thread")),
            |b| b.iter_custom(|iters| each(threads, iters, &|| ours.deposit())),
        );
        g.bench_function(
            BenchmarkId::new("tower", format!("{threads}-thread")),
            |b| b.iter_custom(|iters| each(threads, iters, &|| tower.deposit())),
        );
    }
    g.finish();
    for threads in [1usize, 2] {
        let (mut t_ours, mut t_tower) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..5 {
            t_ours += each(threads, 200_000, &|| ours.deposit());
            t_tower += each(threads, 200_000, &|| tower.deposit());
        }
        println!(
            "budget_deposit/{threads}-thread: tollgate {:.1} ns, tower {:.1} ns, tower/tollgate = {:.2}",
            t_ours.as_nanos() as f64 / 1e6,
            t_tower.as_nanos() as f64 / 1e6,
            t_tower.as_secs_f64() / t_ours.as_secs_f64()
        );
    }
}

fn retry(c: &mut Criterion) {
    group(c, "success", false);
    group(c, "fail_then_retry", true);
    budgets(c);
}

criterion_group!(benches, retry);
criterion_main!(benches);
