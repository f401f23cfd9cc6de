//! An L1 hit through the whole layer against `moka::future::Cache::get` on the same hot keys,
//! single-threaded and on two threads sharing the key set; and a miss that stores (every key
//! new, L2 full so that each store evicts) against the same work by hand on a
//! `moka::sync::Cache` of the same capacity (`get`, then `insert`).
//!
//! Both are polled by hand with a no-op waker (each completes on its first poll), so the figures
//! are the caches' own costs, not an executor's.
//!
//! `cargo bench -p tollgate-cache --bench cache -- --warm-up-time 1 --measurement-time 3`

// Benchmarks time themselves with std's clock; the layer under test never reads it.
#![allow(clippy::disallowed_types)]
// `criterion_group!` generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tollgate_cache::{Cache, CacheConfig, CacheLayer, Cacheability, FnPolicy, Freshness};
use tollgate_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

const HOT: u64 = 32;

fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

type Policy = FnPolicy<u64, u64, fn(&u64) -> Option<u64>, fn(&u64) -> Cacheability>;
type Origin = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, BoxError>>>;

fn origin(k: u64) -> std::future::Ready<Result<u64, BoxError>> {
    std::future::ready(Ok(k))
}

/// Entries the miss benchmarks keep: L2 is filled to it before the clock starts.
const MISS_CAPACITY: u64 = 10_000;

fn layer() -> Cache<Origin, Policy> {
    layer_with(CacheConfig::default())
}

fn layer_with(cfg: CacheConfig) -> Cache<Origin, Policy> {
    fn key(k: &u64) -> Option<u64> {
        Some(*k)
    }
    fn store(_: &u64) -> Cacheability {
        Cacheability::Store(Freshness::ttl(Duration::from_secs(3600)))
    }
    let cfg = CacheConfig {
        l1_ttl: Duration::from_secs(3600),
        ..cfg
    };
    let policy: Policy = FnPolicy::new(
        key as fn(&u64) -> Option<u64>,
        store as fn(&u64) -> Cacheability,
    );
    let layer = CacheLayer::new(cfg, policy).unwrap();
    let mut svc = layer.layer(tower::service_fn(origin as fn(u64) -> _));
    for k in 0..HOT {
        get_layer(&mut svc, k);
    }
    svc
}

#[inline]
fn get_layer(svc: &mut Cache<Origin, Policy>, k: u64) -> u64 {
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(())) = svc.poll_ready(&mut cx) else {
        unreachable!("always ready")
    };
    now_or_never(svc.call(k)).unwrap()
}

fn moka() -> moka::future::Cache<u64, u64> {
    let cache = moka::future::Cache::new(10_000);
    for k in 0..HOT {
        now_or_never(cache.insert(k, k));
    }
    cache
}

/// Runs `op` `iters` times on each of `threads` threads started together; the slowest thread's
/// time, so the figure is the time per operation per thread.
fn on_threads<S: Clone + Send + 'static>(
    threads: usize,
    iters: u64,
    state: &S,
    op: fn(&mut S, u64) -> u64,
) -> Duration {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut state = state.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Warm this thread's L1 shard before the clock starts.
                for k in 0..HOT {
                    op(&mut state, k);
                }
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    black_box(op(&mut state, (i + t as u64 * 7) % HOT));
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
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("hit_1_thread");
    let mut svc = layer();
    let mut i = 0u64;
    g.bench_function("layer_l1", |b| {
        b.iter(|| {
            i = (i + 1) % HOT;
            black_box(get_layer(&mut svc, black_box(i)))
        })
    });
    let cache = moka();
    g.bench_function("moka_future_get", |b| {
        b.iter(|| {
            i = (i + 1) % HOT;
            black_box(now_or_never(cache.get(&black_box(i))))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("hit_2_threads");
    let svc = layer();
    g.bench_function("layer_l1", |b| {
        b.iter_custom(|iters| on_threads(2, iters, &svc, get_layer))
    });
    let cache = moka();
    g.bench_function("moka_future_get", |b| {
        b.iter_custom(|iters| {
            on_threads(2, iters, &cache, |c, k| {
                now_or_never(c.get(&k)).unwrap_or(0)
            })
        })
    });
    g.finish();
}

fn bench_miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("miss_store_1_thread");
    let mut svc = layer_with(CacheConfig {
        l2_capacity: MISS_CAPACITY,
        ..CacheConfig::default()
    });
    let mut next = HOT;
    for _ in 0..2 * MISS_CAPACITY {
        next += 1;
        get_layer(&mut svc, next);
    }
    g.bench_function("layer", |b| {
        b.iter(|| {
            next += 1;
            black_box(get_layer(&mut svc, black_box(next)))
        })
    });
    let cache = moka::sync::Cache::new(MISS_CAPACITY);
    let mut next = 0u64;
    let miss = |cache: &moka::sync::Cache<u64, u64>, k: u64| match cache.get(&k) {
        Some(v) => v,
        None => {
            cache.insert(k, k);
            k
        }
    };
    for _ in 0..2 * MISS_CAPACITY {
        next += 1;
        miss(&cache, next);
    }
    g.bench_function("moka_sync_get_insert", |b| {
        b.iter(|| {
            next += 1;
            black_box(miss(&cache, black_box(next)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_miss);
criterion_main!(benches);
