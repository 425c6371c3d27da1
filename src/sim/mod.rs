//! `mailsurge sim` (SPEC §11): the scenario played on a calibrated model instead of real
//! processes and sockets — to ask what no box can run, and to check the model against the runs
//! it can.
//!
//! The model writes what a run writes — the same events into `events.jsonl.zst`, `run.json`,
//! `scenario.yaml` — and the report is rendered by the run's own code (`run::render`), so
//! `report`, `compare` and every chart work on a simulation as on a run. `summary.json` says
//! `"simulated": true` with the mode and the calibration source.

pub mod calibrate;
pub mod check;
pub mod des;
pub mod fluid;
pub mod provider;
pub mod quantiles;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::report::{SimLine, Summary};
use crate::run::{Compiled, RunRecord};
pub use calibrate::Calibration;

/// Offset 0 of every simulation: 2026-01-01T00:00:00Z. A simulation has no wall clock of its
/// own, and a fixed one makes the same seed give the same summary.json, byte for byte.
pub const SIM_EPOCH_NS: u64 = 1_767_225_600_000_000_000;

/// An event per message step.
pub const MODE_DISCRETE: &str = "discrete-event";
/// Flows per (region, provider, second).
pub const MODE_FLUID: &str = crate::run::FLUID;

/// zstd level of a simulation's events: they are remade in a second from the same seed, so
/// they are stored fast rather than small (a run's use level 19).
const EVENTS_LEVEL: i32 = 3;

/// Most planned recipients `--mode auto` simulates one by one; beyond, flows.
pub const AUTO_DISCRETE_MAX: f64 = 2_000_000.0;

/// How to simulate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Discrete-event up to 2 million recipients, fluid beyond.
    #[default]
    Auto,
    /// One event per message step: exact for the model, as slow as the mail is many.
    Discrete,
    /// Flows per (region, provider, second): any scale in seconds.
    Fluid,
}

/// What to simulate beyond the scenario itself.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    pub out: PathBuf,
    /// Nodes per region, replacing the scenario's (`--nodes us-east=12`).
    pub nodes: Vec<(String, u32)>,
    pub mode: Mode,
}

/// A finished simulation.
pub struct Outcome {
    pub dir: PathBuf,
    pub summary: Summary,
    /// Recipients the schedule planned.
    pub planned: f64,
    /// `discrete-event` or `fluid`.
    pub mode: &'static str,
    pub wall_s: f64,
}

/// Recipients the scenario's schedule plans (the curve's integral times recipients per message).
pub fn planned(c: &Compiled) -> f64 {
    let f = &c.scenario.file;
    let curve = crate::traffic::schedule::RateCurve::new(&f.traffic.rate, f.duration.0);
    curve.integral(0.0, f.duration.0.as_secs_f64()) * f64::from(f.traffic.recipients_per_message.max(1))
}

/// Simulates a compiled scenario into `opts.out` (which must be new or empty).
pub fn simulate(c: &Compiled, cal: &Calibration, opts: &SimOptions) -> anyhow::Result<Outcome> {
    let began = std::time::Instant::now();
    let f = &c.scenario.file;
    let dir = opts.out.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::run::write_scenario(&c.scenario, &dir)?;
    cal.write(&dir)?;
    let run_id = format!("{}-sim-{}", f.name, f.seed);
    let nodes = nodes(c, &opts.nodes);
    let planned = planned(c);
    let mode = match opts.mode {
        Mode::Discrete => MODE_DISCRETE,
        Mode::Fluid => MODE_FLUID,
        Mode::Auto if planned <= AUTO_DISCRETE_MAX => MODE_DISCRETE,
        Mode::Auto => MODE_FLUID,
    };
    let mut record = RunRecord {
        schema: crate::run::RUN_SCHEMA.into(),
        run_id,
        started_at: crate::events::rfc3339(SIM_EPOCH_NS),
        start_ns: SIM_EPOCH_NS,
        wall_s: 0.0,
        nodes: Vec::new(),
        spooled: Vec::new(),
        aborted: None,
        // No disk, no durability: the model's nodes keep their queues as a local spool would.
        spool: None,
        sim: Some(SimLine {
            mode: mode.into(),
            calibration: cal.source.clone(),
        }),
        cluster: None,
    };
    let summary = if mode == MODE_DISCRETE {
        let model = des::Model::new(c, cal, &record.run_id, nodes, SIM_EPOCH_NS);
        let out = crate::run::store_events(&dir, f, EVENTS_LEVEL, |sink| model.run(sink))?;
        (record.wall_s, record.nodes, record.spooled) = (out.end_ns as f64 / 1e9, out.nodes, out.spooled);
        record.write(&dir)?;
        crate::run::render(&dir).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        let out = fluid::run(c, cal, nodes, SIM_EPOCH_NS);
        let inputs = crate::run::inputs(f, SIM_EPOCH_NS);
        let analysis = fluid::analysis::analyze(&out, &inputs);
        crate::run::store_events(&dir, f, EVENTS_LEVEL, |sink| out.control.iter().cloned().for_each(sink))?;
        (record.wall_s, record.nodes) = (out.end_s, out.nodes);
        record.write(&dir)?;
        let info = crate::run::run_info(f, record, &inputs);
        crate::report::write_all(&dir, &info, &analysis)?
    };
    Ok(Outcome {
        dir,
        summary,
        planned,
        mode,
        wall_s: began.elapsed().as_secs_f64(),
    })
}

/// Every node as `run` names and weighs them: `<region>-<n>`, the region's weight split over
/// its nodes; `--nodes` replaces a region's count.
fn nodes(c: &Compiled, over: &[(String, u32)]) -> Vec<(String, String, f64)> {
    let mut v = Vec::new();
    for r in &c.scenario.file.regions {
        let n = over
            .iter()
            .rev()
            .find(|(name, _)| *name == r.name)
            .map_or(r.nodes, |x| x.1);
        for k in 1..=n {
            let w = r.weight.map_or(1.0, |w| w / f64::from(n.max(1)));
            v.push((crate::scenario::nodes::node_name(&r.name, k), r.name.clone(), w));
        }
    }
    v
}

/// The calibration for a simulation: from `--calibrate DIR`, else the shipped defaults.
pub fn calibration(dir: Option<&Path>, c: &Compiled) -> anyhow::Result<Calibration> {
    match dir {
        Some(d) => Calibration::from_dir(d, c),
        None => Ok(Calibration::shipped()),
    }
}
