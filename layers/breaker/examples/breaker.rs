//! A breaker in front of a mock backend that goes down and comes back: it trips, rejects with
//! the time until the next probe, probes (failing ones back off), and recovers.
//!
//! `cargo run -p tollgate-breaker --example breaker` (about two seconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tollgate_breaker::{Backoff, BreakerConfig, BreakerLayer, Open, SlidingWindow};
use tollgate_core::BoxError;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let config = BreakerConfig {
        name: "backend".into(),
        sliding_window: SlidingWindow::Count { size: 10 },
        minimum_calls: 10,
        wait_in_open: Duration::from_millis(200),
        backoff: Some(Backoff {
            multiplier: 2.0,
            max_wait: Duration::from_secs(1),
            jitter: 0.1,
        }),
        permitted_calls_in_half_open: 2,
        seed: Some(42),
        ..BreakerConfig::default()
    };
    let layer = BreakerLayer::new(config)?.on_state_change(|c| match c.open_for {
        Some(d) => println!("  [event] {}: {:?} -> {:?} for {d:?}", c.name, c.from, c.to),
        None => println!("  [event] {}: {:?} -> {:?}", c.name, c.from, c.to),
    });
    let handle = layer.handle();

    // Relaxed: a demo flag, read by the mock backend.
    let healthy = Arc::new(AtomicBool::new(true));
    let backend = {
        let healthy = healthy.clone();
        service_fn(move |n: u32| {
            let up = healthy.load(Relaxed);
            async move {
                if up {
                    Ok(n)
                } else {
                    Err(BoxError::from("backend unavailable"))
                }
            }
        })
    };
    let mut svc = ServiceBuilder::new().layer(layer).service(backend);

    println!("1. the backend is up: 10 calls pass");
    for n in 0..10 {
        send(&mut svc, n).await?;
    }
    println!("   {:?}", handle.snapshot());

    println!("2. the backend goes down: failures fill the window until the breaker trips");
    healthy.store(false, Relaxed);
    for n in 10.. {
        match send(&mut svc, n).await {
            Ok(_) => unreachable!("the backend is down"),
            Err(e) if e.is::<Open>() => {
                let open = e.downcast_ref::<Open>().expect("checked");
                println!(
                    "   call {n}: rejected ({e}), next probe in {:?}",
                    open.retry_after()
                );
                break;
            }
            Err(e) => println!("   call {n}: failed ({e})"),
        }
    }

    println!("3. probes while the backend is still down: each failure doubles the wait");
    for _ in 0..2 {
        let wait = retry_after(&mut svc).await;
        tokio::time::sleep(wait).await;
        for n in 0..2 {
            let r = send(&mut svc, 100 + n).await;
            println!(
                "   probe {n}: {}",
                r.map_or_else(|e| e.to_string(), |v| format!("ok {v}"))
            );
        }
    }

    println!("4. the backend recovers: the next probes succeed and the breaker closes");
    healthy.store(true, Relaxed);
    let wait = retry_after(&mut svc).await;
    tokio::time::sleep(wait).await;
    for n in 0..4 {
        println!("   call {n}: ok {}", send(&mut svc, 200 + n).await?);
    }
    println!("   {:?}", handle.snapshot());
    Ok(())
}

async fn send<S>(svc: &mut S, n: u32) -> Result<u32, BoxError>
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    svc.ready().await?.call(n).await
}

/// Asks once: the breaker is open, so the rejection says how long to wait.
async fn retry_after<S>(svc: &mut S) -> Duration
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let err = send(svc, 0).await.expect_err("the breaker is open");
    let wait = err
        .downcast_ref::<Open>()
        .and_then(Open::retry_after)
        .expect("open, waiting");
    println!("   rejected: next probe in {wait:?}");
    wait
}
