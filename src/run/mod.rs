//! `mailsurge run`: the orchestrator. Starts mock inboxes (in-process), reference-MTA nodes
//! (child processes of this binary), plays the traffic schedule (stopping early when an
//! `abort:` condition holds), waits for the drain, stops everything, then measures and writes
//! the report.
//!
//! Data flows one way — traffic → mta → inbox → measure → report — and every number in the
//! report is computed from files left in the run directory (events and spools), never from
//! in-memory shortcuts, so a report can be reproduced from the directory alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

mod collect;
mod compile;
pub mod cpu;
mod live;
mod merge;
mod outdir;
mod play;
mod render;
mod shared;
mod topology;

pub use collect::{collect_files, scan_spool, store_events, RunFacts};
pub use compile::{compile, validate_file, Compiled};
pub use live::{write_events, Follow, LiveStats, Log, Tail};
pub use outdir::{claim_out_dir, OutDirError};
use play::Play;
pub use play::{Drain, DRAIN_GRACE};
pub use render::{
    events_file, inputs, measure_dir, provider_map, render, run_info, AgentRecord, ClusterRecord, Measured, NodeRecord,
    RenderError, RunRecord, SpooledRecord, FLUID, RUN_FILE, RUN_SCHEMA,
};
pub use shared::SpoolRecord;
pub use topology::start_bounce_inbox;
use topology::Topology;

use crate::chaos::Timeline;
use crate::events::{now_ns, Event};
use crate::inbox::bounces::EXTERNAL_NODE;
use crate::measure::abort::Watch;
use crate::report::Summary;
use crate::scenario::{MtaKind, Scenario};
use crate::traffic::balance::Balancer;
use crate::traffic::deadline::Deadline;
use crate::traffic::message::{Builder, Mix};
use crate::traffic::schedule::{RateCurve, Schedule};
use crate::traffic::submit::{self, Counters, Plan, Target};

/// Lead time between setting up and the first intended send, so the schedule starts clean.
const START_LEAD: Duration = Duration::from_millis(300);

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub quiet: bool,
    /// No output at all but `run.log` (a capacity probe: the search prints its own lines).
    pub silent: bool,
    /// Turns `Some(signal)` when the run is to stop early ([`crate::signal::stops`]); the run
    /// then ends its children, keeps the spools and writes a partial report (`aborted`).
    pub stop: Option<tokio::sync::watch::Receiver<Option<&'static str>>>,
    /// `run --cluster URL`: the run is played on the agents of that NATS server.
    pub cluster: Option<String>,
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    pub summary: Summary,
}

