//! Retries, backoff, pushback, the budget and hedging, against a controlled inner service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tollgate_core::error::is_caused_by;
use tollgate_retry::{
    Action, Attempt, BackoffConfig, BudgetConfig, HedgeConfig, Policy, RetriesExhausted,
    RetryConfig, RetryLayer, policy_fn,
};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

fn config() -> RetryConfig {
    RetryConfig {
        seed: Some(42),
        ..RetryConfig::default()
    }
}

/// A backend that fails the first `fail` calls, then answers the request; counts calls.
fn flaky(
    fail: u32,
    calls: Arc<AtomicU32>,
) -> impl Service<u32, Response = u32, Error = Boom, Future: Send> + Clone {
    service_fn(move |req: u32| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { if n < fail { Err(Boom) } else { Ok(req) } }
    })
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_retried_after_a_jittered_backoff() {
    let calls = Arc::new(AtomicU32::new(0));
    let mut svc = RetryLayer::new(config())
        .unwrap()
        .layer(flaky(2, calls.clone()));
    let start = Instant::now();
    let res = tokio::time::timeout(HOUR, svc.ready().await.unwrap().call(5))
        .await
        .unwrap();
    assert_eq!(res.unwrap(), 5);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Two waits, each at most 25 ms and 50 ms (full jitter).
    assert!(
        start.elapsed() <= Duration::from_millis(75),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_waits() {
    async fn waits(seed: u64) -> Duration {
        let calls = Arc::new(AtomicU32::new(0));
        let layer = RetryLayer::new(RetryConfig {
            max_attempts: 5,
            seed: Some(seed),
            backoff: BackoffConfig {
                base: Duration::from_millis(100),
                max: Duration::from_secs(10),
            },
            ..RetryConfig::default()
        })
        .unwrap();
        let mut svc = layer.layer(flaky(4, calls));
        let start = Instant::now();
        svc.ready().await.unwrap().call(1).await.unwrap();
        start.elapsed()
    }
    let (a, b, c) = (waits(3).await, waits(3).await, waits(4).await);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test(start_paused = true)]
async fn attempts_run_out_with_retries_exhausted() {
    let calls = Arc::new(AtomicU32::new(0));
    let mut svc = RetryLayer::new(config())
        .unwrap()
        .layer(flaky(100, calls.clone()));
    let err = svc.ready().await.unwrap().call(5).await.unwrap_err();
    let gave_up = err.downcast_ref::<RetriesExhausted>().expect("gave up");
    assert_eq!(gave_up.attempts(), 3);
    assert!(!gave_up.budget_exhausted());
    assert!(is_caused_by::<Boom>(&*err), "the last error is the source");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(err.to_string(), "gave up after 3 attempts");
}

#[tokio::test(start_paused = true)]
async fn an_accepted_failure_passes_through_unchanged() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = RetryLayer::new(config()).unwrap().with_policy(policy_fn(
        |_: &u32, _: Result<&u32, &BoxError>| Action::Return,
    ));
    let mut svc = layer.layer(flaky(100, calls.clone()));
    let err = svc.ready().await.unwrap().call(5).await.unwrap_err();
    assert!(err.is::<Boom>());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_across_clones() {
    let layer = RetryLayer::new(RetryConfig {
        max_attempts: 5,
        budget: BudgetConfig {
            ratio: 0.1,
            min_per_second: 0,
            window: Duration::from_secs(10),
        },
        backoff: BackoffConfig {
            base: Duration::ZERO,
            max: Duration::ZERO,
        },
        seed: Some(1),
        ..RetryConfig::default()
    })
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = layer.layer(flaky(u32::MAX, calls.clone()));
    let mut budget_stops = 0;
    for i in 0..100 {
        // Each request through its own clone: the budget is shared.
        let err = svc.clone().oneshot(i).await.unwrap_err();
        if err
            .downcast_ref::<RetriesExhausted>()
            .is_some_and(|e| e.budget_exhausted())
        {
            budget_stops += 1;
        }
    }
    let calls = calls.load(Ordering::SeqCst);
    // 100 requests earn 10 retries.
    assert_eq!(calls, 110, "{calls}");
    assert!(budget_stops >= 90, "{budget_stops}");
    let snap = layer.budget().snapshot();
    assert_eq!((snap.requests, snap.spent, snap.allowance), (100, 10, 10));
}

/// Two layers with different attempts drawing on one budget (`RetryLayer::with_budget`):
/// requests through either earn retries for both, and retries through either spend them, so
/// together they stay within the one budget's ratio.
#[tokio::test(start_paused = true)]
async fn layers_sharing_a_budget_stay_within_it_together() {
    let budget = BudgetConfig {
        ratio: 0.1,
        min_per_second: 0,
        window: Duration::from_secs(10),
    };
    let no_backoff = BackoffConfig {
        base: Duration::ZERO,
        max: Duration::ZERO,
    };
    let cluster = RetryLayer::new(RetryConfig {
        max_attempts: 2,
        budget: budget.clone(),
        backoff: no_backoff.clone(),
        seed: Some(1),
        ..RetryConfig::default()
    })
    .unwrap();
    // The route's own setting for the budget is ignored: the shared one applies.
    let route = RetryLayer::with_budget(
        RetryConfig {
            max_attempts: 5,
            budget: BudgetConfig {
                ratio: 1.0,
                ..budget
            },
            backoff: no_backoff,
            seed: Some(2),
            ..RetryConfig::default()
        },
        cluster.budget().clone(),
    )
    .unwrap();
    assert!(route.budget().is_shared_with(cluster.budget()));
    assert!(
        !RetryLayer::new(config())
            .unwrap()
            .budget()
            .is_shared_with(cluster.budget())
    );
    // 100 requests that succeed through the cluster's layer earn 10 retries...
    let ok = Arc::new(AtomicU32::new(0));
    let healthy = cluster.layer(flaky(0, ok.clone()));
    for i in 0..100 {
        healthy.clone().oneshot(i).await.unwrap();
    }
    // ...which 20 failing requests through the route's layer spend, and no more.
    let calls = Arc::new(AtomicU32::new(0));
    let failing = route.layer(flaky(u32::MAX, calls.clone()));
    for i in 0..20 {
        failing.clone().oneshot(i).await.unwrap_err();
    }
    // 120 requests in the window allow 12 retries in all.
    assert_eq!(calls.load(Ordering::SeqCst), 20 + 12);
    let snap = route.budget().snapshot();
    assert_eq!((snap.requests, snap.spent, snap.allowance), (120, 12, 12));
    assert_eq!(cluster.budget().snapshot(), snap);
}

#[tokio::test(start_paused = true)]
async fn a_pushback_replaces_the_backoff_and_a_long_one_stops() {
    let calls = Arc::new(AtomicU32::new(0));
    let policy = policy_fn(|_: &u32, res: Result<&u32, &BoxError>| match res {
        Ok(&ms) if ms >= 1000 => Action::RetryAfter(Duration::from_millis(u64::from(ms))),
        Ok(_) => Action::Return,
        Err(_) => Action::Retry,
    });
    let layer = RetryLayer::new(RetryConfig {
        max_pushback: Duration::from_secs(5),
        ..config()
    })
    .unwrap()
    .with_policy(policy);
    // The first answer asks for 2 s, the second is fine.
    let c = calls.clone();
    let backend = service_fn(move |req: u32| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Boom>(if n == 0 { req } else { 7 }) }
    });
    let mut svc = layer.layer(backend);
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(2000).await.unwrap(), 7);
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    // 9 s is longer than the caller should wait: the answer is returned as it is.
    calls.store(0, Ordering::SeqCst);
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(9000).await.unwrap(), 9000);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn stacked_layers_retry_only_at_the_innermost() {
    let calls = Arc::new(AtomicU32::new(0));
    let inner = RetryLayer::new(config())
        .unwrap()
        .layer(flaky(100, calls.clone()));
    let middle = RetryLayer::new(config()).unwrap().layer(inner);
    let mut outer = RetryLayer::new(config()).unwrap().layer(middle);
    let err = outer.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(is_caused_by::<Boom>(&*err));
    // 3 attempts, not 27.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// Decrements the in-flight count when the attempt's future is dropped, answered or not.
struct Guard(Arc<AtomicU32>);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_is_hedged_and_the_loser_dropped() {
    let layer = RetryLayer::new(RetryConfig {
        hedge: Some(HedgeConfig {
            percentile: None,
            min_delay: Duration::from_millis(10),
            ..HedgeConfig::default()
        }),
        ..config()
    })
    .unwrap();
    let (calls, in_flight) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (c, f) = (calls.clone(), in_flight.clone());
    // The first attempt takes 100 ms, the hedge 5 ms.
    let backend = service_fn(move |req: u32| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        f.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(f.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_millis(if n == 0 { 100 } else { 5 })).await;
            Ok::<_, Boom>(req + n)
        }
    });
    let mut svc = layer.layer(backend);
    let start = Instant::now();
    let mut fut = tokio_test::task::spawn(async move { svc.ready().await.unwrap().call(1).await });
    assert!(fut.poll().is_pending());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Nothing more until the hedge delay has passed.
    tokio::time::advance(Duration::from_millis(9)).await;
    assert!(fut.poll().is_pending());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(fut.poll().is_pending());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the hedge went out at 10 ms"
    );
    assert_eq!(in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(fut.await.unwrap(), 2, "the hedge's answer wins");
    assert_eq!(start.elapsed(), Duration::from_millis(15));
    assert_eq!(in_flight.load(Ordering::SeqCst), 0, "the loser was dropped");
}

