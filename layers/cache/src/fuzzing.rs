//! Entry points for the fuzz targets (`fuzz/fuzz_targets/cache_control.rs`,
//! `fuzz/fuzz_targets/cache_ops.rs`) and `tests/fuzz_replay.rs`.
//!
//! - [`cache_control`]: the `Cache-Control` / `Vary` parsers (and, with `http`, the response
//!   decoder of the Redis codec) never panic and keep their invariants.
//! - [`cache_ops`]: a sequence of operations (requests, concurrent requests, time passing,
//!   invalidations, an origin failing or slowing down) drives a layer on a paused-time runtime;
//!   every request ends, answers for the key it asked, never serves an entry past its windows,
//!   and never serves a value older than an invalidation it followed.

use crate::cache_control::{CacheControl, Vary, split_list};
use crate::config::CacheConfig;
use crate::layer::CacheLayer;
use crate::policy::{Cacheability, FnPolicy, Freshness};
use arbitrary::{Arbitrary, Unstructured};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tollgate_core::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// Parses `data` as header values; panics if an invariant breaks.
pub fn cache_control(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let cc = CacheControl::parse(&text);
    let cap = Duration::from_secs(1 << 31);
    for d in [
        cc.max_age,
        cc.s_maxage,
        cc.stale_while_revalidate,
        cc.stale_if_error,
    ]
    .into_iter()
    .flatten()
    {
        assert!(d <= cap, "delta-seconds above the cap: {d:?}");
    }
    assert_eq!(cc.shared_max_age(), cc.s_maxage.or(cc.max_age));
    if cc.no_store || cc.private {
        assert!(!cc.storable());
    }
    assert_eq!(CacheControl::parse(&text), cc, "parsing is deterministic");
    for item in split_list(&text) {
        assert!(!item.is_empty() && item.trim() == item);
    }
    let vary = Vary::parse(text.lines());
    if let Vary::Headers(names) = &vary {
        assert!(names.iter().all(|n| !n.is_empty() && *n != "*"));
        assert!(vary.covered_by(names));
    }
    #[cfg(feature = "http")]
    if let Some(r) = crate::http::decode_response(data) {
        let again = crate::http::decode_response(&crate::http::encode_response(&r))
            .expect("re-encoded response decodes");
        assert_eq!(
            (again.status, &again.headers, &again.body),
            (r.status, &r.headers, &r.body)
        );
    }
}

/// One step of [`cache_ops`].
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Op {
    /// A request for key `k % 8`, awaited.
    Get(u8),
    /// A request for key `k % 8` left running in the background.
    Spawn(u8),
    /// Time passes (milliseconds).
    Advance(u16),
    /// Invalidate key `k % 8`.
    Invalidate(u8),
    /// The origin starts or stops failing.
    Fail(bool),
    /// The origin's delay (milliseconds).
    Delay(u8),
    /// Let background work run.
    Yield,
}

const TTL: Duration = Duration::from_millis(1000);
const SWR: Duration = Duration::from_millis(500);
const SIE: Duration = Duration::from_millis(2000);

/// What the origin produced: key, version (global counter), time.
type Made = (u64, u64, Instant);

#[derive(Debug, Default)]
struct OriginState {
    version: u64,
    fail: bool,
    delay: Duration,
}

#[derive(Debug, Clone, Default)]
struct Origin(Arc<Mutex<OriginState>>);

impl Service<u64> for Origin {
    type Response = Made;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Made, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: u64) -> Self::Future {
        let state = self.0.clone();
        let delay = state.lock().unwrap().delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            let mut s = state.lock().unwrap();
            if s.fail {
                return Err("origin failing".into());
            }
            s.version += 1;
            Ok((key, s.version, Instant::now()))
        })
    }
}

