//! The knee search of `mailsurge capacity` (SPEC §10): which rate to probe next, from the
//! verdicts so far, and when to stop.
//!
//! It ramps up geometrically (×4) from `min` until a probe fails or `max` passes, then
//! bisects between the highest passing and the lowest failing rate — geometrically, since
//! capacity questions are about ratios ("5% more") — until they are within `precision` of each
//! other. The knee is the highest passing rate. A probe that could not be judged (a runtime
//! error, exit 3) is never taken as "over capacity": the search stops and says so.
//!
//! Bounded: with the defaults (`min` = peak/4, `max` = peak×64, 5%) at most 5 ramp probes and
//! 5 bisections; [`Search::MAX_PROBES`] caps any setting.

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The SLO and every threshold held.
    Pass,
    /// Something did not hold: over capacity at this rate.
    Fail,
    /// The probe could not be judged (the run errored): the search stops.
    Error(String),
}

/// The search's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Search {
    /// First rate probed, msg/s.
    pub min: f64,
    /// Highest rate probed, msg/s.
    pub max: f64,
    /// Stop when the lowest failing rate is within this fraction above the highest passing one.
    pub precision: f64,
}

/// Why the search stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Pass and fail are within `precision`: the knee is the highest passing rate.
    Knee(f64),
    /// Even `min` failed: the knee is below it.
    BelowMin,
    /// `max` passed: the knee is at least `max`.
    AtLeastMax(f64),
    /// A probe errored, or the probe budget ran out; the best passing rate so far, if any.
    Stopped { best: Option<f64>, why: String },
}

/// The next step: probe this rate, or stop.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Probe(f64),
    Done(End),
}

impl Search {
    /// Most probes any search makes.
    pub const MAX_PROBES: usize = 16;
    /// The ramp's factor.
    ///
    /// ×4 rather than ×2: the default range (a quarter of the peak to 64 times it) is crossed
    /// in 5 probes, and bisecting a ×4 bracket to 5% takes 5 more — the same 10 probes at most
    /// that ×2 needs for an eighth of the range. Scenarios are often sized far below their
    /// topology's knee (smoke runs at 1/50th of it); the search must still find it.
    const RAMP: f64 = 4.0;

    /// Defaults around a scenario's peak rate: a quarter of it to 64 times it, 5%.
    pub fn around(peak: f64) -> Search {
        Search {
            min: peak / 4.0,
            max: peak * 64.0,
            precision: 0.05,
        }
    }

    /// What to do after `done` (rate, verdict) probes, in the order they ran.
    pub fn next(&self, done: &[(f64, Verdict)]) -> Next {
        let best = || {
            done.iter()
                .filter(|(_, v)| *v == Verdict::Pass)
                .map(|(r, _)| *r)
                .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.max(r))))
        };
        if let Some((r, Verdict::Error(why))) = done.last() {
            return Next::Done(End::Stopped {
                best: best(),
                why: format!("the probe at {r:.1}/s could not be judged: {why}"),
            });
        }
        if done.len() >= Self::MAX_PROBES {
            return Next::Done(End::Stopped {
                best: best(),
                why: format!("{} probes made, the most a search makes", Self::MAX_PROBES),
            });
        }
        let lo = best();
        let hi = done
            .iter()
            .filter(|(_, v)| *v == Verdict::Fail)
            .map(|(r, _)| *r)
            .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.min(r))));
        match (lo, hi) {
            (None, None) => Next::Probe(self.min),
            (None, Some(_)) => Next::Done(End::BelowMin),
            (Some(lo), None) if lo >= self.max => Next::Done(End::AtLeastMax(lo)),
            (Some(lo), None) => Next::Probe((lo * Self::RAMP).min(self.max)),
            (Some(lo), Some(hi)) if hi <= lo * (1.0 + self.precision) => Next::Done(End::Knee(lo)),
            (Some(lo), Some(hi)) => Next::Probe((lo * hi).sqrt()),
        }
    }
}

