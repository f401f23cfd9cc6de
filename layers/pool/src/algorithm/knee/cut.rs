//! Where a cut takes the limit: Little's law plus a queue, capped where the pool is so small
//! that the queue would be more than the tolerance lets pass.

use super::KneeConfig;

/// How many spreads of the service time the cap allows on top of the tolerance and one
/// request.
const SPREADS: f64 = 3.0;

/// The limit after a cut, for a backend that carries `k` requests without queueing
/// (`throughput × baseline`) and whose service time has a `spread` (standard deviation over
/// mean, of the calm samples); and whether the cap set it.
///
/// Little's law plus the target queue and two requests, `k × (1 + target) + 2`: with arrivals
/// at random, a worker that frees up then finds a request waiting even in the smallest pools.
/// But the cut threshold is `k × (1 + tolerance)`, and for `k` under `2 / (tolerance −
/// target)` (8 by default) those two requests put the cut itself above it: every window after
/// the cut looks queued, the growth between the thresholds takes the limit a request further
/// within ten or twenty windows, and a cut brings it back only when two windows in a row are
/// significant, which windows of ten samples often are not (the constant 10 ms backend halved
/// to 2 workers: a limit of 4 meets its p99 bar, one of 5 does not, and the limit spent half
/// its time at 5). So the cut is capped at `k × (1 + tolerance) + 1 + 3 × spread`, and the
/// caller holds the limit while the cap is what set it. The spread term keeps the cap off
/// backends whose service time varies: they need the queue to stay busy (their requests
/// finish in bunches), and their p99 bar, far above the mean, has room for it. With the
/// defaults the cap binds for `k < 4 × (1 − 3 × spread)`: up to 4 on a constant backend, 2.6
/// on a uniform ±20% one, never on the exponential, log-normal or bimodal ones.
pub(super) fn cut(k: f64, spread: f64, c: &KneeConfig) -> (f64, bool) {
    let next = k * (1.0 + c.target) + 2.0;
    let cap = k * (1.0 + c.tolerance) + 1.0 + SPREADS * spread;
    if cap < next {
        (cap, true)
    } else {
        (next, false)
    }
}
