//! W3C Trace Context and span export (`[tracing]`).
//!
//! Off (no `[tracing]` section), nothing here runs: no header is parsed or written and no span
//! is made. On, every request gets a [`TraceCtx`]: the client's trace continued when its
//! `traceparent` is valid (version `00`, non-zero ids), otherwise a fresh trace; the gateway's
//! own span id goes upstream as the new parent, and `tracestate` passes through unchanged.
//!
//! Spans are made with the OpenTelemetry API types and handed, finished, to the SDK's batch
//! processor, which exports them as OTLP over HTTP/protobuf from its own thread. The gateway
//! picks its span ids itself (the fast path writes the upstream's `traceparent` in a pure
//! function, before any span object could exist) and records each span once, when it ends,
//! with the times it measured: a request pays for one `SpanData` per span it exports and no
//! context, guard or subscriber. Unsampled requests carry the context upstream and export
//! nothing.

use crate::config::tracing::TracingConfig;
use crate::request_id::{hex_into, random};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The request header that carries the trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// Length of a version-00 `traceparent` value.
pub(crate) const VALUE_LEN: usize = 55;

/// One request's trace context: the trace, the client's span (if continued) and the gateway's
/// own span, whose id goes upstream as the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceCtx {
    /// The trace id (the client's, or fresh).
    pub trace_id: [u8; 16],
    /// The client's span id; zero when this request started the trace.
    pub parent_id: [u8; 8],
    /// The gateway's request span.
    pub span_id: [u8; 8],
    /// Whether the trace is sampled (exported, and flagged so upstream).
    pub sampled: bool,
}

/// Ids drawn before the head is parsed: a fresh trace in case the client's is missing or
/// invalid, and the gateway's span id either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fresh {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

impl Fresh {
    /// New random ids; a fresh trace is sampled with probability `ratio`.
    pub(crate) fn draw(ratio: f64) -> Self {
        let (a, b) = (random(), random());
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&a.to_be_bytes());
        trace_id[8..].copy_from_slice(&b.to_be_bytes());
        // `random` is never 0 twice in a row for both halves in practice; keep ids valid anyway.
        trace_id[15] |= u8::from(a == 0 && b == 0);
        let span_id = new_span_id();
        // 53 random bits against the ratio; 1.0 always samples, 0.0 never.
        let sampled = ((random() >> 11) as f64) < ratio * (1u64 << 53) as f64;
        Self {
            trace_id,
            span_id,
            sampled,
        }
    }
}

impl TraceCtx {
    /// The trace context for a request whose `traceparent` field lines are `values`: the
    /// client's trace when exactly one valid value is present, else a fresh one.
    pub(crate) fn new<'a>(mut values: impl Iterator<Item = &'a [u8]>, fresh: Fresh) -> Self {
        let client = match (values.next(), values.next()) {
            (Some(v), None) => parse(v),
            _ => None,
        };
        match client {
            Some((trace_id, parent_id, flags)) => Self {
                trace_id,
                parent_id,
                span_id: fresh.span_id,
                sampled: flags & 1 == 1,
            },
            None => Self {
                trace_id: fresh.trace_id,
                parent_id: [0; 8],
                span_id: fresh.span_id,
                sampled: fresh.sampled,
            },
        }
    }

    /// The `traceparent` value the upstream gets: this trace, the gateway's span as parent.
    pub(crate) fn value(&self) -> [u8; VALUE_LEN] {
        let mut out = [b'-'; VALUE_LEN];
        out[..2].copy_from_slice(b"00");
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&self.span_id, &mut out[36..52]);
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        out
    }
}

/// A fresh span id (never zero).
pub(crate) fn new_span_id() -> [u8; 8] {
    (random() | 1).to_be_bytes()
}

/// A `traceparent` value: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower-case
/// hex, neither id zero; any other version is refused (the gateway speaks version 00).
pub(crate) fn parse(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() != VALUE_LEN || !v.starts_with(b"00-") || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut parent_id = [0u8; 8];
    let mut flags = [0u8; 1];
    unhex(&v[3..35], &mut trace_id)?;
    unhex(&v[36..52], &mut parent_id)?;
    unhex(&v[53..55], &mut flags)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, parent_id, flags[0]))
}

fn unhex(hex: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        *o = (digit(hex[2 * i])? << 4) | digit(hex[2 * i + 1])?;
    }
    Some(())
}

/// Span times: the wall clock read once per request, moved on by tokio's clock (which tests
/// may pause), so a span's length is what the gateway measured.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::disallowed_types)] // OTLP wants wall-clock times; durations come from tokio.
pub(crate) struct Clock {
    wall: std::time::SystemTime,
    at: Instant,
}

