//! Demo upstreams the binary starts on loopback so the shipped config serves at once: `fast`
//! answers (and echoes POST bodies), `slow` answers after a delay, `flaky` fails now and then.
//! The `fast` one doubles as the minimal hyper backend of the benchmark
//! (`tollgate demo-upstream`).

use super::config::DemoKind;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_core::counter::ShardedCounter;

/// A demo reply: the request body echoed back, or a short text.
type RespBody = Either<Incoming, Full<Bytes>>;

/// A demo upstream's behaviour and counters.
#[derive(Debug)]
pub(crate) struct Demo {
    kind: DemoKind,
    name: String,
    delay: Duration,
    /// Requests seen, used by `flaky` to pick failures deterministically.
    seq: AtomicU64,
    /// Requests answered (for `/state`).
    pub served: ShardedCounter,
}

impl Demo {
    /// A demo upstream of `kind`; `delay` applies to `slow`.
    pub(crate) fn new(name: &str, kind: DemoKind, delay: Duration) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            delay,
            seq: AtomicU64::new(0),
            served: ShardedCounter::new(),
        }
    }

    fn text(&self, status: StatusCode, body: String) -> Response<RespBody> {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        r
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<RespBody>, DemoError> {
        self.served.incr();
        let echo = matches!(*req.method(), Method::POST | Method::PUT);
        match self.kind {
            DemoKind::Fast => {}
            DemoKind::Slow => tokio::time::sleep(self.delay).await,
            DemoKind::Flaky => {
                // Relaxed: only a sequence number; any interleaving is a valid sequence.
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                if n % 7 == 6 {
                    // Returning an error makes hyper drop the connection without answering:
                    // the gateway sees a reset and answers 502.
                    return Err(DemoError);
                }
                if n % 5 == 4 {
                    let body = format!("demo upstream '{}' failed on purpose\n", self.name);
                    return Ok(self.text(StatusCode::INTERNAL_SERVER_ERROR, body));
                }
            }
        }
        if echo {
            return Ok(Response::new(Either::Left(req.into_body())));
        }
        let body = format!(
            "hello from the {} demo upstream '{}'\n",
            kind_name(self.kind),
            self.name
        );
        Ok(self.text(StatusCode::OK, body))
    }
}

fn kind_name(kind: DemoKind) -> &'static str {
    match kind {
        DemoKind::Fast => "fast",
        DemoKind::Slow => "slow",
        DemoKind::Flaky => "flaky",
    }
}

/// The failure a `flaky` demo upstream injects.
#[derive(Debug)]
pub(crate) struct DemoError;

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("demo upstream dropped the connection on purpose")
    }
}

impl std::error::Error for DemoError {}

/// Serves `demo` on `listener` (HTTP/1.1 and h2c) until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, demo: Arc<Demo>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let demo = demo.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| demo.clone().handle(req));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
