//! The simulator against queueing theory and itself (determinism).

use std::time::Duration;
use tollgate_core::error::Overloaded;
use tollgate_sim::{Arrivals, LoadGen, Profile, Recorder, ServiceTime, SimBackend, SimError};

const HOUR: Duration = Duration::from_secs(3600);
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(start_paused = true)]
async fn below_capacity_nothing_queues() {
    let backend = SimBackend::builder()
        .workers(10)
        .service_time(ms(10))
        .seed(1)
        .build();
    let rec = Recorder::new();
    let load = LoadGen::constant(500.0, secs(10)).arrivals(Arrivals::Uniform);
    tokio::time::timeout(HOUR, load.run(backend.clone(), &rec))
        .await
        .unwrap();
    let total = rec.total();
    assert_eq!(total.issued, 5000);
    assert_eq!(total.ok, 5000);
    assert!(total.ledger_balanced());
    assert_eq!(total.p99, Some(ms(10)));
    assert_eq!(backend.stats().max_queued, 0);
    assert_eq!(backend.stats().outstanding, 0);
}

#[tokio::test(start_paused = true)]
async fn above_capacity_the_queue_grows_and_throughput_is_capped() {
    let backend = SimBackend::builder()
        .workers(10)
        .service_time(ms(10))
        .seed(1)
        .build();
    let rec = Recorder::new();
    let load = LoadGen::constant(1500.0, secs(4)).seed(3);
    tokio::time::timeout(HOUR, load.run(backend.clone(), &rec))
        .await
        .unwrap();
    let mid = rec.summary(secs(1), secs(4));
    assert!(
        (950.0..=1010.0).contains(&mid.goodput_rps()),
        "{}",
        mid.goodput_rps()
    );
    // Latency grows with the backlog: ~500 extra requests per second at 1000/s.
    assert!(mid.p99.unwrap() > ms(1000), "{:?}", mid.p99);
    assert!(backend.stats().max_queued > 1000);
    assert!(rec.total().ledger_balanced());
}

#[tokio::test(start_paused = true)]
async fn capacity_changes_at_the_scheduled_time() {
    let backend = SimBackend::builder()
        .workers(10)
        .service_time(ms(10))
        .seed(1)
        .build();
    backend.set_capacity_at(secs(2), 5);
    backend.set_capacity_at(secs(4), 10);
    let rec = Recorder::new();
    let load = LoadGen::constant(900.0, secs(6)).seed(5);
    tokio::time::timeout(HOUR, load.run(backend.clone(), &rec))
        .await
        .unwrap();
    let first = rec.summary(secs(1), secs(2)).goodput_rps();
    let halved = rec.summary(secs(3), secs(4)).goodput_rps();
    let restored = rec.summary(secs(5), secs(6)).goodput_rps();
    assert!((850.0..950.0).contains(&first), "{first}");
    assert!((490.0..=505.0).contains(&halved), "{halved}");
    // The backlog built while halved is worked off at the full 1000 per second.
    assert!(restored > 980.0, "{restored}");
    assert!(rec.total().ledger_balanced());
}

#[tokio::test(start_paused = true)]
async fn a_static_limit_with_client_timeouts_collapses() {
    // The classic congestion collapse: once the limiter's FIFO wait exceeds the client timeout,
    // every request that reaches the backend is abandoned before it is answered.
    let backend = SimBackend::builder()
        .workers(10)
        .service_time(ms(10))
        .seed(1)
        .build();
    backend.set_capacity_at(secs(2), 5);
    let rec = Recorder::new();
    let limited = tower::ServiceBuilder::new()
        .concurrency_limit(10)
        .service(backend.clone());
    let load = LoadGen::constant(900.0, secs(4))
        .seed(5)
        .client_timeout(ms(200));
    tokio::time::timeout(HOUR, load.run(limited, &rec))
        .await
        .unwrap();
    assert!(rec.summary(secs(1), secs(2)).goodput_rps() > 850.0);
    let halved = rec.summary(secs(3), secs(4));
    assert!(halved.goodput_rps() < 50.0, "{halved:?}");
    assert!(halved.timeouts > 800, "{halved:?}");
    assert!(rec.total().ledger_balanced());
}

#[tokio::test(start_paused = true)]
async fn failures_follow_the_rate_and_count_as_errors() {
    let backend = SimBackend::builder().failure_rate(0.1).seed(9).build();
    let rec = Recorder::new();
    tokio::time::timeout(
        HOUR,
        LoadGen::constant(200.0, secs(10)).run(backend.clone(), &rec),
    )
    .await
    .unwrap();
    let t = rec.total();
    let rate = t.errors as f64 / t.issued as f64;
    assert!((0.08..0.12).contains(&rate), "{rate}");
    assert_eq!(t.rejected, 0);
    assert_eq!(backend.stats().failed, t.errors);
}

