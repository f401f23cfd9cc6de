//! Behaviour of the layer and the limiter: rejection, bounded waiting with real wake-ups,
//! cancellation, learning, validation, and the limit under many threads.

use std::time::Duration;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tollgate_core::Outcome;
use tollgate_core::error::Overloaded;
use tollgate_core::testing::{Probe, ProbeRequest};
use tollgate_pool::{
    AimdConfig, AlgorithmConfig, AtLimit, Gradient2Config, Limiter, PoolConfig, PoolSizerLayer,
    VegasConfig,
};
use tower::{Layer, Service, ServiceExt};

const HOUR: Duration = Duration::from_secs(3600);

fn fixed(limit: usize, at_limit: AtLimit) -> PoolConfig {
    PoolConfig {
        min_limit: limit,
        max_limit: limit,
        initial_limit: limit,
        at_limit,
        ..PoolConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn rejects_at_the_limit_without_calling_the_inner_service() {
    let limiter = Limiter::new(fixed(2, AtLimit::Reject)).unwrap();
    let layer = PoolSizerLayer::new(limiter.clone());
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    handle.allow(10);
    let mut svc = layer.layer(mock);
    let a = svc.ready().await.unwrap().call(1);
    let b = svc.ready().await.unwrap().call(2);
    assert_eq!(limiter.in_flight(), 2);
    // At the limit poll_ready still says ready (servers drop connections on errors there);
    // the call answers Overloaded at once.
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");
    let snap = limiter.snapshot();
    assert_eq!((snap.rejected, snap.in_flight), (1, 2));
    // Only two requests reached the inner service.
    let (_, r1) = handle.next_request().await.unwrap();
    let (_, r2) = handle.next_request().await.unwrap();
    r1.send_response(10);
    r2.send_response(20);
    assert_eq!(a.await.unwrap(), 10);
    assert_eq!(b.await.unwrap(), 20);
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn waits_with_a_real_waker_and_is_woken_by_a_release() {
    let limiter = Limiter::new(fixed(
        1,
        AtLimit::Wait {
            max_wait: Duration::from_secs(5),
        },
    ))
    .unwrap();
    let (probe, _h) = Probe::new();
    let mut first = PoolSizerLayer::new(limiter.clone()).layer(probe);
    let mut second = first.clone();
    first.ready().await.unwrap();
    let fut = first.call(ProbeRequest::Delay(Duration::from_millis(10), 1));
    let mut waiting = task::spawn(async { second.ready().await.map(|_| ()) });
    assert_pending!(waiting.poll());
    assert_eq!(limiter.snapshot().waiting, 1);
    assert_eq!(tokio::time::timeout(HOUR, fut).await.unwrap().unwrap(), 1);
    assert!(waiting.is_woken(), "the release woke the waiting task");
    assert_ready_ok!(waiting.poll());
    assert_eq!(limiter.snapshot().waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_bounded() {
    let limiter = Limiter::new(fixed(
        1,
        AtLimit::Wait {
            max_wait: Duration::from_millis(50),
        },
    ))
    .unwrap();
    let held = limiter.try_acquire().unwrap();
    let start = tokio::time::Instant::now();
    let err = tokio::time::timeout(HOUR, limiter.acquire())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, Overloaded::new(None));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(limiter.snapshot().rejected, 1);
    assert_eq!(limiter.snapshot().waiting, 0);
    drop(held);
    assert!(limiter.try_acquire().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_service_dropped_gives_up_its_place() {
    let limiter = Limiter::new(fixed(
        1,
        AtLimit::Wait {
            max_wait: Duration::from_secs(5),
        },
    ))
    .unwrap();
    let (probe, _h) = Probe::new();
    let mut svc = PoolSizerLayer::new(limiter.clone()).layer(probe);
    let held = limiter.try_acquire().unwrap();
    {
        // The wait registration lives in the service (as tower's semaphore-based limits keep
        // their acquire future): it ends when the service is dropped.
        let mut waiting = task::spawn(async move { svc.ready().await.map(|_| ()) });
        assert_pending!(waiting.poll());
        assert_eq!(limiter.snapshot().waiting, 1);
    }
    assert_eq!(limiter.snapshot().waiting, 0);
    drop(held);
    assert_eq!(limiter.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_futures_are_cancellations_not_successes() {
    let limiter = Limiter::new(fixed(4, AtLimit::Reject)).unwrap();
    let (probe, handle) = Probe::new();
    let mut svc = PoolSizerLayer::new(limiter.clone()).layer(probe);
    for _ in 0..3 {
        let mut fut = task::spawn(svc.ready().await.unwrap().call(ProbeRequest::Hang));
        assert_pending!(fut.poll());
    }
    let snap = limiter.snapshot();
    assert_eq!((snap.cancelled, snap.in_flight), (3, 0));
    assert_eq!(handle.in_flight(), 0);
    // A permit taken but never started is not a cancellation.
    drop(limiter.try_acquire().unwrap());
    assert_eq!(limiter.snapshot().cancelled, 3);
}

#[tokio::test(start_paused = true)]
async fn a_saturated_fast_backend_grows_the_limit() {
    let config = PoolConfig {
        initial_limit: 4,
        ..PoolConfig::default()
    };
    let limiter = Limiter::new(config).unwrap();
    // Keep the limit busy with 1 ms requests for a second.
    for _ in 0..100 {
        let permits: Vec<_> = std::iter::from_fn(|| limiter.try_acquire()).collect();
        assert!(limiter.try_acquire().is_none());
        tokio::time::advance(Duration::from_millis(1)).await;
        for mut p in permits {
            p.start();
            limiter.record(p, Duration::from_millis(1), Outcome::Success);
        }
        tokio::time::advance(Duration::from_millis(9)).await;
    }
    let snap = limiter.snapshot();
    assert!(snap.limit > 4.0, "{snap:?}");
    assert_eq!(snap.rtt.baseline, Some(Duration::from_millis(1)));
    assert!(snap.windows > 10, "{snap:?}");
}

#[tokio::test(start_paused = true)]
async fn failures_shrink_the_limit() {
    for algorithm in [
        AlgorithmConfig::Vegas(VegasConfig::default()),
        AlgorithmConfig::Aimd(AimdConfig::default()),
        AlgorithmConfig::Gradient2(Gradient2Config::default()),
    ] {
        let config = PoolConfig {
            initial_limit: 50,
            algorithm,
            ..PoolConfig::default()
        };
        let limiter = Limiter::new(config).unwrap();
        for _ in 0..50 {
            for _ in 0..20 {
                let mut p = limiter.try_acquire().unwrap();
                p.start();
                limiter.record(p, Duration::from_millis(1), Outcome::Failure);
            }
            tokio::time::advance(Duration::from_millis(20)).await;
            limiter.force_update();
        }
        let snap = limiter.snapshot();
        assert!(snap.limit < 10.0, "{snap:?}");
        assert!(snap.limit >= 1.0);
    }
}

#[test]
fn config_errors_name_the_field() {
    let bad = |c: PoolConfig| Limiter::new(c).unwrap_err().field();
    let d = PoolConfig::default;
    assert_eq!(
        bad(PoolConfig {
            min_limit: 0,
            ..d()
        }),
        "min_limit"
    );
    assert_eq!(
        bad(PoolConfig {
            min_limit: 10,
            max_limit: 5,
            initial_limit: 5,
            ..d()
        }),
        "max_limit"
    );
    assert_eq!(
        bad(PoolConfig {
            initial_limit: 5000,
            ..d()
        }),
        "initial_limit"
    );
    assert_eq!(
        bad(PoolConfig {
            at_limit: AtLimit::Wait {
                max_wait: Duration::ZERO
            },
            ..d()
        }),
        "max_wait"
    );
    assert_eq!(
        bad(PoolConfig {
            samples_per_window: 0,
            ..d()
        }),
        "samples_per_window"
    );
    assert_eq!(
        bad(PoolConfig {
            window_rtts: f64::NAN,
            ..d()
        }),
        "window_rtts"
    );
    assert_eq!(
        bad(PoolConfig {
            min_window: Duration::ZERO,
            ..d()
        }),
        "min_window"
    );
    let g = |c: Gradient2Config| PoolConfig {
        algorithm: AlgorithmConfig::Gradient2(c),
        ..d()
    };
    assert_eq!(
        bad(g(Gradient2Config {
            smoothing: f64::NAN,
            ..Default::default()
        })),
        "smoothing"
    );
    let v = |c: VegasConfig| PoolConfig {
        algorithm: AlgorithmConfig::Vegas(c),
        ..d()
    };
    assert_eq!(
        bad(v(VegasConfig {
            beta: 0.1,
            ..Default::default()
        })),
        "beta"
    );
    assert_eq!(
        bad(v(VegasConfig {
            probe_interval: Duration::from_secs(60),
            ..Default::default()
        })),
        "probe_interval"
    );
    let a = |c: AimdConfig| PoolConfig {
        algorithm: AlgorithmConfig::Aimd(c),
        ..d()
    };
    assert_eq!(
        bad(a(AimdConfig {
            backoff: 1.5,
            ..Default::default()
        })),
        "backoff"
    );
    assert!(PoolConfig::default().validate().is_ok());
}

#[test]
fn many_threads_never_exceed_a_fixed_limit() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let limiter = Limiter::new(fixed(
            3,
            AtLimit::Wait {
                max_wait: Duration::from_secs(60),
            },
        ))
        .unwrap();
        let (probe, handle) = Probe::new();
        let svc = PoolSizerLayer::new(limiter.clone()).layer(probe);
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let mut svc = svc.clone();
                tokio::spawn(async move {
                    for n in 0..200u64 {
                        let req = if n % 7 == 0 {
                            ProbeRequest::Delay(Duration::from_micros(50), n)
                        } else {
                            ProbeRequest::Ok(n + i)
                        };
                        svc.ready().await.unwrap().call(req).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(HOUR, t).await.unwrap().unwrap();
        }
        assert!(
            handle.max_in_flight() <= 3,
            "max in flight {}",
            handle.max_in_flight()
        );
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(handle.calls(), 8 * 200);
    });
}

#[tokio::test(start_paused = true)]
async fn deferred_mode_takes_the_permit_in_the_future() {
    let limiter = Limiter::new(fixed(1, AtLimit::Reject)).unwrap();
    let (probe, handle) = Probe::new();
    let mut svc = PoolSizerLayer::new(limiter.clone()).deferred().layer(probe);
    // Readiness holds no permit.
    svc.ready().await.unwrap();
    assert_eq!(limiter.in_flight(), 0);
    let mut slow = task::spawn(svc.call(ProbeRequest::Delay(Duration::from_millis(10), 1)));
    assert_pending!(slow.poll());
    assert_eq!(limiter.in_flight(), 1);
    let rejected = svc
        .ready()
        .await
        .unwrap()
        .call(ProbeRequest::Ok(2))
        .await
        .unwrap_err();
    assert!(rejected.is::<Overloaded>());
    assert_eq!(handle.calls(), 1);
    tokio::time::advance(Duration::from_millis(10)).await;
    assert_eq!(assert_ready!(slow.poll()).unwrap(), 1);
    assert_eq!(limiter.in_flight(), 0);
}

/// A custom algorithm plugs in through the trait; when it raises the limit, tasks waiting at
/// the old limit are woken.
#[tokio::test(start_paused = true)]
async fn a_growing_limit_wakes_waiters_and_custom_algorithms_plug_in() {
    #[derive(Debug)]
    struct AlwaysGrow;
    impl tollgate_pool::LimitAlgorithm for AlwaysGrow {
        fn update(&mut self, w: &tollgate_pool::Window) -> f64 {
            w.limit + 2.0
        }
        fn name(&self) -> &'static str {
            "always-grow"
        }
    }
    let config = PoolConfig {
        initial_limit: 1,
        at_limit: AtLimit::Wait {
            max_wait: Duration::from_secs(60),
        },
        ..PoolConfig::default()
    };
    let limiter = Limiter::with_algorithm(config, AlwaysGrow).unwrap();
    let held = limiter.try_acquire().unwrap();
    let mut waiting = task::spawn(limiter.acquire());
    assert_pending!(waiting.poll());
    limiter.force_update();
    assert_eq!(limiter.limit(), 3);
    assert!(waiting.is_woken(), "the new permits woke the waiter");
    let second = assert_ready!(waiting.poll()).unwrap();
    let snap = limiter.snapshot();
    assert_eq!(
        (snap.algorithm, snap.in_flight, snap.waiting),
        ("always-grow", 2, 0)
    );
    drop((held, second));
}
