//! `mailsurge compare BASE CANDIDATE` and `run --baseline`: the CI regression gate between two
//! runs' `summary.json` (SPEC §6, §7).
//!
//! A gate has to fail a release on a real delivery-time regression and let a person see why
//! at a glance, so every compared metric becomes one row with the baseline value, the
//! candidate value, the change, the *limit* the candidate was held to and a one-sentence
//! reason. The rules, all with one tolerance `t` (default 10%):
//!
//! - **Delivery time** (`p50 p90 p99 p999 max`, `uncorrected_p50/p99`, per-region and
//!   per-provider `p99` when both runs have the group): higher is worse. The limit is
//!   `base × (1 + t)`, but never less than `base + min_delta`, by default 1% of the
//!   baseline's SLO delivery time ([`DEFAULT_MIN_DELTA_SHARE`]; 20 ms for smoke's 2 s).
//!   Two identical release runs of smoke on one machine differ by 30–120% at p99 (4 → 9 ms):
//!   on loopback a few milliseconds are scheduler jitter, and the SLO says what scale of delay
//!   matters to the business. `null` is ∞ (undelivered mail): a finite base and an ∞
//!   candidate is a regression, ∞ on both sides is equal.
//! - **SLO compliance**: lower is worse, compared in percentage points. The candidate may lose
//!   `t ×` the larger of the baseline's miss rate `1 − compliance` and its error budget
//!   `1 − target` — 10% of a 99% target's 1% budget is 0.1 pp. Using the error budget keeps a
//!   baseline at 100% from turning any single late message into an "infinite" relative change;
//!   using the miss rate keeps an already-failing baseline from being held to a stricter line.
//! - **Counts** `lost duplicates expired stranded`: higher is worse; any increase from 0 is a
//!   regression, otherwise the limit is `base × (1 + t)`.
//! - **Throughput** (when both runs have an unscoped `throughput` threshold, the only place a
//!   summary records it): lower is worse, limit `base × (1 − t)`.
//! - **Verdict**: `pass` → `fail` is a regression.
//!
//! Everything here is a pure function of two [`Summary`] values except [`load`] and
//! [`write_into_run`]; the CLI only prints and picks the exit code.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use super::summary::{Summary, SCHEMA};
use crate::scenario::threshold::{Metric, Scope, Threshold};

/// Schema tag of `compare.json` and of `compare --json`.
pub const COMPARE_SCHEMA: &str = "mailsurge.compare/v1";

/// Default smallest delivery-time increase that can be a regression, as a share of the
/// baseline's SLO delivery time (see the module doc for why).
pub const DEFAULT_MIN_DELTA_SHARE: f64 = 0.01;

/// What the candidate is held to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub tolerance: Tolerance,
    /// Smallest delivery-time increase (ms) that can be a regression; `None`: 1% of the
    /// baseline's SLO delivery time.
    pub min_delta_ms: Option<f64>,
}

impl Limits {
    fn min_delta_ms(&self, base: &Summary) -> f64 {
        self.min_delta_ms
            .unwrap_or(base.slo.delivery_ms * DEFAULT_MIN_DELTA_SHARE)
            .max(0.0)
    }
}

/// Why a summary could not be compared (exit 2); every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: not a {SCHEMA} summary ({found})", path.display())]
    Schema { path: PathBuf, found: String },
    #[error("{}: invalid {SCHEMA} summary: {source}", path.display())]
    Invalid { path: PathBuf, source: serde_json::Error },
}

