//! The plan compiled into the parts a run plays: each runtime part compiles its own share of
//! the validated scenario — the inboxes their rule tables, the MTA its response table, chaos its
//! timeline — here, before anything starts. `validate` runs the same step, so every error it
//! can catch is a `file:line:col` and exit 2, never a failure three minutes into a run.

use std::path::Path;

use crate::chaos;
use crate::config::{ConfigError, Source};
use crate::inbox::RuleSet;
use crate::mta::responses::ResponseTable;
use crate::scenario::Scenario;

/// A scenario with every part compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub scenario: Scenario,
    /// Provider i's rule table.
    pub rules: Vec<RuleSet>,
    /// The MTA's response table (nodes load the same file again; compiling it here checks it).
    pub responses: ResponseTable,
    /// The chaos actions in scenario order.
    pub chaos: Vec<chaos::Action>,
}

/// Compiles every part of a validated scenario.
pub fn compile(s: Scenario) -> Result<Compiled, ConfigError> {
    let rules = s
        .providers
        .iter()
        .map(|p| RuleSet::from_source(&p.rules_source))
        .collect::<Result<Vec<_>, _>>()?;
    let responses = ResponseTable::from_source(&s.responses_source)?;
    let chaos = chaos::compile(&s)?;
    Ok(Compiled {
        scenario: s,
        rules,
        responses,
        chaos,
    })
}

/// Validates a scenario, a rule table, a response table or a node config, telling them apart by their
/// top-level keys; an error says which kind the file was read as, and why, so a damaged file
/// (a rules file missing its `provider:`) is not reported as a bad scenario without a hint.
///
/// A scenario only the model can carry (a rate or schedule past one generator) is valid, and
/// the answer says it is for `mailsurge sim` only and why `run` refuses it.
pub fn validate_file(path: &Path, allow: &[ipnet::IpNet]) -> Result<String, ConfigError> {
    use crate::scenario::{from_source_allowing, Reach};
    let src = Source::read(path)?;
    let (kind, why) = file_kind(&src.text);
    if kind == "scenario" {
        let run = from_source_allowing(src.clone(), Reach::Run, allow)
            .and_then(compile)
            .map(drop);
        if let Err(e) = &run {
            let model = from_source_allowing(src, Reach::Model, allow).and_then(compile);
            if model.is_ok() {
                return Ok(format!("scenario for `mailsurge sim` only — `run` refuses it: {e}"));
            }
        }
        return run.map(|()| kind.to_string()).map_err(|mut e| {
            e.message = format!("{} (read as {kind}: {why})", e.message);
            e
        });
    }
    let checked = match kind {
        "mock-inbox rules" => crate::inbox::RuleSet::from_source(&src).map(drop),
        // What `mailsurge mta --config` reads at start: the config, its response table and users.
        "node config" => crate::mta::NodeConfig::load_allowing(path, allow)
            .and_then(|(cfg, src)| crate::mta::load_responses(&cfg, &src).and(crate::mta::load_users(&cfg)))
            .map(drop),
        "response table" => crate::mta::responses::ResponseTable::from_source(&src).map(drop),
        // Compiling checks what each part reads of the plan: rule tables, the response table,
        // chaos replies.
        _ => from_source_allowing(src, Reach::Run, allow).and_then(compile).map(drop),
    };
    checked.map(|()| kind.to_string()).map_err(|mut e| {
        e.message = format!("{} (read as {kind}: {why})", e.message);
        e
    })
}

/// Which kind of file `text` is, and the evidence: a top-level list is a response table; else
/// the top-level keys are weighed (`provider:`/`latency:`/`rules:` for rules, the scenario's own
/// keys for a scenario).
fn file_kind(text: &str) -> (&'static str, String) {
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with([' ', '#', '-']) && !l.trim().is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
        .collect();
    if keys.is_empty() && text.lines().any(|l| l.starts_with("- ")) {
        return ("response table", "it is a top-level list".into());
    }
    const RULES: [&str; 3] = ["provider", "latency", "rules"];
    // Keys only a node config has (`name:`/`regions:` are the scenario's).
    const NODE: [&str; 5] = ["node", "region", "listen", "routes", "relay_networks"];
    const SCENARIO: [&str; 11] = [
        "name",
        "seed",
        "duration",
        "drain",
        "slo",
        "thresholds",
        "regions",
        "mta",
        "providers",
        "traffic",
        "chaos",
    ];
    let score = |set: &[&str]| keys.iter().filter(|k| set.contains(k)).count();
    let found = |set: &[&str]| {
        let k: Vec<String> = keys
            .iter()
            .filter(|k| set.contains(k))
            .map(|k| format!("`{k}:`"))
            .collect();
        if k.is_empty() {
            "none of its keys is known".to_string()
        } else {
            format!("it has {}", k.join(", "))
        }
    };
    let (rules, node, scenario) = (score(&RULES), score(&NODE), score(&SCENARIO));
    if node > rules && node > scenario {
        ("node config", found(&NODE))
    } else if rules > scenario {
        ("mock-inbox rules", found(&RULES))
    } else {
        ("scenario", found(&SCENARIO))
    }
}
