//! Finding a run's agents (SPEC §12): their heartbeats, the idle ones among them, whether the
//! scenario allows their addresses, and each one's clock offset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::clock::{self, Offset};
use super::plan::Assignment;
use super::wire::{self, Beat, Ctl, Reply};
use crate::events::now_ns;
use crate::run::Log;

/// How long the coordinator listens for heartbeats before it plans: four beats.
const DISCOVER: Duration = Duration::from_millis(2_000);
/// How long it waits for agents a placement names.
const DISCOVER_MAX: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

/// What the heartbeat listener has heard.
#[derive(Default)]
pub struct Heard {
    pub beats: BTreeMap<String, (Instant, Beat)>,
}

/// An agent's addresses beyond loopback, like every other address of the run, must be inside
/// the scenario's `network.allow` (with the coordinator's `--allow-network`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

pub fn check_agent_addresses(
    f: &crate::scenario::ScenarioFile,
    heard: &Mutex<Heard>,
    a: &Assignment,
) -> Result<(), Refused> {
    let allow = crate::scenario::network::Allow::for_scenario(f, &[]);
    let heard = crate::sync::lock(heard);
    for name in a.roles.iter().filter(|(_, r)| !r.is_idle()).map(|(n, _)| n) {
        let Some(range) = heard.beats.get(name).and_then(|(_, b)| b.addresses.clone()) else {
            continue;
        };
        let net: ipnet::IpNet = range
            .parse()
            .map_err(|e| Refused(format!("agent {name}: unreadable --addresses `{range}`: {e}")))?;
        allow
            .check_net(&format!("agent {name} --addresses"), net)
            .map_err(Refused)?;
    }
    Ok(())
}

/// Collects heartbeats.
pub async fn listen(client: async_nats::Client, heard: Arc<Mutex<Heard>>) {
    let Ok(mut sub) = client.subscribe(wire::BEAT_SUBJECT).await else {
        return;
    };
    while let Some(m) = sub.next().await {
        if let Ok(b) = serde_json::from_slice::<Beat>(&m.payload) {
            crate::sync::lock(&heard)
                .beats
                .insert(b.name.clone(), (Instant::now(), b));
        }
    }
}

/// The idle agents heard within [`DISCOVER`] — longer, up to [`DISCOVER_MAX`], while agents
/// the placement names are missing.
pub async fn discover(heard: &Mutex<Heard>, wanted: &[String], log: &Log) -> Vec<String> {
    let t0 = Instant::now();
    let mut said = false;
    loop {
        tokio::time::sleep(POLL).await;
        // Idle, and beating still: an agent that died while we listened is not offered a part.
        let idle: Vec<String> = crate::sync::lock(heard)
            .beats
            .values()
            .filter(|(t, b)| b.run.is_none() && t.elapsed() < wire::DEAD_AFTER)
            .map(|(_, b)| b.name.clone())
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|w| !idle.contains(w)).collect();
        let waited = t0.elapsed();
        if waited >= DISCOVER && (missing.is_empty() || waited >= DISCOVER_MAX) {
            return idle;
        }
        if waited >= DISCOVER && !said {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            log.line(&format!(
                "waiting for agent(s) {} (the placement names them)",
                names.join(", ")
            ));
            said = true;
        }
    }
}

/// The agent's clock offset from [`clock::SAMPLES`] round trips.
pub async fn measure_offset(client: &async_nats::Client, agent: &str) -> anyhow::Result<Offset> {
    let mut samples = Vec::new();
    let body = serde_json::to_vec(&Ctl::Clock)?;
    for _ in 0..clock::SAMPLES {
        let t0 = now_ns();
        let m = client
            .request(wire::ctl_subject(agent), body.clone().into())
            .await
            .with_context(|| format!("agent {agent} does not answer"))?;
        let t1 = now_ns();
        if let Ok(Reply::Clock { now_ns }) = serde_json::from_slice(&m.payload) {
            samples.push((t0, now_ns, t1));
        }
    }
    clock::best(&samples).with_context(|| format!("agent {agent} did not tell its clock"))
}
