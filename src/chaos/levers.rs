//! The levers: what each step of the timeline does to the running system, and the event that
//! records it.
//!
//! - `kill` of `region/R` or `node/N`: SIGKILL, like a machine failing; its spool stays as it
//!   was. `restore`, or the end of the kill's `for:` window, restarts it on the same spool.
//! - `kill` of `provider/P`: its MX hosts go down (`refuse` closes the listeners, `blackhole` and
//!   `reset` misbehave on every connection); `restore` or the window's end brings them back.
//! - `kill` of `nats` (the shared queue's server): SIGKILL; `restore` or the window's end
//!   restarts it on the same store and address. Nodes answer 4xx at DATA while it is away.
//! - `block`: the provider refuses one egress pool with the action's reply, until the window
//!   ends. `latency`: the provider answers `add` later, until the window ends.
//!
//! The `fault` / `fault_end` event goes out before the lever is pulled: the fault's time is
//! when it was injected, not when it finished.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::action::Target;
use super::timeline::Step;
use crate::events::{now_ns, Event, Kind, TargetKind};
use crate::inbox::farm::ProviderRt;
use crate::inbox::{Engine, Overlay};
use crate::mta::process::{kill_node, restart_node, Node};
use crate::nats::NatsServer;
use crate::scenario::{ChaosKind, KillMode};

/// The running system a step acts on.
pub struct World<'a> {
    pub nodes: &'a mut [Node],
    pub providers: &'a mut [ProviderRt],
    pub pools: &'a BTreeMap<String, Vec<IpAddr>>,
    pub events: &'a mpsc::UnboundedSender<Event>,
    /// The shared queue's server, when the run started one.
    pub nats: Option<&'a mut NatsServer>,
}

/// Carries out one step and records it. Returns a line for the run log.
pub async fn apply(step: &Step, w: World<'_>) -> anyhow::Result<String> {
    let a = &step.action;
    let e = record(step, now_ns(), |node| {
        w.nodes.iter().find(|n| n.name == node).map(|n| n.region.clone())
    });
    let text = e.text.clone().unwrap_or_default();
    let _ = w.events.send(e);

    let t = &a.target;
    match (t.kind, a.verb, step.end) {
        (TargetKind::Region | TargetKind::Node, ChaosKind::Kill, false) => {
            for n in w.nodes.iter_mut().filter(|n| covers(t, n)) {
                kill_node(n).await;
            }
        }
        // A restore, or the end of a node kill's `for:` window: restart what is down.
        (TargetKind::Region | TargetKind::Node, ChaosKind::Restore, false)
        | (TargetKind::Region | TargetKind::Node, ChaosKind::Kill, true) => {
            for n in w.nodes.iter_mut().filter(|n| covers(t, n) && n.down) {
                restart_node(n)
                    .await
                    .with_context(|| format!("restore: cannot restart node {}", n.name))?;
            }
        }
        (TargetKind::Nats, ChaosKind::Kill, false) => {
            if let Some(s) = w.nats {
                s.kill().await;
            }
        }
        (TargetKind::Nats, ChaosKind::Restore, false) | (TargetKind::Nats, ChaosKind::Kill, true) => {
            if let Some(s) = w.nats.filter(|s| !s.running()) {
                s.restart()
                    .await
                    .context("restore: cannot restart the shared queue's nats-server")?;
            }
        }
        (TargetKind::Provider, verb, end) => {
            let p = w
                .providers
                .iter_mut()
                .find(|p| p.name == t.name)
                .with_context(|| format!("no provider `{}`", t.name))?;
            provider(p, a, verb, end, w.pools).await?;
        }
        _ => {}
    }
    Ok(text)
}

/// The levers of a provider target.
async fn provider(
    p: &mut ProviderRt,
    a: &super::Action,
    verb: ChaosKind,
    end: bool,
    pools: &BTreeMap<String, Vec<IpAddr>>,
) -> anyhow::Result<()> {
    match (verb, end) {
        (ChaosKind::Kill, false) => p.kill(a.mode.unwrap_or(KillMode::Refuse), a.mx),
        (ChaosKind::Tls, false) => p.tls_fault(a.mode),
        (ChaosKind::Tls, true) => p.tls_fault(None),
        (ChaosKind::Restore, false) => {
            // A restore brings a provider back whole: listeners, and its TLS.
            p.tls_fault(None);
            p.restore().await?
        }
        (ChaosKind::Kill, true) => p.restore().await?,
        _ => overlay(p.inbox.engine(), a, end, pools),
    }
    Ok(())
}

/// The levers that act through a provider's rule engine rather than its listeners: `block`
/// and `latency` add an overlay, and the end of their window removes it. (`mailsurge sim`
/// pulls the same levers on its engines.)
pub fn overlay(engine: &Engine, a: &super::Action, end: bool, pools: &BTreeMap<String, Vec<IpAddr>>) {
    let sources = || a.pool.as_ref().and_then(|pool| pools.get(pool)).cloned();
    let add = a.add.map_or(Duration::ZERO, |d| d.0);
    match (a.verb, end) {
        (ChaosKind::Block, false) => engine.add_overlay(Overlay::Block {
            sources: sources(),
            reply: a.reply.clone(),
        }),
        (ChaosKind::Block, true) => {
            let sources = sources();
            engine.remove_overlays(|o| matches!(o, Overlay::Block { sources: s, .. } if *s == sources));
        }
        (ChaosKind::Latency, false) => engine.add_overlay(Overlay::Latency(add)),
        (ChaosKind::Latency, true) => engine.remove_overlays(|o| matches!(o, Overlay::Latency(d) if *d == add)),
        _ => {}
    }
}

/// The `fault` (or `fault_end`) event of a step: typed fields for measurement, the label as
/// `text`, and the target's node / region / provider so per-target views find it; `region_of`
/// names a node's region.
pub fn record(step: &Step, t_ns: u64, region_of: impl Fn(&str) -> Option<String>) -> Event {
    let a = &step.action;
    let mut e = Event::new(
        t_ns,
        format!("fault.{}", step.fault),
        if step.end { Kind::FaultEnd } else { Kind::Fault },
    );
    e.text = Some(if step.end {
        format!("end {}", a.describe())
    } else {
        a.describe()
    });
    e.fault = Some(Box::new(a.fault()));
    let name = a.target.name.clone();
    match a.target.kind {
        TargetKind::Region => e.region = Some(name),
        TargetKind::Node => {
            e.region = region_of(&name);
            e.node = Some(name);
        }
        TargetKind::Nats => {}
        _ => e.provider = Some(name),
    }
    e
}

fn covers(t: &Target, n: &Node) -> bool {
    match t.kind {
        TargetKind::Region => n.region == t.name,
        TargetKind::Node => n.name == t.name,
        _ => false,
    }
}
