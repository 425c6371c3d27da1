//! Measurement (SPEC §5): from raw events and spool leftovers to counts, delivery-time
//! distributions, per-second series and threshold verdicts.
//!
//! Everything here is a pure function of its inputs, so `mailsurge report RUN_DIR` can rebuild
//! a report from the files of a finished run and get the same numbers.

pub mod abort;
pub mod accounting;
pub mod faults;
pub mod fold;
pub mod hlog;
pub mod intervals;
pub mod latency;
pub mod recent;
pub mod series;
pub mod tls;
pub mod witness;

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::events::domain_of;
use accounting::{Class, Record};
pub use accounting::{Counts, Spooled};
pub use faults::FaultMetrics;
pub use fold::{Fold, Rates};
pub use intervals::ByInterval;
pub use latency::Dist;
pub use series::{Mark, MarkKind, QueueDepth};
pub use witness::Contradictions;

use crate::events::Event;
use crate::scenario::network;
use crate::scenario::threshold::{CountMetric, Metric, Op, Scope};
use crate::scenario::Threshold;

/// What the analysis needs besides events.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// Wall-clock ns of the schedule's offset 0.
    pub start_ns: u64,
    /// Traffic window (s).
    pub duration_s: f64,
    pub slo_ms: f64,
    pub slo_target: f64,
    /// The first seconds of the window that are not judged (scenario `warmup`): their messages
    /// count in the accounting and the charts, but not in percentiles, the SLO or thresholds
    /// on latency, compliance or throughput — a capacity probe's queues and connections fill
    /// there, and a cold start is not the rate being asked about.
    pub warmup_s: f64,
    /// Recipient domain → provider name.
    pub providers: BTreeMap<String, String>,
    pub thresholds: Vec<Threshold>,
}

impl Inputs {
    /// These inputs for the judged window: it starts after the warm-up.
    fn after_warmup(&self) -> Inputs {
        let w = self.warmup_s.clamp(0.0, self.duration_s);
        Inputs {
            start_ns: self.start_ns + (w * 1e9) as u64,
            duration_s: self.duration_s - w,
            warmup_s: 0.0,
            ..self.clone()
        }
    }

    /// Whether a recipient's delivery time is judged: it was intended after the warm-up (or
    /// its intended time is unknown).
    fn judged(&self, r: &Record) -> bool {
        self.warmup_s <= 0.0
            || r.intended
                .is_none_or(|i| i >= self.start_ns + (self.warmup_s * 1e9) as u64)
    }

    /// The provider that serves a recipient's domain.
    pub fn provider_of(&self, rcpt: &str) -> Option<&str> {
        provider_of(&self.providers, rcpt)
    }
}

/// The provider that serves a recipient's domain, in a domain → provider map.
pub fn provider_of<'m>(providers: &'m BTreeMap<String, String>, rcpt: &str) -> Option<&'m str> {
    provider_of_domain(providers, &domain_of(rcpt).to_ascii_lowercase())
}

/// The provider of a lower-cased domain: the scenario's own name for it, or the name without
/// the `.mailsurge.test` suffix an external or distributed system under test was sent
/// (`scenario::network`): the one place measurement maps a suffixed domain back.
fn provider_of_domain<'m>(providers: &'m BTreeMap<String, String>, domain: &str) -> Option<&'m str> {
    providers
        .get(domain)
        .or_else(|| providers.get(network::bare_domain(domain)))
        .map(String::as_str)
}

/// One interval of a per-second series (grouped by intended time).
#[derive(Debug, Clone, Default)]
pub struct Point {
    /// Interval start, seconds into the run.
    pub t: f64,
    /// Eligible messages intended in this interval.
    pub n: u64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    /// SLO compliance of the interval (fraction).
    pub slo: Option<f64>,
}

/// A region's or provider's line in the summary.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub delivered: u64,
    pub bounced: u64,
    pub deferrals: u64,
    pub dist: Dist,
}