impl Clock {
    /// Now.
    #[allow(clippy::disallowed_types)] // OTLP wants wall-clock times; durations come from tokio.
    pub(crate) fn now() -> Self {
        Self {
            wall: std::time::SystemTime::now(),
            at: Instant::now(),
        }
    }

    /// The wall-clock time of `at`.
    #[allow(clippy::disallowed_types)]
    fn wall(&self, at: Instant) -> std::time::SystemTime {
        match at.checked_duration_since(self.at) {
            Some(d) => self.wall + d,
            None => self.wall - self.at.duration_since(at),
        }
    }
}

/// The span exporter: built from `[tracing]` at start, shut down (and flushed) with the
/// gateway.
#[derive(Debug)]
pub(crate) struct Tracer {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    ratio: f64,
}

/// A span to record, finished.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The span's name.
    pub name: &'static str,
    /// Server (the request), client (an upstream call) or internal.
    pub kind: SpanKind,
    /// Its id.
    pub span_id: [u8; 8],
    /// Its parent (zero: a root).
    pub parent_id: [u8; 8],
    /// Whether the parent came from the client.
    pub parent_remote: bool,
    /// When it started and ended.
    pub start: Instant,
    /// See `start`.
    pub end: Instant,
    /// Its attributes.
    pub attributes: Vec<KeyValue>,
    /// An error status with this description.
    pub error: Option<Cow<'static, str>>,
}

impl Tracer {
    /// The exporter for `config`.
    ///
    /// # Errors
    /// What the OTLP exporter could not build (its HTTP client).
    pub(crate) fn start(config: &TracingConfig) -> Result<Arc<Self>, String> {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.traces_url())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(
            &Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        Ok(Arc::new(Self {
            processor,
            scope: InstrumentationScope::builder("tollgate")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            ratio: config.sample_ratio,
        }))
    }

    /// Ids for the next request.
    pub(crate) fn fresh(&self) -> Fresh {
        Fresh::draw(self.ratio)
    }

    /// Records `span` of the trace `ctx` (nothing when the trace is not sampled).
    pub(crate) fn record(&self, ctx: &TraceCtx, clock: &Clock, span: Finished) {
        if !ctx.sampled {
            return;
        }
        let span_context = SpanContext::new(
            TraceId::from_bytes(ctx.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        self.processor.on_end(SpanData {
            span_context,
            parent_span_id: SpanId::from_bytes(span.parent_id),
            parent_span_is_remote: span.parent_remote,
            span_kind: span.kind,
            name: Cow::Borrowed(span.name),
            start_time: clock.wall(span.start),
            end_time: clock.wall(span.end),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: match span.error {
                Some(description) => Status::Error { description },
                None => Status::Unset,
            },
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Exports what is buffered and stops the exporter's thread.
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.processor.shutdown() {
            tracing::warn!(error = %e, "span export did not finish");
        }
    }
}

/// The request span (server kind) of `ctx`, from `start` to now.
pub(crate) fn request_span(
    ctx: &TraceCtx,
    start: Instant,
    attributes: Vec<KeyValue>,
    status: u16,
) -> Finished {
    Finished {
        name: "request",
        kind: SpanKind::Server,
        span_id: ctx.span_id,
        parent_id: ctx.parent_id,
        parent_remote: ctx.parent_id != [0; 8],
        start,
        end: Instant::now(),
        attributes,
        error: (status >= 500).then_some(Cow::Borrowed("server error")),
    }
}

/// A child of the request span, from `start` to now, with a fresh span id.
pub(crate) fn child_span(
    ctx: &TraceCtx,
    name: &'static str,
    kind: SpanKind,
    start: Instant,
    attributes: Vec<KeyValue>,
    error: Option<Cow<'static, str>>,
) -> Finished {
    Finished {
        name,
        kind,
        span_id: new_span_id(),
        parent_id: ctx.span_id,
        parent_remote: false,
        start,
        end: Instant::now(),
        attributes,
        error,
    }
}

/// An upstream call's attributes: the endpoint and the answer's status, if one came.
pub(crate) fn upstream_attributes(
    addr: std::net::SocketAddr,
    status: Option<u16>,
) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("server.address", addr.ip().to_string()),
        KeyValue::new("server.port", i64::from(addr.port())),
    ];
    if let Some(s) = status {
        a.push(KeyValue::new("http.response.status_code", i64::from(s)));
    }
    a
}

/// Why a layered request failed, carried to its request span in the answer's extensions
/// (only when tracing is on).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// A layer refused it (breaker open, pool or admission full, retry budget spent...).
    pub rejected: bool,
    /// The error, as the debug log says it.
    pub message: String,
}

/// What the hyper path's layers need to record spans: the request's context and the tracer,
/// carried in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Traced {
    /// The request's trace context.
    pub ctx: TraceCtx,
    /// Where spans go.
    pub tracer: Arc<Tracer>,
    /// The request's clock.
    pub clock: Clock,
}

