//! Unit tests of batch routes: validation, joining and splitting, errors as answers.

use super::*;
use crate::pool::UpstreamError;
use tollgate_batch::Overflow;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn text(bytes: &[Bytes]) -> Vec<&str> {
    bytes
        .iter()
        .map(|b| std::str::from_utf8(b).unwrap())
        .collect()
}

#[test]
fn default_section_is_valid() {
    assert_eq!(BatchSection::default().validate("routes[0].batch"), Ok(()));
}

#[test]
fn validation_names_the_field() {
    let cases: Vec<(&str, BatchSection)> = vec![
        (
            "upstream_path",
            BatchSection {
                upstream_path: "batch".into(),
                ..Default::default()
            },
        ),
        (
            "upstream_path",
            BatchSection {
                upstream_path: "http://x/batch".into(),
                ..Default::default()
            },
        ),
        (
            "upstream_path",
            BatchSection {
                upstream_path: "/a b".into(),
                ..Default::default()
            },
        ),
        (
            "max_items",
            BatchSection {
                max_items: 0,
                ..Default::default()
            },
        ),
        (
            "max_items",
            BatchSection {
                max_items: 10_001,
                ..Default::default()
            },
        ),
        (
            "max_linger_ms",
            BatchSection {
                max_linger_ms: 60_001,
                ..Default::default()
            },
        ),
        (
            "max_body_bytes",
            BatchSection {
                max_body_bytes: 0,
                ..Default::default()
            },
        ),
        (
            "max_response_bytes",
            BatchSection {
                max_response_bytes: 1,
                ..Default::default()
            },
        ),
        (
            "max_in_flight",
            BatchSection {
                max_in_flight: 0,
                ..Default::default()
            },
        ),
        (
            "queue_capacity",
            BatchSection {
                queue_capacity: 0,
                ..Default::default()
            },
        ),
        (
            "timeout_ms",
            BatchSection {
                timeout_ms: 0,
                ..Default::default()
            },
        ),
    ];
    for (field, section) in cases {
        let err = section.validate("routes[3].batch").unwrap_err();
        assert_eq!(err.field, format!("routes[3].batch.{field}"), "{section:?}");
        assert!(!err.problem.is_empty());
    }
    let ok = BatchSection {
        upstream_path: "/v1/batch?mode=all".into(),
        max_linger_ms: 0,
        ..Default::default()
    };
    assert_eq!(ok.validate("x"), Ok(()));
}

#[test]
fn section_parses_from_toml_with_defaults() {
    let s: BatchSection =
        toml::from_str("upstream_path = \"/b\"\nmax_items = 8\nqueue_capacity = 16").unwrap();
    assert_eq!(s.upstream_path, "/b");
    assert_eq!(s.max_items, 8);
    assert_eq!(s.queue_capacity, 16);
    assert_eq!(s.max_linger_ms, BatchSection::default().max_linger_ms);
    assert!(toml::from_str::<BatchSection>("max_itemz = 3").is_err());
    let c = s.to_config();
    assert_eq!(c.max_items, 8);
    assert_eq!(c.overflow, Overflow::Reject);
}

#[test]
fn join_then_split_gives_the_items_back() {
    let items = [
        b("{\"id\": 1, \"s\": \"a,]b\"}"),
        b("  [1, [2, 3], {\"x\": null}]\n"),
        b("\"str\\\"ing\""),
        b("-1.5e3"),
        b("true"),
        b("null"),
        b("{}"),
    ];
    let joined = join_array(&items);
    let value: serde_json::Value = serde_json::from_slice(&joined).unwrap();
    assert_eq!(value.as_array().unwrap().len(), items.len());
    let parts = split_array(&joined, items.len()).unwrap();
    for (part, item) in parts.iter().zip(&items) {
        assert_eq!(part.as_ref(), item.trim_ascii());
    }
    assert_eq!(join_array(&[]).as_ref(), b"[]");
    assert!(split_array(&b(" [ ] "), 0).unwrap().is_empty());
}

