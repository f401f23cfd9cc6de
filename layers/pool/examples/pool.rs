//! A backend loses half its workers under steady load; the pool finds the new limit.
//!
//! `cargo run -p tollgate-pool --example pool` (simulated time: it finishes at once).

use std::time::Duration;
use tollgate_pool::{AtLimit, PoolConfig, PoolSizerLayer};
use tollgate_sim::{LoadGen, Recorder, SimBackend};
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    // 10 workers x 10 ms = 1000 requests per second; 5 workers from t = 2 s.
    let backend = SimBackend::builder()
        .workers(10)
        .service_time(Duration::from_millis(10))
        .seed(1)
        .build();
    backend.set_capacity_at(Duration::from_secs(2), 5);

    let layer = PoolSizerLayer::from_config(PoolConfig {
        at_limit: AtLimit::Wait {
            max_wait: Duration::from_millis(10),
        },
        ..PoolConfig::default()
    })
    .expect("a valid config");
    let limiter = layer.limiter().clone();
    let service = ServiceBuilder::new().layer(layer).service(backend);

    let recorder = Recorder::with_window(Duration::from_millis(500));
    let load = LoadGen::constant(900.0, Duration::from_secs(4)).seed(7);
    let report = async {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let s = limiter.snapshot();
            println!(
                "limit {:5.1}  in flight {:2}  baseline {:?}",
                s.limit, s.in_flight, s.rtt.baseline
            );
        }
    };
    tokio::join!(load.run(service, &recorder), report);

    for (i, w) in recorder.windows().iter().enumerate() {
        println!(
            "{:4} ms  goodput {:4.0}/s  rejected {:4}  p99 {:?}",
            i * 500,
            w.goodput_rps(),
            w.rejected,
            w.p99
        );
    }
}