#[derive(Debug, Clone)]
pub struct ThresholdResult {
    pub threshold: Threshold,
    /// Observed value in the metric's unit; `None` = +∞ or no data.
    pub observed: Option<f64>,
    pub pass: bool,
}

/// Everything a report shows.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub counts: Counts,
    pub identity: Result<(), String>,
    /// Recipients on which the run's witnesses disagree; must be 0 to pass.
    pub contradictions: Contradictions,
    /// Why the run measured too little to be judged at all (verdict `error`, exit 3).
    pub unjudgeable: Option<String>,
    pub overall: Dist,
    pub uncorrected: Dist,
    pub slo_compliance: f64,
    pub slo_pass: bool,
    pub series: Vec<Point>,
    /// Per-second distributions by intended time, for `latency.hlog`: corrected and uncorrected.
    pub intervals: ByInterval,
    pub uncorrected_intervals: ByInterval,
    pub series_by_region: BTreeMap<String, Vec<Point>>,
    /// Per-second series by intended time for each provider (recipient domain's provider).
    pub series_by_provider: BTreeMap<String, Vec<Point>>,
    /// Per-second rates by wall time, through the drain.
    pub rates: Rates,
    /// MTA queue depth per second of wall time, as long as `rates`.
    pub queue_depth: QueueDepth,
    /// Chaos actions and balancer reactions every chart marks, from the control events.
    pub marks: Vec<Mark>,
    pub by_region: BTreeMap<String, Group>,
    pub by_provider: BTreeMap<String, Group>,
    pub thresholds: Vec<ThresholdResult>,
    /// Failover metrics per chaos action (SPEC §5), in time order; see [`faults`].
    pub faults: Vec<FaultMetrics>,
    /// All thresholds, the SLO and `lost == 0` hold, and no witness contradicts another.
    pub pass: bool,
    /// Seconds at the start of the window left out of the judgement ([`Inputs::warmup_s`]).
    pub warmup_s: f64,
    /// TLS per hop, when any message of the run went over TLS.
    pub tls: Option<tls::TlsSummary>,
}

/// One generated recipient with its derived labels.
struct Row<'a> {
    rec: &'a Record,
    /// Lower case (borrowed when the address already is).
    domain: Cow<'a, str>,
    provider: Option<&'a str>,
}

/// [`analyze_fold`] of events in memory.
pub fn analyze(events: &[Event], spooled: &[Spooled], inp: &Inputs) -> Analysis {
    analyze_fold(Fold::of(events, inp), spooled, inp)
}

