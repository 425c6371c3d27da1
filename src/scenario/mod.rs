//! The plan: scenario files (SPEC §2) loaded, cross-checked and handed to the rest of mailsurge
//! as one validated [`Scenario`] of plain data.
//!
//! This is the bottom floor beside `units` and `events`: every runtime part reads the plan and
//! compiles its own share of it (the inboxes their rule tables, the MTA its response table and
//! screening, chaos its timeline), and none of them writes it. So the plan imports no runtime
//! part, and a new part (a shared queue, a simulation, an agent on another host) reads the same
//! data without pulling in the others.
//!
//! Nothing is started until a scenario has passed every check, so a typo costs a second, not a
//! three-minute run. Every error names `file:line:col` (see [`crate::config`]).

pub mod abort;
mod chaos;
mod check;
pub mod model;
pub mod network;
pub mod nodes;
pub mod placement;
mod rate;
pub mod threshold;
mod tls;

use std::path::Path;

pub use chaos::chaos_error;
pub use check::{limits, Reach, MAX_NODES_PER_REGION};
pub use model::*;
pub use network::Allow;
pub use threshold::Threshold;

use crate::config::{self, ConfigError, Shipped, Source};

/// A provider with its rule table's source resolved (read, not yet compiled: the inbox
/// compiles it).
#[derive(Debug, Clone)]
pub struct ResolvedProvider {
    pub spec: Provider,
    pub rules_source: Source,
}

/// A scenario that passed every check.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file as written (with CLI overrides applied); re-serialised into the report.
    pub file: ScenarioFile,
    pub source: Source,
    pub providers: Vec<ResolvedProvider>,
    /// The response table's source, so node configs can point at the same file.
    pub responses_source: Source,
}

impl Scenario {
    /// The provider that receives mail for `domain`.
    pub fn provider_for(&self, domain: &str) -> Option<&ResolvedProvider> {
        self.providers
            .iter()
            .find(|p| p.spec.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
    }

    /// The scenario as a run directory keeps it, re-runnable from there: every rule table or
    /// response table it names by path is carried along under `files/` (returned as (path
    /// relative to the scenario, text)) and referred to there; shipped names stay names.
    pub fn self_contained(&self) -> (String, Vec<(String, String)>) {
        let mut file = self.file.clone();
        let mut files = Vec::new();
        for (p, r) in file.providers.iter_mut().zip(&self.providers) {
            if r.rules_source.dir.is_some() {
                let rel = format!("files/rules-{}.yaml", p.name);
                p.rules = format!("./{rel}");
                files.push((rel, r.rules_source.text.clone()));
            }
        }
        if self.responses_source.dir.is_some() {
            let rel = "files/responses.yaml".to_string();
            file.mta.responses = format!("./{rel}");
            files.push((rel, self.responses_source.text.clone()));
        }
        (yaml(&file), files)
    }
}

fn yaml(f: &ScenarioFile) -> String {
    serde_norway::to_string(f).unwrap_or_else(|e| format!("# cannot serialise scenario: {e}\n"))
}

/// Loads and validates a scenario file for a run.
pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
    load_for(path, Reach::Run)
}

/// Loads and validates a scenario file for a run or for the model (`mailsurge sim`), which
/// carries schedules no generator process could.
pub fn load_for(path: &Path, reach: Reach) -> Result<Scenario, ConfigError> {
    load_allowing(path, reach, &[])
}

/// [`load_for`] with the command line's `--allow-network` CIDRs, merged into the scenario's
/// `network.allow` before it is checked: the run's `scenario.yaml` then records them, so a
/// rerun of its directory is allowed what the run was.
pub fn load_allowing(path: &Path, reach: Reach, allow: &[ipnet::IpNet]) -> Result<Scenario, ConfigError> {
    let source = Source::read(path)?;
    from_source_allowing(source, reach, allow)
}

/// Validates an already-read scenario for a run.
pub fn from_source(source: Source) -> Result<Scenario, ConfigError> {
    from_source_for(source, Reach::Run)
}

/// Validates an already-read scenario for a run or for the model.
pub fn from_source_for(source: Source, reach: Reach) -> Result<Scenario, ConfigError> {
    from_source_allowing(source, reach, &[])
}

/// [`from_source_for`] with `--allow-network` CIDRs (see [`load_allowing`]).
pub fn from_source_allowing(source: Source, reach: Reach, allow: &[ipnet::IpNet]) -> Result<Scenario, ConfigError> {
    let mut file: ScenarioFile = source.parse()?;
    file.network.allow = Allow::for_scenario(&file, allow).cidrs().to_vec();
    check::check_for(&source, &file, reach)?;

    let mut providers = Vec::new();
    for p in &file.providers {
        let line = source
            .find(&format!("name: {}", p.name), source.top_key_line("providers"))
            .map_or(1, |p| p.0);
        let rules_src = config::resolve(&source, &p.rules, Shipped::Inbox)
            .map_err(|m| source.error_at(&p.rules, line, format!("providers: rules: {m}")))?;
        providers.push(ResolvedProvider {
            spec: p.clone(),
            rules_source: rules_src,
        });
    }
    let mta_line = source.top_key_line("mta");
    let responses_source = config::resolve(&source, &file.mta.responses, Shipped::Scenario)
        .map_err(|m| source.error_at(&file.mta.responses, mta_line, format!("mta: responses: {m}")))?;
    Ok(Scenario {
        file,
        source,
        providers,
        responses_source,
    })
}

/// Overrides from the command line (`--seed`, `--duration`, `--rate-scale`, `--spool`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub seed: Option<u64>,
    pub duration: Option<crate::units::Dur>,
    pub rate_scale: Option<f64>,
    /// The same day on each node's own disk, or on the shared queue (`mta.spool`).
    pub spool: Option<SpoolKind>,
    /// `--allow-network`: merged into `network.allow` when the scenario is loaded
    /// ([`load_allowing`]), before any check, so `apply` has nothing left to do with it.
    pub allow_network: Vec<ipnet::IpNet>,
}

impl Scenario {
    /// Checks the file again after a change made in code (an override, a capacity probe), as
    /// `load` checked it: errors point into the original file.
    pub fn recheck(&self) -> Result<(), ConfigError> {
        check::check(&self.source, &self.file)
    }

    /// [`Scenario::recheck`] for a run or for the model.
    pub fn recheck_for(&self, reach: Reach) -> Result<(), ConfigError> {
        check::check_for(&self.source, &self.file, reach)
    }

    /// Applies CLI overrides; the report's scenario.yaml shows the values actually used. A
    /// `--spool local` drops the shared queue's own settings, and refuses a chaos action
    /// aimed at its server (exit 2, at the action).
    pub fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(k) = o.spool {
            let m = &mut self.file.mta;
            m.spool = k;
            if k == SpoolKind::Local {
                (m.nats, m.lease) = (None, None);
            }
            self.recheck()?;
        }
        if let Some(s) = o.seed {
            self.file.seed = s;
        }
        if let Some(d) = o.duration {
            self.file.duration = d;
        }
        if let Some(x) = o.rate_scale {
            let scale = |r: &mut crate::units::Rate| r.0 *= x;
            match &mut self.file.traffic.rate {
                RateSpec::Constant(r) => scale(r),
                RateSpec::Curve { peak, .. } => scale(peak),
            }
        }
        Ok(())
    }
}
