//! The fuzz driver behind `fuzz/fuzz_targets/batch_ops.rs` and `tests/fuzz_replay.rs`.
//!
//! [`run`] reads a configuration and a sequence of [`Op`]s, drives a layer over a scripted
//! batch service on a current-thread runtime with paused time, and asserts:
//!
//! - nothing panics outside the batch service itself;
//! - every caller that was not dropped gets exactly one answer, within a virtual hour;
//! - a successful answer is the caller's own;
//! - when everything has been answered and the layer is shut down, the queue is empty and no
//!   batch is in flight.

use crate::config::{BatchConfig, Overflow};
use crate::layer::BatchLayer;
use crate::service::Batcher;
use arbitrary::{Arbitrary, Unstructured};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;
use tollgate_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// The message of every panic the scripted batch service raises on purpose.
const PLANNED: &str = "fuzz: planned panic";

/// What the scripted batch service does with a request.
#[derive(Debug, Arbitrary, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Answers the request's own value.
    Ok,
    /// Fails this item only.
    Fail,
    /// Fails the whole batch.
    FailBatch,
    /// Panics in the batch future.
    Panic,
    /// Panics in `call`.
    PanicInCall,
    /// Ends the result vector before this item.
    Short,
    /// Takes 50 ms.
    Slow,
}

/// One step of a fuzz run.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// A new caller sends `(key, id, kind)`.
    Submit {
        /// Batch key (when keyed).
        key: u8,
        /// Value; small so that folding finds duplicates.
        id: u8,
        /// What the backend does with it.
        kind: Kind,
    },
    /// A caller drops its future.
    Drop(u8),
    /// Poll every live caller once.
    Poll,
    /// Let virtual time pass, in milliseconds.
    Advance(u8),
    /// Start a graceful shutdown.
    Shutdown,
}

impl Op {
    /// A compact decoding (one selector byte, then the fields) so that short inputs hold
    /// many operations; submissions are the most common.
    fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<Op> {
        const KINDS: [Kind; 7] = [
            Kind::Ok,
            Kind::Fail,
            Kind::FailBatch,
            Kind::Panic,
            Kind::PanicInCall,
            Kind::Short,
            Kind::Slow,
        ];
        let selector: u8 = u.arbitrary()?;
        Ok(match selector % 16 {
            0..=7 => {
                let key: u8 = u.arbitrary()?;
                let id: u8 = u.arbitrary()?;
                // Mostly well-behaved requests, so that batches often succeed.
                let kind = if selector & 0x80 == 0 {
                    Kind::Ok
                } else {
                    KINDS[usize::from(id) % 7]
                };
                Op::Submit { key, id, kind }
            }
            8 | 9 => Op::Drop(u.arbitrary()?),
            10 | 11 => Op::Poll,
            12..=14 => Op::Advance(u.arbitrary()?),
            // Rare: nothing new is served after it.
            _ if u.arbitrary::<u8>()? < 16 => Op::Shutdown,
            _ => Op::Poll,
        })
    }
}

#[derive(Debug, Arbitrary)]
struct Setup {
    max_items: u8,
    max_weight: Option<u8>,
    linger_ms: u8,
    max_in_flight: u8,
    queue_capacity: u8,
    reject: bool,
    flush_when_idle: bool,
    keyed: bool,
    folding: bool,
    deadlines: bool,
}

type Req = (u8, u8, Kind);

fn value(req: &Req) -> u64 {
    u64::from(req.0) * 1000 + u64::from(req.1)
}

fn silence_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let planned = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| *m == PLANNED);
            if !planned {
                previous(info);
            }
        }));
    });
}

/// The scripted batch service.
#[derive(Debug, Clone, Copy)]
struct Script;

impl Service<Vec<Req>> for Script {
    type Response = Vec<Result<u64, BoxError>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, reqs: Vec<Req>) -> Self::Future {
        Box::pin(answer(reqs))
    }
}

fn answer(
    reqs: Vec<Req>,
) -> impl Future<Output = Result<Vec<Result<u64, BoxError>>, BoxError>> + Send + 'static {
    let may_panic = cfg!(panic = "unwind");
    if may_panic && reqs.iter().any(|r| r.2 == Kind::PanicInCall) {
        std::panic::panic_any(PLANNED);
    }
    async move {
        if reqs.iter().any(|r| r.2 == Kind::Slow) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if may_panic && reqs.iter().any(|r| r.2 == Kind::Panic) {
            std::panic::panic_any(PLANNED);
        }
        if reqs.iter().any(|r| r.2 == Kind::FailBatch) {
            return Err::<_, BoxError>("fuzz: batch failed".into());
        }
        Ok(reqs
            .iter()
            .take_while(|r| r.2 != Kind::Short)
            .map(|r| {
                if r.2 == Kind::Fail {
                    Err("fuzz: item failed".into())
                } else {
                    Ok(value(r))
                }
            })
            .collect())
    }
}