/// Everything a report shows, from a run's folded events and its spool leftovers.
pub fn analyze_fold(mut fold: Fold<'_>, spooled: &[Spooled], inp: &Inputs) -> Analysis {
    fold.ledger.add_spooled(spooled);
    fold.settle();
    let ledger = &fold.ledger;
    let counts = ledger.counts();
    let rows: Vec<Row<'_>> = ledger
        .generated()
        .map(|((_, rcpt), rec)| {
            let d = domain_of(rcpt);
            let domain = match d.bytes().any(|b| b.is_ascii_uppercase()) {
                true => Cow::Owned(d.to_ascii_lowercase()),
                false => Cow::Borrowed(d),
            };
            let provider = provider_of_domain(&inp.providers, &domain);
            Row { rec, domain, provider }
        })
        .collect();

    let all: Vec<&Row<'_>> = rows.iter().collect();
    let judged_inp = inp.after_warmup();
    let judged: Vec<&Row<'_>> = all.iter().copied().filter(|r| inp.judged(r.rec)).collect();
    let overall = dist_of(&judged, Record::delivery_us);
    let uncorrected = dist_of(&judged, Record::uncorrected_us);
    // No eligible message, no SLO: nothing measured never passes.
    let slo_compliance = overall.share_within(inp.slo_ms).unwrap_or(0.0);
    let slo_pass = !overall.is_empty() && slo_compliance >= inp.slo_target;
    let intervals = (inp.duration_s.ceil() as usize).max(1);
    let overall_series = series(&all, inp, intervals);
    let interval_dists = per_interval(&all, inp, intervals);
    let uncorrected_intervals = per_interval_by(&all, inp, intervals, Record::uncorrected_us);

    let mut series_by_region = BTreeMap::new();
    let mut by_region: BTreeMap<String, Group> = BTreeMap::new();
    let mut by_provider: BTreeMap<String, Group> = BTreeMap::new();
    for r in &rows {
        if let Some(region) = &r.rec.region {
            add_to_group(by_region.entry(region.to_string()).or_default(), r.rec);
        }
        if let Some(p) = r.provider {
            add_to_group(by_provider.entry(p.to_string()).or_default(), r.rec);
        }
    }
    for region in by_region.keys() {
        let sel: Vec<&Row<'_>> = rows
            .iter()
            .filter(|r| r.rec.region.as_deref() == Some(region.as_str()))
            .collect();
        series_by_region.insert(region.clone(), series(&sel, inp, intervals));
    }
    let series_by_provider = by_provider
        .keys()
        .map(|p| {
            let sel: Vec<&Row<'_>> = rows.iter().filter(|r| r.provider == Some(p.as_str())).collect();
            (p.clone(), series(&sel, inp, intervals))
        })
        .collect();

    let wall = fold.wall_buckets(intervals);
    let rates = fold.rates(wall);
    let queue_depth = series::queue_depth(ledger, inp.start_ns, wall);
    let marks = series::marks(&fold.control, inp.start_ns);
    let thresholds: Vec<ThresholdResult> = inp
        .thresholds
        .iter()
        .map(|t| {
            // Counts are about correctness (`lost == 0`) and cover the whole run; the rest
            // judges the window after the warm-up.
            let (pool, on) = match t.metric {
                Metric::Count(_) => (&all, inp),
                _ => (&judged, &judged_inp),
            };
            let sel: Vec<&Row<'_>> = pool.iter().copied().filter(|r| in_scope(r, &t.scope)).collect();
            let span = (on.duration_s.ceil() as usize).max(1);
            let observed = observe(t, &sel, on, span);
            ThresholdResult {
                threshold: t.clone(),
                observed,
                pass: t.holds(observed),
            }
        })
        .collect();
    let contradictions = witness::contradictions(ledger);
    let unjudgeable = counts.unjudgeable();
    let pass = thresholds.iter().all(|t| t.pass) && slo_pass && counts.lost == 0 && contradictions.total == 0;
    let faults = faults::fault_metrics(&fold, &overall_series, inp);
    Analysis {
        identity: counts.check_identity(),
        contradictions,
        unjudgeable,
        counts,
        overall,
        uncorrected,
        slo_compliance,
        slo_pass,
        series: overall_series,
        intervals: interval_dists,
        uncorrected_intervals,
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
        tls: fold.tls.summary(),
    }
}

fn add_to_group(g: &mut Group, rec: &Record) {
    g.deferrals += u64::from(rec.deferrals);
    match rec.class() {
        Class::Delivered => g.delivered += 1,
        Class::Bounced => g.bounced += 1,
        _ => {}
    }
    if rec.eligible() {
        g.dist.record(rec.delivery_us());
    }
}

fn in_scope(r: &Row<'_>, scope: &Scope) -> bool {
    match scope {
        Scope::All => true,
        Scope::Region(n) => r.rec.region.as_deref() == Some(n),
        Scope::Provider(n) => r.provider == Some(n),
        // A scope names the domain as the scenario does; a suffixed recipient is in it too.
        Scope::Domain(n) => r.domain.eq_ignore_ascii_case(n) || network::bare_domain(&r.domain).eq_ignore_ascii_case(n),
    }
}

