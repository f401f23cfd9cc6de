//! An endpoint that answers 429 with `Retry-After` gets a lower share for that long.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_balance::{Balance, BalanceConfig, OutlierConfig};
use tollgate_core::classify::ServerErrorsAreFailures;
use tower::{Service, ServiceExt};

type Res = http::Response<u8>;

/// Answers with its name after 1 ms; once told, its next answer is a 429 with
/// `Retry-After: 30`.
#[derive(Clone, Debug)]
struct Endpoint {
    name: u8,
    throttle_next: Arc<AtomicBool>,
}

impl Service<()> for Endpoint {
    type Response = Res;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Res, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let throttled = self.throttle_next.swap(false, Ordering::SeqCst);
        let name = self.name;
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let mut res = http::Response::new(name);
            if throttled {
                *res.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                res.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("30"));
            }
            Ok(res)
        })
    }
}

async fn shares(svc: &mut Balance<u8, Endpoint, ServerErrorsAreFailures>, n: usize) -> [usize; 2] {
    let mut counts = [0; 2];
    for _ in 0..n {
        let res = svc.ready().await.unwrap().call(()).await.unwrap();
        counts[usize::from(*res.body())] += 1;
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_lowers_the_share_for_that_long() {
    let throttle = Arc::new(AtomicBool::new(false));
    let a = Endpoint {
        name: 0,
        throttle_next: Arc::new(AtomicBool::new(false)),
    };
    let b = Endpoint {
        name: 1,
        throttle_next: throttle.clone(),
    };
    let config = BalanceConfig {
        seed: Some(11),
        // An endpoint not yet measured looks like the measured ones.
        default_rtt: Duration::from_millis(1),
        outlier: OutlierConfig {
            consecutive_failures: 0,
            success_rate: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut svc = Balance::new([(0, a), (1, b)], config)
        .unwrap()
        .with_classifier(ServerErrorsAreFailures);
    let before = shares(&mut svc, 200).await;
    assert!(before[1] >= 50, "both endpoints share the load: {before:?}");

    // B's next answer asks for 30 s of rest.
    throttle.store(true, Ordering::SeqCst);
    while throttle.load(Ordering::SeqCst) {
        shares(&mut svc, 1).await;
    }
    let during = shares(&mut svc, 200).await;
    assert!(during[1] <= 10, "B asked to back off: {during:?}");
    let stats = svc.handle().endpoints();
    assert!(
        stats.iter().all(|e| e.failures == 0),
        "a 429 is no failure: {stats:?}"
    );

    tokio::time::advance(Duration::from_secs(31)).await;
    let after = shares(&mut svc, 200).await;
    assert!(after[1] >= 50, "B's back-off is over: {after:?}");
}
