//! Batching key lookups, DataLoader style.
//!
//! A "user store" answers many ids in one call (think `SELECT ... WHERE id IN (...)`). Two
//! hundred concurrent lookups over 40 distinct users become a handful of store calls: the
//! layer gathers requests while a call is in flight, folds duplicate ids, and hands every
//! caller its own answer. Run with `cargo run -p tollgate-batch --example batch`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tollgate_batch::{BatchConfig, BatchLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tollgate_core::BoxError> {
    let store_calls = Arc::new(AtomicUsize::new(0));
    let counter = store_calls.clone();
    // The store: one call answers many ids, keyed by id; each call costs 5 ms.
    let store = service_fn(move |ids: Vec<u32>| {
        // Relaxed: a statistic printed at the end.
        counter.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let rows: HashMap<u32, Result<String, Infallible>> = ids
                .into_iter()
                .map(|id| (id, Ok(format!("user #{id}"))))
                .collect();
            Ok::<_, Infallible>(rows)
        }
    });

    let config = BatchConfig {
        max_items: 100,
        max_linger: Duration::from_millis(2),
        max_in_flight: 2,
        ..BatchConfig::default()
    };
    let users = ServiceBuilder::new()
        // Gather single lookups into store calls; the same id twice in a batch is loaded once.
        .layer(BatchLayer::new(config)?.with_folding())
        .service(store);

    let lookups: Vec<_> = (0..200u32)
        .map(|i| {
            let users = users.clone();
            tokio::spawn(async move { (i % 40, users.oneshot(i % 40).await) })
        })
        .collect();
    for task in lookups {
        let (id, name) = task.await?;
        assert_eq!(name?, format!("user #{id}"));
    }

    let snap = users.handle().snapshot();
    println!(
        "200 lookups -> {} store calls ({} ids sent, mean batch {:.1}, largest {}); flushes {:?}",
        store_calls.load(Ordering::Relaxed),
        snap.items,
        snap.mean_batch_size(),
        snap.max_batch_size,
        snap.flushes,
    );
    users.handle().shutdown().await;
    Ok(())
}
