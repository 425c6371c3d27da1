//! What a comparison is made of — [`Comparison`], one [`MetricDelta`] per metric, the
//! [`Tolerance`] — and how its values read (`4.17 ms`, `+12.5%`, `≤ 5.17 ms`).
//!
//! Apart from the rules (`compare.rs`) and the tables (`render.rs`) because both of them,
//! and junit.xml, read these types and words: here they depend on neither.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::report::format::{num, pct};
use crate::report::summary::Summary;

/// Schema tag of `compare.json` and of `compare --json`.
pub const COMPARE_SCHEMA: &str = "mailsurge.compare/v1";

/// The allowed relative worsening: `10%` or a fraction `0.1`; more than 100% is allowed
/// (written as a percentage) for metrics too noisy for a tighter gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance(pub f64);

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance(0.10)
    }
}

impl FromStr for Tolerance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let v = match t.strip_suffix('%') {
            Some(n) => n.trim().parse::<f64>().map(|x| x / 100.0),
            None => t.parse::<f64>(),
        }
        .map_err(|_| format!("`{s}` is not a tolerance (e.g. 10% or 0.1)"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(format!("tolerance `{s}` must be 0% or more"));
        }
        if !t.ends_with('%') && v > 1.0 {
            return Err(format!(
                "tolerance `{s}`: write a percentage (`{s}%`) or a fraction up to 1"
            ));
        }
        Ok(Tolerance(v))
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", num(self.0 * 100.0, 2))
    }
}

/// Unit of a compared value; decides how it is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Ms,
    Fraction,
    Count,
    PerS,
    Verdict,
}

/// A compared value as JSON: a number, `null` for ∞ (as in summary.json), or a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Num(f64),
    Text(String),
    Infinite,
}

impl Value {
    pub(super) fn of(v: Option<f64>) -> Value {
        v.map_or(Value::Infinite, Value::Num)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Improved,
    Regression,
}

/// One compared metric.
#[derive(Debug, Clone, Serialize)]
pub struct MetricDelta {
    /// `p99`, `slo.compliance`, `lost`, `region us-east p99`, `verdict`, …
    pub metric: String,
    pub unit: Unit,
    pub base: Value,
    pub candidate: Value,
    /// The worst candidate value still within tolerance (`null` = no limit, ∞).
    pub limit: Value,
    /// Change from base: relative in % (`delta_unit` `%`), in percentage points for the SLO
    /// (`pp`); `null` when undefined (from 0, to or from ∞, a verdict).
    pub delta: Option<f64>,
    pub delta_unit: &'static str,
    pub status: Status,
    /// The comparison in one sentence, for people.
    pub why: String,
}

/// Which run a side of the comparison is.
#[derive(Debug, Clone, Serialize)]
pub struct RunRef {
    pub name: String,
    pub run_id: String,
    pub started_at: String,
    pub verdict: String,
}

impl RunRef {
    pub(super) fn of(s: &Summary) -> RunRef {
        RunRef {
            name: s.name.clone(),
            run_id: s.run_id.clone(),
            started_at: s.started_at.clone(),
            verdict: s.verdict.clone(),
        }
    }
}

/// The whole comparison: `compare.json`, `compare --json`, and the source of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub schema: &'static str,
    pub base: RunRef,
    pub candidate: RunRef,
    pub tolerance: f64,
    /// Delivery-time increases up to this (ms) are never regressions.
    pub min_delta_ms: f64,
    /// True when any metric regressed beyond tolerance: exit code 1.
    pub regression: bool,
    /// The regressed metrics' names, in table order.
    pub regressions: Vec<String>,
    pub metrics: Vec<MetricDelta>,
    /// What was not compared, or differs between the runs in a way that matters for reading.
    pub notes: Vec<String>,
}

impl MetricDelta {
    /// The table's delta column.
    pub fn delta_text(&self) -> String {
        let n = |v: &Value| match v {
            Value::Num(x) => Some(*x),
            _ => None,
        };
        match self.unit {
            Unit::Verdict if self.base == self.candidate => "=".into(),
            Unit::Verdict => format!(
                "{} → {}",
                fmt_value(self.unit, &self.base),
                fmt_value(self.unit, &self.candidate)
            ),
            _ => delta_text(self.delta, self.delta_unit, n(&self.base), n(&self.candidate)),
        }
    }

    /// The table's limit column: `≤ 4.59 ms`, `≥ 99.900%`, `pass`, `any`.
    pub fn limit_text(&self) -> String {
        match (&self.limit, self.unit) {
            (Value::Infinite, _) => "any".into(),
            (Value::Text(s), _) => s.clone(),
            (v, Unit::Fraction | Unit::PerS) => format!("≥ {}", fmt_value(self.unit, v)),
            (v, _) => format!("≤ {}", fmt_value(self.unit, v)),
        }
    }

    /// The table's status column.
    pub fn status_text(&self) -> &'static str {
        match self.status {
            Status::Ok => "ok",
            Status::Improved => "improved",
            Status::Regression => "REGRESSION",
        }
    }
}

/// A value for people: `4.17 ms`, `1.52 s`, `99.870%`, `3`, `120.5/s`, `∞`, `pass`.
///
/// Delivery times here are not the report tables' [`ms`](crate::report::format::ms) (one
/// decimal, seconds from 10 s): compare rows and junit's compare cases have always used two
/// decimals and seconds from 1 s, and sharing one form would change one set of outputs.
pub fn fmt_value(unit: Unit, v: &Value) -> String {
    match (unit, v) {
        (_, Value::Text(s)) => s.clone(),
        (_, Value::Infinite) => "∞".into(),
        (Unit::Ms, Value::Num(x)) if *x >= 1000.0 => format!("{:.2} s", x / 1000.0),
        (Unit::Ms, Value::Num(x)) => format!("{x:.2} ms"),
        (Unit::Fraction, Value::Num(x)) => pct(*x),
        (Unit::Count, Value::Num(x)) => format!("{x:.0}"),
        (Unit::PerS, Value::Num(x)) => format!("{x:.1}/s"),
        (Unit::Verdict, Value::Num(x)) => format!("{x}"),
    }
}

/// `+12.5%`, `−0.15 pp`, `from 0`, `→ ∞`: percentage points keep 3 decimals because a
/// tenth of a point is already a lot of mail at a 99.9% target.
pub(super) fn delta_text(delta: Option<f64>, unit: &str, b: Option<f64>, c: Option<f64>) -> String {
    let (dp, unit) = if unit == "pp" { (3, " pp") } else { (1, unit) };
    match (delta, b, c) {
        (Some(0.0), _, _) => format!("0{unit}"),
        (Some(d), _, _) => format!("{}{}{unit}", if d > 0.0 { "+" } else { "−" }, num(d.abs(), dp)),
        (None, Some(_), Some(_)) => "from 0".into(),
        (None, Some(_), None) => "→ ∞".into(),
        (None, None, Some(_)) => "from ∞".into(),
        (None, None, None) => "=".into(),
    }
}
