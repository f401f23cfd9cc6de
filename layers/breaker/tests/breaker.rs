//! Behaviour of the breaker service, under paused tokio time.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{advance, timeout};
use tollgate_breaker::{Backoff, BreakerConfig, BreakerLayer, Open, SlidingWindow, State};
use tollgate_core::error::is_caused_by;
use tollgate_core::testing::{Probe, ProbeRequest};
use tollgate_core::{BoxError, Outcome};
use tower::{Layer, Service, ServiceExt};

mod common;
use common::{HOUR, Req, backend, open_err, quick_trip, send};

#[tokio::test(start_paused = true)]
async fn defaults_trip_after_fifty_failures_following_successes() {
    let layer = BreakerLayer::new(BreakerConfig::default()).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..100 {
        send(&mut svc, Req::Ok).await.unwrap();
    }
    let mut failures = 0;
    while handle.state() == State::Closed {
        let e = send(&mut svc, Req::Fail).await.unwrap_err();
        assert!(!e.is::<Open>());
        failures += 1;
    }
    assert_eq!(
        failures, 50,
        "50 failures among the last 100 calls is the 50 % threshold"
    );
    let snap = handle.snapshot();
    assert_eq!(
        (snap.calls, snap.failures, snap.failure_rate),
        (100, 50, Some(0.5))
    );
    let open = open_err(send(&mut svc, Req::Ok).await);
    assert_eq!(open.retry_after(), Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_holds_the_decision() {
    let layer = BreakerLayer::new(BreakerConfig::default()).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..99 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(
        handle.state(),
        State::Closed,
        "99 calls are below the minimum of 100"
    );
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_ages_out_old_calls() {
    let config = BreakerConfig {
        sliding_window: SlidingWindow::Time {
            length: Duration::from_secs(10),
            buckets: 10,
        },
        minimum_calls: 4,
        ..BreakerConfig::default()
    };
    let layer = BreakerLayer::new(config).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..3 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(handle.snapshot().calls, 3);
    advance(Duration::from_secs(5)).await;
    assert_eq!(handle.snapshot().calls, 3, "still inside the window");
    advance(Duration::from_secs(6)).await;
    assert_eq!(handle.snapshot().calls, 0, "the failures aged out");
    // Three successes and one failure now: 25 %, no trip; the old failures would have made it 4/7.
    for _ in 0..3 {
        send(&mut svc, Req::Ok).await.unwrap();
    }
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Closed);
    let snap = handle.snapshot();
    assert_eq!((snap.calls, snap.failures), (4, 1));
    // Buckets age one at a time: after 5 s more, the calls are still counted; then more failures trip it.
    advance(Duration::from_secs(5)).await;
    for _ in 0..2 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Open, "3 failures in 6 calls is 50 %");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker() {
    let config = BreakerConfig {
        minimum_calls: 4,
        slow_call_duration: Some(Duration::from_millis(100)),
        slow_call_rate_threshold: 0.5,
        ..BreakerConfig::default()
    };
    let layer = BreakerLayer::new(config).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    send(&mut svc, Req::Slow(Duration::from_millis(50)))
        .await
        .unwrap();
    send(&mut svc, Req::Ok).await.unwrap();
    send(&mut svc, Req::Slow(Duration::from_millis(150)))
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.snapshot().slow_calls, 1);
    send(&mut svc, Req::Slow(Duration::from_millis(100)))
        .await
        .unwrap();
    let snap = handle.snapshot();
    assert_eq!(snap.state, State::Open, "2 slow calls in 4 is 50 %");
    assert_eq!(snap.failures, 0);
    assert_eq!(snap.slow_call_rate, Some(0.5));
}

/// An upstream that hangs, behind a timeout above the breaker (the usual stack: the caller's
/// deadline outside): every call is cut off, none finishes. A call dropped before its slow-call
/// threshold says nothing and is not counted; one dropped after it was slow, and counts as a
/// slow call, so the hang trips the slow-call rate; and a half-open breaker's cancelled probes
/// decide its next state instead of freeing their slots for ever more probes.
#[tokio::test(start_paused = true)]
async fn calls_cut_off_past_the_slow_threshold_count_as_slow() {
    let config = BreakerConfig {
        minimum_calls: 4,
        slow_call_duration: Some(Duration::from_millis(500)),
        slow_call_rate_threshold: 0.5,
        wait_in_open: Duration::from_secs(10),
        permitted_calls_in_half_open: 2,
        ..BreakerConfig::default()
    };
    let layer = BreakerLayer::new(config).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    let hung = Req::Slow(Duration::from_secs(3600));
    // Cut off at 100 ms, under the threshold: not counted at all.
    for _ in 0..4 {
        let call = svc.ready().await.unwrap().call(hung);
        assert!(timeout(Duration::from_millis(100), call).await.is_err());
    }
    assert_eq!(handle.snapshot().calls, 0, "a cancellation is not a result");
    assert_eq!(handle.state(), State::Closed);
    // Cut off at 1 s, past it: slow calls, and 4 of 4 trip the breaker.
    for _ in 0..4 {
        let call = svc.ready().await.unwrap().call(hung);
        assert!(timeout(Duration::from_secs(1), call).await.is_err());
    }
    let snap = handle.snapshot();
    assert_eq!(snap.state, State::Open, "{snap:?}");
    assert_eq!((snap.failures, snap.slow_calls), (0, 4));
    // Half-open: the probes hang and are cut off too; they decide (open again) rather than
    // leaving the breaker half-open.
    tokio::time::sleep(Duration::from_secs(11)).await;
    for _ in 0..2 {
        let call = svc.ready().await.unwrap().call(hung);
        assert!(timeout(Duration::from_secs(1), call).await.is_err());
    }
    assert_eq!(handle.state(), State::Open, "the cut-off probes were slow");
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_the_permitted_probes_across_clones() {
    let layer = BreakerLayer::new(quick_trip(3)).unwrap();
    let handle = layer.handle();
    let (probe, probes) = Probe::new();
    let mut svc = layer.layer(probe);
    for _ in 0..4 {
        send(&mut svc, ProbeRequest::Fail(1)).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Open);
    advance(Duration::from_secs(10)).await;

    // Clones readied and left idle hold no probe slot (servers ready services early).
    let mut idle: Vec<_> = (0..5).map(|_| svc.clone()).collect();
    for c in &mut idle {
        timeout(HOUR, c.ready()).await.unwrap().unwrap();
    }

    // Forty clones ask at once; three become probes and hang, the rest are turned away.
    let mut hanging = Vec::new();
    let mut rejected = 0;
    for _ in 0..40 {
        let mut clone = svc.clone();
        let mut fut = Box::pin(async move { clone.ready().await?.call(ProbeRequest::Hang).await });
        match futures_util::poll!(fut.as_mut()) {
            std::task::Poll::Pending => hanging.push(fut),
            std::task::Poll::Ready(r) => {
                assert_eq!(
                    open_err(r).retry_after(),
                    None,
                    "probe slots full: no fixed time"
                );
                rejected += 1;
            }
        }
    }
    assert_eq!((hanging.len(), rejected), (3, 37));
    assert_eq!(probes.max_in_flight(), 3);
    assert_eq!(handle.state(), State::HalfOpen);
    assert_eq!(handle.snapshot().probes_admitted, 3);

    // Cancelled probes give their slots back, and three good probes close the breaker.
    drop(hanging);
    assert_eq!(handle.snapshot().probes_admitted, 0);
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut clone = svc.clone();
        let mut fut = Box::pin(async move {
            let req = ProbeRequest::Delay(Duration::from_secs(1), 1);
            clone.ready().await?.call(req).await
        });
        assert!(futures_util::poll!(fut.as_mut()).is_pending());
        slow.push(fut);
    }
    let mut extra = svc.clone();
    let open = open_err(send(&mut extra, ProbeRequest::Ok(9)).await);
    assert!(open.retry_after().is_none());
    for fut in slow {
        assert_eq!(timeout(HOUR, fut).await.unwrap().unwrap(), 1);
    }
    assert_eq!(handle.state(), State::Closed);
    let snap = handle.snapshot();
    assert_eq!(
        (snap.calls, snap.opens_in_a_row),
        (0, 0),
        "closing starts a fresh window"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen_with_growing_capped_waits() {
    let config = BreakerConfig {
        wait_in_open: Duration::from_secs(1),
        backoff: Some(Backoff {
            multiplier: 2.0,
            max_wait: Duration::from_secs(5),
            jitter: 0.0,
        }),
        permitted_calls_in_half_open: 1,
        ..quick_trip(1)
    };
    let layer = BreakerLayer::new(config).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..4 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    let mut waits = Vec::new();
    for _ in 0..5 {
        let wait = open_err(send(&mut svc, Req::Ok).await)
            .retry_after()
            .unwrap();
        waits.push(wait.as_secs());
        advance(wait).await;
        send(&mut svc, Req::Fail).await.unwrap_err(); // the probe fails
    }
    assert_eq!(waits, [1, 2, 4, 5, 5]);
    assert_eq!(handle.snapshot().opens_in_a_row, 6);

    // A good probe closes the breaker and forgets the backoff.
    advance(Duration::from_secs(5)).await;
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    for _ in 0..4 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    assert_eq!(
        open_err(send(&mut svc, Req::Ok).await).retry_after(),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_is_seeded_bounded_and_capped() {
    let config = BreakerConfig {
        wait_in_open: Duration::from_secs(10),
        backoff: Some(Backoff {
            multiplier: 3.0,
            max_wait: Duration::from_secs(60),
            jitter: 0.5,
        }),
        ..quick_trip(1)
    };
    let run = |config: BreakerConfig| async move {
        let mut svc = BreakerLayer::new(config).unwrap().layer(backend());
        for _ in 0..4 {
            send(&mut svc, Req::Fail).await.unwrap_err();
        }
        let mut waits = Vec::new();
        for _ in 0..6 {
            let wait = open_err(send(&mut svc, Req::Ok).await)
                .retry_after()
                .unwrap();
            waits.push(wait);
            advance(wait).await;
            send(&mut svc, Req::Fail).await.unwrap_err();
        }
        waits
    };
    let a = run(config.clone()).await;
    assert_eq!(a, run(config.clone()).await, "same seed, same waits");
    assert_ne!(
        a,
        run(BreakerConfig {
            seed: Some(4),
            ..config
        })
        .await
    );
    for (i, w) in a.iter().enumerate() {
        let nominal = (10.0 * 3f64.powi(i as i32)).min(60.0);
        let secs = w.as_secs_f64();
        assert!(
            secs >= nominal * 0.5 - 1e-6 && secs <= (nominal * 1.5).min(60.0) + 1e-6,
            "wait {i}: {secs}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_classifier_sees_responses() {
    let layer =
        BreakerLayer::new(quick_trip(1))
            .unwrap()
            .with_classifier(|r: Result<&u16, &BoxError>| match r {
                Ok(s) if *s >= 500 => Outcome::Failure,
                Ok(s) if *s == 499 => Outcome::Ignored,
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure,
            });
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for s in [404, 503, 499, 499, 200] {
        assert_eq!(
            send(&mut svc, Req::Status(s)).await.unwrap(),
            s,
            "responses pass unchanged"
        );
    }
    let snap = handle.snapshot();
    assert_eq!(
        (snap.calls, snap.failures),
        (3, 1),
        "4xx succeeds, 5xx fails, ignored is not recorded"
    );
    send(&mut svc, Req::Status(500)).await.unwrap();
    assert_eq!(handle.state(), State::Open, "2 of 4 failed");
}

#[tokio::test(start_paused = true)]
async fn rejections_carry_the_time_until_the_next_probe() {
    let layer = BreakerLayer::new(BreakerConfig {
        wait_in_open: Duration::from_secs(30),
        ..quick_trip(1)
    })
    .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..4 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    advance(Duration::from_secs(10)).await;
    let err = send(&mut svc, Req::Ok).await.unwrap_err();
    assert!(is_caused_by::<Open>(&*err));
    assert_eq!(err.to_string(), "circuit breaker is open");
    assert_eq!(
        err.downcast_ref::<Open>().unwrap().retry_after(),
        Some(Duration::from_secs(20))
    );
    assert_eq!(handle.snapshot().retry_after, Some(Duration::from_secs(20)));
    advance(Duration::from_secs(20)).await;
    send(&mut svc, Req::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn handle_forces_open_disables_and_resets() {
    let layer = BreakerLayer::new(quick_trip(1)).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    handle.force_open();
    assert_eq!(open_err(send(&mut svc, Req::Ok).await).retry_after(), None);
    advance(Duration::from_secs(3600)).await;
    open_err(send(&mut svc, Req::Ok).await);

    handle.disable();
    for _ in 0..10 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    let snap = handle.snapshot();
    assert_eq!(
        (snap.state, snap.calls),
        (State::Disabled, 0),
        "disabled records nothing"
    );

    handle.reset();
    assert_eq!(send(&mut svc, Req::Ok).await.unwrap(), 200);
    assert_eq!(handle.snapshot().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_before_the_window_fills() {
    let config = BreakerConfig {
        consecutive_failures: Some(3),
        ..BreakerConfig::default()
    };
    let layer = BreakerLayer::new(config).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    send(&mut svc, Req::Fail).await.unwrap_err();
    send(&mut svc, Req::Fail).await.unwrap_err();
    send(&mut svc, Req::Ok).await.unwrap();
    send(&mut svc, Req::Fail).await.unwrap_err();
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(handle.snapshot().consecutive_failures, 2);
    assert_eq!(handle.state(), State::Closed);
    send(&mut svc, Req::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn state_changes_reach_callbacks() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let layer = BreakerLayer::new(BreakerConfig {
        name: "upstream".into(),
        ..quick_trip(1)
    })
    .unwrap()
    .on_state_change(move |c| {
        sink.lock()
            .unwrap()
            .push((c.name.to_string(), c.from, c.to, c.open_for))
    });
    let mut svc = layer.layer(backend());
    for _ in 0..4 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    advance(Duration::from_secs(10)).await;
    send(&mut svc, Req::Ok).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let name = String::from("upstream");
    assert_eq!(
        seen,
        [
            (
                name.clone(),
                State::Closed,
                State::Open,
                Some(Duration::from_secs(10))
            ),
            (name.clone(), State::Open, State::HalfOpen, None),
            (name, State::HalfOpen, State::Closed, None),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_ending_between_ready_and_call_turns_the_call_away_for_an_immediate_retry() {
    let layer = BreakerLayer::new(quick_trip(1)).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..4 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    // Readied while open: fail fast, without readying the inner service.
    timeout(HOUR, svc.ready()).await.unwrap().unwrap();
    advance(Duration::from_secs(10)).await;
    let open = open_err(timeout(HOUR, svc.call(Req::Ok)).await.unwrap());
    assert_eq!(open.retry_after(), Some(Duration::ZERO));
    assert_eq!(
        handle.snapshot().probes_admitted,
        0,
        "the probe slot was given back"
    );
    assert_eq!(send(&mut svc, Req::Ok).await.unwrap(), 200);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_service_polled_again_after_the_wait_readies_the_inner_service() {
    let layer = BreakerLayer::new(quick_trip(1)).unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(backend());
    for _ in 0..4 {
        send(&mut svc, Req::Fail).await.unwrap_err();
    }
    timeout(HOUR, svc.ready()).await.unwrap().unwrap(); // fail fast while open
    advance(Duration::from_secs(10)).await;
    timeout(HOUR, svc.ready()).await.unwrap().unwrap(); // the wait is over: ready for real
    let res = timeout(HOUR, svc.call(Req::Ok)).await.unwrap();
    assert_eq!(res.unwrap(), 200, "the call went through as the probe");
    assert_eq!(handle.state(), State::Closed);
}

/// A breaker above another (a cluster's over an endpoint's): the inner one's refusals while it
/// is open were never sent, and say nothing new about the upstream. The outer breaker ignores
/// them (`Open`'s cause is core's `Refused`, a rejection), as it ignores a pool's shedding, so
/// one open endpoint breaker cannot open the cluster's.
#[tokio::test(start_paused = true)]
async fn an_inner_breakers_refusals_do_not_count_in_the_outer_one() {
    let inner = BreakerLayer::new(quick_trip(1)).unwrap();
    let inner_handle = inner.handle();
    let outer = BreakerLayer::new(BreakerConfig {
        minimum_calls: 4,
        ..BreakerConfig::default()
    })
    .unwrap();
    let outer_handle = outer.handle();
    let mut svc = outer.layer(inner.layer(backend()));
    inner_handle.force_open();
    for _ in 0..20 {
        let err = send(&mut svc, Req::Ok).await.unwrap_err();
        assert!(is_caused_by::<Open>(&*err));
        assert!(tollgate_core::error::is_rejection(&*err));
    }
    let snap = outer_handle.snapshot();
    assert_eq!(snap.state, State::Closed);
    assert_eq!((snap.calls, snap.failures), (0, 0), "{snap:?}");
}