#[derive(Clone, Debug, PartialEq)]
struct Req {
    attempt: Option<(u32, bool)>,
    tried: Vec<u64>,
}

/// Marks attempts into the request and retries every error.
#[derive(Clone)]
struct Marking;

impl Policy<Req, u32> for Marking {
    fn classify(&self, _: &Req, res: Result<&u32, &BoxError>) -> Action {
        if res.is_ok() {
            Action::Return
        } else {
            Action::Retry
        }
    }
    fn clone_request(&self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
    fn marks_attempts(&self) -> bool {
        true
    }
    fn on_attempt(&self, req: &mut Req, attempt: &Attempt) {
        req.attempt = Some((attempt.number(), attempt.is_hedge()));
        req.tried = attempt.tried().keys().collect();
        // A balancer would record its pick; here "endpoint" = attempt number + 100.
        attempt.tried().record(u64::from(attempt.number()) + 100);
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_are_marked_with_the_endpoints_already_tried() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let backend = service_fn(move |req: Req| {
        let mut seen = s.lock().unwrap();
        seen.push(req);
        let n = seen.len();
        async move { if n < 3 { Err(Boom) } else { Ok(0u32) } }
    });
    let mut svc = RetryLayer::new(config())
        .unwrap()
        .with_policy(Marking)
        .layer(backend);
    let req = Req {
        attempt: None,
        tried: vec![],
    };
    svc.ready().await.unwrap().call(req).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].attempt, Some((0, false)));
    assert_eq!(seen[0].tried, Vec::<u64>::new());
    assert_eq!(seen[1].attempt, Some((1, false)));
    assert_eq!(seen[1].tried, vec![100]);
    assert_eq!(seen[2].tried, vec![100, 101]);
}

