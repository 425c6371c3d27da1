//! `mailsurge run SCENARIO --cluster nats://HOST:4222`: the coordinator of a distributed run.
//!
//! It finds the agents by their heartbeats, resolves the placement, measures each agent's
//! clock offset, hands out the plan, brings the parts up in the order a one-host run does
//! (inboxes, then nodes routed to them, then generators aimed at the nodes), starts everyone
//! at one instant, plays the chaos timeline by sending each step to the agent hosting its
//! target, and ends like a one-host run: drained, stopped, events collected — from the agents'
//! streams instead of local files — into one run directory rendered by the same code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::time::Instant;

use super::clock::{self, Clocks, Offset};
pub use super::discovery::Refused;
use super::discovery::{check_agent_addresses, discover, listen, measure_offset, Heard};
use super::intake::Intake;
use super::lost::OwnEvents;
use super::plan::{self, Assignment};
use super::wire::{self, Ctl, Reply};
use crate::chaos::{Step, Timeline};
use crate::events::{now_ns, TargetKind};
use crate::run::{AgentRecord, ClusterRecord, Compiled, Log, NodeRecord, Outcome, RunOptions, SpooledRecord};
use crate::scenario::MtaKind;
use crate::traffic::submit::Target;

/// Lead time between the start message and the schedule's first instant: room for the
/// message to reach every agent.
const START_LEAD: Duration = Duration::from_millis(1_500);
const POLL: Duration = Duration::from_millis(250);

/// Runs a compiled scenario on the agents at `url`.
pub async fn run(c: &Compiled, url: &str, opts: &RunOptions) -> anyhow::Result<Outcome> {
    let s = &c.scenario;
    let f = &s.file;
    let crate::run::Opened {
        run_id,
        started,
        dir,
        log,
    } = crate::run::open_run(s, opts)?;
    let client = async_nats::ConnectOptions::new()
        .name("mailsurge-coordinator")
        .request_timeout(Some(Duration::from_secs(60)))
        .connect(url)
        .await
        .with_context(|| format!("cannot reach the cluster's NATS server at {url}"))?;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let listener = tokio::spawn(listen(client.clone(), heard.clone()));

    // Agents: idle ones that beat, enough for the placement.
    let wanted: Vec<String> = f
        .placement
        .as_ref()
        .map(|p| p.agents().into_iter().map(str::to_string).collect())
        .unwrap_or_default();
    let names = discover(&heard, &wanted, &log).await;
    let assignment = plan::assign(f, &names)?;
    check_agent_addresses(f, &heard, &assignment)?;
    let used: Vec<String> = assignment
        .roles
        .iter()
        .filter(|(_, r)| !r.is_idle())
        .map(|(n, _)| n.clone())
        .collect();
    let mut offsets = BTreeMap::new();
    for a in &used {
        let o = measure_offset(&client, a).await?;
        log.line(&format!(
            "agent {a:<12} {}  clock {:+.3} ms (± {:.3} ms)",
            assignment.roles[a].describe(assignment.shards),
            o.offset_ns as f64 / 1e6,
            o.rtt_ns as f64 / 2e6
        ));
        offsets.insert(a.clone(), o);
    }
    for (a, r) in assignment.roles.iter().filter(|(_, r)| r.is_idle()) {
        log.line(&format!(
            "agent {a:<12} {} (idle in this run)",
            r.describe(assignment.shards)
        ));
    }
    let clocks = Clocks::new(&run_id, offsets.clone(), &assignment.shard_agents());

    // The run's event stream, before anyone can publish to it.
    let js = async_nats::jetstream::new(client.clone());
    let stream_name = wire::events_stream(&run_id);
    let prefix = format!("mailsurge.ev.{}", wire::run_token(&run_id));
    let stream = js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{prefix}.>")],
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create the run's event stream {stream_name}"))?;
    let watch = crate::measure::abort::Watch::new(&f.abort, f.slo.delivery_time.0)?;
    let intake = Intake::new(&dir, Arc::new(crate::run::LiveStats::new(watch.recent())));
    let reader = tokio::spawn(intake.clone().run(stream, prefix, clocks));

    let mut cluster = Cluster {
        client: client.clone(),
        assignment,
        used,
        heard: heard.clone(),
        lost: BTreeMap::new(),
        regions: f.regions.iter().map(|r| (r.name.clone(), r.nodes)).collect(),
        run_id: run_id.clone(),
        dir: dir.clone(),
        offsets: offsets.clone(),
        watch,
    };
    let result = cluster.play(c, &intake, &log, opts).await;
    // Whatever happened, every agent stops and reports, and is released.
    let (records, spooled, batches) = cluster.stop_all(&log).await;
    intake.wait_for(&batches, &cluster.lost, &log).await;
    reader.abort();
    for a in &cluster.used {
        let _ = cluster.ask(a, &Ctl::Release).await;
    }
    listener.abort();
    if let Err(e) = js.delete_stream(&stream_name).await {
        log.line(&format!("cannot delete the event stream {stream_name}: {e}"));
    }
    let played = result?;
    log.finish_progress();

    let torn = crate::sync::lock(&intake.tally).torn;
    if torn > 0 {
        log.line(&format!("{torn} streamed lines were not events and were skipped"));
    }
    let mut files: Vec<PathBuf> = cluster.used.iter().map(|a| Intake::file_of(&dir, a)).collect();
    files.push(played.own_events.clone());
    let agents = cluster
        .used
        .iter()
        .map(|a| AgentRecord {
            name: a.clone(),
            role: cluster.assignment.roles[a].describe(cluster.assignment.shards),
            offset_ns: offsets[a].offset_ns,
            rtt_ns: offsets[a].rtt_ns,
            batches: intake.batches_of(a),
            lost_at_s: cluster.lost.get(a).copied(),
        })
        .collect();
    let facts = crate::run::RunFacts {
        run_id,
        started,
        start_ns: played.start_ns,
        aborted: played.aborted,
        spool: crate::run::SpoolRecord::local(),
        cluster: Some(ClusterRecord {
            nats: url.to_string(),
            agents,
        }),
    };
    crate::run::collect_files(&dir, f, &files, records, spooled, facts, &log)?;
    let summary = crate::run::render(&dir)?;
    Ok(Outcome { dir, summary })
}

