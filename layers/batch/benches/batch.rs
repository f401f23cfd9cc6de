//! tollgate-batch against tower-batch-control, and batching against item-by-item calls.
//!
//! - `overhead_1_thread` / `overhead_2_threads`: the per-request cost of the batching layer
//!   itself, with a no-op batch backend, `N` requests in flight (one task per thread, each
//!   joining its share). Both layers: batches of 64, 4 batches in flight, a short linger.
//! - `noop_backend`: a no-op backend behind a call boundary (a server thread reached through a
//!   channel, as another process behind a connection would be) taking at most 4 calls at once
//!   (a pool of 4 connections): `N` requests sent one call each, 4 at a time, against the same
//!   requests gathered by tollgate-batch into calls of up to 64 with `max_in_flight = 4`.
//!
//! Every case sends its `N` requests from one task per thread (readiness, then `call`) and
//! then awaits the answers in order, so the harness adds no more than a `Vec` of futures.
//!
//! Run: `cargo bench -p tollgate-batch --bench batch -- --warm-up-time 1 --measurement-time 3`

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tollgate_batch::{BatchConfig, BatchLayer, Batcher};
use tower::{Layer, Service, ServiceExt};
use tower_batch_control::{Batch, BatchControl, RequestWeight};

const N: usize = 1024;
const MAX_ITEMS: usize = 64;
const IN_FLIGHT: usize = 4;
const LINGER: Duration = Duration::from_micros(500);

/// tollgate-batch's no-op backend: answers a batch at once.
#[derive(Clone, Copy)]
struct Noop;

impl Service<Vec<u64>> for Noop {
    type Response = Vec<Result<u64, Infallible>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ids: Vec<u64>) -> Self::Future {
        ready(Ok(ids.into_iter().map(Ok).collect()))
    }
}

/// tower-batch-control's no-op backend: items wait on a oneshot until `Flush` answers them.
#[derive(Clone, Copy, Debug)]
struct Id(u64);

impl RequestWeight for Id {}

#[derive(Default)]
struct NoopControl {
    pending: Vec<(u64, oneshot::Sender<u64>)>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<BatchControl<Id>> for NoopControl {
    type Response = u64;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: BatchControl<Id>) -> Self::Future {
        match req {
            BatchControl::Item(Id(id)) => {
                let (tx, rx) = oneshot::channel();
                self.pending.push((id, tx));
                Box::pin(async move { rx.await.map_err(|e| Box::new(e) as BoxError) })
            }
            BatchControl::Flush => {
                for (id, tx) in self.pending.drain(..) {
                    let _ = tx.send(id);
                }
                Box::pin(async { Ok(0) })
            }
        }
    }
}

fn ours<S>(backend: S) -> Batcher<u64, u64>
where
    S: Service<Vec<u64>, Response = Vec<Result<u64, Infallible>>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let config = BatchConfig {
        max_items: MAX_ITEMS,
        max_in_flight: IN_FLIGHT,
        max_linger: LINGER,
        queue_capacity: 2 * N,
        ..BatchConfig::default()
    };
    BatchLayer::new(config).unwrap().layer(backend)
}

fn peer() -> Batch<NoopControl, Id> {
    Batch::new(NoopControl::default(), MAX_ITEMS, IN_FLIGHT, LINGER)
}

/// One task sends every request of `range` (waiting for readiness before each), then awaits
/// the answers in order: the harness costs no more than a `Vec` of futures.
async fn send_ours(svc: &Batcher<u64, u64>, range: std::ops::Range<u64>) {
    let mut svc = svc.clone();
    let mut answers = Vec::with_capacity((range.end - range.start) as usize);
    for i in range {
        svc.ready().await.unwrap();
        answers.push(svc.call(i));
    }
    for a in answers {
        black_box(a.await.unwrap());
    }
}

async fn send_peer(svc: &Batch<NoopControl, Id>, range: std::ops::Range<u64>) {
    let mut svc = svc.clone();
    let mut answers = Vec::with_capacity((range.end - range.start) as usize);
    for i in range {
        svc.ready().await.unwrap();
        answers.push(svc.call(Id(i)));
    }
    for a in answers {
        black_box(a.await.unwrap());
    }
}

fn overhead(c: &mut Criterion) {
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("overhead_1_thread");
    g.throughput(Throughput::Elements(N as u64));
    let svc = single.block_on(async { peer() });
    g.bench_function("tower-batch-control", |b| {
        b.iter(|| single.block_on(send_peer(&svc, 0..N as u64)))
    });
    let svc = ours(Noop);
    g.bench_function("tollgate-batch", |b| {
        b.iter(|| single.block_on(send_ours(&svc, 0..N as u64)))
    });
    g.finish();

    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("overhead_2_threads");
    g.throughput(Throughput::Elements(N as u64));
    let half = (N / 2) as u64;
    let svc = multi.block_on(async { peer() });
    g.bench_function("tower-batch-control", |b| {
        b.iter(|| {
            multi.block_on(async {
                let tasks = [0, half].map(|start| {
                    let svc = svc.clone();
                    tokio::spawn(async move { send_peer(&svc, start..start + half).await })
                });
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    let svc = ours(Noop);
    g.bench_function("tollgate-batch", |b| {
        b.iter(|| {
            multi.block_on(async {
                let tasks = [0, half].map(|start| {
                    let svc = svc.clone();
                    tokio::spawn(async move { send_ours(&svc, start..start + half).await })
                });
                for t in tasks {
                    t.await.unwrap();
                }
            })
        })
    });
    g.finish();
}

type Call = (Vec<u64>, oneshot::Sender<Vec<u64>>);

/// A no-op backend behind a call boundary: a server on its own thread (as another process
/// behind a connection would be) answering each call's ids unchanged.
#[derive(Clone)]
struct Remote {
    tx: std::sync::mpsc::Sender<Call>,
}

impl Remote {
    fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Call>();
        std::thread::spawn(move || {
            while let Ok((ids, reply)) = rx.recv() {
                let _ = reply.send(ids);
            }
        });
        Self { tx }
    }

    /// Sends the call now; the answer arrives on the receiver.
    fn send(&self, ids: Vec<u64>) -> oneshot::Receiver<Vec<u64>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((ids, reply)).unwrap();
        answer
    }
}

impl Service<Vec<u64>> for Remote {
    type Response = Vec<Result<u64, Infallible>>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ids: Vec<u64>) -> Self::Future {
        let answer = self.send(ids);
        Box::pin(async move { Ok(answer.await.unwrap().into_iter().map(Ok).collect()) })
    }
}

fn noop_backend(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("noop_backend");
    g.throughput(Throughput::Elements(N as u64));
    let remote = Remote::start();
    // The same backend and the same limit of calls in flight, one request per call.
    g.bench_function("item_by_item", |b| {
        b.iter(|| {
            rt.block_on(async {
                let calls = futures_util::stream::iter(0..N as u64).map(|i| remote.send(vec![i]));
                let mut answers = calls.buffered(IN_FLIGHT);
                while let Some(a) = answers.next().await {
                    black_box(a.unwrap());
                }
            })
        })
    });
    let svc = ours(remote.clone());
    g.bench_function("tollgate-batch", |b| {
        b.iter(|| rt.block_on(send_ours(&svc, 0..N as u64)))
    });
    g.finish();
}

criterion_group!(benches, overhead, noop_backend);
criterion_main!(benches);
