//! Behaviour of the balancer with small endpoints on paused time.

mod common;

use common::{Backend, load};
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_test::{assert_pending, assert_ready_ok};
use tollgate_balance::{
    Balance, BalanceConfig, EndpointState, HealthConfig, NoEndpoints, OutlierConfig,
};
use tower::discover::Change;
use tower::{Service, ServiceExt};

const HOUR: Duration = Duration::from_secs(3600);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn seeded() -> BalanceConfig {
    BalanceConfig {
        seed: Some(42),
        ..Default::default()
    }
}

fn no_ejection() -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: 0,
        success_rate: false,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_is_an_error_at_once() {
    let mut svc: Balance<u8, Backend> = Balance::new([], seeded()).unwrap();
    let err = poll_fn(|cx| svc.poll_ready(cx)).await.unwrap_err();
    assert!(err.is::<NoEndpoints>());
    assert_eq!(err.to_string(), "no endpoints to balance over");
    // Filling the set later makes it work.
    svc.handle().insert(1, Backend::new(ms(1)));
    tokio::time::timeout(HOUR, svc.oneshot(()))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn bad_config_and_weights_are_rejected_when_built() {
    let bad = BalanceConfig {
        failure_weight: 2.0,
        ..Default::default()
    };
    let err = Balance::<u8, Backend>::new([], bad).unwrap_err();
    assert_eq!(err.field(), "failure_weight");
    let err = Balance::weighted([(1u8, Backend::new(ms(1)), 0.0)], seeded()).unwrap_err();
    assert_eq!(err.field(), "weight");
    let ok: Balance<u8, Backend> = Balance::new([], seeded()).unwrap();
    assert!(
        ok.handle()
            .insert_weighted(1, Backend::new(ms(1)), f64::NAN)
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_endpoint_gets_little_traffic() {
    let (fast, mid, slow) = (
        Backend::new(ms(1)),
        Backend::new(ms(5)),
        Backend::new(ms(50)),
    );
    let svc = Balance::new(
        [(1, fast.clone()), (2, mid.clone()), (3, slow.clone())],
        seeded(),
    )
    .unwrap();
    let (ok, failed) = load(&svc, ms(2), Duration::from_secs(10), HOUR).await;
    assert_eq!(failed, 0);
    let share = slow.hits() as f64 / ok as f64;
    assert!(share < 0.05, "slow endpoint got {:.1}%", share * 100.0);
    assert!(
        fast.hits() > mid.hits(),
        "fast {} mid {}",
        fast.hits(),
        mid.hits()
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_failing_fast_is_avoided_without_ejection() {
    // Plain peak-EWMA would favour the endpoint that answers (with errors) in 1 ms.
    let backends: Vec<Backend> = (0..5).map(|_| Backend::new(ms(20))).collect();
    let bad = Backend::new(ms(1));
    bad.set_failing(true);
    let config = BalanceConfig {
        outlier: no_ejection(),
        ..seeded()
    };
    let mut list: Vec<(u8, Backend)> = backends
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (i as u8, b))
        .collect();
    list.push((9, bad.clone()));
    let svc = Balance::new(list, config).unwrap();
    load(&svc, ms(1), Duration::from_secs(1), HOUR).await;
    let before = bad.hits();
    let (ok, failed) = load(&svc, ms(1), Duration::from_secs(10), HOUR).await;
    let share = (bad.hits() - before) as f64 / (ok + failed) as f64;
    assert!(share < 0.01, "failing endpoint got {:.2}%", share * 100.0);
    let stats = svc.handle().endpoints();
    let bad_stats = stats.iter().find(|e| e.key == 9).unwrap();
    assert!(bad_stats.failure_rate > 0.5, "{bad_stats:?}");
}

#[tokio::test(start_paused = true)]
async fn weights_shift_traffic() {
    let (a, b) = (Backend::new(ms(10)), Backend::new(ms(10)));
    let svc = Balance::weighted([(1, a.clone(), 3.0), (2, b.clone(), 1.0)], seeded()).unwrap();
    load(&svc, ms(1), Duration::from_secs(10), HOUR).await;
    let ratio = a.hits() as f64 / b.hits() as f64;
    assert!(
        ratio > 1.5,
        "weight 3 vs 1 gave {} vs {}",
        a.hits(),
        b.hits()
    );
    // Changing the weight at run time takes effect.
    svc.handle().set_weight(&2, 9.0).unwrap();
    let (a0, b0) = (a.hits(), b.hits());
    load(&svc, ms(1), Duration::from_secs(10), HOUR).await;
    assert!(b.hits() - b0 > a.hits() - a0);
}

#[tokio::test(start_paused = true)]
async fn removed_endpoints_drain() {
    let (a, b) = (Backend::new(ms(100)), Backend::new(ms(100)));
    let svc = Balance::new([(1, a.clone()), (2, b.clone())], seeded()).unwrap();
    let handle = svc.handle();
    // Requests in flight on both.
    let mut running = Vec::new();
    for _ in 0..20 {
        running.push(tokio::spawn(svc.clone().oneshot(())));
    }
    tokio::task::yield_now().await;
    assert!(a.hits() > 0 && b.hits() > 0);
    assert!(handle.remove(&1));
    assert!(!handle.remove(&1));
    let stats = handle.endpoints();
    let draining = stats.iter().find(|e| e.key == 1).unwrap();
    assert_eq!(draining.state, EndpointState::Draining);
    assert!(draining.in_flight > 0);
    let a_hits = a.hits();
    for _ in 0..50 {
        tokio::time::timeout(HOUR, svc.clone().oneshot(()))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(a.hits(), a_hits, "a removed endpoint got new requests");
    for r in running {
        r.await.unwrap().unwrap();
    }
    assert!(
        handle
            .endpoints()
            .iter()
            .all(|e| e.key == 2 && e.in_flight == 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_choice_is_dropped_when_its_endpoint_is_removed() {
    let (mock, mut ctl) = tower_test::mock::pair::<(), ()>();
    let svc = Balance::new([(1, mock)], seeded()).unwrap();
    let handle = svc.handle();
    ctl.allow(0);
    let mut task = tokio_test::task::spawn(svc.clone().ready_oneshot());
    assert_pending!(task.poll());
    assert_eq!(
        handle.endpoints()[0].in_flight,
        1,
        "the choice holds a slot"
    );
    handle.remove(&1);
    handle.insert(2, Backend::new(ms(1)).map_err_to_mock());
    let ready = task.poll();
    let mut ready = assert_ready_ok!(ready);
    let fut = ready.call(());
    fut.await.unwrap();
    assert!(handle.endpoints().iter().all(|e| e.key == 2));
}

/// Lets a `Backend` stand in for a `tower_test` mock's type in one test.
trait AsMock {
    fn map_err_to_mock(self) -> tower_test::mock::Mock<(), ()>;
}

impl AsMock for Backend {
    fn map_err_to_mock(self) -> tower_test::mock::Mock<(), ()> {
        let (mock, mut ctl) = tower_test::mock::pair::<(), ()>();
        tokio::spawn(async move {
            while let Some((_, send)) = ctl.next_request().await {
                send.send_response(());
            }
        });
        mock
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_with_growing_capped_times() {
    let outlier = OutlierConfig {
        consecutive_failures: 3,
        base_ejection_time: Duration::from_secs(10),
        max_ejection_time: Duration::from_secs(25),
        max_ejection_share: 0.2,
        // Long enough that the repeat count does not decay in the test (it goes down by one
        // per interval clear of ejection).
        interval: Duration::from_secs(300),
        success_rate: false,
        ..Default::default()
    };
    let bad = Backend::new(ms(1));
    bad.set_failing(true);
    let bad2 = Backend::new(ms(1));
    bad2.set_failing(true);
    let mut list: Vec<(u8, Backend)> = (0..8).map(|i| (i, Backend::new(ms(5)))).collect();
    list.push((8, bad.clone()));
    list.push((9, bad2.clone()));
    let config = BalanceConfig {
        outlier,
        failure_penalty: 0.0,
        ..seeded()
    };
    let svc = Balance::new(list, config).unwrap();
    let handle = svc.handle();
    let mut durations = Vec::new();
    let mut was_ejected = false;
    let mut since = tokio::time::Instant::now();
    for _ in 0..120_000 {
        let _ = tokio::time::timeout(HOUR, svc.clone().oneshot(()))
            .await
            .unwrap();
        tokio::time::advance(ms(1)).await;
        let stats = handle.endpoints();
        let ejected = stats
            .iter()
            .filter(|e| e.state == EndpointState::Ejected)
            .count();
        assert!(ejected <= 2, "{ejected} of 10 ejected with a 20% cap");
        let now_ejected =
            stats.iter().find(|e| e.key == 8).unwrap().state == EndpointState::Ejected;
        if now_ejected && !was_ejected {
            since = tokio::time::Instant::now();
        }
        if !now_ejected && was_ejected {
            durations.push(since.elapsed());
        }
        was_ejected = now_ejected;
    }
    assert!(durations.len() >= 3, "{durations:?}");
    assert!(
        durations[0] >= Duration::from_secs(9) && durations[0] <= Duration::from_secs(11),
        "{durations:?}"
    );
    assert!(
        durations[1] > durations[0],
        "repeat ejection not longer: {durations:?}"
    );
    assert!(
        durations
            .iter()
            .all(|d| *d <= Duration::from_secs(25) + ms(10)), // sampled once per request (<= 6 ms)
        "beyond the cap: {durations:?}"
    );
    assert!(
        durations.iter().any(|d| *d >= Duration::from_secs(24)),
        "never reached the cap: {durations:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_ejected_share_is_capped() {
    let outlier = OutlierConfig {
        consecutive_failures: 2,
        max_ejection_share: 0.3,
        success_rate: false,
        ..Default::default()
    };
    let backends: Vec<Backend> = (0..10).map(|_| Backend::new(ms(1))).collect();
    for b in &backends[..6] {
        b.set_failing(true);
    }
    let config = BalanceConfig {
        outlier,
        failure_penalty: 0.0,
        panic_threshold: 0.0,
        ..seeded()
    };
    let svc = Balance::new(backends.iter().cloned().enumerate(), config).unwrap();
    load(&svc, ms(1), Duration::from_secs(5), HOUR).await;
    assert_eq!(svc.handle().ejected(), 3, "{:?}", svc.handle().endpoints());
}

#[tokio::test(start_paused = true)]
async fn success_rate_outliers_are_ejected() {
    let outlier = OutlierConfig {
        consecutive_failures: 0,
        interval: Duration::from_secs(5),
        success_rate_min_requests: 20,
        ..Default::default()
    };
    let backends: Vec<Backend> = (0..6).map(|_| Backend::new(ms(5))).collect();
    let flaky = Backend::new(ms(5));
    let config = BalanceConfig {
        outlier,
        failure_penalty: 0.0,
        // Isolate the sweep: the flaky endpoint's first failure must not make it look slower
        // than the others (it would then get too few requests to be compared).
        default_rtt: ms(5),
        ..seeded()
    };
    let mut list: Vec<(u8, Backend)> = backends
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, b)| (i as u8, b))
        .collect();
    list.push((9, flaky.clone()));
    let svc = Balance::new(list, config).unwrap();
    // Fails about every other request: half the fleet's success rate.
    let flipper = {
        let flaky = flaky.clone();
        tokio::spawn(async move {
            loop {
                flaky.set_failing(!flaky.failing.load(Ordering::SeqCst));
                tokio::time::sleep(Duration::from_micros(700)).await;
            }
        })
    };
    load(&svc, ms(1), Duration::from_secs(12), HOUR).await;
    flipper.abort();
    let stats = svc.handle().endpoints();
    let flaky_stats = stats.iter().find(|e| e.key == 9).unwrap();
    assert!(flaky_stats.ejections >= 1, "{flaky_stats:?}");
    assert!(
        stats
            .iter()
            .filter(|e| e.key != 9)
            .all(|e| e.ejections == 0),
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn health_checks_take_endpoints_out_and_back() {
    let backends: Vec<Backend> = (0..4).map(|_| Backend::new(ms(5))).collect();
    let sick = Arc::new(AtomicBool::new(true));
    // Endpoint 0 gets no request before it recovers: assume it is fast until it answers.
    let config = BalanceConfig {
        default_rtt: ms(1),
        ..seeded()
    };
    let svc = Balance::new(backends.iter().cloned().enumerate(), config).unwrap();
    let handle = svc.handle();
    let s = sick.clone();
    let task = svc.spawn_health_checks(move |k: &usize| {
        let fail = *k == 0 && s.load(Ordering::SeqCst);
        async move { !fail }
    });
    // Unhealthy after 3 failed checks, one per second.
    tokio::time::sleep(ms(3_100)).await;
    assert_eq!(handle.endpoints()[0].state, EndpointState::Unhealthy);
    let before = backends[0].hits();
    load(&svc, ms(1), Duration::from_secs(1), HOUR).await;
    assert_eq!(
        backends[0].hits(),
        before,
        "an unhealthy endpoint got traffic"
    );
    // Healthy again after 2 passed checks.
    sick.store(false, Ordering::SeqCst);
    tokio::time::sleep(ms(2_100)).await;
    assert_eq!(handle.endpoints()[0].state, EndpointState::Healthy);
    load(&svc, ms(1), Duration::from_secs(1), HOUR).await;
    assert!(backends[0].hits() > before);
    // Dropping the balancer and its handles stops the task.
    drop(svc);
    drop(handle);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("health task kept running")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_check_that_hangs_fails_by_timeout() {
    let health = HealthConfig {
        unhealthy_threshold: 1,
        ..Default::default()
    };
    let config = BalanceConfig { health, ..seeded() };
    let svc = Balance::new(
        [(1u8, Backend::new(ms(1))), (2, Backend::new(ms(1)))],
        config,
    )
    .unwrap();
    let _task = svc.spawn_health_checks(|k: &u8| {
        let hang = *k == 1;
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            true
        }
    });
    tokio::time::sleep(ms(1_600)).await;
    let stats = svc.handle().endpoints();
    assert_eq!(stats[0].state, EndpointState::Unhealthy);
    assert_eq!(stats[1].state, EndpointState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn discovery_changes_the_set() {
    let (tx, rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<Change<u8, Backend>, std::io::Error>>();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let svc: Balance<u8, Backend> = Balance::new([], seeded()).unwrap();
    let handle = svc.handle();
    let task = svc.spawn_discover(stream);
    let (a, b) = (Backend::new(ms(1)), Backend::new(ms(1)));
    tx.send(Ok(Change::Insert(1, a.clone()))).unwrap();
    tx.send(Ok(Change::Insert(2, b.clone()))).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(handle.len(), 2);
    tx.send(Ok(Change::Remove(1))).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(handle.len(), 1);
    for _ in 0..10 {
        svc.clone().oneshot(()).await.unwrap();
    }
    assert_eq!(a.hits(), 0);
    assert_eq!(b.hits(), 10);
    tx.send(Err(std::io::Error::other("discovery broke")))
        .unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "discovery broke");
}

#[tokio::test(start_paused = true)]
async fn discovery_stops_when_the_balancer_is_dropped() {
    let (_tx, rx) =
        tokio::sync::mpsc::unbounded_channel::<Result<Change<u8, Backend>, std::io::Error>>();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let svc: Balance<u8, Backend> = Balance::new([], seeded()).unwrap();
    let task = svc.spawn_discover(stream);
    drop(svc);
    tokio::time::timeout(HOUR, task)
        .await
        .expect("discovery kept running")
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn clones_share_statistics() {
    let a = Backend::new(ms(1));
    let svc = Balance::new([(1u8, a.clone())], seeded()).unwrap();
    let other = svc.clone();
    svc.oneshot(()).await.unwrap();
    other.clone().oneshot(()).await.unwrap();
    let stats = other.handle().endpoints();
    assert_eq!(stats[0].requests, 2);
    assert_eq!(stats[0].successes, 2);
    assert_eq!(stats[0].share, 1.0);
    assert!(
        stats[0].latency >= ms(1) && stats[0].latency < ms(2),
        "{:?}",
        stats[0].latency
    );
}
