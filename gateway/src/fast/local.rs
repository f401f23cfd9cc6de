//! The fast path's own answers: a short local answer (its text from the answer table, the
//! request id, `Date`, a lingering close when a body is still coming), the 431 for a head that
//! outgrew the limit, and the access log line every request gets.

use super::head::Head;
use super::{Bufs, Next, date, write_all};
use crate::answer::Answer;
use crate::ctx::ConnCtx;
use crate::request_id::{self, Id};
use crate::trace;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Answers 431 to a head that passed the limit before it was complete, lingering so that the
/// client, still sending, reads the answer; the caller closes.
pub(super) async fn refuse_head(
    client: &mut TcpStream,
    ctx: &ConnCtx,
    b: &mut Bufs,
    len: usize,
    idle: Duration,
) {
    let head = Head {
        len,
        body_len: 0,
        close: true,
        head_method: false,
        idempotent: false,
        method: 0..0,
        path: 0..0,
        host: 0..0,
        request_id: None,
        client: None,
        trace: None,
    };
    ctx.shared.stats.requests.incr();
    let local = crate::state::local(&ctx.shared);
    let rid = local.snap.request_id;
    let fresh = request_id::fresh();
    let id = (rid.name(), if rid.is_on() { &fresh[..] } else { &[][..] });
    answer(
        client,
        ctx,
        b,
        &head,
        Answer::HeadTooLarge,
        (true, true),
        id,
        idle,
    )
    .await;
}

/// Where a request's bytes start in the client buffer, when it started, and the upstream it
/// went to, for its access log line.
pub(super) struct Done {
    pub(super) head_at: usize,
    pub(super) start: Instant,
    pub(super) upstream: Option<SocketAddr>,
    /// The route it matched and the branch (cluster) that served it, whose latency it
    /// counts in.
    pub(super) route: Option<(usize, usize)>,
    /// The request's id, on the answer and in the log line.
    pub(super) id: Id,
    /// When the upstream exchange started, when its answer head (or failure) came, and the
    /// upstream's status if it answered.
    pub(super) exchange: Option<(Instant, Instant, Option<u16>)>,
}

/// Writes `local` (see [`answer`]), then counts the request's time and logs it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn answer_and_log(
    client: &mut TcpStream,
    ctx: &ConnCtx,
    b: &mut Bufs,
    snap: &crate::state::Snapshot,
    head: &Head,
    local: Answer,
    close: bool,
    unread: bool,
    done: Done,
) -> Next {
    let id = (snap.request_id.name(), done.id.as_bytes());
    let next = answer(
        client,
        ctx,
        b,
        head,
        local,
        (close, unread),
        id,
        snap.idle_timeout,
    )
    .await;
    let stats = &ctx.shared.stats;
    let status = local.status().as_u16();
    let elapsed = done.start.elapsed();
    stats.duration.record(status, elapsed);
    if let Some(branch) = done
        .route
        .and_then(|(r, b)| snap.route_plans.get(r)?.branches.get(b))
    {
        branch.stats.latency.record(status, elapsed);
    }
    let bytes = &b.cin.data[done.head_at..];
    log_access(ctx, snap, bytes, head, status, &done);
    record_trace(ctx, snap, bytes, head, status, &done);
    next
}