/// Reads a `summary.json`, or the one inside a run directory, refusing anything that is not
/// `mailsurge.summary/v1` (a `gen` summary, another tool's JSON) rather than guessing.
pub fn load(path: &Path) -> Result<Summary, LoadError> {
    let path = if path.is_dir() {
        path.join("summary.json")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Read {
        path: path.clone(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.clone(),
        source,
    })?;
    match v.get("schema").and_then(|s| s.as_str()) {
        Some(SCHEMA) => {}
        Some(other) => {
            return Err(LoadError::Schema {
                path,
                found: format!("schema is `{other}`"),
            })
        }
        None => {
            return Err(LoadError::Schema {
                path,
                found: "no `schema` key".into(),
            })
        }
    }
    serde_json::from_value(v).map_err(|source| LoadError::Invalid { path, source })
}

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
    fn of(v: Option<f64>) -> Value {
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
    fn of(s: &Summary) -> RunRef {
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

/// Compares a candidate run with a baseline (see the module doc for the rules).
pub fn compare(base: &Summary, cand: &Summary, limits: Limits) -> Comparison {
    let t = limits.tolerance.0;
    let floor = limits.min_delta_ms(base);
    let (b, c) = (&base.delivery_ms, &cand.delivery_ms);
    let mut rows = Vec::new();
    for (name, bv, cv) in [
        ("p50", b.p50, c.p50),
        ("p90", b.p90, c.p90),
        ("p99", b.p99, c.p99),
        ("p999", b.p999, c.p999),
        ("max", b.max, c.max),
        ("uncorrected_p50", b.uncorrected_p50, c.uncorrected_p50),
        ("uncorrected_p99", b.uncorrected_p99, c.uncorrected_p99),
    ] {
        rows.push(higher_worse(name, Unit::Ms, bv, cv, t, floor));
    }
    rows.push(slo(base, cand, t));
    let (bc, cc) = (&base.counts, &cand.counts);
    for (name, bv, cv) in [
        ("lost", bc.lost, cc.lost),
        ("duplicates", bc.duplicates, cc.duplicates),
        ("expired", bc.expired, cc.expired),
        ("stranded", bc.stranded, cc.stranded),
    ] {
        rows.push(higher_worse(
            name,
            Unit::Count,
            Some(bv as f64),
            Some(cv as f64),
            t,
            0.0,
        ));
    }
    let mut notes = Vec::new();
    match (throughput(base), throughput(cand)) {
        (Some(bv), Some(cv)) => rows.push(lower_worse("throughput", bv, cv, t)),
        (Some(_), None) => notes.push("throughput: only the baseline has a `throughput` threshold".into()),
        (None, Some(_)) => notes.push("throughput: only the candidate has a `throughput` threshold".into()),
        (None, None) => {}
    }
    for (kind, bg, cg) in [
        ("region", &base.by_region, &cand.by_region),
        ("provider", &base.by_provider, &cand.by_provider),
    ] {
        for (name, g) in bg {
            match cg.get(name) {
                Some(h) => rows.push(higher_worse(
                    &format!("{kind} {name} p99"),
                    Unit::Ms,
                    g.p99,
                    h.p99,
                    t,
                    floor,
                )),
                None => notes.push(format!("{kind} {name}: only in the baseline, not compared")),
            }
        }
        for name in cg.keys().filter(|n| !bg.contains_key(*n)) {
            notes.push(format!("{kind} {name}: only in the candidate, not compared"));
        }
    }
    rows.push(verdict(base, cand));
    if base.name != cand.name {
        notes.push(format!(
            "different scenarios: baseline `{}`, candidate `{}`",
            base.name, cand.name
        ));
    }
    if base.seed != cand.seed {
        notes.push(format!(
            "different seeds ({} vs {}): different arrivals and rule decisions",
            base.seed, cand.seed
        ));
    }
    if base.slo.delivery_ms != cand.slo.delivery_ms || base.slo.target != cand.slo.target {
        notes.push(format!(
            "different SLOs: baseline {} ms at {}, candidate {} ms at {}; compliance compared as measured",
            base.slo.delivery_ms,
            pct(base.slo.target),
            cand.slo.delivery_ms,
            pct(cand.slo.target)
        ));
    }
    let regressions: Vec<String> = rows
        .iter()
        .filter(|r| r.status == Status::Regression)
        .map(|r| r.metric.clone())
        .collect();
    Comparison {
        schema: COMPARE_SCHEMA,
        base: RunRef::of(base),
        candidate: RunRef::of(cand),
        tolerance: t,
        min_delta_ms: floor,
        regression: !regressions.is_empty(),
        regressions,
        metrics: rows,
        notes,
    }
}

/// Float slack so that a candidate exactly at the limit is within it.
fn beyond(x: f64, limit: f64) -> bool {
    x > limit + limit.abs() * 1e-9 + 1e-12
}

/// Higher is worse; `None` is ∞. `floor` is the smallest increase that can be a regression.
fn higher_worse(metric: &str, unit: Unit, b: Option<f64>, c: Option<f64>, t: f64, floor: f64) -> MetricDelta {
    let limit = b.map(|b| (b * (1.0 + t)).max(b + floor));
    let limit = if unit == Unit::Count {
        limit.map(f64::floor)
    } else {
        limit
    };
    let inf = f64::INFINITY;
    let (bv, cv, lv) = (b.unwrap_or(inf), c.unwrap_or(inf), limit.unwrap_or(inf));
    let status = if beyond(cv, lv) {
        Status::Regression
    } else if (bv.is_infinite() && cv.is_finite()) || (cv < bv * (1.0 - t) && bv - cv > floor) {
        Status::Improved
    } else {
        Status::Ok
    };
    let delta = match (b, c) {
        (Some(b), Some(c)) if b != 0.0 => Some(r3((c - b) / b * 100.0)),
        (Some(b), Some(c)) if b == c => Some(0.0),
        _ => None,
    };
    let f = |v: Option<f64>| fmt_value(unit, &Value::of(v));
    let why = match (status, b, c) {
        (Status::Regression, Some(_), None) => {
            format!("{metric} is now ∞ (eligible mail never delivered), baseline {}", f(b))
        }
        (Status::Regression, Some(0.0), Some(_)) => {
            format!("{metric} rose from 0 to {}; any increase from 0 is a regression", f(c))
        }
        (Status::Regression, Some(_), Some(_)) => format!(
            "{metric} rose from {} to {} ({}), beyond the limit {} (baseline + {}{})",
            f(b),
            f(c),
            delta_text(delta, "%", b, c),
            f(limit),
            Tolerance(t),
            if floor > 0.0 {
                format!(", at least +{} ms", num(floor, 3))
            } else {
                String::new()
            }
        ),
        (Status::Improved, _, _) => format!("{metric} improved from {} to {}", f(b), f(c)),
        _ => format!("{metric} {} → {}, within the limit {}", f(b), f(c), f(limit)),
    };
    MetricDelta {
        metric: metric.into(),
        unit,
        base: Value::of(b),
        candidate: Value::of(c),
        limit: Value::of(limit),
        delta,
        delta_unit: "%",
        status,
        why,
    }
}

/// Lower is worse (throughput); both values are finite.
fn lower_worse(metric: &str, b: f64, c: f64, t: f64) -> MetricDelta {
    let limit = b * (1.0 - t);
    let status = if beyond(limit, c) {
        Status::Regression
    } else if beyond(c, b * (1.0 + t)) {
        Status::Improved
    } else {
        Status::Ok
    };
    let f = |v: f64| fmt_value(Unit::PerS, &Value::Num(v));
    let delta = (b != 0.0).then(|| r3((c - b) / b * 100.0));
    let why = match status {
        Status::Regression => format!(
            "{metric} fell from {} to {} ({}), below the limit {} (baseline − {})",
            f(b),
            f(c),
            delta_text(delta, "%", Some(b), Some(c)),
            f(limit),
            Tolerance(t)
        ),
        Status::Improved => format!("{metric} improved from {} to {}", f(b), f(c)),
        Status::Ok => format!("{metric} {} → {}, within the limit {}", f(b), f(c), f(limit)),
    };
    MetricDelta {
        metric: metric.into(),
        unit: Unit::PerS,
        base: Value::Num(b),
        candidate: Value::Num(c),
        limit: Value::Num(limit),
        delta,
        delta_unit: "%",
        status,
        why,
    }
}

/// SLO compliance in percentage points against `t ×` max(baseline miss rate, error budget).
fn slo(base: &Summary, cand: &Summary, t: f64) -> MetricDelta {
    let (b, c) = (base.slo.compliance, cand.slo.compliance);
    let budget = (1.0 - b).max(1.0 - base.slo.target).max(0.0);
    let allowed = t * budget;
    let limit = (b - allowed).max(0.0);
    let status = if beyond(limit, c) {
        Status::Regression
    } else if allowed > 0.0 && beyond(c, b + allowed) {
        Status::Improved
    } else {
        Status::Ok
    };
    let delta = Some(r3((c - b) * 100.0));
    let why = match status {
        Status::Regression => format!(
            "SLO compliance fell from {} to {} ({}), beyond the allowed −{} pp ({} of the larger of the \
             baseline's miss rate {} and its error budget {})",
            pct(b),
            pct(c),
            delta_text(delta, "pp", Some(b), Some(c)),
            num(allowed * 100.0, 3),
            Tolerance(t),
            pct(1.0 - b),
            pct(1.0 - base.slo.target)
        ),
        Status::Improved => format!("SLO compliance improved from {} to {}", pct(b), pct(c)),
        Status::Ok => format!(
            "SLO compliance {} → {}, within the limit {}",
            pct(b),
            pct(c),
            pct(limit)
        ),
    };
    MetricDelta {
        metric: "slo.compliance".into(),
        unit: Unit::Fraction,
        base: Value::Num(b),
        candidate: Value::Num(c),
        limit: Value::Num(limit),
        delta,
        delta_unit: "pp",
        status,
        why,
    }
}

fn verdict(base: &Summary, cand: &Summary) -> MetricDelta {
    let (b, c) = (base.verdict.as_str(), cand.verdict.as_str());
    let status = match (b, c) {
        ("pass", "pass") => Status::Ok,
        ("pass", _) => Status::Regression,
        (_, "pass") => Status::Improved,
        _ => Status::Ok,
    };
    let why = match status {
        Status::Regression if cand.reasons.is_empty() => "verdict went from pass to fail".to_string(),
        Status::Regression => format!("verdict went from pass to fail: {}", cand.reasons.join("; ")),
        _ => format!("verdict {b} → {c}"),
    };
    MetricDelta {
        metric: "verdict".into(),
        unit: Unit::Verdict,
        base: Value::Text(b.into()),
        candidate: Value::Text(c.into()),
        limit: Value::Text(if b == "pass" { "pass" } else { "any" }.into()),
        delta: None,
        delta_unit: "",
        status,
        why,
    }
}

/// The observed value of an unscoped, whole-run `throughput` threshold: summary.json has no
/// throughput of its own, and a windowed one measures the worst window, not the run.
fn throughput(s: &Summary) -> Option<f64> {
    s.thresholds.iter().find_map(|line| {
        let th = Threshold::from_str(&line.expr).ok()?;
        (th.metric == Metric::Throughput && th.scope == Scope::All && th.window.is_none())
            .then_some(line.observed)
            .flatten()
    })
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A number with at most `dp` decimals and no trailing zeros.
fn num(x: f64, dp: usize) -> String {
    let s = format!("{x:.dp$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn pct(f: f64) -> String {
    format!("{:.3}%", f * 100.0)
}

/// A value for people: `4.17 ms`, `1.52 s`, `99.870%`, `3`, `120.5/s`, `∞`, `pass`.
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
fn delta_text(delta: Option<f64>, unit: &str, b: Option<f64>, c: Option<f64>) -> String {
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

mod render;
pub use render::{render_markdown, render_text, write_into_run};

#[cfg(test)]
mod tests;
