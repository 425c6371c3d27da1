//! `placement:` — where a distributed run (`run --cluster`, SPEC §12) puts each part of the
//! plan: generator shards, provider inbox farms and MTA regions, by agent name. What it leaves
//! out is spread evenly over the agents that answer; a single-host run ignores it.
//!
//! ```yaml
//! placement:
//!   generators: [gen-a, gen-b]          # one schedule shard per entry
//!   providers: { gmail: inbox-a, "*": inbox-b }   # "*": every provider not named
//!   regions: { us-east: mta-a }
//! ```
//!
//! Plain data and its checks only: the coordinator resolves it against the agents it finds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::ScenarioFile;
use crate::config::{ConfigError, Source};

/// Most generator shards one run may have.
pub const MAX_SHARDS: usize = 64;

/// Every provider not named explicitly.
pub const ANY: &str = "*";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// One generator shard per entry, each on the named agent (a name may repeat: two shards
    /// on one agent). Empty: one shard, placed by the even spread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generators: Vec<String>,
    /// Provider name (or `*`) → agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub providers: BTreeMap<String, String>,
    /// Region name → agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub regions: BTreeMap<String, String>,
}

impl Placement {
    /// Every agent the placement names.
    pub fn agents(&self) -> std::collections::BTreeSet<&str> {
        self.generators
            .iter()
            .chain(self.providers.values())
            .chain(self.regions.values())
            .map(String::as_str)
            .collect()
    }
}

/// An agent name: it is a NATS subject token, so letters, digits, `-` and `_` only.
pub fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Names resolve: every provider and region named exists, every agent name is a valid token.
pub fn check(src: &Source, f: &ScenarioFile) -> Result<(), ConfigError> {
    let Some(p) = &f.placement else { return Ok(()) };
    let from = src.top_key_line("placement");
    let err = |needle: &str, msg: String| src.error_at(needle, from, msg);
    if let Some(a) = p.agents().into_iter().find(|a| !valid_agent_name(a)) {
        return Err(err(
            a,
            format!("placement: agent name `{a}` must be letters, digits, `-` or `_` (it is a NATS subject token)"),
        ));
    }
    if p.generators.len() > MAX_SHARDS {
        return Err(err(
            "generators",
            format!(
                "placement: generators: at most {MAX_SHARDS} shards, not {}",
                p.generators.len()
            ),
        ));
    }
    if let Some(name) = p
        .providers
        .keys()
        .find(|n| *n != ANY && !f.providers.iter().any(|q| &q.name == *n))
    {
        let known: Vec<&str> = f.providers.iter().map(|q| q.name.as_str()).collect();
        return Err(err(
            name,
            format!(
                "placement: providers: no provider `{name}` (known: {}, or `*`)",
                known.join(", ")
            ),
        ));
    }
    if let Some(name) = p.regions.keys().find(|n| !f.regions.iter().any(|r| &r.name == *n)) {
        let known: Vec<&str> = f.regions.iter().map(|r| r.name.as_str()).collect();
        return Err(err(
            name,
            format!("placement: regions: no region `{name}` (known: {})", known.join(", ")),
        ));
    }
    Ok(())
}
