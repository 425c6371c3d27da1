//! The axes' numbers: ranges plotters can draw whatever the caller passed, and tick labels.

use super::spec::ChartSpec;
use crate::report::format::num;

/// Returns a usable (lo, hi) with lo < hi, a finite span, and lo > 0 on log axes, whatever the
/// caller passed: plotters can neither map points nor place ticks on empty or NaN ranges.
pub(super) fn sane_range(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    let fallback: (f64, f64) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
    let lo = if lo.is_finite() { lo } else { fallback.0 };
    let hi = if hi.is_finite() { hi } else { fallback.1.max(lo + 1.0) };
    let (mut lo, mut hi) = (lo.min(hi), lo.max(hi));
    if log && lo <= 0.0 {
        lo = (hi / 10.0).clamp(f64::MIN_POSITIVE, 1.0);
    }
    if hi <= lo {
        hi = lo + if log { lo * 9.0 } else { lo.abs().max(1.0) };
    }
    match (hi - lo).is_finite() && hi > lo && (!log || hi / lo < 1e300) {
        true => (lo, hi),
        false => fallback,
    }
}

/// Auto y range: from 0 (1 on log axes) to 10% above the largest finite value, including
/// reference lines so an SLO target is visible even when every sample is far below it.
pub(super) fn y_bounds(spec: &ChartSpec) -> (f64, f64) {
    if let Some((lo, hi)) = spec.y_range {
        return sane_range(lo, hi, spec.y_log);
    }
    let ys = spec.lines.iter().flat_map(|l| &l.points).filter_map(|p| p.1);
    let ys = ys.chain(spec.hlines.iter().map(|h| h.y));
    let max = ys.filter(|y| y.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    let lo = if spec.y_log { 1.0 } else { 0.0 };
    sane_range(lo, if max > lo { max * 1.1 } else { f64::NAN }, spec.y_log)
}

/// Trims tick labels to what a reader needs: integers without ".0", at most three decimals,
/// exponents only for extreme magnitudes.
pub(super) fn fmt_tick(v: &f64) -> String {
    let (v, a) = (*v + 0.0, v.abs()); // `+ 0.0` turns -0.0 into 0.0
    if a != 0.0 && !(1e-3..1e7).contains(&a) {
        format!("{v:.1e}")
    } else if (v - v.round()).abs() < 1e-9 * a.max(1.0) {
        format!("{}", v.round())
    } else {
        num(v, 3)
    }
}
