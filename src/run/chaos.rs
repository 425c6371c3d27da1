//! The chaos timeline (SPEC §2): faults injected at scenario times into the running system —
//! SIGKILL of MTA nodes or whole regions and their restart on the same spool, provider outages
//! (refuse / blackhole / reset), an IP block of one egress pool at one provider, added latency.
//!
//! Every action is written as a `fault` event (and a `fault_end` when a `for:` window closes),
//! so the report's markers and failover metrics come from the events file like everything else.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;

use super::node::{kill_node, restart_node, Node};
use super::providers::ProviderRt;
use crate::events::{now_ns, Event, Kind};
use crate::inbox::Overlay;
use crate::scenario::{ChaosAction, ChaosKind, KillMode};
use crate::smtp::Reply;

/// What a `block` answers when the scenario gives no `reply:`: an RBL refusal, which the
/// shipped response table reroutes to another pool.
pub const DEFAULT_BLOCK_REPLY: &str = "554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org";

/// One point of the timeline: an action starting, or a `for:` window ending.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    /// Index of the action in the scenario (`fault.<n>` in events).
    pub fault: usize,
    pub end: bool,
    pub action: ChaosAction,
}

/// The scenario's actions and their ends, in time order (ties keep scenario order).
pub fn timeline(actions: &[ChaosAction]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        steps.push(Step {
            at: a.at.0,
            fault: i,
            end: false,
            action: a.clone(),
        });
        if let Some(d) = a.for_ {
            steps.push(Step {
                at: a.at.0 + d.0,
                fault: i,
                end: true,
                action: a.clone(),
            });
        }
    }
    steps.sort_by_key(|s| s.at);
    steps
}

/// Human form of an action, used as the event text and the chart label.
pub fn describe(a: &ChaosAction) -> String {
    let verb = match a.action {
        ChaosKind::Kill => "kill",
        ChaosKind::Restore => "restore",
        ChaosKind::Block => "block",
        ChaosKind::Latency => "latency",
    };
    let mut s = format!("{verb} {}", a.target);
    if let Some(mx) = a.mx {
        s.push_str(&format!(" mx{mx}"));
    }
    if let Some(m) = a.mode {
        s.push_str(&format!(" {}", format!("{m:?}").to_lowercase()));
    }
    if let Some(p) = &a.pool {
        s.push_str(&format!(" pool {p}"));
    }
    if let Some(d) = a.add {
        s.push_str(&format!(" +{d}"));
    }
    if let Some(d) = a.for_ {
        s.push_str(&format!(" for {d}"));
    }
    s
}

/// The running system a step acts on.
pub struct World<'a> {
    pub nodes: &'a mut [Node],
    pub providers: &'a mut [ProviderRt],
    pub pools: &'a BTreeMap<String, Vec<IpAddr>>,
    pub events: &'a mpsc::UnboundedSender<Event>,
}

/// Carries out one step and records it. Returns a line for the run log.
pub async fn apply(step: &Step, w: World<'_>) -> anyhow::Result<String> {
    let a = &step.action;
    let (kind, name) = a.target.split_once('/').unwrap_or(("", ""));
    let mut e = Event::new(
        now_ns(),
        format!("fault.{}", step.fault),
        if step.end { Kind::FaultEnd } else { Kind::Fault },
    );
    e.text = Some(if step.end {
        format!("end {}", describe(a))
    } else {
        describe(a)
    });
    match kind {
        "region" => e.region = Some(name.to_string()),
        "node" => {
            e.node = Some(name.to_string());
            e.region = w.nodes.iter().find(|n| n.name == name).map(|n| n.region.clone());
        }
        _ => e.provider = Some(name.to_string()),
    }
    // The event goes first: the fault's time is when it was injected, not when it finished.
    let text = e.text.clone().unwrap_or_default();
    let _ = w.events.send(e);

    match (kind, a.action, step.end) {
        ("region" | "node", ChaosKind::Kill, false) => {
            for n in w.nodes.iter_mut().filter(|n| matches(kind, name, n)) {
                kill_node(n).await;
            }
        }
        // A restore, or the end of a node kill's `for:` window: restart what is down.
        ("region" | "node", ChaosKind::Restore, false) | ("region" | "node", ChaosKind::Kill, true) => {
            for n in w.nodes.iter_mut().filter(|n| matches(kind, name, n) && n.down) {
                restart_node(n)
                    .await
                    .with_context(|| format!("restore: cannot restart node {}", n.name))?;
            }
        }
        ("provider", action, end) => {
            let p = w
                .providers
                .iter_mut()
                .find(|p| p.name == name)
                .with_context(|| format!("no provider `{name}`"))?;
            let engine = p.inbox.engine();
            match (action, end) {
                (ChaosKind::Kill, false) => p.kill(a.mode.unwrap_or(KillMode::Refuse), a.mx),
                (ChaosKind::Restore, false) | (ChaosKind::Kill, true) => p.restore().await?,
                (ChaosKind::Block, false) => {
                    let reply = Reply::parse_spec(a.reply.as_deref().unwrap_or(DEFAULT_BLOCK_REPLY))
                        .map_err(anyhow::Error::msg)?;
                    let sources = a.pool.as_ref().and_then(|pool| w.pools.get(pool)).cloned();
                    engine.add_overlay(Overlay::Block { sources, reply });
                }
                (ChaosKind::Block, true) => {
                    let sources = a.pool.as_ref().and_then(|pool| w.pools.get(pool)).cloned();
                    engine.remove_overlays(|o| matches!(o, Overlay::Block { sources: s, .. } if *s == sources));
                }
                (ChaosKind::Latency, false) => {
                    engine.add_overlay(Overlay::Latency(a.add.map_or(Duration::ZERO, |d| d.0)))
                }
                (ChaosKind::Latency, true) => {
                    let add = a.add.map_or(Duration::ZERO, |d| d.0);
                    engine.remove_overlays(|o| matches!(o, Overlay::Latency(d) if *d == add));
                }
                (ChaosKind::Restore, true) => {}
            }
        }
        _ => {}
    }
    Ok(text)
}

fn matches(kind: &str, name: &str, n: &Node) -> bool {
    match kind {
        "region" => n.region == name,
        "node" => n.name == name,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(yaml: &str) -> ChaosAction {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn timeline_orders_actions_and_their_ends() {
        let a = [
            action("{ at: 60s, action: kill, target: region/us-east }"),
            action("{ at: 30s, action: block, target: provider/comcast, pool: shared, for: 45s }"),
            action("{ at: 90s, action: restore, target: region/us-east }"),
        ];
        let t = timeline(&a);
        let order: Vec<(u64, usize, bool)> = t.iter().map(|s| (s.at.as_secs(), s.fault, s.end)).collect();
        assert_eq!(
            order,
            vec![(30, 1, false), (60, 0, false), (75, 1, true), (90, 2, false)]
        );
        assert_eq!(describe(&a[1]), "block provider/comcast pool shared for 45s");
        assert_eq!(
            describe(&action(
                "{ at: 1s, action: kill, target: provider/yahoo, mode: refuse, mx: 1 }"
            )),
            "kill provider/yahoo mx1 refuse"
        );
    }
}
