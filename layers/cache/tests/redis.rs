//! Against a real `redis-server` started on a free loopback port (skipped, loudly, when it is
//! not installed, unless `TOLLGATE_REQUIRE_REDIS=1`). Redis I/O runs on real time, so each test
//! is short and every wait is bounded.
#![cfg(feature = "redis")]

mod support;

use std::future::Future;
use std::time::Duration;
use support::{Origin, Resp, policy};
use tollgate_cache::redis::{Codec, RedisTier, RedisTierConfig};
use tollgate_cache::{CacheConfig, CacheHandle, CacheLayer};
use tollgate_core::testing::redis::RedisServer;
use tower_layer::Layer;

/// Keys as decimal text, answers as `F:key:n`, `N` or `E`.
struct TestCodec;

impl Codec<u64, Resp> for TestCodec {
    fn encode_key(&self, key: &u64) -> Vec<u8> {
        key.to_string().into_bytes()
    }
    fn decode_key(&self, bytes: &[u8]) -> Option<u64> {
        std::str::from_utf8(bytes).ok()?.parse().ok()
    }
    fn encode_value(&self, v: &Resp) -> Vec<u8> {
        match v {
            Resp::Found(k, n) => format!("F:{k}:{n}"),
            Resp::NotFound => "N".into(),
            Resp::ServerError => "E".into(),
        }
        .into_bytes()
    }
    fn decode_value(&self, bytes: &[u8]) -> Option<Resp> {
        let s = std::str::from_utf8(bytes).ok()?;
        match s.split(':').collect::<Vec<_>>()[..] {
            ["F", k, n] => Some(Resp::Found(k.parse().ok()?, n.parse().ok()?)),
            ["N"] => Some(Resp::NotFound),
            ["E"] => Some(Resp::ServerError),
            _ => None,
        }
    }
}

const LIMIT: Duration = Duration::from_secs(20);

fn server() -> Option<RedisServer> {
    let s = RedisServer::start();
    if s.is_none() {
        eprintln!("skipping: redis-server not installed");
    }
    s
}

fn instance(url: &str, cfg: CacheConfig) -> (CacheLayer<support::Policy>, Origin) {
    let tier = RedisTier::new(RedisTierConfig::new(url), TestCodec);
    (
        CacheLayer::with_redis(cfg, policy(), tier).unwrap(),
        Origin::default(),
    )
}

/// Waits (real time, bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connected(handles: &[&CacheHandle<u64, Resp>]) {
    until("the L3 connections", || {
        handles.iter().all(|h| h.l3_connected())
    })
    .await;
}

async fn exists(url: &str, key: u64) -> bool {
    let client = redis::Client::open(url).unwrap();
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    let n: i64 = redis::cmd("EXISTS")
        .arg(format!("tollgate:cache:{key}"))
        .query_async(&mut conn)
        .await
        .unwrap_or(0);
    n == 1
}

async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("test ran past its limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_l3_and_invalidation_reaches_both() {
    let Some(server) = server() else { return };
    bounded(async {
        let url = server.url();
        let (a, origin_a) = instance(&url, CacheConfig::default());
        let (b, origin_b) = instance(&url, CacheConfig::default());
        let (ha, hb) = (a.handle(), b.handle());
        connected(&[&ha, &hb]).await;
        let (sa, sb) = (a.layer(origin_a.clone()), b.layer(origin_b.clone()));

        assert_eq!(support::get(&sa, 1).await.unwrap(), Resp::Found(1, 1));
        until_exists(&url, 1).await;
        // B finds it in L3: its origin is never asked.
        assert_eq!(support::get(&sb, 1).await.unwrap(), Resp::Found(1, 1));
        assert_eq!((origin_a.calls(), origin_b.calls()), (1, 0));
        assert_eq!(hb.stats().l3_hits, 1);
        // Now both hold it locally.
        assert_eq!(support::get(&sb, 1).await.unwrap(), Resp::Found(1, 1));
        assert_eq!(hb.stats().l3_hits, 1);

        // Invalidated on A: gone from Redis and, through pub/sub, from B's L1 and L2.
        ha.invalidate(&1);
        until("B to hear of the invalidation", || {
            hb.stats().invalidations >= 1
        })
        .await;
        assert!(!exists(&url, 1).await);
        assert_eq!(
            support::get(&sb, 1).await.unwrap(),
            Resp::Found(1, 1),
            "B's origin: its first call"
        );
        assert_eq!(origin_b.calls(), 1);
        until_exists(&url, 1).await;
        assert_eq!(
            support::get(&sa, 1).await.unwrap(),
            Resp::Found(1, 1),
            "A reads B's fill from L3"
        );
        assert_eq!(origin_a.calls(), 1);
    })
    .await;
}

