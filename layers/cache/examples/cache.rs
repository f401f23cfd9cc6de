//! A read-through cache in front of a slow backend, shared by two instances through Redis.
//!
//! `cargo run -p tollgate-cache --features redis --example cache`
//!
//! It starts its own `redis-server` on a free loopback port when one is installed; without it,
//! it says so and runs one instance on L1 and L2 only. It finishes by itself in a second or two.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tollgate_cache::redis::{BytesCodec, RedisTier, RedisTierConfig};
use tollgate_cache::{CacheConfig, CacheLayer, Cacheability, FnPolicy, Freshness};
use tollgate_core::BoxError;
use tollgate_core::testing::redis::RedisServer;
use tower::{ServiceBuilder, ServiceExt};

/// A backend that takes 20 ms per answer and counts its calls.
fn backend(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<String, Response = Bytes, Error = BoxError, Future = impl Send> + Clone {
    tower::service_fn(move |key: String| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, BoxError>(Bytes::from(format!("value of {key}")))
        }
    })
}

type Policy = FnPolicy<String, Bytes, fn(&String) -> Option<String>, fn(&Bytes) -> Cacheability>;

fn policy() -> Policy {
    // The policy's key function takes the request type, `&String`.
    #[allow(clippy::ptr_arg)]
    fn key(k: &String) -> Option<String> {
        Some(k.clone())
    }
    fn keep(_: &Bytes) -> Cacheability {
        Cacheability::Store(Freshness::ttl(Duration::from_secs(30)))
    }
    FnPolicy::new(
        key as fn(&String) -> Option<String>,
        keep as fn(&Bytes) -> Cacheability,
    )
}

fn print_stats(name: &str, layer: &CacheLayer<Policy>, calls: &AtomicUsize) {
    let s = layer.handle().stats();
    println!(
        "{name}: {} lookups, hit ratio {:.1}% (L1 {:.1}%, L2 {:.1}%, L3 {:.1}%), {} coalesced, {} backend calls, {} L3 errors",
        s.lookups,
        100.0 * s.hit_ratio(),
        100.0 * s.l1_hit_ratio(),
        100.0 * s.l2_hit_ratio(),
        100.0 * s.l3_hit_ratio(),
        s.coalesced,
        calls.load(Ordering::Relaxed),
        s.l3_errors,
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let cfg = CacheConfig {
        stale_while_revalidate: Duration::from_secs(5),
        ..CacheConfig::default()
    };
    let server = RedisServer::start();
    let make = |url: Option<&str>| -> Result<CacheLayer<Policy>, BoxError> {
        Ok(match url {
            Some(url) => CacheLayer::with_redis(
                cfg.clone(),
                policy(),
                RedisTier::new(RedisTierConfig::new(url), BytesCodec),
            )?,
            None => CacheLayer::new(cfg.clone(), policy())?,
        })
    };
    let url = server.as_ref().map(RedisServer::url);
    match &url {
        Some(url) => println!("redis-server started at {url}: two instances share L3"),
        None => println!("redis-server not installed: running L1/L2 only (one instance, no L3)"),
    }

    let a = make(url.as_deref())?;
    let calls_a = Arc::new(AtomicUsize::new(0));
    let svc_a = ServiceBuilder::new()
        .layer(a.clone())
        .service(backend(calls_a.clone()));
    if url.is_some() {
        // Connections are made in the background; requests never wait for them.
        for _ in 0..200 {
            if a.handle().l3_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // 100 concurrent requests for one key: one backend call.
    let burst: Vec<_> = (0..100)
        .map(|_| tokio::spawn(svc_a.clone().oneshot("hot".to_string())))
        .collect();
    for r in burst {
        r.await??;
    }
    println!(
        "100 concurrent misses on one key -> {} backend call(s)",
        calls_a.load(Ordering::Relaxed)
    );

    // A skewed load over 1 000 keys.
    for i in 0..5_000u64 {
        let key = format!("k{}", (i * i) % 1_000 / (1 + i % 7));
        svc_a.clone().oneshot(key).await?;
    }
    print_stats("instance A", &a, &calls_a);

    if let Some(url) = &url {
        let b = make(Some(url))?;
        let calls_b = Arc::new(AtomicUsize::new(0));
        let svc_b = ServiceBuilder::new()
            .layer(b.clone())
            .service(backend(calls_b.clone()));
        for _ in 0..200 {
            if b.handle().l3_connected() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let v = svc_b.clone().oneshot("hot".to_string()).await?;
        println!(
            "instance B reads {:?} with {} backend call(s): from L3",
            v,
            calls_b.load(Ordering::Relaxed)
        );
        a.handle().invalidate(&"hot".to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
        svc_b.clone().oneshot("hot".to_string()).await?;
        println!(
            "after A invalidated it, B asked its backend: {} call(s)",
            calls_b.load(Ordering::Relaxed)
        );
        print_stats("instance B", &b, &calls_b);
    }
    Ok(())
}
