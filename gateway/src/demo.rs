//! Demo upstreams the binary starts on loopback so the shipped config serves at once: `fast`
//! answers (and echoes POST bodies), `slow` answers after a delay, `flaky` fails now and then,
//! `busy` has a fixed number of workers and a jittery service time. The `fast` one doubles as
//! the minimal hyper backend of the proxy benchmark and `busy` as the upstream of the overload
//! benchmark (`tollgate demo-upstream`).
//!
//! Every kind answers a gRPC request as a unary gRPC server, echoing its message with
//! `grpc-status: 0` (`grpc.rs`): a gRPC route needs no kind of its own, and a slow, flaky or busy
//! gRPC backend is the same config as an HTTP one.

mod grpc;

use super::config::DemoKind;
use bytes::Bytes;
use grpc::{GrpcBody, Refusal};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tollgate_core::counter::ShardedCounter;

/// A demo reply: the request body echoed back, a short text, or a gRPC reply.
type RespBody = Either<Incoming, Either<Full<Bytes>, GrpcBody>>;

/// How long a demo upstream takes: the delay of `slow`, the service time of `busy`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// The delay of `slow`; the mean service time of `busy`.
    pub delay: Duration,
    /// The requests a `busy` upstream serves at once.
    pub workers: usize,
    /// The spread of a `busy` upstream's service time, as a fraction of `delay` either side.
    pub jitter: f64,
}

/// A demo upstream's behaviour and counters.
#[derive(Debug)]
pub(crate) struct Demo {
    kind: DemoKind,
    name: String,
    timing: Timing,
    /// The workers of `busy`: a request holds a permit while it is served. Tokio's semaphore
    /// is fair, so waiting requests are served first come, first served.
    workers: Semaphore,
    /// Requests seen, used by `flaky` to pick failures and by `busy` to draw service times
    /// deterministically.
    seq: AtomicU64,
    /// Requests answered (for `/state`).
    pub served: ShardedCounter,
}

impl Demo {
    /// A demo upstream of `kind`.
    pub(crate) fn new(name: &str, kind: DemoKind, timing: Timing) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            timing,
            workers: Semaphore::new(timing.workers.max(1)),
            seq: AtomicU64::new(0),
            served: ShardedCounter::new(),
        }
    }

    /// The service time of the `n`th request of a `busy` upstream: uniform within
    /// `delay × (1 ± jitter)`, drawn from `n` (splitmix64), so a run is reproducible.
    fn service_time(&self, n: u64) -> Duration {
        let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // A uniform draw in [-1, 1).
        let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        self.timing.delay.mul_f64(1.0 + self.timing.jitter * u)
    }

    fn text(&self, status: StatusCode, body: String) -> Response<RespBody> {
        let mut r = Response::new(Either::Right(Either::Left(Full::new(Bytes::from(body)))));
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
        let grpc = grpc::is_grpc(req.headers());
        let echo = matches!(*req.method(), Method::POST | Method::PUT);
        match self.kind {
            DemoKind::Fast => {}
            DemoKind::Slow => tokio::time::sleep(self.timing.delay).await,
            DemoKind::Busy => {
                // Relaxed: only a sequence number for the draw.
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                // The semaphore is never closed; a request whose client left is dropped here,
                // out of the queue, as a server notices a closed connection.
                let Ok(_worker) = self.workers.acquire().await else {
                    return Err(DemoError);
                };
                tokio::time::sleep(self.service_time(n)).await;
            }
            DemoKind::Flaky => {
                // Relaxed: only a sequence number; any interleaving is a valid sequence.
                let n = self.seq.fetch_add(1, Ordering::Relaxed);
                if n % 7 == 6 {
                    // Returning an error makes hyper drop the connection without answering:
                    // the gateway sees a reset and answers 502.
                    return Err(DemoError);
                }
                if n % 5 == 4 {
                    let body = format!("demo upstream '{}' failed on purpose", self.name);
                    if grpc {
                        // As a gRPC server fails: HTTP 200, the status in `grpc-status`.
                        let ct = req.headers().get(header::CONTENT_TYPE).cloned();
                        let refusal = Refusal {
                            code: grpc::code::UNAVAILABLE,
                            message: body,
                        };
                        return Ok(grpc_reply(grpc::refuse(ct, &refusal)));
                    }
                    return Ok(self.text(StatusCode::INTERNAL_SERVER_ERROR, body + "\n"));
                }
            }
        }
        if grpc {
            return Ok(grpc_reply(grpc::answer(req).await));
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

fn grpc_reply(r: Response<GrpcBody>) -> Response<RespBody> {
    r.map(|b| Either::Right(Either::Right(b)))
}

fn kind_name(kind: DemoKind) -> &'static str {
    match kind {
        DemoKind::Fast => "fast",
        DemoKind::Slow => "slow",
        DemoKind::Flaky => "flaky",
        DemoKind::Busy => "busy",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn busy_service_times_spread_around_the_delay() {
        let demo = Demo::new(
            "busy",
            DemoKind::Busy,
            Timing {
                delay: Duration::from_millis(10),
                workers: 4,
                jitter: 0.5,
            },
        );
        let times: Vec<f64> = (0..10_000)
            .map(|n| demo.service_time(n).as_secs_f64() * 1e3)
            .collect();
        let mean = times.iter().sum::<f64>() / times.len() as f64;
        assert!((mean - 10.0).abs() < 0.1, "mean {mean} ms");
        let (lo, hi) = times
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), t| (a.min(*t), b.max(*t)));
        assert!((5.0..5.1).contains(&lo), "shortest {lo} ms");
        assert!(hi < 15.0 && hi > 14.9, "longest {hi} ms");
        // The same request number always draws the same time.
        assert_eq!(demo.service_time(7), demo.service_time(7));
    }

    #[test]
    fn busy_settings_are_checked() {
        for (line, field) in [
            ("workers = 0", "demo[0].workers"),
            ("workers = 20000", "demo[0].workers"),
            ("jitter = 1.0", "demo[0].jitter"),
            ("jitter = -0.1", "demo[0].jitter"),
            ("workers = \"ten\"", "demo[0].workers"),
        ] {
            let text = format!(
                "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                 [[demo]]\nname = \"b\"\nkind = \"busy\"\n{line}\n\
                 [[clusters]]\nname = \"c\"\nendpoints = [\"demo:b\"]\n\
                 [[routes]]\ncluster = \"c\"\n"
            );
            let err = Config::parse(&text, "t.toml").unwrap_err();
            assert_eq!(err.field, field, "{line}: {err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn busy_serves_its_workers_at_a_time_in_arrival_order() {
        let demo = Arc::new(Demo::new(
            "busy",
            DemoKind::Busy,
            Timing {
                delay: Duration::from_millis(10),
                workers: 2,
                jitter: 0.0,
            },
        ));
        // Six requests at once on two workers: three rounds of 10 ms.
        let start = tokio::time::Instant::now();
        let mut done = Vec::new();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let demo = demo.clone();
                tokio::spawn(async move {
                    let _worker = demo.workers.acquire().await.expect("open");
                    tokio::time::sleep(demo.service_time(0)).await;
                    start.elapsed()
                })
            })
            .collect();
        for t in tasks {
            done.push(t.await.expect("task").as_millis());
        }
        assert_eq!(done, [10, 10, 20, 20, 30, 30]);
    }
}
