//! From a run directory's raw data to every report file: the last step of `mailsurge run` and
//! all of `mailsurge report RUN_DIR`.
//!
//! One function serves both so a report is, by construction, a pure function of files the run
//! left behind — `events.jsonl`, the resolved `scenario.yaml` and `run.json` (the run's facts
//! that are not events: its offset 0, id, wall time, and what was left in each node's spool
//! with whether that node was alive). Re-rendering a directory therefore gives the same
//! summary.json as the run did, and a report can be rebuilt after its format changes or its
//! outputs were deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::shared::SpoolRecord;
use super::shared::QUEUE_NODE;
use crate::config::{ConfigError, Source};
use crate::events;
use crate::inbox::bounces::EXTERNAL_NODE;
use crate::measure::{self, Spooled};
use crate::report::{self, RunInfo, Summary};
use crate::scenario::{MtaKind, ScenarioFile};

/// The run's facts that are not events, beside `events.jsonl`.
pub const RUN_FILE: &str = "run.json";
pub const RUN_SCHEMA: &str = "mailsurge.run/v1";

/// `run.json`. Spool leftovers are kept here rather than rescanned from `nodes/*/spool` so a
/// directory stays renderable after its spools are deleted (the committed example has none).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub schema: String,
    pub run_id: String,
    /// RFC 3339, seconds: when `mailsurge run` started.
    pub started_at: String,
    /// Wall-clock ns of the schedule's offset 0 (every event time is relative to it).
    pub start_ns: u64,
    /// Seconds from offset 0 until the run had stopped everything (before its events were
    /// merged and compressed).
    pub wall_s: f64,
    /// MTA nodes and whether each was alive at the end (a dead node's spool is stranded mail).
    pub nodes: Vec<NodeRecord>,
    /// Every recipient still in a node's spool after the nodes stopped.
    pub spooled: Vec<SpooledRecord>,
    /// Why the run stopped early, when it was stopped by hand (verdict `aborted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// How the run kept accepted mail (local spools or the shared queue) and what made a 250
    /// durable. Absent in runs from before the shared queue: local spools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<SpoolRecord>,
    /// Written by `mailsurge sim`: how it ran and what calibrated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<report::SimLine>,
    /// A distributed run (`run --cluster`): its agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRecord>,
}

/// A distributed run's agents: what each hosted, how far its clock was from the coordinator's
/// (every event time was corrected by it), and whether it lasted the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The NATS server coordinator and agents met on.
    pub nats: String,
    pub agents: Vec<AgentRecord>,
}

