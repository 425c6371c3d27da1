//! What the per-action computations look up: the run's events sorted by time, each
//! recipient's trail (acceptances and first terminal event), node → region, the ends of `for:`
//! windows — and the two answers built from them alone: when an action ended, and when the
//! system was first seen to react (detection).

use std::collections::HashMap;

use super::{is_mta_kill, provider_target, Inputs, NS};
use crate::events::{Event, Fault, Kind, TargetKind};

/// A `fault` event and its typed fields.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub ev: &'a Event,
    pub f: &'a Fault,
}

/// One recipient's path through the MTA.
#[derive(Debug, Default)]
pub struct Trail<'a> {
    /// (time, node, region) of every `accepted`.
    pub accepts: Vec<(u64, Option<&'a str>, Option<&'a str>)>,
    /// First `delivered`, `received`, `bounced`, `expired` or `dropped`.
    pub first_terminal: Option<u64>,
}

/// Everything the per-action computations look up.
pub struct Ctx<'a> {
    pub inp: &'a Inputs,
    /// The run's faults, in time order.
    pub faults: &'a [Action<'a>],
    /// Node → region, from any event naming both.
    node_region: HashMap<&'a str, &'a str>,
    /// Message and balancer events, sorted by time.
    sorted: Vec<&'a Event>,
    /// Per (id, recipient).
    pub trails: HashMap<(&'a str, &'a str), Trail<'a>>,
    /// Indexes (into `faults`) of kills of regions and nodes.
    kills: Vec<usize>,
    /// `fault_end` time per fault id.
    ends: HashMap<&'a str, u64>,
}

impl<'a> Ctx<'a> {
    pub fn new(events: &'a [Event], faults: &'a [Action<'a>], inp: &'a Inputs) -> Ctx<'a> {
        let mut sorted: Vec<&Event> = events
            .iter()
            .filter(|e| !matches!(e.event, Kind::Fault | Kind::FaultEnd))
            .collect();
        sorted.sort_by_key(|e| e.t);
        let mut node_region = HashMap::new();
        for e in events {
            if let (Some(n), Some(r)) = (&e.node, &e.region) {
                node_region.entry(n.as_str()).or_insert(r.as_str());
            }
        }
        let mut trails: HashMap<(&str, &str), Trail<'_>> = HashMap::new();
        for e in events.iter().filter(|e| !e.event.is_control()) {
            let key = (e.id.as_str(), e.rcpt.as_deref().unwrap_or(""));
            match e.event {
                Kind::Accepted => {
                    let accept = (e.t, e.node.as_deref(), e.region.as_deref());
                    trails.entry(key).or_default().accepts.push(accept);
                }
                Kind::Delivered | Kind::Received | Kind::Bounced | Kind::Expired | Kind::Dropped => {
                    let t = &mut trails.entry(key).or_default().first_terminal;
                    *t = Some(t.map_or(e.t, |f| f.min(e.t)));
                }
                _ => {}
            }
        }
        let mut ends: HashMap<&str, u64> = HashMap::new();
        for e in events.iter().filter(|e| e.event == Kind::FaultEnd) {
            let t = ends.entry(e.id.as_str()).or_insert(e.t);
            *t = (*t).min(e.t);
        }
        Ctx {
            inp,
            faults,
            node_region,
            sorted,
            trails,
            kills: (0..faults.len()).filter(|&i| is_mta_kill(faults[i].f)).collect(),
            ends,
        }
    }

    /// Whether a node (or an event's region) belongs to an MTA target.
    pub fn covers(&self, target: &Fault, node: Option<&str>, region: Option<&str>) -> bool {
        let name = target.target.as_str();
        match target.target_kind {
            TargetKind::Node => node == Some(name),
            TargetKind::Region => region == Some(name) || node.and_then(|n| self.node_region.get(n)) == Some(&name),
            _ => false,
        }
    }

    /// The event's provider, else its recipient domain's.
    pub fn provider_of<'e>(&'e self, e: &'e Event) -> Option<&'e str> {
        e.provider
            .as_deref()
            .or_else(|| self.inp.provider_of(e.rcpt.as_deref()?))
    }

    fn first_after(&self, t: u64, f: impl Fn(&Event) -> bool) -> Option<u64> {
        let from = self.sorted.partition_point(|e| e.t < t);
        self.sorted[from..].iter().find(|e| f(e)).map(|e| e.t)
    }

    pub fn offset_s(&self, t: u64) -> f64 {
        (i128::from(t) - i128::from(self.inp.start_ns)) as f64 / NS
    }

    /// The kill a node's acceptance at `t` falls to: the first kill of that node after it.
    pub fn kill_of(&self, node: Option<&str>, region: Option<&str>, t: u64) -> Option<usize> {
        self.kills
            .iter()
            .copied()
            .find(|&k| self.faults[k].ev.t > t && self.covers(self.faults[k].f, node, region))
    }

    /// The action's own `fault_end`, if it came at or after the action.
    pub fn end_of(&self, a: &Action) -> Option<u64> {
        self.ends.get(a.ev.id.as_str()).copied().filter(|&t| t >= a.ev.t)
    }

    /// The first later `restore` of fault `i`'s target (for a killed node, also of its region).
    pub fn restore_after(&self, i: usize) -> Option<u64> {
        let a = self.faults[i].f;
        if a.action == "restore" {
            return None;
        }
        self.faults[i + 1..]
            .iter()
            .find(|r| {
                r.f.action == "restore"
                    && (r.f.target_path() == a.target_path()
                        || (a.target_kind == TargetKind::Node
                            && r.f.target_kind == TargetKind::Region
                            && self.covers(r.f, Some(&a.target), None)))
            })
            .map(|r| r.ev.t)
    }

    /// The first evidence that the system reacted to the action (see the module doc).
    pub fn detection(&self, a: &Action) -> Option<u64> {
        let (t0, f) = (a.ev.t, a.f);
        let restore = f.action == "restore";
        if f.is_mta() {
            let kind = if restore { Kind::Admitted } else { Kind::Evicted };
            return self.first_after(t0, |e| {
                e.event == kind && self.covers(f, e.node.as_deref(), e.region.as_deref())
            });
        }
        let p = provider_target(f)?;
        let kind = if restore { Kind::Received } else { Kind::Deferred };
        self.first_after(t0, |e| e.event == kind && self.provider_of(e) == Some(p))
    }
}
