//! What one agent hosts for one run: its share of the plan, brought up with the same parts a
//! single-host run uses — the inbox farm, reference-MTA node processes, generator shards and
//! the chaos levers — with their events going out through the [`Outbox`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::outbox::Outbox;
use super::plan::Role;
use super::wire::{Plan, Reply};
use crate::chaos;
use crate::events::{now_ns, Event};
use crate::inbox::bounces::BounceInbox;
use crate::inbox::farm::{default_addr, InboxRuntime, ProviderRt};
use crate::mta::config::SpoolConfig;
use crate::mta::process::{default_node_ip, start_node, stop_node, Node};
use crate::run::{Compiled, NodeRecord};
use crate::traffic::balance::Balancer;
use crate::traffic::deadline::{Cutter, Deadline};
use crate::traffic::submit::{self, Counters, Target};

/// Where this agent's listeners go: `--addresses`, or the one-host defaults.
#[derive(Debug, Clone, Copy)]
pub struct Addresses(pub Option<IpNet>);

impl Addresses {
    /// The `index`-th host address of the range (from 1), or its first when it is too small:
    /// then every listener shares one address, on ports of their own.
    fn host(net: IpNet, index: u32) -> IpAddr {
        net.hosts()
            .nth(index as usize - 1)
            .or_else(|| net.hosts().next())
            .unwrap_or(net.addr())
    }

    /// MX `m` of provider `i`.
    pub fn provider(&self, i: usize, m: u32) -> SocketAddr {
        match self.0 {
            Some(net) => SocketAddr::new(Self::host(net, 1 + i as u32 * 4 + (m - 1)), 0),
            None => default_addr(i, m),
        }
    }

    /// Node `k` (from 1).
    pub fn node(&self, k: u8) -> IpAddr {
        match self.0 {
            Some(net) => Self::host(net, 200 + u32::from(k)),
            None => default_node_ip(k),
        }
    }
}

/// One run's parts on this agent.
pub struct Hosted {
    pub run_id: String,
    dir: PathBuf,
    c: Compiled,
    role: Role,
    shards: u32,
    addresses: Addresses,
    pub outbox: Outbox,
    events: mpsc::UnboundedSender<Event>,
    inbox_rt: Option<InboxRuntime>,
    providers: Vec<ProviderRt>,
    bounces: Option<(Arc<BounceInbox>, JoinHandle<std::io::Result<()>>)>,
    stop_inboxes: watch::Sender<bool>,
    nodes: Vec<Node>,
    balancer: Option<(Arc<Balancer>, Option<String>)>,
    gen: Option<JoinHandle<()>>,
    cutter: Option<Cutter>,
    /// The coordinator's CA: this agent's inboxes and nodes get their certificates from it.
    pki: crate::tls::Pki,
}

impl Hosted {
    /// Writes the plan's scenario under `root/<run>/`, loads and compiles it as `run` would,
    /// and opens the event stream.
    pub async fn new(
        plan: Plan,
        root: &std::path::Path,
        addresses: Addresses,
        js: async_nats::jetstream::Context,
        agent: &str,
    ) -> anyhow::Result<Hosted> {
        let dir = root.join(&plan.run_id);
        std::fs::create_dir_all(dir.join("nodes")).with_context(|| format!("cannot create {}", dir.display()))?;
        for (rel, text) in &plan.files {
            let path = dir.join(rel);
            if rel.contains("..") || std::path::Path::new(rel).is_absolute() {
                anyhow::bail!("plan file `{rel}` is outside the run directory");
            }
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            crate::files::write(&path, text)?;
        }
        let path = dir.join("scenario.yaml");
        // It may hold `traffic.auth`'s password.
        crate::files::write_private(&path, &plan.scenario_yaml)?;
        let mut s = crate::scenario::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        // A distributed run: recipient domains carry the reserved suffix (unless the scenario
        // asks for real ones), as the coordinator's copy does.
        s.file.network.distributed = true;
        if let Some(net) = addresses.0 {
            crate::scenario::network::Allow::for_scenario(&s.file, &[])
                .check_net(&format!("agent {agent} --addresses"), net)
                .map_err(|why| anyhow::anyhow!("the run's scenario does not allow this agent: {why}"))?;
        }
        let c = crate::run::compile(s).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pki = crate::tls::Pki::from_parts(&plan.run_id, &plan.ca.cert_pem, &plan.ca.key_pem)
            .context("the plan's certificate authority")?;
        pki.write_ca(&dir)?;
        let (outbox, events) = Outbox::start(js, super::wire::events_subject(&plan.run_id, agent));
        if !plan.role.providers.is_empty() {
            let clocks = super::clock::Clocks::new(&plan.run_id, plan.offsets.clone(), &plan.shard_agents);
            let seconds = c.scenario.file.duration.0.as_secs_f64().ceil() as u64;
            *crate::sync::lock(&outbox.meter) = Some(super::meter::Meter::new(agent, clocks, seconds));
        }
        let (stop_inboxes, _) = watch::channel(false);
        Ok(Hosted {
            run_id: plan.run_id,
            dir,
            c,
            role: plan.role,
            shards: plan.shards.max(1),
            addresses,
            outbox,
            events,
            inbox_rt: None,
            providers: Vec::new(),
            bounces: None,
            stop_inboxes,
            nodes: Vec::new(),
            balancer: None,
            gen: None,
            cutter: None,
            pki,
        })
    }

