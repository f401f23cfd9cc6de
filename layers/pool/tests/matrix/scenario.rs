//! The scenarios of one cell, and the list both matrices (tollgate-pool's and
//! tollgate-admission's, which includes this file and `harness.rs`) run.

use crate::harness::*;
use tollgate_sim::{Change, Profile};

/// 0.8 C for 5 s, then 1.4 C for 10 s (stretched): within the settling deadline a window
/// has goodput >= 95% of C and p99 <= 2x the unloaded p99, and 90% of the later windows
/// too; goodput never under 50% of C.
pub(crate) async fn step(cell: Cell, algo: Algo) -> Verdict {
    let c = cell.capacity();
    let t0 = cell.at(5.0);
    let end = cell.at(15.0);
    let plan = Plan {
        name: "step",
        load: Profile::Step {
            before: 0.8 * c,
            after: 1.4 * c,
            at: t0,
        },
        changes: vec![],
        workers: cell.workers,
        duration: end,
        seed: 1,
    };
    let r = run(cell, algo, &plan).await;
    let p99 = cell.unloaded_p99() * 2;
    let mut v = settles(
        &r,
        cell.window(),
        t0,
        cell.settle(),
        end,
        (0.5 * c, cell.window()),
        |s| s.goodput_rps() >= 0.95 * c && s.p99.is_some_and(|p| p <= p99),
    );
    v.figures += &format!(
        "; limit {:.1} (workers {}), baseline {:?}",
        r.median_limit(t0 + cell.settle(), end),
        cell.workers,
        r.limiter.snapshot().rtt.baseline
    );
    v
}

/// Capacity C -> C/2 (half the workers) at 0.9 C offered: the step's criterion against
/// C/2.
pub(crate) async fn halve(cell: Cell, algo: Algo) -> Verdict {
    let c = cell.capacity();
    let half = cell.workers / 2;
    let c2 = c * half as f64 / cell.workers as f64;
    // The noise rule against the capacity that is left: windows and times stretch by it.
    let w = cell.window_at(c2);
    let f = w.as_secs_f64();
    let t0 = secs(5).mul_f64(f);
    let end = secs(15).mul_f64(f);
    let plan = Plan {
        name: "halve",
        load: Profile::Constant(0.9 * c),
        changes: vec![(t0, Change::Workers(half))],
        workers: cell.workers,
        duration: end,
        seed: 2,
    };
    let r = run(cell, algo, &plan).await;
    let p99 = cell.unloaded_p99() * 2;
    let settle = secs(1).max(cell.mean * 20).mul_f64(f);
    let mut v = settles(&r, w, t0, settle, end, (0.5 * c2, t0), |s| {
        s.goodput_rps() >= 0.95 * c2 && s.p99.is_some_and(|p| p <= p99)
    });
    v.figures += &format!(
        "; limit {:.1} (workers {half})",
        r.median_limit(t0 + settle, end)
    );
    v
}

/// Capacity C/2 -> C at 0.9 C offered: goodput >= 95% of 0.9 C within 5 s (stretched),
/// and in 90% of the later windows. "0.9 C" is what the window offered: Poisson arrivals
/// at 0.9 C vary by `1 / sqrt(0.9 C)` per second (5% at C = 400), so a window that was
/// offered less cannot serve more, and no limit could meet a bar on the nominal rate.
pub(crate) async fn restore(cell: Cell, algo: Algo) -> Verdict {
    let c = cell.capacity();
    let t0 = cell.at(5.0);
    let end = t0 + cell.at(5.0) + cell.offered_window() * 5;
    let plan = Plan {
        name: "restore",
        load: Profile::Constant(0.9 * c),
        changes: vec![(t0, Change::Workers(cell.workers))],
        workers: cell.workers / 2,
        duration: end,
        seed: 3,
    };
    let r = run(cell, algo, &plan).await;
    let mut v = settles(
        &r,
        cell.offered_window(),
        t0,
        cell.at(5.0),
        end,
        (0.0, t0),
        |s| s.goodput_rps() >= 0.95 * s.offered_rps().min(0.9 * c),
    );
    v.figures += &format!(
        "; limit {:.1} (workers {})",
        r.median_limit(t0 + cell.at(5.0), end),
        cell.workers
    );
    v
}

/// Light load at `load` x C: after a warm-up of 5 s (stretched), at most `max_rejected`
/// of the requests are rejected over 20 s (stretched).
pub(crate) async fn light(cell: Cell, algo: Algo, load: f64, max_rejected: f64) -> Verdict {
    let c = cell.capacity();
    let warm = cell.at(5.0);
    let end = cell.at(25.0);
    let plan = Plan {
        name: if load < 0.75 { "light70" } else { "light80" },
        load: Profile::Constant(load * c),
        changes: vec![],
        workers: cell.workers,
        duration: end,
        seed: 5,
    };
    let r = run(cell, algo, &plan).await;
    let s = r.summary(warm, end);
    let rate = s.rejected as f64 / s.issued.max(1) as f64;
    Verdict {
        pass: rate <= max_rejected,
        figures: format!(
            "rejected {:.3}% (bar {:.1}%), p99 {}ms, limit {:.1}",
            rate * 100.0,
            max_rejected * 100.0,
            s.p99.unwrap_or_default().as_millis(),
            r.median_limit(warm, end)
        ),
    }
}

/// The mean service time doubles (same workers, so capacity halves) at 0.7 C offered: the
/// limit follows within 2 s (stretched) and goodput stays >= 90% of the new capacity.
pub(crate) async fn latency_shift(cell: Cell, algo: Algo) -> Verdict {
    let c = cell.capacity();
    let t0 = cell.at(5.0);
    let end = cell.at(15.0);
    let plan = Plan {
        name: "shift",
        load: Profile::Constant(0.7 * c),
        changes: vec![(t0, Change::ServiceTime(cell.dist.with_mean(cell.mean * 2)))],
        workers: cell.workers,
        duration: end,
        seed: 7,
    };
    let r = run(cell, algo, &plan).await;
    let mut v = settles(&r, cell.window(), t0, cell.at(2.0), end, (0.0, t0), |s| {
        s.goodput_rps() >= 0.9 * c / 2.0
    });
    v.figures += &format!(
        "; limit {:.1} (workers {})",
        r.median_limit(t0 + cell.at(2.0), end),
        cell.workers
    );
    v
}

/// The scenarios with a bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scenario {
    Step,
    Halve,
    Restore,
    Light70,
    Light80,
    Shift,
}

pub(crate) const SCENARIOS: [Scenario; 6] = [
    Scenario::Step,
    Scenario::Halve,
    Scenario::Restore,
    Scenario::Light70,
    Scenario::Light80,
    Scenario::Shift,
];

/// Runs scenario `s` on `cell` with `algo`.
pub(crate) async fn play(cell: Cell, s: Scenario, algo: Algo) -> Verdict {
    match s {
        Scenario::Step => step(cell, algo).await,
        Scenario::Halve => halve(cell, algo).await,
        Scenario::Restore => restore(cell, algo).await,
        Scenario::Light70 => light(cell, algo, 0.7, 0.001).await,
        Scenario::Light80 => light(cell, algo, 0.8, 0.01).await,
        Scenario::Shift => latency_shift(cell, algo).await,
    }
}