/// What [`Cluster::play`] leaves for the collection.
struct Played {
    start_ns: u64,
    aborted: Option<String>,
    /// The coordinator's own events (agent faults).
    own_events: PathBuf,
}

/// The agents of one run.
struct Cluster {
    client: async_nats::Client,
    assignment: Assignment,
    /// Agents with something to host.
    used: Vec<String>,
    heard: Arc<Mutex<Heard>>,
    /// Agents that stopped answering, and when (seconds into the run).
    lost: BTreeMap<String, f64>,
    /// Nodes per region.
    regions: BTreeMap<String, u32>,
    run_id: String,
    dir: PathBuf,
    offsets: BTreeMap<String, Offset>,
    /// The scenario's abort conditions.
    watch: crate::measure::abort::Watch,
}

impl Cluster {
    /// One request to one agent; an agent's error is an error here.
    async fn ask(&self, agent: &str, req: &Ctl) -> anyhow::Result<Reply> {
        let m = self
            .client
            .request(wire::ctl_subject(agent), serde_json::to_vec(req)?.into())
            .await
            .with_context(|| format!("agent {agent}: no answer"))?;
        match serde_json::from_slice::<Reply>(&m.payload)
            .with_context(|| format!("agent {agent}: unreadable answer"))?
        {
            Reply::Error { error } => bail!("agent {agent}: {error}"),
            r => Ok(r),
        }
    }

