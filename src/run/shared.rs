//! The shared queue of a `spool: nats` run (SPEC §9): the nats-server `run` starts with its
//! store under the run directory (or the server `mta: nats:` names), what every node is told,
//! which durability the run had, and what was still queued at the end.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::live::Log;
use super::render::SpooledRecord;
use crate::mta::config::SpoolConfig;
use crate::mta::spool::nats::DEFAULT_LEASE;
use crate::mta::spool::NatsSpool;
use crate::nats::server::{self, NatsServer};
use crate::scenario::{Scenario, SpoolKind};

/// The address of the server `run` starts (nodes are 127.0.3.x, providers 127.0.1.x up).
const NATS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 5, 1);
/// The `node` of a recipient left in the shared queue (in no node's spool): stranded only when
/// no node was alive at the end to take it.
pub const QUEUE_NODE: &str = "nats";

/// How a run kept accepted mail, for `run.json` and the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolRecord {
    /// `local` or `nats`.
    pub kind: String,
    /// What made a 250 safe: the local spool's group-commit fsync, or the queue server's.
    pub durability: String,
    /// `nats`: the server's address, its version (when started by `run`), stream and lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_s: Option<f64>,
    /// The run's server was down at the end (killed, not restored): what it holds is
    /// stranded, whichever nodes lived.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub down_at_end: bool,
}

impl SpoolRecord {
    /// A run on each node's own disk.
    pub fn local() -> SpoolRecord {
        SpoolRecord {
            kind: "local".into(),
            durability: "fdatasync of each node's spool before its 250 (group commit)".into(),
            url: None,
            server: None,
            stream: None,
            lease_s: None,
            down_at_end: false,
        }
    }
}

/// The queue server and what the nodes share of it.
pub struct SharedQueue {
    /// The server `run` started; `None` when `mta: nats:` names one.
    pub server: Option<NatsServer>,
    pub url: String,
    pub stream: String,
    pub lease: Duration,
    pub record: SpoolRecord,
}

impl SharedQueue {
    /// Starts the run's server (installing one with the project's script if none is found),
    /// or takes the named one; `None` for a local spool.
    pub async fn up(s: &Scenario, dir: &Path, run_id: &str, log: &Log) -> anyhow::Result<Option<SharedQueue>> {
        let m = &s.file.mta;
        if m.spool != SpoolKind::Nats {
            return Ok(None);
        }
        let lease = m.lease.map_or(DEFAULT_LEASE, |l| l.0);
        let (server, url, stream, durability, version) = match &m.nats {
            Some(url) => {
                // Another run's leftovers must not be delivered by this one: a stream per run.
                let stream: String = run_id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let durability = "the named server's own setting, not verified by mailsurge: a 250 is safe only if it \
                                  syncs every write (sync_interval: always) or replicates to 3 (R3)";
                (
                    None,
                    url.clone(),
                    format!("mailsurge_{stream}"),
                    durability.to_string(),
                    None,
                )
            }
            None => {
                let bin = server::locate_or_install(&|m| log.line(m))?;
                let srv = NatsServer::start(&bin, &dir.join("nats"), IpAddr::V4(NATS_IP))
                    .await
                    .context("cannot start the shared queue's nats-server")?;
                let url = format!("nats://{}", srv.addr);
                let version = srv.info.version.clone();
                let durability = "sync_interval: always on one server: every write synced to disk before the publish \
                                  is acknowledged, and the 250 waits for that acknowledgement";
                (
                    Some(srv),
                    url,
                    "mailsurge".to_string(),
                    durability.to_string(),
                    Some(version),
                )
            }
        };
        log.line(&format!(
            "queue nats       {url}  stream {stream}, lease {lease:?}{}",
            version
                .as_deref()
                .map(|v| format!(", nats-server {v}"))
                .unwrap_or_default()
        ));
        let record = SpoolRecord {
            kind: "nats".into(),
            durability,
            url: Some(url.clone()),
            server: version,
            stream: Some(stream.clone()),
            lease_s: Some(lease.as_secs_f64()),
            down_at_end: false,
        };
        Ok(Some(SharedQueue {
            server,
            url,
            stream,
            lease,
            record,
        }))
    }

    /// What each node's config says of its spool.
    pub fn spool_config(&self) -> SpoolConfig {
        SpoolConfig::Nats {
            url: self.url.clone(),
            stream: self.stream.clone(),
            lease: crate::units::Dur(self.lease),
        }
    }

    /// Whether the run's own server is down now (killed by the chaos timeline).
    pub fn server_down(&self) -> bool {
        self.server.as_ref().is_some_and(|s| !s.running())
    }

    /// After the nodes stopped: every recipient still queued, then the server stops. A server
    /// the timeline left dead is started on its store to be read (its mail is stranded: no
    /// node could reach it — `stranded` says so).
    pub async fn down(&mut self, log: &Log) -> Vec<SpooledRecord> {
        let was_down = self.server_down();
        self.record.down_at_end = was_down;
        if was_down {
            if let Some(s) = &mut self.server {
                if let Err(e) = s.restart().await {
                    log.line(&format!("cannot restart nats-server to read what it holds: {e}"));
                }
            }
        }
        let queued = match NatsSpool::queued(&self.url, &self.stream).await {
            Ok(v) => v,
            Err(e) => {
                log.line(&format!("cannot read what the shared queue holds: {e}"));
                Vec::new()
            }
        };
        if let Some(s) = &mut self.server {
            s.stop().await;
        }
        queued
            .into_iter()
            .flat_map(|m| {
                let id = m.msg_id;
                m.rcpts.into_iter().map(move |rcpt| SpooledRecord {
                    msg_id: id.clone(),
                    rcpt,
                    node: QUEUE_NODE.to_string(),
                })
            })
            .collect()
    }
}
