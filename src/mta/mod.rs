//! The reference MTA (SPEC §4): one node = SMTP ingress → durable spool → per-domain queues →
//! delivery with connection reuse, egress source binding, retries and a response table.
//!
//! A node runs as its own process (`mailsurge mta --config node.yaml`) so the harness can
//! SIGKILL it like a real machine failing. On start it re-queues everything left in its spool;
//! on SIGTERM it stops accepting, finishes in-flight transactions, flushes events and leaves
//! undelivered mail in the spool for the next start.

pub mod config;
mod egress_tls;
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
pub mod users;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::{self as cfgfile, Shipped, Source};
use crate::smtp::{self, Limits, ServerStats};
pub use config::NodeConfig;
use config::SpoolConfig;
use eventlog::EventLog;
use queue::Queues;
use responses::ResponseTable;
use spool::{LogSpool, NatsSpool, Spool};

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

/// Loads the AUTH accounts a node config names (`auth.users`), if any.
pub fn load_users(cfg: &NodeConfig) -> Result<Option<users::Users>, cfgfile::ConfigError> {
    cfg.auth.as_ref().map(|a| users::Users::load(&a.users)).transpose()
}

/// Runs one node until `shutdown` resolves. `users` are the AUTH accounts of `cfg.auth`
/// ([`load_users`]).
pub async fn run_node(
    cfg: NodeConfig,
    responses: ResponseTable,
    users: Option<users::Users>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let cfg = Arc::new(cfg);
    // The shared queue, and its lease, when the spool is one.
    type Shared = Option<(Arc<NatsSpool>, Duration)>;
    let (spool, shared): (Arc<dyn Spool>, Shared) = match &cfg.spool {
        SpoolConfig::Local { dir } => (
            Arc::new(LogSpool::open(dir).with_context(|| format!("cannot open spool {}", dir.display()))?),
            None,
        ),
        SpoolConfig::Nats { url, stream, lease } => {
            let s = NatsSpool::open(url, stream)
                .await
                .with_context(|| format!("cannot open the shared queue at {url}"))?;
            (s.clone(), Some((s, lease.0)))
        }
    };
    let events = Arc::new(
        EventLog::open(&cfg.events, &cfg.node, &cfg.region)
            .with_context(|| format!("cannot open events file {}", cfg.events.display()))?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let egress_tls = egress_tls::EgressTls::new(cfg.tls.as_ref()).context("cannot set up TLS toward providers")?;
    let ingress_tls = match cfg.tls.as_ref().and_then(|t| t.cert.as_deref().zip(t.key.as_deref())) {
        Some((cert, key)) => Some(crate::tls::load_server(cert, key).context("cannot set up STARTTLS at ingress")?),
        None => None,
    };
    let queues = Queues::new(
        cfg.clone(),
        responses,
        spool.clone(),
        events.clone(),
        stop_rx.clone(),
        egress_tls,
    );

    // Recovery: everything still in the spool was acknowledged and is not done.
    let recovered = spool.recover().context("cannot read the spool")?;
    let n_recovered = recovered.len();
    for r in recovered {
        queues.submit(r.id, r.meta, Arc::new(r.body), false);
    }
    if let Some((s, lease)) = &shared {
        take_from_shared_queue(s, *lease, &queues, &events, stop_rx).await?;
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
        spool_failures: ingress::FailureLog::default(),
        tls: ingress_tls,
        auth: users.map(|users| ingress::Auth {
            users,
            tls_only: cfg.auth.as_ref().is_some_and(|a| a.tls_only),
            networks: crate::scenario::Allow::new(cfg.network.allow.iter().copied()),
        }),
    });
    let limits = Limits {
        hostname: ingress.hostname.clone(),
        max_connections: cfg.limits.max_connections,
        max_connections_per_ip: cfg.limits.connections_per_ip,
        max_message_size: max_message_size(&cfg) as usize,
        max_recipients: cfg.limits.max_recipients,
        // Relay clients (the generator, the operator's own hosts) are never starved of slots;
        // with AUTH, submitters come from anywhere allowed.
        priority_networks: match &cfg.auth {
            Some(_) => {
                crate::scenario::Allow::new(cfg.relay_networks.iter().chain(&cfg.network.allow).copied()).networks()
            }
            None => cfg.relay_networks.clone(),
        },
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
    if let Some((s, _)) = &shared {
        s.hand_back().await;
    }
    flusher.abort();
    events.flush();
    Ok(())
}

/// The ingress SIZE limit: the node's, and on the shared queue no more than one publish carries
/// (a larger body is refused 552 at once instead of 451 for ever).
fn max_message_size(cfg: &NodeConfig) -> u64 {
    let own = cfg.limits.max_message_size.0;
    match cfg.spool {
        SpoolConfig::Local { .. } => own,
        SpoolConfig::Nats { .. } => own.min(crate::nats::server::MAX_PAYLOAD - crate::nats::server::ENVELOPE_ROOM),
    }
}

/// Joins the shared queue's consumers: what this node takes goes to its delivery queues, each
/// recipient with a `leased` event (mail as accepted is screened on its first hand-out only).
async fn take_from_shared_queue(
    spool: &Arc<NatsSpool>,
    lease: Duration,
    queues: &Arc<Queues>,
    events: &Arc<EventLog>,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<spool::nats::Pulled>(spool::nats::MAX_HELD);
    spool
        .pull(lease, tx, stopping)
        .await
        .context("cannot join the shared queue")?;
    let (queues, events) = (queues.clone(), events.clone());
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            for rcpt in &p.meta.rcpts {
                let mut e = crate::events::Event::new(
                    crate::events::now_ns(),
                    p.meta.msg_id.clone(),
                    match p.taken_over {
                        true => crate::events::Kind::TakenOver,
                        false => crate::events::Kind::Leased,
                    },
                );
                e.rcpt = Some(rcpt.clone());
                e.attempt = Some(p.delivered);
                events.emit(e);
            }
            match p.resume {
                Some(r) => queues.resume(p.id, p.meta, p.body, r),
                None => queues.submit(p.id, p.meta, p.body, p.delivered <= 1),
            }
        }
    });
    Ok(())
}
