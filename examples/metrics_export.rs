//! Exporting the layers' figures through any `metrics` recorder: the layers keep no recorder of
//! their own, they expose handles with snapshots (breaker state and failure rate, the pool's
//! learned limit and in flight, admission counts and queue waits per class). An application
//! writes those into its recorder on a timer or before each scrape, and times its own requests
//! with a histogram handle built once.
//!
//! Here the recorder is the Prometheus one; any other `metrics` recorder takes the same calls.
//! Runs on tokio's paused clock, so its simulated seconds take a moment.
//!
//! ```text
//! cargo run --example metrics-export --features admission,breaker,pool
//! ```

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::time::Duration;
use tokio::time::Instant;
use tollgate::admission::{AdmissionConfig, AdmissionHandle, AdmissionLayer, Ticket};
use tollgate::breaker::{BreakerConfig, BreakerHandle, BreakerLayer, State};
use tollgate::core::BoxError;
use tollgate::pool::{Limiter, PoolConfig, PoolSizerLayer};
use tower::{ServiceBuilder, ServiceExt};

/// Latency buckets in seconds: 100 µs to 10 s in 1-2.5-5 steps (the gateway's).
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Writes the layers' snapshots into the installed `metrics` recorder.
fn export(breaker: &BreakerHandle, limiter: &Limiter, admission: &AdmissionHandle) {
    let b = breaker.snapshot();
    let open = matches!(b.state, State::Open | State::ForcedOpen);
    metrics::gauge!("app_breaker_open").set(f64::from(u8::from(open)));
    metrics::gauge!("app_breaker_failure_rate").set(b.failure_rate.unwrap_or(0.0));
    metrics::gauge!("app_pool_limit").set(limiter.limit() as f64);
    metrics::gauge!("app_pool_in_flight").set(limiter.in_flight() as f64);
    for c in &admission.snapshot().classes {
        let class = c.name.to_string();
        metrics::counter!("app_admission_admitted_total", "class" => class.clone())
            .absolute(c.admitted);
        metrics::counter!("app_admission_rejected_total", "class" => class.clone())
            .absolute(c.rejected_total());
        metrics::gauge!("app_admission_queue_wait_p99_seconds", "class" => class)
            .set(c.queue_wait.p99.as_secs_f64());
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)?
        .install_recorder()?;

    // A backend that takes 2..20 ms and fails every request whose id ends in 7.
    let backend = tower::service_fn(|id: u32| async move {
        tokio::time::sleep(Duration::from_millis(2 + u64::from(id % 19))).await;
        if id % 10 == 7 {
            Err(std::io::Error::other("backend failed"))
        } else {
            Ok::<u32, std::io::Error>(id)
        }
    });
    let admission =
        AdmissionLayer::new(AdmissionConfig::default())?.prioritize(|id: &u32| Ticket {
            class: (*id % 4) as usize,
            deadline: None,
            key: None,
        });
    let breaker = BreakerLayer::new(BreakerConfig::default())?;
    let limiter = Limiter::new(PoolConfig::default())?;
    let (admission_h, breaker_h) = (admission.handle(), breaker.handle());
    let svc = ServiceBuilder::new()
        .layer(admission)
        .layer(breaker)
        .layer(PoolSizerLayer::new(limiter.clone()))
        .service(backend);

    // Built once: recording a sample is then a call on the handle, no lookup.
    let latency = metrics::histogram!("app_request_duration_seconds");
    let mut calls = tokio::task::JoinSet::new();
    for id in 0..400u32 {
        let (svc, latency) = (svc.clone(), latency.clone());
        calls.spawn(async move {
            let start = Instant::now();
            let result = svc.oneshot(id).await;
            latency.record(start.elapsed().as_secs_f64());
            result.is_ok()
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ok = calls.join_all().await.into_iter().filter(|ok| *ok).count();
    export(&breaker_h, &limiter, &admission_h);

    println!("{ok} of 400 calls succeeded; the figures as Prometheus text:\n");
    for line in handle.render().lines().filter(|l| l.starts_with("app_")) {
        println!("{line}");
    }
    Ok(())
}
