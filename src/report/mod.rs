//! Reports (SPEC §6): summary.json, report.md, report.html and charts, written into a run directory.

pub mod charts;
pub mod compare;
pub mod format;
pub mod html;
pub mod junit;
pub mod markdown;
pub mod summary;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;

use crate::measure::{Analysis, Point};
use charts::{ChartSpec, HLine, Line, Marker};
pub use summary::{RunInfo, SimLine, SpoolLine, Summary, VERDICT_ABORTED, VERDICT_ERROR};

/// Writes summary.json, report.md, report.html and charts/ into `dir`; returns the summary. Every chart
/// marks the analysis' chaos actions ([`Analysis::marks`], from the run's control events).
pub fn write_all(dir: &Path, info: &RunInfo, a: &Analysis) -> anyhow::Result<Summary> {
    let summary = Summary::new(info, a);
    let json = serde_json::to_string_pretty(&summary)?;
    crate::files::write(&dir.join("summary.json"), json + "\n")?;
    crate::measure::hlog::write_intervals(
        &dir.join("latency.hlog"),
        crate::events::from_ns(info.start_ns),
        &[("delivery", &a.intervals), ("uncorrected", &a.uncorrected_intervals)],
    )?;
    let chart_dir = dir.join("charts");
    let written = write_charts(&chart_dir, info, a)?;
    let md = markdown::render(&summary, &written);
    crate::files::write(&dir.join("report.md"), md)?;
    junit::write(dir, &summary, None)?;
    html::write(dir, &summary, a, &written)?;
    Ok(summary)
}

/// Bottom of the SLO chart: close enough to the target that a dip from 100% to 99.5% is
/// visible, yet low enough to show the worst interval.
fn slo_floor(a: &Analysis, target: f64) -> f64 {
    let worst = a
        .series
        .iter()
        .filter(|p| p.n > 0)
        .filter_map(|p| p.slo)
        .fold(1.0_f64, f64::min);
    let lo = worst.min(target) * 100.0;
    (lo - (100.0 - lo) * 0.5 - 1.0).clamp(0.0, 99.0).floor()
}

/// Intervals with no traffic intended further apart than this break a series' line instead
/// of being bridged: a region the balancer evicted, a provider whose traffic paused. Shorter
/// gaps are just sparse traffic.
const MAX_BRIDGED_GAP_S: f64 = 2.0;

/// A per-interval series as chart points. Empty intervals (no traffic intended) are skipped,
/// with a break (`NaN`) across long runs of them; undelivered ones are None (= ∞).
fn points(pts: &[Point], f: impl Fn(&Point) -> Option<f64>) -> Vec<(f64, Option<f64>)> {
    let mut out = Vec::new();
    let mut prev: Option<f64> = None;
    for p in pts.iter().filter(|p| p.n > 0) {
        if prev.is_some_and(|t| p.t - t > MAX_BRIDGED_GAP_S + 1.0) {
            out.push((p.t - 0.5, Some(f64::NAN)));
        }
        out.push((p.t, f(p)));
        prev = Some(p.t);
    }
    out
}

fn line(label: &str, pts: &[Point], f: fn(&Point) -> Option<f64>) -> Line {
    Line::new(label, points(pts, f))
}

/// Groups (regions, providers) with both percentiles drawn; beyond this only p99, so the
/// legend stays within the chart's height.
const MAX_GROUPS_WITH_P50: usize = 5;

/// One colour per group: p99 solid, p50 dashed.
fn group_lines(groups: &BTreeMap<String, Vec<Point>>) -> Vec<Line> {
    let with_p50 = groups.len() <= MAX_GROUPS_WITH_P50;
    let mut out = Vec::new();
    for (i, (name, s)) in groups.iter().enumerate() {
        let mut p99 = line(&format!("{name} p99"), s, |p| p.p99);
        p99.colour = Some(i);
        out.push(p99);
        if with_p50 {
            let mut p50 = line(&format!("{name} p50"), s, |p| p.p50);
            (p50.colour, p50.dashed) = (Some(i), true);
            out.push(p50);
        }
    }
    out
}

/// The charts' files, in report order: (title, path relative to the run directory).
pub const CHARTS: [(&str, &str); 6] = [
    ("delivery time", "charts/delivery-time.png"),
    ("delivery time by region", "charts/delivery-time-by-region.png"),
    ("delivery time by provider", "charts/delivery-time-by-provider.png"),
    ("SLO compliance", "charts/slo.png"),
    ("throughput", "charts/throughput.png"),
    ("queue depth", "charts/queue-depth.png"),
];