impl Traced {
    /// Records a child span of the request (or of the span this copy stands for, see
    /// [`Traced::under`]) from `start` to now; `span_id`: its id, when its children already
    /// know it, else a fresh one.
    pub(crate) fn child(
        &self,
        span_id: Option<[u8; 8]>,
        name: &'static str,
        kind: SpanKind,
        start: Instant,
        attributes: Vec<KeyValue>,
        error: Option<Cow<'static, str>>,
    ) {
        if self.ctx.sampled {
            let mut span = child_span(&self.ctx, name, kind, start, attributes, error);
            if let Some(id) = span_id {
                span.span_id = id;
            }
            self.tracer.record(&self.ctx, &self.clock, span);
        }
    }

    /// A copy whose spans are children of `span_id` (a span of this request recorded later).
    pub(crate) fn under(&self, span_id: [u8; 8]) -> Self {
        let mut t = self.clone();
        t.ctx.span_id = span_id;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_parent_is_continued_with_the_gateways_span() {
        let fresh = Fresh::draw(1.0);
        let ctx = TraceCtx::new(std::iter::once(CLIENT), fresh);
        let v = ctx.value();
        assert_eq!(&v[..36], &CLIENT[..36]);
        assert_ne!(&v[36..52], &CLIENT[36..52]);
        assert_eq!(&v[52..], b"-01");
        assert!(parse(&v).is_some());
    }

    #[test]
    fn invalid_parents_start_a_fresh_trace() {
        let bad: &[&[u8]] = &[
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"garbage",
        ];
        for v in bad {
            assert_eq!(parse(v), None, "{}", String::from_utf8_lossy(v));
            let ctx = TraceCtx::new(std::iter::once(*v), Fresh::draw(1.0));
            assert_eq!(ctx.parent_id, [0; 8]);
            assert_ne!(&ctx.value()[3..35], &CLIENT[3..35]);
        }
        // Two values: invalid too.
        let ctx = TraceCtx::new([CLIENT, CLIENT].into_iter(), Fresh::draw(1.0));
        assert_eq!(ctx.parent_id, [0; 8]);
    }

    /// What tracing costs a request, off and on: `cargo test -p tollgate-gateway --release
    /// --lib trace::tests::cost -- --ignored --nocapture`. On: ids drawn, the client's
    /// `traceparent` parsed, ours written, and a request and an upstream span built and handed
    /// to the batch processor (whose collector, on a closed port, drops them).
    #[test]
    #[ignore = "a timing loop, for release builds"]
    fn cost() {
        use std::hint::black_box;
        const N: u32 = 200_000;
        let off: Option<Arc<Tracer>> = black_box(None);
        let t0 = Instant::now();
        for _ in 0..N {
            black_box(off.as_ref().map(|t| t.fresh()));
        }
        let per_off = t0.elapsed() / N;
        let config = TracingConfig {
            otlp_endpoint: "http://127.0.0.1:9".into(),
            ..TracingConfig::default()
        };
        let tracer = Tracer::start(&config).unwrap();
        let clock = Clock::now();
        let t0 = Instant::now();
        for _ in 0..N {
            let ctx = TraceCtx::new(std::iter::once(black_box(CLIENT)), tracer.fresh());
            black_box(ctx.value());
        }
        let per_header = t0.elapsed() / N;
        let t0 = Instant::now();
        for _ in 0..N {
            let ctx = TraceCtx::new(std::iter::once(black_box(CLIENT)), tracer.fresh());
            black_box(ctx.value());
            let start = Instant::now();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
            let up = child_span(
                &ctx,
                "upstream",
                SpanKind::Client,
                start,
                upstream_attributes(addr, Some(200)),
                None,
            );
            tracer.record(&ctx, &clock, up);
            let attributes = vec![
                KeyValue::new("http.request.method", "GET".to_owned()),
                KeyValue::new("url.path", "/api/items".to_owned()),
                KeyValue::new("http.response.status_code", 200i64),
                KeyValue::new("http.route", "/api".to_owned()),
                KeyValue::new("tollgate.cluster", "api".to_owned()),
            ];
            tracer.record(&ctx, &clock, request_span(&ctx, start, attributes, 200));
        }
        let per_on = t0.elapsed() / N;
        println!("off: {per_off:?}; on, context only: {per_header:?}; on, two spans: {per_on:?}");
        tracer.shutdown();
    }

    #[test]
    fn the_ratio_bounds_sampling() {
        assert!((0..1000).all(|_| Fresh::draw(1.0).sampled));
        assert!((0..1000).all(|_| !Fresh::draw(0.0).sampled));
        let n = (0..10_000).filter(|_| Fresh::draw(0.5).sampled).count();
        assert!((4_000..6_000).contains(&n), "{n}");
    }
}
