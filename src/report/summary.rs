//! `summary.json` (SPEC §6, schema `mailsurge.summary/v1`): the machine contract that CI gates
//! and `compare` read. Field names and units are fixed by the schema; extra keys are allowed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::format::{pct, r3};
use crate::measure::{Analysis, Contradictions, Counts, Dist, FaultMetrics, Group};

pub const SCHEMA: &str = "mailsurge.summary/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub schema: String,
    pub name: String,
    pub seed: u64,
    pub run_id: String,
    pub started_at: String,
    pub wall_s: f64,
    pub verdict: String,
    pub counts: Counts,
    pub delivery_ms: DeliveryMs,
    pub slo: Slo,
    pub thresholds: Vec<ThresholdLine>,
    pub by_region: BTreeMap<String, GroupLine>,
    pub by_provider: BTreeMap<String, GroupLine>,
    pub faults: Vec<Fault>,
    /// Recipients on which the run's witnesses disagree (generator, MTA logs, receipts, DSNs,
    /// spools), by kind; a run passes only with `total` 0. Absent from summaries written
    /// before it existed.
    #[serde(default)]
    pub contradictions: Contradictions,
    /// Not in the schema's required set: why the verdict is what it is, in words.
    pub reasons: Vec<String>,
    /// How the run kept accepted mail and what made a 250 durable. Absent from summaries of
    /// runs before the shared queue, and of external MTAs (theirs is their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolLine>,
    /// The scenario's `warmup`: percentiles, the SLO and latency/throughput thresholds judge
    /// only messages intended after it. Absent when the whole window is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_s: Option<f64>,
    /// TLS per hop (SPEC §13): absent when no message went over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::measure::tls::TlsSummary>,
    /// Written by `mailsurge sim`, not by a run of real processes: every figure is the
    /// model's. Absent (false) for real runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub simulated: bool,
    /// How the simulation ran and what it was calibrated from; only when `simulated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimLine>,
}

/// A simulation's mode (`discrete-event`: one event per message; `fluid`: flows per second)
/// and its calibration source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimLine {
    pub mode: String,
    pub calibration: String,
}

/// The run's spool: `local` (each node's disk) or `nats` (the shared queue), and why a 250
/// was safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolLine {
    pub kind: String,
    pub durability: String,
}

