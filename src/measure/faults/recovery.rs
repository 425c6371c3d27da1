//! Recovery: when per-second SLO compliance came back after a fault and stayed back.

use super::Point;

/// Consecutive compliant seconds that make a recovery.
pub const RECOVERY_RUN_S: usize = 10;

/// Whether an interval of the per-second series meets the SLO target (empty ones do).
fn complies(p: &Point, target: f64) -> bool {
    p.n == 0 || p.slo.is_none_or(|s| s >= target - 1e-9)
}

/// Seconds from the fault (at `fault_s`) to the start of the first run of
/// [`RECOVERY_RUN_S`] compliant intervals (fewer at the end of the series, all of the rest),
/// searching from the interval containing the fault. See the module doc of `faults`.
pub fn recovery(series: &[Point], fault_s: f64, target: f64) -> Option<f64> {
    let n = series.len();
    let first = fault_s.max(0.0).floor();
    if first >= n as f64 {
        return None;
    }
    let first = first as usize;
    (first..n)
        .find(|&s| series[s..n.min(s + RECOVERY_RUN_S)].iter().all(|p| complies(p, target)))
        .map(|s| (series[s].t - fault_s).max(0.0))
}