#[test]
fn split_checks_shape_and_length() {
    let parts = split_array(&b("\n[ 1 ,2,\t{\"a\":[3]} ]\r\n"), 3).unwrap();
    assert_eq!(text(&parts), ["1", "2", "{\"a\":[3]}"]);
    match split_array(&b("[1,2]"), 3) {
        Err(BadBatchAnswer::LengthMismatch { sent: 3, got: 2 }) => {}
        other => panic!("{other:?}"),
    }
    match split_array(&b("[1,2,3,4]"), 3) {
        Err(BadBatchAnswer::LengthMismatch { sent: 3, got: 4 }) => {}
        other => panic!("{other:?}"),
    }
    for bad in [
        "", "{}", "1", "[1,", "[1 2]", "[1,]", "[,1]", "[1]x", "[1][2]", "[tru]", "[1x]",
        "[\"a\"b]", "[{]", "[1,2",
    ] {
        assert!(
            matches!(split_array(&b(bad), 1), Err(BadBatchAnswer::NotAnArray(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    // serde skips an ignored value without recursion, so depth costs no stack.
    let inner = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let parts = split_array(&Bytes::from(format!("[{inner}]")), 1).unwrap();
    assert_eq!(parts[0].len(), inner.len());
    let unclosed = format!("[{}]", "[".repeat(100_000));
    assert!(split_array(&Bytes::from(unclosed), 1).is_err());
}

#[tokio::test]
async fn items_are_checked_and_capped() {
    let h = http::HeaderMap::new();
    let ok = read_item(&h, Full::new(b("{\"id\": 7}")), 64).await;
    assert_eq!(ok.unwrap().as_ref(), b"{\"id\": 7}");
    for bad in ["", "{", "{\"a\":1} x", "nope", "[1,]"] {
        let r = read_item(&h, Full::new(b(bad)), 64).await;
        assert_eq!(r, Err(BadItem::NotJson), "{bad:?}");
    }
    let big = read_item(&h, Full::new(b("[1,2,3,4,5,6,7,8,9]")), 8).await;
    assert_eq!(big, Err(BadItem::TooLarge));
    let mut declared = http::HeaderMap::new();
    declared.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100000"));
    let r = read_item(&declared, Full::new(b("1")), 64).await;
    assert_eq!(r, Err(BadItem::TooLarge));
}

#[tokio::test]
async fn answers_over_the_cap_fail() {
    let r = read_capped(Full::new(b("[1,2,3]")), 4).await;
    assert!(matches!(r, Err(BadBatchAnswer::TooLarge { limit: 4 })));
    let r = read_capped(Full::new(b("[1,2,3]")), 7).await;
    assert_eq!(r.unwrap().as_ref(), b"[1,2,3]");
}

#[test]
fn the_request_is_one_post_of_the_array() {
    let req = batch_request("/batch?x=1".parse().unwrap(), &[b("1"), b("{\"a\":2}")]);
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri(), "/batch?x=1");
    assert_eq!(req.headers()[header::CONTENT_TYPE], "application/json");
    let GwBody::Right(body) = req.into_body() else {
        panic!("a built body");
    };
    let bytes = futures_bytes(body);
    assert_eq!(bytes.as_ref(), b"[1,{\"a\":2}]");
}

fn futures_bytes(body: Full<Bytes>) -> Bytes {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(body.collect()).unwrap().to_bytes()
}

fn status_of(err: BoxError) -> (StatusCode, Option<String>) {
    let r = error_answer(&err);
    let retry = r
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    (r.status(), retry)
}

#[test]
fn every_failure_has_its_answer() {
    let answered = BatchAnswerStatus {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: b("{\"error\":1}"),
    };
    let r = error_answer(&BoxError::from(answered));
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");

    let timed_out = BatchTimedOut(Duration::from_millis(10));
    assert_eq!(status_of(timed_out.into()).0, StatusCode::GATEWAY_TIMEOUT);
    let short = BadBatchAnswer::LengthMismatch { sent: 3, got: 2 };
    assert_eq!(status_of(short.into()).0, StatusCode::BAD_GATEWAY);
    let refused = UpstreamError::Connect(std::io::ErrorKind::ConnectionRefused.into());
    assert_eq!(status_of(refused.into()).0, StatusCode::BAD_GATEWAY);
    assert_eq!(
        status_of(UpstreamError::ConnectTimeout.into()).0,
        StatusCode::GATEWAY_TIMEOUT
    );
    let full = status_of(tollgate_batch::QueueFull::new().into());
    assert_eq!(full, (StatusCode::SERVICE_UNAVAILABLE, Some("1".into())));
    let closed = tollgate_core::error::Closed::new();
    assert_eq!(status_of(closed.into()).0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status_of("odd".into()).0, StatusCode::BAD_GATEWAY);
}