/// Percentiles in ms; `null` = +∞ (some eligible message was never delivered).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryMs {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    pub max: Option<f64>,
    pub uncorrected_p50: Option<f64>,
    pub uncorrected_p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Slo {
    pub delivery_ms: f64,
    pub target: f64,
    pub compliance: f64,
    pub pass: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThresholdLine {
    pub expr: String,
    pub observed: Option<f64>,
    pub pass: bool,
    /// The limit in the metric's unit (ms, fraction, count, msg/s).
    pub limit: f64,
    /// `observed` for people, with its unit.
    #[serde(default)]
    pub observed_text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupLine {
    pub delivered: u64,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub deferrals: u64,
    pub bounced: u64,
}

/// One chaos action's failover metrics (SPEC §5; definitions in [`crate::measure::faults`]).
/// Times in seconds since the run's offset 0; `detection_s` / `recovery_s` are `null` when
/// there was no reaction / no recovery. Keys after `duplicates` are extras the schema allows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub at_s: f64,
    pub action: String,
    pub target: String,
    pub detection_s: Option<f64>,
    pub recovery_s: Option<f64>,
    pub delayed: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// `fault.<n>` of its events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When it ended: its `for:` window closed, or the matching `restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<u32>,
    /// End of the intended-time window `delayed` and `duplicates` count.
    #[serde(default)]
    pub window_end_s: f64,
    /// Kill of a region/node: mail its spool *held* at the kill, delivered only after the
    /// restore. (Not `counts.stranded`, which is mail still in a dead node's spool at the end;
    /// summaries before the rename called this `stranded`.)
    #[serde(default, alias = "stranded", skip_serializing_if = "Option::is_none")]
    pub held_delivered_after_restore: Option<u64>,
    /// Kill of a region/node: mail it held at the kill that was never delivered nor otherwise
    /// finished.
    #[serde(default, alias = "stranded_undelivered", skip_serializing_if = "Option::is_none")]
    pub held_undelivered: Option<u64>,
    /// Kill of a region/node on a shared queue (`spool: nats`): seconds from the kill until
    /// the last message its nodes held under lease was picked up again by a node; absent if
    /// some never was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover_s: Option<f64>,
}

impl Fault {
    fn new(f: &FaultMetrics) -> Fault {
        Fault {
            at_s: r3(f.at_s.max(0.0)),
            action: f.action.clone(),
            target: f.target.clone(),
            detection_s: f.detection_s.map(r3),
            recovery_s: f.recovery_s.map(r3),
            delayed: f.delayed,
            lost: f.lost,
            duplicates: f.duplicates,
            id: f.id.clone(),
            end_s: f.end_s.map(r3),
            mode: f.mode.clone(),
            pool: f.pool.clone(),
            add: f.add.clone(),
            mx: f.mx,
            window_end_s: r3(f.window_end_s.max(0.0)),
            held_delivered_after_restore: f.held.map(|s| s.delivered_after_restore),
            held_undelivered: f.held.map(|s| s.undelivered),
            takeover_s: f.takeover_s.map(r3),
        }
    }
}

/// The verdict of a run stopped early — by hand (Ctrl-C, SIGTERM) or by an abort condition
/// (SPEC §12): neither pass nor fail.
pub const VERDICT_ABORTED: &str = "aborted";
/// The verdict of a run that measured too little to judge (the system under test accepted
/// nothing, or most submissions got no reply): a broken set-up, exit 3.
pub const VERDICT_ERROR: &str = "error";

/// Run facts that are not measurements.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub name: String,
    /// Wall-clock ns of the schedule's offset 0 (the hlog's StartTime).
    pub start_ns: u64,
    pub seed: u64,
    pub run_id: String,
    pub started_at: String,
    pub wall_s: f64,
    pub slo_ms: f64,
    pub slo_target: f64,
    /// Set when the run was stopped before it ended, by hand (`stopped by SIGTERM at 4.1 s`)
    /// or by an abort condition (`abort condition "…" held at t=12.0s (…)`): the verdict is
    /// then `aborted`, whatever the partial figures say.
    pub aborted: Option<String>,
    pub spool: Option<SpoolLine>,
    /// Set by `mailsurge sim`: the figures are a model's.
    pub sim: Option<SimLine>,
}

fn q(d: &Dist, q: f64) -> Option<f64> {
    d.quantile_ms(q).map(r3)
}

fn group(g: &Group) -> GroupLine {
    GroupLine {
        delivered: g.delivered,
        p50: q(&g.dist, 0.5),
        p99: q(&g.dist, 0.99),
        deferrals: g.deferrals,
        bounced: g.bounced,
    }
}

impl Summary {
    pub fn new(info: &RunInfo, a: &Analysis) -> Summary {
        let mut reasons = Vec::new();
        for t in a.thresholds.iter().filter(|t| !t.pass) {
            reasons.push(format!(
                "threshold `{}` failed: observed {}",
                t.threshold.expr,
                t.threshold.format_value(t.observed)
            ));
        }
        if !a.slo_pass {
            reasons.push(format!(
                "SLO failed: {} of eligible mail delivered within {} ms, target {}",
                pct(a.slo_compliance),
                info.slo_ms,
                pct(info.slo_target)
            ));
        }
        if a.counts.lost > 0 {
            reasons.push(format!("{} accepted messages lost", a.counts.lost));
        }
        if let Err(e) = &a.identity {
            reasons.push(format!("accounting identity does not hold: {e}"));
        }
        if a.contradictions.total > 0 {
            reasons.push(format!(
                "{} contradictions between witnesses: {}",
                a.contradictions.total,
                a.contradictions.describe()
            ));
        }
        let verdict = match (&info.aborted, &a.unjudgeable) {
            (Some(why), _) => {
                reasons.insert(0, format!("aborted: {why}; the figures cover the run until then"));
                VERDICT_ABORTED
            }
            (None, Some(why)) => {
                reasons.insert(0, format!("not judged: {why}"));
                VERDICT_ERROR
            }
            (None, None) if a.pass => "pass",
            (None, None) => "fail",
        };
        Summary {
            schema: SCHEMA.into(),
            name: info.name.clone(),
            seed: info.seed,
            run_id: info.run_id.clone(),
            started_at: info.started_at.clone(),
            wall_s: r3(info.wall_s),
            verdict: verdict.into(),
            counts: a.counts.clone(),
            delivery_ms: DeliveryMs {
                p50: q(&a.overall, 0.5),
                p90: q(&a.overall, 0.9),
                p99: q(&a.overall, 0.99),
                p999: q(&a.overall, 0.999),
                max: a.overall.max_ms().map(r3),
                uncorrected_p50: q(&a.uncorrected, 0.5),
                uncorrected_p99: q(&a.uncorrected, 0.99),
            },
            slo: Slo {
                delivery_ms: info.slo_ms,
                target: info.slo_target,
                compliance: (a.slo_compliance * 1e6).round() / 1e6,
                pass: a.slo_pass,
            },
            thresholds: a
                .thresholds
                .iter()
                .map(|t| ThresholdLine {
                    expr: t.threshold.expr.clone(),
                    observed: t.observed.map(r3),
                    pass: t.pass,
                    limit: t.threshold.limit,
                    observed_text: t.threshold.format_value(t.observed),
                })
                .collect(),
            by_region: a.by_region.iter().map(|(k, g)| (k.clone(), group(g))).collect(),
            by_provider: a.by_provider.iter().map(|(k, g)| (k.clone(), group(g))).collect(),
            faults: a.faults.iter().map(Fault::new).collect(),
            contradictions: a.contradictions.clone(),
            reasons,
            spool: info.spool.clone(),
            warmup_s: (a.warmup_s > 0.0).then_some(a.warmup_s),
            tls: a.tls.clone(),
            simulated: info.sim.is_some(),
            sim: info.sim.clone(),
        }
    }
}