    /// Starts its providers' inboxes (and the bounce inbox).
    pub fn inboxes(&mut self) -> anyhow::Result<Reply> {
        let rt = InboxRuntime::new().context("cannot start the inboxes' runtime")?;
        let hosted = |name: &str| self.role.providers.iter().any(|p| p == name);
        let addrs = self.addresses;
        self.providers = ProviderRt::start_some(
            &self.c.scenario,
            &self.c.rules,
            &self.events,
            &rt.handle(),
            Some(&self.pki),
            hosted,
            |i, m| addrs.provider(i, m),
        )?;
        let providers = self.providers.iter().map(|p| (p.name.clone(), p.addrs())).collect();
        let mut bounces = None;
        if self.role.bounces {
            let b = crate::run::start_bounce_inbox(
                &self.c.scenario.file,
                &rt.handle(),
                &self.events,
                self.stop_inboxes.subscribe(),
            )?;
            self.bounces = Some((b.policy, b.task));
            bounces = Some((b.domain, b.addr));
        }
        self.inbox_rt = Some(rt);
        Ok(Reply::Inboxes { providers, bounces })
    }

    /// Starts its regions' nodes, numbered as a one-host run numbers them.
    pub async fn nodes(&mut self, routes: &BTreeMap<String, Vec<SocketAddr>>) -> anyhow::Result<Reply> {
        let s = &self.c.scenario;
        let mut k = 0u8;
        let mut out = Vec::new();
        for r in &s.file.regions {
            for n in 1..=r.nodes {
                k += 1;
                if !self.role.regions.contains(&r.name) {
                    continue;
                }
                let name = crate::scenario::nodes::node_name(&r.name, n);
                let spool = SpoolConfig::Local { dir: "spool".into() };
                let node = start_node(
                    s,
                    &self.dir,
                    &r.name,
                    &name,
                    k,
                    self.addresses.node(k),
                    routes,
                    spool,
                    Some(&self.pki),
                )
                .await
                .with_context(|| format!("cannot start node {name}"))?;
                self.outbox.watch(node.dir.join("events.jsonl"));
                out.push(Target {
                    node: node.name.clone(),
                    region: node.region.clone(),
                    addr: node.addr,
                });
                self.nodes.push(node);
            }
        }
        Ok(Reply::Nodes { nodes: out })
    }

    /// Prepares its generator shards' balancer over the run's nodes.
    pub fn generator(&mut self, nodes: &[Target], bounce_domain: Option<String>) -> Reply {
        let b = crate::run::balancer_for(&self.c.scenario, nodes, self.events.clone());
        self.balancer = Some((b, bounce_domain));
        Reply::done()
    }