/// Writes a short local answer (its text left out for `HEAD`). With `close`, the connection
/// ends after it; with `unread` too (a body the client is still sending), it lingers first,
/// reading and dropping what comes for up to a second, so that the client sees the answer
/// rather than a reset.
#[allow(clippy::too_many_arguments)]
async fn answer(
    client: &mut TcpStream,
    ctx: &ConnCtx,
    b: &mut Bufs,
    head: &Head,
    local: Answer,
    (close, unread): (bool, bool),
    (id_name, id): (&[u8], &[u8]),
    idle: Duration,
) -> Next {
    use std::io::Write as _;
    let (status, msg) = (local.status().as_u16(), local.text());
    ctx.shared.stats.response(status);
    ctx.touch();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    b.out.clear();
    let _ = write!(
        b.out,
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
        msg.len(),
    );
    b.out.extend_from_slice(b"date: ");
    b.out.extend_from_slice(&date::value(Instant::now()));
    b.out.extend_from_slice(b"\r\n");
    if !id.is_empty() {
        b.out.extend_from_slice(id_name);
        b.out.extend_from_slice(b": ");
        b.out.extend_from_slice(id);
        b.out.extend_from_slice(b"\r\n");
    }
    if close {
        b.out.extend_from_slice(b"connection: close\r\n");
    }
    b.out.extend_from_slice(b"\r\n");
    if !head.head_method {
        b.out.extend_from_slice(msg.as_bytes());
    }
    let written = write_all(client, &b.out, idle).await;
    if !close {
        return if written.is_ok() {
            Next::Done
        } else {
            Next::Close
        };
    }
    let _ = client.shutdown().await;
    if unread && written.is_ok() {
        let linger = async {
            let mut dropped = 0usize;
            while dropped < LINGER_BYTES {
                match client.read(&mut b.uin.data).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => dropped += n,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
    }
    Next::Close
}

/// The most a lingering close reads and drops.
const LINGER_BYTES: usize = 1 << 20;

/// The head's bytes in `r` as text, `-` when they are not UTF-8 (or not there).
fn head_text<'a>(head_bytes: &'a [u8], r: &std::ops::Range<usize>) -> &'a str {
    head_bytes
        .get(r.clone())
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("-")
}

pub(super) fn log_access(
    ctx: &ConnCtx,
    snap: &crate::state::Snapshot,
    head_bytes: &[u8],
    head: &Head,
    status: u16,
    done: &Done,
) {
    if !snap.config.log.access_log {
        return;
    }
    let text = |r: &std::ops::Range<usize>| head_text(head_bytes, r);
    tracing::info!(
        target: "tollgate::access",
        client = %head.client.unwrap_or(ctx.peer.ip()),
        method = text(&head.method),
        host = text(&head.host),
        path = text(&head.path),
        version = ?http::Version::HTTP_11,
        status,
        upstream = done.upstream.map(|a| a.to_string()).unwrap_or_default(),
        request_id = done.id.as_str(),
        micros = done.start.elapsed().as_micros() as u64,
    );
}

/// Records a traced request's spans (see `trace.rs`): the request (method, path, route,
/// cluster, status) and, when it went upstream, the upstream call (endpoint, status).
pub(super) fn record_trace(
    ctx: &ConnCtx,
    snap: &crate::state::Snapshot,
    head_bytes: &[u8],
    head: &Head,
    status: u16,
    done: &Done,
) {
    use opentelemetry::KeyValue;
    use opentelemetry::trace::SpanKind;
    let (Some(tracer), Some(t)) = (&ctx.shared.tracer, &head.trace) else {
        return;
    };
    if !t.sampled {
        return;
    }
    let clock = trace::Clock::now();
    let text = |r: &std::ops::Range<usize>| head_text(head_bytes, r).to_owned();
    let mut attributes = vec![
        KeyValue::new("http.request.method", text(&head.method)),
        KeyValue::new("url.path", text(&head.path)),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("network.protocol.version", "1.1"),
    ];
    if let Some((r, b)) = done.route {
        let (prefix, cluster) = snap.route_labels(r, b);
        if let Some(prefix) = prefix {
            attributes.push(KeyValue::new("http.route", prefix.to_owned()));
        }
        if let Some(cluster) = cluster {
            attributes.push(KeyValue::new("tollgate.cluster", cluster.to_owned()));
        }
    }
    if let (Some(addr), Some((sent, answered, upstream_status))) = (done.upstream, done.exchange) {
        let failed = upstream_status.is_none_or(|s| s >= 500);
        let mut span = trace::child_span(
            t,
            "upstream",
            SpanKind::Client,
            sent,
            trace::upstream_attributes(addr, upstream_status),
            failed.then_some(std::borrow::Cow::Borrowed("upstream failed")),
        );
        span.end = answered;
        tracer.record(t, &clock, span);
    }
    tracer.record(
        t,
        &clock,
        trace::request_span(t, done.start, attributes, status),
    );
}
