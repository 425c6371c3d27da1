//! `mailsurge run`: the orchestrator. Starts mock inboxes (in-process), reference-MTA nodes
//! (child processes of this binary), plays the traffic schedule, waits for the drain, stops
//! everything, then measures and writes the report.
//!
//! Data flows one way — traffic → mta → inbox → measure → report — and every number in the
//! report is computed from files left in the run directory (events and spools), never from
//! in-memory shortcuts, so a report can be reproduced from the directory alone.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod chaos;
mod live;
mod node;
mod providers;
mod render;

use live::{write_events, LiveStats, Log, Tail};
use node::{start_node, stop_node};
use providers::ProviderRt;
pub use render::{render, NodeRecord, RenderError, RunRecord, SpooledRecord, RUN_FILE};

use crate::config::ConfigError;
use crate::events::{self, now_ns, Event};
use crate::inbox::bounces::{BounceInbox, EXTERNAL_NODE};
use crate::measure;
use crate::mta::spool::LogSpool;
use crate::report::Summary;
use crate::scenario::{MtaKind, Scenario};
use crate::traffic::balance::Balancer;
use crate::traffic::message::{Builder, Mix};
use crate::traffic::schedule::{RateCurve, Schedule};
use crate::traffic::submit::{self, Counters, Plan, Target};

/// Lead time between setting up and the first intended send, so the schedule starts clean.
const START_LEAD: Duration = Duration::from_millis(300);
/// How often the drain check reads node events.
const DRAIN_POLL: Duration = Duration::from_millis(250);

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub quiet: bool,
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    pub summary: Summary,
}

/// Scenario features this build cannot run yet; refused before anything starts (exit 2).
pub fn check_supported(s: &Scenario) -> Result<(), ConfigError> {
    if s.file.mta.spool != crate::scenario::SpoolKind::Local {
        return Err(s
            .source
            .error_at("nats", 1, "mta: spool: nats is not implemented in this version"));
    }
    Ok(())
}

