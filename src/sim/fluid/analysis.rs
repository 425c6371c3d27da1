//! A fluid run measured: the report's [`Analysis`] from flows instead of per-recipient records.
//!
//! Each delivered share of mail is a [`Cell`]: how many, when intended, where, and the time it
//! spent beyond its provider's base delivery time (generator backlog, queueing, retries).
//! Its delivery-time distribution is the base distribution shifted by that time, so every
//! percentile is taken over the mixture of the cells — exact for the model, never an average
//! of percentiles. Undelivered eligible mail (queued, expired) is +∞, as in a run.
//!
//! What differs from a run's measurement, and is said in docs/simulation.md: windowed latency
//! thresholds take the worst per-second percentile in the window (an upper bound of the
//! window's own percentile); `domain` scopes are their provider's; failover windows carry no
//! per-message counts (delayed, held); latency.hlog has no intervals.

use std::collections::BTreeMap;

use super::super::quantiles::Quantiles;
use crate::events::Kind;
use crate::measure::fold::Reaction;
use crate::measure::{
    Analysis, ByInterval, Counts, Dist, Fold, Group, Inputs, Point, QueueDepth, Rates, ThresholdResult,
};
use crate::scenario::threshold::{CountMetric, Metric, Op, Scope};

/// Points per cell when its distribution is recorded.
const POINTS: usize = 24;
/// Points per cell for per-second series.
const SERIES_POINTS: usize = 12;

/// One share of mail, delivered (finite `rest`) or not (+∞).
#[derive(Debug, Clone, Copy)]
pub struct Cell {
    pub intended: u32,
    pub region: u16,
    pub provider: u16,
    pub gen_wait: f32,
    pub rest: f32,
    pub count: f64,
}

impl Cell {
    pub fn undelivered(intended: u32, region: usize, provider: usize, count: f64) -> Cell {
        Cell {
            intended,
            region: region as u16,
            provider: provider as u16,
            gen_wait: 0.0,
            rest: f32::INFINITY,
            count,
        }
    }
}

/// Totals of a fluid run, per wall step and per (region, provider).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub steps: usize,
    pub regions: Vec<String>,
    pub providers: Vec<String>,
    pub generated: Vec<f64>,
    pub accepted: Vec<f64>,
    pub delivered: Vec<f64>,
    pub bounced: Vec<f64>,
    /// Per step, per provider: deferrals (for failover detection).
    pub deferred: Vec<Vec<f64>>,
    pub accepted_by: Vec<Vec<f64>>,
    pub delivered_by: Vec<Vec<f64>>,
    pub bounced_by: Vec<Vec<f64>>,
    pub deferrals_by: Vec<Vec<f64>>,
    pub expired_by: Vec<Vec<f64>>,
    pub queued_by: Vec<Vec<f64>>,
    /// Per region, per step: mail in its queues and spools.
    pub queue: Vec<Vec<f64>>,
    pub unsubmitted: f64,
    pub stranded: f64,
}

impl Tally {
    pub fn new(regions: usize, providers: usize, steps: usize) -> Tally {
        let rp = vec![vec![0.0; providers]; regions];
        Tally {
            generated: vec![0.0; steps],
            accepted: vec![0.0; steps],
            delivered: vec![0.0; steps],
            bounced: vec![0.0; steps],
            deferred: vec![vec![0.0; providers]; steps],
            accepted_by: rp.clone(),
            delivered_by: rp.clone(),
            bounced_by: rp.clone(),
            deferrals_by: rp.clone(),
            expired_by: rp.clone(),
            queued_by: rp,
            queue: vec![vec![0.0; steps]; regions],
            ..Tally::default()
        }
    }

    fn sum(v: &[Vec<f64>], keep: impl Fn(usize, usize) -> bool) -> f64 {
        v.iter()
            .enumerate()
            .flat_map(|(r, ps)| ps.iter().enumerate().map(move |(p, x)| (r, p, *x)))
            .filter(|(r, p, _)| keep(*r, *p))
            .map(|x| x.2)
            .sum()
    }
}

/// Records fractional weights into a [`Dist`] as whole counts, carrying the remainder, so
/// the total recorded is the total weight rounded.
struct Weighted {
    dist: Dist,
    carry: f64,
}

impl Weighted {
    fn new() -> Weighted {
        Weighted {
            dist: Dist::new(),
            carry: 0.0,
        }
    }

    fn add(&mut self, ms: Option<f64>, w: f64) {
        self.carry += w;
        let n = self.carry.floor();
        if n >= 1.0 {
            self.carry -= n;
            match ms {
                Some(v) => {
                    let us = (v * 1e3).clamp(1.0, 86_400e6) as u64;
                    let _ = self.dist.finite.record_n(us, n as u64);
                }
                None => self.dist.infinite += n as u64,
            }
        }
    }
}

