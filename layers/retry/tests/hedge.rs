//! The hedge deadline's edge: an answer due at the deadline itself wins, and no hedge is sent.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_retry::{HedgeConfig, RetryConfig, RetryLayer};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

/// 15 requests (within the budget's hedge pacing) to a backend whose first attempt of each
/// request takes `first` and any later one 1 ms, hedged after a fixed 10 ms: the attempts
/// made, the budget spent, and each answer's latency.
async fn hedged(first: Duration) -> (u32, u64, Vec<Duration>) {
    let layer = RetryLayer::new(RetryConfig {
        hedge: Some(HedgeConfig {
            percentile: None,
            min_delay: Duration::from_millis(10),
            ..HedgeConfig::default()
        }),
        seed: Some(1),
        ..RetryConfig::default()
    })
    .unwrap();
    let budget = layer.budget().clone();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let c = calls.clone();
    let mut svc = layer.layer(service_fn(move |req: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        let again = !seen.lock().unwrap().insert(req);
        async move {
            let took = if again {
                Duration::from_millis(1)
            } else {
                first
            };
            tokio::time::sleep(took).await;
            Ok::<_, std::io::Error>(req)
        }
    }));
    let mut latencies = Vec::new();
    for i in 0..15 {
        let start = Instant::now();
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
        latencies.push(start.elapsed());
        // Whole milliseconds apart, as the timer's ticks are.
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    (
        calls.load(Ordering::SeqCst),
        budget.snapshot().spent,
        latencies,
    )
}

#[tokio::test(start_paused = true)]
async fn an_answer_at_the_hedge_deadline_wins_without_a_hedge() {
    // Due in the deadline's own tick: the answer is seen before the timer, no hedge is sent.
    let (calls, spent, latencies) = hedged(Duration::from_millis(10)).await;
    assert_eq!(
        (calls, spent),
        (15, 0),
        "a hedge for an answer due at 10 ms"
    );
    assert!(latencies.iter().all(|&l| l == Duration::from_millis(10)));
    // Due later: every request is hedged at 10 ms, and the hedge's answer at 11 ms wins.
    let (calls, spent, latencies) = hedged(Duration::from_millis(12)).await;
    assert_eq!(
        (calls, spent),
        (30, 15),
        "no hedge for answers due at 12 ms"
    );
    assert!(latencies.iter().all(|&l| l == Duration::from_millis(11)));
}
