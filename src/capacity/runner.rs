//! The capacity search as it runs: each probe a real `run` of its probe scenario into
//! `<out>/probes/<k>-<rate>/` (a normal run directory that `report` and `compare` accept), the
//! search's next step from the verdicts, and `capacity.json` at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::attribution::{self, Attribution};
use super::probe::{self, ProbePlan};
use super::search::{End, Next, Search, Verdict};
use crate::scenario::Scenario;

pub const SCHEMA: &str = "mailsurge.capacity/v1";
pub const CAPACITY_FILE: &str = "capacity.json";

/// How a search is run.
#[derive(Debug, Clone)]
pub struct Options {
    pub search: Search,
    pub warmup: Duration,
    pub step: Duration,
    pub down: Vec<String>,
    pub out: PathBuf,
    /// The knee must reach the scenario's peak × this for the gate to pass.
    pub headroom: f64,
    /// Turns `Some(signal)` when the search is to stop (Ctrl-C): the running probe ends early.
    pub stop: Option<tokio::sync::watch::Receiver<Option<&'static str>>>,
}

/// One probe in `capacity.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeLine {
    pub rate_per_s: f64,
    /// `pass`, `fail` or `error`.
    pub verdict: String,
    pub pass: bool,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// SLO compliance, a fraction.
    pub slo: Option<f64>,
    /// Its run directory, relative to the capacity directory.
    pub dir: String,
    /// Why it failed or errored, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// What saturated first at this rate, in one sentence (absent when the probe errored
    /// before its run directory was complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<String>,
    /// The signals behind it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
}

/// `capacity.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    pub schema: String,
    pub scenario: String,
    /// The highest passing rate; `null` when even the first probe failed or none could be judged.
    pub knee_per_s: Option<f64>,
    /// `knee`, `below_min`, `at_least_max` or `stopped`.
    pub end: String,
    /// What the end means, in words.
    pub why: String,
    /// What saturated first above the knee: the lowest failing probe's bottleneck (or, when
    /// none failed, the highest probe's).
    pub bottleneck: Option<String>,
    /// Its kind: `provider`, `cpu`, `generator`, `queue` or `none`.
    pub saturated: Option<String>,
    pub scenario_peak_per_s: f64,
    pub headroom: f64,
    /// The scenario's SLO: delivery time (ms) and the share that must meet it.
    pub slo_ms: f64,
    pub slo_target: f64,
    /// knee ≥ peak × headroom.
    pub pass: bool,
    pub down: Vec<String>,
    pub step_s: f64,
    pub warmup_s: f64,
    pub probes: Vec<ProbeLine>,
}

/// Runs the search; `progress` hears one line per probe started and finished.
pub async fn search(base: &Scenario, o: &Options, progress: &dyn Fn(&str)) -> anyhow::Result<Capacity> {
    std::fs::create_dir_all(o.out.join("probes")).with_context(|| format!("cannot create {}", o.out.display()))?;
    let mut done: Vec<(f64, Verdict)> = Vec::new();
    let mut lines: Vec<ProbeLine> = Vec::new();
    let end = loop {
        let rate = match o.search.next(&done) {
            Next::Probe(r) => r,
            Next::Done(end) => break end,
        };
        let k = done.len() + 1;
        let n = o.search.estimate(&done).max(k);
        let rel = format!("probes/{k:02}-{}", probe::rate_label(rate));
        progress(&format!(
            "probe {k} of ~{n}: {}/s for {:?} (+{:?} warm-up) → {rel}",
            probe::rate_label(rate),
            o.step,
            o.warmup
        ));
        let baseline = lines.first().and_then(|l: &ProbeLine| l.attribution.as_ref());
        let (verdict, line) = one(base, o, rate, &o.out.join(&rel), &rel, baseline).await?;
        progress(&format!(
            "probe {k} of ~{n}: {}/s {}{}",
            probe::rate_label(rate),
            line.verdict.to_uppercase(),
            line.bottleneck.as_deref().map_or(String::new(), |b| format!(" — {b}"))
        ));
        done.push((rate, verdict));
        lines.push(line);
        if o.stop.as_ref().is_some_and(|s| s.borrow().is_some()) {
            break End::Stopped {
                best: lines.iter().filter(|l| l.pass).map(|l| l.rate_per_s).reduce(f64::max),
                why: "stopped by hand".into(),
            };
        }
    };
    let peak = base.file.traffic.rate.peak();
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    for l in &mut lines {
        l.rate_per_s = r1(l.rate_per_s);
    }
    let (knee, end_name, why) = match &end {
        End::Knee(k) => (
            Some(*k),
            "knee",
            format!(
                "highest passing rate within {:.0}% of the lowest failing one",
                o.search.precision * 100.0
            ),
        ),
        End::BelowMin => (
            None,
            "below_min",
            format!(
                "the first probe ({}/s) failed: the knee is below --min",
                probe::rate_label(o.search.min)
            ),
        ),
        End::AtLeastMax(m) => (
            Some(*m),
            "at_least_max",
            format!("every probe passed up to --max ({}/s)", probe::rate_label(*m)),
        ),
        End::Stopped { best, why } => (*best, "stopped", why.clone()),
    };
    // What saturated first: at the lowest failing rate; with none failing, at the highest.
    let first_failing = lines
        .iter()
        .filter(|l| l.verdict == "fail")
        .min_by(|a, b| a.rate_per_s.total_cmp(&b.rate_per_s));
    let highest = lines.iter().max_by(|a, b| a.rate_per_s.total_cmp(&b.rate_per_s));
    let at = first_failing
        .or(highest)
        .and_then(|l| l.attribution.as_ref().map(|a| (l, a)));
    let c = Capacity {
        schema: SCHEMA.into(),
        scenario: base.file.name.clone(),
        knee_per_s: knee.map(r1),
        end: end_name.into(),
        why,
        bottleneck: at.map(|(l, a)| format!("at {}/s: {}", probe::rate_label(l.rate_per_s), a.bottleneck)),
        saturated: at.map(|(_, a)| a.saturated.clone()),
        scenario_peak_per_s: peak,
        headroom: o.headroom,
        slo_ms: base.file.slo.delivery_time.0.as_secs_f64() * 1e3,
        slo_target: base.file.slo.target.0,
        pass: knee.is_some_and(|k| k >= peak * o.headroom) && end_name != "stopped",
        down: o.down.clone(),
        step_s: o.step.as_secs_f64(),
        warmup_s: o.warmup.as_secs_f64(),
        probes: lines,
    };
    let json = serde_json::to_string_pretty(&c)?;
    crate::files::write(&o.out.join(CAPACITY_FILE), json + "\n")?;
    super::report::write(&o.out, &c).context("cannot write the capacity report")?;
    Ok(c)
}

