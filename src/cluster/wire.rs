//! What coordinator and agents say to each other over NATS: subjects and JSON messages.
//!
//! - `mailsurge.agents.beat`: every agent's heartbeat ([`Beat`]), twice a second. The
//!   coordinator finds agents by them and declares one dead when they stop.
//! - `mailsurge.agent.<name>.ctl`: requests to one agent ([`Ctl`]), each answered ([`Reply`]).
//! - `mailsurge.ev.<run>.<name>`: the agent's event lines, published to a JetStream stream
//!   the coordinator creates per run, so a batch survives a coordinator that reads slowly.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::clock::Offset;
use super::plan::Role;
use crate::run::{NodeRecord, SpooledRecord};
use crate::traffic::submit::Target;

pub const BEAT_SUBJECT: &str = "mailsurge.agents.beat";

/// How often an agent beats.
pub const BEAT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Silence after which the coordinator declares an agent dead: six missed beats.
pub const DEAD_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

pub fn ctl_subject(agent: &str) -> String {
    format!("mailsurge.agent.{agent}.ctl")
}

/// A run id as a subject token and stream name (`.` and other punctuation become `_`).
pub fn run_token(run_id: &str) -> String {
    run_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

pub fn events_stream(run_id: &str) -> String {
    format!("MAILSURGE_EV_{}", run_token(run_id))
}

pub fn events_subject(run_id: &str, agent: &str) -> String {
    format!("mailsurge.ev.{}.{agent}", run_token(run_id))
}

/// An agent's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Beat {
    pub name: String,
    /// The CIDR its listeners take addresses from (`--addresses`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<String>,
    pub version: String,
    pub pid: u32,
    /// The run it is part of, if any: a busy agent is not offered another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Event batches it has published for that run so far.
    #[serde(default)]
    pub batches: u64,
    /// Its generator shards have finished; `batches` then includes their last events.
    #[serde(default)]
    pub gen_done: bool,
}

/// The scenario as the coordinator resolved it: the self-contained `scenario.yaml` and the
/// rule files it names, so an agent on another host needs no files of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub run_id: String,
    pub scenario_yaml: String,
    /// (path relative to the run directory, text)
    pub files: Vec<(String, String)>,
    pub role: Role,
    /// Generator shards in all.
    pub shards: u32,
    /// Every agent's clock offset, and the agent of each generator shard: an inbox agent puts
    /// its receipts' times on the coordinator's clock as the coordinator does.
    pub offsets: BTreeMap<String, Offset>,
    pub shard_agents: Vec<String>,
    /// The run's CA (certificate and key, PEM): agents issue their inboxes' and nodes'
    /// certificates with it, so the whole run trusts one `tls/ca.pem` (SPEC §13).
    pub ca: CaParts,
}

/// A run's certificate authority as PEM, for [`crate::tls::Pki::from_parts`]. `Debug` leaves
/// the key out.
#[derive(Clone, Serialize, Deserialize)]
pub struct CaParts {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CaParts {
    pub fn of(pki: &crate::tls::Pki) -> CaParts {
        CaParts {
            cert_pem: pki.ca_pem().to_owned(),
            key_pem: pki.key_pem(),
        }
    }
}

impl std::fmt::Debug for CaParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaParts { .. }")
    }
}

/// A request to one agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Ctl {
    /// Its clock, for the offset.
    Clock,
    /// Take part in a run: write the scenario, check it, open the event stream.
    Plan(Box<Plan>),
    /// Start the inboxes of its providers (and the bounce inbox); answers their addresses.
    Inboxes,
    /// Start the nodes of its regions, routing domains to these addresses.
    Nodes { routes: BTreeMap<String, Vec<SocketAddr>> },
    /// Prepare its generator shards against these nodes (or the external MTA).
    Generator {
        nodes: Vec<Target>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bounce_domain: Option<String>,
    },
    /// Start at this instant of the agent's own clock (ns since the epoch); `at_ns` is the
    /// same instant on the coordinator's clock.
    Start {
        start_ns: u64,
        hard_stop_ns: u64,
        at_ns: u64,
    },
    /// Take one chaos step: the start (or, with `end`, the end or lifting) of the scenario's
    /// chaos action number `fault`.
    Chaos { fault: usize, end: bool },
    /// The generator releases nothing more (the run was stopped or aborted).
    Cut,
    /// Stop everything, flush the events, report the spools.
    Stop,
    /// The run is over: forget it and be free for the next.
    Release,
}

/// An agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ok", rename_all = "snake_case")]
pub enum Reply {
    Clock {
        now_ns: u64,
    },
    Done {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        text: String,
    },
    Inboxes {
        /// Provider name → its MX addresses in preference order.
        providers: BTreeMap<String, Vec<SocketAddr>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bounces: Option<(String, SocketAddr)>,
    },
    Nodes {
        nodes: Vec<Target>,
    },
    Stopped {
        nodes: Vec<NodeRecord>,
        spooled: Vec<SpooledRecord>,
        /// Every batch it published for this run.
        batches: u64,
        /// An inbox agent's delivery times as an interval log (`latency.hlog` format).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        latency_hlog: Option<String>,
    },
    Error {
        error: String,
    },
}

impl Reply {
    /// Done, with nothing to say.
    pub fn done() -> Reply {
        Reply::Done { text: String::new() }
    }

    pub fn error(e: impl std::fmt::Display) -> Reply {
        Reply::Error { error: e.to_string() }
    }
}
