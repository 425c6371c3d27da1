//! `mailsurge agent`: one host's share of distributed runs. It beats on the cluster's NATS
//! server so coordinators can find it, answers their requests one at a time (its clock, a plan,
//! its parts up, a chaos step, stop), and streams its events to the run's JetStream stream.
//! One run at a time; between runs it waits. Ctrl-C ends its parts and exits — its node
//! processes die with it, never outliving the agent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::host::{Addresses, Hosted};
use super::wire::{self, Beat, Ctl, Reply};
use crate::events::now_ns;

/// How long past its planned end a run may go without a coordinator's word before the agent
/// ends it on its own (a coordinator that died must not leave nodes running forever).
const ORPHAN_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub nats: String,
    pub name: String,
    pub addresses: Option<ipnet::IpNet>,
    /// Where runs keep their nodes' spools and event files while they last.
    pub dir: PathBuf,
}

/// What the heartbeat says.
#[derive(Debug, Default)]
struct Status {
    run: Option<String>,
    gen_done: bool,
    /// Batches published when the generator finished.
    gen_batches: u64,
}

/// Runs until `stop` turns `Some`.
pub async fn agent(o: AgentOptions, mut stop: watch::Receiver<Option<&'static str>>) -> anyhow::Result<()> {
    // An agent is a daemon: one started before its NATS server (a host booting, a container
    // starting first) waits for it rather than exiting.
    let client = async_nats::ConnectOptions::new()
        .name(format!("mailsurge-agent-{}", o.name))
        .request_timeout(Some(Duration::from_secs(60)))
        .retry_on_initial_connect()
        .connect(&o.nats)
        .await
        .with_context(|| format!("cannot reach the cluster's NATS server at {}", o.nats))?;
    let js = async_nats::jetstream::new(client.clone());
    let mut ctl = client
        .subscribe(wire::ctl_subject(&o.name))
        .await
        .context("cannot subscribe to the agent's control subject")?;
    let status = Arc::new(Mutex::new(Status::default()));
    let hosted: Arc<tokio::sync::Mutex<Option<Hosted>>> = Arc::default();
    let beats = tokio::spawn(beat(client.clone(), o.clone(), status.clone(), hosted.clone()));
    eprintln!(
        "agent {} on {} (addresses {}); waiting for a coordinator",
        o.name,
        o.nats,
        o.addresses.map_or("loopback defaults".into(), |n| n.to_string())
    );
    let mut planned_end: Option<u64> = None;
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            m = ctl.next() => {
                let Some(m) = m else { break };
                let Some(reply_to) = m.reply.clone() else { continue };
                let reply = match serde_json::from_slice::<Ctl>(&m.payload) {
                    Ok(req) => {
                        if let Ctl::Start { hard_stop_ns, .. } = &req {
                            planned_end = Some(*hard_stop_ns);
                        }
                        handle(req, &o, &js, &status, &hosted).await
                    }
                    Err(e) => Reply::error(format!("unreadable request: {e}")),
                };
                if matches!(reply, Reply::Stopped { .. }) {
                    planned_end = None;
                }
                let body = serde_json::to_vec(&reply).unwrap_or_default();
                let _ = client.publish(reply_to, body.into()).await;
            }
            _ = watchdog.tick() => {
                if planned_end.is_some_and(|end| now_ns() > end + ORPHAN_GRACE.as_nanos() as u64) {
                    eprintln!("agent {}: no word from the coordinator since the run's end; stopping it", o.name);
                    if let Some(mut h) = hosted.lock().await.take() {
                        let _ = h.stop().await;
                    }
                    *crate::sync::lock(&status) = Status::default();
                    planned_end = None;
                }
            }
            _ = stop.changed() => break,
        }
    }
    if let Some(mut h) = hosted.lock().await.take() {
        eprintln!("agent {}: stopping run {}", o.name, h.run_id);
        let _ = h.stop().await;
    }
    beats.abort();
    let _ = client.flush().await;
    Ok(())
}

async fn handle(
    req: Ctl,
    o: &AgentOptions,
    js: &async_nats::jetstream::Context,
    status: &Arc<Mutex<Status>>,
    hosted: &Arc<tokio::sync::Mutex<Option<Hosted>>>,
) -> Reply {
    let mut slot = hosted.lock().await;
    let result = match (req, slot.as_mut()) {
        (Ctl::Clock, _) => Ok(Reply::Clock { now_ns: now_ns() }),
        (Ctl::Plan(plan), None) => {
            let run = plan.run_id.clone();
            match Hosted::new(*plan, &o.dir, Addresses(o.addresses), js.clone(), &o.name).await {
                Ok(h) => {
                    *slot = Some(h);
                    *crate::sync::lock(status) = Status {
                        run: Some(run.clone()),
                        ..Status::default()
                    };
                    eprintln!("agent {}: joined run {run}", o.name);
                    Ok(Reply::done())
                }
                Err(e) => Err(e),
            }
        }
        (Ctl::Plan(plan), Some(h)) => Err(anyhow::anyhow!(
            "busy with run {} (asked to join {})",
            h.run_id,
            plan.run_id
        )),
        (Ctl::Release, _) => {
            if let Some(h) = slot.take() {
                h.forget();
            }
            *crate::sync::lock(status) = Status::default();
            Ok(Reply::done())
        }
        (_, None) => Err(anyhow::anyhow!("not part of a run")),
        (Ctl::Inboxes, Some(h)) => h.inboxes(),
        (Ctl::Nodes { routes }, Some(h)) => h.nodes(&routes).await,
        (Ctl::Generator { nodes, bounce_domain }, Some(h)) => Ok(h.generator(&nodes, bounce_domain)),
        (
            Ctl::Start {
                start_ns,
                hard_stop_ns,
                at_ns,
            },
            Some(h),
        ) => {
            let status = status.clone();
            h.start(start_ns, hard_stop_ns, at_ns, move |batches| {
                let mut s = crate::sync::lock(&status);
                s.gen_done = true;
                s.gen_batches = batches;
            });
            Ok(Reply::done())
        }
        (Ctl::Chaos { fault, end }, Some(h)) => h.chaos(fault, end).await,
        (Ctl::Cut, Some(h)) => {
            h.cut();
            Ok(Reply::done())
        }
        (Ctl::Stop, Some(h)) => Ok(h.stop().await),
    };
    result.unwrap_or_else(|e| Reply::error(format!("{e:#}")))
}

/// Beats until aborted.
async fn beat(
    client: async_nats::Client,
    o: AgentOptions,
    status: Arc<Mutex<Status>>,
    hosted: Arc<tokio::sync::Mutex<Option<Hosted>>>,
) {
    let mut every = tokio::time::interval(wire::BEAT_EVERY);
    loop {
        every.tick().await;
        // The batch count comes from the outbox without waiting for a request in progress.
        let batches = match hosted.try_lock() {
            Ok(h) => h.as_ref().map(|h| h.outbox.batches()),
            Err(_) => None,
        };
        let b = {
            let s = crate::sync::lock(&status);
            Beat {
                name: o.name.clone(),
                addresses: o.addresses.map(|n| n.to_string()),
                version: env!("CARGO_PKG_VERSION").into(),
                pid: std::process::id(),
                run: s.run.clone(),
                batches: if s.gen_done {
                    s.gen_batches
                } else {
                    batches.unwrap_or(0)
                },
                gen_done: s.gen_done,
            }
        };
        let body = serde_json::to_vec(&b).unwrap_or_default();
        let _ = client.publish(wire::BEAT_SUBJECT, body.into()).await;
    }
}
