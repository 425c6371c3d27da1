//! The open-loop arrival schedule: *when* each message is intended to be submitted.
//!
//! Intended times depend only on the curve, the arrival process and the seed — never on how
//! fast the system under test answers — which is what makes delivery times
//! coordinated-omission-correct (SPEC §5). Same seed ⇒ identical schedule.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::scenario::{Arrival, Curve, CurveAt, NamedCurve, RateSpec};

/// Hourly weights of a retail peak day (Black Friday), midnight to midnight: a night trough,
/// a morning ramp, a working-day plateau and an evening peak. Scaled so the peak hour carries
/// ≈ 315/4100 of the day — 315 M of 4.1 bn messages in the background article.
pub const BLACK_FRIDAY_HOURLY: [f64; 24] = [
    2.43, 1.83, 1.43, 1.23, 1.23, 1.43, 2.03, 3.03, 4.03, 4.73, 5.13, 5.33, 5.43, 5.43, 5.33, 5.33, 5.53, 5.93, 6.63,
    7.43, 8.13, 7.43, 5.63, 3.73,
];

/// `waves`: the base rate between bursts, as a share of peak.
const WAVE_BASE: f64 = 0.2;
/// `waves`: where the bursts peak, as shares of the window.
const WAVE_CENTRES: [f64; 3] = [1.0 / 6.0, 3.0 / 6.0, 5.0 / 6.0];
/// `waves`: half the width of a burst, as a share of the window.
const WAVE_HALF_WIDTH: f64 = 0.05;

/// Messages/s as a piecewise-linear function of seconds into the traffic window.
#[derive(Debug, Clone, PartialEq)]
pub struct RateCurve {
    /// (seconds, messages/s), sorted by time, covering 0..=duration.
    points: Vec<(f64, f64)>,
}

impl RateCurve {
    /// Stretches a scenario's rate spec over the traffic window.
    pub fn new(spec: &RateSpec, duration: Duration) -> RateCurve {
        let d = duration.as_secs_f64();
        let (peak, curve) = match spec {
            RateSpec::Constant(r) => {
                return RateCurve {
                    points: vec![(0.0, r.0), (d, r.0)],
                }
            }
            RateSpec::Curve { peak, curve } => (peak.0, curve),
        };
        let raw: Vec<(f64, f64)> = match curve {
            Curve::Named(NamedCurve::Flat) => vec![(0.0, 1.0), (d, 1.0)],
            Curve::Named(NamedCurve::BlackFriday) => {
                // Hour h's weight sits at the middle of its slot; the ends hold flat.
                let slot = d / 24.0;
                let mut v: Vec<(f64, f64)> = BLACK_FRIDAY_HOURLY
                    .iter()
                    .enumerate()
                    .map(|(h, w)| ((h as f64 + 0.5) * slot, *w))
                    .collect();
                v.insert(0, (0.0, BLACK_FRIDAY_HOURLY[0]));
                v.push((d, BLACK_FRIDAY_HOURLY[23]));
                v
            }
            Curve::Named(NamedCurve::Waves) => {
                // Base 20% of peak; each wave ramps up and down over a tenth of the window.
                let mut v = vec![(0.0, WAVE_BASE)];
                for centre in WAVE_CENTRES {
                    v.push(((centre - WAVE_HALF_WIDTH) * d, WAVE_BASE));
                    v.push((centre * d, 1.0));
                    v.push(((centre + WAVE_HALF_WIDTH) * d, WAVE_BASE));
                }
                v.push((d, WAVE_BASE));
                v
            }
            Curve::Points(p) => p
                .iter()
                .map(|(at, w)| {
                    let t = match at {
                        CurveAt::Share(s) => s.0 * d,
                        CurveAt::At(x) => x.as_secs_f64().min(d),
                    };
                    (t, *w)
                })
                .collect(),
        };
        let max_w = raw.iter().map(|p| p.1).fold(0.0_f64, f64::max);
        let mut points: Vec<(f64, f64)> = raw
            .into_iter()
            .map(|(t, w)| (t, if max_w > 0.0 { w / max_w * peak } else { 0.0 }))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if points.first().is_some_and(|p| p.0 > 0.0) {
            let first = points[0].1;
            points.insert(0, (0.0, first));
        }
        if points.last().is_some_and(|p| p.0 < d) {
            let last = points[points.len() - 1].1;
            points.push((d, last));
        }
        RateCurve { points }
    }