/// Renders every chart of [`CHARTS`] into `dir`; returns that list for the pages to link.
fn write_charts(dir: &Path, info: &RunInfo, a: &Analysis) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    let run = RunCharts::new(info, a);
    let specs = [
        ("delivery-time", run.delivery(a)),
        ("delivery-time-by-region", run.by_group("region", &a.series_by_region)),
        (
            "delivery-time-by-provider",
            run.by_group("provider", &a.series_by_provider),
        ),
        ("slo", run.slo(a)),
        ("throughput", run.throughput(a)),
        ("queue-depth", run.queue_depth(a)),
    ];
    for (stem, spec) in &specs {
        charts::render(spec, dir, stem).with_context(|| format!("cannot render {stem} chart"))?;
    }
    Ok(CHARTS.to_vec())
}

/// x axis label of the per-interval series: they bin mail by its intended send time, the
/// time every delivery time here is measured from.
const BY_INTENDED_TIME: &str = "run time (s), by intended send time";

/// What every chart of one run shares — its name and SLO, the chaos markers, the x axis of
/// the per-interval series — so each chart below states only what is its own.
struct RunCharts<'a> {
    info: &'a RunInfo,
    markers: Vec<Marker>,
    /// End of the per-interval series' x axis (s).
    x_max: f64,
}

