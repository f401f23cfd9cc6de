//! Capacity from tollgate-pool's adaptive limit (its `Limiter` is a `Capacity`), on the
//! simulator: when the backend loses half
//! its workers, the pool's limit falls and admission sheds more of the lower classes, while
//! the top class keeps being served.
use std::sync::Arc;
use std::time::Duration;
use tollgate_admission::{AdmissionConfig, AdmissionLayer, Ticket};
use tollgate_pool::{Limiter, PoolConfig};
use tollgate_sim::{LoadGen, Recorder, ServiceTime, SimBackend, SimRequest};
use tower_layer::Layer;

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn the_adaptive_limit_follows_the_backend_and_priority_holds() {
    let backend = SimBackend::builder()
        .workers(10)
        // Constant: Vegas reads RTT above its baseline as queueing, and exponential service
        // times would look like a queue all the time.
        .service_time(ServiceTime::Constant(Duration::from_millis(10)))
        .seed(21)
        .build();
    backend.set_capacity_at(10 * SEC, 5);
    let limiter = Limiter::new(PoolConfig {
        initial_limit: 10,
        ..PoolConfig::default()
    })
    .unwrap();
    let layer =
        AdmissionLayer::with_capacity(AdmissionConfig::default(), Arc::new(limiter.clone()))
            .unwrap()
            .prioritize(|r: &SimRequest| Ticket::new(usize::from(r.class)));
    let handle = layer.handle();
    let svc = layer.layer(backend);

    let recorder = Recorder::new();
    let mut limits = Vec::new();
    let watch = async {
        for _ in 0..20 {
            tokio::time::sleep(SEC).await;
            limits.push(limiter.limit());
        }
    };
    // 1500 rps over four classes; the top class (10%) always fits.
    let load = LoadGen::constant(1500.0, 20 * SEC)
        .classes(&[(0, 1), (1, 2), (2, 3), (3, 4)])
        .seed(22);
    let ((), ()) = tokio::join!(
        async {
            load.run(svc, &recorder).await;
        },
        watch
    );

    assert_eq!(recorder.outstanding(), 0);
    assert!(recorder.total().ledger_balanced());
    let before = limits[5..10].iter().copied().max().unwrap();
    let after = limits[15..20].iter().copied().max().unwrap();
    eprintln!("pool limit per second: {limits:?}");
    assert!(
        after < before,
        "the limit did not fall with the capacity: {limits:?}"
    );
    for (from, to) in [(2 * SEC, 10 * SEC), (12 * SEC, 20 * SEC)] {
        let top = recorder.summary_class(0, from, to);
        assert!(
            top.ok as f64 >= 0.99 * top.issued as f64,
            "{from:?}..{to:?}: {top:?} {limits:?}"
        );
    }
    let low = |from, to| {
        let s = recorder.summary_class(2, from, to);
        s.ok as f64 / s.issued as f64
    };
    assert!(
        low(12 * SEC, 20 * SEC) < low(2 * SEC, 10 * SEC),
        "{limits:?} {:?}",
        handle.snapshot()
    );
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(limiter.in_flight(), 0, "every pool permit was given back");
}
