//! The nodes' lives in the model: heartbeats that evict and admit, the chaos timeline's
//! kills and restores, and a restarted node recovering its spool.

use super::{Ev, Model, Node};
use crate::events::{Kind, TargetKind};
use crate::scenario::{ChaosKind, KillMode};
use crate::traffic::balance::ADMIT_AFTER;

impl Model<'_> {
    pub(super) fn heartbeat(&mut self) {
        for n in 0..self.nodes.len() {
            let up = self.nodes[n].alive && self.nodes[n].ready;
            if !up {
                self.evict(n, "heartbeat: Connection refused (os error 111)");
                continue;
            }
            if self.nodes[n].evicted {
                self.nodes[n].passes += 1;
                if self.nodes[n].passes >= ADMIT_AFTER {
                    let node = &mut self.nodes[n];
                    node.evicted = false;
                    node.passes = 0;
                    let (name, region) = (node.name.clone(), node.region.clone());
                    let e = self.emit(self.now, format!("balancer.{name}"), Kind::Admitted, None);
                    e.node = Some(name);
                    e.region = Some(region);
                    e.text = Some("heartbeats pass".into());
                    for w in 0..self.gen.len() {
                        self.gen[w].node = self.pick(w);
                    }
                    self.dispatch();
                }
            }
        }
    }

    pub(super) fn chaos(&mut self, i: usize) {
        let step = self.chaos[i].clone();
        let t = self.now;
        let nodes: Vec<(String, String)> = self.nodes.iter().map(|n| (n.name.clone(), n.region.clone())).collect();
        let e = crate::chaos::levers::record(&step, self.start_ns + t, |name| {
            nodes.iter().find(|n| n.0 == name).map(|n| n.1.clone())
        });
        self.events.push(e);
        let a = &step.action;
        let covers = |n: &Node| match a.target.kind {
            TargetKind::Region => n.region == a.target.name,
            TargetKind::Node => n.name == a.target.name,
            _ => false,
        };
        match (a.target.kind, a.verb, step.end) {
            (TargetKind::Region | TargetKind::Node, ChaosKind::Kill, false) => {
                for n in 0..self.nodes.len() {
                    if covers(&self.nodes[n]) && self.nodes[n].alive {
                        self.kill_node(n);
                    }
                }
            }
            (TargetKind::Region | TargetKind::Node, ChaosKind::Restore, false)
            | (TargetKind::Region | TargetKind::Node, ChaosKind::Kill, true) => {
                let restart = (self.cal.restart_s * 1e9) as u64;
                for n in 0..self.nodes.len() {
                    if covers(&self.nodes[n]) && !self.nodes[n].alive {
                        self.nodes[n].alive = true;
                        self.at(t + restart, Ev::Ready { node: n as u32 });
                    }
                }
            }
            (TargetKind::Provider, verb, end) => {
                let Some(p) = self.providers.iter_mut().find(|p| p.name == a.target.name) else {
                    return;
                };
                match (verb, end) {
                    (ChaosKind::Kill, false) => p.kill(a.mode.unwrap_or(KillMode::Refuse), a.mx),
                    (ChaosKind::Restore, false) | (ChaosKind::Kill, true) => p.restore(),
                    _ => crate::chaos::levers::overlay(&p.engine, a, end, &self.c.scenario.file.mta.egress_pools),
                }
            }
            _ => {}
        }
    }

    /// SIGKILL: nothing more happens on the node; its queue stays in its spool.
    pub(super) fn kill_node(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.alive = false;
        node.ready = false;
        node.epoch += 1;
        for dom in std::mem::take(&mut node.doms).into_values() {
            for w in dom.workers {
                if let (Some(c), Some(p)) = (w.conn, dom.provider) {
                    self.providers[p].close(c);
                }
            }
        }
        for &j in &node.held {
            self.jobs[j as usize].worker = None;
        }
    }

    /// A restarted node has recovered its spool: every job it held is queued again.
    pub(super) fn ready(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        if !node.alive {
            return;
        }
        node.ready = true;
        node.ingress_free = self.now;
        for j in node.held.clone() {
            let job = &mut self.jobs[j as usize];
            job.attempt = 0;
            job.pool = None;
            self.enqueue(j);
        }
    }
}
