//! An empirical distribution as the simulator keeps it: its quantiles on a fixed grid, dense
//! in the tail (where p99 lives), sampled by inverse transform. Small enough to ship in a
//! calibration file, and exact enough that a sample of it has the quantiles it was built from.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Grid of probabilities: every 1% to 95%, then every 0.1% to 99.9%, then 99.95%, 99.99%
/// and the maximum — 148 points.
fn grid() -> &'static [f64] {
    static GRID: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
        let mut g: Vec<f64> = (0..95).map(|k| k as f64 / 100.0).collect();
        g.extend((950..999).map(|k| k as f64 / 1000.0));
        g.extend([0.999, 0.9995, 0.9999, 1.0]);
        g
    });
    &GRID
}

/// Quantiles of a distribution in milliseconds, on [`grid`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Samples it was built from.
    pub n: u64,
    pub ms: Vec<f64>,
}

impl Quantiles {
    /// A distribution that is always `ms`.
    pub fn constant(ms: f64) -> Quantiles {
        Quantiles {
            n: 0,
            ms: vec![ms; grid().len()],
        }
    }

    /// From samples (ms, any order); `None` without any.
    pub fn of(mut samples: Vec<f64>) -> Option<Quantiles> {
        samples.retain(|x| x.is_finite());
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let last = (samples.len() - 1) as f64;
        let ms = grid()
            .iter()
            .map(|q| {
                let x = q * last;
                let (i, f) = (x.floor() as usize, x.fract());
                let hi = samples[(i + 1).min(samples.len() - 1)];
                samples[i] + (hi - samples[i]) * f
            })
            .collect();
        Some(Quantiles {
            n: samples.len() as u64,
            ms,
        })
    }

    /// The q-quantile (ms), interpolated on the grid.
    pub fn at(&self, q: f64) -> f64 {
        let g = grid();
        let q = q.clamp(0.0, 1.0);
        let i = g.partition_point(|p| *p <= q).clamp(1, g.len() - 1);
        let (p0, p1) = (g[i - 1], g[i]);
        let (v0, v1) = (self.ms[i - 1], self.ms[i]);
        if p1 <= p0 {
            return v1;
        }
        v0 + (v1 - v0) * ((q - p0) / (p1 - p0)).clamp(0.0, 1.0)
    }

    /// One sample (ms).
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        self.at(rng.random::<f64>())
    }

    /// Point by point `self - other`, at least 0 and never decreasing: the time a delivery
    /// takes beyond what the rule table scripts, when `self` is the whole delivery time and
    /// `other` the scripted part.
    pub fn minus(&self, other: &Quantiles) -> Quantiles {
        let mut floor = 0.0f64;
        let ms = self
            .ms
            .iter()
            .zip(&other.ms)
            .map(|(a, b)| {
                floor = floor.max(a - b);
                floor
            })
            .collect();
        Quantiles { n: self.n, ms }
    }

    /// The median (ms).
    pub fn median(&self) -> f64 {
        self.at(0.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn samples_have_the_quantiles_they_came_from() {
        let xs: Vec<f64> = (1..=10_000).map(|i| i as f64 / 10.0).collect();
        let q = Quantiles::of(xs).unwrap();
        assert!((q.median() - 500.0).abs() < 1.0, "{}", q.median());
        assert!((q.at(0.99) - 990.0).abs() < 1.0, "{}", q.at(0.99));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut s: Vec<f64> = (0..20_000).map(|_| q.sample(&mut rng)).collect();
        s.sort_by(f64::total_cmp);
        assert!((s[10_000] - 500.0).abs() < 15.0, "{}", s[10_000]);
        assert!((s[19_800] - 990.0).abs() < 5.0, "{}", s[19_800]);
    }

    #[test]
    fn the_difference_is_never_negative_nor_decreasing() {
        let a = Quantiles::of((0..100).map(f64::from).collect()).unwrap();
        let b = Quantiles::constant(30.0);
        let d = a.minus(&b);
        assert!(d.ms.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(d.ms[0], 0.0);
        assert!((d.median() - 19.5).abs() < 0.6, "{}", d.median());
        assert!(Quantiles::of(vec![]).is_none());
    }
}
