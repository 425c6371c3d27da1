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

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::format::{num, pct, r3};
use super::summary::{Summary, SCHEMA};
use crate::scenario::threshold::{Metric, Scope, Threshold};
use model::delta_text;

pub(super) mod model;
mod render;
#[cfg(test)]
mod tests;

pub use model::{fmt_value, Comparison, MetricDelta, RunRef, Status, Tolerance, Unit, Value, COMPARE_SCHEMA};
pub use render::{render_markdown, render_text, write_into_run};

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
    /// `--tolerance` and `--min-delta` as the comparison's limits.
    pub fn new(tolerance: Tolerance, min_delta: Option<crate::units::Dur>) -> Limits {
        Limits {
            tolerance,
            min_delta_ms: min_delta.map(|d| d.as_secs_f64() * 1e3),
        }
    }

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
        Status::Regression if cand.reasons.is_empty() => format!("verdict went from pass to {c}"),
        Status::Regression => format!("verdict went from pass to {c}: {}", cand.reasons.join("; ")),
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
