//! Zipf(1) popularity over 10 000 keys at cache sizes of 1 %, 5 % and 10 % of the key space:
//! the layer's hit ratio (L1 + L2, L2 sized like moka; L1 is a small per-core copy of the
//! hottest keys, not extra capacity) must be at least moka's alone. It also runs the layer with
//! L1 off, which must match moka exactly (same hash key, same operations). Seeded, so the
//! figures repeat; `cargo test -p tollgate-cache --test zipf -- --nocapture` shows them.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tollgate_cache::{CacheConfig, CacheLayer, Cacheability, FnPolicy, Freshness};
use tollgate_core::BoxError;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

const KEYS: usize = 10_000;
const REQUESTS: usize = 100_000;

/// Inverse-CDF sampler for Zipf(s = 1) over `KEYS` keys; key 0 is the most popular.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new() -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=KEYS)
            .map(|i| {
                acc += 1.0 / i as f64;
                acc
            })
            .collect();
        let total = acc;
        cdf.iter_mut().for_each(|c| *c /= total);
        Self { cdf }
    }

    fn sample(&self, rng: &mut SmallRng) -> u64 {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(KEYS - 1) as u64
    }
}

fn trace() -> Vec<u64> {
    let zipf = Zipf::new();
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    (0..REQUESTS).map(|_| zipf.sample(&mut rng)).collect()
}

/// The hash key the layer's `deterministic` L2 uses.
fn seeded() -> foldhash::quality::SeedableRandomState {
    foldhash::quality::SeedableRandomState::with_seed(
        CacheConfig::default().seed,
        foldhash::SharedSeed::global_fixed(),
    )
}

fn moka_alone(capacity: u64, trace: &[u64]) -> f64 {
    // The hash key the layer's `deterministic` L2 uses, so the runs repeat exactly and differ
    // only by the layer.
    let cache = moka::sync::Cache::<u64, u64>::builder()
        .max_capacity(capacity)
        .build_with_hasher(seeded());
    let mut hits = 0;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, k);
        }
    }
    hits as f64 / trace.len() as f64
}

async fn layered(capacity: u64, l1_slots: usize, trace: &[u64]) -> f64 {
    let cfg = CacheConfig {
        l1_slots,
        l2_capacity: capacity,
        deterministic: true,
        default_ttl: Duration::from_secs(3600),
        ..CacheConfig::default()
    };
    eprintln!(
        "  layer with L1 {l1_slots} slots (one thread), L2 {} entries:",
        cfg.l2_capacity
    );
    let layer = CacheLayer::new(
        cfg,
        FnPolicy::new(
            |k: &u64| Some(*k),
            |_: &u64| Cacheability::Store(Freshness::default()),
        ),
    )
    .unwrap();
    let mut svc = layer.layer(tower::service_fn(
        |k: u64| async move { Ok::<u64, BoxError>(k) },
    ));
    for (i, &k) in trace.iter().enumerate() {
        if i % 10 == 0 {
            // 10 000 requests a second: L1 copies (1 s) lapse and L2 sees the hot keys again.
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let v = svc.ready().await.unwrap().call(k).await.unwrap();
        assert_eq!(v, k);
    }
    let st = layer.handle().stats();
    eprintln!(
        "    L1 {:.3} + L2 {:.3} = {:.3} ({} inner calls)",
        st.l1_hit_ratio(),
        st.l2_hit_ratio(),
        st.hit_ratio(),
        st.inner_calls
    );
    st.hit_ratio()
}

#[tokio::test(start_paused = true)]
async fn zipf_hit_ratio_is_at_least_mokas() {
    let trace = trace();
    for pct in [1u64, 5, 10] {
        let capacity = KEYS as u64 * pct / 100;
        eprintln!("cache size {pct}% ({capacity} entries):");
        let ours = layered(capacity, 16, &trace).await;
        let l2_only = layered(capacity, 0, &trace).await;
        let moka = moka_alone(capacity, &trace);
        eprintln!(
            "  moka alone: {moka:.3}; layer / moka = {:.3} (L1 off: {:.3})",
            ours / moka,
            l2_only / moka
        );
        assert!(
            ours >= moka,
            "size {pct}%: layer {ours:.4} < moka {moka:.4}"
        );
        assert!(
            (l2_only - moka).abs() < 1e-9,
            "size {pct}%: L2 alone {l2_only:.4} differs from moka {moka:.4}"
        );
    }
}