/// A cell's values: `points` equal-weight quantile points of its provider's base shifted by
/// its time, or +∞.
fn values(c: &Cell, base: &Quantiles, corrected: bool, points: usize, mut f: impl FnMut(Option<f64>, f64)) {
    if !c.rest.is_finite() {
        f(None, c.count);
        return;
    }
    let shift = f64::from(c.rest) + if corrected { f64::from(c.gen_wait) } else { 0.0 };
    let w = c.count / points as f64;
    for k in 0..points {
        f(Some(base.at((k as f64 + 0.5) / points as f64) + shift), w);
    }
}

/// p50/p90/p99 and SLO share of weighted values.
fn point(t: usize, mut v: Vec<(f64, f64)>, slo_ms: f64) -> Point {
    let total: f64 = v.iter().map(|x| x.1).sum();
    if total <= 0.0 {
        return Point {
            t: t as f64,
            ..Point::default()
        };
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let q = |q: f64| {
        let mut acc = 0.0;
        for (x, w) in &v {
            acc += w;
            if acc >= q * total {
                return x.is_finite().then_some(*x);
            }
        }
        None
    };
    let within: f64 = v.iter().filter(|x| x.0 <= slo_ms).map(|x| x.1).sum();
    Point {
        t: t as f64,
        n: total.round() as u64,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        slo: Some(within / total),
    }
}

/// Whole counts per second from fractional ones: differences of the rounded running total.
fn whole(v: &[f64], n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    let (mut acc, mut prev) = (0.0, 0u64);
    for i in 0..n {
        acc += v.get(i).copied().unwrap_or(0.0);
        let r = acc.round().max(0.0) as u64;
        out.push(r.saturating_sub(prev));
        prev = r;
    }
    out
}

/// The analysis of a fluid run.
pub fn analyze(out: &super::FluidOut, inp: &Inputs) -> Analysis {
    let t = &out.tally;
    let (nr, np) = (t.regions.len(), t.providers.len());
    let intervals = (inp.duration_s.ceil() as usize).max(1);
    let warm = inp.warmup_s.max(0.0);
    let judged = |c: &Cell| f64::from(c.intended) >= warm;
    let base = |c: &Cell| &out.bases[c.provider as usize];

    // Distributions: overall (corrected and uncorrected), per region, per provider.
    let mut overall = Weighted::new();
    let mut uncorrected = Weighted::new();
    let mut by_r: Vec<Weighted> = (0..nr).map(|_| Weighted::new()).collect();
    let mut by_p: Vec<Weighted> = (0..np).map(|_| Weighted::new()).collect();
    for c in &out.cells {
        let b = base(c);
        values(c, &b.0, true, POINTS, |v, w| {
            if judged(c) {
                overall.add(v, w);
            }
            by_r[c.region as usize].add(v, w);
            by_p[c.provider as usize].add(v, w);
        });
        if judged(c) {
            values(c, &b.1, false, POINTS, |v, w| uncorrected.add(v, w));
        }
    }

    // Per-second series by intended time: overall, per region, per provider.
    let mut sorted: Vec<&Cell> = out.cells.iter().collect();
    sorted.sort_by_key(|c| c.intended);
    let mut series = Vec::with_capacity(intervals);
    let mut series_r: Vec<Vec<Point>> = vec![Vec::with_capacity(intervals); nr];
    let mut series_p: Vec<Vec<Point>> = vec![Vec::with_capacity(intervals); np];
    let mut i0 = 0;
    for sec in 0..intervals {
        // The last interval also holds anything intended later (as `ByInterval` does).
        let i1 = if sec + 1 == intervals {
            sorted.len()
        } else {
            i0 + sorted[i0..].partition_point(|c| (c.intended as usize) <= sec)
        };
        let cells = &sorted[i0..i1];
        i0 = i1;
        let mut all = Vec::new();
        let mut per_r: Vec<Vec<(f64, f64)>> = vec![Vec::new(); nr];
        let mut per_p: Vec<Vec<(f64, f64)>> = vec![Vec::new(); np];
        for c in cells {
            values(c, &base(c).0, true, SERIES_POINTS, |v, w| {
                let x = (v.unwrap_or(f64::INFINITY), w);
                all.push(x);
                per_r[c.region as usize].push(x);
                per_p[c.provider as usize].push(x);
            });
        }
        series.push(point(sec, all, inp.slo_ms));
        for (r, v) in per_r.into_iter().enumerate() {
            series_r[r].push(point(sec, v, inp.slo_ms));
        }
        for (p, v) in per_p.into_iter().enumerate() {
            series_p[p].push(point(sec, v, inp.slo_ms));
        }
    }

    let n = t.steps.max(intervals);
    let rates = Rates {
        generated: whole(&t.generated, n),
        accepted: whole(&t.accepted, n),
        delivered: whole(&t.delivered, n),
        bounced: whole(&t.bounced, n),
    };
    let queue_depth = QueueDepth {
        overall: (0..n)
            .map(|s| (0..nr).map(|r| t.queue[r].get(s).copied().unwrap_or(0.0)).sum())
            .collect(),
        by_region: (0..nr)
            .map(|r| {
                (
                    t.regions[r].clone(),
                    (0..n).map(|s| t.queue[r].get(s).copied().unwrap_or(0.0)).collect(),
                )
            })
            .collect(),
    };

    // Counts: whole numbers, the identities held by construction.
    let all = |_: usize, _: usize| true;
    let generated = t.generated.iter().sum::<f64>().round() as u64;
    let accepted = (Tally::sum(&t.accepted_by, all).round() as u64).min(generated);
    let delivered = Tally::sum(&t.delivered_by, all).round() as u64;
    let bounced = Tally::sum(&t.bounced_by, all).round() as u64;
    let expired = Tally::sum(&t.expired_by, all).round() as u64;
    let queued = accepted.saturating_sub(delivered + bounced + expired);
    let counts = Counts {
        generated,
        rejected_at_submit: generated - accepted,
        accepted,
        delivered,
        bounced,
        suppressed: 0,
        expired,
        queued,
        stranded: (t.stranded.round() as u64).min(queued),
        lost: 0,
        duplicates: 0,
        deferrals: Tally::sum(&t.deferrals_by, all).round() as u64,
        events: out.control.len() as u64,
        unsubmitted: generated - accepted,
        submit_errors: 0,
    };

    let group = |w: Weighted, keep: &dyn Fn(usize, usize) -> bool| Group {
        delivered: Tally::sum(&t.delivered_by, keep).round() as u64,
        bounced: Tally::sum(&t.bounced_by, keep).round() as u64,
        deferrals: Tally::sum(&t.deferrals_by, keep).round() as u64,
        dist: w.dist,
    };
    let by_region: BTreeMap<String, Group> = by_r
        .into_iter()
        .enumerate()
        .map(|(r, w)| (t.regions[r].clone(), group(w, &|rr, _| rr == r)))
        .collect();
    let by_provider: BTreeMap<String, Group> = by_p
        .into_iter()
        .enumerate()
        .map(|(p, w)| (t.providers[p].clone(), group(w, &|_, pp| pp == p)))
        .collect();

    let overall = overall.dist;
    let slo_compliance = overall.share_within(inp.slo_ms).unwrap_or(0.0);
    let slo_pass = !overall.is_empty() && slo_compliance >= inp.slo_target;
    let series_by_region: BTreeMap<String, Vec<Point>> = t.regions.iter().cloned().zip(series_r).collect();
    let series_by_provider: BTreeMap<String, Vec<Point>> = t.providers.iter().cloned().zip(series_p).collect();

    let thresholds: Vec<ThresholdResult> = inp
        .thresholds
        .iter()
        .map(|th| {
            let observed = observe(
                th,
                inp,
                &counts,
                t,
                &overall,
                &by_region,
                &by_provider,
                &series,
                &series_by_region,
                &series_by_provider,
            );
            ThresholdResult {
                threshold: th.clone(),
                observed,
                pass: th.holds(observed),
            }
        })
        .collect();

    // Failover metrics from the control events and a reaction per step and provider.
    let mut control = out.control.clone();
    control.sort_by_key(|e| e.t);
    let mut fold = Fold::new(inp);
    for e in &control {
        fold.add(e);
    }
    for (s, per) in t.deferred.iter().enumerate() {
        for (p, x) in per.iter().enumerate() {
            if *x > 0.0 {
                let provider = fold.ledger.names.id(Some(&t.providers[p]));
                fold.reactions.push(Reaction {
                    t: inp.start_ns + (s as u64) * 1_000_000_000,
                    kind: Kind::Deferred,
                    provider,
                });
            }
        }
    }
    fold.settle();
    let faults = crate::measure::faults::fault_metrics(&fold, &series, inp);
    let marks = crate::measure::series::marks(&control, inp.start_ns);
    let pass = thresholds.iter().all(|t| t.pass) && slo_pass && counts.lost == 0;
    Analysis {
        identity: counts.check_identity(),
        contradictions: Default::default(),
        unjudgeable: None,
        counts,
        overall,
        uncorrected: uncorrected.dist,
        slo_compliance,
        slo_pass,
        series,
        intervals: ByInterval::new(std::iter::empty(), inp.start_ns, intervals),
        uncorrected_intervals: ByInterval::new(std::iter::empty(), inp.start_ns, intervals),
        series_by_region,
        series_by_provider,
        rates,
        queue_depth,
        marks,
        by_region,
        by_provider,
        thresholds,
        faults,
        pass,
        warmup_s: inp.warmup_s,
        tls: None,
    }
}

/// A threshold scope's distribution, per-second points, and (region, provider) filter.
type Scoped<'a> = (
    Option<&'a Dist>,
    Option<&'a Vec<Point>>,
    Box<dyn Fn(usize, usize) -> bool>,
);

