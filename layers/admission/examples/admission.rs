//! Priority admission in front of a simulated backend at three times its capacity.
//!
//! `cargo run -p tollgate-admission --example admission`
//!
//! A backend of 7 workers (10 ms each, about 700 requests per second) gets 2000 requests per
//! second over four classes. The top class is served at full speed; the lowest is shed first.
//! Time is tokio's paused clock, so the 5 simulated seconds take a moment.

use std::time::Duration;
use tollgate_admission::{AdmissionConfig, AdmissionLayer, Reason, Ticket};
use tollgate_sim::{LoadGen, Recorder, ServiceTime, SimBackend, SimRequest};
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let backend = SimBackend::builder()
        .workers(7)
        .service_time(ServiceTime::Exponential {
            mean: Duration::from_millis(10),
        })
        .seed(1)
        .build();
    let mut config = AdmissionConfig {
        limit: 7,
        ..AdmissionConfig::default()
    };
    // Keep one slot free for the top class so it never waits behind lower ones.
    config.classes[0].headroom = 1;
    let layer = AdmissionLayer::new(config)
        .expect("a valid config")
        .prioritize(|r: &SimRequest| Ticket {
            class: usize::from(r.class),
            deadline: r.deadline,
            key: None,
        });
    let handle = layer.handle();
    let service = ServiceBuilder::new().layer(layer).service(backend);

    let recorder = Recorder::new();
    let load = LoadGen::constant(2000.0, Duration::from_secs(5))
        .classes(&[(0, 5), (1, 15), (2, 30), (3, 50)])
        .seed(2);
    load.run(service, &recorder).await;

    let snap = handle.snapshot();
    println!(
        "{:<16} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "class", "issued", "served", "shed", "p50", "p99", "wait p99"
    );
    for (c, cs) in snap.classes.iter().enumerate() {
        let s = recorder.summary_class(c as u8, Duration::ZERO, Duration::from_secs(6));
        println!(
            "{:<16} {:>8} {:>8} {:>7} {:>9?} {:>9?} {:>9?}",
            cs.name,
            s.issued,
            s.ok,
            cs.rejected_total(),
            s.p50.unwrap_or_default(),
            s.p99.unwrap_or_default(),
            cs.queue_wait.p99,
        );
    }
    let timeouts: u64 = snap
        .classes
        .iter()
        .map(|c| c.rejected(Reason::QueueTimeout))
        .sum();
    let total = recorder.total();
    println!(
        "goodput {:.0} rps of {:.0} offered; {timeouts} left the queue at its time bound; every request answered: {}",
        total.goodput_rps(),
        total.offered_rps(),
        total.ledger_balanced() && recorder.outstanding() == 0,
    );
}
