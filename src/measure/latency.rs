//! Delivery-time distributions where "not delivered" is a value: +∞ (SPEC §5). An outage then
//! shows as a percentile spike, never as a gap or, worse, as a better-looking percentile.
//!
//! Finite values live in an HdrHistogram (µs, 3 significant digits); infinities are counted
//! beside it, and quantiles are taken over the union.

use hdrhistogram::Histogram;

/// Longest trackable delivery time (µs): one day. Longer values are clamped, not dropped.
const MAX_TRACKABLE_US: u64 = 86_400_000_000;
/// Significant digits, per SPEC §5.
pub const SIGFIG: u8 = 3;

/// A delivery-time distribution with a count of undelivered (+∞) members.
#[derive(Debug, Clone)]
pub struct Dist {
    pub finite: Histogram<u64>,
    pub infinite: u64,
}

impl Default for Dist {
    fn default() -> Self {
        Dist::new()
    }
}

impl Dist {
    pub fn new() -> Dist {
        Dist {
            // Invariant: bounds 1..MAX with 3 sigfig are valid constructor arguments.
            finite: Histogram::new_with_bounds(1, MAX_TRACKABLE_US, SIGFIG).expect("valid histogram bounds"),
            infinite: 0,
        }
    }

    /// Records one eligible message: `Some(µs)` delivered, `None` not delivered.
    pub fn record(&mut self, us: Option<u64>) {
        match us {
            Some(v) => self.finite.saturating_record(v.clamp(1, MAX_TRACKABLE_US)),
            None => self.infinite += 1,
        }
    }

    pub fn merge(&mut self, other: &Dist) {
        // Same bounds by construction, so add cannot fail; ignore rather than panic.
        let _ = self.finite.add(&other.finite);
        self.infinite += other.infinite;
    }

    pub fn len(&self) -> u64 {
        self.finite.len() + self.infinite
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The q-quantile in milliseconds; `None` means +∞ (the rank falls among undelivered) or
    /// that there is no data (check `is_empty`).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let finite = self.finite.len();
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil().max(1.0) as u64;
        if rank > finite {
            return None;
        }
        let qf = rank as f64 / finite as f64;
        Some(self.finite.value_at_quantile(qf.min(1.0)) as f64 / 1000.0)
    }

    /// Share of members delivered within `limit_ms`.
    pub fn share_within(&self, limit_ms: f64) -> Option<f64> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let limit_us = (limit_ms * 1000.0) as u64;
        let within = self.finite.count_between(0, limit_us);
        Some(within as f64 / n as f64)
    }

    /// Largest delivery time (ms); `None` if anything is undelivered.
    pub fn max_ms(&self) -> Option<f64> {
        if self.infinite > 0 || self.finite.is_empty() {
            return None;
        }
        Some(self.finite.max() as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinity_dominates_upper_quantiles() {
        let mut d = Dist::new();
        for ms in 1..=90 {
            d.record(Some(ms * 1000));
        }
        for _ in 0..10 {
            d.record(None);
        }
        let p50 = d.quantile_ms(0.5).unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert!(d.quantile_ms(0.9).is_some());
        assert_eq!(d.quantile_ms(0.95), None);
        assert_eq!(d.max_ms(), None);
        assert!((d.share_within(45.0).unwrap() - 0.45).abs() < 1e-9);
    }

    #[test]
    fn empty_and_merge() {
        let mut a = Dist::new();
        assert!(a.quantile_ms(0.5).is_none());
        let mut b = Dist::new();
        b.record(Some(2000));
        a.merge(&b);
        assert_eq!(a.len(), 1);
        assert!((a.quantile_ms(0.99).unwrap() - 2.0).abs() < 0.01);
    }
}
