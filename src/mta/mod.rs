//! The reference MTA (SPEC §4): one node = SMTP ingress → durable spool → per-domain queues →
//! delivery with connection reuse, egress source binding, retries and a response table.
//!
//! A node runs as its own process (`mailsurge mta --config node.yaml`) so the harness can
//! SIGKILL it like a real machine failing. On start it re-queues everything left in its spool;
//! on SIGTERM it stops accepting, finishes in-flight transactions, flushes events and leaves
//! undelivered mail in the spool for the next start.

pub mod config;
pub mod eventlog;
pub mod ingress;
mod job;
pub mod notice;
pub mod pace;
mod pending;
pub mod process;
pub mod queue;
pub mod responses;
pub mod retry;
pub mod routing;
pub mod screen;
pub mod spool;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{self as cfgfile, Shipped, Source};
use crate::smtp::{self, Limits, ServerStats};
pub use config::NodeConfig;
use eventlog::EventLog;
use queue::Queues;
use responses::ResponseTable;
use spool::{LogSpool, Spool};

/// How long a stopping node waits for in-flight deliveries before exiting anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The line a node prints on stdout once it listens; the harness waits for it.
pub const READY_PREFIX: &str = "READY ";

/// Loads the response table a node config names (shipped name or path next to the config).
pub fn load_responses(cfg: &NodeConfig, src: &Source) -> Result<ResponseTable, cfgfile::ConfigError> {
    let r = cfgfile::resolve(src, &cfg.responses, Shipped::Scenario)
        .map_err(|m| src.error_at(&cfg.responses, 1, format!("responses: {m}")))?;
    ResponseTable::from_source(&r)
}

/// Runs one node until `shutdown` resolves.
pub async fn run_node(
    cfg: NodeConfig,
    responses: ResponseTable,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    let spool_dir = cfg.spool_dir().to_path_buf();
    let spool: Arc<dyn Spool> =
        Arc::new(LogSpool::open(&spool_dir).with_context(|| format!("cannot open spool {}", spool_dir.display()))?);
    let events = Arc::new(
        EventLog::open(&cfg.events, &cfg.node, &cfg.region)
            .with_context(|| format!("cannot open events file {}", cfg.events.display()))?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let queues = Queues::new(cfg.clone(), responses, spool.clone(), events.clone(), stop_rx);

    // Recovery: everything still in the spool was acknowledged and is not done.
    let recovered = spool.recover().context("cannot read the spool")?;
    let n_recovered = recovered.len();
    for r in recovered {
        queues.submit(r.id, r.meta, Arc::new(r.body), false);
    }

    let listener = crate::smtp::listen(cfg.listen).with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let local = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY_PREFIX}{local} recovered={n_recovered}")?;
        out.flush()?;
    }
    let ingress = Arc::new(ingress::Ingress {
        hostname: format!("{}.mailsurge.test", cfg.node),
        relay_networks: cfg.relay_networks.clone(),
        spool,
        queues: queues.clone(),
        events: events.clone(),
    });
    let limits = Limits {
        hostname: ingress.hostname.clone(),
        max_connections: cfg.limits.max_connections,
        max_connections_per_ip: cfg.limits.connections_per_ip,
        max_message_size: cfg.limits.max_message_size.0 as usize,
        max_recipients: cfg.limits.max_recipients,
        // Relay clients (the generator, the operator's own hosts) are never starved of slots.
        priority_networks: cfg.relay_networks.clone(),
        ..Limits::default()
    };
    let flusher = {
        let events = events.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(eventlog::FLUSH_EVERY).await;
                events.flush();
            }
        })
    };
    let stats = Arc::new(ServerStats::default());
    smtp::serve(listener, ingress, limits, stats, shutdown).await?;
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while queues.live_jobs() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Jobs waiting for a retry stay live but will never run again: stop waiting for them
        // once nothing is in flight (they are in the spool for the next start).
        if queues.in_flight() == 0 {
            break;
        }
    }
    flusher.abort();
    events.flush();
    Ok(())
}
