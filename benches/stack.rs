//! The whole layer stack per request, against tower's `Buffer` + `p2c::Balance` over
//! `PeakEwma` in the same run (the issue's reference: about 900 ns a request).
//!
//! The stack, outermost first, as the gateway builds it for a cluster:
//!
//! ```text
//! Admission (4 priority classes, a limit far above what is in flight)
//!   -> Breaker (count window, default settings)
//!     -> PoolSizer (Vegas adaptive limit)
//!       -> Balance (P2C over peak-EWMA) over 8 endpoints that answer at once
//! ```
//!
//! Each request clones the stack (as a server does per request) and sends one request through
//! `oneshot`, polled to completion. Three ways of driving it:
//!
//! - `1 thread/noop waker`: polled by hand with a no-op waker, no runtime at all (our stack
//!   needs none; tower's `Buffer` does, so it has no figure here);
//! - `1 thread/runtime`: inside one current-thread tokio runtime, a loop of `clone` +
//!   `oneshot(..).await` per request, for both stacks, plus tower's figure as its own bench
//!   measures it (`ready` + `call` on one handle, no clone);
//! - `2 threads/runtime`: two tasks on a 2-worker runtime sharing one stack; the figure is the
//!   wall time per request per task.
//!
//! ```text
//! cargo bench -p tollgate --all-features --bench stack -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The ratios of each group are printed at the end. (tower-resilience is not among the facade's
//! dev-dependencies; the layer crates' own benches compare each layer with it.)
//!
//! The endpoints answer at once, so the figures are the layers' own cost; `tests/stack_alloc.rs`
//! checks that the same stack allocates nothing per request.
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use criterion::Criterion;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::Instant;
use tollgate::admission::{AdmissionConfig, AdmissionLayer};
use tollgate::balance::{Balance, BalanceConfig};
use tollgate::breaker::{BreakerConfig, BreakerLayer};
use tollgate::pool::{PoolConfig, PoolSizerLayer};
use tollgate_core::testing::Echo;
use tower::balance::p2c;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::{Service, ServiceBuilder, ServiceExt};

const ENDPOINTS: usize = 8;

/// The tollgate stack: admission -> breaker -> pool -> balance over 8 `Echo`s.
fn tollgate_stack()
-> impl Service<u64, Response = u64, Error: std::fmt::Debug, Future: Send> + Clone + Send + 'static
{
    let admission = AdmissionLayer::new(AdmissionConfig {
        limit: 1 << 20,
        ..AdmissionConfig::default() // 4 classes
    })
    .expect("valid admission config")
    .prioritize(|r: &u64| (*r & 3) as usize);
    let breaker = BreakerLayer::new(BreakerConfig::default()).expect("valid breaker config");
    // A floor well above the requests in flight: requests that take nanoseconds give Vegas
    // noisy samples, and a limit it lowered to 1 would turn the second thread's requests away.
    let pool = PoolSizerLayer::from_config(PoolConfig {
        min_limit: 16,
        initial_limit: 100,
        ..PoolConfig::default()
    })
    .expect("valid pool config");
    let balance = Balance::new((0..ENDPOINTS).map(|i| (i, Echo)), BalanceConfig::default())
        .expect("valid balance config");
    ServiceBuilder::new()
        .layer(admission) // shed low priority before any work
        .layer(breaker) // fail fast on a sick cluster
        .layer(pool) // adaptive in-flight limit to the cluster
        .service(balance)
}

type TowerSvc = Buffer<
    u64,
    <p2c::Balance<PeakEwmaDiscover<ServiceList<Vec<Echo>>>, u64> as Service<u64>>::Future,
>;

/// tower's balancer behind the `Buffer` that shares it. Must be called inside a runtime: the
/// buffer spawns its worker.
fn tower_stack() -> TowerSvc {
    let discover = PeakEwmaDiscover::new::<u64>(
        ServiceList::new::<u64>(vec![Echo; ENDPOINTS]),
        Duration::from_millis(30),
        Duration::from_secs(10),
        CompleteOnResponse::default(),
    );
    Buffer::new(p2c::Balance::new(discover), 1024)
}

