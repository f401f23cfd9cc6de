//! Layers that compose under overload: a pool under each endpoint sheds what its limit does
//! not admit; the outlier detector above must not count those rejections as failures of the
//! endpoint (they say nothing about it), or it ejects healthy endpoints one after another.

use std::time::Duration;
use tollgate_balance::{Balance, BalanceConfig};
use tollgate_pool::{Limiter, PoolConfig, PoolSizer, PoolSizerLayer};
use tollgate_sim::{LoadGen, Recorder, SimBackend};
use tower::Layer;

#[tokio::test(start_paused = true)]
async fn shedding_below_ejects_no_endpoint() {
    const LIMIT: usize = 5;
    let config = BalanceConfig {
        seed: Some(15),
        ..Default::default()
    };
    let mut limiters = Vec::new();
    let endpoints: Vec<(usize, PoolSizer<SimBackend>)> = (0..2)
        .map(|i| {
            let backend = SimBackend::builder()
                .workers(LIMIT)
                .service_time(Duration::from_millis(10))
                .seed(i as u64)
                .build();
            let limiter = Limiter::new(PoolConfig {
                min_limit: LIMIT,
                max_limit: LIMIT,
                initial_limit: LIMIT,
                ..PoolConfig::default()
            })
            .unwrap();
            limiters.push(limiter.clone());
            (i, PoolSizerLayer::new(limiter).layer(backend))
        })
        .collect();
    let svc = Balance::new(endpoints, config).unwrap();
    let handle = svc.handle();
    // The two pools admit 2 x 5 / 10 ms = 1000 requests per second; offer three times that.
    let rec = Recorder::new();
    let load = LoadGen::constant(3000.0, Duration::from_secs(5)).seed(15);
    tokio::time::timeout(Duration::from_secs(3600), load.run(svc, &rec))
        .await
        .expect("the run finished");

    let s = rec.summary(Duration::from_secs(1), Duration::from_secs(5));
    eprintln!(
        "goodput {:.0}/s, rejected {:?}, endpoints {:?}",
        s.goodput_rps(),
        s.rejected_by_kind,
        handle.endpoints()
    );
    assert!(s.rejected > 0, "the pools shed nothing");
    assert_eq!(s.errors, 0);
    assert_eq!(handle.ejected(), 0);
    assert!(
        handle.endpoints().iter().all(|e| e.ejections == 0),
        "an endpoint was ejected for its pool's shedding: {:?}",
        handle.endpoints()
    );
    assert!(
        s.goodput_rps() >= 0.9 * 1000.0,
        "goodput {}",
        s.goodput_rps()
    );
    for l in &limiters {
        assert_eq!(l.in_flight(), 0);
    }
}