fn ops(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < 256 {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Runs the operations `data` encodes against a layer; panics if an invariant breaks.
pub fn cache_ops(data: &[u8]) {
    let ops = ops(data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run_ops(ops));
}

async fn run_ops(ops: Vec<Op>) {
    let cfg = CacheConfig {
        l1_slots: 4,
        l1_ttl: Duration::from_millis(300),
        l2_capacity: 6,
        default_ttl: TTL,
        negative_ttl: Duration::from_millis(300),
        stale_while_revalidate: SWR,
        stale_if_error: SIE,
        coalesce_timeout: Duration::from_millis(700),
        deterministic: true,
        ..CacheConfig::default()
    };
    let policy = FnPolicy::new(
        |k: &u64| Some(*k),
        |_: &Made| Cacheability::Store(Freshness::default()),
    );
    let layer = CacheLayer::new(cfg, policy).expect("valid config");
    let origin = Origin::default();
    let svc = layer.layer(origin.clone());
    let hour = Duration::from_secs(3600);
    // Per key: the origin's version counter when it was last invalidated.
    let mut invalidated: HashMap<u64, u64> = HashMap::new();
    // Since when the origin has been healthy (refreshes started before then may still fail).
    let mut healthy_since = Some(Instant::now());
    let mut background = Vec::new();
    for op in ops {
        match op {
            Op::Get(k) => {
                let key = u64::from(k % 8);
                let failing = origin.0.lock().unwrap().fail;
                let quiet = background
                    .iter()
                    .all(|t: &tokio::task::JoinHandle<_>| t.is_finished());
                let before = Instant::now();
                let mut svc = svc.clone();
                let res = tokio::time::timeout(hour, async move {
                    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                    svc.call(key).await
                })
                .await
                .expect("a request never ended");
                match res {
                    Ok((k, version, made)) => {
                        assert_eq!(k, key, "answered for another key");
                        // Never past its last window; past SWR only in place of a failure.
                        let age = before.saturating_duration_since(made);
                        assert!(age < TTL + SWR.max(SIE), "served {age:?} old");
                        let settled =
                            healthy_since.is_some_and(|t| before >= t + Duration::from_secs(1));
                        if quiet && settled {
                            assert!(age < TTL + SWR, "stale past SWR without a failure: {age:?}");
                        }
                        if quiet && let Some(&v) = invalidated.get(&key) {
                            assert!(
                                version > v,
                                "served version {version} from before its invalidation ({v})"
                            );
                        }
                    }
                    Err(_) => assert!(
                        failing || origin.0.lock().unwrap().fail,
                        "an error while the origin was healthy"
                    ),
                }
            }
            Op::Spawn(k) => {
                let mut svc = svc.clone();
                let key = u64::from(k % 8);
                background.push(tokio::spawn(async move {
                    let _ = std::future::poll_fn(|cx| svc.poll_ready(cx)).await;
                    let _ = svc.call(key).await;
                }));
            }
            Op::Advance(ms) => tokio::time::advance(Duration::from_millis(u64::from(ms))).await,
            Op::Invalidate(k) => {
                let key = u64::from(k % 8);
                invalidated.insert(key, origin.0.lock().unwrap().version);
                layer.handle().invalidate(&key);
            }
            Op::Fail(f) => {
                let mut o = origin.0.lock().unwrap();
                if f {
                    healthy_since = None;
                } else if o.fail {
                    healthy_since = Some(Instant::now());
                }
                o.fail = f;
            }
            Op::Delay(ms) => origin.0.lock().unwrap().delay = Duration::from_millis(u64::from(ms)),
            Op::Yield => tokio::task::yield_now().await,
        }
    }
    for t in background {
        tokio::time::timeout(hour, t)
            .await
            .expect("a background request never ended")
            .expect("no panic");
    }
    let st = layer.handle().stats();
    assert!(st.l1_hits + st.l2_hits + st.l3_hits <= st.lookups, "{st:?}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn smoke() {
        super::cache_control(b"max-age=5, no-store, stale-if-error=99999999999999999999");
        super::cache_ops(&[
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 200, 100, 50, 25, 12, 6, 3, 1, 0,
        ]);
    }
}
