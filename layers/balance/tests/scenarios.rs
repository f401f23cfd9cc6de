//! The scenarios, on the deterministic simulator (paused time, seeded).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, sleep_until};
use tollgate_balance::{Balance, BalanceConfig, BalanceHandle, EndpointState, OutlierConfig};
use tollgate_sim::{LoadGen, Profile, Recorder, ServiceTime, SimBackend};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Median 167 ms, bounded (so a 1 s caller timeout only catches a sick endpoint).
const TYPICAL: ServiceTime = ServiceTime::Uniform {
    min: ms(100),
    max: ms(234),
};

fn backend(id: usize, service_time: impl Into<ServiceTime>) -> SimBackend {
    SimBackend::builder()
        .id(id)
        .workers(1_000)
        .service_time(service_time)
        .seed(id as u64 + 1)
        .build()
}

fn balance(backends: &[SimBackend], config: BalanceConfig) -> Balance<usize, SimBackend> {
    Balance::new(backends.iter().cloned().enumerate(), config).unwrap()
}

fn seeded() -> BalanceConfig {
    BalanceConfig {
        seed: Some(11),
        ..Default::default()
    }
}

fn accepted(backends: &[SimBackend]) -> Vec<u64> {
    backends.iter().map(|b| b.stats().accepted).collect()
}

/// Requests each backend accepted between two samples.
fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

fn share(counts: &[u64], i: usize) -> f64 {
    counts[i] as f64 / counts.iter().sum::<u64>().max(1) as f64
}

