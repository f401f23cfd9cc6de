//! The picture in the docs: the default limit on a jittery backend (10 workers, service time
//! uniform within ±20% of 10 ms) through a step to overload, a halving of the backend and its
//! restoration, on tollgate-sim. Writes the timeline under `target/sim/`; with
//! `TOLLGATE_UPDATE_DOCS=1` also to `layers/pool/docs/limit.svg` (and `.csv`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tollgate_pool::{Limiter, PoolConfig, PoolSizerLayer};
use tollgate_sim::timeline::{IN_FLIGHT, LIMIT};
use tollgate_sim::{LoadGen, Profile, Recorder, ServiceTime, SimBackend, Timeline};
use tower::ServiceBuilder;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn step_halve_restore() {
    let backend = SimBackend::builder()
        .workers(10)
        .service_time(ServiceTime::Uniform {
            min: Duration::from_millis(8),
            max: Duration::from_millis(12),
        })
        .seed(15)
        .build();
    // 0.8 C, then 1.4 C; capacity halves at 15 s and comes back at 25 s.
    backend.set_capacity_at(secs(15), 5);
    backend.set_capacity_at(secs(25), 10);
    let limiter = Limiter::new(PoolConfig::default()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(PoolSizerLayer::new(limiter.clone()))
        .service(backend);
    let rec = Recorder::new();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (limiter, rec, done) = (limiter.clone(), rec.clone(), done.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                rec.gauge(LIMIT, limiter.limit_f64());
                rec.gauge(IN_FLIGHT, limiter.in_flight() as f64);
            }
        }
    };
    let load = LoadGen::new(
        Profile::Steps(vec![(Duration::ZERO, 800.0), (secs(5), 1400.0)]),
        secs(35),
    )
    .seed(15);
    let driver = async {
        load.run(svc, &rec).await;
        done.store(true, Ordering::Relaxed);
    };
    tokio::time::timeout(secs(3600), async { tokio::join!(driver, sampler) })
        .await
        .expect("the run finished");
    assert!(rec.total().ledger_balanced());

    // Each phase, once settled: goodput at the capacity of the moment.
    for (from, to, capacity) in [(7, 15, 1000.0), (17, 25, 500.0), (27, 35, 1000.0)] {
        let s = rec.summary(secs(from), secs(to));
        eprintln!(
            "{from}-{to} s: goodput {:.0}/s (capacity {capacity}), p99 {:?}",
            s.goodput_rps(),
            s.p99
        );
        assert!(s.goodput_rps() >= 0.95 * capacity, "{from}-{to} s: {s:?}");
    }

    let timeline = Timeline::from_recorder(
        "default limit (Knee), 10 workers, 10 ms ± 20%: 0.8x, then 1.4x; capacity halved at 15 s, restored at 25 s",
        &rec,
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    timeline
        .write(&root.join("../../target/sim"), "pool-limit")
        .unwrap();
    if std::env::var_os("TOLLGATE_UPDATE_DOCS").is_some() {
        timeline.write(&root.join("docs"), "limit").unwrap();
    }
}
