//! Balances 2,000 requests over four replicas, one slow and one failing fast, on paused time
//! (so it finishes at once), then prints what the balancer saw.
//!
//! ```text
//! cargo run -p tollgate-balance --example balance
//! ```

use std::time::Duration;
use tollgate_balance::{Balance, BalanceConfig};
use tower::{ServiceExt, service_fn};

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), tollgate_core::BoxError> {
    let replica = |ms: u64, fails: bool| {
        service_fn(move |req: u32| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if fails {
                Err(std::io::Error::other("replica down"))
            } else {
                Ok(req)
            }
        })
    };
    let balance = Balance::new(
        [
            ("fast", replica(5, false)),
            ("steady", replica(8, false)),
            ("slow", replica(80, false)),
            ("broken", replica(1, true)),
        ],
        BalanceConfig {
            seed: Some(1),
            ..Default::default()
        },
    )?;
    let handle = balance.handle();

    // 2,000 requests, one every millisecond, each in its own task.
    let mut tasks = Vec::new();
    for i in 0..2_000 {
        tasks.push(tokio::spawn(balance.clone().oneshot(i)));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut failed = 0;
    for t in tasks {
        if t.await?.is_err() {
            failed += 1;
        }
    }

    println!("{failed} of 2000 requests failed");
    println!(
        "{:<8} {:>9} {:>10} {:>7} {:>9}",
        "endpoint", "state", "latency", "share", "failures"
    );
    for e in handle.endpoints() {
        println!(
            "{:<8} {:>9} {:>10.1?} {:>6.1}% {:>9}",
            e.key,
            format!("{:?}", e.state),
            e.latency,
            e.share * 100.0,
            e.failures
        );
    }
    Ok(())
}
