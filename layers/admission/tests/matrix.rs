//! Admission with its capacity from the pool, on the adaptive limit's matrix (issue #15): the
//! 10 ms column (4, 10 and 100 workers) of every service-time distribution, through the
//! step, halve, restore, light-load and latency-shift scenarios, with `AdmissionConfig` and
//! `PoolConfig` both at their defaults and the pool's `Limiter` as admission's capacity
//! (`AdmissionLayer::with_capacity`). Requests that find the limit reached wait in admission's
//! queue (CoDel-bounded, tighter under overload with an adaptive capacity) instead of being
//! rejected at once, so the bars include that wait.
//!
//! The scenarios, bars and timelines are the pool matrix's own (`layers/pool/tests/matrix/
//! harness.rs`, included here), so both layers are held to the same criteria; timelines go
//! under `target/sim/admission-default/`. `cargo test -p tollgate-admission --test matrix --
//! --nocapture` prints the table.

#[path = "../../pool/tests/matrix/harness.rs"]
#[allow(dead_code, unreachable_pub)]
mod harness;
#[path = "../../pool/tests/matrix/scenario.rs"]
#[allow(dead_code, unreachable_pub)]
mod scenario;

use harness::*;
use scenario::{SCENARIOS, play};
use std::sync::Arc;
use tollgate_admission::{AdmissionConfig, AdmissionLayer};
use tollgate_pool::Limiter;
use tollgate_sim::{SimBackend, SimRequest, SimResponse};
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceExt};
use tower_layer::Layer;

/// Admission at its defaults in front of the backend, its capacity the run's limiter.
fn admission_front(
    limiter: Limiter,
    backend: SimBackend,
) -> BoxCloneService<SimRequest, SimResponse, BoxError> {
    let layer = AdmissionLayer::with_capacity(AdmissionConfig::default(), Arc::new(limiter))
        .expect("the default admission config is valid");
    BoxCloneService::new(layer.layer(backend).map_err(Into::into))
}

/// The 10 ms column: (mean service time in ms, workers).
const BACKENDS: [(u64, usize); 3] = [(10, 4), (10, 10), (10, 100)];

/// Cells where admission over the default limit does not meet the bar yet (issue #15 stays
/// open for them): they run and print their figures but do not fail the test; every other cell
/// must pass. Three groups:
/// - the 4-worker pools (2 after halving), short in the pool's own matrix too: the p99 bar
///   leaves a limit band one or two requests wide (the steps pass: on the exponential,
///   log-normal, bimodal and uniform ±50% backends with the overload bound's waits, on the
///   constant and uniform ±20% ones with the shorter waits the bound allows a steady latency);
/// - halve with 10 workers (5 after halving) on the exponential backend, where the pool's limit
///   settles far above the 5 workers (about 28-33): admission's queue starts every request
///   with the limit in flight, and right after the cut that is within the pool's calm
///   threshold (three quarters of the 10 workers it had seen), so requests that queued behind
///   the 5 workers count as calm and Knee restarts its baseline at 30-40 ms, a backend that
///   slowed down;
/// - the latency shift on noisy backends, which the pool alone passes: after the first cut
///   against the old baseline, admission's queue keeps the limit in flight, above the calm
///   threshold, so no calm sample shows the slower backend, and each further cut against the
///   old baseline takes the limit lower (to 5-7 for 10 workers) until a probe, seconds later,
///   lets calm samples through; alone, the pool's rejections leave gaps in which some requests
///   start calm.
const KNOWN_SHORT: &[(&str, &str)] = &[
    ("Bimodal 10ms x4", "Light70"),
    ("Bimodal 10ms x4", "Restore"),
    ("Constant 10ms x4", "Halve"),
    ("Exponential 10ms x10", "Halve"),
    ("Exponential 10ms x4", "Halve"),
    ("LogNormal 10ms x10", "Shift"),
    ("LogNormal 10ms x4", "Halve"),
    ("LogNormal 10ms x4", "Shift"),
    ("Uniform20 10ms x4", "Halve"),
    ("Uniform20 10ms x4", "Shift"),
    ("Uniform50 10ms x10", "Shift"),
    ("Uniform50 10ms x4", "Halve"),
];

async fn column(dist: Dist) {
    set_front("admission", admission_front);
    let mut failures = Vec::new();
    for (mean, workers) in BACKENDS {
        let cell = Cell::new(dist, mean, workers);
        for s in SCENARIOS {
            let v = play(cell, s, Algo::Default).await;
            let mark = if v.pass { "pass" } else { "FAIL" };
            eprintln!(
                "| Admission+Default | {} | {s:?} | {mark} | {} |",
                cell.name(),
                v.figures
            );
            let what = format!("{s:?}");
            let excused = KNOWN_SHORT
                .iter()
                .any(|(c, w)| *c == cell.name() && *w == what);
            if !v.pass && !excused {
                failures.push(format!("{} {s:?}: {}", cell.name(), v.figures));
            }
        }
    }
    assert!(failures.is_empty(), "{dist:?}: {failures:#?}");
}

#[tokio::test(start_paused = true)]
async fn admission_constant() {
    column(Dist::Constant).await;
}
#[tokio::test(start_paused = true)]
async fn admission_uniform20() {
    column(Dist::Uniform20).await;
}
#[tokio::test(start_paused = true)]
async fn admission_uniform50() {
    column(Dist::Uniform50).await;
}
#[tokio::test(start_paused = true)]
async fn admission_exponential() {
    column(Dist::Exponential).await;
}
#[tokio::test(start_paused = true)]
async fn admission_lognormal() {
    column(Dist::LogNormal).await;
}
#[tokio::test(start_paused = true)]
async fn admission_bimodal() {
    column(Dist::Bimodal).await;
}