fn dist_of(rows: &[&Row<'_>], f: fn(&Record) -> Option<u64>) -> Dist {
    let mut d = Dist::new();
    for r in rows.iter().filter(|r| r.rec.eligible()) {
        d.record(f(r.rec));
    }
    d
}

/// Eligible rows grouped into 1 s intervals by intended time, valued by `f`.
fn per_interval_by(rows: &[&Row<'_>], inp: &Inputs, intervals: usize, f: fn(&Record) -> Option<u64>) -> ByInterval {
    let values = rows
        .iter()
        .filter(|r| r.rec.eligible())
        .filter_map(|r| Some((r.rec.intended?, f(r.rec))));
    ByInterval::new(values, inp.start_ns, intervals)
}

fn per_interval(rows: &[&Row<'_>], inp: &Inputs, intervals: usize) -> ByInterval {
    per_interval_by(rows, inp, intervals, Record::delivery_us)
}

fn series(rows: &[&Row<'_>], inp: &Inputs, intervals: usize) -> Vec<Point> {
    let by = per_interval(rows, inp, intervals);
    let mut c = by.cursor();
    let mut out = Vec::with_capacity(by.intervals());
    while let Some((i, d)) = c.next() {
        out.push(Point {
            t: i as f64,
            n: d.len(),
            p50: d.quantile_ms(0.5),
            p90: d.quantile_ms(0.9),
            p99: d.quantile_ms(0.99),
            slo: d.share_within(inp.slo_ms),
        });
    }
    out
}

/// A metric over a set of rows (no windowing).
fn metric_value(m: Metric, d: &Dist, rows: &[&Row<'_>], inp: &Inputs, span_s: f64) -> Option<f64> {
    match m {
        Metric::Latency(q) if q.quantile() >= 1.0 => d.max_ms(),
        Metric::Latency(q) => d.quantile_ms(q.quantile()),
        Metric::Slo => d.share_within(inp.slo_ms).or(Some(1.0)),
        Metric::Throughput => {
            let delivered = rows.iter().filter(|r| r.rec.class() == Class::Delivered).count();
            Some(delivered as f64 / span_s.max(1e-9))
        }
        Metric::Count(c) => {
            let n = rows
                .iter()
                .filter(|r| match c {
                    CountMetric::Lost => r.rec.class() == Class::Lost,
                    CountMetric::Bounced => r.rec.class() == Class::Bounced,
                    CountMetric::Expired => r.rec.class() == Class::Expired,
                    CountMetric::Queued => r.rec.class() == Class::Queued,
                    CountMetric::Stranded => r.rec.class() == Class::Queued && r.rec.stranded,
                    CountMetric::Suppressed => r.rec.class() == Class::Suppressed,
                    CountMetric::Delivered => r.rec.class() == Class::Delivered,
                    CountMetric::RejectedAtSubmit => r.rec.class() == Class::RejectedAtSubmit,
                    CountMetric::Duplicates => false,
                })
                .count() as u64;
            let dups: u64 = if c == CountMetric::Duplicates {
                rows.iter().map(|r| u64::from(r.rec.receipts.saturating_sub(1))).sum()
            } else {
                0
            };
            Some((n + dups) as f64)
        }
    }
}

fn observe(t: &Threshold, rows: &[&Row<'_>], inp: &Inputs, intervals: usize) -> Option<f64> {
    let Some(w) = t.window else {
        let d = dist_of(rows, Record::delivery_us);
        return metric_value(t.metric, &d, rows, inp, inp.duration_s);
    };
    // Sliding windows of `w` seconds, one interval apart; report the worst window.
    let len = (w.as_secs_f64().round() as usize).clamp(1, intervals);
    let upper_bound = matches!(t.op, Op::Lt | Op::Le | Op::Eq);
    let mut worst: Option<Option<f64>> = None;
    per_interval(rows, inp, intervals).each_window(len, |d| {
        let v = match t.metric {
            Metric::Throughput => Some((d.finite.len()) as f64 / len as f64),
            m => metric_value(m, d, &[], inp, len as f64),
        };
        let as_num = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
        worst = Some(match worst {
            None => v,
            Some(prev) if upper_bound && as_num(v) > as_num(prev) => v,
            Some(prev) if !upper_bound && as_num(v) < as_num(prev) => v,
            Some(prev) => prev,
        });
    });
    worst.unwrap_or_else(|| metric_value(t.metric, &Dist::new(), rows, inp, inp.duration_s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    fn msg(id: u64, intended_s: f64, delivered_after_ms: Option<u64>) -> Vec<Event> {
        let intended = (intended_s * 1e9) as u64;
        let mut s = Event::new(intended, format!("r.{id}"), Kind::Submitted);
        s.rcpt = Some("u@a.test".into());
        s.intended = Some(intended);
        s.submitted = Some(intended);
        s.region = Some("east".into()); // the generator names the node's region, as the MTA does
        let mut a = Event::new(intended, format!("r.{id}"), Kind::Accepted);
        a.rcpt = s.rcpt.clone();
        a.region = Some("east".into());
        let mut v = vec![s, a];
        if let Some(ms) = delivered_after_ms {
            let mut r = Event::new(intended + ms * 1_000_000, format!("r.{id}"), Kind::Received);
            r.rcpt = Some("u@a.test".into());
            v.push(r);
        }
        v
    }

    fn inputs(thresholds: &[&str]) -> Inputs {
        Inputs {
            start_ns: 0,
            duration_s: 10.0,
            warmup_s: 0.0,
            slo_ms: 1000.0,
            slo_target: 0.9,
            providers: [("a.test".to_string(), "pa".to_string())].into(),
            thresholds: thresholds.iter().map(|t| t.parse().unwrap()).collect(),
        }
    }

    /// Rejections with no SMTP reply (connection failures) beyond 10% of what was generated
    /// make a run unjudgeable; SMTP refusals do not, and a run with no eligible mail never
    /// passes its SLO.
    #[test]
    fn a_run_that_measured_nothing_does_not_pass() {
        let rejected = |id: u64, code: Option<u16>| {
            let mut e = Event::new(1, format!("r.{id}"), Kind::Rejected);
            (e.rcpt, e.intended, e.code) = (Some("u@a.test".into()), Some(1), code);
            e
        };
        let mut ev: Vec<Event> = (0..9).flat_map(|i| msg(i, 0.5, Some(10))).collect();
        ev.push(rejected(100, Some(550)));
        let a = analyze(&ev, &[], &inputs(&[]));
        assert_eq!(
            (a.unjudgeable.as_deref(), a.pass),
            (None, true),
            "an SMTP refusal is a verdict"
        );
        ev.extend([rejected(101, None), rejected(102, None)]);
        let a = analyze(&ev, &[], &inputs(&[]));
        assert_eq!(a.counts.submit_errors, 2);
        assert!(
            a.unjudgeable.as_deref().unwrap().contains("2 of 12 submissions"),
            "{:?}",
            a.unjudgeable
        );
        let none: Vec<Event> = (0..3).map(|i| rejected(i, None)).collect();
        let a = analyze(&none, &[], &inputs(&[]));
        assert!(a.unjudgeable.unwrap().contains("accepted none of the 3"));
        assert!(!a.slo_pass && !a.pass, "no eligible mail, no SLO pass");
    }

    /// A warm-up's slow messages are accounted for and charted but not judged; counts (a
    /// lost message) still cover the whole run.
    #[test]
    fn the_warmup_is_accounted_for_but_not_judged() {
        let mut ev = Vec::new();
        for id in 0..100u64 {
            let t = id as f64 / 10.0;
            // The first 2 s take 5 s (over the 1 s SLO); the rest 10 ms.
            ev.extend(msg(id, t, Some(if t < 2.0 { 5000 } else { 10 })));
        }
        let th = ["p99 < 100ms", "throughput >= 9/s over 2s windows", "lost == 0"];
        let cold = analyze(&ev, &[], &inputs(&th));
        assert!(!cold.slo_pass && !cold.pass, "judged from 0 s the warm-up fails it");
        let warm = analyze(
            &ev,
            &[],
            &Inputs {
                warmup_s: 2.0,
                ..inputs(&th)
            },
        );
        assert!(warm.slo_pass && warm.pass, "{:?}", warm.thresholds);
        assert_eq!(
            warm.overall.len(),
            80,
            "the 20 warm-up messages are not in the percentiles"
        );
        assert_eq!(warm.counts.delivered, 100, "but they are accounted for");
        assert_eq!(warm.series[0].n, 10, "and charted");
        // A message lost in the warm-up still fails `lost == 0`.
        let mut lossy = ev.clone();
        lossy.extend(msg(1000, 0.5, None));
        let a = analyze(
            &lossy,
            &[],
            &Inputs {
                warmup_s: 2.0,
                ..inputs(&th)
            },
        );
        assert_eq!(a.counts.lost, 1);
        assert!(!a.thresholds[2].pass && a.thresholds[0].pass, "{:?}", a.thresholds);
    }

    #[test]
    fn outage_is_a_spike_and_fails_windows() {
        let mut ev = Vec::new();
        let mut id = 0;
        for s in 0..10 {
            for k in 0..10 {
                id += 1;
                let t = s as f64 + k as f64 / 10.0;
                // Second 5's messages are never delivered; the rest take 100 ms.
                let d = if s == 5 { None } else { Some(100) };
                ev.extend(msg(id, t, d));
            }
        }
        let spooled: Vec<Spooled> = (41..=50)
            .map(|i| Spooled {
                msg_id: format!("r.{}", i + 10),
                rcpt: "u@a.test".into(),
                node: "n".into(),
                node_alive: true,
            })
            .collect();
        let a = analyze(
            &ev,
            &spooled,
            &inputs(&["p50 < 200ms", "p99 < 2s", "p50 < 200ms over 1s windows", "lost == 0"]),
        );
        assert_eq!(a.counts.queued, 10);
        assert_eq!(a.counts.delivered, 90);
        a.identity.clone().unwrap();
        assert_eq!(a.series[5].p50, None, "outage interval is +inf");
        assert!((a.series[4].p50.unwrap() - 100.0).abs() < 1.0);
        assert!((a.slo_compliance - 0.9).abs() < 1e-9);
        let r: Vec<(bool, Option<f64>)> = a.thresholds.iter().map(|t| (t.pass, t.observed)).collect();
        assert!(r[0].0, "overall p50 fine");
        assert!(!r[1].0 && r[1].1.is_none(), "p99 is +inf");
        assert!(!r[2].0, "window containing second 5 fails");
        assert!(r[3].0);
        assert!(!a.pass);
        assert_eq!(a.by_provider["pa"].delivered, 90);
        assert_eq!(a.by_region["east"].delivered, 90);
        assert_eq!(a.series_by_provider["pa"][5].p50, None, "per provider too");
        assert!((a.series_by_provider["pa"][4].p99.unwrap() - 100.0).abs() < 1.0);
        assert!(a.marks.is_empty());
    }

    #[test]
    fn queue_depth_and_marks_reach_the_analysis() {
        let mut ev = msg(1, 0.5, Some(2000));
        ev.extend(msg(2, 1.0, None)); // never terminal: queued to the end of the series
        let mut f = Event::new(1_000_000_000, "fault.1", Kind::Fault);
        f.text = Some("kill region/east".into());
        ev.push(f);
        let a = analyze(&ev, &[], &inputs(&[]));
        assert_eq!(a.queue_depth.overall.len(), a.rates.accepted.len());
        // No `delivered` from an MTA here: the receipt at 2.5 s ends message 1.
        let q = &a.queue_depth.overall;
        assert_eq!((q[0], q[1], q[2], q[3], q[9]), (0.5, 2.0, 1.5, 1.0, 1.0));
        assert_eq!(a.queue_depth.by_region["east"], *q);
        assert_eq!(a.marks.len(), 1);
        assert_eq!((a.marks[0].at_s, a.marks[0].label.as_str()), (1.0, "kill region/east"));
    }
}
