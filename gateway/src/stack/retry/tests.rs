//! Unit tests of the gateway's retry policy and section; the retries themselves are tested end
//! to end in `tests/retry.rs`.

use super::*;
use crate::config::retry::RetrySection;
use http::Method;

fn policy(f: impl FnOnce(&mut RetrySection)) -> GwPolicy {
    let mut s = RetrySection::default();
    f(&mut s);
    GwPolicy::new(&s)
}

/// Whether a request with `method` (and no `Idempotency-Key`) may be sent twice.
fn req(method: Method) -> bool {
    idempotent(&Request::builder().method(method).body(()).unwrap())
}

fn res(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
    let mut b = http::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn connect_refused() -> BoxError {
    Box::new(UpstreamError::Connect(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )))
}

#[test]
fn a_503_is_retried_for_idempotent_requests_only() {
    let p = policy(|_| {});
    assert_eq!(
        p.classify_response(req(Method::GET), &res(503, &[])),
        Action::Retry
    );
    assert_eq!(
        p.classify_response(req(Method::POST), &res(503, &[])),
        Action::Return
    );
    let keyed = Request::post("/")
        .header("idempotency-key", "k1")
        .body(())
        .unwrap();
    assert_eq!(
        p.classify_response(idempotent(&keyed), &res(503, &[])),
        Action::Retry
    );
    assert_eq!(
        p.classify_response(req(Method::GET), &res(500, &[])),
        Action::Return,
        "5xx is not in the default retry_on"
    );
    let lax = policy(|s| s.non_idempotent = true);
    assert_eq!(
        lax.classify_response(req(Method::POST), &res(503, &[])),
        Action::Retry
    );
}

#[test]
fn pushback_replaces_the_backoff_and_a_negative_one_stops() {
    let p = policy(|_| {});
    assert_eq!(
        p.classify_response(req(Method::GET), &res(503, &[("retry-after", "2")])),
        Action::RetryAfter(Duration::from_secs(2))
    );
    assert_eq!(
        p.classify_response(
            req(Method::POST),
            &res(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "150")]
            )
        ),
        Action::RetryAfter(Duration::from_millis(150)),
        "gRPC UNAVAILABLE is retried whatever the method"
    );
    assert_eq!(
        p.classify_response(
            req(Method::POST),
            &res(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")]
            )
        ),
        Action::Return
    );
    assert_eq!(
        p.classify_response(req(Method::POST), &res(200, &[("grpc-status", "13")])),
        Action::Return,
        "INTERNAL is not in grpc_codes"
    );
    let mut given_up = res(503, &[]);
    given_up.extensions_mut().insert(Exhausted);
    assert_eq!(
        p.classify_response(req(Method::GET), &given_up),
        Action::Return,
        "an inner layer gave up on it already"
    );
}

#[test]
fn non_idempotent_requests_are_retried_only_when_nothing_was_sent() {
    let p = policy(|_| {});
    assert_eq!(
        p.classify_error(req(Method::POST), &connect_refused()),
        Action::Retry
    );
    let reset: BoxError = Box::new(TryTimedOut);
    assert_eq!(p.classify_error(req(Method::POST), &reset), Action::Return);
    assert_eq!(p.classify_error(req(Method::GET), &reset), Action::Retry);
    let off = policy(|s| s.retry_on = vec![RetryOn::Timeout]);
    assert_eq!(
        off.classify_error(req(Method::GET), &connect_refused()),
        Action::Return
    );
    let rejected: BoxError = Box::new(tollgate_balance::NoEndpoints::new());
    assert_eq!(
        p.classify_error(req(Method::GET), &rejected),
        Action::Return
    );
}

#[test]
fn only_a_body_held_whole_is_copied() {
    let p = policy(|_| {});
    let mut held = Request::put("/x")
        .header("a", "b")
        .body(GwBody::Right(Full::new(Bytes::from_static(b"hi"))))
        .unwrap();
    held.set_attempt(Attempt::first());
    let copy = Policy::<UpRequest, UpResponse>::clone_request(&p, &held).unwrap();
    assert_eq!(copy.method(), Method::PUT);
    assert_eq!(copy.headers()["a"], "b");
    assert!(copy.attempt().is_some(), "extensions are copied");
}

#[tokio::test]
async fn a_body_the_gateway_holds_stays_replayable() {
    let policy = RetryPolicy::new(&RetrySection {
        replay_limit_bytes: 4,
        ..RetrySection::default()
    })
    .unwrap();
    let small = Request::post("/")
        .body(GwBody::Right(Full::new(Bytes::from_static(b"abc"))))
        .unwrap();
    let out = policy.replayable(small).await.unwrap();
    assert!(matches!(out.body(), GwBody::Right(_)));
    let bytes = out.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"abc");
}

#[test]
fn validation_names_the_field() {
    let cases: Vec<(&str, RetrySection)> = vec![
        (
            "budget_percent",
            RetrySection {
                budget_percent: 150.0,
                ..RetrySection::default()
            },
        ),
        (
            "attempts",
            RetrySection {
                attempts: 8,
                ..RetrySection::default()
            },
        ),
        (
            "attempts",
            RetrySection {
                attempts: 0,
                hedge: Some(Default::default()),
                ..RetrySection::default()
            },
        ),
        (
            "grpc_codes[1]",
            RetrySection {
                grpc_codes: vec![14, 17],
                ..RetrySection::default()
            },
        ),
        (
            "hedge.percentile",
            RetrySection {
                hedge: Some(tollgate_retry::HedgeConfig {
                    percentile: Some(0.2),
                    ..Default::default()
                }),
                ..RetrySection::default()
            },
        ),
        (
            "backoff.max",
            RetrySection {
                backoff: tollgate_retry::BackoffConfig {
                    base: Duration::from_secs(2),
                    max: Duration::from_secs(1),
                },
                ..RetrySection::default()
            },
        ),
        (
            "replay_limit_bytes",
            RetrySection {
                replay_limit_bytes: usize::MAX,
                ..RetrySection::default()
            },
        ),
    ];
    for (field, section) in cases {
        assert_eq!(
            section.validate("clusters[0].retry").unwrap_err().field,
            format!("clusters[0].retry.{field}"),
            "{section:?}"
        );
    }
    assert!(RetrySection::default().validate("x").is_ok());
}

#[test]
fn the_section_reads_the_layers_hedge_and_backoff_config() {
    let s: RetrySection = toml::from_str(
        r#"
        attempts = 1
        backoff = { base = "10ms", max = "100ms" }
        hedge = { percentile = 0.9, min_delay = "5ms" }
        "#,
    )
    .unwrap();
    let c = s.retry_config();
    assert_eq!(c.max_attempts, 2);
    assert_eq!(c.backoff.base, Duration::from_millis(10));
    let h = c.hedge.unwrap();
    assert_eq!(h.percentile, Some(0.9));
    assert_eq!(h.min_delay, Duration::from_millis(5));
    assert!(s.validate("x").is_ok());
}