    /// Rate at `t` seconds into the window (0 outside it).
    pub fn rate_at(&self, t: f64) -> f64 {
        let p = &self.points;
        if p.is_empty() || t < 0.0 || t > p[p.len() - 1].0 {
            return 0.0;
        }
        let i = p.partition_point(|x| x.0 <= t);
        if i == 0 {
            return p[0].1;
        }
        if i >= p.len() {
            return p[p.len() - 1].1;
        }
        let (a, b) = (p[i - 1], p[i]);
        if b.0 <= a.0 {
            return b.1;
        }
        a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0)
    }

    pub fn max_rate(&self) -> f64 {
        self.points.iter().map(|p| p.1).fold(0.0, f64::max)
    }

    /// Expected number of arrivals in [a, b] (trapezoid rule on the linear pieces is exact).
    pub fn integral(&self, a: f64, b: f64) -> f64 {
        let mut sum = 0.0;
        for w in self.points.windows(2) {
            let (lo, hi) = (w[0].0.max(a), w[1].0.min(b));
            if hi > lo {
                sum += (self.rate_at(lo) + self.rate_at(hi)) / 2.0 * (hi - lo);
            }
        }
        sum
    }

    pub fn duration(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.0)
    }
}

/// Iterator over intended offsets (seconds into the window), in order.
pub struct Schedule {
    curve: RateCurve,
    arrival: Arrival,
    rng: ChaCha8Rng,
    t: f64,
    /// Uniform arrivals: accumulated expected count since the last arrival.
    acc: f64,
    /// Arrivals still to give, when the schedule is cut at a count (`gen --count`).
    left: Option<u64>,
}

/// Step for integrating a uniform schedule through zero-rate stretches.
const UNIFORM_STEP_S: f64 = 0.001;
/// Longest step of a uniform schedule, so a rising rate is not overshot.
const UNIFORM_MAX_STEP_S: f64 = 0.1;

impl Schedule {
    pub fn new(curve: RateCurve, arrival: Arrival, seed: u64) -> Schedule {
        Schedule {
            curve,
            arrival,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5ced_u64),
            t: 0.0,
            acc: 0.0,
            left: None,
        }
    }

    /// Ends the schedule after `n` arrivals (the curve must be long enough to hold them).
    pub fn limited(mut self, n: u64) -> Schedule {
        self.left = Some(n);
        self
    }
}

impl Iterator for Schedule {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        match &mut self.left {
            Some(0) => return None,
            Some(n) => *n -= 1,
            None => {}
        }
        self.arrival_time()
    }
}