impl ClusterRecord {
    /// Why the run cannot be judged, when an agent went dark: what it had not yet sent —
    /// receipts, submissions, MTA events — is unknown, so `lost` and the percentiles would
    /// blame the system under test for the harness's own failure.
    pub fn unjudgeable(&self) -> Option<String> {
        let lost: Vec<String> = self
            .agents
            .iter()
            .filter_map(|a| Some(format!("agent {} ({}) at {:.1} s", a.name, a.role, a.lost_at_s?)))
            .collect();
        (!lost.is_empty()).then(|| {
            format!(
                "{} stopped answering; the events it had not yet sent are unknown, so the figures cannot be judged",
                lost.join(", ")
            )
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    /// What it hosted, e.g. `generator shard 0/1, inboxes gmail yahoo`.
    pub role: String,
    /// Agent clock minus coordinator clock, ns; good to ± half `rtt_ns`.
    pub offset_ns: i64,
    pub rtt_ns: u64,
    /// Event batches it published and the coordinator read.
    pub batches: u64,
    /// Seconds into the run when it stopped answering, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_at_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub region: String,
    pub alive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpooledRecord {
    pub msg_id: String,
    pub rcpt: String,
    pub node: String,
}

/// Why a directory could not be rendered. Everything but `Output` is found before anything is
/// written: a wrong or damaged directory (`mailsurge report` exits 2); `Output` is exit 3.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{dir} is not a run directory: {missing} is missing (written by `mailsurge run`)")]
    NotARunDir { dir: PathBuf, missing: &'static str },
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("resolved scenario: {0}")]
    Scenario(#[from] ConfigError),
    #[error("cannot write the report: {0:#}")]
    Output(anyhow::Error),
}

impl RunRecord {
    pub fn read(dir: &Path) -> Result<RunRecord, RenderError> {
        let path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| input(&path, e))?;
        let r: RunRecord = serde_json::from_str(&text).map_err(|e| input(&path, e))?;
        if r.schema != RUN_SCHEMA {
            return Err(input(&path, format!("schema `{}`, expected `{RUN_SCHEMA}`", r.schema)));
        }
        Ok(r)
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(RUN_FILE);
        let json = serde_json::to_string_pretty(self)?;
        Ok(crate::files::write(&path, json + "\n")?)
    }

    /// The spool leftovers as the ledger wants them.
    fn spooled(&self) -> Vec<Spooled> {
        let alive: BTreeMap<&str, bool> = self.nodes.iter().map(|n| (n.name.as_str(), n.alive)).collect();
        // The shared queue's mail waits for any node: stranded only with none alive to take
        // it, or with the queue's server itself left dead.
        let queue_reachable = self.nodes.iter().any(|n| n.alive) && !self.spool.as_ref().is_some_and(|s| s.down_at_end);
        self.spooled
            .iter()
            .map(|s| Spooled {
                msg_id: s.msg_id.clone(),
                rcpt: s.rcpt.clone(),
                node: s.node.clone(),
                node_alive: match s.node.as_str() {
                    QUEUE_NODE => queue_reachable,
                    n => alive.get(n).copied().unwrap_or(false),
                },
            })
            .collect()
    }
}

fn input(path: &Path, e: impl std::fmt::Display) -> RenderError {
    RenderError::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Recipient domain (lower case) → provider name, from the scenario's providers.
pub fn provider_map(f: &ScenarioFile) -> BTreeMap<String, String> {
    f.providers
        .iter()
        .flat_map(|p| p.domains.iter().map(|d| (d.to_ascii_lowercase(), p.name.clone())))
        .collect()
}

/// A run directory's events file (compressed, or plain in runs from before compression).
pub fn events_file(dir: &Path) -> std::path::PathBuf {
    [events::RUN_EVENTS_FILE, events::LEGACY_EVENTS_FILE]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join(events::RUN_EVENTS_FILE))
}

/// A run directory measured: its scenario, its facts and the analysis every report file is
/// drawn from.
pub struct Measured {
    pub scenario: ScenarioFile,
    pub run: RunRecord,
    pub inputs: measure::Inputs,
    pub analysis: measure::Analysis,
}

/// `sim.mode` of a fluid simulation, whose events hold only its control events.
pub const FLUID: &str = "fluid";

/// What measurement needs of a scenario besides events, for a run whose offset 0 is
/// `start_ns`.
pub fn inputs(f: &ScenarioFile, start_ns: u64) -> measure::Inputs {
    measure::Inputs {
        start_ns,
        duration_s: f.duration.0.as_secs_f64(),
        warmup_s: f.warmup.map_or(0.0, |w| w.0.as_secs_f64()),
        slo_ms: f.slo.delivery_time.as_secs_f64() * 1e3,
        slo_target: f.slo.target.0,
        providers: provider_map(f),
        thresholds: f.thresholds.clone(),
    }
}

/// The report's facts about a run, from its scenario and `run.json`.
pub fn run_info(f: &ScenarioFile, run: RunRecord, inputs: &measure::Inputs) -> RunInfo {
    RunInfo {
        name: f.name.clone(),
        start_ns: run.start_ns,
        seed: f.seed,
        run_id: run.run_id,
        started_at: run.started_at,
        wall_s: run.wall_s,
        slo_ms: inputs.slo_ms,
        slo_target: inputs.slo_target,
        aborted: run.aborted,
        // Runs written before the record say nothing; an external MTA's durability is its own.
        spool: run
            .spool
            .filter(|_| f.mta.kind != MtaKind::External)
            .map(|s| report::SpoolLine {
                kind: s.kind,
                durability: s.durability,
            }),
        sim: run.sim,
    }
}

/// Reads a run directory and measures it (no file is written).
pub fn measure_dir(dir: &Path) -> Result<Measured, RenderError> {
    let events_path = events_file(dir);
    for missing in ["scenario.yaml", events::RUN_EVENTS_FILE, RUN_FILE] {
        let present = match missing {
            events::RUN_EVENTS_FILE => events_path.is_file(),
            f => dir.join(f).is_file(),
        };
        if !present {
            return Err(RenderError::NotARunDir {
                dir: dir.to_path_buf(),
                missing,
            });
        }
    }
    // Parsed, not validated: validation resolves rule files relative to the scenario, and the
    // resolved copy in a run directory is not where the original was. Only its numbers matter.
    let f: ScenarioFile = Source::read(&dir.join("scenario.yaml"))?.parse()?;
    let run = RunRecord::read(dir)?;
    if run.sim.as_ref().is_some_and(|s| s.mode == FLUID) {
        return Err(input(
            &dir.join(RUN_FILE),
            "a fluid simulation's figures are in its summary.json, not in its events: run `mailsurge sim` again to redo them",
        ));
    }
    let inputs = inputs(&f, run.start_ns);
    // One pass, never holding the events: measurement keeps a record per recipient.
    let mut fold = measure::Fold::new(&inputs);
    let torn = events::each_in_file(&events_path, |mut e| {
        e.expand(&|rcpt| measure::provider_of(&inputs.providers, rcpt));
        fold.add(&e);
        Ok(())
    })
    .map_err(|e| input(&events_path, e))?;
    if torn > 0 {
        return Err(input(&events_path, format!("{torn} lines are not events")));
    }
    let mut spooled = run.spooled();
    if f.mta.kind == MtaKind::External {
        // What an external MTA can be known to hold: see `Fold::still_deferred`. Everything
        // else accepted and neither received nor bounced by the end of the drain is `lost`.
        spooled.extend(fold.still_deferred(EXTERNAL_NODE));
    }
    let mut analysis = measure::analyze_fold(fold, &spooled, &inputs);
    if analysis.unjudgeable.is_none() {
        analysis.unjudgeable = run.cluster.as_ref().and_then(ClusterRecord::unjudgeable);
    }
    Ok(Measured {
        scenario: f,
        run,
        inputs,
        analysis,
    })
}

/// Reads a run directory, measures, and writes summary.json, report.md, report.html,
/// latency.hlog and charts/ into it (everything `report::write_all` writes); returns the summary.
pub fn render(dir: &Path) -> Result<Summary, RenderError> {
    let Measured {
        scenario: f,
        run,
        inputs,
        analysis,
    } = measure_dir(dir)?;
    let info = run_info(&f, run, &inputs);
    report::write_all(dir, &info, &analysis).map_err(RenderError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_run_facts_is_not_a_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("scenario.yaml"), "name: x\n").unwrap();
        std::fs::write(dir.path().join("events.jsonl"), "").unwrap();
        let e = render(dir.path()).unwrap_err();
        assert!(matches!(e, RenderError::NotARunDir { missing: RUN_FILE, .. }), "{e}");
    }

    #[test]
    fn spool_leftovers_take_their_node_alive_flag() {
        let r = RunRecord {
            schema: RUN_SCHEMA.into(),
            run_id: "x".into(),
            started_at: "2024-01-01T00:00:00Z".into(),
            start_ns: 1,
            wall_s: 1.0,
            nodes: vec![
                NodeRecord {
                    name: "a-1".into(),
                    region: "a".into(),
                    alive: true,
                },
                NodeRecord {
                    name: "a-2".into(),
                    region: "a".into(),
                    alive: false,
                },
            ],
            spooled: ["a-1", "a-2", "gone", QUEUE_NODE]
                .iter()
                .map(|n| SpooledRecord {
                    msg_id: "m".into(),
                    rcpt: "r@x".into(),
                    node: n.to_string(),
                })
                .collect(),
            aborted: None,
            spool: Some(SpoolRecord::local()),
            sim: None,
            cluster: None,
        };
        let dir = tempfile::tempdir().unwrap();
        r.write(dir.path()).unwrap();
        let mut back = RunRecord::read(dir.path()).unwrap();
        let alive: Vec<bool> = back.spooled().iter().map(|s| s.node_alive).collect();
        // The shared queue's leftovers wait for any live node.
        assert_eq!(alive, [true, false, false, true]);
        // ...unless its server was left dead, or no node lived.
        back.spool.as_mut().unwrap().down_at_end = true;
        assert!(!back.spooled()[3].node_alive);
        back.spool.as_mut().unwrap().down_at_end = false;
        back.nodes[0].alive = false;
        assert!(!back.spooled()[3].node_alive);
    }
}