#[tokio::test(start_paused = true)]
async fn rejections_are_sorted_by_kind() {
    let backend = SimBackend::builder()
        .workers(1)
        .queue_limit(2)
        .service_time(ms(10))
        .build();
    let rec = Recorder::new();
    let load = LoadGen::constant(1000.0, secs(1)).arrivals(Arrivals::Uniform);
    tokio::time::timeout(HOUR, load.run(backend, &rec))
        .await
        .unwrap();
    let t = rec.total();
    assert!(t.rejected > 800, "{t:?}");
    assert_eq!(
        t.rejected_by_kind.get("backend_queue_full"),
        Some(&t.rejected)
    );
    assert!(t.ledger_balanced());
    // A custom rejection kind, and the core ones.
    let rec = Recorder::new().rejection::<SimError>("sim");
    assert_eq!(
        rec.classify(&SimError::Failed),
        tollgate_sim::Completion::Rejected("sim")
    );
    let rec = Recorder::new();
    assert_eq!(
        rec.classify(&Overloaded::new(None)),
        tollgate_sim::Completion::Rejected("overloaded")
    );
    assert_eq!(
        rec.classify(&SimError::Failed),
        tollgate_sim::Completion::Error
    );
}

#[tokio::test(start_paused = true)]
async fn runs_are_deterministic() {
    async fn run() -> Vec<(u64, u64, Option<Duration>)> {
        let backend = SimBackend::builder()
            .service_time(ServiceTime::Exponential { mean: ms(10) })
            .failure_rate(0.01)
            .seed(4)
            .build();
        let rec = Recorder::new();
        let load = LoadGen::new(
            Profile::Ramp {
                from: 100.0,
                to: 1200.0,
                over: secs(3),
            },
            secs(3),
        )
        .classes(&[(0, 1), (1, 3)])
        .seed(8);
        load.run(backend, &rec).await;
        rec.windows()
            .iter()
            .map(|w| (w.ok, w.errors, w.p99))
            .collect()
    }
    let a = tokio::time::timeout(HOUR, run()).await.unwrap();
    let b = tokio::time::timeout(HOUR, run()).await.unwrap();
    assert_eq!(a, b);
    assert!(a.len() >= 30);
}

#[tokio::test(start_paused = true)]
async fn classes_follow_the_mix() {
    let backend = SimBackend::builder().build();
    let rec = Recorder::new();
    let load = LoadGen::constant(500.0, secs(10))
        .classes(&[(0, 1), (2, 3)])
        .seed(2);
    tokio::time::timeout(HOUR, load.run(backend, &rec))
        .await
        .unwrap();
    let c0 = rec.summary_class(0, Duration::ZERO, secs(11)).issued as f64;
    let c2 = rec.summary_class(2, Duration::ZERO, secs(11)).issued as f64;
    let share = c2 / (c0 + c2);
    assert!((0.72..0.78).contains(&share), "{share}");
    assert_eq!(rec.summary_class(1, Duration::ZERO, secs(11)).issued, 0);
}

#[test]
fn profiles() {
    let step = Profile::Step {
        before: 1.0,
        after: 2.0,
        at: secs(1),
    };
    assert_eq!(step.rate_at(ms(999)), 1.0);
    assert_eq!(step.rate_at(secs(1)), 2.0);
    let ramp = Profile::Ramp {
        from: 0.0,
        to: 10.0,
        over: secs(10),
    };
    assert_eq!(ramp.rate_at(secs(5)), 5.0);
    assert_eq!(ramp.rate_at(secs(20)), 10.0);
    let steps = Profile::Steps(vec![(secs(1), 3.0), (secs(2), 4.0)]);
    assert_eq!(steps.rate_at(Duration::ZERO), 0.0);
    assert_eq!(steps.rate_at(ms(1500)), 3.0);
    assert_eq!(steps.rate_at(secs(9)), 4.0);
}

#[tokio::test(start_paused = true)]
async fn a_simulated_minute_is_cheap() {
    // 60 000 requests; under paused time this is bounded by CPU, not by the clock.
    let backend = SimBackend::builder().build();
    let rec = Recorder::new();
    let load = LoadGen::constant(1000.0, secs(60));
    let stats = tokio::time::timeout(HOUR, load.run(backend, &rec))
        .await
        .unwrap();
    assert!(stats.issued > 59_000);
    assert!(rec.total().ledger_balanced());
    assert_eq!(rec.outstanding(), 0);
}
