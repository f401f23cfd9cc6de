use super::*;
use tollgate_core::error::{Closed, DeadlineExceeded, Overloaded, Panicked, RateLimited};

#[derive(Debug)]
struct Wrapped(BoxError);
impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrapped")
    }
}
impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

fn of(e: impl Error + Send + Sync + 'static) -> Option<Rejection> {
    let boxed: BoxError = Box::new(Wrapped(Box::new(e)));
    Rejection::of(&*boxed)
}

#[test]
fn retry_after_rounds_up_and_is_never_zero() {
    let secs = |d: Option<Duration>| Rejection::Overloaded { retry_after: d }.retry_after_secs();
    assert_eq!(secs(None), Some(1));
    assert_eq!(secs(Some(Duration::ZERO)), Some(1));
    assert_eq!(secs(Some(Duration::from_millis(1))), Some(1));
    assert_eq!(secs(Some(Duration::from_secs(2))), Some(2));
    assert_eq!(secs(Some(Duration::from_millis(2001))), Some(3));
    assert_eq!(Rejection::DeadlineExceeded.retry_after_secs(), None);
}

#[test]
fn known_errors_map_through_wrappers() {
    let r = of(Overloaded::new(Some(Duration::from_millis(10)))).unwrap();
    assert_eq!(
        (r.status(), r.retry_after_secs()),
        (StatusCode::SERVICE_UNAVAILABLE, Some(1))
    );
    let r = of(RateLimited::new(Duration::from_secs(3))).unwrap();
    assert_eq!(
        (r.status(), r.retry_after_secs()),
        (StatusCode::TOO_MANY_REQUESTS, Some(3))
    );
    assert_eq!(
        of(DeadlineExceeded::new()).unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        of(Closed::new()).unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        of(tower::load_shed::error::Overloaded::new())
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(of(Panicked::from_payload(&"boom")), None);
    assert_eq!(of(std::io::Error::other("x")), None);
}

#[test]
fn responses_carry_status_header_and_body() {
    let res: Response<String> = Rejection::RateLimited {
        retry_after: Duration::from_millis(200),
    }
    .to_response();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()[RETRY_AFTER], "1");
    assert_eq!(res.body(), "rate limit exceeded\n");
    let res: Response<String> = Rejection::DeadlineExceeded.to_response();
    assert_eq!(res.status(), 504);
    assert!(!res.headers().contains_key(RETRY_AFTER));
}

#[tokio::test]
async fn fallbacks_decide_other_errors() {
    use tower::ServiceExt;
    let failing = tower::service_fn(|fail: bool| async move {
        if fail {
            Err::<Response<String>, BoxError>("boom".into())
        } else {
            Err(Box::new(Overloaded::new(None)) as BoxError)
        }
    });
    let svc = RejectionLayer::http().layer(failing);
    assert_eq!(svc.clone().oneshot(true).await.unwrap().status(), 500);
    assert_eq!(svc.oneshot(false).await.unwrap().status(), 503);
    let svc = RejectionLayer::http().pass_through().layer(failing);
    assert_eq!(svc.oneshot(true).await.unwrap_err().to_string(), "boom");
    let svc = RejectionLayer::http()
        .fallback(|e: BoxError| Response::new(e.to_string()))
        .layer(failing);
    assert_eq!(svc.oneshot(true).await.unwrap().body(), "boom");
}

#[tokio::test]
async fn a_poll_ready_rejection_is_answered_by_call() {
    use tower::ServiceExt;
    let svc = RejectionLayer::http().layer(FailsReady);
    let res = svc.oneshot(()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()[RETRY_AFTER], "3");
}

/// Rejects in `poll_ready`, and panics if called anyway.
#[derive(Clone)]
struct FailsReady;
impl Service<()> for FailsReady {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err(Box::new(Overloaded::new(Some(Duration::from_millis(
            2500,
        ))))))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        panic!("called after a failed poll_ready")
    }
}
