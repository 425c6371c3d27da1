//! `mailsurge sim --check RUN_DIR`: the model's accuracy, measured. The run's own scenario,
//! seed and calibration are simulated, and both directories are measured by the same code; the
//! figures SPEC §11 names are set side by side against their tolerances.

use serde::Serialize;

use crate::run::Measured;

/// One compared figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub real: Option<f64>,
    pub sim: Option<f64>,
    /// How far apart, in the tolerance's unit (a share, or SLO points).
    pub off: Option<f64>,
    /// The tolerance in words (`±1%`, `±2 pts`); empty for figures shown, not judged.
    pub tolerance: &'static str,
    pub pass: bool,
}

/// The comparison of a real run (`real`) with its simulation (`sim`).
pub fn compare(real: &Measured, sim: &Measured) -> Vec<Row> {
    let (r, s) = (&real.analysis, &sim.analysis);
    let peak = |m: &Measured| m.analysis.queue_depth.overall.iter().copied().fold(0.0, f64::max);
    let mut rows = vec![
        relative(
            "delivered",
            r.counts.delivered as f64,
            s.counts.delivered as f64,
            0.01,
            "±1%",
        ),
        {
            let (a, b) = (r.slo_compliance * 100.0, s.slo_compliance * 100.0);
            let off = (a - b).abs();
            Row {
                figure: "SLO compliance (%)",
                real: Some(a),
                sim: Some(b),
                off: Some(off),
                tolerance: "±2 pts",
                pass: off <= 2.0,
            }
        },
        relative_opt(
            "p50 (ms)",
            r.overall.quantile_ms(0.5),
            s.overall.quantile_ms(0.5),
            0.20,
            "±20%",
        ),
        relative_opt(
            "p99 (ms)",
            r.overall.quantile_ms(0.99),
            s.overall.quantile_ms(0.99),
            0.35,
            "±35%",
        ),
        {
            // ±25%, but never finer than one message: a peak under a message is the share of
            // a second one message was queued, and a quarter of it is a few milliseconds.
            let (a, b) = (peak(real), peak(sim));
            let mut row = relative("peak MTA queue", a, b, 0.25, "±25% (≥1 msg)");
            row.pass |= (a - b).abs() <= 1.0;
            row
        },
    ];
    // The per-second delivered series, by wall time: shown as an RMS error, and relative to
    // the run's mean rate.
    let (a, b) = (&r.rates.delivered, &s.rates.delivered);
    let n = a.len().max(b.len()).max(1);
    let at = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0) as f64;
    let rms = ((0..n).map(|i| (at(a, i) - at(b, i)).powi(2)).sum::<f64>() / n as f64).sqrt();
    let mean = a.iter().sum::<u64>() as f64 / n as f64;
    rows.push(Row {
        figure: "delivered/s mean, RMS",
        real: Some(mean),
        sim: Some(b.iter().sum::<u64>() as f64 / n as f64),
        off: Some(if mean > 0.0 { rms / mean } else { 0.0 }),
        tolerance: "",
        pass: true,
    });
    rows
}

fn relative(figure: &'static str, real: f64, sim: f64, tol: f64, tolerance: &'static str) -> Row {
    relative_opt(figure, Some(real), Some(sim), tol, tolerance)
}

/// `None` is +∞ (an undelivered percentile): equal infinities agree, one alone does not.
fn relative_opt(figure: &'static str, real: Option<f64>, sim: Option<f64>, tol: f64, tolerance: &'static str) -> Row {
    let off = match (real, sim) {
        (Some(a), Some(b)) if a == b => Some(0.0),
        (Some(a), Some(b)) if a.abs() > 0.0 => Some((b - a).abs() / a.abs()),
        (Some(_), Some(_)) => Some(f64::INFINITY),
        (None, None) => Some(0.0),
        _ => None,
    };
    Row {
        figure,
        real,
        sim,
        off,
        tolerance,
        pass: off.is_some_and(|o| o <= tol),
    }
}

/// The table as printed: figure, real, simulated, how far apart, tolerance, verdict.
pub fn table(rows: &[Row]) -> String {
    let num = |v: Option<f64>| v.map_or_else(|| "∞".to_string(), |x| format!("{}", crate::report::format::r3(x)));
    let mut out = format!(
        "{:<24} {:>12} {:>12} {:>10}  {:<13} {}\n",
        "figure", "real", "simulated", "off", "tolerance", "verdict"
    );
    for r in rows {
        let off = match (r.off, r.tolerance) {
            (None, _) => "∞".to_string(),
            (Some(o), "±2 pts") => format!("{o:.2} pts"),
            (Some(o), _) if o.is_infinite() => "∞".to_string(),
            (Some(o), _) => format!("{:.1}%", o * 100.0),
        };
        let verdict = match (r.tolerance.is_empty(), r.pass) {
            (true, _) => "(shown)",
            (false, true) => "ok",
            (false, false) => "OUTSIDE",
        };
        out.push_str(&format!(
            "{:<24} {:>12} {:>12} {:>10}  {:<13} {}\n",
            r.figure,
            num(r.real),
            num(r.sim),
            off,
            r.tolerance,
            verdict
        ));
    }
    out
}
