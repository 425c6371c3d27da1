//! Reports (SPEC §6): summary.json, report.md and charts, written into a run directory.

pub mod charts;
pub mod markdown;
pub mod summary;

use std::path::Path;

use anyhow::Context as _;

use crate::measure::{Analysis, Point};
use charts::{ChartSpec, HLine, Line, Marker};
pub use summary::{RunInfo, Summary};

/// A chaos action or other moment to mark on every chart.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at_s: f64,
    pub label: String,
}

/// Writes summary.json, report.md and charts/ into `dir`; returns the summary.
pub fn write_all(dir: &Path, info: &RunInfo, a: &Analysis, marks: &[Mark]) -> anyhow::Result<Summary> {
    let summary = Summary::new(info, a);
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(dir.join("summary.json"), json + "\n").context("cannot write summary.json")?;
    crate::measure::hlog::write(
        &dir.join("latency.hlog"),
        crate::events::from_ns(info.start_ns),
        &[
            hlog_series("delivery", &a.intervals),
            hlog_series("uncorrected", &a.uncorrected_intervals),
        ],
    )
    .context("cannot write latency.hlog")?;
    let chart_dir = dir.join("charts");
    let written = write_charts(&chart_dir, info, a, marks)?;
    let md = markdown::render(&summary, &written);
    std::fs::write(dir.join("report.md"), md).context("cannot write report.md")?;
    Ok(summary)
}

/// Per-second histograms of one tag for `latency.hlog` (interval i starts i seconds in).
fn hlog_series<'a>(tag: &'a str, v: &'a [crate::measure::Dist]) -> crate::measure::hlog::Series<'a> {
    crate::measure::hlog::Series {
        tag,
        intervals: v.iter().enumerate().map(|(i, d)| (i as f64, &d.finite)).collect(),
    }
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

fn line(label: &str, pts: &[Point], f: fn(&Point) -> Option<f64>) -> Line {
    Line {
        label: label.into(),
        // Empty intervals (no traffic intended) are skipped; undelivered ones are None (= ∞).
        points: pts.iter().filter(|p| p.n > 0).map(|p| (p.t, f(p))).collect(),
    }
}

fn write_charts(
    dir: &Path,
    info: &RunInfo,
    a: &Analysis,
    marks: &[Mark],
) -> anyhow::Result<Vec<(&'static str, &'static str)>> {
    let markers: Vec<Marker> = marks
        .iter()
        .map(|m| Marker {
            x: m.at_s,
            label: m.label.clone(),
        })
        .collect();
    let x_max = a.series.len().max(1) as f64;
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
    let delivery = ChartSpec {
        title: format!("{} — delivery time by intended send second", info.name),
        x_label: "run time (s), by intended send time".into(),
        y_label: "delivery time (ms, log)".into(),
        lines,
        hlines: vec![HLine {
            y: info.slo_ms,
            label: format!("SLO {} ms", info.slo_ms),
        }],
        markers: markers.clone(),
        x_range: (0.0, x_max),
        y_range: None,
        y_log: true,
    };
    charts::render(&delivery, dir, "delivery-time").context("cannot render delivery-time chart")?;

    let slo = ChartSpec {
        title: format!("{} — SLO compliance (delivered within {} ms)", info.name, info.slo_ms),
        x_label: "run time (s), by intended send time".into(),
        y_label: "compliance (%)".into(),
        lines: vec![Line {
            label: "compliance".into(),
            points: a
                .series
                .iter()
                .filter(|p| p.n > 0)
                .map(|p| (p.t, Some(p.slo.unwrap_or(1.0) * 100.0)))
                .collect(),
        }],
        hlines: vec![HLine {
            y: info.slo_target * 100.0,
            label: format!("target {}%", info.slo_target * 100.0),
        }],
        markers: markers.clone(),
        x_range: (0.0, x_max),
        y_range: Some((slo_floor(a, info.slo_target), 100.0)),
        y_log: false,
    };
    charts::render(&slo, dir, "slo").context("cannot render slo chart")?;

    let per_s = |v: &[u64]| -> Vec<(f64, Option<f64>)> {
        v.iter().enumerate().map(|(i, n)| (i as f64, Some(*n as f64))).collect()
    };
    let r = &a.rates;
    let throughput = ChartSpec {
        title: format!("{} — throughput", info.name),
        x_label: "run time (s)".into(),
        y_label: "messages per second".into(),
        lines: [
            ("generated (intended)", &r.generated),
            ("accepted", &r.accepted),
            ("delivered", &r.delivered),
            ("bounced", &r.bounced),
        ]
        .into_iter()
        .map(|(label, v)| Line {
            label: label.into(),
            points: per_s(v),
        })
        .collect(),
        hlines: vec![],
        markers,
        x_range: (0.0, r.generated.len().max(1) as f64),
        y_range: None,
        y_log: false,
    };
    charts::render(&throughput, dir, "throughput").context("cannot render throughput chart")?;
    Ok(vec![
        ("delivery time", "charts/delivery-time.png"),
        ("SLO compliance", "charts/slo.png"),
        ("throughput", "charts/throughput.png"),
    ])
}
