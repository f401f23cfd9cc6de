//! The policy's unit tests: parsing, validation, tickets, and admission over a mock service.

use super::ticket::{Rules, ip_key};
use super::*;
use crate::config::admission::{ClassSection, RateLimitHeaders};
use crate::config::admission::{MAX_COUNT, MAX_MS, Net, default_classes};
use http::Request;
use std::sync::Mutex;
use tokio::time::Instant;
use tollgate::http::Rejection;
use tollgate_admission::Key;
use tollgate_admission::Rejected;
use tollgate_core::redis::RedisConfig;

const FULL: &str = r#"
    name = "default"
    limit = 2
    classes = ["critical", { name = "high", max_queued = 4, reserved = 1 }, "normal", "low"]
    default_class = "normal"
    class_header = "x-priority"
    max_queued = 8
    queue_timeout_ms = 500
    codel_target_ms = 20
    deadline_header = "x-request-timeout-ms"
    client_classes = [{ cidr = "10.0.0.0/8", class = "high" }, { cidr = "::1", class = "low" }]
    rate_limit = { burst = 2, period_ms = 1000, key = "header:x-api-key" }
"#;

pub(super) fn section(text: &str) -> AdmissionSection {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

pub(super) fn ctx(ip: &str, route: Option<&str>) -> AdmitCtx {
    AdmitCtx {
        client: ip.parse().unwrap(),
        route_class: route.map(Arc::from),
    }
}

pub(super) fn req(headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::get("/");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

#[test]
fn the_full_form_parses_and_round_trips() {
    let s = section(FULL);
    s.validate("admission[0]").unwrap();
    assert_eq!(s.classes.len(), 4);
    assert_eq!(
        s.classes[1],
        ClassSection {
            max_queued: 4,
            reserved: 1,
            ..ClassSection::named("high")
        }
    );
    assert!(s.has_class("HIGH") && !s.has_class("gold"));
    let back: AdmissionSection = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);

    let d = section("name = \"d\"");
    d.validate("a").unwrap();
    assert_eq!((d.limit, d.max_queued, d.queue_timeout_ms), (64, 256, 100));
    assert_eq!(d.classes, default_classes());
    assert!(d.grpc_timeout && d.adaptive_lifo && d.class_header.is_none());

    for bad in [
        "name = \"d\"\nlimt = 3",
        "name = \"d\"\nclasses = [{ name = \"a\", queue = 3 }]",
        "name = \"d\"\nclasses = [3]",
        "name = \"d\"\nrate_limit = { burst = 1, period_ms = 1, keys = \"x\" }",
        "name = \"d\"\nrate_limit = { burst = 1, period_ms = 1, headers = \"some\" }",
        "name = \"d\"\nrate_limit = { burst = 1, period_ms = 1, redis = { url = \"redis://h\", timeout = \"1s\" } }",
        "limit = 3",
    ] {
        assert!(toml::from_str::<AdmissionSection>(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_shared_quota_reads_the_one_redis_shape() {
    let s = section(
        "name = \"d\"\nrate_limit = { burst = 10, period_ms = 1000, headers = \"none\", \
         redis = { url = \"redis://127.0.0.1:6379\", response_timeout = \"20ms\", cooldown = \"2s\" } }",
    );
    s.validate("a").unwrap();
    let r = s.rate_limit.as_ref().unwrap();
    assert_eq!(r.headers, RateLimitHeaders::None);
    assert_eq!(
        r.redis,
        Some(RedisConfig {
            response_timeout: Duration::from_millis(20),
            cooldown: Duration::from_secs(2),
            ..RedisConfig::new("redis://127.0.0.1:6379")
        })
    );
    assert_eq!(
        s.to_config().rate_limit.unwrap().redis,
        r.redis,
        "the layer gets the same settings"
    );
    let back: AdmissionSection = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(
        section("name = \"d\"\nrate_limit = { burst = 1, period_ms = 1 }")
            .rate_limit
            .unwrap()
            .headers,
        RateLimitHeaders::Rejected
    );
    assert_eq!(
        section("name = \"d\"\nrate_limit = { burst = 1, period_ms = 1, headers = \"all\" }")
            .rate_limit
            .unwrap()
            .headers,
        RateLimitHeaders::All
    );
}

#[test]
#[allow(clippy::type_complexity)]
fn bad_fields_are_named() {
    let cases: Vec<(&str, Box<dyn Fn(&mut AdmissionSection)>)> = vec![
        ("name", Box::new(|s| s.name.clear())),
        ("limit", Box::new(|s| s.limit = 0)),
        ("classes", Box::new(|s| s.classes.clear())),
        (
            "classes[2].name",
            Box::new(|s| s.classes[2].name = "Critical".into()),
        ),
        ("classes[0].name", Box::new(|s| s.classes[0].name.clear())),
        (
            "classes[3].max_queued",
            Box::new(|s| s.classes[3].max_queued = MAX_COUNT + 1),
        ),
        ("classes", Box::new(|s| s.classes[0].reserved = 3)),
        ("classes", Box::new(|s| s.classes[2].headroom = 2)),
        (
            "default_class",
            Box::new(|s| s.default_class = Some("gold".into())),
        ),
        (
            "class_header",
            Box::new(|s| s.class_header = Some("x prio".into())),
        ),
        ("max_queued", Box::new(|s| s.max_queued = MAX_COUNT + 1)),
        ("codel_target_ms", Box::new(|s| s.codel_target_ms = 0)),
        ("codel_target_ms", Box::new(|s| s.codel_target_ms = 10_001)),
        ("queue_timeout_ms", Box::new(|s| s.queue_timeout_ms = 10)),
        (
            "queue_timeout_ms",
            Box::new(|s| s.queue_timeout_ms = MAX_MS + 1),
        ),
        (
            "deadline_header",
            Box::new(|s| s.deadline_header = Some(String::new())),
        ),
        (
            "client_classes[1].cidr",
            Box::new(|s| s.client_classes[1].cidr = "::1/129".into()),
        ),
        (
            "client_classes[0].cidr",
            Box::new(|s| s.client_classes[0].cidr = "10.0.0".into()),
        ),
        (
            "client_classes[0].class",
            Box::new(|s| s.client_classes[0].class = "x".into()),
        ),
        (
            "rate_limit.burst",
            Box::new(|s| s.rate_limit.as_mut().unwrap().burst = 0),
        ),
        (
            "rate_limit.period_ms",
            Box::new(|s| s.rate_limit.as_mut().unwrap().period_ms = 0),
        ),
        (
            "rate_limit.key",
            Box::new(|s| s.rate_limit.as_mut().unwrap().key = "ip".into()),
        ),
        (
            "rate_limit.key",
            Box::new(|s| s.rate_limit.as_mut().unwrap().key = "header:".into()),
        ),
        (
            "rate_limit.max_keys",
            Box::new(|s| s.rate_limit.as_mut().unwrap().max_keys = 0),
        ),
        (
            "rate_limit.redis.url",
            Box::new(|s| s.rate_limit.as_mut().unwrap().redis = Some(RedisConfig::new("h:6379"))),
        ),
        (
            "rate_limit.redis.response_timeout",
            Box::new(|s| {
                s.rate_limit.as_mut().unwrap().redis = Some(RedisConfig {
                    response_timeout: Duration::ZERO,
                    ..RedisConfig::new("redis://127.0.0.1:6379")
                })
            }),
        ),
        (
            "rate_limit.redis.failures",
            Box::new(|s| {
                s.rate_limit.as_mut().unwrap().redis = Some(RedisConfig {
                    failures: 0,
                    ..RedisConfig::new("redis://127.0.0.1:6379")
                })
            }),
        ),
    ];
    for (field, edit) in cases {
        let mut s = section(FULL);
        edit(&mut s);
        let err = s.validate("admission[3]").unwrap_err();
        assert_eq!(err.field, format!("admission[3].{field}"), "{err:?}");
        assert!(!err.problem.is_empty());
        let built = AdmissionPolicy::build(&s, None).unwrap_err();
        assert_eq!(
            built.field, field,
            "build names the field relative to the section"
        );
    }
}

#[test]
fn networks_match_their_addresses() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap().to_canonical();
    let n = Net::parse("10.0.0.0/8").unwrap();
    assert!(n.contains(ip("10.255.0.1")) && !n.contains(ip("11.0.0.1")));
    assert!(
        n.contains(ip("::ffff:10.1.2.3")),
        "IPv4-mapped clients match IPv4 rules"
    );
    assert!(!n.contains(ip("::1")));
    assert_eq!(Net::parse("10.1.2.3/8").unwrap(), n, "host bits are masked");
    let one = Net::parse("192.0.2.7").unwrap();
    assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
    let v6 = Net::parse("fd00::/8").unwrap();
    assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
    assert!(Net::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
    assert!(Net::parse("::/0").unwrap().contains(ip("2001:db8::1")));
    for bad in ["", "10.0.0.0/33", "10.0.0.0/x", "host", "::1/-1"] {
        assert!(Net::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test(start_paused = true)]
async fn tickets_follow_header_then_route_then_client_then_default() {
    let rules = Rules::new(&section(FULL)).unwrap();
    let t =
        |h: &[(&str, &str)], ip: &str, route: Option<&str>| rules.ticket(&req(h), &ctx(ip, route));
    assert_eq!(
        t(&[("x-priority", "CRITICAL")], "10.0.0.1", Some("low")).class,
        0
    );
    assert_eq!(
        t(&[("x-priority", "gold")], "10.0.0.1", Some("low")).class,
        3
    );
    assert_eq!(t(&[], "10.0.0.1", None).class, 1, "client rule");
    assert_eq!(t(&[], "::1", None).class, 3, "exact IPv6 rule");
    assert_eq!(t(&[], "192.0.2.1", None).class, 2, "default class");
    assert_eq!(t(&[], "192.0.2.1", Some("nope")).class, 2);
    let last = Rules::new(&section("name = \"d\"")).unwrap();
    assert_eq!(
        last.ticket(&req(&[("x-priority", "critical")]), &ctx("::1", None))
            .class,
        3
    );

    let now = Instant::now();
    let d = |h: &[(&str, &str)]| t(h, "192.0.2.1", None).deadline;
    assert_eq!(d(&[]), None);
    assert_eq!(
        d(&[("grpc-timeout", "250m")]),
        Some(now + Duration::from_millis(250))
    );
    assert_eq!(
        d(&[("x-request-timeout-ms", "40")]),
        Some(now + Duration::from_millis(40))
    );
    let both = [("grpc-timeout", "1S"), ("x-request-timeout-ms", "70")];
    assert_eq!(
        d(&both),
        Some(now + Duration::from_millis(70)),
        "the sooner wins"
    );
    assert_eq!(d(&[("x-request-timeout-ms", "-4")]), None);
    assert_eq!(d(&[("x-request-timeout-ms", "1234567890123")]), None);
    let off = Rules::new(&section("name = \"d\"\ngrpc_timeout = false")).unwrap();
    let r = req(&[("grpc-timeout", "1S")]);
    assert_eq!(off.ticket(&r, &ctx("::1", None)).deadline, None);

    let k = |h: &[(&str, &str)], ip: &str| t(h, ip, None).key.unwrap();
    assert_eq!(k(&[("x-api-key", "acme")], "10.0.0.1"), Key::from("acme"));
    assert_eq!(k(&[("x-api-key", "acme")], "10.0.0.2"), Key::from("acme"));
    assert_eq!(k(&[], "10.0.0.1"), ip_key("10.0.0.1".parse().unwrap()));
    assert_ne!(k(&[], "10.0.0.1"), k(&[], "10.0.0.2"));
    assert_eq!(
        ip_key("::ffff:65.66.67.68".parse().unwrap()),
        ip_key("65.66.67.68".parse().unwrap())
    );
    assert_ne!(ip_key("65.66.67.68".parse().unwrap()), Key::from("ABCD"));
    let by_ip = Rules::new(&section(
        "name = \"d\"\nrate_limit = { burst = 1, period_ms = 1 }",
    ))
    .unwrap();
    let r = req(&[("x-api-key", "acme")]);
    assert_eq!(
        by_ip.ticket(&r, &ctx("::1", None)).key,
        Some(ip_key("::1".parse().unwrap()))
    );
    assert_eq!(
        Rules::new(&section("name = \"d\""))
            .unwrap()
            .ticket(&r, &ctx("::1", None))
            .key,
        None
    );
}

#[test]
fn an_equal_section_keeps_the_built_policy() {
    let s = section(FULL);
    let a = AdmissionPolicy::build(&s, None).unwrap();
    assert!(Arc::ptr_eq(
        &a,
        &AdmissionPolicy::build(&s, Some(&a)).unwrap()
    ));
    let mut changed = s.clone();
    changed.limit = 3;
    let b = AdmissionPolicy::build(&changed, Some(&a)).unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(
        (a.name(), b.state()["limit"].as_u64()),
        ("default", Some(3))
    );
}

type Log = Arc<Mutex<Vec<String>>>;

/// A policy over an inner service that sleeps `ms` then logs the request's `x-id`.
pub(super) fn policy_and_inner(
    text: &str,
    ms: u64,
) -> (
    Arc<AdmissionPolicy>,
    impl Service<Request<()>, Response = String, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static,
    Log,
) {
    let policy = AdmissionPolicy::build(&section(text), None).unwrap();
    let log = Log::default();
    let l = log.clone();
    let inner = tower::service_fn(move |r: Request<()>| {
        let l = l.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let id = r.headers()["x-id"].to_str().unwrap().to_owned();
            l.lock().unwrap().push(id.clone());
            Ok::<_, BoxError>(id)
        }
    });
    (policy, inner, log)
}

fn rejection(r: Result<String, BoxError>) -> (Rejection, Option<Reason>) {
    let e = r.unwrap_err();
    // A rate-limit rejection comes wrapped in `QuotaSpent` (with the policy's fields).
    let reason = tollgate_core::error::find_cause::<Rejected>(&*e).map(Rejected::reason);
    (Rejection::of(&*e).expect("a known rejection"), reason)
}

const SLOW: &str = r#"
    name = "p"
    limit = 1
    classes = ["high", "low"]
    class_header = "x-priority"
    max_queued = 2
    queue_timeout_ms = 60000
    codel_target_ms = 10000
"#;

#[tokio::test(start_paused = true)]
async fn high_goes_first_and_a_full_queue_sheds_low_then_refuses() {
    let (policy, inner, log) = policy_and_inner(SLOW, 100);
    let c = ctx("192.0.2.1", None);
    let call = |id: &str, class: &str| {
        policy.admit(
            inner.clone(),
            req(&[("x-id", id), ("x-priority", class)]),
            &c,
        )
    };
    let first = tokio::spawn(call("first", "low"));
    tokio::task::yield_now().await;
    let low = tokio::spawn(call("low", "low"));
    let low2 = tokio::spawn(call("low2", "low"));
    tokio::task::yield_now().await;
    // The queue is full (2): a high request sheds the newest low one.
    let high = tokio::spawn(call("high", "high"));
    tokio::task::yield_now().await;
    assert_eq!(policy.state()["queued"], 2);
    // Full of a low and a high: another low is refused at once.
    let refused = call("low3", "low").await;
    assert_eq!(rejection(refused).1, Some(Reason::QueueFull));
    let (r, reason) = rejection(low2.await.unwrap());
    assert_eq!(
        (r.status(), reason),
        (http::StatusCode::SERVICE_UNAVAILABLE, Some(Reason::Shed))
    );
    assert!(r.retry_after_secs().is_some());
    for h in [first, high, low] {
        h.await.unwrap().unwrap();
    }
    assert_eq!(*log.lock().unwrap(), ["first", "high", "low"]);
    let state = policy.state();
    assert_eq!(state["classes"][1]["rejected"]["shed"], 1);
    assert_eq!(state["classes"][1]["rejected"]["queue_full"], 1);
    assert_eq!(state["classes"][0]["admitted"], 1);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || policy.record_metrics());
    let text = recorder.handle().render();
    for line in [
        r#"tollgate_admission_admitted_total{policy="p",class="high"} 1"#,
        r#"tollgate_admission_admitted_total{policy="p",class="low"} 2"#,
        r#"tollgate_admission_rejected_total{policy="p",class="low",reason="shed"} 1"#,
        r#"tollgate_admission_queued{policy="p",class="low"} 0"#,
        r#"tollgate_admission_limit{policy="p"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_is_503_with_retry_after() {
    let text = SLOW.replace("60000", "50").replace("10000", "50");
    let (policy, inner, _) = policy_and_inner(&text, 1000);
    let c = ctx("192.0.2.1", None);
    let busy = tokio::spawn(policy.admit(inner.clone(), req(&[("x-id", "a")]), &c));
    tokio::task::yield_now().await;
    let (r, reason) = rejection(policy.admit(inner, req(&[("x-id", "b")]), &c).await);
    assert_eq!(r.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason, Some(Reason::QueueTimeout));
    assert!(r.retry_after_secs().is_some());
    busy.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_spent_rate_limit_is_429_per_client() {
    let text = "name = \"p\"\nrate_limit = { burst = 2, period_ms = 1000 }";
    let (policy, inner, _) = policy_and_inner(text, 1);
    let a = ctx("192.0.2.1", None);
    for _ in 0..2 {
        policy
            .admit(inner.clone(), req(&[("x-id", "a")]), &a)
            .await
            .unwrap();
    }
    let (r, reason) = rejection(policy.admit(inner.clone(), req(&[("x-id", "a")]), &a).await);
    assert_eq!(
        (r.status(), reason),
        (
            http::StatusCode::TOO_MANY_REQUESTS,
            Some(Reason::RateLimited)
        )
    );
    assert_eq!(r.retry_after_secs(), Some(1));
    let spent = policy
        .admit(inner.clone(), req(&[("x-id", "a")]), &a)
        .await
        .unwrap_err();
    assert!(spent.is::<crate::answer::QuotaSpent>(), "{spent:?}");
    let b = ctx("192.0.2.2", None);
    policy
        .admit(inner.clone(), req(&[("x-id", "b")]), &b)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(500)).await;
    policy
        .admit(inner, req(&[("x-id", "a")]), &a)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn deadlines_cut_calls_and_refuse_the_hopeless() {
    let text = "name = \"p\"\ndeadline_header = \"x-request-timeout-ms\"";
    let (policy, inner, log) = policy_and_inner(text, 1000);
    let c = ctx("192.0.2.1", None);
    // Cut at the deadline; each cut call also teaches the policy calls take that long.
    for (h, ms) in [
        (("grpc-timeout", "50m"), 50),
        (("x-request-timeout-ms", "100"), 100),
    ] {
        let started = Instant::now();
        let (r, _) = rejection(
            policy
                .admit(inner.clone(), req(&[("x-id", "a"), h]), &c)
                .await,
        );
        assert_eq!(r.status(), http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(started.elapsed(), Duration::from_millis(ms));
    }
    // Spent, or too short for what calls take: refused at once.
    for ms in ["0", "30"] {
        let started = Instant::now();
        let r = req(&[("x-id", "a"), ("x-request-timeout-ms", ms)]);
        let (r, reason) = rejection(policy.admit(inner.clone(), r, &c).await);
        assert_eq!(
            (r.status(), reason),
            (http::StatusCode::GATEWAY_TIMEOUT, Some(Reason::Deadline))
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
    assert!(log.lock().unwrap().is_empty());
    let ok = req(&[("x-id", "ok"), ("x-request-timeout-ms", "5000")]);
    assert_eq!(policy.admit(inner, ok, &c).await.unwrap(), "ok");
}
