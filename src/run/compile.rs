//! The plan compiled into the parts a run plays: each runtime part compiles its own share of
//! the validated scenario — the inboxes their rule tables, the MTA its response table, chaos its
//! timeline — here, before anything starts. `validate` runs the same step, so every error it
//! can catch is a `file:line:col` and exit 2, never a failure three minutes into a run.

use crate::chaos;
use crate::config::ConfigError;
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
