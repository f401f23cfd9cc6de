//! The demo upstreams' gRPC side. Every kind answers a gRPC request (`content-type`
//! `application/grpc`, `application/grpc+proto`, `application/grpc;...`) as a unary gRPC server
//! would, after its own delay, queue or failure: HTTP 200 with the request's `content-type`, the
//! request's length-prefixed message echoed back as the reply, and trailers `grpc-status: 0`.
//! So the gateway's gRPC pass-through can be tested with a real gRPC client and benchmarked
//! against a backend that speaks gRPC, with any demo kind's behaviour.
//!
//! A request that is not one well-formed unary call gets a trailers-only answer (HTTP 200,
//! `grpc-status` and `grpc-message` in the headers, no body), never a hang or an HTTP error:
//! a short or truncated frame, or more than one message, is `INTERNAL` (13); a compressed
//! message is `UNIMPLEMENTED` (12), since the demo negotiates no `grpc-encoding`; a message over
//! [`MAX_MESSAGE`] is `RESOURCE_EXHAUSTED` (8), as a gRPC server's default receive limit.
//!
//! gRPC-Web (`application/grpc-web`) carries its trailers in the body; the demo does not speak
//! it and treats such a request as any other.

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tollgate_core::BoxError;

/// The largest message the demo accepts, bytes: gRPC's default receive limit (4 MiB).
pub(crate) const MAX_MESSAGE: usize = 4 << 20;

/// The length prefix of a gRPC message: a compressed flag and a big-endian `u32` length.
const PREFIX: usize = 5;

/// The gRPC status codes the demo answers with.
pub(crate) mod code {
    /// The message was larger than the server accepts.
    pub(crate) const RESOURCE_EXHAUSTED: u16 = 8;
    /// The server does not do what was asked (here: decompress).
    pub(crate) const UNIMPLEMENTED: u16 = 12;
    /// The request broke the protocol.
    pub(crate) const INTERNAL: u16 = 13;
    /// The server failed; the call may be retried.
    pub(crate) const UNAVAILABLE: u16 = 14;
}

pub(crate) use tollgate_retry::http::is_grpc;

/// A gRPC reply body: at most one message, then the trailers (none for a trailers-only
/// answer, whose status travels in the headers).
#[derive(Debug, Default)]
pub(crate) struct GrpcBody {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(m) = this.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(m))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.message.as_ref().map_or(0, |m| m.len() as u64);
        if self.trailers.is_some() {
            // No exact length, so an HTTP/1.1 answer is chunked and can carry the trailers.
            let mut hint = SizeHint::new();
            hint.set_lower(len);
            hint
        } else {
            SizeHint::with_exact(len)
        }
    }
}

/// Why a request is not one well-formed unary call: its gRPC status and `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The gRPC status code.
    pub code: u16,
    /// What was wrong, in printable ASCII without `%` (so it needs no percent-encoding).
    pub message: String,
}

impl Refusal {
    fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Checks that `body` is exactly one uncompressed length-prefixed message of at most
/// [`MAX_MESSAGE`] bytes.
pub(crate) fn check_unary(body: &[u8]) -> Result<(), Refusal> {
    let Some((prefix, rest)) = body.split_first_chunk::<PREFIX>() else {
        return Err(Refusal::new(
            code::INTERNAL,
            format!(
                "malformed gRPC frame: {} bytes, shorter than the 5-byte prefix",
                body.len()
            ),
        ));
    };
    match prefix[0] {
        0 => {}
        1 => {
            return Err(Refusal::new(
                code::UNIMPLEMENTED,
                "compressed messages are not supported",
            ));
        }
        flag => {
            return Err(Refusal::new(
                code::INTERNAL,
                format!("malformed gRPC frame: compressed flag {flag}"),
            ));
        }
    }
    let len = (&prefix[1..]).get_u32() as usize;
    if len > MAX_MESSAGE {
        return Err(too_large());
    }
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(Refusal::new(
            code::INTERNAL,
            format!(
                "malformed gRPC frame: {len}-byte message announced, {} bytes sent",
                rest.len()
            ),
        )),
        std::cmp::Ordering::Greater => Err(Refusal::new(
            code::INTERNAL,
            "malformed gRPC frame: more than one message in a unary call",
        )),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

fn too_large() -> Refusal {
    Refusal::new(
        code::RESOURCE_EXHAUSTED,
        format!("message larger than {MAX_MESSAGE} bytes"),
    )
}

/// The answer to the gRPC request `req`: its message echoed with `grpc-status: 0`, or a
/// trailers-only refusal. It reads the whole body (a unary call has one message), at most
/// [`MAX_MESSAGE`] and a prefix of it.
pub(crate) async fn answer<B>(req: Request<B>) -> Response<GrpcBody>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    if req.method() != Method::POST {
        let refusal = Refusal::new(code::INTERNAL, "a gRPC call is a POST");
        return refuse(content_type, &refusal);
    }
    let body = match Limited::new(req.into_body(), MAX_MESSAGE + PREFIX)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return refuse(content_type, &too_large()),
        // The client reset the stream: nobody reads this answer.
        Err(_) => {
            let refusal = Refusal::new(code::INTERNAL, "the request body failed");
            return refuse(content_type, &refusal);
        }
    };
    if let Err(refusal) = check_unary(&body) {
        return refuse(content_type, &refusal);
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    reply(
        content_type,
        GrpcBody {
            message: Some(body),
            trailers: Some(trailers),
        },
    )
}

/// A trailers-only answer with `refusal`'s status and message.
pub(crate) fn refuse(content_type: Option<HeaderValue>, refusal: &Refusal) -> Response<GrpcBody> {
    let mut r = reply(content_type, GrpcBody::default());
    let headers = r.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(refusal.code));
    if let Ok(v) = HeaderValue::from_str(&refusal.message) {
        headers.insert("grpc-message", v);
    }
    r
}