    fn hosting(&self, pick: impl Fn(&plan::Role) -> bool) -> Vec<String> {
        self.assignment
            .roles
            .iter()
            .filter(|(_, r)| pick(r))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Plan, parts up, start, the timeline and the drain.
    async fn play(&mut self, c: &Compiled, intake: &Intake, log: &Log, opts: &RunOptions) -> anyhow::Result<Played> {
        let s = &c.scenario;
        let f = &s.file;
        let (yaml, files) = s.self_contained();
        let shard_agents = self.assignment.shard_agents();
        // The run's CA, as on one host; the agents get its key to issue their certificates.
        let pki = crate::tls::Pki::new(&self.run_id).context("cannot make the run's certificate authority")?;
        pki.write_ca(&self.dir)?;
        let ca = wire::CaParts::of(&pki);
        for a in &self.used {
            let p = wire::Plan {
                run_id: self.run_id.clone(),
                scenario_yaml: yaml.clone(),
                files: files.clone(),
                role: self.assignment.roles[a].clone(),
                shards: self.assignment.shards,
                offsets: self.offsets.clone(),
                shard_agents: shard_agents.clone(),
                ca: ca.clone(),
            };
            self.ask(a, &Ctl::Plan(Box::new(p))).await?;
        }
        // Inboxes first: the nodes route to them.
        let mut routes: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
        let mut bounce_domain = None;
        for a in self.hosting(|r| !r.providers.is_empty() || r.bounces) {
            if let Reply::Inboxes { providers, bounces } = self.ask(&a, &Ctl::Inboxes).await? {
                for (name, addrs) in providers {
                    let p = f.providers.iter().find(|p| p.name == name);
                    for d in p.map(|p| p.domains.clone()).unwrap_or_default() {
                        let d = crate::scenario::network::sut_domain(f, &d);
                        routes.insert(d.to_ascii_lowercase(), addrs.clone());
                    }
                    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                    log.line(&format!("inbox {name:<10} {}  on agent {a}", list.join(" ")));
                }
                if let Some((domain, addr)) = bounces {
                    log.line(&format!("inbox {:<10} {addr}  {domain} (DSNs) on agent {a}", "bounces"));
                    bounce_domain = Some(domain);
                }
            }
        }
        let mut nodes: Vec<Target> = Vec::new();
        if f.mta.kind != MtaKind::External {
            for a in self.hosting(|r| !r.regions.is_empty()) {
                if let Reply::Nodes { nodes: started } = self.ask(&a, &Ctl::Nodes { routes: routes.clone() }).await? {
                    for n in &started {
                        log.line(&format!(
                            "node  {:<10} {}  region {} on agent {a}",
                            n.node, n.addr, n.region
                        ));
                    }
                    nodes.extend(started);
                }
            }
        } else if let Some(addr) = f.mta.submit {
            nodes.push(Target {
                node: crate::inbox::bounces::EXTERNAL_NODE.into(),
                region: crate::inbox::bounces::EXTERNAL_NODE.into(),
                addr,
            });
        }
        let generators = self.hosting(|r| !r.shards.is_empty());
        for a in &generators {
            self.ask(
                a,
                &Ctl::Generator {
                    nodes: nodes.clone(),
                    bounce_domain: bounce_domain.clone(),
                },
            )
            .await?;
        }

        // One instant for everyone, each on its own clock.
        let start = Instant::now() + START_LEAD;
        let start_ns = now_ns() + START_LEAD.as_nanos() as u64;
        let total = f.duration.0 + f.drain.0;
        let hard_stop = start + total;
        let hard_stop_ns = start_ns + total.as_nanos() as u64;
        for a in &self.used {
            let off = self.offsets[a].offset_ns;
            self.ask(
                a,
                &Ctl::Start {
                    start_ns: clock::to_agent(start_ns, off),
                    hard_stop_ns: clock::to_agent(hard_stop_ns, off),
                    at_ns: start_ns,
                },
            )
            .await?;
        }
        let own_events = self.dir.join("nodes").join("coordinator.events.jsonl");
        let mut own = OwnEvents::open(&own_events)?;
        let clock = (start, start_ns, hard_stop);
        let aborted = self
            .timeline(c, clock, &generators, intake, log, opts, &mut own)
            .await?;
        Ok(Played {
            start_ns,
            aborted,
            own_events,
        })
    }

    /// Ticks until drained, the hard stop, or a stop by hand.
    #[allow(clippy::too_many_arguments)]
    async fn timeline(
        &mut self,
        c: &Compiled,
        (start, start_ns, mut hard_stop): (Instant, u64, Instant),
        generators: &[String],
        intake: &Intake,
        log: &Log,
        opts: &RunOptions,
        own: &mut OwnEvents,
    ) -> anyhow::Result<Option<String>> {
        let f = &c.scenario.file;
        let mut timeline = Timeline::new(&c.chaos);
        let mut stop = opts.stop.clone();
        let mut last_progress = Instant::now();
        let progress_every = if log.plain() { 5.0 } else { 0.5 };
        let mut drain = crate::run::Drain::new();
        let mut aborted: Option<String> = None;
        loop {
            let poll_at = Instant::now() + POLL;
            let next = timeline.peek().map_or(poll_at, |st| (start + st.at).min(poll_at));
            if let Some(signal) = crate::signal::sleep_or_stop(&mut stop, next).await {
                log.line(&format!(
                    "{signal}: stopping — traffic and chaos stop, agents end their parts, a partial report follows"
                ));
                for g in generators {
                    let _ = self.ask(g, &Ctl::Cut).await;
                }
                let at = Instant::now().saturating_duration_since(start).as_secs_f64();
                return Ok(Some(format!("stopped by {signal} at {at:.1} s")));
            }
            let elapsed = Instant::now().saturating_duration_since(start);
            while let Some(st) = timeline.take_due(elapsed) {
                self.pull(&st, elapsed, log).await?;
            }
            // An abort condition that holds: traffic and chaos stop, faults are lifted, the
            // queues get `drain` — as on one host.
            let trip = (aborted.is_none() && !self.watch.is_empty())
                .then(|| intake.live.recent(|r| self.watch.check(r, now_ns(), start_ns)))
                .flatten();
            if let Some(trip) = trip {
                log.line(&format!(
                    "{}: stopping — traffic and chaos stop, faults are lifted, the queues get at most {} to drain",
                    trip.reason, f.drain
                ));
                for g in generators {
                    let _ = self.ask(g, &Ctl::Cut).await;
                }
                for st in timeline.abandon(elapsed) {
                    self.pull(&st, elapsed, log).await?;
                }
                hard_stop = Instant::now() + f.drain.0;
                aborted = Some(trip.reason);
            }
            self.notice_lost(start, log, own)?;
            let (accepted, batches_ok) = {
                let t = crate::sync::lock(&intake.tally);
                let gens_done = generators.iter().all(|g| {
                    self.lost.contains_key(g)
                        || crate::sync::lock(&self.heard)
                            .beats
                            .get(g)
                            .is_some_and(|(_, b)| b.gen_done && t.batches.get(g).copied().unwrap_or(0) >= b.batches)
                });
                (t.accepted, gens_done)
            };
            let (failed, ended) = {
                let tail = crate::sync::lock(&intake.tail);
                (tail.failed, tail.ended.len() as u64)
            };
            let delivered = intake.live.delivered_keys();
            let now = Instant::now();
            if now.duration_since(last_progress).as_secs_f64() >= progress_every {
                last_progress = now;
                let abort = if self.watch.is_empty() {
                    String::new()
                } else {
                    let readings = intake.live.recent(|r| self.watch.read(r, now_ns()));
                    format!(" · {}", self.watch.progress(&readings))
                };
                log.progress(
                    elapsed,
                    &format!(
                        "t={:>6.1}s/{:.0}s accepted {accepted} delivered {delivered} failed {failed} p50 {} slo {}{}{abort}",
                        elapsed.as_secs_f64(),
                        f.duration.0.as_secs_f64(),
                        intake.live.p50_text(),
                        intake.live.slo_text(f.slo.delivery_time.as_secs_f64() * 1e3),
                        intake.live.tls_text(),
                    ),
                );
            }
            let external = f.mta.kind == MtaKind::External;
            let settled = batches_ok && delivered + failed >= accepted && timeline.done();
            let mta_ended = external || ended >= accepted;
            if drain.over(settled, mta_ended, now) {
                if drain.waited_out {
                    log.line(&format!(
                        "{} received message(s) still without their MTA's delivered line after {:.0}s; ending the drain",
                        accepted.saturating_sub(ended),
                        crate::run::DRAIN_GRACE.as_secs_f64()
                    ));
                }
                return Ok(aborted);
            }
            if now >= hard_stop {
                log.line("drain timed out; undelivered mail is counted as queued or lost");
                return Ok(aborted);
            }
            if !self.lost.is_empty() && self.lost.len() == self.used.len() {
                log.line("every agent has stopped answering; stopping");
                return Ok(aborted);
            }
        }
    }

    /// Sends one chaos step to the agent hosting its target.
    async fn pull(&self, st: &Step, elapsed: Duration, log: &Log) -> anyhow::Result<()> {
        let at = elapsed.as_secs_f64();
        let req = Ctl::Chaos {
            fault: st.fault,
            end: st.end,
        };
        match self.host_of(st) {
            Some(a) if !self.lost.contains_key(&a) => match self.ask(&a, &req).await {
                Ok(Reply::Done { text }) => log.line(&format!("t={at:>6.1}s chaos: {text} (agent {a})")),
                Ok(_) => {}
                Err(e) => {
                    log.line(&format!("t={at:>6.1}s chaos step failed: {e:#}"));
                    bail!("chaos step `{}` failed: {e:#}", st.action.describe());
                }
            },
            _ => log.line(&format!(
                "t={at:>6.1}s chaos: {} skipped — no live agent hosts its target",
                st.action.describe()
            )),
        }
        Ok(())
    }

    /// The agent hosting a chaos step's target.
    fn host_of(&self, st: &Step) -> Option<String> {
        let t = &st.action.target;
        self.assignment
            .roles
            .iter()
            .find(|(_, r)| match t.kind {
                TargetKind::Provider => r.providers.contains(&t.name),
                TargetKind::Region => r.regions.contains(&t.name),
                TargetKind::Node => crate::scenario::nodes::region_of_node(&t.name)
                    .is_some_and(|reg| r.regions.iter().any(|x| x == reg)),
                _ => false,
            })
            .map(|(n, _)| n.clone())
    }

    /// Agents whose heartbeats stopped: each a fault of its own, marked on the timeline.
    fn notice_lost(&mut self, start: Instant, log: &Log, own: &mut OwnEvents) -> anyhow::Result<()> {
        let now = Instant::now();
        let silent: Vec<(String, Instant)> = {
            let h = crate::sync::lock(&self.heard);
            self.used
                .iter()
                .filter(|a| !self.lost.contains_key(*a))
                .filter_map(|a| {
                    let last = h.beats.get(a).map(|(t, _)| *t)?;
                    (now.duration_since(last) > wire::DEAD_AFTER).then(|| (a.clone(), last))
                })
                .collect()
        };
        for (a, last) in silent {
            let at = last.saturating_duration_since(start).as_secs_f64();
            let role = self.assignment.roles[&a].describe(self.assignment.shards);
            log.line(&format!(
                "t={at:>6.1}s agent {a} stopped answering ({role}); its unreported events are unknown"
            ));
            let t_ns = now_ns().saturating_sub(now.duration_since(last).as_nanos() as u64);
            own.fault(t_ns, self.lost.len(), &a)?;
            self.lost.insert(a, at);
        }
        Ok(())
    }

    /// Stops the MTA agents first (their last deliveries land in the inboxes), then the rest.
    async fn stop_all(&self, log: &Log) -> (Vec<NodeRecord>, Vec<SpooledRecord>, BTreeMap<String, u64>) {
        let dir = &self.dir;
        let mut order = self.hosting(|r| !r.regions.is_empty());
        order.extend(
            self.used
                .iter()
                .filter(|a| !order.contains(a))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let mut records = Vec::new();
        let mut spooled = Vec::new();
        let mut batches = BTreeMap::new();
        for a in order.iter().filter(|a| self.used.contains(a)) {
            if self.lost.contains_key(a) {
                // Its nodes died with it: not alive, and their spools unknown.
                for r in &self.assignment.roles[a].regions {
                    records.extend(self.dead_nodes(r));
                }
                continue;
            }
            match self.ask(a, &Ctl::Stop).await {
                Ok(Reply::Stopped {
                    nodes,
                    spooled: s,
                    batches: b,
                    latency_hlog,
                }) => {
                    if let Some(text) = latency_hlog {
                        let path = dir.join("agents").join(format!("{a}.latency.hlog"));
                        let written =
                            std::fs::create_dir_all(dir.join("agents")).and_then(|()| std::fs::write(&path, text));
                        if let Err(e) = written {
                            log.line(&format!("cannot write {}: {e}", path.display()));
                        }
                    }
                    records.extend(nodes);
                    spooled.extend(s);
                    batches.insert(a.clone(), b);
                }
                Ok(_) => {}
                Err(e) => log.line(&format!("agent {a}: cannot stop it: {e:#}")),
            }
        }
        (records, spooled, batches)
    }

    /// The nodes of a region whose agent was lost: dead, as a killed region's are.
    fn dead_nodes(&self, region: &str) -> Vec<NodeRecord> {
        let n = self.regions.get(region).copied().unwrap_or(0);
        (1..=n)
            .map(|k| NodeRecord {
                name: crate::scenario::nodes::node_name(region, k),
                region: region.to_string(),
                alive: false,
            })
            .collect()
    }
}
