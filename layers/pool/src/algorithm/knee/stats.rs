//! The small statistics Knee's tests use: a mean and its standard error from running sums,
//! and how many standard errors a mean of few samples must clear.

use std::time::Duration;

/// Count, mean and standard error (seconds) of samples kept as count, sum and sum of squares.
pub(super) fn stats((n, sum, sq): (u64, f64, f64)) -> Option<(u64, f64, f64)> {
    if n < 2 {
        return None;
    }
    let k = n as f64;
    let mean = sum / k;
    let var = ((sq - k * mean * mean) / (k - 1.0)).max(0.0);
    Some((n, mean, (var / k).sqrt()))
}

/// The one-sided 97.5% quantile of Student's t for the mean of `n` samples (`n - 1` degrees of
/// freedom): how many of its own standard errors a mean must clear.
pub(super) fn t_quantile(n: u64) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let df = n.saturating_sub(1).max(1);
    match T.get(df as usize - 1) {
        Some(&t) => t,
        None => 1.96 + 2.4 / df as f64,
    }
}

/// Standard error of a mean of `n` samples with standard deviation `sd`, in seconds.
pub(super) fn std_error(sd: Option<Duration>, n: u64) -> f64 {
    match sd {
        Some(sd) if n > 1 => sd.as_secs_f64() / (n as f64).sqrt(),
        _ => 0.0,
    }
}

/// The `q` quantile of `values`, the nearest one by rank (the median, `q = 0.5`, is the upper
/// one of an even count); `None` without any.
pub(super) fn quantile(values: impl Iterator<Item = f64>, q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let last = v.len().checked_sub(1)?;
    v.get((last as f64 * q).round() as usize).copied()
}
