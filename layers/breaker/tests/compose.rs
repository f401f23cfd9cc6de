//! Layers that compose under overload: the README's stack (admission, then the breaker, then
//! the pool) in front of a healthy backend, offered more than the pool's limit admits. The
//! pool sheds the excess with `Overloaded`; the breaker above it must not count those
//! rejections as failures of the upstream (they say nothing about it), or it opens and turns
//! shedding into an outage.

use std::time::Duration;
use tollgate_admission::{AdmissionConfig, AdmissionLayer};
use tollgate_breaker::{BreakerConfig, BreakerLayer, State};
use tollgate_pool::{Limiter, PoolConfig, PoolSizerLayer};
use tollgate_sim::{LoadGen, Recorder, ServiceTime, SimBackend};
use tower::ServiceBuilder;

/// The pool's (fixed) limit, and the backend's workers: at most `LIMIT / 10 ms` in flight.
const LIMIT: usize = 20;
const SERVICE: Duration = Duration::from_millis(10);

fn backend(seed: u64) -> SimBackend {
    SimBackend::builder()
        .workers(LIMIT)
        .service_time(ServiceTime::Uniform {
            min: SERVICE.mul_f64(0.8),
            max: SERVICE.mul_f64(1.2),
        })
        .seed(seed)
        .build()
}

fn limiter() -> Limiter {
    Limiter::new(PoolConfig {
        min_limit: LIMIT,
        max_limit: LIMIT,
        initial_limit: LIMIT,
        ..PoolConfig::default()
    })
    .unwrap()
}

fn load(factor: f64, seed: u64) -> LoadGen {
    let rate = factor * LIMIT as f64 / SERVICE.as_secs_f64();
    LoadGen::constant(rate, Duration::from_secs(10)).seed(seed)
}

/// Goodput (per second, from 1 s to 10 s) of the pool alone: what its limit admits.
async fn pool_alone(factor: f64, seed: u64) -> f64 {
    let svc = ServiceBuilder::new()
        .layer(PoolSizerLayer::new(limiter()))
        .service(backend(seed));
    let rec = Recorder::new();
    load(factor, seed).run(svc, &rec).await;
    rec.summary(Duration::from_secs(1), Duration::from_secs(10))
        .goodput_rps()
}

async fn readme_stack_at(factor: f64, seed: u64) {
    let admits = pool_alone(factor, seed).await;
    let backend = backend(seed);
    let limiter = limiter();
    let breaker = BreakerLayer::new(BreakerConfig {
        seed: Some(seed),
        ..BreakerConfig::default()
    })
    .unwrap();
    let handle = breaker.handle();
    let admission = AdmissionLayer::new(AdmissionConfig::default()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(admission) // shed low priority before any work
        .layer(breaker) // fail fast on a sick upstream
        .layer(PoolSizerLayer::new(limiter.clone())) // learn how much the upstream can take
        .service(backend.clone());
    let rec = Recorder::new();
    tokio::time::timeout(Duration::from_secs(3600), load(factor, seed).run(svc, &rec))
        .await
        .expect("the run finished");

    let s = rec.summary(Duration::from_secs(1), Duration::from_secs(10));
    let snap = handle.snapshot();
    eprintln!(
        "{factor}x: goodput {:.0}/s of {admits:.0}, rejected {:?}, errors {}, breaker {:?}",
        s.goodput_rps(),
        s.rejected_by_kind,
        s.errors,
        snap
    );
    assert_eq!(backend.stats().failed, 0, "the backend never fails");
    assert_eq!(snap.state, State::Closed, "{factor}x: {snap:?}");
    assert_eq!(
        snap.failures, 0,
        "{factor}x: rejections counted as failures"
    );
    assert_eq!(snap.opens_in_a_row, 0, "{factor}x: {snap:?}");
    assert_eq!(s.errors, 0, "{factor}x: {s:?}");
    assert!(s.rejected > 0, "{factor}x: the pool shed nothing");
    assert!(
        s.goodput_rps() >= 0.95 * admits,
        "{factor}x: goodput {:.0} of {admits:.0}",
        s.goodput_rps()
    );
    assert!(rec.total().ledger_balanced());
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_stays_closed_at_1_3x_the_pool_limit() {
    readme_stack_at(1.3, 1).await;
}

#[tokio::test(start_paused = true)]
async fn the_breaker_stays_closed_at_3x_the_pool_limit() {
    readme_stack_at(3.0, 2).await;
}
