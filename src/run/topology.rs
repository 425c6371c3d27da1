//! The system under test and its surroundings, brought up and down: mock inboxes in-process
//! (one listener per MX host), the bounce inbox when the MTA is external, and one reference-MTA
//! child process per node.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::compile::Compiled;
use super::cpu::ProcKind;
use super::live::Log;
use super::render::SpooledRecord;
use super::shared::{SharedQueue, SpoolRecord};
use crate::events::Event;
use crate::inbox::bounces::{BounceInbox, BounceStats};
use crate::inbox::farm::{spawn_server, InboxRuntime, ProviderRt};
use crate::mta::config::SpoolConfig;
use crate::mta::process::{default_node_ip, start_node, stop_node, Node};
use crate::scenario::{network, MtaKind};

/// Everything a run started, in the order it stops them.
pub struct Topology {
    pub providers: Vec<ProviderRt>,
    pub nodes: Vec<Node>,
    /// The bounce inbox of an external MTA: its policy and domain.
    pub bounces: Option<(Arc<BounceInbox>, String)>,
    /// The shared queue (`spool: nats`).
    pub queue: Option<SharedQueue>,
    bounce_task: Option<JoinHandle<std::io::Result<()>>>,
    stop_inboxes: watch::Sender<bool>,
    /// Where the inboxes run; dropped last.
    inbox_rt: InboxRuntime,
}

impl Topology {
    /// Starts inboxes first (nodes route to them), then the nodes.
    pub async fn up(
        c: &Compiled,
        dir: &Path,
        run_id: &str,
        log: &Log,
        events: &mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<Self> {
        let s = &c.scenario;
        let (stop_inboxes, inbox_stop_rx) = watch::channel(false);
        let inbox_rt = InboxRuntime::new().context("cannot start the inboxes' runtime")?;
        // The run's own CA: every certificate of the run is issued by it, and its certificate
        // is in the run directory for clients that want to verify (swaks --tls-ca-path).
        let pki = crate::tls::Pki::new(run_id).context("cannot make the run's certificate authority")?;
        pki.write_ca(dir)?;
        let providers = ProviderRt::start_all(s, &c.rules, events, &inbox_rt.handle(), Some(&pki))?;
        let mut routes: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        for p in &providers {
            // The domains as the MTA sees them (suffixed for an external one): what its
            // transport map must route, so the log shows them so.
            let domains: Vec<String> = p.domains.iter().map(|d| network::sut_domain(&s.file, d)).collect();
            for d in &domains {
                routes.insert(d.to_ascii_lowercase(), p.addrs());
            }
            let addrs: Vec<String> = p.addrs().iter().map(ToString::to_string).collect();
            log.line(&format!(
                "inbox {:<10} {}  {}",
                p.name,
                addrs.join(" "),
                domains.join(", ")
            ));
        }
        let mut t = Topology {
            providers,
            nodes: Vec::new(),
            bounces: None,
            queue: SharedQueue::up(s, dir, run_id, log).await?,
            bounce_task: None,
            stop_inboxes,
            inbox_rt,
        };
        if s.file.mta.kind == MtaKind::External {
            t.bounce_inbox(c, log, events, inbox_stop_rx).await?;
        } else {
            t.start_nodes(c, dir, log, &routes, &pki).await?;
        }
        Ok(t)
    }

    /// The bounce inbox, when the MTA is external: its DSNs are our only view of its failures.
    async fn bounce_inbox(
        &mut self,
        c: &Compiled,
        log: &Log,
        events: &mpsc::UnboundedSender<Event>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let f = &c.scenario.file;
        let BounceServer {
            policy,
            domain,
            addr,
            task,
        } = start_bounce_inbox(f, &self.inbox_rt.handle(), events, stop)?;
        self.bounce_task = Some(task);
        log.line(&format!("inbox {:<10} {addr}  {domain} (DSNs)", "bounces"));
        log.line(&format!(
            "mta   external   {}  (route the domains above to their inboxes; regions are not used)",
            f.mta.submit.map_or("-".into(), |a| a.to_string())
        ));
        self.bounces = Some((policy, domain));
        Ok(())
    }

    /// MTA nodes, one child process each.
    async fn start_nodes(
        &mut self,
        c: &Compiled,
        dir: &Path,
        log: &Log,
        routes: &BTreeMap<String, Vec<SocketAddr>>,
        pki: &crate::tls::Pki,
    ) -> anyhow::Result<()> {
        let spool = match &self.queue {
            Some(q) => q.spool_config(),
            None => SpoolConfig::Local { dir: "spool".into() },
        };
        let mut k = 0u8;
        for r in &c.scenario.file.regions {
            for n in 1..=r.nodes {
                k += 1;
                let name = crate::scenario::nodes::node_name(&r.name, n);
                let node = start_node(
                    &c.scenario,
                    dir,
                    &r.name,
                    &name,
                    k,
                    default_node_ip(k),
                    routes,
                    spool.clone(),
                    Some(pki),
                )
                .await
                .with_context(|| format!("cannot start node {}-{n}", r.name))?;
                log.line(&format!(
                    "node  {:<10} {}  region {}",
                    node.name, node.addr, node.region
                ));
                self.nodes.push(node);
            }
        }
        Ok(())
    }

    /// Stops nodes first (their last deliveries land in the inboxes), then reads what the
    /// shared queue still holds and stops its server, then the inboxes.
    pub async fn down(&mut self, crashed: &[String], log: &Log) -> Down {
        let mut alive = BTreeMap::new();
        for n in &mut self.nodes {
            let ok = stop_node(n).await;
            alive.insert(n.name.clone(), ok && !crashed.contains(&n.name));
        }
        let queued = match &mut self.queue {
            Some(q) => q.down(log).await,
            None => Vec::new(),
        };
        let _ = self.stop_inboxes.send(true);
        if let Some(t) = self.bounce_task.take() {
            let _ = t.await;
        }
        for p in &mut self.providers {
            p.stop().await;
        }
        // Inboxes and the bounce inbox hold event senders; dropping them lets the writer end.
        self.providers.clear();
        Down {
            alive,
            bounces: self.bounces.take().map(|(b, _)| b.stats()),
            queued,
        }
    }

    /// The child processes to sample CPU of: each node and the queue server (pid `None` while
    /// down).
    pub fn processes(&self) -> Vec<(String, ProcKind, Option<u32>)> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), ProcKind::Node, n.child.id()));
        let queue = self
            .queue
            .as_ref()
            .and_then(|q| q.server.as_ref())
            .map(|s| ("nats-server".to_string(), ProcKind::Queue, s.pid()));
        nodes.chain(queue).collect()
    }

    /// How the run kept accepted mail, for `run.json`.
    pub fn spool_record(&self) -> SpoolRecord {
        self.queue
            .as_ref()
            .map_or_else(SpoolRecord::local, |q| q.record.clone())
    }
}