#[derive(Clone, Debug)]
struct Marked {
    attempt: Option<Attempt>,
}

impl tollgate_core::attempt::Attempts for Marked {
    fn attempt(&self) -> Option<&Attempt> {
        self.attempt.as_ref()
    }
    fn set_attempt(&mut self, attempt: Attempt) {
        self.attempt = Some(attempt);
    }
}

#[tokio::test(start_paused = true)]
async fn mark_attempts_puts_the_marker_on_any_attempts_request() {
    // A "balancer" that records endpoint 10 + attempt number and checks the tried set.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let backend = service_fn(move |req: Marked| {
        let attempt = req.attempt.expect("marked");
        s.lock()
            .unwrap()
            .push((attempt.number(), attempt.tried().keys().collect::<Vec<_>>()));
        attempt.tried().record(10 + u64::from(attempt.number()));
        async move {
            if attempt.number() < 2 {
                Err(Boom)
            } else {
                Ok(0u32)
            }
        }
    });
    let layer = RetryLayer::new(config())
        .unwrap()
        .with_policy(tollgate_retry::MarkAttempts(tollgate_retry::RetryErrors));
    let mut svc = layer.layer(backend);
    svc.ready()
        .await
        .unwrap()
        .call(Marked { attempt: None })
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(0, vec![]), (1, vec![10]), (2, vec![10, 11])]
    );
}