async fn until_exists(url: &str, key: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !exists(url, key).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "key {key} never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_mid_run_loses_no_request_and_the_layer_recovers() {
    let Some(mut server) = server() else { return };
    bounded(async {
        let url = server.url();
        // Short local TTLs and no L1, so requests keep going to L3.
        let cfg = CacheConfig {
            l1_slots: 0,
            default_ttl: Duration::from_millis(50),
            ..CacheConfig::default()
        };
        let (a, origin) = instance(&url, cfg.clone());
        let ha = a.handle();
        connected(&[&ha]).await;
        let svc = a.layer(origin.clone());
        let load = tokio::spawn({
            let svc = svc.clone();
            async move {
                let mut served = 0u32;
                let end = tokio::time::Instant::now() + Duration::from_millis(1500);
                while tokio::time::Instant::now() < end {
                    for k in 0..20 {
                        let res = support::get(&svc, k)
                            .await
                            .expect("a request failed while Redis was down");
                        assert!(matches!(res, Resp::Found(key, _) if key == k));
                        served += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                served
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.stop();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let errors_while_down = ha.stats().l3_errors;
        server.restart();
        let served = load.await.unwrap();
        assert!(served > 100, "only {served} requests served");
        assert!(errors_while_down > 0, "the outage went unnoticed");

        // Back: A reads L3 again (what another instance wrote) and writes to it again. A's
        // entries live 50 ms, in Redis too, so look for its writes right away.
        until("the reconnection", || ha.l3_connected()).await;
        let (b, origin_b) = instance(&url, CacheConfig::default());
        connected(&[&b.handle()]).await;
        support::get(&b.layer(origin_b.clone()), 9).await.unwrap();
        until_exists(&url, 9).await;
        let hits_before = ha.stats().l3_hits;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while ha.stats().l3_hits == hits_before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "A never read L3 again"
            );
            support::get(&svc, 9).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        'written: loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "A's fills never reached Redis again"
            );
            support::get(&svc, 11).await.unwrap();
            for _ in 0..4 {
                if exists(&url, 11).await {
                    break 'written;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_timeout_not_a_hang() {
    let Some(server) = server() else { return };
    bounded(async {
        let url = server.url();
        let (a, origin) = instance(
            &url,
            CacheConfig {
                l1_slots: 0,
                ..CacheConfig::default()
            },
        );
        let ha = a.handle();
        connected(&[&ha]).await;
        let svc = a.layer(origin.clone());
        server.pause();
        let started = tokio::time::Instant::now();
        for k in 0..20 {
            assert_eq!(
                support::get(&svc, k).await.unwrap(),
                Resp::Found(k, k as usize + 1)
            );
        }
        // At most `server.failures` reads wait out the 50 ms timeout, then the breaker skips L3.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        assert!(ha.stats().l3_errors >= 5);
        server.resume();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_redis_is_a_miss() {
    let Some(server) = server() else { return };
    bounded(async {
        let url = server.url();
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg("tollgate:cache:3")
            .arg("garbage")
            .query_async(&mut conn)
            .await
            .unwrap();
        let (a, origin) = instance(&url, CacheConfig::default());
        let ha = a.handle();
        connected(&[&ha]).await;
        let svc = a.layer(origin.clone());
        assert_eq!(support::get(&svc, 3).await.unwrap(), Resp::Found(3, 1));
        assert_eq!(ha.stats().l3_errors, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_entries_in_l3_are_served_while_they_revalidate() {
    let Some(server) = server() else { return };
    bounded(async {
        let url = server.url();
        // Fresh for 200 ms, then served stale for 10 s while revalidating.
        let cfg = CacheConfig {
            default_ttl: Duration::from_millis(200),
            stale_while_revalidate: Duration::from_secs(10),
            ..CacheConfig::default()
        };
        let (a, origin_a) = instance(&url, cfg.clone());
        let (b, origin_b) = instance(&url, cfg);
        let (ha, hb) = (a.handle(), b.handle());
        connected(&[&ha, &hb]).await;
        support::get(&a.layer(origin_a.clone()), 5).await.unwrap();
        until_exists(&url, 5).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        // B has never seen key 5: L3's stale copy answers at once, then B refreshes it.
        let sb = b.layer(origin_b.clone());
        assert_eq!(support::get(&sb, 5).await.unwrap(), Resp::Found(5, 1));
        assert_eq!(origin_b.calls(), 0);
        assert_eq!(hb.stats().stale_served, 1);
        support::get(&sb, 5).await.unwrap();
        until("B's background refresh", || origin_b.calls() == 1).await;
    })
    .await;
}

#[test]
fn an_invalid_redis_config_is_refused_at_build_time() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tier = RedisTier::new(RedisTierConfig::new("not a url"), TestCodec);
        let err = CacheLayer::with_redis(CacheConfig::default(), policy(), tier).unwrap_err();
        assert_eq!(err.field(), "server.url");
    });
}