impl Schedule {
    fn arrival_time(&mut self) -> Option<f64> {
        let end = self.curve.duration();
        let max = self.curve.max_rate();
        if max <= 0.0 {
            return None;
        }
        match self.arrival {
            // Non-homogeneous Poisson by thinning (Lewis & Shedler): candidates at the peak
            // rate, each kept with probability rate(t)/peak.
            Arrival::Poisson => loop {
                let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
                self.t += -u.ln() / max;
                if self.t >= end {
                    return None;
                }
                if self.rng.random::<f64>() * max <= self.curve.rate_at(self.t) {
                    return Some(self.t);
                }
            },
            // Evenly spaced in "expected count": the next arrival is where the integral of the
            // rate grows by one.
            Arrival::Uniform => loop {
                let r = self.curve.rate_at(self.t);
                let step = if r > 0.0 {
                    ((1.0 - self.acc) / r).clamp(1e-6, UNIFORM_MAX_STEP_S)
                } else {
                    UNIFORM_STEP_S
                };
                let next = self.t + step;
                if next >= end {
                    return None;
                }
                self.acc += self.curve.integral(self.t, next);
                self.t = next;
                if self.acc >= 1.0 - 1e-9 {
                    self.acc -= 1.0;
                    return Some(self.t);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Rate;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn same_seed_same_schedule() {
        let c = RateCurve::new(&RateSpec::Constant(Rate(200.0)), secs(10));
        let a: Vec<f64> = Schedule::new(c.clone(), Arrival::Poisson, 42).collect();
        let b: Vec<f64> = Schedule::new(c.clone(), Arrival::Poisson, 42).collect();
        let other: Vec<f64> = Schedule::new(c, Arrival::Poisson, 43).collect();
        assert_eq!(a, b);
        assert_ne!(a, other);
        // 2000 expected; Poisson sd ≈ 45.
        assert!((1800..2200).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn uniform_is_exact_and_even() {
        let c = RateCurve::new(&RateSpec::Constant(Rate(100.0)), secs(5));
        let v: Vec<f64> = Schedule::new(c, Arrival::Uniform, 1).collect();
        assert!((498..=500).contains(&v.len()), "{}", v.len());
        let gaps: Vec<f64> = v.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (g - 0.01).abs() < 1e-3), "{:?}", &gaps[..5]);
    }

    #[test]
    fn black_friday_peak_hour_share() {
        let d = 2400.0;
        let c = RateCurve::new(
            &RateSpec::Curve {
                peak: Rate(1000.0),
                curve: Curve::Named(NamedCurve::BlackFriday),
            },
            Duration::from_secs_f64(d),
        );
        let total = c.integral(0.0, d);
        let hour = d / 24.0;
        let peak_hour = (0..24)
            .map(|h| c.integral(h as f64 * hour, (h + 1) as f64 * hour))
            .fold(0.0, f64::max);
        let share = peak_hour / total;
        assert!((share - 315.0 / 4100.0).abs() < 0.004, "peak hour share {share}");
        assert!((c.max_rate() - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn waves_have_three_bursts() {
        let c = RateCurve::new(
            &RateSpec::Curve {
                peak: Rate(600.0),
                curve: Curve::Named(NamedCurve::Waves),
            },
            secs(60),
        );
        assert_eq!(c.rate_at(10.0), 600.0);
        assert_eq!(c.rate_at(30.0), 600.0);
        assert_eq!(c.rate_at(50.0), 600.0);
        assert!((c.rate_at(20.0) - 120.0).abs() < 1e-9, "base between waves");
        let v: Vec<f64> = Schedule::new(c, Arrival::Poisson, 3).collect();
        let in_wave = v.iter().filter(|t| (7.0..13.0).contains(*t)).count();
        let between = v.iter().filter(|t| (17.0..23.0).contains(*t)).count();
        assert!(in_wave > 2 * between, "{in_wave} vs {between}");
    }

    #[test]
    fn piecewise_points_follow_shape() {
        let c = RateCurve::new(
            &RateSpec::Curve {
                peak: Rate(100.0),
                curve: Curve::Points(vec![
                    (CurveAt::Share(crate::units::Percent(0.0)), 0.0),
                    (CurveAt::Share(crate::units::Percent(0.5)), 1.0),
                    (CurveAt::Share(crate::units::Percent(1.0)), 0.0),
                ]),
            },
            secs(10),
        );
        assert_eq!(c.rate_at(5.0), 100.0);
        assert_eq!(c.rate_at(2.5), 50.0);
        let v: Vec<f64> = Schedule::new(c.clone(), Arrival::Poisson, 9).collect();
        let first_half = v.iter().filter(|t| **t < 2.5).count();
        let middle = v.iter().filter(|t| (3.75..6.25).contains(*t)).count();
        assert!(middle > 2 * first_half, "{middle} vs {first_half}");
        assert!((c.integral(0.0, 10.0) - 500.0).abs() < 1e-6);
    }
}