/// Runs a compiled scenario end to end, phase by phase: set up the run directory, bring the
/// topology up, play traffic and chaos until drained, bring everything down, collect the raw
/// data into the directory, and render the report from it.
pub async fn run(c: &Compiled, opts: &RunOptions) -> anyhow::Result<Outcome> {
    let s = &c.scenario;
    let f = &s.file;
    let Opened {
        run_id,
        started,
        dir,
        log,
    } = open_run(s, opts)?;

    // Harness-side events (generator outcomes and inbox receipts) go to one writer.
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Event>();
    // Abort conditions are judged on the live view as the run plays (SPEC §12).
    let watch = Watch::new(&f.abort, f.slo.delivery_time.0)?;
    let live = Arc::new(LiveStats::new(watch.recent()));
    let harness_events = dir.join("nodes").join("harness.events.jsonl");
    let writer = tokio::spawn(write_events(ev_rx, harness_events.clone(), live.clone()));
    let mut topo = Topology::up(c, &dir, &run_id, &log, &ev_tx).await?;

    // Traffic, then the traffic window and the drain with the chaos timeline.
    let counters = Arc::new(Counters::default());
    let start = Instant::now() + START_LEAD;
    let start_ns = now_ns() + START_LEAD.as_nanos() as u64;
    let clock = play::Clock {
        start,
        hard_stop: start + f.duration.0 + f.drain.0,
        duration: f.duration.0,
    };
    let (gen_stop, cutter) = Deadline::new(clock.hard_stop);
    let targets: Vec<Target> = topo
        .nodes
        .iter()
        .map(|n| Target {
            node: n.name.clone(),
            region: n.region.clone(),
            addr: n.addr,
        })
        .collect();
    let balancer = balancer_for(s, &targets, ev_tx.clone());
    // Heartbeats evict dead nodes and re-admit restored ones (reference MTA only: an external
    // MTA is one address the harness does not manage).
    let heartbeats =
        (f.mta.kind != MtaKind::External).then(|| tokio::spawn(balancer.clone().heartbeats(clock.hard_stop)));
    let bounce_domain = topo.bounces.as_ref().map(|(_, d)| d.as_str());
    let plan = traffic_plan(
        s,
        &run_id,
        bounce_domain,
        &balancer,
        start_ns,
        (clock.start, clock.duration),
        gen_stop,
    )?;
    let gen = tokio::spawn(submit::run(plan, ev_tx.clone(), counters.clone()));
    let mut play = Play {
        f,
        log: &log,
        live: &live,
        counters: &counters,
        events: &ev_tx,
        clock,
        chaos: Timeline::new(&c.chaos),
        crashed: Vec::new(),
        stop: opts.stop.clone(),
        cpu: cpu::CpuSampler::new(start),
        watch,
        start_ns,
        cutter: &cutter,
        aborted: None,
    };
    let played = play.until_drained(&mut topo, &gen).await;
    let crashed = std::mem::take(&mut play.crashed);
    // A last CPU reading as the loop ends.
    play.cpu.tick(|| topo.processes());
    let cpu_log = play.cpu.finish();
    let cpu_json = serde_json::to_string_pretty(&cpu_log)? + "\n";
    crate::files::write(&dir.join(cpu::CPU_FILE), cpu_json)?;
    let aborted = match played? {
        play::Ended::Stopped(signal) => {
            // The generator sends what it has in hand and releases nothing more.
            cutter.cut();
            let at = Instant::now().saturating_duration_since(start).as_secs_f64();
            Some(format!("stopped by {signal} at {at:.1} s"))
        }
        // Traffic was cut, faults lifted and the queues drained inside the loop.
        play::Ended::Aborted(reason) => Some(reason),
        _ => None,
    };
    log.finish_progress();
    // After a hard stop the generator ends by itself at `hard_stop`; either way wait for it.
    let _ = gen.await;
    // No more heartbeats: stopping the nodes is not a failure to report.
    if let Some(h) = heartbeats {
        h.abort();
        let _ = h.await;
    }

    let down = topo.down(&crashed, &log).await;
    // The balancer holds event senders too; the writer ends when the last one goes.
    drop(balancer);
    drop(ev_tx);
    writer.await.context("event writer failed")??;
    if let Some(st) = &down.bounces {
        log.line(&format!(
            "bounce inbox: {} messages, {} bounced, {} expired, {} delay notices, {} unattributed",
            st.messages, st.bounced, st.expired, st.delayed, st.unattributed
        ));
    }

    // Gather raw data into the run directory, then measure from there alone (see `render`).
    let facts = collect::RunFacts {
        run_id,
        started,
        start_ns,
        aborted,
        spool: topo.spool_record(),
        cluster: None,
    };
    collect::collect(&dir, f, &harness_events, &topo.nodes, &down, facts, &log)?;
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

/// A run's name, start and directory, with its log open.
pub struct Opened {
    pub run_id: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub dir: PathBuf,
    pub log: Log,
}

/// Names the run (`<name>-<UTC timestamp>`) and opens its directory (`--out`, or
/// `reports/<run id>`).
pub fn open_run(s: &Scenario, opts: &RunOptions) -> anyhow::Result<Opened> {
    let started = chrono::Utc::now();
    let run_id = format!("{}-{}", s.file.name, started.format("%Y%m%dT%H%M%S"));
    let dir = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&run_id));
    let log = open_dir(s, &dir, opts)?;
    Ok(Opened {
        run_id,
        started,
        dir,
        log,
    })
}

