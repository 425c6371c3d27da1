//! An inbox agent's own view of delivery time: the histogram of the receipts it took, on the
//! coordinator's clock, per second of intended time as the run's `latency.hlog` keeps it. The
//! coordinator's merged histogram must equal the sum of its agents' bucket for bucket — the
//! proof that percentiles come from merged histograms, never from averaged ones.

use std::collections::{BTreeMap, HashSet};

use hdrhistogram::Histogram;

use super::clock::Clocks;
use crate::events::{Event, Kind};
use crate::measure::Dist;

pub struct Meter {
    agent: String,
    clocks: Clocks,
    /// The schedule's offset 0 on the coordinator's clock, once the run has started.
    start_ns: Option<u64>,
    /// The traffic window in whole seconds: later intended times go to the last second, as
    /// the run's intervals do.
    intervals: u64,
    /// (id, recipient) pairs already counted: only a first receipt is a delivery.
    seen: HashSet<u64>,
    by_second: BTreeMap<u64, Dist>,
}

impl Meter {
    pub fn new(agent: &str, clocks: Clocks, intervals: u64) -> Meter {
        Meter {
            agent: agent.to_string(),
            clocks,
            start_ns: None,
            intervals: intervals.max(1),
            seen: HashSet::new(),
            by_second: BTreeMap::new(),
        }
    }

    pub fn start(&mut self, start_ns: u64) {
        self.start_ns = Some(start_ns);
    }

    pub fn start_ns(&self) -> Option<u64> {
        self.start_ns
    }

    /// Counts a receipt's delivery time (anything else is ignored).
    pub fn note(&mut self, e: &Event) {
        let Some(start) = self.start_ns else { return };
        if e.event != Kind::Received {
            return;
        }
        if !self.seen.insert(crate::inbox::engine::hash(&(
            e.id.as_str(),
            e.rcpt.as_deref().unwrap_or_default(),
        ))) {
            return;
        }
        let mut e = e.clone();
        self.clocks.correct(&self.agent, &mut e);
        let Some(intended) = e.intended else { return };
        let second = (intended.saturating_sub(start) / 1_000_000_000).min(self.intervals - 1);
        self.by_second
            .entry(second)
            .or_default()
            .record(Some(e.t.saturating_sub(intended) / 1000));
    }

    /// The histograms by second, for an interval log.
    pub fn histograms(&self) -> Vec<(f64, &Histogram<u64>)> {
        self.by_second.iter().map(|(s, d)| (*s as f64, &d.finite)).collect()
    }
}
