//! `[tracing]`: W3C trace context continued or started on both HTTP/1.1 paths and HTTP/2, spans
//! exported as OTLP/HTTP protobuf to a local receiver (a loopback server that decodes
//! `POST /v1/traces`), flushed at shutdown; and nothing added with tracing off.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_parent(trace: &str) -> String {
    format!("00-{trace}-{CLIENT_SPAN}-01")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A local OTLP receiver: decodes each `POST /v1/traces` body and keeps its spans, with the
/// `service.name` they came with.
async fn receiver() -> (SocketAddr, Arc<Mutex<Vec<(String, Span)>>>) {
    let spans: Arc<Mutex<Vec<(String, Span)>>> = Arc::default();
    let kept = spans.clone();
    let addr = upstream(move |req: Request<Incoming>| {
        let kept = kept.clone();
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
            for rs in export.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.clone())
                    .map(|v| match v {
                        Value::StringValue(s) => s,
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        kept.lock().unwrap().push((service.clone(), s));
                    }
                }
            }
            text(StatusCode::OK, Bytes::new())
        }
    })
    .await;
    (addr, spans)
}

/// The `traceparent` an inspecting upstream saw (its answer lists the request's headers).
fn seen_traceparent(body: &[u8]) -> Option<String> {
    String::from_utf8_lossy(body)
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: ").map(str::to_owned))
}

