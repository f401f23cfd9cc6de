//! tollgate-balance vs tower's `p2c::Balance` with `PeakEwma` behind a `Buffer` (which tower's
//! balancer needs to be shared), over 8 always-ready endpoints: one task alone, then two
//! threads sharing one balancer. Each figure is the time one task spends per request.
//!
//! ```text
//! cargo bench -p tollgate-balance --bench balance -- --warm-up-time 1 --measurement-time 3
//! ```
#![allow(missing_docs)] // criterion's macros generate undocumented functions

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;
use tokio::time::Instant;
use tollgate_balance::{Balance, BalanceConfig};
use tollgate_core::testing::Echo;
use tower::balance::p2c;
use tower::buffer::Buffer;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::{Service, ServiceExt};

const ENDPOINTS: usize = 8;

fn tollgate() -> Balance<usize, Echo> {
    Balance::new((0..ENDPOINTS).map(|i| (i, Echo)), BalanceConfig::default()).expect("valid config")
}

type TowerSvc = Buffer<
    u64,
    <p2c::Balance<PeakEwmaDiscover<ServiceList<Vec<Echo>>>, u64> as Service<u64>>::Future,
>;

/// Must be called inside a runtime: the buffer spawns its worker.
fn tower_buffered() -> TowerSvc {
    let discover = PeakEwmaDiscover::new::<u64>(
        ServiceList::new::<u64>(vec![Echo; ENDPOINTS]),
        Duration::from_millis(30),
        Duration::from_secs(10),
        CompleteOnResponse::default(),
    );
    Buffer::new(p2c::Balance::new(discover), 1024)
}

async fn drive<S>(mut svc: S, iters: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..iters {
        let r = svc.ready().await.unwrap().call(i).await.unwrap();
        black_box(r);
    }
}

fn single(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("balance_8_endpoints_1_thread");
    g.bench_function("tower_buffer_p2c_peak_ewma", |b| {
        let svc = rt.block_on(async { tower_buffered() });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                drive(svc.clone(), iters).await;
                start.elapsed()
            })
        })
    });
    g.bench_function("tollgate_balance", |b| {
        let svc = tollgate();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                drive(svc.clone(), iters).await;
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
        .unwrap();
    let mut g = c.benchmark_group("balance_8_endpoints_2_threads");
    fn shared<S>(rt: &tokio::runtime::Runtime, svc: S, iters: u64) -> Duration
    where
        S: Service<u64, Response = u64> + Clone + Send + 'static,
        S::Error: std::fmt::Debug,
        S::Future: Send,
    {
        rt.block_on(async {
            let start = Instant::now();
            let a = tokio::spawn(drive(svc.clone(), iters));
            let b = tokio::spawn(drive(svc, iters));
            a.await.unwrap();
            b.await.unwrap();
            start.elapsed()
        })
    }
    g.bench_function("tower_buffer_p2c_peak_ewma", |b| {
        let svc = rt.block_on(async { tower_buffered() });
        b.iter_custom(|iters| shared(&rt, svc.clone(), iters))
    });
    g.bench_function("tollgate_balance", |b| {
        let svc = tollgate();
        b.iter_custom(|iters| shared(&rt, svc.clone(), iters))
    });
    g.finish();
}

criterion_group!(benches, single, two_threads);
criterion_main!(benches);