/// One probe: its scenario, its run, its verdict.
async fn one(
    base: &Scenario,
    o: &Options,
    rate: f64,
    dir: &Path,
    rel: &str,
    baseline: Option<&Attribution>,
) -> anyhow::Result<(Verdict, ProbeLine)> {
    let plan = ProbePlan {
        rate,
        warmup: o.warmup,
        step: o.step,
        down: o.down.clone(),
    };
    let s = probe::scenario(base, &plan)?;
    let compiled = crate::run::compile(s)?;
    let opts = crate::run::RunOptions {
        out: Some(dir.to_path_buf()),
        quiet: true,
        silent: true,
        stop: o.stop.clone(),
        cluster: None,
    };
    let mut line = ProbeLine {
        rate_per_s: rate,
        verdict: String::new(),
        pass: false,
        p50_ms: None,
        p99_ms: None,
        slo: None,
        dir: rel.into(),
        reasons: Vec::new(),
        bottleneck: None,
        attribution: None,
    };
    let verdict = match crate::run::run(&compiled, &opts).await {
        Ok(out) => {
            let s = &out.summary;
            line.p50_ms = s.delivery_ms.p50;
            line.p99_ms = s.delivery_ms.p99;
            line.slo = Some(s.slo.compliance);
            line.reasons = s.reasons.clone();
            let by_hand = o.stop.as_ref().is_some_and(|s| s.borrow().is_some());
            match s.verdict.as_str() {
                "pass" => Verdict::Pass,
                "fail" => Verdict::Fail,
                // The scenario's own `abort:` condition held: the system gave out at this rate,
                // which is what a failed probe is (and it failed sooner). Ctrl-C is not.
                crate::report::summary::VERDICT_ABORTED if !by_hand => Verdict::Fail,
                v => Verdict::Error(format!("verdict {v}: {}", s.reasons.join("; "))),
            }
        }
        Err(e) => {
            line.reasons = vec![format!("{e:#}")];
            Verdict::Error(format!("{e:#}"))
        }
    };
    line.verdict = match &verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Error(_) => "error",
    }
    .into();
    line.pass = verdict == Verdict::Pass;
    // The signals, from the directory the run left (also after a failed node: the report is
    // written before the error).
    if dir.join(crate::run::RUN_FILE).is_file() {
        let p = attribution::Probe {
            dir,
            scenario: &compiled.scenario,
            rules: &compiled.rules,
            rate,
            warmup_s: o.warmup.as_secs_f64(),
            passed: line.pass,
        };
        match attribution::attribute(&p, baseline) {
            Ok(a) => {
                line.bottleneck = Some(a.bottleneck.clone());
                line.attribution = Some(a);
            }
            Err(e) => tracing::warn!("probe {rel}: no bottleneck attribution: {e}"),
        }
    }
    Ok((verdict, line))
}
