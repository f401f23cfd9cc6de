//! Retries within a budget, then hedging, on simulated backends (paused time: runs at once).
//!
//! `cargo run -p tollgate-retry --example retry`

use std::time::Duration;
use tollgate_retry::{HedgeConfig, RetryConfig, RetryLayer};
use tollgate_sim::{LoadGen, Recorder, ServiceTime, SimBackend};
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    // 1. A backend failing 30% of its calls, behind a retry layer with the default budget
    //    (10% of requests plus 10 a second over 10 s).
    let backend = SimBackend::builder()
        .workers(50)
        .service_time(Duration::from_millis(5))
        .failure_rate(0.3)
        .seed(1)
        .build();
    let layer = RetryLayer::new(RetryConfig {
        seed: Some(1),
        ..RetryConfig::default()
    })
    .expect("valid config");
    let budget = layer.budget().clone();
    let svc = ServiceBuilder::new()
        .layer(layer) // retry transient failures, within the budget
        .service(backend.clone());
    let rec = Recorder::new();
    let stats = LoadGen::constant(1000.0, Duration::from_secs(10))
        .seed(2)
        .run(svc, &rec)
        .await;
    let total = rec.total();
    println!(
        "retries: {} requests, {} ok ({:.1}%), backend load x{:.3}, budget {:?}",
        stats.issued,
        total.ok,
        100.0 * total.ok as f64 / stats.issued as f64,
        backend.stats().accepted as f64 / stats.issued as f64,
        budget.snapshot()
    );

    // 2. 1% of calls take 10x as long; a hedge after the p95 latency cuts that tail.
    let slow_tail = ServiceTime::Bimodal {
        fast: Duration::from_millis(10),
        slow: Duration::from_millis(100),
        slow_fraction: 0.01,
    };
    for hedge in [false, true] {
        let backend = SimBackend::builder()
            .workers(100)
            .service_time(slow_tail)
            .seed(3)
            .build();
        let layer = RetryLayer::new(RetryConfig {
            hedge: hedge.then(HedgeConfig::default),
            seed: Some(3),
            ..RetryConfig::default()
        })
        .expect("valid config");
        let svc = ServiceBuilder::new().layer(layer).service(backend.clone());
        let rec = Recorder::new();
        let stats = LoadGen::constant(1000.0, Duration::from_secs(10))
            .seed(4)
            .run(svc, &rec)
            .await;
        let s = rec.summary(Duration::from_secs(2), Duration::from_secs(10));
        println!(
            "hedging {}: p99 {:?}, p99.9 {:?}, backend load x{:.3}",
            if hedge { "on " } else { "off" },
            s.p99.unwrap(),
            s.p999.unwrap(),
            backend.stats().accepted as f64 / stats.issued as f64
        );
    }
}
