//! Many submitters on a multi-threaded runtime: every caller gets exactly its own answer.
//!
//! Real threads, so no paused time; the checks do not depend on timing, and the bound is there
//! only to turn a hang into a failure.

mod common;

use common::Recorder;
use std::time::Duration;
use tollgate_batch::{BatchConfig, BatchLayer, Overflow};
use tower::{Layer, Service, ServiceExt};

async fn hammer(overflow: Overflow, keyed: bool) {
    let rec = Recorder::new(Duration::ZERO);
    let config = BatchConfig {
        max_items: 32,
        max_linger: Duration::from_micros(200),
        max_in_flight: 3,
        queue_capacity: 256,
        overflow,
        ..BatchConfig::default()
    };
    let layer = BatchLayer::new(config).unwrap().with_folding();
    let svc = if keyed {
        layer
            .with_key(|id: &u64| id % 5)
            .layer(rec.clone())
            .boxed_clone()
    } else {
        layer.layer(rec.clone()).boxed_clone()
    };
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let (mut ok, mut rejected) = (0, 0);
                for i in 0..1000u64 {
                    // Every fourth request repeats one, so folding has work to do.
                    let id = if i % 4 == 3 {
                        t * 10_000 + i - 1
                    } else {
                        t * 10_000 + i
                    };
                    let answer = svc.ready().await.unwrap().call(id).await;
                    match answer {
                        Ok(v) => {
                            assert_eq!(v, id * 10);
                            ok += 1;
                        }
                        Err(e) if e.is::<tollgate_batch::QueueFull>() => rejected += 1,
                        Err(e) => panic!("{id}: {e}"),
                    }
                }
                (ok, rejected)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        let (ok, rejected) = t.await.unwrap();
        total += ok + rejected;
    }
    assert_eq!(total, 8 * 1000);
}

async fn bound<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .expect("hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_one_key_backpressure() {
    bound(hammer(Overflow::Wait, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_many_keys_reject() {
    bound(hammer(Overflow::Reject, true)).await;
}
