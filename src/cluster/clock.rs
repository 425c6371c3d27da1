//! Clock offsets between the coordinator and its agents, and the correction of event times.
//!
//! Each agent's offset is measured as NTP does over one round trip: the coordinator reads its
//! clock (t0), asks the agent for its clock (ta), reads its own again (t1); the offset is
//! `ta − (t0 + t1) / 2`, good to ± half the round trip. Of several samples the one with the
//! shortest round trip wins (the least queueing in it). Every time an event carries is then
//! moved onto the coordinator's clock by the offset of the agent that read it: `t` by the agent
//! that published the event, `intended` / `submitted` / `acked` by the generator agent that sent
//! the message — a receipt carries the generator's times in the message's headers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// Samples per agent.
pub const SAMPLES: usize = 16;

/// One agent's measured offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offset {
    /// Agent clock minus coordinator clock, ns.
    pub offset_ns: i64,
    /// The round trip of the sample it came from, ns: the offset is good to ± half of it.
    pub rtt_ns: u64,
}

/// Picks the shortest round trip of `(t0, agent, t1)` samples.
pub fn best(samples: &[(u64, u64, u64)]) -> Option<Offset> {
    samples
        .iter()
        .filter(|(t0, _, t1)| t1 >= t0)
        .min_by_key(|(t0, _, t1)| t1 - t0)
        .map(|&(t0, ta, t1)| Offset {
            offset_ns: ta as i64 - ((u128::from(t0) + u128::from(t1)) / 2) as i64,
            rtt_ns: t1 - t0,
        })
}

/// Moves a time read on a clock `offset_ns` ahead of the coordinator's onto the coordinator's.
pub fn to_coordinator(t: u64, offset_ns: i64) -> u64 {
    (t as i64).saturating_sub(offset_ns).max(0) as u64
}

/// Moves a coordinator time onto an agent's clock.
pub fn to_agent(t: u64, offset_ns: i64) -> u64 {
    (t as i64).saturating_add(offset_ns).max(0) as u64
}

/// The offsets of a run's agents and who generated which message.
#[derive(Debug, Clone, Default)]
pub struct Clocks {
    run_id: String,
    pub offsets: BTreeMap<String, Offset>,
    /// Generator shard k's agent's offset.
    shard_offsets: Vec<i64>,
}

impl Clocks {
    /// `shard_agents[k]`: the agent of generator shard k.
    pub fn new(run_id: &str, offsets: BTreeMap<String, Offset>, shard_agents: &[String]) -> Clocks {
        let shard_offsets = shard_agents
            .iter()
            .map(|a| offsets.get(a).map_or(0, |o| o.offset_ns))
            .collect();
        Clocks {
            run_id: run_id.to_string(),
            offsets,
            shard_offsets,
        }
    }

    fn of(&self, agent: &str) -> i64 {
        self.offsets.get(agent).map_or(0, |o| o.offset_ns)
    }

    /// The offset of the generator that sent message `id` (`<run>.<seq>`), if it is one.
    fn generator_of(&self, id: &str) -> Option<i64> {
        let seq: u64 = id.strip_prefix(self.run_id.as_str())?.strip_prefix('.')?.parse().ok()?;
        let n = self.shard_offsets.len() as u64;
        (n > 0).then(|| self.shard_offsets[(seq % n) as usize])
    }

    /// Puts every time of an event published by `agent` on the coordinator's clock.
    pub fn correct(&self, agent: &str, e: &mut Event) {
        e.t = to_coordinator(e.t, self.of(agent));
        let gen = self.generator_of(&e.id).unwrap_or_else(|| self.of(agent));
        for t in [&mut e.intended, &mut e.submitted, &mut e.acked].into_iter().flatten() {
            *t = to_coordinator(*t, gen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    #[test]
    fn the_shortest_round_trip_wins() {
        // Agent 5 ms ahead; the second sample has a 2 ms round trip, the first 40 ms.
        let o = best(&[
            (1_000, 5_000_000 + 21_000_000, 41_000_000),
            (50_000_000, 56_000_000, 52_000_000),
        ])
        .unwrap();
        assert_eq!(
            o,
            Offset {
                offset_ns: 5_000_000,
                rtt_ns: 2_000_000
            }
        );
        assert!(best(&[]).is_none());
    }

    #[test]
    fn receipts_take_the_generators_offset_for_the_headers_times() {
        let offsets = BTreeMap::from([
            (
                "gen".to_string(),
                Offset {
                    offset_ns: 1_000,
                    rtt_ns: 10,
                },
            ),
            (
                "inbox".to_string(),
                Offset {
                    offset_ns: -2_000,
                    rtt_ns: 10,
                },
            ),
        ]);
        let c = Clocks::new("run-1", offsets, &["gen".to_string()]);
        let mut e = Event::new(100_000, "run-1.7", Kind::Received);
        e.intended = Some(50_000);
        e.submitted = Some(60_000);
        c.correct("inbox", &mut e);
        assert_eq!((e.t, e.intended, e.submitted), (102_000, Some(49_000), Some(59_000)));
        // A fault event (no sequence number) is the publisher's alone.
        let mut f = Event::new(10_000, "fault.0", Kind::Fault);
        c.correct("gen", &mut f);
        assert_eq!(f.t, 9_000);
        assert_eq!(to_agent(to_coordinator(123_456, -77), -77), 123_456);
    }
}