/// Runs one fuzz input. See the [module docs](self) for what it asserts.
///
/// # Panics
///
/// When an invariant breaks.
pub fn run(data: &[u8]) {
    silence_planned_panics();
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 256 {
        match Op::decode(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    runtime.block_on(drive(setup, ops));
}

async fn drive(setup: Setup, ops: Vec<Op>) {
    let config = BatchConfig {
        max_items: usize::from(setup.max_items % 16) + 1,
        max_weight: setup.max_weight.map(|w| u64::from(w % 64) + 1),
        max_linger: Duration::from_millis(u64::from(setup.linger_ms % 120)),
        flush_when_idle: setup.flush_when_idle,
        max_in_flight: usize::from(setup.max_in_flight % 4) + 1,
        queue_capacity: usize::from(setup.queue_capacity % 32) + 1,
        overflow: if setup.reject {
            Overflow::Reject
        } else {
            Overflow::Wait
        },
        ewma_alpha: 0.2,
    };
    let backend = Script;
    let base = tokio::time::Instant::now();
    let mut layer = BatchLayer::new(config)
        .expect("the fuzz config is valid")
        .with_weigher(|r: &Req| u64::from(r.1 % 8));
    if setup.deadlines {
        layer = layer.with_deadline(move |r: &Req| {
            r.1.is_multiple_of(3)
                .then(|| base + Duration::from_millis(u64::from(r.1)))
        });
    }
    if setup.folding {
        layer = layer.with_folding();
    }
    if setup.keyed {
        let layer = layer.with_key(|r: &Req| r.0 % 4);
        check(layer.layer(backend), ops).await;
    } else {
        check(layer.layer(backend), ops).await;
    }
}

async fn check<K>(svc: Batcher<Req, u64, K>, ops: Vec<Op>)
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let handle = svc.handle();
    let mut callers: Vec<(Req, crate::future::ResponseFuture<u64>)> = Vec::new();
    let mut answered: HashMap<&'static str, usize> = HashMap::new();
    let (mut issued, mut dropped) = (0usize, 0usize);
    let mut check_answer = |req: &Req, answer: Result<u64, BoxError>| {
        let what = match answer {
            Ok(v) => {
                assert_eq!(v, value(req), "a caller got someone else's answer");
                assert!(matches!(req.2, Kind::Ok | Kind::Slow), "{req:?} succeeded");
                "ok"
            }
            Err(_) => "err",
        };
        *answered.entry(what).or_default() += 1;
    };
    for op in ops {
        match op {
            Op::Submit { key, id, kind } => {
                let req = (key, id, kind);
                let mut s = svc.clone();
                match futures_util::poll!(poll_fn(|cx| s.poll_ready(cx))) {
                    Poll::Ready(Ok(())) => {
                        issued += 1;
                        callers.push((req, s.call(req)));
                    }
                    Poll::Ready(Err(_)) => {
                        assert!(handle.is_closed(), "poll_ready failed while open")
                    }
                    // The queue is full: this caller gives up waiting (dropping `s`).
                    Poll::Pending => {}
                }
            }
            Op::Drop(i) => {
                if !callers.is_empty() {
                    let i = usize::from(i) % callers.len();
                    drop(callers.swap_remove(i));
                    dropped += 1;
                }
            }
            Op::Poll => {
                let mut still = Vec::with_capacity(callers.len());
                for (req, mut fut) in callers.drain(..) {
                    match futures_util::poll!(&mut fut) {
                        Poll::Ready(answer) => check_answer(&req, answer),
                        Poll::Pending => still.push((req, fut)),
                    }
                }
                callers = still;
            }
            Op::Advance(ms) => tokio::time::advance(Duration::from_millis(u64::from(ms))).await,
            Op::Shutdown => drop(handle.shutdown()),
        }
    }
    for (req, fut) in callers {
        let answer = tokio::time::timeout(Duration::from_secs(3600), fut)
            .await
            .unwrap_or_else(|_| panic!("caller {req:?} never answered"));
        check_answer(&req, answer);
    }
    drop(svc);
    tokio::time::timeout(Duration::from_secs(3600), handle.shutdown())
        .await
        .expect("shutdown never finished");
    let snap = handle.snapshot();
    assert_eq!(snap.queue_depth, 0, "{snap:?}");
    assert_eq!(snap.in_flight, 0, "{snap:?}");
    let total: usize = answered.values().sum();
    assert_eq!(
        total,
        issued - dropped,
        "answers {answered:?} for {issued} callers, {dropped} dropped"
    );
}
