//! What the per-action computations look up: balancer reactions, deferrals and receipts sorted
//! by time, each recipient's record (its acceptances and first terminal event), node → region,
//! the ends of `for:` windows — and the two answers built from them alone: when an action
//! ended, and when the system was first seen to react (detection).

use std::collections::HashMap;

use super::{is_mta_kill, provider_target, Inputs, NS};
use crate::events::{Event, Fault, Kind, TargetKind};
use crate::measure::accounting::{Ledger, Step};
use crate::measure::fold::{Fold, Reaction};

/// A `fault` event and its typed fields.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub ev: &'a Event,
    pub f: &'a Fault,
}

/// Everything the per-action computations look up.
pub struct Ctx<'a> {
    pub inp: &'a Inputs,
    /// The run's faults, in time order.
    pub faults: &'a [Action<'a>],
    /// Per (id, recipient): its record, with its steps through the MTAs.
    pub ledger: &'a Ledger,
    /// Node → region, from any event naming both.
    node_region: HashMap<&'a str, &'a str>,
    /// Balancer reactions (`evicted`, `admitted`), sorted by time.
    balancer: Vec<&'a Event>,
    /// Deferrals and receipts, sorted by time.
    reactions: &'a [Reaction],
    /// Indexes (into `faults`) of kills of regions and nodes.
    kills: Vec<usize>,
    /// `fault_end` time per fault id.
    ends: HashMap<&'a str, u64>,
    /// The run had a shared queue: some recipient was `leased`. A killed node then held what
    /// it had leased, not what it had accepted.
    pub shared: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(fold: &'a Fold<'a>, faults: &'a [Action<'a>], inp: &'a Inputs) -> Ctx<'a> {
        let names = &fold.ledger.names;
        let node_region = fold
            .node_region
            .iter()
            .filter_map(|(n, r)| Some((names.get(*n)?, names.get(*r)?)))
            .collect();
        let mut balancer: Vec<&Event> = fold
            .control
            .iter()
            .filter(|e| matches!(e.event, Kind::Evicted | Kind::Admitted))
            .collect();
        balancer.sort_by_key(|e| e.t);
        let mut ends: HashMap<&str, u64> = HashMap::new();
        for e in fold.control.iter().filter(|e| e.event == Kind::FaultEnd) {
            let t = ends.entry(e.id.as_str()).or_insert(e.t);
            *t = (*t).min(e.t);
        }
        Ctx {
            inp,
            faults,
            ledger: &fold.ledger,
            node_region,
            balancer,
            reactions: &fold.reactions,
            kills: (0..faults.len()).filter(|&i| is_mta_kill(faults[i].f)).collect(),
            ends,
            shared: fold
                .ledger
                .generated()
                .any(|(_, r)| r.steps.iter().any(|s| s.kind.is_lease())),
        }
    }

    /// A step's node and region names.
    pub fn place(&self, s: &Step) -> (Option<&'a str>, Option<&'a str>) {
        (self.ledger.names.get(s.node), self.ledger.names.get(s.region))
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

    /// The time of the first kill of a region or node after fault `i`.
    pub fn next_kill_after(&self, i: usize) -> Option<u64> {
        self.kills.iter().find(|&&k| k > i).map(|&k| self.faults[k].ev.t)
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
            let from = self.balancer.partition_point(|e| e.t < t0);
            return self.balancer[from..]
                .iter()
                .find(|e| e.event == kind && self.covers(f, e.node.as_deref(), e.region.as_deref()))
                .map(|e| e.t);
        }
        let p = provider_target(f)?;
        let kind = if restore { Kind::Received } else { Kind::Deferred };
        let from = self.reactions.partition_point(|r| r.t < t0);
        self.reactions[from..]
            .iter()
            .find(|r| r.kind == kind && self.ledger.names.get(r.provider) == Some(p))
            .map(|r| r.t)
    }
}