#[tokio::test(start_paused = true)]
async fn every_request_gets_exactly_one_answer() {
    // Many concurrent requests through clones, some failing, some slow, with hedging on.
    let layer = RetryLayer::new(RetryConfig {
        max_attempts: 4,
        hedge: Some(HedgeConfig {
            percentile: None,
            min_delay: Duration::from_millis(3),
            ..HedgeConfig::default()
        }),
        budget: BudgetConfig {
            ratio: 0.5,
            ..BudgetConfig::default()
        },
        ..config()
    })
    .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let backend = service_fn(move |req: u32| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(u64::from((n * 7 + req) % 6))).await;
            if (n + req).is_multiple_of(3) {
                Err(Boom)
            } else {
                Ok(req)
            }
        }
    });
    let svc = layer.layer(backend);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..500u32 {
        let svc = svc.clone();
        tasks.spawn(async move { (i, svc.oneshot(i).await) });
    }
    let mut answered = vec![0u32; 500];
    let mut ok = 0;
    while let Some(res) = tasks.join_next().await {
        let (i, res) = res.unwrap();
        answered[i as usize] += 1;
        if let Ok(v) = res {
            assert_eq!(v, i);
            ok += 1;
        }
    }
    assert!(answered.iter().all(|&n| n == 1));
    assert!(ok > 400, "{ok}");
    let total = calls.load(Ordering::SeqCst);
    assert!(
        total <= 500 + layer.budget().snapshot().allowance as u32,
        "{total}"
    );
}

#[test]
fn invalid_configs_are_refused_with_the_field() {
    let bad = |c: RetryConfig| RetryLayer::new(c).unwrap_err().field();
    assert_eq!(
        bad(RetryConfig {
            max_attempts: 0,
            ..config()
        }),
        "max_attempts"
    );
    assert_eq!(
        bad(RetryConfig {
            max_attempts: 99,
            ..config()
        }),
        "max_attempts"
    );
    let budget = |ratio, window| BudgetConfig {
        ratio,
        min_per_second: 1,
        window,
    };
    assert_eq!(
        bad(RetryConfig {
            budget: budget(f64::NAN, Duration::from_secs(1)),
            ..config()
        }),
        "budget.ratio"
    );
    assert_eq!(
        bad(RetryConfig {
            budget: budget(-0.1, Duration::from_secs(1)),
            ..config()
        }),
        "budget.ratio"
    );
    assert_eq!(
        bad(RetryConfig {
            budget: budget(0.1, Duration::from_millis(1)),
            ..config()
        }),
        "budget.window"
    );
    let backoff = BackoffConfig {
        base: Duration::from_secs(2),
        max: Duration::from_secs(1),
    };
    assert_eq!(
        bad(RetryConfig {
            backoff,
            ..config()
        }),
        "backoff.max"
    );
    // "No cap" is not a `Duration::MAX`: a pause past an hour is an answer to return.
    assert_eq!(
        bad(RetryConfig {
            max_pushback: Duration::MAX,
            ..config()
        }),
        "max_pushback"
    );
    let hedge = |h: HedgeConfig| RetryConfig {
        hedge: Some(h),
        ..config()
    };
    assert_eq!(
        bad(hedge(HedgeConfig {
            percentile: Some(0.2),
            ..HedgeConfig::default()
        })),
        "hedge.percentile"
    );
    assert_eq!(
        bad(hedge(HedgeConfig {
            min_samples: 0,
            ..HedgeConfig::default()
        })),
        "hedge.min_samples"
    );
    assert_eq!(
        bad(hedge(HedgeConfig {
            min_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(1),
            ..HedgeConfig::default()
        })),
        "hedge.max_delay"
    );
    assert_eq!(
        bad(RetryConfig {
            max_attempts: 1,
            ..hedge(HedgeConfig::default())
        }),
        "max_attempts"
    );
    let msg = RetryLayer::new(RetryConfig {
        max_attempts: 0,
        ..config()
    })
    .unwrap_err()
    .to_string();
    assert_eq!(msg, "invalid `max_attempts`: 0 is outside 1..=8");
    assert!(RetryLayer::new(RetryConfig::default()).is_ok());
}

/// The floor is rounded up to a whole retry: 10 a second over a 50 ms window is one retry a
/// window (it truncated to none, so a quiet service could never retry).
#[tokio::test(start_paused = true)]
async fn a_floor_under_one_retry_a_window_rounds_up() {
    let budget = tollgate_retry::Budget::new(&BudgetConfig {
        ratio: 0.0,
        min_per_second: 10,
        window: Duration::from_millis(50),
    });
    assert_eq!(budget.snapshot().allowance, 1);
    assert!(budget.try_withdraw());
    assert!(!budget.try_withdraw(), "one a window");
}