/// Creates the run directory with `scenario.yaml` and `run.log`, and the run's log.
fn open_dir(s: &Scenario, dir: &Path, opts: &RunOptions) -> anyhow::Result<Log> {
    let f = &s.file;
    std::fs::create_dir_all(dir.join("nodes")).with_context(|| format!("cannot create {}", dir.display()))?;
    write_scenario(s, dir)?;
    // run.log keeps the lines below; a report directory that cannot hold it is not fatal.
    if let Err(e) = crate::runlog::open(&dir.join("run.log")) {
        tracing::warn!("cannot write {}: {e}", dir.join("run.log").display());
    }
    let log = Log::new(opts.quiet, opts.silent, f.duration.0 + f.drain.0);
    log.line(&format!(
        "mailsurge run `{}` seed {} → {}",
        f.name,
        f.seed,
        dir.display()
    ));
    Ok(log)
}

/// Writes `scenario.yaml` and the rule files it names into a run directory, self-contained, so
/// `mailsurge run <dir>/scenario.yaml` reruns the same plan from anywhere (a simulation's too).
pub fn write_scenario(s: &Scenario, dir: &Path) -> anyhow::Result<()> {
    let (yaml, files) = s.self_contained();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        crate::files::write(&path, text)?;
    }
    // A scenario with `traffic.auth` holds a password: owner-only, like the nodes' users files.
    let path = dir.join("scenario.yaml");
    if s.file.traffic.auth.is_some() {
        crate::files::write_private(&path, yaml)?;
    } else {
        crate::files::write(&path, yaml)?;
    }
    Ok(())
}

/// The generator's plan: the open-loop schedule, the message mix and where bounces go; the
/// schedule's offset 0 is `start_ns` (wall clock) and `start` (monotonic), its window `window`.
/// (An agent of a distributed run sets the plan's shard.)
pub fn traffic_plan(
    s: &Scenario,
    run_id: &str,
    bounce_domain: Option<&str>,
    balancer: &Arc<Balancer>,
    start_ns: u64,
    (start, window): (Instant, Duration),
    hard_stop: Deadline,
) -> Result<Plan, crate::tls::TlsError> {
    let f = &s.file;
    let max_size = match &f.traffic.size {
        crate::scenario::SizeSpec::Fixed(x) => x.0 as usize,
        _ => 1 << 20,
    };
    let builder = Builder::new(run_id, max_size);
    Ok(Plan {
        arrivals: submit::Arrivals::Open(Box::new(Schedule::new(
            RateCurve::new(&f.traffic.rate, window),
            f.traffic.arrival,
            f.seed,
        ))),
        mix: Mix::for_scenario(f),
        builder: match bounce_domain {
            Some(domain) => builder.with_bounce_domain(domain),
            None => builder,
        },
        seed: f.seed,
        connections: f.traffic.connections,
        balancer: balancer.clone(),
        start_ns,
        start,
        hard_stop,
        shard: None,
        tls: crate::tls::submission(f.traffic.tls == crate::scenario::SubmitTls::Starttls)?,
        auth: f.traffic.auth.clone().map(|a| a.0),
    })
}

/// The generator's balancer: every node, weighted by its region's `weight` split over the
/// region's nodes (by default every node weighs the same); or the one submission address of
/// an external MTA.
pub fn balancer_for(s: &Scenario, nodes: &[Target], events: mpsc::UnboundedSender<Event>) -> Arc<Balancer> {
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
        nodes.to_vec(),
        nodes.iter().map(|n| weight(&n.region)).collect(),
        events,
    )
}
