//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses some of them

use std::future::Future;
use std::time::Duration;
use tokio::time::{sleep, timeout};
use tollgate_breaker::{BreakerConfig, Open, SlidingWindow};
use tollgate_core::BoxError;
use tower::{Service, ServiceExt, service_fn};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Req {
    Ok,
    Fail,
    Status(u16),
    Slow(Duration),
}

pub(crate) type Backend = tower::util::ServiceFn<
    fn(Req) -> std::pin::Pin<Box<dyn Future<Output = Result<u16, BoxError>> + Send>>,
>;

pub(crate) fn backend() -> Backend {
    service_fn(|r: Req| {
        Box::pin(async move {
            match r {
                Req::Ok => Ok(200),
                Req::Fail => Err("backend failed".into()),
                Req::Status(s) => Ok(s),
                Req::Slow(d) => {
                    sleep(d).await;
                    Ok(200)
                }
            }
        }) as std::pin::Pin<Box<dyn Future<Output = Result<u16, BoxError>> + Send>>
    })
}

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

pub(crate) async fn send<S, R, T>(svc: &mut S, r: R) -> Result<T, BoxError>
where
    S: Service<R, Response = T, Error = BoxError>,
{
    timeout(HOUR, async { svc.ready().await?.call(r).await })
        .await
        .expect("answered within a virtual hour")
}

pub(crate) fn open_err<T: std::fmt::Debug>(r: Result<T, BoxError>) -> Open {
    let e = r.expect_err("expected a rejection");
    e.downcast_ref::<Open>()
        .unwrap_or_else(|| panic!("expected Open, got {e}"))
        .clone()
}

pub(crate) fn quick_trip(probes: u32) -> BreakerConfig {
    BreakerConfig {
        sliding_window: SlidingWindow::Count { size: 4 },
        minimum_calls: 4,
        wait_in_open: Duration::from_secs(10),
        permitted_calls_in_half_open: probes,
        seed: Some(3),
        ..BreakerConfig::default()
    }
}
