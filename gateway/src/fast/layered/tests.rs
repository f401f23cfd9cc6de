use super::*;
use http_body_util::Either;

fn to(head_method: bool, close: bool) -> To {
    To {
        head_method,
        close,
        trailers: false,
        idle: Duration::from_secs(1),
    }
}

/// The head written for `resp`, with its `date` line taken out, and the framing.
fn head_of(resp: Response<RespBody>, to: To) -> (String, Framing) {
    let (parts, body) = resp.into_parts();
    let mut out = Vec::new();
    let close = to.close || says_close(&parts.headers);
    let framing = write_head(&mut out, &parts, &body, to, close);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("\r\ndate: ").count(), 1, "{text}");
    let text = text
        .split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n");
    (text, framing)
}

fn full(
    status: u16,
    text: &'static str,
    fields: &[(&'static str, &'static str)],
) -> Response<RespBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    for (n, v) in fields {
        r.headers_mut()
            .append(*n, http::HeaderValue::from_static(v));
    }
    r
}

#[test]
fn a_body_of_known_size_gets_its_length() {
    let (head, framing) = head_of(full(503, "busy\n", &[("x-a", "1")]), to(false, false));
    assert_eq!(
        head,
        "HTTP/1.1 503 Service Unavailable\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(framing, Framing::Length(5));
}

#[test]
fn a_declared_length_is_kept_and_a_transfer_coding_replaced() {
    let (head, framing) = head_of(
        full(
            200,
            "abc",
            &[("content-length", "3"), ("transfer-encoding", "gzip")],
        ),
        to(false, false),
    );
    assert_eq!(head, "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n");
    assert_eq!(framing, Framing::Length(3));
}

#[test]
fn head_204_and_304_have_no_body() {
    // HEAD: the length of the body a GET would get.
    let (head, framing) = head_of(full(503, "busy\n", &[]), to(true, false));
    assert_eq!(
        head,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(framing, Framing::Length(5));
    // An upstream's answer to HEAD: its declared length, no body.
    let (head, _) = head_of(full(200, "", &[("content-length", "42")]), to(true, false));
    assert_eq!(head, "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n");
    // An empty HEAD answer without a length says nothing of one.
    let (head, framing) = head_of(full(200, "", &[]), to(true, false));
    assert_eq!(head, "HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(framing, Framing::None);
    let (head, framing) = head_of(full(204, "", &[("content-length", "0")]), to(false, false));
    assert_eq!(head, "HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(framing, Framing::None);
    let (head, framing) = head_of(full(304, "", &[("content-length", "9")]), to(false, false));
    assert_eq!(
        head,
        "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"
    );
    assert_eq!(framing, Framing::None);
}

#[test]
fn closing_is_said_once() {
    let (head, _) = head_of(full(200, "", &[]), to(false, true));
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    let (head, _) = head_of(full(200, "", &[("connection", "close")]), to(false, false));
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn a_date_is_kept_and_a_reason_phrase_too() {
    let mut r = full(200, "", &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]);
    r.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(b"Fine Thanks"));
    let (parts, body) = r.into_parts();
    let mut out = Vec::new();
    write_head(&mut out, &parts, &body, to(false, false), false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 Fine Thanks\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\n\r\n"
    );
}

#[test]
fn te_trailers_is_read_from_any_field() {
    let mut h = HeaderMap::new();
    assert!(!te_trailers(&h));
    h.append(header::TE, http::HeaderValue::from_static("gzip"));
    assert!(!te_trailers(&h));
    h.append(
        header::TE,
        http::HeaderValue::from_static("deflate, Trailers;q=1"),
    );
    assert!(te_trailers(&h));
}
