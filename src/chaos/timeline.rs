//! The chaos timeline: every action and the end of its `for:` window, in time order, and the
//! cursor a run advances as its clock passes them.

use std::time::Duration;

use super::action::Action;
use crate::events::TargetKind;
use crate::scenario::ChaosKind;

/// One point of the timeline: an action starting, or a `for:` window ending.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    /// Index of the action in the scenario (`fault.<n>` in events).
    pub fault: usize,
    pub end: bool,
    pub action: Action,
}

/// The steps of a run and how far it has got.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    steps: Vec<Step>,
    next: usize,
}

impl Timeline {
    /// The actions (in scenario order) and their ends, sorted by time; ties keep scenario order.
    pub fn new(actions: &[Action]) -> Timeline {
        let mut steps: Vec<Step> = Vec::new();
        for (i, a) in actions.iter().enumerate() {
            steps.push(Step {
                at: a.at,
                fault: i,
                end: false,
                action: a.clone(),
            });
            if let Some(d) = a.for_ {
                steps.push(Step {
                    at: a.at + d.0,
                    fault: i,
                    end: true,
                    action: a.clone(),
                });
            }
        }
        steps.sort_by_key(|s| s.at);
        Timeline { steps, next: 0 }
    }

    /// Every step, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The next step not yet taken.
    pub fn peek(&self) -> Option<&Step> {
        self.steps.get(self.next)
    }

    /// Takes the next step if it is due at `elapsed` into the run.
    pub fn take_due(&mut self, elapsed: Duration) -> Option<Step> {
        let st = self.steps.get(self.next).filter(|st| elapsed >= st.at)?.clone();
        self.next += 1;
        Some(st)
    }

    /// Every step has been taken.
    pub fn done(&self) -> bool {
        self.next >= self.steps.len()
    }

    /// Gives up the rest of the timeline (an abort condition held, SPEC §12) and returns the
    /// steps that lift every fault still in force, at `elapsed`: the `end` of each kill, block
    /// or latency that neither its `for:` window nor a later `restore` of the same target has
    /// ended yet. The levers treat a kill's end as its restore, so a killed region, node,
    /// provider or nats server comes back, and a block or latency overlay goes away.
    pub fn abandon(&mut self, elapsed: Duration) -> Vec<Step> {
        let mut active: Vec<&Step> = Vec::new();
        for st in &self.steps[..self.next] {
            if st.end {
                active.retain(|a| a.fault != st.fault);
                continue;
            }
            match st.action.verb {
                ChaosKind::Restore => active.retain(|a| !(a.action.verb == ChaosKind::Kill && restores(st, a))),
                _ => active.push(st),
            }
        }
        let lifts = active
            .into_iter()
            .map(|a| Step {
                at: elapsed,
                fault: a.fault,
                end: true,
                action: a.action.clone(),
            })
            .collect();
        self.next = self.steps.len();
        lifts
    }
}

/// Whether the `restore` step `r` brings back what the kill `k` took down: the same target, or
/// a region and one of its nodes (`<region>-<n>`).
fn restores(r: &Step, k: &Step) -> bool {
    let (rt, kt) = (&r.action.target, &k.action.target);
    rt == kt
        || (rt.kind == TargetKind::Region
            && kt.kind == TargetKind::Node
            && crate::scenario::nodes::region_of_node(&kt.name) == Some(rt.name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::action::from_yaml as action;

    #[test]
    fn timeline_orders_actions_and_their_ends() {
        let a = [
            action("{ at: 60s, action: kill, target: region/us-east }"),
            action("{ at: 30s, action: block, target: provider/comcast, pool: shared, for: 45s }"),
            action("{ at: 90s, action: restore, target: region/us-east }"),
        ];
        let t = Timeline::new(&a);
        let order: Vec<(u64, usize, bool)> = t.steps().iter().map(|s| (s.at.as_secs(), s.fault, s.end)).collect();
        assert_eq!(
            order,
            vec![(30, 1, false), (60, 0, false), (75, 1, true), (90, 2, false)]
        );
        assert_eq!(a[1].describe(), "block provider/comcast pool shared for 45s");
        assert_eq!(
            action("{ at: 1s, action: kill, target: provider/yahoo, mode: refuse, mx: 1 }").describe(),
            "kill provider/yahoo mx1 refuse"
        );
    }

    #[test]
    fn abandon_lifts_what_is_still_in_force() {
        let mut t = Timeline::new(&[
            action("{ at: 1s, action: kill, target: provider/g, mode: blackhole }"),
            action("{ at: 1s, action: kill, target: node/us-1 }"),
            action("{ at: 2s, action: block, target: provider/y, pool: shared, for: 1s }"),
            action("{ at: 2s, action: latency, target: provider/y, add: 1s, for: 60s }"),
            action("{ at: 4s, action: restore, target: region/us }"),
            action("{ at: 5s, action: kill, target: region/us }"),
            action("{ at: 50s, action: kill, target: provider/z }"),
        ]);
        while t.take_due(Duration::from_secs(4)).is_some() {}
        let lifts = t.abandon(Duration::from_secs(4));
        let got: Vec<(usize, bool, u64)> = lifts.iter().map(|s| (s.fault, s.end, s.at.as_secs())).collect();
        // The blackhole and the latency are in force; the block ended by its window, the node
        // kill by its region's restore; the later kills never happen.
        assert_eq!(got, vec![(0, true, 4), (3, true, 4)]);
        assert!(t.done());
        assert!(t.take_due(Duration::from_secs(100)).is_none());
    }

    #[test]
    fn steps_are_taken_once_when_due() {
        let mut t = Timeline::new(&[action("{ at: 2s, action: kill, target: region/a, for: 1s }")]);
        assert!(t.take_due(Duration::from_secs(1)).is_none());
        assert!(!t.take_due(Duration::from_secs(2)).unwrap().end);
        assert!(t.take_due(Duration::from_secs(2)).is_none());
        assert!(t.take_due(Duration::from_secs(3)).unwrap().end);
        assert!(t.done());
    }
}