impl<'a> RunCharts<'a> {
    fn new(info: &'a RunInfo, a: &Analysis) -> RunCharts<'a> {
        let markers = a
            .marks
            .iter()
            .map(|m| Marker {
                x: m.at_s,
                label: m.label.clone(),
                minor: m.kind.is_minor(),
            })
            .collect();
        RunCharts {
            info,
            markers,
            x_max: a.series.len().max(1) as f64,
        }
    }

    /// A chart with the run's markers and nothing else set: no lines, linear auto y axis.
    fn spec(&self, title: String, x_label: &str, y_label: &str, x_max: f64) -> ChartSpec {
        ChartSpec {
            title,
            x_label: x_label.into(),
            y_label: y_label.into(),
            lines: vec![],
            hlines: vec![],
            markers: self.markers.clone(),
            x_range: (0.0, x_max),
            y_range: None,
            y_log: false,
        }
    }

    /// Delivery times by intended send second on a log axis, with the SLO as a reference line.
    fn delivery_spec(&self, title: String, lines: Vec<Line>) -> ChartSpec {
        let slo = HLine {
            y: self.info.slo_ms,
            label: format!("SLO {} ms", self.info.slo_ms),
        };
        ChartSpec {
            lines,
            hlines: vec![slo],
            y_log: true,
            ..self.spec(title, BY_INTENDED_TIME, "delivery time (ms, log)", self.x_max)
        }
    }

    /// p50, p90 and p99 of all mail, plus each region's p99 when there are several.
    fn delivery(&self, a: &Analysis) -> ChartSpec {
        let mut lines = vec![
            line("p50", &a.series, |p| p.p50),
            line("p90", &a.series, |p| p.p90),
            line("p99", &a.series, |p| p.p99),
        ];
        if a.series_by_region.len() > 1 {
            for (region, s) in &a.series_by_region {
                lines.push(line(&format!("p99 {region}"), s, |p| p.p99));
            }
        }
        let title = format!("{} — delivery time by intended send second", self.info.name);
        self.delivery_spec(title, lines)
    }

    /// One colour per region or provider (`what`): see [`group_lines`].
    fn by_group(&self, what: &str, groups: &BTreeMap<String, Vec<Point>>) -> ChartSpec {
        let how = match groups.len() <= MAX_GROUPS_WITH_P50 {
            true => "p99 solid, p50 dashed",
            false => "p99",
        };
        let title = format!("{} — delivery time by {what} ({how})", self.info.name);
        self.delivery_spec(title, group_lines(groups))
    }

    /// Per-interval SLO compliance in %, against the target.
    fn slo(&self, a: &Analysis) -> ChartSpec {
        let info = self.info;
        let title = format!("{} — SLO compliance (delivered within {} ms)", info.name, info.slo_ms);
        let compliance = points(&a.series, |p| Some(p.slo.unwrap_or(1.0) * 100.0));
        let target = HLine {
            y: info.slo_target * 100.0,
            label: format!("target {}%", info.slo_target * 100.0),
        };
        ChartSpec {
            lines: vec![Line::new("compliance", compliance)],
            hlines: vec![target],
            y_range: Some((slo_floor(a, info.slo_target), 100.0)),
            ..self.spec(title, BY_INTENDED_TIME, "compliance (%)", self.x_max)
        }
    }

    /// Messages per second: generated (at their intended send time), accepted, delivered and
    /// bounced.
    fn throughput(&self, a: &Analysis) -> ChartSpec {
        let r = &a.rates;
        let title = format!("{} — throughput", self.info.name);
        let x_max = r.generated.len().max(1) as f64;
        let lines = [
            ("generated (intended)", &r.generated),
            ("accepted", &r.accepted),
            ("delivered", &r.delivered),
            ("bounced", &r.bounced),
        ];
        ChartSpec {
            lines: lines
                .into_iter()
                .map(|(label, v)| Line::new(label, per_second(v.iter().map(|&n| n as f64))))
                .collect(),
            ..self.spec(title, "run time (s)", "messages per second", x_max)
        }
    }

    /// Mean MTA queue depth per second, overall and per region when there are several.
    fn queue_depth(&self, a: &Analysis) -> ChartSpec {
        let q = &a.queue_depth;
        let title = format!("{} — MTA queue depth (accepted, no terminal event yet)", self.info.name);
        let mut lines = vec![Line::new("all nodes", per_second(q.overall.iter().copied()))];
        if q.by_region.len() > 1 {
            lines.extend(
                q.by_region
                    .iter()
                    .map(|(region, v)| Line::new(region.clone(), per_second(v.iter().copied()))),
            );
        }
        let x_max = q.overall.len().max(1) as f64;
        ChartSpec {
            lines,
            ..self.spec(title, "run time (s)", "messages queued (mean over each s)", x_max)
        }
    }
}

/// A per-second series (value i is second i) as chart points; every second has a value.
fn per_second(v: impl Iterator<Item = f64>) -> Vec<(f64, Option<f64>)> {
    v.enumerate().map(|(i, y)| (i as f64, Some(y))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, Kind};
    use crate::measure::{analyze, Inputs};

    const S: f64 = 1e9;
    const START: u64 = 1_700_000_000_000_000_000;

    fn at(s: f64) -> u64 {
        START + (s * S) as u64
    }

    fn control(t: f64, id: &str, k: Kind, text: Option<&str>, node: Option<&str>) -> Event {
        let mut e = Event::new(at(t), id, k);
        (e.text, e.node) = (text.map(Into::into), node.map(Into::into));
        e
    }

    /// A minute of failover: 40 msg/s over three regions and providers; us-east is killed at
    /// 20 s (mail queued there is stranded until its restart at 50 s), comcast blocked 30–45 s
    /// (deferred, then a backlog), yahoo slowed 31–36 s.
    fn failover_events() -> Vec<Event> {
        let nodes = [
            ("us-east-1", "us-east"),
            ("us-east-2", "us-east"),
            ("us-west-1", "us-west"),
            ("eu-1", "eu"),
        ];
        let domains = ["gmail.com", "yahoo.com", "comcast.net"];
        let mut ev = Vec::new();
        for i in 0..60 * 40 {
            let t = f64::from(i) / 40.0;
            let (mut node, mut region) = nodes[i as usize % 4];
            let domain = domains[i as usize % 3];
            let mut lat = 0.06 + f64::from(i * 37 % 140) / 1000.0;
            let east_down = (20.0..50.0).contains(&t) && region == "us-east";
            if east_down {
                // Evicted at 20.4 s: until then submissions fail over after a timeout.
                (node, region) = nodes[2 + i as usize % 2];
                lat += (20.4 - t).max(0.0);
            }
            if domain == "comcast.net" && (30.0..45.0).contains(&t) {
                lat = 45.2 + (t - 30.0) * 0.1 - t;
            }
            if domain == "yahoo.com" && (31.0..36.0).contains(&t) {
                lat += 0.5;
            }
            if region == "us-east" && (19.8..20.0).contains(&t) {
                lat = 50.8 - t; // stranded in the killed region's spools
            }
            let id = format!("r.{i}");
            let mut e = Event::new(at(t + 0.001), &id, Kind::Submitted);
            (e.rcpt, e.intended, e.submitted) = (Some(format!("u{i}@{domain}")), Some(at(t)), Some(at(t)));
            let msg = |k: Kind, s: f64, on_node: bool| {
                let mut m = Event::new(at(s), &id, k);
                m.rcpt = e.rcpt.clone();
                if on_node {
                    (m.node, m.region) = (Some(node.into()), Some(region.into()));
                }
                m
            };
            let mut v = vec![msg(Kind::Accepted, t + 0.002, true)];
            if domain == "comcast.net" && (30.0..45.0).contains(&t) {
                v.push(msg(Kind::Deferred, t + 0.1, true));
            }
            if i % 97 == 0 {
                v.push(msg(Kind::Bounced, t + 0.15, true));
            } else {
                v.push(msg(Kind::Received, t + lat, false));
                v.push(msg(Kind::Delivered, t + lat + 0.0001, true));
            }
            ev.push(e);
            ev.extend(v);
        }
        ev.extend([
            control(20.0, "fault.1", Kind::Fault, Some("kill region/us-east"), None),
            control(20.4, "bal", Kind::Evicted, None, Some("us-east-1")),
            control(20.45, "bal", Kind::Evicted, None, Some("us-east-2")),
            control(
                30.0,
                "fault.2",
                Kind::Fault,
                Some("block provider/comcast pool shared"),
                None,
            ),
            control(31.0, "fault.3", Kind::Fault, Some("slow provider/yahoo 500ms"), None),
            control(36.0, "fault.3", Kind::FaultEnd, Some("end slow provider/yahoo"), None),
            control(
                45.0,
                "fault.2",
                Kind::FaultEnd,
                Some("end block provider/comcast"),
                None,
            ),
            control(50.0, "fault.4", Kind::Fault, Some("restart region/us-east"), None),
            control(50.7, "bal", Kind::Admitted, None, Some("us-east-1")),
            control(50.8, "bal", Kind::Admitted, None, Some("us-east-2")),
        ]);
        ev.sort_by_key(|e| e.t);
        ev
    }

    #[test]
    fn series_lines_break_across_long_gaps_only() {
        let pt = |t: f64, n: u64| Point {
            t,
            n,
            p99: Some(t),
            ..Point::default()
        };
        // Traffic at 0, 1, 3 (one empty second: bridged) and 7 (three empty: a break).
        let pts: Vec<Point> = (0..8)
            .map(|t| pt(f64::from(t), u64::from([0, 1, 3, 7].contains(&t))))
            .collect();
        let got = points(&pts, |p| p.p99);
        let xs: Vec<f64> = got.iter().map(|p| p.0).collect();
        assert_eq!(xs, [0.0, 1.0, 3.0, 6.5, 7.0]);
        assert!(got[3].1.unwrap().is_nan() && got[4].1 == Some(7.0));
    }

    /// Writes a whole report from synthetic events; set `MAILSURGE_CHART_DEMO=DIR` to keep it
    /// in DIR for looking at the charts.
    #[test]
    fn every_chart_marks_the_chaos_actions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::env::var_os("MAILSURGE_CHART_DEMO").map_or_else(|| tmp.path().to_path_buf(), Into::into);
        std::fs::create_dir_all(&dir).unwrap();
        let domains = [
            ("gmail.com", "gmail"),
            ("yahoo.com", "yahoo"),
            ("comcast.net", "comcast"),
        ];
        let inputs = Inputs {
            start_ns: START,
            duration_s: 60.0,
            warmup_s: 0.0,
            slo_ms: 1000.0,
            slo_target: 0.99,
            providers: domains.iter().map(|(d, p)| (d.to_string(), p.to_string())).collect(),
            thresholds: vec![],
        };
        let a = analyze(&failover_events(), &[], &inputs);
        assert_eq!(a.marks.len(), 8, "{:?}", a.marks);
        assert_eq!(a.series_by_provider.len(), 3);
        assert_eq!(a.queue_depth.by_region.len(), 3);
        let info = RunInfo {
            name: "failover-demo".into(),
            start_ns: START,
            seed: 1,
            run_id: "demo".into(),
            started_at: "2023-11-14T22:13:20Z".into(),
            wall_s: 61.0,
            slo_ms: 1000.0,
            slo_target: 0.99,
            aborted: None,
            spool: None,
            sim: None,
        };
        write_all(&dir, &info, &a).unwrap();
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        for (title, png) in CHARTS {
            assert!(md.contains(&format!("![{title}]({png})")), "{md}");
            let png = std::fs::read(dir.join(png)).unwrap();
            assert!(png.starts_with(b"\x89PNG"));
        }
        for stem in [
            "delivery-time",
            "delivery-time-by-region",
            "delivery-time-by-provider",
            "slo",
            "queue-depth",
        ] {
            let svg = std::fs::read_to_string(dir.join(format!("charts/{stem}.svg"))).unwrap();
            for label in [
                "kill region/us-east",
                "end block provider/comcast",
                "restart region/us-east",
            ] {
                assert!(svg.contains(label), "{stem} lacks {label}");
            }
        }
        // Balancer reactions are in the analysis; this crowded timeline needs more than
        // MAX_MARKER_ROWS label rows, so the charts keep their dotted lines but drop their labels.
        let minor: Vec<&str> = a
            .marks
            .iter()
            .filter(|m| m.kind.is_minor())
            .map(|m| m.label.as_str())
            .collect();
        assert_eq!(minor, ["evict us-east-1 +1", "admit us-east-1 +1"]);
        let svg = std::fs::read_to_string(dir.join("charts/throughput.svg")).unwrap();
        assert!(!svg.contains("evict us-east-1") && svg.contains("end slow provider/yahoo"));
    }
}