/// One request by hand: clone the stack, `oneshot`, poll once with a no-op waker.
#[inline]
fn by_hand<S>(stack: &S, req: u64, cx: &mut Context<'_>)
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: std::fmt::Debug,
{
    let fut = pin!(stack.clone().oneshot(black_box(req)));
    match fut.poll(cx) {
        Poll::Ready(r) => {
            black_box(r.unwrap());
        }
        Poll::Pending => unreachable!("every layer and endpoint is ready at once"),
    }
}

/// `iters` requests, each on a fresh clone of `stack`, as a server's connections do.
async fn cloned<S>(stack: S, iters: u64)
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: std::fmt::Debug,
{
    for i in 0..iters {
        black_box(stack.clone().oneshot(i).await.unwrap());
    }
}

/// `iters` requests on one handle (`ready` then `call`), as tower's own balance bench does.
async fn reused<S>(mut svc: S, iters: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..iters {
        black_box(svc.ready().await.unwrap().call(i).await.unwrap());
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("stack/1 thread");
    g.bench_function("tollgate/noop waker", |b| {
        let stack = tollgate_stack();
        let mut cx = Context::from_waker(Waker::noop());
        let mut i = 0u64;
        b.iter(|| {
            i = i.wrapping_add(1);
            by_hand(&stack, i, &mut cx)
        });
    });
    let rt = current_thread();
    g.bench_function("tollgate/runtime", |b| {
        let stack = tollgate_stack();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                cloned(stack.clone(), iters).await;
                start.elapsed()
            })
        })
    });
    g.bench_function("tower buffer+p2c/runtime", |b| {
        let svc = rt.block_on(async { tower_stack() });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                cloned(svc.clone(), iters).await;
                start.elapsed()
            })
        })
    });
    g.bench_function("tower buffer+p2c/runtime, one handle", |b| {
        let svc = rt.block_on(async { tower_stack() });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                reused(svc.clone(), iters).await;
                start.elapsed()
            })
        })
    });
    g.finish();
}

fn two_threads(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    /// Two tasks share `stack`, `iters` requests each; the wall time of the pair.
    fn shared<S>(rt: &tokio::runtime::Runtime, stack: S, iters: u64) -> Duration
    where
        S: Service<u64, Response = u64> + Clone + Send + 'static,
        S::Error: std::fmt::Debug,
        S::Future: Send,
    {
        rt.block_on(async {
            let start = Instant::now();
            let a = tokio::spawn(cloned(stack.clone(), iters));
            let b = tokio::spawn(cloned(stack, iters));
            a.await.expect("task a");
            b.await.expect("task b");
            start.elapsed()
        })
    }
    let mut g = c.benchmark_group("stack/2 threads");
    g.bench_function("tollgate/runtime", |b| {
        let stack = tollgate_stack();
        b.iter_custom(|iters| shared(&rt, stack.clone(), iters))
    });
    g.bench_function("tower buffer+p2c/runtime", |b| {
        let svc = rt.block_on(async { tower_stack() });
        b.iter_custom(|iters| shared(&rt, svc.clone(), iters))
    });
    g.finish();
}

/// Reads criterion's estimate (ns) of one bench from `target/criterion`.
/// Only estimates written by this run count (file times are wall-clock times).
#[allow(clippy::disallowed_types)]
fn estimate_ns(group: &str, bench: &str, since: std::time::SystemTime) -> Option<f64> {
    let dir = |s: &str| s.replace('/', "_");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../criterion")
        .join(dir(group))
        .join(dir(bench))
        .join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    // The slope (what criterion prints as the time) when it has one, else the mean.
    let estimate = |name: &str| -> Option<f64> {
        let at = text.find(&format!("\"{name}\":{{"))?;
        let rest = &text[at..];
        let at = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
        let rest = rest[at..].trim_start();
        let end = rest.find([',', '}'])?;
        rest[..end].trim().parse().ok()
    };
    estimate("slope").or_else(|| estimate("mean"))
}

#[allow(clippy::disallowed_types)]
fn ratios(since: std::time::SystemTime) {
    let pairs = [
        (
            "stack/1 thread",
            "tollgate/runtime",
            "tower buffer+p2c/runtime",
        ),
        (
            "stack/1 thread",
            "tollgate/runtime",
            "tower buffer+p2c/runtime, one handle",
        ),
        (
            "stack/2 threads",
            "tollgate/runtime",
            "tower buffer+p2c/runtime",
        ),
    ];
    println!("\nper request (criterion's estimates, this run):");
    if let Some(ns) = estimate_ns("stack/1 thread", "tollgate/noop waker", since) {
        println!("  stack/1 thread: tollgate/noop waker {ns:.0} ns");
    }
    for (group, ours, peer) in pairs {
        if let (Some(a), Some(b)) = (
            estimate_ns(group, ours, since),
            estimate_ns(group, peer, since),
        ) {
            println!(
                "  {group}: {ours} {a:.0} ns, {peer} {b:.0} ns: tower takes {:.1}x as long",
                b / a
            );
        }
    }
}

fn main() {
    // Wall-clock time only to tell this run's estimates from older ones.
    #[allow(clippy::disallowed_types)]
    let since = std::time::SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    single(&mut c);
    two_threads(&mut c);
    c.final_summary();
    ratios(since);
}