/// A running bounce inbox.
pub struct BounceServer {
    pub policy: Arc<BounceInbox>,
    pub domain: String,
    pub addr: SocketAddr,
    pub task: JoinHandle<std::io::Result<()>>,
}

/// The bounce inbox of an external MTA, listening on the scenario's `mta.bounces.listen` on
/// the inbox runtime.
pub fn start_bounce_inbox(
    f: &crate::scenario::ScenarioFile,
    rt: &tokio::runtime::Handle,
    events: &mpsc::UnboundedSender<Event>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<BounceServer> {
    let mut b = f.mta.bounces.clone().unwrap_or_default();
    // Envelope senders, and so the DSNs, use the domain as the MTA sees it.
    b.domain = network::sut_domain(f, &b.domain);
    let _on = rt.enter();
    let listener = crate::smtp::listen(b.listen)
        .with_context(|| format!("bounce inbox `{}`: cannot listen on {}", b.domain, b.listen))?;
    let addr = listener.local_addr()?;
    let policy = Arc::new(BounceInbox::new(&b.domain, events.clone()));
    let task = spawn_server(listener, policy.clone(), "bounces", stop);
    Ok(BounceServer {
        policy,
        domain: b.domain,
        addr,
        task,
    })
}

/// What [`Topology::down`] found.
pub struct Down {
    /// Which nodes were alive at the end (a node that `crashed` counts as dead).
    pub alive: BTreeMap<String, bool>,
    /// The bounce inbox's figures.
    pub bounces: Option<BounceStats>,
    /// Recipients still in the shared queue.
    pub queued: Vec<SpooledRecord>,
}
