//! The resolved plan of a distributed run: which agent hosts which generator shards, provider
//! inbox farms and MTA regions. `placement:` decides what it names; the rest is spread evenly,
//! in a fixed order over the agents sorted by name, so the same agents and scenario always give
//! the same plan.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::scenario::placement::ANY;
use crate::scenario::{MtaKind, ScenarioFile};

/// What one agent hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Generator shards (`k` of [`Assignment::shards`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<u32>,
    /// Provider names whose inboxes it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<String>,
    /// Region names whose MTA nodes it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// The external MTA's bounce inbox (`mta.kind: external`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bounces: bool,
}

impl Role {
    pub fn is_idle(&self) -> bool {
        self.shards.is_empty() && self.providers.is_empty() && self.regions.is_empty() && !self.bounces
    }

    /// `generator 0/2, inboxes gmail yahoo, region us-east` for the log.
    pub fn describe(&self, shards: u32) -> String {
        let mut parts = Vec::new();
        if !self.shards.is_empty() {
            let ks: Vec<String> = self.shards.iter().map(|k| format!("{k}/{shards}")).collect();
            parts.push(format!("generator shard {}", ks.join(" ")));
        }
        if !self.providers.is_empty() {
            parts.push(format!("inboxes {}", self.providers.join(" ")));
        }
        if self.bounces {
            parts.push("bounce inbox".into());
        }
        if !self.regions.is_empty() {
            parts.push(format!("region {}", self.regions.join(" ")));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Every agent's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Generator shards in all: message `seq` belongs to shard `seq % shards`.
    pub shards: u32,
    pub roles: BTreeMap<String, Role>,
}

impl Assignment {
    /// The agent of each generator shard, in shard order.
    pub fn shard_agents(&self) -> Vec<String> {
        (0..self.shards)
            .map(|k| self.shard_agent(k).unwrap_or_default().to_string())
            .collect()
    }

    /// The agent of generator shard `k`.
    pub fn shard_agent(&self, k: u32) -> Option<&str> {
        self.roles
            .iter()
            .find(|(_, r)| r.shards.contains(&k))
            .map(|(n, _)| n.as_str())
    }
}

/// Why a plan cannot be made from the agents found.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("no agent answered on the cluster")]
    NoAgents,
    #[error("placement names agent(s) {0} that did not answer (answering: {1})")]
    Missing(String, String),
}

/// Resolves `placement:` against the agents that answered (`agents`, any order).
pub fn assign(f: &ScenarioFile, agents: &[String]) -> Result<Assignment, PlanError> {
    let mut names: Vec<String> = agents.to_vec();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(PlanError::NoAgents);
    }
    let p = f.placement.clone().unwrap_or_default();
    let missing: Vec<&str> = p
        .agents()
        .into_iter()
        .filter(|a| !names.iter().any(|n| n == a))
        .collect();
    if !missing.is_empty() {
        return Err(PlanError::Missing(missing.join(", "), names.join(", ")));
    }
    let mut roles: BTreeMap<String, Role> = names.iter().map(|n| (n.clone(), Role::default())).collect();
    // The even spread deals parts out round robin, continuing where the last part went, so
    // three agents and one region give generator, inboxes and region one agent each.
    let mut next = 0usize;
    let mut deal = || {
        let n = names[next % names.len()].clone();
        next += 1;
        n
    };
    let shards = if p.generators.is_empty() {
        let a = deal();
        roles.entry(a).or_default().shards.push(0);
        1
    } else {
        for (k, a) in p.generators.iter().enumerate() {
            roles.entry(a.clone()).or_default().shards.push(k as u32);
        }
        p.generators.len() as u32
    };
    // Providers not placed by name go together, as one farm, to `*` or the next agent.
    let farm = p.providers.get(ANY).cloned().unwrap_or_else(&mut deal);
    for pr in &f.providers {
        let a = p.providers.get(&pr.name).cloned().unwrap_or_else(|| farm.clone());
        roles.entry(a).or_default().providers.push(pr.name.clone());
    }
    if f.mta.kind == MtaKind::External {
        roles.entry(farm).or_default().bounces = true;
    }
    for r in &f.regions {
        let a = p.regions.get(&r.name).cloned().unwrap_or_else(&mut deal);
        roles.entry(a).or_default().regions.push(r.name.clone());
    }
    Ok(Assignment { shards, roles })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(extra: &str) -> ScenarioFile {
        let text = format!(
            "name: t\nduration: 5s\nslo: {{ delivery_time: 1s, target: 99% }}\n\
             regions: [{{ name: east, nodes: 1 }}, {{ name: west, nodes: 1 }}]\n\
             providers: [{{ name: gmail, domains: [gmail.com], rules: generic }}, {{ name: yahoo, domains: [yahoo.com], rules: generic }}]\n\
             traffic: {{ rate: {{ peak: 10/s, curve: flat }}, domains: {{ gmail.com: 50%, yahoo.com: 50% }} }}\n{extra}"
        );
        serde_norway::from_str(&text).unwrap()
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn three_agents_and_one_region_get_one_part_each() {
        let mut f = scenario("");
        f.regions.truncate(1);
        let a = assign(&f, &names(&["c", "a", "b"])).unwrap();
        assert_eq!(a.shards, 1);
        assert_eq!(a.roles["a"].shards, vec![0]);
        assert_eq!(a.roles["b"].providers, names(&["gmail", "yahoo"]));
        assert_eq!(a.roles["c"].regions, names(&["east"]));
        assert_eq!(a.shard_agent(0), Some("a"));
    }

    #[test]
    fn placement_decides_what_it_names_and_the_rest_is_spread() {
        let f = scenario("placement: { generators: [g1, g2], providers: { gmail: i1 }, regions: { west: m1 } }\n");
        let a = assign(&f, &names(&["g1", "g2", "i1", "m1"])).unwrap();
        assert_eq!(a.shards, 2);
        assert_eq!(
            (a.roles["g1"].shards.clone(), a.roles["g2"].shards.clone()),
            (vec![0], vec![1])
        );
        assert_eq!(a.roles["i1"].providers, names(&["gmail"]));
        assert_eq!(a.roles["m1"].regions, names(&["west"]));
        // yahoo (unplaced) and east (unplaced) are dealt to the first agents in name order.
        let yahoo = a
            .roles
            .iter()
            .find(|(_, r)| r.providers.contains(&"yahoo".into()))
            .unwrap()
            .0;
        let east = a
            .roles
            .iter()
            .find(|(_, r)| r.regions.contains(&"east".into()))
            .unwrap()
            .0;
        assert_eq!((yahoo.as_str(), east.as_str()), ("g1", "g2"));
    }

    #[test]
    fn a_placed_agent_that_did_not_answer_is_named() {
        let f = scenario("placement: { regions: { east: gone } }\n");
        let e = assign(&f, &names(&["a"])).unwrap_err().to_string();
        assert!(e.contains("gone") && e.contains("answering: a"), "{e}");
        assert!(matches!(assign(&f, &[]), Err(PlanError::NoAgents)));
    }

    #[test]
    fn one_agent_hosts_everything() {
        let f = scenario("");
        let a = assign(&f, &names(&["solo"])).unwrap();
        let r = &a.roles["solo"];
        assert_eq!((r.shards.len(), r.providers.len(), r.regions.len()), (1, 2, 2));
    }
}