/// HTTP 200 with the request's gRPC `content-type` (or `application/grpc`).
fn reply(content_type: Option<HeaderValue>, body: GrpcBody) -> Response<GrpcBody> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/grpc")),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn frame(flag: u8, len: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn grpc_post(body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::post("/echo.Echo/Say")
            .header(header::CONTENT_TYPE, "application/grpc+proto")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    /// The message, the trailers and whether more frames followed.
    async fn read(r: Response<GrpcBody>) -> (HeaderMap, Bytes, Option<HeaderMap>) {
        let (parts, body) = r.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (parts.headers, collected.to_bytes(), trailers)
    }

    #[test]
    fn grpc_content_types_are_recognised() {
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpcx", false),
            ("application/json", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn well_formed_unary_frames_pass_over_many_sizes() {
        // Sizes from a seeded splitmix64, plus the edges.
        let mut z: u64 = 17;
        let mut sizes = vec![0, 1, MAX_MESSAGE];
        for _ in 0..64 {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            sizes.push((x ^ (x >> 31)) as usize % 70_000);
        }
        for n in sizes {
            let payload = vec![b'p'; n];
            assert_eq!(check_unary(&frame(0, n as u32, &payload)), Ok(()), "{n}");
        }
    }

    #[test]
    fn malformed_frames_are_refused_with_their_status() {
        let cases: [(Vec<u8>, u16, &str); 7] = [
            (
                vec![],
                code::INTERNAL,
                "0 bytes, shorter than the 5-byte prefix",
            ),
            (vec![0, 0, 0], code::INTERNAL, "3 bytes, shorter"),
            (
                frame(0, 10, b"abc"),
                code::INTERNAL,
                "10-byte message announced, 3 bytes sent",
            ),
            (
                [frame(0, 1, b"a"), frame(0, 1, b"b")].concat(),
                code::INTERNAL,
                "more than one message",
            ),
            (
                frame(1, 3, b"abc"),
                code::UNIMPLEMENTED,
                "compressed messages",
            ),
            (frame(7, 3, b"abc"), code::INTERNAL, "compressed flag 7"),
            (
                frame(0, u32::MAX, b""),
                code::RESOURCE_EXHAUSTED,
                "larger than 4194304 bytes",
            ),
        ];
        for (body, status, message) in cases {
            let refusal = check_unary(&body).unwrap_err();
            assert_eq!(refusal.code, status, "{body:?}");
            assert!(refusal.message.contains(message), "{}", refusal.message);
            assert!(
                refusal
                    .message
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'%'),
                "needs no percent-encoding: {}",
                refusal.message
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_unary_call_is_echoed_with_status_zero_in_trailers() {
        for payload in [&b""[..], b"hello", &[0xffu8; 3000]] {
            let sent = frame(0, payload.len() as u32, payload);
            let r = answer(grpc_post(sent.clone())).await;
            // No exact length: HTTP/1.1 sends it chunked, with room for the trailers.
            assert_eq!(r.body().size_hint().exact(), None);
            assert_eq!(r.body().size_hint().lower(), sent.len() as u64);
            let (headers, body, trailers) = read(r).await;
            assert_eq!(headers[header::CONTENT_TYPE], "application/grpc+proto");
            assert!(headers.get("grpc-status").is_none());
            assert_eq!(body.as_ref(), sent.as_slice());
            assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_trailers_only() {
        let (headers, body, trailers) = read(answer(grpc_post(vec![0, 0])).await).await;
        assert_eq!(headers["grpc-status"], "13");
        assert!(
            headers["grpc-message"]
                .to_str()
                .unwrap()
                .contains("malformed gRPC frame")
        );
        assert!(body.is_empty());
        assert!(trailers.is_none());
        assert_eq!(GrpcBody::default().size_hint().exact(), Some(0));

        // Over the limit: refused while reading, before the whole body is held.
        let big = frame(0, (MAX_MESSAGE + 1) as u32, &vec![0; MAX_MESSAGE + 1]);
        let (headers, _, _) = read(answer(grpc_post(big)).await).await;
        assert_eq!(headers["grpc-status"], "8");

        let get = Request::get("/echo.Echo/Say")
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (headers, _, _) = read(answer(get).await).await;
        assert_eq!(headers["grpc-status"], "13");
        assert_eq!(headers["grpc-message"], "a gRPC call is a POST");
    }
}