/// The fault rows of summary.json and report.md, from a hand-built run with a region kill and
/// its restore (`measure::faults::fixtures`).
#[cfg(test)]
mod fault_rows {
    use super::*;
    use crate::measure::faults::fixtures::{region_kill_run, START};
    use crate::report::RunInfo;

    #[test]
    fn summary_with_faults_validates_against_the_schema() {
        let (_, a) = region_kill_run();
        let info = RunInfo {
            name: "faults".into(),
            start_ns: START,
            seed: 7,
            run_id: "faults-1".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            wall_s: 31.0,
            slo_ms: 1000.0,
            slo_target: 0.9,
            aborted: None,
            spool: None,
            sim: None,
        };
        let summary = Summary::new(&info, &a);
        let v = serde_json::to_value(&summary).unwrap();
        let faults = v["faults"].as_array().unwrap();
        assert_eq!(faults.len(), 2);
        let k = &faults[0];
        for key in [
            "at_s",
            "action",
            "target",
            "detection_s",
            "recovery_s",
            "delayed",
            "lost",
            "duplicates",
        ] {
            assert!(k.get(key).is_some(), "faults[0] lacks {key}");
        }
        assert_eq!(k["at_s"], 10.0);
        assert_eq!(k["detection_s"], 0.3);
        assert_eq!(k["recovery_s"], 3.0);
        assert_eq!(
            (
                k["held_delivered_after_restore"].as_u64(),
                k["held_undelivered"].as_u64()
            ),
            (Some(0), Some(4))
        );
        assert!(faults[1].get("held_undelivered").is_none(), "a restore holds nothing");

        // null detection/recovery are written as null, not left out.
        let mut never = summary.clone();
        never.faults[0].detection_s = None;
        never.faults[0].recovery_s = None;
        let never = serde_json::to_value(&never).unwrap();
        assert!(never["faults"][0]["detection_s"].is_null() && never["faults"][0]["recovery_s"].is_null());

        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/summary.v1.schema.json");
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        for doc in [&v, &never] {
            let errors: Vec<String> = validator
                .iter_errors(doc)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "summary.json violates the schema: {errors:#?}");
        }
        // Round trip (compare reads summaries back).
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back.faults[0].held_undelivered, Some(4));

        let md = crate::report::markdown::render(&summary, &[]);
        assert!(md.contains("## Faults"), "{md}");
        assert!(
            md.contains("| 10.0 s | kill | region/east | 0.300 s | 3.000 s | — | 34 | 4 | 1 | 0 delivered after restore, 4 undelivered |"),
            "{md}"
        );
        assert!(
            md.contains("| 20.0 s | restore | region/east | 0.800 s | 0.000 s | — | 0 | 0 | 0 | — |"),
            "{md}"
        );
    }
}
