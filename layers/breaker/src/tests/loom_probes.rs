//! Loom models of the lock-free half-open admission.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p
//! tollgate-breaker --lib --target-dir target/loom -- loom`.
//!
//! Each model opens a breaker whose wait has passed, then lets threads race the OPEN →
//! HALF_OPEN transition (and the reset of the probe word) and the admission CAS. Properties:
//! - probes of one half-open period in flight at once never exceed the permitted count;
//! - a period never takes more results than permitted, and exactly one thread decides it;
//! - a probe racing a handle that ends the period is either admitted before it or given back.

use crate::config::{BreakerConfig, SlidingWindow};
use crate::machine::Core;
use crate::state::State;
use crate::sync::Arc;
use crate::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use crate::word::Permit;
use loom::thread;
use std::time::Duration;
use tollgate_core::Outcome;

fn opened(probes: u32) -> Arc<Core> {
    let config = BreakerConfig {
        sliding_window: SlidingWindow::Count { size: 1 },
        minimum_calls: 1,
        wait_in_open: Duration::from_nanos(1),
        permitted_calls_in_half_open: probes,
        seed: Some(7),
        ..BreakerConfig::default()
    };
    let core = Core::new(&config, "loom".into());
    let p = core.acquire(|| 0).unwrap();
    core.record(p, Outcome::Failure, 0, || 0);
    assert_eq!(core.state(), State::Open);
    Arc::new(core)
}

/// Two threads race for the single probe of a fresh half-open period.
#[test]
fn loom_one_probe_across_two_threads() {
    loom::model(|| {
        let core = opened(1);
        let admitted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let core = core.clone();
                let admitted = admitted.clone();
                thread::spawn(move || -> Option<Permit> {
                    let p = core.acquire(|| 10).ok()?;
                    if p.is_probe() {
                        // SeqCst: a test counter; total order keeps the assertion simple.
                        let n = admitted.fetch_add(1, SeqCst) + 1;
                        assert!(n <= 1, "{n} probes admitted, 1 permitted");
                    }
                    Some(p)
                })
            })
            .collect();
        let permits: Vec<Permit> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        let probes = permits.iter().filter(|p| p.is_probe()).count();
        assert_eq!(probes, 1, "the first prober after the wait gets the probe");
        assert_eq!(core.state(), State::HalfOpen);
    });
}

/// Three threads share two probe slots; one gives its slot back, one finishes. In flight never
/// exceeds two, and at most two results are taken.
#[test]
fn loom_two_probes_across_three_threads_with_release() {
    loom::model(|| {
        let core = opened(2);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let core = core.clone();
                let in_flight = in_flight.clone();
                thread::spawn(move || {
                    let Ok(p) = core.acquire(|| 10) else { return };
                    if !p.is_probe() {
                        core.record(p, Outcome::Success, 0, || 10);
                        return;
                    }
                    // SeqCst: a test counter.
                    let n = in_flight.fetch_add(1, SeqCst) + 1;
                    assert!(n <= 2, "{n} probes in flight, 2 permitted");
                    in_flight.fetch_sub(1, SeqCst);
                    if i == 0 {
                        core.release(p);
                    } else {
                        core.record(p, Outcome::Success, 0, || 10);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(core.probes_in_flight() == 0);
        let s = core.state();
        assert!(matches!(s, State::HalfOpen | State::Closed), "{s:?}");
    });
}

/// Two probes finish at once with different results: exactly one of them decides.
#[test]
fn loom_one_decider() {
    loom::model(|| {
        let core = opened(2);
        let a = core.acquire(|| 10).unwrap();
        let b = core.acquire(|| 10).unwrap();
        assert!(a.is_probe() && b.is_probe());
        let c1 = core.clone();
        let t = thread::spawn(move || c1.record(a, Outcome::Failure, 0, || 10));
        core.record(b, Outcome::Success, 0, || 10);
        t.join().unwrap();
        // One failure in two probes is the default 50 %: the period reopens, once.
        assert_eq!(core.state(), State::Open);
        assert_eq!(core.snapshot(10).opens_in_a_row, 2);
    });
}

/// A prober racing a handle that forces the breaker open: whatever the interleaving, the probe
/// word counts exactly the probes handed out (a probe admitted into the ended period is given
/// back, not leaked), and a handed-out probe belongs to a period that was live when admitted.
#[test]
fn loom_probe_racing_force_open() {
    loom::model(|| {
        let core = opened(1);
        // Enter half-open and free the slot again, so the race is only admission vs the handle.
        let first = core.acquire(|| 10).unwrap();
        assert!(first.is_probe());
        core.release(first);
        let c1 = core.clone();
        let prober = thread::spawn(move || c1.acquire(|| 10).ok());
        core.move_to(None, State::ForcedOpen);
        let got = prober.join().unwrap();
        let held = u64::from(got.is_some_and(|p| p.is_probe()));
        assert_eq!(core.probes_in_flight(), held);
        assert_eq!(core.state(), State::ForcedOpen);
        if let Some(p) = got {
            core.release(p);
        }
        assert_eq!(core.probes_in_flight(), 0);
    });
}