/// Runs a validated scenario end to end.
pub async fn run(s: &Scenario, opts: &RunOptions) -> anyhow::Result<Outcome> {
    let f = &s.file;
    let started = chrono::Utc::now();
    let stamp = started.format("%Y%m%dT%H%M%S").to_string();
    let run_id = format!("{}-{stamp}", f.name);
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&run_id));
    std::fs::create_dir_all(dir.join("nodes")).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("scenario.yaml"), s.to_yaml()).context("cannot write scenario.yaml")?;
    // run.log keeps the lines below; a report directory that cannot hold it is not fatal.
    if let Err(e) = crate::runlog::open(&dir.join("run.log")) {
        tracing::warn!("cannot write {}: {e}", dir.join("run.log").display());
    }
    let log = Log::new(opts.quiet, f.duration.0 + f.drain.0);
    log.line(&format!(
        "mailsurge run `{}` seed {} → {}",
        f.name,
        f.seed,
        dir.display()
    ));

    // Harness-side events (generator outcomes and inbox receipts) go to one writer.
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Event>();
    let live = Arc::new(LiveStats::default());
    let harness_events = dir.join("nodes").join("harness.events.jsonl");
    let writer = tokio::spawn(write_events(ev_rx, harness_events.clone(), live.clone()));

    // Inboxes, in-process; one listener per MX host.
    let (stop_inboxes, inbox_stop_rx) = watch::channel(false);
    let mut bounce_task = None;
    let mut providers = ProviderRt::start_all(s, &ev_tx).await?;
    let mut routes: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    for p in &providers {
        for d in &p.domains {
            routes.insert(d.to_ascii_lowercase(), p.addrs());
        }
        let addrs: Vec<String> = p.addrs().iter().map(ToString::to_string).collect();
        log.line(&format!(
            "inbox {:<10} {}  {}",
            p.name,
            addrs.join(" "),
            p.domains.join(", ")
        ));
    }

    // The bounce inbox, when the MTA is external: its DSNs are our only view of its failures.
    let external = f.mta.kind == MtaKind::External;
    let bounces = if external {
        let b = f.mta.bounces.clone().unwrap_or_default();
        let listener = TcpListener::bind(b.listen)
            .await
            .with_context(|| format!("bounce inbox `{}`: cannot listen on {}", b.domain, b.listen))?;
        let addr = listener.local_addr()?;
        let policy = Arc::new(BounceInbox::new(&b.domain, ev_tx.clone()));
        bounce_task = Some(providers::spawn_server(
            listener,
            policy.clone(),
            "bounces",
            inbox_stop_rx.clone(),
        ));
        log.line(&format!("inbox {:<10} {addr}  {} (DSNs)", "bounces", b.domain));
        log.line(&format!(
            "mta   external   {}  (route the domains above to their inboxes; regions are not used)",
            f.mta.submit.map_or("-".into(), |a| a.to_string())
        ));
        Some((policy, b.domain))
    } else {
        None
    };

    // MTA nodes, one child process each (none when the MTA is external).
    let mut nodes = Vec::new();
    let mut k = 0u8;
    for r in f.regions.iter().filter(|_| !external) {
        for n in 1..=r.nodes {
            k += 1;
            let node = start_node(s, &dir, &r.name, &format!("{}-{n}", r.name), k, &routes)
                .await
                .with_context(|| format!("cannot start node {}-{n}", r.name))?;
            log.line(&format!(
                "node  {:<10} {}  region {}",
                node.name, node.addr, node.region
            ));
            nodes.push(node);
        }
    }

    // Traffic.
    let counters = Arc::new(Counters::default());
    let duration = f.duration.0;
    let start = Instant::now() + START_LEAD;
    let start_ns = now_ns() + START_LEAD.as_nanos() as u64;
    let hard_stop = start + duration + f.drain.0;
    let max_size = match &f.traffic.size {
        crate::scenario::SizeSpec::Fixed(x) => x.0 as usize,
        _ => 1 << 20,
    };
    let balancer = balancer_for(s, &nodes, ev_tx.clone());
    // Heartbeats evict dead nodes and re-admit restored ones (reference MTA only: an external
    // MTA is one address the harness does not manage).
    let heartbeats = (!external).then(|| tokio::spawn(balancer.clone().heartbeats(hard_stop)));
    let plan = Plan {
        arrivals: submit::Arrivals::Open(Box::new(Schedule::new(
            RateCurve::new(&f.traffic.rate, duration),
            f.traffic.arrival,
            f.seed,
        ))),
        mix: Mix::new(&f.traffic),
        builder: match &bounces {
            Some((_, domain)) => Builder::new(&run_id, max_size).with_bounce_domain(domain),
            None => Builder::new(&run_id, max_size),
        },
        seed: f.seed,
        connections: f.traffic.connections,
        balancer: balancer.clone(),
        start_ns,
        start,
        hard_stop,
    };
    let gen = tokio::spawn(submit::run(plan, ev_tx.clone(), counters.clone()));

    // Traffic window, then drain until every accepted message is terminal or time is up.
    let mut tail = Tail::new(nodes.iter().map(|n| n.dir.join("events.jsonl")).collect());
    let progress_every = if log.plain() { 5.0 } else { 0.5 };
    let mut last_progress = Instant::now();
    let mut last_accepted = 0u64;
    let mut gen_done = false;
    let mut crashed: Vec<String> = Vec::new();
    let steps = chaos::timeline(&f.chaos);
    let mut next_step = 0;
    loop {
        // Sleep until the next poll or the next chaos step, whichever is first.
        let poll_at = Instant::now() + DRAIN_POLL;
        let step_at = steps.get(next_step).map(|st| start + st.at);
        tokio::time::sleep_until(step_at.map_or(poll_at, |t| t.min(poll_at))).await;
        while let Some(st) = steps.get(next_step).filter(|st| Instant::now() >= start + st.at) {
            next_step += 1;
            let world = chaos::World {
                nodes: &mut nodes,
                providers: &mut providers,
                pools: &f.mta.egress_pools,
                events: &ev_tx,
            };
            let at = Instant::now().saturating_duration_since(start).as_secs_f64();
            match chaos::apply(st, world).await {
                Ok(text) => log.line(&format!("t={at:>6.1}s chaos: {text}")),
                Err(e) => {
                    log.line(&format!("t={at:>6.1}s chaos step failed: {e:#}"));
                    bail!("chaos step `{}` failed: {e:#}", chaos::describe(&st.action));
                }
            }
        }
        if !gen_done && gen.is_finished() {
            gen_done = true;
        }
        tail.poll();
        for n in nodes.iter_mut().filter(|n| !n.down) {
            if let Ok(Some(status)) = n.child.try_wait() {
                if !crashed.contains(&n.name) {
                    crashed.push(n.name.clone());
                    log.line(&format!("node {} exited unexpectedly: {status}", n.name));
                }
            }
        }
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let dsn_terminal = bounces.as_ref().map_or(0, |(b, _)| b.terminal());
        let terminal = live.delivered_keys() + tail.terminal.len() as u64 + dsn_terminal;
        let now = Instant::now();
        let since = now.duration_since(last_progress).as_secs_f64();
        if since >= progress_every {
            let rate = accepted.saturating_sub(last_accepted) as f64 / since;
            (last_progress, last_accepted) = (now, accepted);
            let elapsed = now.saturating_duration_since(start);
            let next = steps.get(next_step).map_or(String::new(), |st| {
                format!(" · next {} at {:.0}s", chaos::describe(&st.action), st.at.as_secs_f64())
            });
            log.progress(
                elapsed,
                &format!(
                    "t={:>6.1}s/{:.0}s {rate:>6.0}/s accepted {accepted} delivered {} bounced {} p50 {} slo {}{next}",
                    elapsed.as_secs_f64(),
                    duration.as_secs_f64(),
                    live.delivered_keys(),
                    tail.bounced + dsn_terminal,
                    live.p50_text(),
                    live.slo_text(s.file.slo.delivery_time.as_secs_f64() * 1e3),
                ),
            );
        }
        // A pending chaos step (a restore, say) is part of the run: wait for it.
        if gen_done && terminal >= accepted && next_step >= steps.len() {
            break;
        }
        if now >= hard_stop {
            log.line("drain timed out; undelivered mail is counted as queued or lost");
            break;
        }
        if !crashed.is_empty() && crashed.len() == nodes.len() {
            log.line("every node has exited; stopping");
            break;
        }
    }
    log.finish_progress();
    // After a hard stop the generator ends by itself at `hard_stop`; either way wait for it.
    let _ = gen.await;

    // No more heartbeats: stopping the nodes is not a failure to report.
    if let Some(h) = heartbeats {
        h.abort();
        let _ = h.await;
    }
    // Stop nodes first (their last deliveries land in the inboxes), then the inboxes.
    let mut alive = BTreeMap::new();
    for n in &mut nodes {
        let ok = stop_node(n).await;
        alive.insert(n.name.clone(), ok && !crashed.contains(&n.name));
    }
    let _ = stop_inboxes.send(true);
    if let Some(t) = bounce_task {
        let _ = t.await;
    }
    for p in &mut providers {
        p.stop().await;
    }
    // Inboxes hold the receipt senders that feed the event writer.
    drop(providers);
    // The balancer, its heartbeats and the bounce inbox hold event senders too; the writer
    // ends when the last one goes.
    drop(balancer);
    let bounce_stats = bounces.map(|(b, _)| b.stats());
    drop(ev_tx);
    writer.await.context("event writer failed")??;

    // Gather raw data into the run directory, then measure from there alone (see `render`).
    let mut all = events::read_file(&harness_events)
        .context("cannot read harness events")?
        .0;
    let mut spooled = Vec::new();
    for n in &nodes {
        let (mut evs, torn) = events::read_file(&n.dir.join("events.jsonl")).unwrap_or_default();
        if torn > 0 {
            log.line(&format!("node {}: {torn} torn event lines skipped", n.name));
        }
        all.append(&mut evs);
        for m in LogSpool::scan(&n.dir.join("spool")).unwrap_or_default() {
            for rcpt in &m.rcpts {
                spooled.push(SpooledRecord {
                    msg_id: m.msg_id.clone(),
                    rcpt: rcpt.clone(),
                    node: n.name.clone(),
                });
            }
        }
    }
    let providers = render::provider_map(f);
    if let Some(st) = bounce_stats {
        log.line(&format!(
            "bounce inbox: {} messages, {} bounced, {} expired, {} delay notices, {} unattributed",
            st.messages, st.bounced, st.expired, st.delayed, st.unattributed
        ));
    }
    for e in &mut all {
        if e.provider.is_none() {
            if let Some(p) = e.rcpt.as_deref().and_then(|r| providers.get(&measure_domain(r))) {
                e.provider = Some(p.clone());
            }
        }
    }
    all.sort_by_key(|e| e.t);
    write_merged(&dir.join("events.jsonl"), &all)?;
    // The merged file holds every line of the raw ones; keeping both doubles a run's disk use.
    for raw in std::iter::once(harness_events.clone()).chain(nodes.iter().map(|n| n.dir.join("events.jsonl"))) {
        let _ = std::fs::remove_file(raw);
    }
    drop(all);
    RunRecord {
        schema: render::RUN_SCHEMA.into(),
        run_id,
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        start_ns,
        wall_s: (now_ns().saturating_sub(start_ns)) as f64 / 1e9,
        nodes: nodes
            .iter()
            .map(|n| NodeRecord {
                name: n.name.clone(),
                region: n.region.clone(),
                alive: alive.get(&n.name).copied().unwrap_or(false),
            })
            .collect(),
        spooled,
    }
    .write(&dir)?;
    let summary = render(&dir)?;
    if !crashed.is_empty() {
        bail!(
            "node(s) {} exited unexpectedly; report written to {}",
            crashed.join(", "),
            dir.display()
        );
    }
    Ok(Outcome { dir, summary })
}