/// Samples every backend's accepted count at each of `at` (from now).
async fn sample_at(backends: &[SimBackend], at: &[Duration]) -> Vec<Vec<u64>> {
    let start = Instant::now();
    let mut out = Vec::new();
    for t in at {
        sleep_until(start + *t).await;
        out.push(accepted(backends));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn one_slow_endpoint_for_a_third_of_the_run_costs_nothing() {
    let backends: Vec<SimBackend> = (0..11).map(|i| backend(i, TYPICAL)).collect();
    backends[0].set_service_time_at(secs(20), secs(2));
    backends[0].set_service_time_at(secs(40), TYPICAL);
    let svc = balance(&backends, seeded());
    let recorder = Recorder::new();
    let load = LoadGen::new(Profile::Constant(1000.0), secs(60))
        .seed(1)
        .client_timeout(secs(1));
    load.run(svc, &recorder).await;

    let total = recorder.total();
    assert!(total.ledger_balanced());
    let success = total.ok as f64 / total.issued as f64;
    assert!(
        success >= 0.999,
        "success {:.4}% ({} errors)",
        success * 100.0,
        total.errors
    );

    let before = recorder.summary(secs(2), secs(20)).p999.unwrap();
    let during = recorder.summary(secs(23), secs(40)).p999.unwrap();
    let after = recorder.summary(secs(43), secs(60)).p999.unwrap();
    eprintln!(
        "success {:.3}% ({} of {} failed); p99.9 before {before:?} during {during:?} after {after:?}",
        success * 100.0,
        total.issued - total.ok,
        total.issued
    );
    for (when, p) in [("during", during), ("after", after)] {
        assert!(
            p <= before + ms(10),
            "p99.9 {when} {p:?} vs {before:?} before"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_failing_in_1ms_gets_at_most_1_percent() {
    for (name, outlier) in [
        ("defaults", OutlierConfig::default()),
        (
            "penalty alone",
            OutlierConfig {
                consecutive_failures: 0,
                success_rate: false,
                ..Default::default()
            },
        ),
    ] {
        let mut backends: Vec<SimBackend> = (0..10).map(|i| backend(i, TYPICAL)).collect();
        backends.push(
            SimBackend::builder()
                .id(10)
                .workers(1_000)
                .service_time(ms(1))
                .failure_rate(1.0)
                .build(),
        );
        let svc = balance(
            &backends,
            BalanceConfig {
                outlier,
                ..seeded()
            },
        );
        let recorder = Recorder::new();
        let load = LoadGen::new(Profile::Constant(1000.0), secs(30)).seed(2);
        let at = [secs(1), secs(30)];
        let (_, samples) = tokio::join!(load.run(svc, &recorder), sample_at(&backends, &at));
        let after = delta(&samples[1], &samples[0]);
        let bad = share(&after, 10);
        eprintln!(
            "{name}: failing endpoint share after 1 s {:.3}%",
            bad * 100.0
        );
        assert!(
            bad <= 0.01,
            "{name}: the failing endpoint got {:.2}% after 1 s",
            bad * 100.0
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_50ms_endpoint_beside_1ms_and_5ms_gets_under_5_percent() {
    let backends = vec![backend(0, ms(1)), backend(1, ms(5)), backend(2, ms(50))];
    let svc = balance(&backends, seeded());
    let recorder = Recorder::new();
    LoadGen::new(Profile::Constant(500.0), secs(30))
        .seed(3)
        .run(svc, &recorder)
        .await;
    let counts = accepted(&backends);
    let slow = share(&counts, 2);
    eprintln!(
        "1/5/50 ms shares: {counts:?} ({:.2}% to 50 ms)",
        slow * 100.0
    );
    assert!(
        slow < 0.05,
        "the 50 ms endpoint got {:.2}% ({counts:?})",
        slow * 100.0
    );
    assert!(counts[0] > counts[1], "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_new_endpoint_follows_its_slow_start_ramp() {
    const WINDOW: u64 = 60;
    let config = BalanceConfig {
        slow_start: secs(WINDOW),
        slow_start_min_weight: 0.1,
        ..seeded()
    };
    let mut backends: Vec<SimBackend> = (0..10).map(|i| backend(i, TYPICAL)).collect();
    let svc = balance(&backends, config.clone());
    let handle = svc.handle();
    let newcomer = backend(10, TYPICAL);
    backends.push(newcomer.clone());
    let recorder = Recorder::new();
    let load = LoadGen::new(Profile::Constant(1000.0), secs(90)).seed(4);
    let join = async {
        sleep(secs(10)).await;
        handle.insert(10, newcomer.clone());
        // Every 5 s over the ramp and 15 s past it.
        let at: Vec<Duration> = (0..=15).map(|k| secs(5 * k)).collect();
        sample_at(&backends, &at).await
    };
    let (_, samples) = tokio::join!(load.run(svc, &recorder), join);
    let mut report = Vec::new();
    for k in 1..samples.len() {
        let counts = delta(&samples[k], &samples[k - 1]);
        // Share relative to a full member's (1/11), against the ramp at the window's middle.
        let relative = share(&counts, 10) * 11.0;
        let mid = (5 * k) as f64 - 2.5;
        let min = config.slow_start_min_weight;
        let ramp = (min + (1.0 - min) * mid / WINDOW as f64).min(1.0);
        report.push(format!("{mid:>5.1}s ramp {ramp:.3} got {relative:.3}"));
        assert!(
            (relative - ramp).abs() <= 0.05,
            "off the ramp:\n{}",
            report.join("\n")
        );
    }
    eprintln!("{}", report.join("\n"));
    let stats = handle.endpoints();
    assert_eq!(
        stats.iter().find(|e| e.key == 10).unwrap().state,
        EndpointState::Healthy
    );
}

#[tokio::test(start_paused = true)]
async fn six_of_ten_failing_health_checks_spread_load_over_all() {
    let backends: Vec<SimBackend> = (0..10).map(|i| backend(i, TYPICAL)).collect();
    let svc = balance(&backends, seeded());
    let handle = svc.handle();
    let _checks = svc.spawn_health_checks(|k: &usize| {
        let pass = *k >= 6;
        async move { pass }
    });
    let recorder = Recorder::new();
    let load = LoadGen::new(Profile::Constant(1000.0), secs(30)).seed(5);
    let watch = async {
        let samples = sample_at(&backends, &[secs(5), secs(30)]).await;
        (samples, handle.is_panicking())
    };
    let (_, (samples, panicking)) = tokio::join!(load.run(svc, &recorder), watch);
    assert!(panicking, "{:?}", handle.endpoints());
    let counts = delta(&samples[1], &samples[0]);
    eprintln!("panic mode counts: {counts:?}");
    for i in 0..10 {
        let s = share(&counts, i);
        assert!(
            (0.05..0.15).contains(&s),
            "endpoint {i} got {:.1}% in panic mode: {counts:?}",
            s * 100.0
        );
    }
    let states = handle.endpoints();
    assert_eq!(
        states
            .iter()
            .filter(|e| e.state == EndpointState::Unhealthy)
            .count(),
        6
    );
    assert_eq!(recorder.total().errors, 0);
}

#[tokio::test(start_paused = true)]
async fn four_of_ten_failing_health_checks_are_left_out() {
    let backends: Vec<SimBackend> = (0..10).map(|i| backend(i, TYPICAL)).collect();
    let svc = balance(&backends, seeded());
    let handle = svc.handle();
    let _checks = svc.spawn_health_checks(|k: &usize| {
        let pass = *k >= 4;
        async move { pass }
    });
    let recorder = Recorder::new();
    let load = LoadGen::new(Profile::Constant(1000.0), secs(20)).seed(6);
    let at = [secs(5), secs(20)];
    let (_, samples) = tokio::join!(load.run(svc, &recorder), sample_at(&backends, &at));
    assert!(!handle.is_panicking());
    let counts = delta(&samples[1], &samples[0]);
    assert!(counts[..4].iter().all(|c| *c == 0), "{counts:?}");
}

#[derive(Debug, Default, Clone)]
struct Ejection {
    start: Duration,
    end: Option<Duration>,
    failures_before: u64,
}

#[tokio::test(start_paused = true)]
async fn failing_endpoints_are_ejected_longer_each_time_up_to_the_cap_and_share() {
    let outlier = OutlierConfig {
        consecutive_failures: 3,
        base_ejection_time: secs(5),
        max_ejection_time: secs(12),
        max_ejection_share: 0.1,
        // Long enough that the repeat count does not decay during the run (it goes down by one
        // per interval clear of ejection).
        interval: secs(120),
        success_rate: false,
        ..Default::default()
    };
    let config = BalanceConfig {
        outlier,
        failure_penalty: 0.0,
        ..seeded()
    };
    let mut backends: Vec<SimBackend> = (0..8).map(|i| backend(i, ms(20))).collect();
    for id in [8, 9] {
        backends.push(
            SimBackend::builder()
                .id(id)
                .workers(1_000)
                .service_time(ms(20))
                .failure_rate(1.0)
                .build(),
        );
    }
    let svc = balance(&backends, config);
    let handle = svc.handle();
    let recorder = Recorder::new();
    let load = LoadGen::new(Profile::Constant(200.0), secs(60)).seed(7);
    let done = Arc::new(AtomicBool::new(false));
    let watch = watch_ejections(&handle, done.clone());
    let ((), ejections) = tokio::join!(
        async {
            load.run(svc, &recorder).await;
            done.store(true, Ordering::SeqCst);
        },
        watch
    );
    let (per_endpoint, max_at_once) = ejections;
    assert!(
        max_at_once <= 1,
        "{max_at_once} of 10 ejected at once, cap 10%"
    );
    let healthy_ejected: usize = per_endpoint[..8].iter().map(Vec::len).sum();
    assert_eq!(healthy_ejected, 0, "a healthy endpoint was ejected");
    let all: Vec<&Ejection> = per_endpoint[8..].iter().flatten().collect();
    assert!(all.len() >= 4, "{per_endpoint:?}");
    // The first ejection comes after exactly the configured consecutive failures.
    let first = per_endpoint[8..]
        .iter()
        .filter_map(|e| e.first())
        .min_by_key(|e| e.start)
        .unwrap();
    assert_eq!(first.failures_before, 3, "{first:?}");
    for eps in &per_endpoint[8..] {
        eprintln!("ejections: {eps:?}");
        let lengths: Vec<Duration> = eps
            .iter()
            .filter_map(|e| e.end.map(|end| end - e.start))
            .collect();
        for pair in lengths.windows(2) {
            assert!(
                pair[1] >= pair[0],
                "a repeat ejection was shorter: {lengths:?}"
            );
        }
        assert!(
            lengths.iter().all(|l| *l <= secs(12) + ms(10)),
            "beyond the cap: {lengths:?}"
        );
        if lengths.len() >= 2 {
            assert!(
                lengths[1] > lengths[0] + secs(4),
                "repeat not longer: {lengths:?}"
            );
        }
        if lengths.len() >= 3 {
            assert!(
                lengths[2] >= secs(12) - ms(10),
                "cap not reached: {lengths:?}"
            );
        }
    }
}

/// Watches the handle every 10 ms until `done`: each endpoint's ejections, and the most
/// ejected at once.
async fn watch_ejections(
    handle: &BalanceHandle<usize, SimBackend>,
    done: Arc<AtomicBool>,
) -> (Vec<Vec<Ejection>>, usize) {
    let start = Instant::now();
    let mut per: Vec<Vec<Ejection>> = vec![Vec::new(); 10];
    let mut max_at_once = 0;
    while !done.load(Ordering::SeqCst) {
        let now = start.elapsed();
        let stats = handle.endpoints();
        max_at_once = max_at_once.max(
            stats
                .iter()
                .filter(|e| e.state == EndpointState::Ejected)
                .count(),
        );
        for e in stats {
            let list = &mut per[e.key];
            let open = list.last().is_some_and(|x| x.end.is_none());
            match (e.state == EndpointState::Ejected, open) {
                (true, false) => list.push(Ejection {
                    start: now,
                    end: None,
                    failures_before: e.failures,
                }),
                (false, true) => list.last_mut().unwrap().end = Some(now),
                _ => {}
            }
        }
        sleep(ms(10)).await;
    }
    (per, max_at_once)
}