    /// Starts its generator shards at `start_ns` (this host's clock); `on_done` runs once they
    /// have all finished and their events are out.
    pub fn start(&mut self, start_ns: u64, hard_stop_ns: u64, at_ns: u64, on_done: impl FnOnce(u64) + Send + 'static) {
        if let Some(m) = crate::sync::lock(&self.outbox.meter).as_mut() {
            m.start(at_ns);
        }
        let Some((balancer, bounce_domain)) = self.balancer.clone() else {
            on_done(self.outbox.batches());
            return;
        };
        if self.role.shards.is_empty() {
            on_done(self.outbox.batches());
            return;
        }
        let now = now_ns();
        let start = Instant::now() + Duration::from_nanos(start_ns.saturating_sub(now));
        let hard_stop = Instant::now() + Duration::from_nanos(hard_stop_ns.saturating_sub(now));
        let (deadline, cutter) = Deadline::new(hard_stop);
        self.cutter = Some(cutter);
        let f = &self.c.scenario.file;
        let window = f.duration.0;
        let mut tasks = Vec::new();
        // Heartbeats evict dead nodes and re-admit restored ones, as on one host.
        let beats = (f.mta.kind != crate::scenario::MtaKind::External)
            .then(|| tokio::spawn(balancer.clone().heartbeats(hard_stop)));
        for &k in &self.role.shards {
            let plan = crate::run::traffic_plan(
                &self.c.scenario,
                &self.run_id,
                bounce_domain.as_deref(),
                &balancer,
                start_ns,
                (start, window),
                deadline.clone(),
            );
            let mut plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("generator shard {k}: cannot set up TLS: {e}");
                    continue;
                }
            };
            plan.shard = Some((k, self.shards));
            // The shards share the scenario's connections between them.
            plan.connections = f.traffic.connections.div_ceil(self.shards).max(1);
            tasks.push(tokio::spawn(submit::run(
                plan,
                self.events.clone(),
                Arc::new(Counters::default()),
            )));
        }
        let outbox = self.outbox.clone();
        self.gen = Some(tokio::spawn(async move {
            for t in tasks {
                let _ = t.await;
            }
            if let Some(b) = beats {
                b.abort();
            }
            on_done(outbox.flush().await);
        }));
    }

    /// Takes the start, or with `end` the end, of chaos action `fault` of the scenario.
    pub async fn chaos(&mut self, fault: usize, end: bool) -> anyhow::Result<Reply> {
        let action = self
            .c
            .chaos
            .get(fault)
            .cloned()
            .with_context(|| format!("no chaos action {fault}"))?;
        let step = chaos::Step {
            at: action.at,
            fault,
            end,
            action,
        };
        let world = chaos::World {
            nodes: &mut self.nodes,
            providers: &mut self.providers,
            pools: &self.c.scenario.file.mta.egress_pools,
            events: &self.events,
            nats: None,
        };
        let text = chaos::apply(&step, world).await?;
        Ok(Reply::Done { text })
    }

    /// The generator releases nothing more.
    pub fn cut(&self) {
        if let Some(c) = &self.cutter {
            c.cut();
        }
    }

    /// Stops the nodes (their last deliveries land first), then the inboxes; flushes the events
    /// and reports what the spools still hold.
    pub async fn stop(&mut self) -> Reply {
        self.cut();
        if let Some(g) = self.gen.take() {
            let _ = g.await;
        }
        let mut records = Vec::new();
        let mut spooled = Vec::new();
        for n in &mut self.nodes {
            let clean = stop_node(n).await;
            records.push(NodeRecord {
                name: n.name.clone(),
                region: n.region.clone(),
                // A node chaos left down is not alive, whatever its exit said.
                alive: clean && !n.down,
            });
            spooled.extend(crate::run::scan_spool(&n.dir.join("spool"), &n.name));
        }
        let _ = self.stop_inboxes.send(true);
        if let Some((_, task)) = self.bounces.take() {
            let _ = task.await;
        }
        for p in &mut self.providers {
            p.stop().await;
        }
        self.providers.clear();
        let batches = self.outbox.flush().await;
        Reply::Stopped {
            nodes: records,
            spooled,
            batches,
            latency_hlog: self.latency_hlog(),
        }
    }

    /// The meter's histograms as an interval log, tagged `delivery` as the run's own.
    fn latency_hlog(&self) -> Option<String> {
        let meter = crate::sync::lock(&self.outbox.meter);
        let m = meter.as_ref()?;
        let path = self.dir.join("latency.hlog");
        let start = crate::events::from_ns(m.start_ns().unwrap_or(0));
        let series = [crate::measure::hlog::Series {
            tag: "delivery",
            intervals: m.histograms(),
        }];
        crate::measure::hlog::write(&path, start, &series).ok()?;
        std::fs::read_to_string(&path).ok()
    }

    /// Removes the run's directory on this host: its events and spools went to the coordinator.
    pub fn forget(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}