/// The generator's balancer: every node, weighted by its region's `weight` split over the
/// region's nodes (by default every node weighs the same); or the one submission address of
/// an external MTA.
fn balancer_for(s: &Scenario, nodes: &[node::Node], events: mpsc::UnboundedSender<Event>) -> Arc<Balancer> {
    let f = &s.file;
    if let Some(addr) = f.mta.submit.filter(|_| f.mta.kind == MtaKind::External) {
        let t = Target {
            node: EXTERNAL_NODE.into(),
            region: EXTERNAL_NODE.into(),
            addr,
        };
        return Balancer::new(vec![t], vec![1.0], events);
    }
    let weight = |region: &str| {
        f.regions
            .iter()
            .find(|r| r.name == region)
            .map_or(1.0, |r| r.weight.map_or(1.0, |w| w / f64::from(r.nodes.max(1))))
    };
    Balancer::new(
        nodes
            .iter()
            .map(|n| Target {
                node: n.name.clone(),
                region: n.region.clone(),
                addr: n.addr,
            })
            .collect(),
        nodes.iter().map(|n| weight(&n.region)).collect(),
        events,
    )
}

fn measure_domain(rcpt: &str) -> String {
    measure::accounting::domain_of(rcpt).to_ascii_lowercase()
}

fn write_merged(path: &Path, all: &[Event]) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    for e in all {
        events::write_line(&mut w, e)?;
    }
    std::io::Write::flush(&mut w)?;
    Ok(())
}