/// A threshold's observed value on the fluid figures (see the module doc for windows).
#[allow(clippy::too_many_arguments)]
fn observe(
    th: &crate::scenario::Threshold,
    inp: &Inputs,
    counts: &Counts,
    t: &Tally,
    overall: &Dist,
    by_region: &BTreeMap<String, Group>,
    by_provider: &BTreeMap<String, Group>,
    series: &[Point],
    series_r: &BTreeMap<String, Vec<Point>>,
    series_p: &BTreeMap<String, Vec<Point>>,
) -> Option<f64> {
    let provider_of_domain = |d: &str| inp.providers.get(&d.to_ascii_lowercase()).cloned();
    let (dist, pts, keep): Scoped<'_> = match &th.scope {
        Scope::All => (Some(overall), None, Box::new(|_, _| true)),
        Scope::Region(n) => {
            let r = t.regions.iter().position(|x| x == n);
            (
                by_region.get(n).map(|g| &g.dist),
                series_r.get(n),
                Box::new(move |rr, _| Some(rr) == r),
            )
        }
        Scope::Provider(n) => {
            let p = t.providers.iter().position(|x| x == n);
            (
                by_provider.get(n).map(|g| &g.dist),
                series_p.get(n),
                Box::new(move |_, pp| Some(pp) == p),
            )
        }
        Scope::Domain(d) => {
            let name = provider_of_domain(d).unwrap_or_default();
            let p = t.providers.iter().position(|x| *x == name);
            (
                by_provider.get(&name).map(|g| &g.dist),
                series_p.get(&name),
                Box::new(move |_, pp| Some(pp) == p),
            )
        }
    };
    let pts: &[Point] = pts.map_or(series, |v| v.as_slice());
    let empty = Dist::new();
    let d = dist.unwrap_or(&empty);
    if let Some(w) = th.window {
        let len = (w.as_secs_f64().round() as usize).clamp(1, pts.len().max(1));
        let upper = matches!(th.op, Op::Lt | Op::Le | Op::Eq);
        let mut worst: Option<Option<f64>> = None;
        for win in pts.windows(len) {
            let n: u64 = win.iter().map(|p| p.n).sum();
            if n == 0 {
                continue;
            }
            let v = match th.metric {
                Metric::Slo => Some(win.iter().map(|p| p.n as f64 * p.slo.unwrap_or(1.0)).sum::<f64>() / n as f64),
                Metric::Throughput => Some(n as f64 / len as f64),
                Metric::Latency(q) => {
                    let pick = |p: &Point| match q.quantile() {
                        x if x <= 0.5 => p.p50,
                        x if x <= 0.9 => p.p90,
                        _ => p.p99,
                    };
                    win.iter()
                        .filter(|p| p.n > 0)
                        .map(pick)
                        .try_fold(0.0f64, |m, v| v.map(|v| m.max(v)))
                }
                Metric::Count(_) => None,
            };
            let num = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
            worst = Some(match worst {
                None => v,
                Some(prev) if upper && num(v) > num(prev) => v,
                Some(prev) if !upper && num(v) < num(prev) => v,
                Some(prev) => prev,
            });
        }
        if let Some(w) = worst {
            return w;
        }
    }
    match th.metric {
        Metric::Latency(q) if q.quantile() >= 1.0 => d.max_ms(),
        Metric::Latency(q) => d.quantile_ms(q.quantile()),
        Metric::Slo => d.share_within(inp.slo_ms).or(Some(1.0)),
        Metric::Throughput => Some(Tally::sum(&t.delivered_by, &keep) / inp.duration_s.max(1e-9)),
        Metric::Count(c) => Some(match c {
            CountMetric::Lost | CountMetric::Duplicates | CountMetric::Suppressed => 0.0,
            CountMetric::Bounced => Tally::sum(&t.bounced_by, &keep).round(),
            CountMetric::Expired => Tally::sum(&t.expired_by, &keep).round(),
            CountMetric::Queued => Tally::sum(&t.queued_by, &keep).round(),
            CountMetric::Stranded => {
                if matches!(th.scope, Scope::All) {
                    counts.stranded as f64
                } else {
                    0.0
                }
            }
            CountMetric::Delivered => Tally::sum(&t.delivered_by, &keep).round(),
            CountMetric::RejectedAtSubmit => counts.rejected_at_submit as f64,
        }),
    }
}