impl Search {
    /// About how many probes the whole search makes, after `done`: those made, plus the ramp
    /// steps left to `max` (until something fails), plus the bisections of the bracket the
    /// search has or will have. For "probe k of ~n".
    pub fn estimate(&self, done: &[(f64, Verdict)]) -> usize {
        let rate_of =
            |v: Verdict, pick: fn(f64, f64) -> f64| done.iter().filter(|(_, x)| *x == v).map(|(r, _)| *r).reduce(pick);
        let halvings = |ratio: f64| {
            let steps = ratio.ln() / (1.0 + self.precision.max(1e-3)).ln();
            if steps <= 1.0 {
                0
            } else {
                steps.log2().ceil() as usize
            }
        };
        let left = match (rate_of(Verdict::Pass, f64::max), rate_of(Verdict::Fail, f64::min)) {
            (None, Some(_)) => 0,
            (Some(lo), Some(hi)) => halvings(hi / lo),
            (lo, None) => {
                let lo = lo.unwrap_or(self.min / Self::RAMP);
                let ramp = ((self.max / lo).ln() / Self::RAMP.ln()).ceil().max(0.0) as usize;
                ramp + halvings(Self::RAMP)
            }
        };
        (done.len() + left).min(Self::MAX_PROBES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a system whose knee is `knee` (a probe passes at or below it).
    fn against(s: &Search, knee: f64) -> (End, Vec<f64>) {
        let mut done = Vec::new();
        loop {
            match s.next(&done) {
                Next::Probe(r) => {
                    let v = if r <= knee { Verdict::Pass } else { Verdict::Fail };
                    done.push((r, v));
                }
                Next::Done(end) => return (end, done.iter().map(|(r, _)| *r).collect()),
            }
        }
    }

    #[test]
    fn it_finds_the_knee_within_the_precision_in_a_bounded_number_of_probes() {
        let s = Search::around(1000.0);
        for knee in [260.0, 700.0, 999.0, 1000.0, 1234.0, 3000.0, 7900.0, 56_570.0] {
            let (end, probes) = against(&s, knee);
            let Some(found) = (match end {
                End::Knee(k) => Some(k),
                _ => None,
            }) else {
                panic!("knee {knee}: {end:?} after {probes:?}");
            };
            assert!(
                found <= knee && found >= knee / 1.05,
                "knee {knee}: found {found} ({probes:?})"
            );
            assert!(probes.len() <= 10, "knee {knee}: {} probes {probes:?}", probes.len());
        }
    }

    #[test]
    fn the_ends_of_the_range_are_said_as_such() {
        let s = Search::around(1000.0);
        assert_eq!(against(&s, 100.0).0, End::BelowMin);
        assert_eq!(against(&s, 1e9).0, End::AtLeastMax(64000.0));
    }

    #[test]
    fn an_error_stops_the_search_and_is_never_over_capacity() {
        let s = Search::around(1000.0);
        let done = vec![(250.0, Verdict::Pass), (500.0, Verdict::Error("node exited".into()))];
        match s.next(&done) {
            Next::Done(End::Stopped { best, why }) => {
                assert_eq!(best, Some(250.0));
                assert!(why.contains("500.0/s") && why.contains("node exited"), "{why}");
            }
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn the_estimate_is_close_to_the_probes_made() {
        let s = Search::around(1000.0);
        for knee in [700.0, 1234.0, 3000.0] {
            let (_, probes) = against(&s, knee);
            let first = s.estimate(&[]);
            // The first guess assumes the ramp runs to max: an upper bound.
            assert!(
                first >= probes.len() && first <= 10,
                "knee {knee}: {first} vs {}",
                probes.len()
            );
            let mut done = Vec::new();
            for r in &probes {
                done.push((*r, if *r <= knee { Verdict::Pass } else { Verdict::Fail }));
                let e = s.estimate(&done);
                assert!(e >= done.len() && e <= first, "knee {knee}: {e} after {done:?}");
                if done.iter().any(|(_, v)| *v == Verdict::Fail) {
                    // Once bracketed, the bisections left are known to within one.
                    assert!(e <= probes.len() + 1, "knee {knee}: {e} after {done:?}");
                }
            }
            assert_eq!(s.estimate(&done), probes.len());
        }
    }

    #[test]
    fn the_probe_budget_is_a_hard_bound() {
        // A precision of 0 never converges; the budget ends it.
        let s = Search {
            precision: 0.0,
            ..Search::around(1000.0)
        };
        let (end, probes) = against(&s, 1234.5);
        assert_eq!(probes.len(), Search::MAX_PROBES);
        assert!(matches!(end, End::Stopped { best: Some(_), .. }), "{end:?}");
    }
}
