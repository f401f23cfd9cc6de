//! Half-open admission under real threads: eight threads hammer one breaker that keeps
//! reopening (every probe round has failures), and the probes in flight at once never exceed
//! the permitted count. Loom checks the interleavings exhaustively for two and three threads;
//! this checks the same invariant at a scale loom cannot reach.

use crate::config::{BreakerConfig, SlidingWindow};
use crate::machine::Core;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;
use tollgate_core::Outcome;

#[test]
fn probes_in_flight_never_exceed_the_limit_across_threads() {
    const PERMITTED: usize = 3;
    let config = BreakerConfig {
        sliding_window: SlidingWindow::Count { size: 4 },
        minimum_calls: 4,
        wait_in_open: Duration::from_nanos(5),
        permitted_calls_in_half_open: PERMITTED as u32,
        seed: Some(9),
        ..BreakerConfig::default()
    };
    let core = Arc::new(Core::new(&config, "threads".into()));
    // SeqCst throughout: test bookkeeping, kept simple.
    let clock = AtomicU64::new(0);
    let in_flight = AtomicUsize::new(0);
    let max = AtomicUsize::new(0);
    let probes = AtomicUsize::new(0);
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (core, clock, in_flight, max, probes, barrier) =
                (&core, &clock, &in_flight, &max, &probes, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..5_000u64 {
                    let now = clock.fetch_add(1, SeqCst);
                    let Ok(p) = core.acquire(|| now) else {
                        continue;
                    };
                    if p.is_probe() {
                        probes.fetch_add(1, SeqCst);
                        let n = in_flight.fetch_add(1, SeqCst) + 1;
                        max.fetch_max(n, SeqCst);
                        std::hint::spin_loop();
                        in_flight.fetch_sub(1, SeqCst);
                    }
                    let now = clock.load(SeqCst);
                    match (i + t) % 4 {
                        0 => core.release(p),
                        1 => core.record(p, Outcome::Failure, 0, || now),
                        _ => core.record(p, Outcome::Success, 0, || now),
                    }
                }
            });
        }
    });
    let max = max.load(SeqCst);
    assert!(
        max <= PERMITTED,
        "{max} probes in flight, {PERMITTED} permitted"
    );
    assert!(
        probes.load(SeqCst) > 100,
        "the run should go through many half-open rounds"
    );
    assert_eq!(
        core.probes_in_flight(),
        0,
        "every probe was finished or given back"
    );
}
