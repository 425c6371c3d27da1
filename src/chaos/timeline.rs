//! The chaos timeline: every action and the end of its `for:` window, in time order, and the
//! cursor a run advances as its clock passes them.

use std::time::Duration;

use super::action::Action;

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
    fn steps_are_taken_once_when_due() {
        let mut t = Timeline::new(&[action("{ at: 2s, action: kill, target: region/a, for: 1s }")]);
        assert!(t.take_due(Duration::from_secs(1)).is_none());
        assert!(!t.take_due(Duration::from_secs(2)).unwrap().end);
        assert!(t.take_due(Duration::from_secs(2)).is_none());
        assert!(t.take_due(Duration::from_secs(3)).unwrap().end);
        assert!(t.done());
    }
}