async fn get_with(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    url: String,
    traceparent: Option<&str>,
) -> (StatusCode, Bytes) {
    let mut req = Request::get(url);
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "vendor=1");
    }
    let (s, _, b, _) = send(client, req.body(Full::default()).unwrap()).await;
    (s, b)
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.clone())
        .map(|v| match v {
            Value::StringValue(s) => s,
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

/// Checks one continued request: the upstream saw the client's trace with the gateway's span
/// as parent, and the exported request span (child of the client's) has an upstream child.
fn check_continued(spans: &[Span], seen: &str, trace: &str) {
    assert_eq!(
        &seen[..36],
        &format!("00-{trace}-"),
        "same trace upstream: {seen}"
    );
    let gw_span = &seen[36..52];
    assert_ne!(gw_span, CLIENT_SPAN, "a new parent id upstream");
    assert_eq!(&seen[52..], "-01");
    let request = spans
        .iter()
        .find(|s| s.name == "request" && hex(&s.trace_id) == trace)
        .unwrap_or_else(|| panic!("a request span of {trace}: {spans:#?}"));
    assert_eq!(hex(&request.span_id), gw_span);
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(attr(request, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr(request, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(request, "tollgate.cluster").as_deref(), Some("up"));
    let upstream = spans
        .iter()
        .find(|s| s.name == "upstream" && s.parent_span_id == request.span_id)
        .unwrap_or_else(|| panic!("an upstream span under {gw_span}: {spans:#?}"));
    assert_eq!(hex(&upstream.trace_id), trace);
    assert_eq!(
        attr(upstream, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr(upstream, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(upstream.start_time_unix_nano >= request.start_time_unix_nano);
    assert!(upstream.end_time_unix_nano <= request.end_time_unix_nano);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_traces_are_continued_and_exported_on_every_path() {
    bounded(async {
        let (otlp, spans) = receiver().await;
        let up = inspect_upstream().await;
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
             [[routes]]\ncluster = \"up\"\n\
             [tracing]\notlp_endpoint = \"http://{otlp}\"\nservice_name = \"gw-test\"\n"
        )));
        let base = format!("http://{}", addr(&gw));
        let fast_trace = CLIENT_TRACE;
        let hyper_trace = "11111111111111111111111111111111";
        // HTTP/1.1 to a plain route: the fast path.
        let (s, b) = get_with(
            &h1_client(),
            format!("{base}/a"),
            Some(&client_parent(fast_trace)),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let fast_seen = seen_traceparent(&b).expect("traceparent upstream");
        assert!(String::from_utf8_lossy(&b).contains("tracestate: vendor=1"));
        // HTTP/2: the hyper path.
        let (s, b) = get_with(
            &h2_client(),
            format!("{base}/b"),
            Some(&client_parent(hyper_trace)),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let hyper_seen = seen_traceparent(&b).expect("traceparent upstream");
        assert!(String::from_utf8_lossy(&b).contains("tracestate: vendor=1"));
        // No traceparent, and an invalid one: fresh traces.
        let (_, b) = get_with(&h1_client(), format!("{base}/c"), None).await;
        let fresh = seen_traceparent(&b).expect("a new trace upstream");
        let (_, b) = get_with(&h2_client(), format!("{base}/d"), Some("00-zz-00-01")).await;
        let replaced = seen_traceparent(&b).expect("a replaced trace upstream");
        stop(gw).await;

        let spans = spans.lock().unwrap();
        assert!(spans.iter().all(|(svc, _)| svc == "gw-test"));
        let spans: Vec<Span> = spans.iter().map(|(_, s)| s.clone()).collect();
        check_continued(&spans, &fast_seen, fast_trace);
        check_continued(&spans, &hyper_seen, hyper_trace);
        for seen in [&fresh, &replaced] {
            let trace = &seen[3..35];
            assert_ne!(trace, CLIENT_TRACE);
            assert_ne!(trace, "0".repeat(32));
            let request = spans
                .iter()
                .find(|s| s.name == "request" && hex(&s.trace_id) == trace)
                .expect("a request span of the new trace");
            assert!(request.parent_span_id.is_empty(), "a root span");
            assert_eq!(hex(&request.span_id), &seen[36..52]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retry_attempt_is_a_span_with_its_upstream_call() {
    bounded(async {
        let (otlp, spans) = receiver().await;
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let up = upstream(move |_req: Request<Incoming>| {
            let n = c.fetch_add(1, Ordering::Relaxed);
            async move {
                let status = if n == 0 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                };
                text(status, "x")
            }
        })
        .await;
        let gw = start(config(&format!(
            "[[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
             [clusters.retry]\nattempts = 2\nbudget_min_per_s = 1000\nretry_on = [\"5xx\"]\n\
             [[routes]]\ncluster = \"up\"\n\
             [tracing]\notlp_endpoint = \"http://{otlp}/\"\n"
        )));
        let (s, _) = get_with(
            &h1_client(),
            format!("http://{}/", addr(&gw)),
            Some(&client_parent(CLIENT_TRACE)),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        stop(gw).await;
        let spans: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        let request = spans
            .iter()
            .find(|s| s.name == "request")
            .expect("a request span");
        assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
        let attempts: Vec<&Span> = spans
            .iter()
            .filter(|s| s.name == "retry.attempt" && s.parent_span_id == request.span_id)
            .collect();
        assert_eq!(attempts.len(), 2, "{spans:#?}");
        for a in attempts {
            let up = spans
                .iter()
                .find(|s| s.name == "upstream" && s.parent_span_id == a.span_id)
                .expect("each attempt's upstream call");
            let status = attr(up, "http.response.status_code").unwrap();
            assert!(status == "503" || status == "200");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracing_off_adds_no_traceparent() {
    bounded(async {
        let up = inspect_upstream().await;
        let gw = start(config(&single(up, "http1")));
        let base = format!("http://{}", addr(&gw));
        for client in [h1_client(), h2_client()] {
            let (_, b) = get_with(&client, format!("{base}/"), None).await;
            assert_eq!(seen_traceparent(&b), None);
            // The client's own passes through untouched.
            let tp = client_parent(CLIENT_TRACE);
            let (_, b) = get_with(&client, format!("{base}/"), Some(&tp)).await;
            assert_eq!(seen_traceparent(&b), Some(tp));
        }
        stop(gw).await;
    })
    .await;
}

#[test]
fn the_section_is_validated_field_by_field() {
    for (bad, field) in [
        (
            "otlp_endpoint = \"https://127.0.0.1:4318\"",
            "tracing.otlp_endpoint",
        ),
        ("otlp_endpoint = \"\"", "tracing.otlp_endpoint"),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 1.5",
            "tracing.sample_ratio",
        ),
        (
            "otlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"\"",
            "tracing.service_name",
        ),
    ] {
        let text =
            format!("[[listeners]]\nname = \"m\"\nlisten = \"127.0.0.1:0\"\n[tracing]\n{bad}\n");
        let e = tollgate_gateway::config::Config::parse(&text, "t.toml").unwrap_err();
        assert_eq!(e.field, field, "{bad}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admission_wait_is_a_span_with_class_and_outcome() {
    bounded(async {
        let (otlp, spans) = receiver().await;
        let up = inspect_upstream().await;
        let gw = start(config(&format!(
            "[[admission]]\nname = \"rl\"\nclasses = [\"high\", \"low\"]\n\
             rate_limit = {{ burst = 1, period_ms = 60000, key = \"header:x-api-key\" }}\n\
             [[clusters]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
             [[routes]]\ncluster = \"up\"\nadmission = \"rl\"\npriority = \"high\"\n\
             [tracing]\notlp_endpoint = \"http://{otlp}\"\n"
        )));
        let client = h1_client();
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let req = Request::get(format!("http://{}/", addr(&gw)))
                .header("x-api-key", "k")
                .body(Full::default())
                .unwrap();
            statuses.push(send(&client, req).await.0);
        }
        assert_eq!(statuses, [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
        stop(gw).await;
        let spans: Vec<Span> = spans
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        let mut outcomes: Vec<(String, String, u16)> = spans
            .iter()
            .filter(|s| s.name == "admission.wait")
            .map(|w| {
                let request = spans
                    .iter()
                    .find(|r| r.name == "request" && r.span_id == w.parent_span_id)
                    .expect("the wait's request span");
                let status = attr(request, "http.response.status_code").unwrap();
                if status == "429" {
                    assert_eq!(attr(request, "error.type").as_deref(), Some("rejected"));
                    assert!(attr(request, "tollgate.error").is_some());
                }
                (
                    attr(w, "tollgate.admission.class").unwrap(),
                    attr(w, "tollgate.admission.outcome").unwrap(),
                    status.parse().unwrap(),
                )
            })
            .collect();
        outcomes.sort_by_key(|o| o.2);
        assert_eq!(outcomes.len(), 2, "{spans:#?}");
        assert_eq!(outcomes[0], ("high".into(), "admitted".into(), 200));
        assert_eq!(outcomes[1].0, "high");
        assert_eq!(outcomes[1].1, "rate_limited");
        assert_eq!(outcomes[1].2, 429);
    })
    .await;
}
